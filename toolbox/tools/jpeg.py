"""JPEG artifact removal (subtask ``jpeg_artifact_removal``).

The quantisation step is read from the image itself: the 8x8 block DCT coefficients of a
decoded JPEG sit on a lattice of multiples of the quantisation table, so the libjpeg quality
whose luminance table best explains that lattice is the quality the image was saved with
(:func:`estimate_jpeg_quality`). Its scale sets the threshold of a translation-invariant DCT
thresholding, which removes both blocking and ringing.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from agentir.toolbox.tools._common import NumpyTool, dct_threshold, from_opponent, to_opponent

# libjpeg's standard luminance table (Annex K), row-major.
_QLUM = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)
# Low frequencies carry most non-zero coefficients: the lattice evidence.
_FREQS = ((0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1))


def quality_scale(quality: int) -> float:
    """libjpeg's table scale in percent for a quality 1..100."""
    q = min(max(int(quality), 1), 100)
    return 5000.0 / q if q < 50 else 200.0 - 2.0 * q


def _table(quality: int) -> np.ndarray:
    return np.clip(np.floor((_QLUM * quality_scale(quality) + 50.0) / 100.0), 1, 255)


def _block_dct(y: np.ndarray) -> np.ndarray:
    """``nb x 8 x 8`` DCT-II (JPEG normalisation) of the aligned 8x8 blocks of ``y`` (0..255)."""
    h, w = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    blocks = (y[:h, :w] - 128.0).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    n = np.arange(8)
    c = np.sqrt(2.0 / 8) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 16)
    c[0] /= np.sqrt(2.0)
    return np.einsum("ux,bxy,vy->buv", c, blocks, c)


def estimate_jpeg_quality(img: np.ndarray) -> tuple[int | None, float]:
    """Estimate the JPEG quality an ``H x W x 3`` image in ``[0, 1]`` was saved with.

    Returns ``(quality, confidence)``; ``quality`` is ``None`` when no quantisation lattice is
    visible (not a JPEG, too small, or re-processed after decoding).
    """
    y = (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114) * 255.0
    if y.shape[0] < 16 or y.shape[1] < 16:
        return None, 0.0
    coef = _block_dct(y.astype(np.float64))
    best: tuple[int | None, float] = (None, 0.0)
    # From the coarsest table to the finest: the first table whose lattice fits is the answer
    # (finer divisors of the true step fit too, so the coarsest fitting one wins).
    for q in range(5, 96):
        table = _table(q)
        scores, weights = [], []
        for u, v in _FREQS:
            step = table[u, v]
            if step < 4:
                continue
            c = coef[:, u, v]
            nz = c[np.abs(c) > step / 2]
            if nz.size < 20:
                continue
            scores.append(np.mean(np.cos(2 * np.pi * nz / step)))
            weights.append(nz.size)
        if len(scores) < 2:
            continue
        score = float(np.average(scores, weights=weights))
        if score > 0.6:
            return q, score
        if score > best[1]:
            best = (None, score)
    return best


class DCTDejpeg(NumpyTool):
    """Translation-invariant DCT thresholding with a threshold set by the estimated JPEG quality.

    Args:
        name: registry name.
        strength: multiplies the threshold (``< 1`` milder, ``> 1`` stronger).
        chroma: extra threshold factor for the two chroma channels (subsampled, coarser table).
        fallback_quality: quality assumed when none can be estimated.
    """

    degradation = "jpeg"

    def __init__(
        self,
        name: str = "dct_dejpeg",
        *,
        strength: float = 1.0,
        chroma: float = 1.6,
        fallback_quality: int = 25,
    ) -> None:
        self.name = name
        self.strength = strength
        self.chroma = chroma
        self.fallback_quality = fallback_quality

    def sigma_for(self, quality: int) -> float:
        """Equivalent noise sigma (``[0, 1]`` units) for a JPEG quality.

        Grows with the square root of libjpeg's table scale; the constant was tuned on CBSD68
        (qualities 10 / 20 / 30: gains flat within 0.05 dB for 0.8x..1.3x of it).
        """
        return 6.6 * np.sqrt(quality_scale(quality) / 100.0) / 255.0

    #: A large image's parameters are estimated on a centre crop (the JPEG grid and its
    #: quantisation are the same all over the image), then applied tile by tile.
    estimate_sample = "crop"

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``quality``: the estimated JPEG quality (``fallback_quality`` when none is found)."""
        estimated, _ = estimate_jpeg_quality(img)
        return {"quality": float(self.fallback_quality if estimated is None else estimated)}

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        q = int(round(float(params["quality"])))
        sigma = self.sigma_for(q) * self.strength
        opp = to_opponent(img)
        # Chroma is subsampled and quantised with a coarser table: smooth it harder.
        thr = 2.7 * sigma * np.array([1.0, self.chroma, self.chroma])
        return from_opponent(dct_threshold(opp, thr, stride=2))


class BilateralDejpeg(NumpyTool):
    """A mild edge-preserving bilateral smoothing that softens blocks and ringing."""

    degradation = "jpeg"

    def __init__(self, name: str = "bilateral_dejpeg", *, sigma_color: float = 0.06, sigma_space: float = 2.0) -> None:
        self.name = name
        self.sigma_color = sigma_color
        self.sigma_space = sigma_space

    def process(self, img: np.ndarray) -> np.ndarray:
        return cv2.bilateralFilter(img, 7, self.sigma_color, self.sigma_space)
