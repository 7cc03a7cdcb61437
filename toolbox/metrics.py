"""Full-reference metrics as ``BENCHMARK.md`` defines them (numpy + OpenCV, no torch).

* :func:`psnr`: on RGB in ``[0, 1]``.
* :func:`ssim_y`: SSIM (Wang et al. 2004) on the BT.601 luma ``Y = (16 + 65.481 R + 128.553 G +
  24.966 B) / 255`` (``R, G, B`` in ``[0, 1]``), computed on the ``Y * 255`` scale (so luma lies in
  ``[16, 235]``) with data range 255: ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, an 11x11
  Gaussian window with sigma 1.5 and only the "valid" window positions (5-pixel border
  dropped), exactly as BasicSR's ``calculate_ssim(..., test_y_channel=True, crop_border=0)``.
* :func:`score`: both, upscaling an output that is 4x smaller than its reference with the
  MATLAB-style bicubic of :func:`agentir.toolbox.degrade.bicubic_resize` first.

Images are ``H x W x 3`` RGB; ``uint8`` means ``0..255``, floats mean ``[0, 1]``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agentir.toolbox.degrade import bicubic_resize

__all__ = ["psnr", "score", "ssim_y", "to_y"]

_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2
_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def _as_unit_float(x: np.ndarray, what: str) -> np.ndarray:
    """RGB ``H x W x 3`` as float64 in ``[0, 1]`` (``uint8`` divided by 255, floats as given)."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what}: expected a non-empty H x W x 3 RGB image, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64)
    raise ValueError(f"{what}: expected uint8 (0..255) or float ([0, 1]) pixels, got dtype {x.dtype}")


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"images differ in shape: {a.shape} vs {b.shape}; resize or crop them to the same size "
            "(score() upscales an output exactly 4x smaller than its reference)"
        )


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two RGB images.

    Both images are brought to ``[0, 1]`` first (``uint8 / 255``; floats as given), so
    ``data_range`` is the peak on that scale (``1.0``). Returns ``inf`` for identical images.

    Raises:
        ValueError: not ``H x W x 3`` uint8/float arrays, different shapes, or ``data_range <= 0``.
    """
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    x, y = _as_unit_float(a, "a"), _as_unit_float(b, "b")
    _check_same_shape(x, y)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image on the ``0..255`` scale (values in ``[16, 235]``), float64 ``H x W``."""
    x = _as_unit_float(img, "img")
    return x @ _Y_COEFFS + 16.0


def _gaussian_window() -> np.ndarray:
    g = cv2.getGaussianKernel(11, 1.5)
    return g @ g.T


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on the BT.601 Y channel (see the module docstring for the exact convention).

    Images smaller than 11x11 have no valid window position and raise ``ValueError``.

    Raises:
        ValueError: not ``H x W x 3`` uint8/float arrays, different shapes, or smaller than 11x11.
    """
    ya, yb = to_y(a), to_y(b)
    _check_same_shape(ya, yb)
    if ya.shape[0] < 11 or ya.shape[1] < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {ya.shape[0]}x{ya.shape[1]}")
    win = _gaussian_window()

    def filt(z: np.ndarray) -> np.ndarray:
        return cv2.filter2D(z, -1, win)[5:-5, 5:-5]

    mu1, mu2 = filt(ya), filt(yb)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(ya * ya) - mu1_sq
    s2 = filt(yb * yb) - mu2_sq
    s12 = filt(ya * yb) - mu12
    num = (2 * mu12 + _SSIM_C1) * (2 * s12 + _SSIM_C2)
    den = (mu1_sq + mu2_sq + _SSIM_C1) * (s1 + s2 + _SSIM_C2)
    return float(np.mean(num / den))


def score(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """``{"psnr": dB, "ssim": SSIM-Y}`` of ``output`` against ``reference``.

    An output exactly 4x smaller than the reference in both dimensions (no super-resolution
    done) is first upscaled x4 with MATLAB-style bicubic and clipped to the valid range.

    Raises:
        ValueError: any other shape mismatch, or invalid images (see :func:`psnr`).
    """
    out = output
    if isinstance(output, np.ndarray) and isinstance(reference, np.ndarray) and output.ndim == 3 and reference.ndim == 3:
        oh, ow = output.shape[:2]
        rh, rw = reference.shape[:2]
        if (oh, ow) != (rh, rw):
            if (oh * 4, ow * 4) != (rh, rw):
                raise ValueError(
                    f"output is {oh}x{ow} but the reference is {rh}x{rw}: only equal sizes or an output exactly 4x smaller (upscaled x4 bicubic) can be scored"
                )
            out = bicubic_resize(output, 4)
            if np.issubdtype(out.dtype, np.floating):
                out = np.clip(out, 0.0, 1.0)
    return {"psnr": psnr(out, reference), "ssim": ssim_y(out, reference)}
