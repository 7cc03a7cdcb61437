"""Brightening (subtask ``brightening``): undo a darkening of the HSV value channel.

The benchmark darkens ``V = max(R, G, B)`` by a shift (``V -= 30..50``, clipped at 0), a gamma
(``V = V^(1/g)``, ``g`` in ``[0.5, 0.7)``) or a linear rescale to a maximum of 100..150. All
three keep hue and saturation, so a new ``V`` is applied by scaling RGB with ``V_new / V``.
:class:`HSVBrighten` tells the three apart from the statistics of ``V`` and inverts the one it
finds; the other tools are simpler, model-free alternatives.

Each tool also splits into ``estimate`` / ``apply`` (:mod:`agentir.toolbox.held`): a video stream holds
the exposure it estimated for a scene instead of re-estimating it on every frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import torch

from agentir.kernels import rgb_to_value
from agentir.toolbox.tools._common import NumpyTool

#: High percentile of V that a well-exposed image reaches (CBSD68: median 255, quartile 240).
_TARGET_HI = 0.97
#: Mean V of a well-exposed image (CBSD68 median ~0.47).
_TARGET_MEAN = 0.45
#: The very top of V of an image whose top end was not lowered (shifts and rescales of the
#: benchmark end at or below 240/255 = 0.94).
_INTACT_TOP = 0.95
#: A shift's clipped pile: near-black pixels outnumber those just above by this factor.
_PILE_RATIO = 1.5


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


def _apply_value_u8(rgb: np.ndarray, v_new_table: np.ndarray) -> np.ndarray:
    """:func:`_apply_value` on a uint8 image through a 256-entry table of ``V_new(V)``.

    The fast path for held parameters (:mod:`agentir.toolbox.held`): with uint8 input, V takes only 256
    values, so the new value and the RGB scale factor are looked up instead of computed per
    pixel. Same maths as :func:`_apply_value` on ``rgb / 255``; returns uint8 (rounded).
    """
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    v_new = np.asarray(v_new_table, dtype=np.float32)
    ratio = (v_new / np.maximum(levels, np.float32(1e-4))).astype(np.float32)
    v = cv2.max(cv2.max(rgb[..., 0], rgb[..., 1]), rgb[..., 2])
    scale = ratio[v]
    out = cv2.multiply(rgb.astype(np.float32), cv2.merge([scale, scale, scale]))
    black = v == 0  # pure black carries no colour: the new value as grey
    if black.any():
        out[black] = v_new[0] * np.float32(255.0)
    return np.clip(out + np.float32(0.5), 0, 255).astype(np.uint8)


def _apply_value_torch(batch: torch.Tensor, v_new_table: np.ndarray) -> torch.Tensor:
    """:func:`_apply_value` on a float ``N x 3 x H x W`` batch on any device (the device path).

    ``V`` comes from :func:`agentir.kernels.rgb_to_value` (Triton on CUDA); the new value is looked up in
    a 256-entry table of ``V_new(V)`` at ``round(255 V)``: exact for frames that came from uint8,
    within half a grey level of V otherwise.
    """
    v = rgb_to_value(batch)
    table = torch.as_tensor(np.asarray(v_new_table, dtype=np.float32), device=batch.device)
    v_new = table[(v * 255.0).round().clamp(0, 255).long()]
    out = batch * (v_new / v.clamp_min(1e-4))
    black = v < 0.5 / 255
    return torch.where(black, v_new.expand_as(out), out)


def _median3(v: np.ndarray) -> np.ndarray:
    """V after a 3x3 median, so isolated noisy or rainy pixels do not count in its percentiles."""
    return cv2.medianBlur(np.ascontiguousarray(v, dtype=np.float32), 3)


def _robust_hi(v: np.ndarray, q: float = 99.5) -> float:
    """High percentile of V after a 3x3 median."""
    return float(np.percentile(_median3(v), q))


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

    * The very top of V (99.95th percentile after a 3x3 median) still near white: the top end
      is intact, so a ``("gamma", g)`` (``g`` brings the mean V to 0.45) or ``("none", 0)``.
    * Otherwise the top end was lowered, by a shift or a linear rescale. A shift clips every
      value below it to 0, so near-black pixels (``V`` up to 5 of 255, allowing for later
      noise) outnumber those just above (6..11) by far; a rescale maps only the darkest pixels
      to 0 and keeps the histogram continuous there; an image with no black at all was not
      rescaled (a rescale always reaches 0). ``("shift", k)`` gives the amount to add back,
      ``("linear", hi)`` the robust top to stretch to ~0.97.
    """
    v = _value(img)
    vm = _median3(v)
    top = float(np.percentile(vm, 99.95))
    if top >= _INTACT_TOP:
        g = _gamma_for_mean(v, _TARGET_MEAN)
        return ("gamma", g) if g < 0.95 else ("none", 0.0)
    hi = float(np.percentile(vm, 99.5))
    black = float(np.mean(v <= 5.5 / 255))  # a clipped pile at 0, spread by any later noise
    above = float(np.mean((v > 5.5 / 255) & (v <= 11.5 / 255)))
    if hi > 0.6 and ((black > 0.003 and black > _PILE_RATIO * above) or float(np.percentile(v, 0.01)) > 2.5 / 255):
        return "shift", max(0.0, _TARGET_HI - hi)
    return "linear", hi


class HSVBrighten(NumpyTool):
    """Model-based inversion on V (see :func:`classify_darkening`): undo a shift or a linear
    rescale (the top end of V comes back to ~0.97), then, if the image is still dark on average,
    a gamma towards a mean V of 0.45; undo a gamma directly towards that mean.

    Args:
        name: registry name.
        dark_mean: below this mean V after the first step, the gamma step runs.
    """

    degradation = "dark"
    #: Pointwise once estimated: a large image's exposure is estimated on every k-th pixel (the
    #: same value distribution), then applied tile by tile.
    estimate_sample = "stride"

    def __init__(self, name: str = "hsv_brighten", *, dark_mean: float = 0.33) -> None:
        self.name = name
        self.dark_mean = dark_mean

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``variant`` and ``param`` of :func:`classify_darkening`, and ``gamma2``: the exponent of
        the second (gamma) step, 1.0 when it does not run (see :mod:`agentir.toolbox.held`)."""
        variant, param = classify_darkening(img)
        gamma2 = 1.0
        if variant != "gamma":
            v_new = self._first_step(_value(img), variant, param)
            if float(v_new.mean()) < self.dark_mean:
                gamma2 = _gamma_for_mean(v_new, _TARGET_MEAN)
        return {"variant": variant, "param": float(param), "gamma2": float(gamma2)}

    @staticmethod
    def _first_step(v: np.ndarray, variant: str, param: float) -> np.ndarray:
        if variant == "shift":
            v_new = np.where(v > 0.5 / 255, v + param, 0.5 * param)
        elif variant == "linear":
            v_new = v * min(_TARGET_HI / max(param, 1e-3), 4.0)
        elif variant == "gamma":
            v_new = np.power(v, param)
        else:
            v_new = v
        return np.clip(v_new, 0.0, 1.0)

    def value_map(self, v: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        """The new V for values ``v`` under held parameters (``estimate``'s keys)."""
        variant = str(params["variant"])
        v_new = self._first_step(v, variant, float(params["param"]))
        gamma2 = float(params.get("gamma2", 1.0))
        if variant != "gamma" and gamma2 != 1.0:
            v_new = np.power(v_new, gamma2)
        return v_new

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        """Brighten with held parameters (``estimate``'s keys)."""
        v = _value(img)
        return _apply_value(img, v, self.value_map(v, params))

    def apply_u8(self, rgb: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        """:meth:`apply` on a uint8 image, through a 256-entry table (the stream's fast path)."""
        return _apply_value_u8(rgb, self.value_map(np.arange(256, dtype=np.float32) / np.float32(255.0), params))

    def apply_torch(self, batch: torch.Tensor, params: Mapping[str, float | str]) -> torch.Tensor:
        """:meth:`apply` on a float batch where it is (CPU or CUDA), see :func:`_apply_value_torch`."""
        return _apply_value_torch(batch, self.value_map(np.arange(256, dtype=np.float32) / np.float32(255.0), params))

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))


class GammaBrighten(NumpyTool):
    """Gamma on V chosen so that the mean V reaches a well-exposed level."""

    degradation = "dark"
    #: Pointwise once estimated: a large image's exposure is estimated on every k-th pixel (the
    #: same value distribution), then applied tile by tile.
    estimate_sample = "stride"

    def __init__(self, name: str = "gamma_brighten", *, target: float = _TARGET_MEAN) -> None:
        self.name = name
        self.target = target

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``gamma``: the exponent that brings the mean V to the target."""
        return {"gamma": float(_gamma_for_mean(_value(img), self.target))}

    def value_map(self, v: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        return np.power(v, float(params["gamma"]))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        v = _value(img)
        return _apply_value(img, v, self.value_map(v, params))

    def apply_u8(self, rgb: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        """:meth:`apply` on a uint8 image, through a 256-entry table (the stream's fast path)."""
        return _apply_value_u8(rgb, self.value_map(np.arange(256, dtype=np.float32) / np.float32(255.0), params))

    def apply_torch(self, batch: torch.Tensor, params: Mapping[str, float | str]) -> torch.Tensor:
        """:meth:`apply` on a float batch where it is (CPU or CUDA), see :func:`_apply_value_torch`."""
        return _apply_value_torch(batch, self.value_map(np.arange(256, dtype=np.float32) / np.float32(255.0), params))

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))


class StretchBrighten(NumpyTool):
    """Linear stretch of V so that its robust maximum reaches ~0.97 (undoes a linear rescale)."""

    degradation = "dark"
    #: Pointwise once estimated: a large image's exposure is estimated on every k-th pixel (the
    #: same value distribution), then applied tile by tile.
    estimate_sample = "stride"

    def __init__(self, name: str = "stretch_brighten") -> None:
        self.name = name

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``hi``: the robust maximum of V (99.5th percentile after a 3x3 median)."""
        return {"hi": _robust_hi(_value(img))}

    def value_map(self, v: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        gain = min(_TARGET_HI / max(float(params["hi"]), 1e-3), 4.0)
        return np.clip(v * max(gain, 1.0), 0.0, 1.0)

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        v = _value(img)
        return _apply_value(img, v, self.value_map(v, params))

    def apply_u8(self, rgb: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        """:meth:`apply` on a uint8 image, through a 256-entry table (the stream's fast path)."""
        return _apply_value_u8(rgb, self.value_map(np.arange(256, dtype=np.float32) / np.float32(255.0), params))

    def apply_torch(self, batch: torch.Tensor, params: Mapping[str, float | str]) -> torch.Tensor:
        """:meth:`apply` on a float batch where it is (CPU or CUDA), see :func:`_apply_value_torch`."""
        return _apply_value_torch(batch, self.value_map(np.arange(256, dtype=np.float32) / np.float32(255.0), params))

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))


class CLAHEBrighten(NumpyTool):
    """Gamma to a mid mean, then CLAHE on the Lab lightness (local contrast; a different look)."""

    degradation = "dark"

    def __init__(self, name: str = "clahe_brighten", *, clip: float = 1.5) -> None:
        self.name = name
        self.clip = clip

    def estimate(self, img: np.ndarray) -> dict[str, float | str]:
        """``gamma``: the exponent of the first (global) step."""
        return {"gamma": float(_gamma_for_mean(_value(img), _TARGET_MEAN))}

    def process(self, img: np.ndarray) -> np.ndarray:
        return self.apply(img, self.estimate(img))

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
        v = _value(img)
        base = _apply_value(img, v, np.power(v, float(params["gamma"])))
        u8 = np.clip(base * 255.0 + 0.5, 0, 255).astype(np.uint8)
        lab = cv2.cvtColor(u8, cv2.COLOR_RGB2LAB)
        tiles = (max(1, min(8, img.shape[0] // 32)), max(1, min(8, img.shape[1] // 32)))
        lab[..., 0] = cv2.createCLAHE(clipLimit=self.clip, tileGridSize=tiles).apply(lab[..., 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0
