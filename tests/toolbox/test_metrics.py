"""Tests for agentir.toolbox.metrics: PSNR on RGB, SSIM on BT.601 Y, and the benchmark score."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from agentir.toolbox.degrade import bicubic_resize
from agentir.toolbox.metrics import psnr, score, ssim_y, to_y

CLEAN = Path(__file__).resolve().parents[1] / "data" / "clean"


def textured(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A procedurally generated RGB uint8 image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 128 + 60 * np.sin(xx / 4.0) * np.cos(yy / 6.0)
    img = np.stack([base, base * 0.8 + 20, base + rng.normal(0, 10, (h, w))], axis=-1)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def test_identical_images() -> None:
    """Identical images give infinite PSNR and SSIM exactly 1."""
    img = textured()
    assert psnr(img, img) == math.inf
    assert ssim_y(img, img) == pytest.approx(1.0, abs=1e-12)


def test_uniform_shift_gives_exact_psnr() -> None:
    """A uniform shift of 10/255 gives PSNR = 20 log10(255 / 10), for uint8 and float inputs alike."""
    img = np.full((16, 16, 3), 100, np.uint8)
    expected = 20 * math.log10(255 / 10)
    assert psnr(img, img + 10) == pytest.approx(expected, abs=1e-9)
    assert psnr(img / 255.0, (img + 10) / 255.0) == pytest.approx(expected, abs=1e-9)
    assert psnr(img, (img + 10) / 255.0) == pytest.approx(expected, abs=1e-9)


def test_psnr_data_range() -> None:
    """data_range sets the peak: doubling it adds 20 log10(2) dB."""
    a, b = np.zeros((4, 4, 3)), np.full((4, 4, 3), 0.1)
    assert psnr(a, b, data_range=2.0) - psnr(a, b) == pytest.approx(20 * math.log10(2))
    with pytest.raises(ValueError, match="data_range"):
        psnr(a, b, data_range=0)


def test_y_channel_is_bt601() -> None:
    """Luma is 16 + 65.481 R + 128.553 G + 24.966 B (RGB in [0, 1]) on the 0..255 scale."""
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], np.uint8)
    assert np.allclose(to_y(px)[0], [16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0])


def test_constant_images_ssim() -> None:
    """Two different flat images get SSIM from the luminance term alone: (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)."""
    a, b = np.full((20, 20, 3), 50, np.uint8), np.full((20, 20, 3), 200, np.uint8)
    m1, m2 = float(to_y(a)[0, 0]), float(to_y(b)[0, 0])
    c1 = (0.01 * 255) ** 2
    assert ssim_y(a, b) == pytest.approx((2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1), rel=1e-9)


@pytest.mark.parametrize("name", sorted(p.stem for p in CLEAN.glob("*.png")))
def test_ssim_matches_scikit_image_reference(name: str) -> None:
    """On real photos with noise of sigma 5, 25 and 60 and with blur, SSIM-Y equals scikit-image's
    Gaussian SSIM (sigma 1.5, population covariance, data range 255) computed on our Y."""
    a = cv2.cvtColor(cv2.imread(str(CLEAN / f"{name}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(2)
    others = [np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).round().astype(np.uint8) for sigma in (5, 25, 60)]
    others.append(cv2.GaussianBlur(a, (0, 0), 2.0))
    for b in others:
        ref = structural_similarity(to_y(a), to_y(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        # Both compute the same float64 formula with the same 11x11 window and 5-pixel border;
        # only the filters' summation order differs (measured gaps about 1e-14). The nearest
        # wrong convention (sample instead of population covariance) is off by 7e-5 or more on
        # these images, a box window or a data range of 219 by 2e-3 or more: 1e-10 tells them apart.
        assert ssim_y(a, b) == pytest.approx(ref, abs=1e-10)


def test_ssim_falls_with_noise() -> None:
    """More noise gives lower SSIM."""
    a = textured()
    rng = np.random.default_rng(0)
    vals = [ssim_y(a, np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8)) for s in (2, 10, 30)]
    assert vals[0] > vals[1] > vals[2]


def test_score_upscales_x4_smaller_outputs() -> None:
    """An output 4x smaller than the reference is upscaled x4 bicubic before scoring."""
    ref = textured(48, 64)
    small = bicubic_resize(ref, 0.25)
    up = bicubic_resize(small, 4)
    s = score(small, ref)
    assert s["psnr"] == pytest.approx(psnr(up, ref)) and s["ssim"] == pytest.approx(ssim_y(up, ref))
    sf = score(small / 255.0, ref)
    assert abs(sf["psnr"] - s["psnr"]) < 0.1


def test_score_same_size() -> None:
    """Same-size images are scored directly."""
    a = textured()
    assert score(a, a) == {"psnr": math.inf, "ssim": pytest.approx(1.0)}


def test_score_rejects_other_shape_mismatches() -> None:
    """Shapes that are neither equal nor exactly 4x smaller raise a ValueError naming both sizes."""
    ref = textured(48, 64)
    with pytest.raises(ValueError, match="24x32"):
        score(ref[:24, :32], ref)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(ref[:, :10], ref)


@pytest.mark.parametrize(
    ("bad", "match"),
    [(np.zeros((8, 8)), "H x W x 3"), (np.zeros((8, 8, 3), np.int32), "dtype"), ("image", "numpy array")],
)
def test_bad_inputs(bad: object, match: str) -> None:
    """Non-RGB arrays, integer types other than uint8 and non-arrays raise ValueError."""
    with pytest.raises(ValueError, match=match):
        psnr(bad, np.zeros((8, 8, 3)))  # type: ignore[arg-type]  # deliberate: bad inputs, to test the ValueError


def test_ssim_needs_11x11() -> None:
    """SSIM on images smaller than the 11x11 window raises a ValueError."""
    a = np.zeros((10, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(a, a)
