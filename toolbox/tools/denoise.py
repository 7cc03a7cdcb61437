"""Denoising tools (subtask ``denoising``): non-local means and sliding-window DCT thresholding.

Both estimate the noise level themselves (:func:`estimate_noise_sigma`), so a clean image is
left almost untouched. The benchmark's noise is Gaussian colour noise (sigma 20-50 / 255) or
scaled Poisson noise.
"""

from __future__ import annotations

import cv2
import numpy as np

from toolbox.tools._common import NumpyTool, dct_threshold, estimate_noise_sigma, from_opponent, to_opponent


class DCTDenoise(NumpyTool):
    """Translation-invariant 8x8 DCT hard thresholding in opponent colour space.

    Args:
        name: registry name.
        factor: threshold = ``factor * sigma`` (2.7 is the classical choice).
        stride: window step (1 = fully translation invariant, 2 = 4x faster).
        strength: multiplies the estimated sigma (``< 1`` milder, ``> 1`` stronger).
    """

    degradation = "noise"

    def __init__(self, name: str = "dct_denoise", *, factor: float = 2.7, stride: int = 2, strength: float = 1.0) -> None:
        self.name = name
        self.factor = factor
        self.stride = stride
        self.strength = strength

    def process(self, img: np.ndarray) -> np.ndarray:
        sigma = estimate_noise_sigma(img) * self.strength
        if sigma < 1.0 / 255:
            return img.copy()
        opp = to_opponent(img)
        out = dct_threshold(opp, np.full(3, self.factor * sigma), stride=self.stride)
        return from_opponent(out)


class NLMDenoise(NumpyTool):
    """OpenCV's fast non-local means (colour), ``h`` set from the estimated noise sigma.

    Args:
        name: registry name.
        h_factor: ``h = h_factor * sigma`` on the 0-255 scale (luma); colour uses the same.
        search: search-window size (odd).
    """

    degradation = "noise"

    def __init__(self, name: str = "nlm_denoise", *, h_factor: float = 0.9, search: int = 15) -> None:
        self.name = name
        self.h_factor = h_factor
        self.search = search

    def process(self, img: np.ndarray) -> np.ndarray:
        sigma = estimate_noise_sigma(img) * 255.0
        if sigma < 1.0:
            return img.copy()
        u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        h = float(self.h_factor * sigma)
        out = cv2.fastNlMeansDenoisingColored(u8, None, h, h, 7, self.search)
        return out.astype(np.float32) / 255.0


class BilateralDenoise(NumpyTool):
    """Edge-preserving bilateral filter, colour sigma from the estimated noise (a mild fallback)."""

    degradation = "noise"

    def __init__(self, name: str = "bilateral_denoise", *, diameter: int = 7) -> None:
        self.name = name
        self.diameter = diameter

    def process(self, img: np.ndarray) -> np.ndarray:
        sigma = estimate_noise_sigma(img)
        if sigma < 1.0 / 255:
            return img.copy()
        return cv2.bilateralFilter(img, self.diameter, float(2.5 * sigma * np.sqrt(3)), 3.0)
