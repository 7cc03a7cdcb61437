"""Tests for the built-in analytic perception policy (procedural images only)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from agent_policies.perception import AnalyticPerception, CalibrationError, Perception, PerceptionPolicy
from agent_policies.perception.calibrate import label_from_params
from toolbox.vocab import DEGRADATIONS, LEVELS, level_index


@pytest.fixture(scope="module")
def policy() -> AnalyticPerception:
    return AnalyticPerception()


def scene(seed: int = 0, size: tuple[int, int] = (320, 480)) -> np.ndarray:
    """A natural-looking procedural RGB image: 1/f colour texture plus sharp-edged shapes."""
    rng = np.random.default_rng(seed)
    h, w = size
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w)) ** 1.1
    chans = []
    for _ in range(3):
        spec = amp * np.exp(2j * np.pi * rng.random((h, w)))
        f = np.real(np.fft.ifft2(spec))
        chans.append((f - f.mean()) / (f.std() + 1e-9))
    mix = rng.normal(0.0, 0.4, (3, 3)) + np.eye(3)
    img = np.stack(chans, -1) @ mix.T * 30.0 + rng.uniform(90, 150, 3)
    img = np.ascontiguousarray(img)
    for _ in range(25):
        colour = tuple(float(c) for c in rng.uniform(20, 235, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(8, w // 5)), int(rng.integers(8, h // 5)))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            pts = rng.integers(0, [w, h], (4, 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def add_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noisy = img + np.random.default_rng(seed).normal(0.0, sigma, img.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def at_least(level: str, floor: str) -> bool:
    return level_index(level) >= level_index(floor)


def test_policy_implements_protocol(policy: AnalyticPerception) -> None:
    """AnalyticPerception satisfies the PerceptionPolicy protocol and is named "analytic"."""
    assert isinstance(policy, PerceptionPolicy)
    assert policy.name == "analytic"


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (1, 64), (64, 1), (3, 17), (13, 300), (81, 121), (600, 900)])
def test_any_size_gives_all_levels_and_scores(policy: AnalyticPerception, shape: tuple[int, int]) -> None:
    """Images of any size, 1-pixel edges included, yield a level and a finite 0..4 score for all eight degradations."""
    img = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    (p,) = policy.perceive([img])
    assert isinstance(p, Perception)
    assert list(p.levels) == list(DEGRADATIONS) and list(p.scores) == list(DEGRADATIONS)
    assert all(lv in LEVELS for lv in p.levels.values())
    assert all(np.isfinite(s) and 0.0 <= s <= 4.0 for s in p.scores.values())


def test_batched_equals_one_by_one(policy: AnalyticPerception) -> None:
    """Perceiving a batch gives exactly the per-image results, in order."""
    imgs = [scene(1), add_noise(scene(2, (200, 260)), 30), jpeg(scene(3, (128, 96)), 10)]
    assert policy.perceive(imgs) == [policy.perceive([im])[0] for im in imgs]
    assert policy.perceive([]) == []


def test_rate_matches_perceive(policy: AnalyticPerception) -> None:
    """rate() returns the same level and score perceive() gives for that degradation."""
    imgs = [add_noise(scene(4), 25), scene(5, (100, 150))]
    full = policy.perceive(imgs)
    for deg in DEGRADATIONS:
        assert policy.rate(imgs, deg) == [(p.levels[deg], p.scores[deg]) for p in full]


def test_scores_are_monotone_with_levels(policy: AnalyticPerception) -> None:
    """Across many images a higher level never comes with a lower score for the same degradation."""
    imgs = [scene(s) for s in range(3)]
    imgs += [add_noise(imgs[0], s) for s in (5, 15, 30, 50)] + [jpeg(imgs[1], q) for q in (10, 30)]
    imgs += [(imgs[2] * f).astype(np.uint8) for f in (0.3, 0.6)]
    ps = policy.perceive(imgs)
    for deg in DEGRADATIONS:
        pairs = sorted((level_index(p.levels[deg]), p.scores[deg]) for p in ps)
        by_level: dict[int, list[float]] = {}
        for lv, s in pairs:
            by_level.setdefault(lv, []).append(s)
        ordered = sorted(by_level)
        for lo, hi in zip(ordered, ordered[1:]):
            assert max(by_level[lo]) <= min(by_level[hi]) + 1e-6, deg


def test_clean_scenes_read_mostly_very_low(policy: AnalyticPerception) -> None:
    """Clean procedural scenes read at most one degradation as present, and mostly very_low/low."""
    for seed in range(4):
        (p,) = policy.perceive([scene(seed)])
        present = [d for d, lv in p.levels.items() if at_least(lv, "medium")]
        assert len(present) <= 1, (seed, p.levels)
        assert p.levels["noise"] in ("very_low", "low") and p.levels["jpeg"] in ("very_low", "low"), p.levels


def test_strong_noise_reads_noise(policy: AnalyticPerception) -> None:
    """Gaussian colour noise of sigma 35 reads noise at medium or worse and not as rain."""
    for seed in range(3):
        (p,) = policy.perceive([add_noise(scene(seed), 35, seed)])
        assert at_least(p.levels["noise"], "medium"), p.levels
        assert not at_least(p.levels["rain"], "medium"), p.levels


def test_noise_score_grows_with_sigma(policy: AnalyticPerception) -> None:
    """The noise score increases with the noise sigma."""
    img = scene(7)
    scores = [s for _, s in policy.rate([add_noise(img, sg) for sg in (0, 8, 20, 35, 50)], "noise")]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_dark_image_reads_dark(policy: AnalyticPerception) -> None:
    """An image scaled down to a quarter of its brightness reads dark at medium or worse."""
    dark = (scene(8).astype(np.float64) * 0.35).round().astype(np.uint8)
    ((level, _),) = policy.rate([dark], "dark")
    assert at_least(level, "medium")
    ((level, _),) = policy.rate([scene(8)], "dark")
    assert not at_least(level, "medium")


def test_jpeg_q10_reads_jpeg(policy: AnalyticPerception) -> None:
    """JPEG at quality 10 reads jpeg at medium or worse; it is not taken for noise."""
    for seed in range(3):
        (p,) = policy.perceive([jpeg(scene(seed), 10)])
        assert at_least(p.levels["jpeg"], "medium"), p.levels
        assert not at_least(p.levels["noise"], "medium"), p.levels


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((16, 16, 3), np.float32),
        np.zeros((16, 16), np.uint8),
        np.zeros((16, 16, 4), np.uint8),
        np.zeros((0, 16, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float", "gray", "rgba", "empty", "list"],
)
def test_bad_images_raise_value_error(policy: AnalyticPerception, bad: object) -> None:
    """Anything but a non-empty uint8 H x W x 3 array is refused with ValueError, in perceive and rate."""
    with pytest.raises(ValueError):
        policy.perceive([bad])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        policy.rate([bad], "noise")  # type: ignore[list-item]


def test_single_array_instead_of_sequence_is_refused(policy: AnalyticPerception) -> None:
    """Passing one image array instead of a list of images raises ValueError telling how to wrap it."""
    with pytest.raises(ValueError, match="wrap"):
        policy.perceive(scene(0, (64, 64)))  # type: ignore[arg-type]


def test_unknown_degradation_is_refused(policy: AnalyticPerception) -> None:
    """rate() with a misspelt degradation raises ValueError suggesting the right name."""
    with pytest.raises(ValueError, match="noise"):
        policy.rate([scene(0, (64, 64))], "noize")


def test_missing_or_broken_calibration_is_reported(tmp_path) -> None:  # noqa: ANN001
    """A missing or incomplete calibration file raises CalibrationError naming the file."""
    with pytest.raises(CalibrationError, match="not found"):
        AnalyticPerception(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"models": {"noise": {}}}))
    with pytest.raises(CalibrationError, match="no model for"):
        AnalyticPerception(broken)


def test_labels_from_test_set_parameters() -> None:
    """Test-set parameters map to the nearest severity level (e.g. Gaussian sigma 37 -> high)."""
    assert label_from_params({"name": "noise", "kind": "gaussian", "sigma": 37.0}) == 3
    assert label_from_params({"name": "noise", "kind": "poisson", "scale": 1.0}) == 2
    assert label_from_params({"name": "jpeg", "quality": 10}) == 4
    assert label_from_params({"name": "dark", "variant": "linear", "max": 120}) == 4
    assert label_from_params({"name": "motion_blur", "radius": 10, "sigma": 3.0}) == 2
    assert label_from_params({"name": "rain", "applied": False}) == 0
