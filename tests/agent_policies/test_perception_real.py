"""Perception on real content: clean images flag nothing; the clip split and frame sampling; camera-noise labels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agentir.agent_policies.perception import AnalyticPerception
from agentir.agent_policies.perception.calibrate import CAMERA_ABSENT_SIGMA, camera_noise_label, is_real_clean, row_weights
from agentir.agent_policies.perception.realdata import FIT_CLIPS, clip_frames, split_clips
from agentir.datasets import read_rgb
from agentir.toolbox.vocab import DEGRADATIONS, level_index

ROOT = Path(__file__).resolve().parents[2]
CLEAN_IMAGES = sorted((ROOT / "examples" / "clean").glob("*.png")) + sorted((ROOT / "tests" / "data" / "clean").glob("*.png"))
CLEAN_CASES = CLEAN_IMAGES  # examples/clean/astronaut.png (a dim studio photo) read dark before the refit


@pytest.fixture(scope="module")
def policy() -> AnalyticPerception:
    return AnalyticPerception()


def test_repo_clean_images_exist() -> None:
    """The clean images the next test reads are in the repo (so it cannot pass vacuously)."""
    assert len(CLEAN_IMAGES) >= 7


@pytest.mark.parametrize("path", CLEAN_CASES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repo_clean_images_flag_nothing(policy: AnalyticPerception, path: Path) -> None:
    """The shipped perception calls no degradation present (medium or worse) on the repo's own clean images.

    Except ``low_resolution`` on images under 160 px a side (``tests/data/clean`` is 128 x 128):
    image size is a deliberate cue there (the benchmark keeps x4-downscaled images small, and a
    bicubic x4 downscale of a photo is pixel for pixel a small clean photo).
    """
    img = read_rgb(path)
    (p,) = policy.perceive([img])
    skip = {"low_resolution"} if max(img.shape[:2]) < 160 else set()
    present = {d: p.levels[d] for d in DEGRADATIONS if d not in skip and level_index(p.levels[d]) >= level_index("medium")}
    assert present == {}, present


def test_clip_split_is_by_sorted_name(tmp_path: Path) -> None:
    """The first FIT_CLIPS asl_* clips by name are fit clips; the other asl_* clips and every other clip are held out."""
    names = [f"asl_{c}.mkv" for c in "tsrqponmlkjihgfedcba"] + ["bottle-detection.mp4", "notes.txt"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    fit, held = split_clips(tmp_path)
    assert [p.name for p in fit] == [f"asl_{c}.mkv" for c in "abcdefghij"][:FIT_CLIPS]
    assert [p.name for p in held] == [
        "asl_k.mkv",
        "asl_l.mkv",
        "asl_m.mkv",
        "asl_n.mkv",
        "asl_o.mkv",
        "asl_p.mkv",
        "asl_q.mkv",
        "asl_r.mkv",
        "asl_s.mkv",
        "asl_t.mkv",
        "bottle-detection.mp4",
    ]
    with pytest.raises(FileNotFoundError, match="not found"):
        split_clips(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no video files"):
        split_clips(tmp_path / "empty")


def test_clip_frames_are_evenly_spaced(tmp_path: Path) -> None:
    """clip_frames decodes a clip and keeps k evenly spaced RGB frames, first and last included."""
    path = tmp_path / "c.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    if not writer.isOpened():  # pragma: no cover - OpenCV builds without an MJPG writer
        pytest.skip("this OpenCV cannot write MJPG")
    for i in range(10):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    frames = clip_frames(path, 4)
    assert len(frames) == 4 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    means = [float(f.mean()) for f in frames]
    assert means == sorted(means) and means[0] < 10 and means[-1] > 170  # frames 0, 3, 6, 9
    with pytest.raises(FileNotFoundError):
        clip_frames(tmp_path / "none.avi", 4)


def test_camera_noise_labels_follow_the_gaussian_levels() -> None:
    """A camera-noise image's label comes from its effective sigma on the Gaussian levels' boundaries."""
    assert camera_noise_label(CAMERA_ABSENT_SIGMA - 0.1) == 0
    assert camera_noise_label(5.0) == 1
    assert camera_noise_label(12.0) == 2
    assert camera_noise_label(30.0) == 3
    assert camera_noise_label(45.0) == 4


def test_real_clean_rows_weigh_more() -> None:
    """Clean photos and frames are the real clean rows, and they carry more loss weight than synthetic ones."""
    rows = [{"kind": k} for k in ("clean", "frame_clean", "single", "camera", "frame_mix")]
    assert [is_real_clean(r) for r in rows] == [True, True, False, False, False]
    w = row_weights(rows)
    assert w[0] > w[2] and w[1] > w[4] and w[3] > w[2]
