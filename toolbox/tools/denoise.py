"""Denoising tools (subtask ``denoising``): non-local means and sliding-window DCT thresholding.

Both estimate the noise level themselves (:func:`estimate_noise_sigma`), so a clean image is
left almost untouched; ``estimate`` / ``apply`` split that from the filtering (:mod:`agentir.toolbox.held`). The benchmark's noise is Gaussian colour noise (sigma 20-50 / 255) or
scaled Poisson noise.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from agentir.toolbox.tools._common import NumpyTool, dct_threshold, estimate_noise_sigma, from_opponent, to_opponent


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

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``sigma``: the estimated noise level in [0, 1] units (before ``strength``)."""
        return {"sigma": estimate_noise_sigma(img)}

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        sigma = float(params["sigma"]) * self.strength
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

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``sigma``: the estimated noise level in [0, 1] units."""
        return {"sigma": estimate_noise_sigma(img)}

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        sigma = float(params["sigma"]) * 255.0
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

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``sigma``: the estimated noise level in [0, 1] units."""
        return {"sigma": estimate_noise_sigma(img)}

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        sigma = float(params["sigma"])
        if sigma < 1.0 / 255:
            return img.copy()
        return cv2.bilateralFilter(img, self.diameter, float(2.5 * sigma * np.sqrt(3)), 3.0)

    def apply_u8(self, rgb: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        """:meth:`apply` on a uint8 image with OpenCV's uint8 filter (the stream's fast path,
        about 3x faster; within 2 grey levels of :meth:`apply`, see the tests)."""
        sigma = float(params["sigma"])
        if sigma < 1.0 / 255:
            return rgb.copy()
        return cv2.bilateralFilter(np.ascontiguousarray(rgb), self.diameter, float(2.5 * sigma * np.sqrt(3)) * 255.0, 3.0)

    def apply_torch(self, batch: torch.Tensor, params: Mapping[str, float | str]) -> torch.Tensor:
        """:meth:`apply` on a float batch where it is (CPU or CUDA): :func:`bilateral_torch`."""
        sigma = float(params["sigma"])
        if sigma < 1.0 / 255:
            return batch.clone()
        return bilateral_torch(batch, self.diameter, float(2.5 * sigma * np.sqrt(3)), 3.0)


def bilateral_torch(batch: torch.Tensor, diameter: int, sigma_color: float, sigma_space: float) -> torch.Tensor:
    """OpenCV's colour bilateral filter in torch, for ``N x 3 x H x W`` on any device.

    The same definition as ``cv2.bilateralFilter`` on float images: a disk of radius
    ``diameter // 2``, spatial weight ``exp(-r^2 / (2 sigma_space^2))``, range weight
    ``exp(-d^2 / (2 sigma_color^2))`` with ``d`` the L1 colour distance, mirrored borders
    (BORDER_REFLECT_101). OpenCV tabulates the range weight; this computes it, so the two differ
    by a little rounding (see the tests for the bound).
    """
    r = diameter // 2
    n, _c, h, w = batch.shape
    mode = "reflect" if min(h, w) > r else "replicate"
    padded = F.pad(batch, (r, r, r, r), mode=mode)
    acc = torch.zeros_like(batch)
    wsum = torch.zeros((n, 1, h, w), dtype=batch.dtype, device=batch.device)
    inv_c = -0.5 / (sigma_color * sigma_color)
    inv_s = -0.5 / (sigma_space * sigma_space)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            rr = dy * dy + dx * dx
            if rr > r * r:
                continue
            shifted = padded[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            dist = (shifted - batch).abs().sum(dim=1, keepdim=True)
            weight = torch.exp(dist * dist * inv_c + rr * inv_s)
            acc += weight * shifted
            wsum += weight
    return acc / wsum
