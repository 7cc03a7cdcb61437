"""Tests for agentir.datasets: the benchmark builder end to end on tiny generated images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agentir.datasets import build_benchmark, list_images, load_manifest, read_rgb, score_inputs, write_png
from agentir.toolbox.degrade import COMBINATIONS, apply_params
from agentir.toolbox.vocab import DEGRADATIONS


def make_clean(folder: Path, n: int = 2, h: int = 34, w: int = 42) -> list[Path]:
    """Write ``n`` procedurally generated RGB PNGs (sizes not multiples of 4) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        img = np.stack([128 + 80 * np.sin(xx / (3 + k)), 100 + yy * 2, 60 + xx * 3], axis=-1)
        p = folder / f"img{k}.png"
        write_png(p, np.clip(img, 0, 255).astype(np.uint8))
        paths.append(p)
    return paths


def test_end_to_end_layout_and_manifest(tmp_path: Path) -> None:
    """Group B with 2 images writes lq/hq PNGs per combo, x4-smaller low-res inputs and a complete manifest."""
    make_clean(tmp_path / "clean")
    out = tmp_path / "bench"
    m = build_benchmark(tmp_path / "clean", out, groups=("B",), per_combo=2, seed=3, progress=False)
    assert m == load_manifest(out) == json.loads((out / "manifest.json").read_text())
    assert m["mode"] == "combinations" and m["seed"] == 3 and m["skipped"] == []
    assert m["combos"] == {"B": ["+".join(c) for c in COMBINATIONS["B"]]}
    assert len(m["items"]) == 4 * 2
    for it in m["items"]:
        lq, hq = read_rgb(out / it["lq"]), read_rgb(out / it["hq"])
        assert hq.shape == (32, 40, 3) and list(hq.shape) == it["hq_shape"] and list(lq.shape) == it["lq_shape"]
        assert lq.shape == ((8, 10, 3) if "low_resolution" in it["degradations"] else (32, 40, 3))
        assert it["lq"] == f"lq/B/{it['combo']}/{it['stem']}.png" and it["hq"] == f"hq/B/{it['combo']}/{it['stem']}.png"
        assert [p["name"] for p in it["params"]] == it["degradations"] == it["combo"].split("+")
    assert not list(out.rglob("*.tmp")), "no temporary files may be left behind"


def test_manifest_params_replay_the_written_inputs(tmp_path: Path) -> None:
    """Re-applying the manifest's params to the hq image reproduces the written lq image exactly."""
    make_clean(tmp_path / "clean")
    out = tmp_path / "bench"
    m = build_benchmark(tmp_path / "clean", out, groups=("C",), per_combo=1, progress=False)
    for it in m["items"]:
        img = read_rgb(out / it["hq"])
        for p in it["params"]:
            img = apply_params(img, p)
        assert np.array_equal(img, read_rgb(out / it["lq"]))


def test_deterministic_and_independent_of_selection(tmp_path: Path) -> None:
    """The same seed gives identical files; an image's result does not depend on which groups are built."""
    make_clean(tmp_path / "clean")
    m1 = build_benchmark(tmp_path / "clean", tmp_path / "o1", groups=("A", "B"), per_combo=2, seed=5, progress=False)
    m2 = build_benchmark(tmp_path / "clean", tmp_path / "o2", groups=("B",), per_combo=2, seed=5, progress=False)
    m3 = build_benchmark(tmp_path / "clean", tmp_path / "o3", groups=("B",), per_combo=2, seed=6, progress=False)
    b1 = [it for it in m1["items"] if it["group"] == "B"]
    assert [it["params"] for it in b1] == [it["params"] for it in m2["items"]]
    for it in m2["items"]:
        assert (tmp_path / "o1" / it["lq"]).read_bytes() == (tmp_path / "o2" / it["lq"]).read_bytes()
    assert [it["params"] for it in m2["items"]] != [it["params"] for it in m3["items"]]


def test_cycles_when_fewer_images_than_per_combo(tmp_path: Path) -> None:
    """per_combo larger than the image count cycles through the images, naming repeats <stem>_r<k>."""
    make_clean(tmp_path / "clean")
    m = build_benchmark(tmp_path / "clean", tmp_path / "o", groups=("B",), per_combo=5, progress=False)
    stems = [it["stem"] for it in m["items"] if it["combo"] == "motion_blur+jpeg"]
    assert stems == ["img0", "img1", "img0_r1", "img1_r1", "img0_r2"]
    lqs = [read_rgb(tmp_path / "o" / it["lq"]) for it in m["items"] if it["combo"] == "motion_blur+jpeg"]
    assert not np.array_equal(lqs[0], lqs[2]), "a repeat must get its own random draws"


def test_levels_mode(tmp_path: Path) -> None:
    """Levels mode writes every single degradation at each level under lq/single/<degradation>/<level>/."""
    make_clean(tmp_path / "clean", n=1)
    out = tmp_path / "lv"
    m = build_benchmark(tmp_path / "clean", out, per_combo=1, levels=["very_low", "high"], progress=False)
    assert m["mode"] == "levels" and m["levels"] == ["very_low", "high"]
    assert len(m["items"]) == len(DEGRADATIONS) * 2
    by = {(it["combo"], it["level"]): it for it in m["items"]}
    assert by[("noise", "high")]["lq"] == "lq/single/noise/high/img0.png"
    assert by[("noise", "high")]["params"][0]["level"] == "high"
    assert np.array_equal(read_rgb(out / by[("rain", "very_low")]["lq"]), read_rgb(out / by[("rain", "very_low")]["hq"]))
    assert by[("low_resolution", "high")]["lq_shape"] == [8, 10, 3]


def test_score_inputs_groups(tmp_path: Path) -> None:
    """score_inputs averages PSNR per combo, then per group over combos, upscaling low-res inputs."""
    make_clean(tmp_path / "clean")
    out = tmp_path / "o"
    build_benchmark(tmp_path / "clean", out, groups=("B",), per_combo=2, progress=False)
    s = score_inputs(out)
    assert set(s["combos"]) == {f"B/{'+'.join(c)}" for c in COMBINATIONS["B"]}
    assert all(v["n"] == 2 and 0 < v["psnr"] < 60 for v in s["combos"].values())
    assert s["groups"]["B"]["psnr"] == pytest.approx(np.mean([v["psnr"] for v in s["combos"].values()]))


def test_corrupt_and_tiny_files_are_skipped_and_reported(tmp_path: Path) -> None:
    """Undecodable or smaller-than-4-pixel images are skipped and listed in the manifest with a reason."""
    clean = tmp_path / "clean"
    make_clean(clean, n=1)
    (clean / "bad.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(clean / "tiny.png"), np.zeros((3, 3, 3), np.uint8))
    m = build_benchmark(clean, tmp_path / "o", groups=("B",), per_combo=1, progress=False)
    assert [s["source"] for s in m["skipped"]] == ["bad.png", "tiny.png"]
    assert "not a recognised image" in m["skipped"][0]["reason"] and "too small" in m["skipped"][1]["reason"]
    assert {it["source"] for it in m["items"]} == {"img0.png"}


def test_missing_or_empty_dirs_raise(tmp_path: Path) -> None:
    """A missing folder is a FileNotFoundError naming it; a folder without images or without usable ones is a ValueError."""
    with pytest.raises(FileNotFoundError, match="nope"):
        build_benchmark(tmp_path / "nope", tmp_path / "o", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 1 image files"):
        build_benchmark(tmp_path / "bad", tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(tmp_path / "empty")


def test_bad_arguments_raise(tmp_path: Path) -> None:
    """Unknown groups or levels, a non-positive per_combo and clashing stems raise ValueError."""
    make_clean(tmp_path / "clean", n=1)
    with pytest.raises(ValueError, match="choose from A, B, C"):
        build_benchmark(tmp_path / "clean", tmp_path / "o", groups=("D",), progress=False)
    with pytest.raises(ValueError, match="unknown severity level"):
        build_benchmark(tmp_path / "clean", tmp_path / "o", levels=["severe"], progress=False)
    with pytest.raises(ValueError, match="per_combo"):
        build_benchmark(tmp_path / "clean", tmp_path / "o", per_combo=0, progress=False)
    cv2.imwrite(str(tmp_path / "clean" / "img0.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="share the stem"):
        list_images(tmp_path / "clean")


def test_split_keeps_the_first_or_second_half_by_name(tmp_path: Path) -> None:
    """``split="held-out"`` uses only the images that learned components never saw (the second half)."""
    make_clean(tmp_path / "clean", n=4)
    names = [p.name for p in list_images(tmp_path / "clean")]
    held = build_benchmark(tmp_path / "clean", tmp_path / "held", groups=["A"], per_combo=None, split="held-out", progress=False)
    train = build_benchmark(tmp_path / "clean", tmp_path / "train", groups=["A"], per_combo=None, split="train", progress=False)
    assert {i["source"] for i in held["items"]} == set(names[2:]) and held["split"] == "held-out"
    assert {i["source"] for i in train["items"]} == set(names[:2])
    with pytest.raises(ValueError, match="split must be one of"):
        build_benchmark(tmp_path / "clean", tmp_path / "x", split="test", progress=False)
