"""``agentir bench clean``: clean photos and camera frames through the agent, scored against themselves."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agentir.bench import main_bench
from agentir.bench.clean import CAP_DB, build_clean_set, collect_sources, summarise
from agentir.bench.runner import BenchError
from agentir.datasets import read_rgb

CLEAN = Path(__file__).resolve().parents[1] / "data" / "clean"


def _clip(path: Path, frames: int = 6) -> Path:
    """A short lossless-ish clip (MJPG at top quality) of a slow pan over a shipped photo."""
    img = read_rgb(CLEAN / "chelsea.png")[:96, :128]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    for i in range(frames):
        writer.write(np.ascontiguousarray(img[i : i + 64, 2 * i : 2 * i + 96, ::-1]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("clean_src")
    photos = root / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        (photos / name).write_bytes((CLEAN / name).read_bytes())
    return [str(photos), str(_clip(root / "pan.avi"))]


def test_sources_photos_and_evenly_spread_frames(sources: list[str]) -> None:
    """Folders give photos, a clip gives --frames-per-clip frames spread from its first to its last."""
    found = collect_sources(sources, frames_per_clip=3, split="held-out")
    kinds = [(k, n) for k, n, _ in found]
    assert kinds == [("photo", "astronaut"), ("photo", "coffee"), ("frame", "pan_f00000"), ("frame", "pan_f00002"), ("frame", "pan_f00005")]
    frame = found[2][2]
    assert isinstance(frame, np.ndarray) and frame.shape == (64, 96, 3) and frame.dtype == np.uint8


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"nope: no such file or folder"):
        collect_sources([str(tmp_path / "nope")], frames_per_clip=2, split="held-out")
    (tmp_path / "broken.mkv").write_bytes(b"not a video")
    with pytest.raises(BenchError, match=r"broken\.mkv: (cannot open this video|no frame could be decoded)"):
        collect_sources([str(tmp_path / "broken.mkv")], frames_per_clip=2, split="held-out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match=r"no clean images found"):
        collect_sources([str(tmp_path / "empty")], frames_per_clip=2, split="held-out")


def test_manifest_has_no_degradations_and_the_input_is_the_reference(sources: list[str], tmp_path: Path) -> None:
    manifest = build_clean_set(sources, tmp_path / "data", frames_per_clip=2)
    assert manifest["groups"] == ["clean"] and len(manifest["items"]) == 4
    for it in manifest["items"]:
        assert it["degradations"] == [] and it["lq"] == it["hq"] and (tmp_path / "data" / it["lq"]).is_file()
    before = (tmp_path / "data" / "manifest.json").stat().st_mtime_ns
    build_clean_set(sources, tmp_path / "data", frames_per_clip=2)  # same set: the manifest is kept (resume works)
    assert (tmp_path / "data" / "manifest.json").stat().st_mtime_ns == before


def test_a_corrupt_image_is_skipped_by_name_and_the_rest_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes((CLEAN / "rocket.png").read_bytes())
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    manifest = build_clean_set([str(folder)], tmp_path / "data")
    assert [it["stem"] for it in manifest["items"]] == ["a"]
    assert len(manifest["skipped"]) == 1 and "b.png" in manifest["skipped"][0]
    assert "skipped" in capsys.readouterr().err


def test_summary_caps_untouched_and_finds_the_worst() -> None:
    recs = [
        {"policy": "p", "id": "a", "combo": "photo", "psnr": 100.0, "perceived": [], "done": [], "status": "nothing_to_do"},
        {"policy": "p", "id": "b", "combo": "photo", "psnr": 30.0, "perceived": ["dark"], "done": ["dark"], "status": "success"},
        {"policy": "p", "id": "c", "combo": "frame", "psnr": 46.0, "perceived": ["jpeg"], "done": ["jpeg"], "status": "success"},
        {"policy": "p", "id": "d", "combo": "frame", "psnr": None, "status": "error"},
    ]
    s = summarise(recs, ["p"])["p"]
    assert s["all"]["images"] == 3
    assert s["all"]["psnr_vs_input"] == pytest.approx((CAP_DB + 30.0 + 46.0) / 3, abs=0.01)
    assert s["all"]["untouched"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["all"]["below_35db"] == 1 and s["all"]["worst"] == {"image": "b", "psnr": 30.0, "done": ["dark"]}
    assert s["all"]["false_positive"] == {"dark": pytest.approx(1 / 3, abs=1e-3), "jpeg": pytest.approx(1 / 3, abs=1e-3)}
    assert s["frame"]["images"] == 1 and s["photo"]["images"] == 2


def test_cli_runs_policies_resumes_and_writes_the_summary(sources: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through ``agentir bench clean``: the true degradations (none) leave every image untouched; the agent is scored
    against the input; a second run with --resume runs nothing new and gives the same summary."""
    out = tmp_path / "out"
    argv = ["clean", *sources, "--frames-per-clip", "2", "-o", str(out), "--policies", "random-gt,default", "--json", "-q", "--workers", "1"]
    assert main_bench(argv) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["images"] == 4 and doc["kinds"] == {"frame": 2, "photo": 2}
    gt = doc["policies"]["random-gt"]["all"]
    assert gt["untouched"] == 1.0 and gt["psnr_vs_input"] == CAP_DB and gt["below_35db"] == 0 and gt["false_positive"] == {}
    agent = doc["policies"]["default"]["all"]
    assert agent["images"] == 4 and 0 < agent["psnr_vs_input"] <= CAP_DB and agent["failed"] == 0
    assert json.loads((out / "clean_summary.json").read_text())["policies"] == doc["policies"]
    assert "| default | 4 |" in (out / "clean_summary.md").read_text()
    assert main_bench([*argv, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["policies"] == doc["policies"]


def test_cli_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_bench(["clean", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing: no such file or folder" in err and "\n" not in err
    assert main_bench(["clean", str(CLEAN), "-o", str(tmp_path / "o"), "--policies", "defualt"]) == 2
    assert "defualt" in capsys.readouterr().err
