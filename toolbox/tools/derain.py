"""Deraining (subtask ``deraining``): remove the bright, grey, oriented streak layer.

The benchmark adds one rain layer ``R >= 0`` to all three channels alike: thin (2-3 px) streaks,
12-32 px long, all at one angle within 30 degrees of vertical. The layer is recovered as the part
of the image that is (1) narrower than a few pixels across the streak direction (a morphological
opening with a line across the streaks removes it), (2) grey (the minimum of the per-channel
residuals) and (3) elongated along the streaks (an opening with a line along them keeps it).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agentir.toolbox.tools._common import NumpyTool


def line_element(length: int, angle_deg: float) -> np.ndarray:
    """A ``uint8`` structuring element: a 1-px line of ``length`` at ``angle_deg`` from the x axis
    (y down)."""
    n = length if length % 2 else length + 1
    se = np.zeros((n, n), np.uint8)
    c = n // 2
    a = math.radians(angle_deg)
    dx, dy = (n // 2) * math.cos(a), (n // 2) * math.sin(a)
    cv2.line(se, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1, 1)
    return se


def _open(img: np.ndarray, se: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(img, cv2.MORPH_OPEN, se, borderType=cv2.BORDER_REPLICATE)


def streak_angle(residual: np.ndarray) -> float:
    """Dominant streak direction (degrees from the x axis, y down) of a residual layer.

    Rain falls within 30 degrees of vertical, so the answer is kept in ``[60, 120]``.
    """
    gx = cv2.Sobel(residual, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(residual, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    theta = math.degrees(0.5 * math.atan2(2 * jxy, jxx - jyy) + math.pi / 2) % 180.0
    return float(np.clip(theta, 60.0, 120.0))


def rain_layer(img: np.ndarray, *, across: int = 7, along: int = 11) -> np.ndarray:
    """Estimate the grey rain layer (``H x W``, ``>= 0``) of an ``H x W x 3`` image."""
    # A first, direction-free residual to find the streak angle.
    wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (across, across))
    res0 = np.min(img - np.stack([_open(img[..., c], wide) for c in range(3)], axis=2), axis=2)
    angle = streak_angle(res0)
    # Open across the streaks: thin structures along `angle` disappear from the background.
    cross = line_element(across, angle + 90.0)
    back = np.stack([_open(img[..., c], cross) for c in range(3)], axis=2)
    res = np.clip(np.min(img - back, axis=2), 0.0, None)
    # Keep only what is elongated along the streaks.
    return _open(res, line_element(along, angle))


class StreakDerain(NumpyTool):
    """Subtract the estimated oriented grey streak layer (see the module docstring).

    Args:
        name: registry name.
        strength: fraction of the estimated layer removed.
        across: width (px) below which bright structures count as streaks.
        along: minimum length (px) of a streak.
    """

    degradation = "rain"

    def __init__(self, name: str = "streak_derain", *, strength: float = 1.0, across: int = 7, along: int = 11) -> None:
        self.name = name
        self.strength = strength
        self.across = across
        self.along = along

    def process(self, img: np.ndarray) -> np.ndarray:
        r = rain_layer(img, across=self.across, along=self.along)
        return img - self.strength * r[..., None]


class MedianDerain(NumpyTool):
    """Replace grey bright outliers (above a 5x5 median by more than ``threshold``) by the median."""

    degradation = "rain"

    def __init__(self, name: str = "median_derain", *, threshold: float = 0.04, size: int = 5) -> None:
        self.name = name
        self.threshold = threshold
        self.size = size

    def process(self, img: np.ndarray) -> np.ndarray:
        if self.size <= 5:  # OpenCV's float median only supports 3 and 5
            med = cv2.medianBlur(np.ascontiguousarray(img), self.size)
        else:
            u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
            med = cv2.medianBlur(u8, self.size).astype(np.float32) / 255.0
        excess = np.min(img - med, axis=2)
        mask = cv2.dilate((excess > self.threshold).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        out = img.copy()
        out[mask] = med[mask]
        return out
