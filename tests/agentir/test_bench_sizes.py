"""``agentir bench sizes`` on tiny sizes: one child process per size, seconds, peak memory, PSNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agentir.bench.sizes import main_bench_sizes, mosaic


def test_mosaic_has_the_asked_size_and_mirrors_its_source() -> None:
    src = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    img = mosaic(src, 0.3)
    h, w = img.shape[:2]
    assert abs(h * w - 0.3e6) / 0.3e6 < 0.02 and abs(w / h - 4 / 3) < 0.02
    assert np.array_equal(img[:, : w // 2], img[:, w // 2 :][:, ::-1])
    assert np.array_equal(img[: h // 2], img[h // 2 :][::-1])


def test_bench_sizes_reports_seconds_memory_and_quality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sizes"
    code = main_bench_sizes(["--sizes", "0.05", "--whole", "0.05", "--out", str(out), "--json", "-q"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == json.loads((out / "sizes.json").read_text())
    tiled, whole = summary["rows"]
    assert tiled["tiling"] and not whole["tiling"]
    for row in (tiled, whole):
        assert row["seconds"] > 0 and row["peak_rss_mb"] > 50 and row["status"] in ("success", "kept_input", "partial")
        assert row["output_psnr"] > row["input_psnr"]  # noise + JPEG, restored
        assert (out / "in_0.05mp.png").is_file()
    tv = summary["tiled_vs_whole"]
    assert tv["megapixels"] == tiled["megapixels"] and abs(tv["difference_db"]) < 0.05


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sizes", "big"], "--sizes takes megapixels"),
        (["--sizes", "500"], "between 0.01 and 100"),
        (["--degrade", "fog"], "--degrade takes degradations"),
        (["--degrade", "low_resolution"], "changes the size"),
        (["--level", "extreme"], "--level must be one of"),
        (["nosuch.png"], "does not exist"),
    ],
)
def test_bad_arguments_are_one_clear_error(args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_bench_sizes([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
