"""Brightening (subtask ``brightening``): undo a darkening of the HSV value channel.

The benchmark darkens ``V = max(R, G, B)`` by a shift (``V -= 30..50``, clipped at 0), a gamma
(``V = V^(1/g)``, ``g`` in ``[0.5, 0.7)``) or a linear rescale to a maximum of 100..150. All
three keep hue and saturation, so a new ``V`` is applied by scaling RGB with ``V_new / V``.
:class:`HSVBrighten` tells the three apart from the statistics of ``V`` and inverts the one it
finds; the other tools are simpler, model-free alternatives.
"""

from __future__ import annotations

import cv2
import numpy as np

from toolbox.tools._common import NumpyTool

#: High percentile of V that a well-exposed image reaches (CBSD68: median 255, quartile 240).
_TARGET_HI = 0.97
#: Mean V of a well-exposed image (CBSD68 median ~0.47).
_TARGET_MEAN = 0.45


def _value(img: np.ndarray) -> np.ndarray:
    return img.max(axis=2)


def _apply_value(img: np.ndarray, v_old: np.ndarray, v_new: np.ndarray) -> np.ndarray:
    """Scale RGB so that V becomes ``v_new`` while hue and saturation stay."""
    ratio = v_new / np.maximum(v_old, 1e-4)
    out = img * ratio[..., None]
    black = v_old < 0.5 / 255
    if np.any(black):  # pure black carries no colour: give it the new value as grey
        out[black] = v_new[black][:, None]
    return out


def _robust_hi(v: np.ndarray, q: float = 99.5) -> float:
    """High percentile of V after a 3x3 median, so isolated noisy or rainy pixels do not count."""
    vm = cv2.medianBlur(np.ascontiguousarray(v, dtype=np.float32), 3)
    return float(np.percentile(vm, q))


def _gamma_for_mean(v: np.ndarray, target: float) -> float:
    """Exponent ``g`` with ``mean(v^g) ~= target`` (bisection on the monotone mean)."""
    lo, hi = 0.2, 1.0
    sample = v[:: max(1, v.shape[0] // 128), :: max(1, v.shape[1] // 128)].ravel()
    sample = np.maximum(sample, 1e-4)
    if np.mean(sample) >= target:
        return 1.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if np.mean(sample**mid) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def classify_darkening(img: np.ndarray) -> tuple[str, float]:
    """Guess how an ``H x W x 3`` image in ``[0, 1]`` was darkened: ``(variant, parameter)``.

    ``("shift", k)`` (many clipped blacks, top end lowered), ``("linear", hi)`` (top end
    lowered, no clipping), ``("gamma", g)`` (top end intact, mean low) or ``("none", 0)``.
    """
    v = _value(img)
    hi = _robust_hi(v)
    zero_frac = float(np.mean(v <= 1.0 / 255))
    if hi < 0.92:
        if zero_frac > 0.003 and hi > 0.6:
            return "shift", max(0.0, _TARGET_HI - hi)
        return "linear", hi
    g = _gamma_for_mean(v, _TARGET_MEAN)
    return ("gamma", g) if g < 0.95 else ("none", 0.0)


class HSVBrighten(NumpyTool):
    """Model-based inversion on V: undo a shift or a linear rescale (the top end of V comes back
    to ~0.97), then, if the image is still dark on average, a gamma towards a mean V of 0.45.

    Args:
        name: registry name.
        dark_mean: below this mean V after the first step, the gamma step runs.
    """

    degradation = "dark"

    def __init__(self, name: str = "hsv_brighten", *, dark_mean: float = 0.33) -> None:
        self.name = name
        self.dark_mean = dark_mean

    def process(self, img: np.ndarray) -> np.ndarray:
        variant, param = classify_darkening(img)
        v = _value(img)
        if variant == "shift":
            v_new = np.where(v > 0.5 / 255, v + param, 0.5 * param)
        elif variant == "linear":
            v_new = v * min(_TARGET_HI / max(param, 1e-3), 4.0)
        else:
            v_new = v
        v_new = np.clip(v_new, 0.0, 1.0)
        if float(v_new.mean()) < self.dark_mean:
            v_new = np.power(v_new, _gamma_for_mean(v_new, _TARGET_MEAN))
        return _apply_value(img, v, v_new)


class GammaBrighten(NumpyTool):
    """Gamma on V chosen so that the mean V reaches a well-exposed level."""

    degradation = "dark"

    def __init__(self, name: str = "gamma_brighten", *, target: float = _TARGET_MEAN) -> None:
        self.name = name
        self.target = target

    def process(self, img: np.ndarray) -> np.ndarray:
        v = _value(img)
        g = _gamma_for_mean(v, self.target)
        return _apply_value(img, v, np.power(v, g))


class StretchBrighten(NumpyTool):
    """Linear stretch of V so that its robust maximum reaches ~0.97 (undoes a linear rescale)."""

    degradation = "dark"

    def __init__(self, name: str = "stretch_brighten") -> None:
        self.name = name

    def process(self, img: np.ndarray) -> np.ndarray:
        v = _value(img)
        hi = _robust_hi(v)
        gain = min(_TARGET_HI / max(hi, 1e-3), 4.0)
        return _apply_value(img, v, np.clip(v * max(gain, 1.0), 0.0, 1.0))


class CLAHEBrighten(NumpyTool):
    """Gamma to a mid mean, then CLAHE on the Lab lightness (local contrast; a different look)."""

    degradation = "dark"

    def __init__(self, name: str = "clahe_brighten", *, clip: float = 1.5) -> None:
        self.name = name
        self.clip = clip

    def process(self, img: np.ndarray) -> np.ndarray:
        v = _value(img)
        base = _apply_value(img, v, np.power(v, _gamma_for_mean(v, _TARGET_MEAN)))
        u8 = np.clip(base * 255.0 + 0.5, 0, 255).astype(np.uint8)
        lab = cv2.cvtColor(u8, cv2.COLOR_RGB2LAB)
        tiles = (max(1, min(8, img.shape[0] // 32)), max(1, min(8, img.shape[1] // 32)))
        lab[..., 0] = cv2.createCLAHE(clipLimit=self.clip, tileGridSize=tiles).apply(lab[..., 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0
