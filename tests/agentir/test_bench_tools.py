"""``agentir bench tools``: per-tool gains and cost per megapixel on a levels benchmark."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from agentir.bench.runner import BenchError
from agentir.bench.tools import bench_tools, format_markdown, main_bench_tools, read_costs, select_tools
from agentir.datasets import build_benchmark
from agentir.toolbox.plugins import unload_plugins

CLEAN = Path(__file__).resolve().parents[1] / "data" / "clean"


@pytest.fixture(scope="module")
def levels_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A levels benchmark: every degradation at medium and high, two small images each."""
    out = tmp_path_factory.mktemp("levels")
    build_benchmark(CLEAN, out, per_combo=2, seed=5, levels=["medium", "high"], progress=False)
    return out


class Gamma(torch.nn.Module):
    """A brightening model for the plug-in path: x ** 0.7."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=1e-6) ** 0.7


def test_bench_tools_cli_writes_json_markdown_and_costs(levels_bench: Path, tmp_path: Path) -> None:
    """The CLI measures every dark tool (a plug-in included) at both levels and writes tools.json / tools.md."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.script(Gamma()).save(str(tmp_path / "gamma.pt"))
    plugins = tmp_path / "plugins.toml"
    plugins.write_text('[[tool]]\nname = "bt_gamma"\ndegradation = "dark"\nscale = 1\npath = "gamma.pt"\n', encoding="utf-8")
    out = tmp_path / "out"
    try:
        code = main_bench_tools(
            [str(levels_bench), "--degradations", "dark", "--plugins", str(plugins), "--out", str(out), "--costs-out", str(tmp_path / "costs.json"), "-q"]
        )
    finally:
        unload_plugins(["bt_gamma"])
    assert code == 0
    data = json.loads((out / "tools.json").read_text(encoding="utf-8"))
    names = set(select_tools(None, ["dark"])["dark"]) | {"bt_gamma"}
    assert {r["tool"] for r in data["rows"]} == names
    assert {r["level"] for r in data["rows"]} == {"medium", "high"}
    assert all(r["n"] == 2 and r["s_per_mp"] > 0 for r in data["rows"])
    assert set(read_costs(out / "tools.json")) == names and data["tools"]["bt_gamma"]["kind"] == "plugin"
    from agentir.toolbox.costs import load_costs

    assert load_costs(tmp_path / "costs.json") == pytest.approx(read_costs(out / "tools.json"), abs=1e-4)
    # The classifier-driven brightener undoes synthetic darkening better than nothing at high severity.
    best = max(r["psnr_gain"] for r in data["rows"] if r["level"] == "high")
    assert best > 1.0
    md = (out / "tools.md").read_text(encoding="utf-8")
    assert md.startswith("| degradation | tool | medium dB / SSIM | high dB / SSIM | s/MP |")
    assert "| dark | bt_gamma (plugin) |" in md and "| dark | *input* |" in md


def test_sr_gain_is_over_bicubic(levels_bench: Path) -> None:
    """For low_resolution the baseline is x4 bicubic, so bicubic_sr itself gains about 0 dB."""
    result = bench_tools(levels_bench, tools=["bicubic_sr"], limit=1, progress=False)
    rows = result["rows"]
    assert {r["degradation"] for r in rows} == {"low_resolution"} and len(rows) == 2
    assert all(abs(r["psnr_gain"]) < 0.05 and abs(r["ssim_gain"]) < 0.002 for r in rows)
    assert "| low_resolution | bicubic_sr |" in format_markdown(result)


def test_missing_and_non_levels_benchmarks_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder without manifest, a combinations benchmark and a missing plug-in file exit 2 with a line saying what to do."""
    assert main_bench_tools([str(tmp_path / "nothing"), "-q"]) == 2
    assert "agentir degrade" in capsys.readouterr().err
    combos = tmp_path / "combos"
    build_benchmark(CLEAN, combos, groups=["A"], per_combo=1, seed=0, progress=False)
    assert main_bench_tools([str(combos), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--levels low,medium,high,very_high" in err and err.count("\n") == 1
    assert main_bench_tools([str(combos), "--plugins", str(tmp_path / "nope.toml"), "-q"]) == 2
    assert "plug-in file not found" in capsys.readouterr().err


def test_selection_errors(levels_bench: Path) -> None:
    """Unknown tools and degradations, and a tool outside the chosen degradations, are refused with close matches."""
    from agentir.toolbox.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean dct_denoise"):
        select_tools(["dct_denoize"], None)
    with pytest.raises(BenchError, match="did you mean noise"):
        select_tools(None, ["nois"])
    with pytest.raises(BenchError, match="treats noise"):
        select_tools(["dct_denoise"], ["jpeg"])
    with pytest.raises(BenchError, match="--limit must be at least 1"):
        bench_tools(levels_bench, limit=0, progress=False)
