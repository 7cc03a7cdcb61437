"""Regression tests of the realistic camera-noise synthesis (:mod:`agentir.toolbox.camera`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agentir.toolbox import camera
from agentir.toolbox.degrade import degrade


def _params(seed: int = 0, log_shot: float = math.log(2e-3), **over: object) -> dict:
    p = camera.draw_camera_noise(np.random.default_rng(seed), log_shot=log_shot, jpeg=False)
    p.update({"grain": 0.0, "chroma_nr": 0.0, "demosaic": "bilinear", **over})
    return p


def _residual(img: np.ndarray, p: dict) -> np.ndarray:
    return camera.apply_camera_noise(img, p).astype(np.float64) - camera.apply_camera_noise(img, p, noise=False).astype(np.float64)


def _scene(h: int = 96, w: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([40 + 150 * x / w, 60 + 120 * y / h, 120 + 60 * np.sin(x / 9.0)], -1)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def test_same_generator_state_gives_the_same_image_and_params() -> None:
    """camera_noise is deterministic from the generator, and apply_camera_noise replays recorded params bit-exactly."""
    img = _scene()
    a, pa = camera.camera_noise(img, np.random.default_rng(7))
    b, pb = camera.camera_noise(img, np.random.default_rng(7))
    assert np.array_equal(a, b) and pa == pb
    assert np.array_equal(camera.apply_camera_noise(img, pa), a)
    c, _ = camera.camera_noise(img, np.random.default_rng(8))
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == img.shape


def test_raw_noise_variance_grows_linearly_with_the_signal() -> None:
    """On the mosaic, the noise variance is shot * signal + read: it grows with intensity."""
    shot, read = 4e-3, 1e-5
    var = []
    for level in (0.05, 0.2, 0.5):
        raw = np.full((256, 256), level)
        noisy = camera.add_raw_noise(raw, shot, read, np.random.default_rng(1))
        var.append(float((noisy - raw).var()))
        assert var[-1] == pytest.approx(shot * level + read, rel=0.08)
    assert var[0] < var[1] < var[2]


def test_output_noise_depends_on_the_signal() -> None:
    """After the tone curve the noise still depends on intensity: it grows from shadows to mid-grey (white Gaussian noise would not)."""
    p = _params()
    sd = [float(_residual(np.full((128, 128, 3), v, np.uint8), p).std()) for v in (15, 50, 128)]
    assert sd[0] < sd[1] < sd[2], sd
    assert sd[2] > 1.3 * sd[0]


def test_noise_is_correlated_across_neighbours_and_colours() -> None:
    """Demosaicing correlates each pixel's noise with its neighbour's and the colour matrix mixes the channels; the benchmark's Gaussian noise does neither."""
    flat = np.full((128, 128, 3), 110, np.uint8)
    r = _residual(flat, _params(ccm_blend=1.0))
    g = r[..., 1]
    horiz = np.corrcoef(g[:, :-1].ravel(), g[:, 1:].ravel())[0, 1]
    rg = np.corrcoef(r[..., 0].ravel(), r[..., 1].ravel())[0, 1]
    assert horiz > 0.2 and abs(rg) > 0.2, (horiz, rg)
    white, _ = degrade(flat, "noise", np.random.default_rng(0), level="medium")
    w = white.astype(np.float64)[..., 1] - 110
    assert abs(np.corrcoef(w[:, :-1].ravel(), w[:, 1:].ravel())[0, 1]) < 0.05
    grainy = _residual(flat, _params(grain=1.0))[..., 1]
    assert np.corrcoef(grainy[:, :-1].ravel(), grainy[:, 1:].ravel())[0, 1] > horiz  # grain widens the correlation


def test_chroma_noise_reduction_leaves_luma_noise() -> None:
    """In-camera chroma noise reduction removes most colour noise and keeps the luma noise."""
    flat = np.full((128, 128, 3), 110, np.uint8)
    luma = np.array([0.299, 0.587, 0.114])
    for nr, expect_low in ((0.0, False), (2.0, True)):
        r = _residual(flat, _params(chroma_nr=nr))
        y = r @ luma
        chroma = float((r - y[..., None]).std())
        assert (chroma < 0.5 * float(y.std())) == expect_low, (nr, chroma, float(y.std()))


def test_effective_sigma_grows_with_shot_noise() -> None:
    """More shot noise reads as a larger effective sigma on the benchmark's 0..255 scale."""
    img = _scene()
    sig = [camera.camera_noise(img, np.random.default_rng(3), log_shot=math.log(s), jpeg=False)[1]["sigma_eff"] for s in (2e-4, 2e-3, 2e-2)]
    assert sig[0] < sig[1] < sig[2] and sig[0] > 0.5, sig


def test_without_noise_colours_survive_the_round_trip() -> None:
    """Unprocess + process with no noise keeps saturated primaries where they are (the Bayer pattern is not mis-ordered)."""
    for ch in range(3):
        img = np.zeros((16, 16, 3), np.uint8)
        img[..., ch] = 200
        out = camera.apply_camera_noise(img, _params(ccm_blend=0.0), noise=False)
        assert np.abs(out[4:12, 4:12].astype(int) - img[4:12, 4:12]).max() <= 2


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), np.zeros((1, 8, 3), np.uint8)])
def test_bad_images_are_refused(bad: np.ndarray) -> None:
    """Non-RGB-uint8 images and images smaller than one Bayer cell raise ValueError."""
    with pytest.raises(ValueError):
        camera.camera_noise(bad, np.random.default_rng(0))
