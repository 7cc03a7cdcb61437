"""Degradation synthesis following ``BENCHMARK.md`` (the AgenticIR test-set recipe).

numpy + OpenCV only, no torch. Every function takes and returns RGB ``uint8`` ``H x W x 3``
images (``low_resolution`` returns a 4x smaller one).

Each degradation is split in two steps:

1. *draw*: every random number the degradation needs is drawn from the caller's
   :class:`numpy.random.Generator` into a JSON-serialisable ``params`` dict. Per-pixel random
   fields (noise, the rain drop map, the haze depth modulation) are not stored pixel by pixel;
   instead one integer ``field_seed`` is drawn and the field is generated from it.
2. *apply*: a pure function of ``(image, params)``.

So ``degrade(img, name, rng)`` is deterministic given the generator state, and
:func:`apply_params` replays any recorded ``params`` dict bit-exactly.

Two parameter regimes:

* ``level=None``: the **test-set** ranges of the table in ``BENCHMARK.md``.
* ``level`` in ``low`` / ``medium`` / ``high`` / ``very_high``: the **severity-level** parameters
  (perception-training ranges). Where ``BENCHMARK.md`` gives a range (noise sigma / Poisson
  scale) the value is uniform in it; where it gives a centre ("about 30") the value is uniform
  within +-10 % of the centre (:data:`LEVEL_JITTER`); motion / defocus kernels are the exact
  pairs listed. ``very_low`` means absent: the image is returned unchanged (same size, also for
  ``low_resolution``).

Conventions worth knowing (they follow the paper's released code):

* noise works on ``[0, 1]`` like BasicSR: Gaussian ``x + N(0, (sigma/255)^2)`` per channel;
  Poisson ``x + (poisson(x * v) / v - x) * scale`` with ``x = img / 255`` and
  ``v = 2^ceil(log2(#unique values))`` counted over the whole image; then clip and round.
* JPEG is encoded from BGR (OpenCV's channel order), i.e. a normal RGB JPEG.
* dark ``linear`` on a perfectly flat V channel (no range to rescale) caps V at ``max``.
* motion blur: ``out[y, x] = sum_i k_i * img[clip(y - dy_i), clip(x - dx_i)]`` with
  ``dy_i = -ceil(i sin(angle) - 0.5)``, ``dx_i = -ceil(i cos(angle) - 0.5)``.
* rain: the streak layer is truncated to ``uint8`` after min-max normalisation (as the original).

Haze depth proxy: the paper used predicted depth maps that we do not have. We use
``d0(y) = 0.2 + 0.8 * (1 - y / (H - 1))`` (depth grows linearly towards the top of the frame,
scenes are usually ground at the bottom, sky / far objects at the top) plus a smooth random
modulation: a 4x4 grid of ``U(-1, 1)`` values upsampled bicubically to ``H x W`` and scaled by
:data:`HAZE_DEPTH_MODULATION`; the result is clipped to ``>= 0.05`` and normalised by its max
(as the recipe normalises predicted depth by its max).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from agentir.toolbox.vocab import DEGRADATIONS, check_degradation, level_index

__all__ = [
    "COMBINATIONS",
    "HAZE_DEPTH_MODULATION",
    "LEVEL_JITTER",
    "apply_params",
    "bicubic_resize",
    "crop_to_multiple",
    "degrade",
    "degrade_chain",
    "haze_depth_proxy",
]

#: The benchmark groups, in ``BENCHMARK.md`` order; each combination is applied in the order written.
COMBINATIONS: dict[str, list[tuple[str, ...]]] = {
    "A": [
        ("rain", "haze"),
        ("motion_blur", "low_resolution"),
        ("dark", "noise"),
        ("defocus_blur", "jpeg"),
        ("noise", "jpeg"),
        ("rain", "low_resolution"),
        ("motion_blur", "dark"),
        ("defocus_blur", "haze"),
    ],
    "B": [
        ("motion_blur", "jpeg"),
        ("haze", "noise"),
        ("defocus_blur", "low_resolution"),
        ("rain", "dark"),
    ],
    "C": [
        ("haze", "motion_blur", "low_resolution"),
        ("rain", "noise", "low_resolution"),
        ("dark", "defocus_blur", "jpeg"),
        ("motion_blur", "defocus_blur", "noise"),
    ],
}

#: Relative half-width of the uniform jitter around a severity-level centre.
LEVEL_JITTER = 0.10
#: Amplitude of the smooth random modulation of the haze depth proxy (relative to a 0..1 ramp).
HAZE_DEPTH_MODULATION = 0.15

_SR_SCALE = 4
_MOTION_KERNELS: tuple[tuple[int, float], ...] = ((10, 3.0), (15, 5.0), (15, 8.0))
_DEFOCUS_KERNELS: tuple[tuple[int, float], ...] = ((3, 0.1), (4, 0.5), (6, 0.5))
_DARK_VARIANTS = ("shift", "gamma", "linear")

# Severity-level tables, index 0 = "low" ... 3 = "very_high" (BENCHMARK.md "Five severity levels").
_LV_GAUSS_SIGMA = ((2.0, 6.0), (10.0, 20.0), (25.0, 35.0), (40.0, 50.0))
_LV_POISSON_SCALE = ((0.4, 0.6), (0.8, 1.2), (1.7, 2.3), (2.7, 3.3))
_LV_JPEG_QUALITY = (50, 30, 20, 10)
_LV_DARK_SHIFT = (15, 30, 50, 70)
_LV_DARK_GAMMA = (0.8, 0.7, 0.6, 0.5)
_LV_DARK_LINEAR_MAX = (230, 190, 150, 120)
_LV_HAZE = ((0.6, 0.4), (0.7, 0.6), (0.8, 1.2), (1.0, 1.8))
_LV_MOTION = ((5, 2.0), (10, 3.0), (15, 5.0), (15, 8.0))
_LV_DEFOCUS = ((2, 0.1), (3, 0.1), (4, 0.5), (6, 0.5))
_LV_RAIN_VALUE = (5, 60, 75, 85)

Params = dict[str, Any]


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray):
        raise ValueError(f"expected a numpy array image, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {img.dtype}; convert with (np.clip(x, 0, 1) * 255).round().astype(np.uint8) first")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"expected a non-empty image, got shape {img.shape}")


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def _check_level(level: str | None) -> int | None:
    """Return the index into the level tables (0 = low ... 3 = very_high), -1 for very_low, None for test-set."""
    if level is None:
        return None
    return level_index(level) - 1  # raises ValueError for unknown levels


def _jitter(rng: np.random.Generator, centre: float) -> float:
    return float(rng.uniform(centre * (1.0 - LEVEL_JITTER), centre * (1.0 + LEVEL_JITTER)))


def _field_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 255.0).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------
# MATLAB-style bicubic resize
# --------------------------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (Keys, a = -0.5)."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    return (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1) + (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))


def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The ``out_len x in_len`` matrix of MATLAB ``imresize`` (bicubic) along one axis.

    Mirrors MATLAB's ``contributions``: antialiasing widens the kernel by ``1/scale`` when
    downscaling, weights are normalised per output sample, and out-of-range taps are folded back
    with symmetric (edge-duplicating) padding.
    """
    kernel_width = 4.0
    aa = scale < 1 and antialias
    if aa:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(p, dtype=np.float64)[None, :]  # 1-based taps
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if aa else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    cols = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    rows = np.repeat(np.arange(out_len), p)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (rows, cols.ravel()), w.ravel())
    return mat


def bicubic_resize(img: np.ndarray, scale: float | tuple[int, int], *, antialias: bool = True) -> np.ndarray:
    """Resize like MATLAB's ``imresize(img, scale, 'bicubic')`` (antialiased when downscaling).

    Args:
        img: ``H x W`` or ``H x W x C`` array. ``uint8`` is treated as ``0..255`` and the result is
            rounded and clipped back to ``uint8``; float input (any range, typically ``[0, 1]``)
            is returned as float of the same dtype, **not** clipped (bicubic may overshoot).
        scale: a positive factor (output size ``ceil(H * scale) x ceil(W * scale)``, as MATLAB)
            or an explicit output size ``(out_h, out_w)``.
        antialias: widen the kernel when downscaling (MATLAB's default).

    Raises:
        ValueError: bad image shape/dtype, non-positive scale or output size.
    """
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C numpy array, got {getattr(img, 'shape', type(img).__name__)}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"expected a uint8 or float image, got dtype {img.dtype}")
    h, w = img.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"cannot resize an empty image of shape {img.shape}")
    if isinstance(scale, tuple):
        if len(scale) != 2 or any(int(s) != s or s < 1 for s in scale):
            raise ValueError(f"output size must be two positive ints (out_h, out_w), got {scale!r}")
        out_h, out_w = int(scale[0]), int(scale[1])
        sh, sw = out_h / h, out_w / w
    else:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        sh = sw = float(scale)
        out_h, out_w = int(math.ceil(h * sh - 1e-9)), int(math.ceil(w * sw - 1e-9))
        if out_h < 1 or out_w < 1:
            raise ValueError(f"scale {scale} makes a {h}x{w} image empty")
    x = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    mh = _resize_matrix(h, out_h, sh, antialias)
    mw = _resize_matrix(w, out_w, sw, antialias)
    rest = x.shape[2:]
    y = (mh @ x.reshape(h, -1)).reshape((out_h, w) + rest)
    y = np.tensordot(mw, y, axes=([1], [1]))  # (out_w, out_h, ...)
    y = np.moveaxis(y, 0, 1)
    if img.dtype == np.uint8:
        return _to_uint8(y * 255.0)
    return np.ascontiguousarray(y.astype(img.dtype))


def crop_to_multiple(img: np.ndarray, m: int = 4) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``m`` (a view, not a copy).

    Raises:
        ValueError: ``m < 1`` or the image is smaller than ``m`` in either dimension.
    """
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive int, got {m!r}")
    if not isinstance(img, np.ndarray) or img.ndim < 2:
        raise ValueError(f"expected an image array, got {getattr(img, 'shape', type(img).__name__)}")
    h, w = img.shape[:2]
    hh, ww = h - h % m, w - w % m
    if hh == 0 or ww == 0:
        raise ValueError(f"image of size {h}x{w} is smaller than {m} pixels; use images of at least {m}x{m}")
    return img[:hh, :ww]


# --------------------------------------------------------------------------------------------
# draw: parameters for each degradation (test set when li is None, else level index 0..3)
# --------------------------------------------------------------------------------------------


def _draw_low_resolution(rng: np.random.Generator, li: int | None) -> Params:
    return {"scale": _SR_SCALE}


def _draw_noise(rng: np.random.Generator, li: int | None) -> Params:
    kind = "gaussian" if rng.random() < 0.5 else "poisson"
    if kind == "gaussian":
        lo, hi = (20.0, 50.0) if li is None else _LV_GAUSS_SIGMA[li]
        p: Params = {"kind": kind, "sigma": float(rng.uniform(lo, hi))}
    else:
        lo, hi = (1.0, 3.0) if li is None else _LV_POISSON_SCALE[li]
        p = {"kind": kind, "scale": float(rng.uniform(lo, hi))}
    p["field_seed"] = _field_seed(rng)
    return p


def _draw_jpeg(rng: np.random.Generator, li: int | None) -> Params:
    if li is None:
        q = int(rng.integers(10, 30))
    else:
        q = int(np.clip(round(_jitter(rng, _LV_JPEG_QUALITY[li])), 1, 100))
    return {"quality": q}


def _draw_dark(rng: np.random.Generator, li: int | None) -> Params:
    variant = _DARK_VARIANTS[int(rng.integers(0, 3))]
    if variant == "shift":
        v = int(rng.integers(30, 50)) if li is None else int(round(_jitter(rng, _LV_DARK_SHIFT[li])))
        return {"variant": variant, "shift": v}
    if variant == "gamma":
        g = float(rng.uniform(0.5, 0.7)) if li is None else _jitter(rng, _LV_DARK_GAMMA[li])
        return {"variant": variant, "gamma": g}
    m = int(rng.integers(100, 150)) if li is None else int(min(255, round(_jitter(rng, _LV_DARK_LINEAR_MAX[li]))))
    return {"variant": variant, "max": m}


def _draw_haze(rng: np.random.Generator, li: int | None) -> Params:
    if li is None:
        a, beta = float(rng.uniform(0.7, 1.0)), float(rng.uniform(0.6, 1.8))
    else:
        ca, cb = _LV_HAZE[li]
        a, beta = min(1.0, _jitter(rng, ca)), _jitter(rng, cb)
    return {"A": a, "beta": beta, "field_seed": _field_seed(rng)}


def _draw_motion_blur(rng: np.random.Generator, li: int | None) -> Params:
    if li is None:
        radius, sigma = _MOTION_KERNELS[int(rng.integers(0, 3))]
    else:
        radius, sigma = _LV_MOTION[li]
    return {"radius": int(radius), "sigma": float(sigma), "angle": float(rng.uniform(-90.0, 90.0))}


def _draw_defocus_blur(rng: np.random.Generator, li: int | None) -> Params:
    radius, alias = _DEFOCUS_KERNELS[int(rng.integers(0, 3))] if li is None else _LV_DEFOCUS[li]
    return {"radius": int(radius), "alias": float(alias)}


def _draw_rain(rng: np.random.Generator, li: int | None) -> Params:
    if li is None:
        value = int(rng.integers(50, 100))
    else:
        value = max(1, int(round(_jitter(rng, _LV_RAIN_VALUE[li]))))
    length = int(rng.integers(20, 40))
    angle = int(rng.integers(-30, 30))
    return {"value": value, "length": length, "angle": angle, "field_seed": _field_seed(rng)}


# --------------------------------------------------------------------------------------------
# apply: pure functions of (uint8 RGB image, params)
# --------------------------------------------------------------------------------------------


def _apply_low_resolution(img: np.ndarray, p: Params) -> np.ndarray:
    return bicubic_resize(img, 1.0 / int(p["scale"]))


def _apply_noise(img: np.ndarray, p: Params) -> np.ndarray:
    # Same maths as BasicSR's random_add_{gaussian,poisson}_noise_pt on [0, 1] images (colour noise).
    field = np.random.default_rng(int(p["field_seed"]))
    x = img.astype(np.float64) / 255.0
    if p["kind"] == "gaussian":
        out = x + field.standard_normal(x.shape) * (float(p["sigma"]) / 255.0)
    elif p["kind"] == "poisson":
        vals = len(np.unique(img))
        v = float(2 ** math.ceil(math.log2(vals))) if vals > 1 else 1.0
        noise = field.poisson(x * v) / v - x
        out = x + noise * float(p["scale"])
    else:
        raise ValueError(f"unknown noise kind {p['kind']!r}; expected 'gaussian' or 'poisson'")
    return _to_uint8(np.clip(out, 0.0, 1.0) * 255.0)


def _apply_jpeg(img: np.ndarray, p: Params) -> np.ndarray:
    # OpenCV's encoder expects BGR; encoding RGB as if it were BGR would swap the chroma planes.
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(p["quality"])])
    if not ok:
        raise RuntimeError(f"OpenCV failed to JPEG-encode an image of shape {img.shape}")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError(f"OpenCV failed to decode its own JPEG of an image of shape {img.shape}")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _apply_dark(img: np.ndarray, p: Params) -> np.ndarray:
    h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    variant = p["variant"]
    if variant == "shift":
        v = np.clip(v.astype(np.int16) - int(p["shift"]), 0, 255).astype(np.uint8)
    elif variant == "gamma":
        v = _to_uint8(np.power(v / 255.0, 1.0 / float(p["gamma"])) * 255.0)
    elif variant == "linear":
        vmin, vmax = int(np.min(v)), int(np.max(v))
        if vmax > vmin:
            v = _to_uint8((v.astype(np.float64) - vmin) / (vmax - vmin) * int(p["max"]))
        else:  # a flat V channel has no range to rescale: cap it at the new maximum instead
            v = np.minimum(v, int(p["max"])).astype(np.uint8)
    else:
        raise ValueError(f"unknown dark variant {variant!r}; expected one of {', '.join(_DARK_VARIANTS)}")
    return cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB)


def haze_depth_proxy(height: int, width: int, field_seed: int) -> np.ndarray:
    """The documented stand-in for a predicted depth map: ``height x width`` float64 in ``(0, 1]``.

    Depth grows linearly towards the top of the frame (``0.2`` at the bottom row, ``1.0`` at the
    top) plus a smooth random modulation (4x4 ``U(-1, 1)`` grid upsampled bicubically, times
    :data:`HAZE_DEPTH_MODULATION`), clipped to ``>= 0.05`` and normalised by its max.
    """
    field = np.random.default_rng(int(field_seed))
    ramp = np.linspace(1.0, 0.0, height) if height > 1 else np.ones(1)
    base = 0.2 + 0.8 * ramp[:, None] * np.ones((1, width))
    grid = field.uniform(-1.0, 1.0, (4, 4)).astype(np.float32)
    mod = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    d = np.maximum(base + HAZE_DEPTH_MODULATION * mod, 0.05)
    return d / d.max()


def _apply_haze(img: np.ndarray, p: Params) -> np.ndarray:
    d = haze_depth_proxy(img.shape[0], img.shape[1], int(p["field_seed"]))
    t = np.exp(-float(p["beta"]) * d)[..., None]
    return _to_uint8(img * t + 255.0 * float(p["A"]) * (1.0 - t))


def _apply_motion_blur(img: np.ndarray, p: Params) -> np.ndarray:
    # One-sided line kernel (imagecorruptions' motion blur): copies shifted by i = 0..2r pixels
    # along the angle, Gaussian weights exp(-i^2 / (2 sigma^2)) normalised, edges replicated.
    radius, sigma, angle = int(p["radius"]), float(p["sigma"]), float(p["angle"])
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2.0 * sigma**2))
    k /= k.sum()
    sin, cos = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    h, w = img.shape[:2]
    pad = width
    padded = np.pad(img.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros(img.shape, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(i * sin - 0.5)
        dx = -math.ceil(i * cos - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break  # the motion left the frame (tiny images), as the reference implementation does
        # shifted[y, x] = img[clip(y - dy), clip(x - dx)]
        out += k[i] * padded[pad - dy : pad - dy + h, pad - dx : pad - dx + w]
    return _to_uint8(out)


def _defocus_kernel(radius: int, alias: float) -> np.ndarray:
    lim = max(8, radius)
    grid = np.arange(-lim, lim + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    ksize = (3, 3) if radius <= 8 else (5, 5)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias)


def _apply_defocus_blur(img: np.ndarray, p: Params) -> np.ndarray:
    kernel = _defocus_kernel(int(p["radius"]), float(p["alias"]))
    out = cv2.filter2D(img.astype(np.float64) / 255.0, -1, kernel)
    return _to_uint8(np.clip(out, 0.0, 1.0) * 255.0)


def _rain_layer(h: int, w: int, p: Params) -> np.ndarray:
    field = np.random.default_rng(int(p["field_seed"]))
    noise = field.uniform(0.0, 256.0, (h, w))
    noise[noise < 256.0 - int(p["value"]) * 0.01] = 0.0
    noise = np.asarray(cv2.filter2D(noise, -1, np.array([[0, 0.1, 0], [0.1, 8, 0.1], [0, 0.1, 0]], dtype=np.float64)), dtype=np.float64)
    length, angle = int(p["length"]), int(p["angle"])
    trans = cv2.getRotationMatrix2D((length / 2, length / 2), angle - 45, 1 - length / 100.0)
    streak = cv2.warpAffine(np.diag(np.ones(length)), trans, (length, length))
    streak = cv2.GaussianBlur(streak, (3, 3), 0)
    blurred = cv2.filter2D(noise, -1, streak)
    lo, hi = float(np.min(blurred)), float(np.max(blurred))
    if hi <= lo:
        return np.zeros((h, w), dtype=np.uint8)
    # min-max to 0..255 then truncate, as cv2.normalize + np.array(..., dtype=uint8) does
    return ((blurred - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _apply_rain(img: np.ndarray, p: Params) -> np.ndarray:
    rain = _rain_layer(img.shape[0], img.shape[1], p)
    return _to_uint8(img.astype(np.float32) + rain[..., None])


_DRAW: dict[str, Callable[[np.random.Generator, int | None], Params]] = {
    "low_resolution": _draw_low_resolution,
    "noise": _draw_noise,
    "jpeg": _draw_jpeg,
    "dark": _draw_dark,
    "haze": _draw_haze,
    "motion_blur": _draw_motion_blur,
    "defocus_blur": _draw_defocus_blur,
    "rain": _draw_rain,
}

_APPLY: dict[str, Callable[[np.ndarray, Params], np.ndarray]] = {
    "low_resolution": _apply_low_resolution,
    "noise": _apply_noise,
    "jpeg": _apply_jpeg,
    "dark": _apply_dark,
    "haze": _apply_haze,
    "motion_blur": _apply_motion_blur,
    "defocus_blur": _apply_defocus_blur,
    "rain": _apply_rain,
}

if set(_DRAW) != set(DEGRADATIONS) or set(_APPLY) != set(DEGRADATIONS):  # pragma: no cover - import-time guard
    raise RuntimeError("agentir.toolbox.degrade does not cover exactly agentir.toolbox.vocab.DEGRADATIONS")


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def degrade(img: np.ndarray, name: str, rng: np.random.Generator, *, level: str | None = None) -> tuple[np.ndarray, dict]:
    """Apply one degradation to an RGB ``uint8`` image.

    Args:
        img: ``H x W x 3`` ``uint8`` RGB. Not modified.
        name: one of :data:`agentir.toolbox.vocab.DEGRADATIONS`.
        rng: the source of every random draw (the result is a function of its state).
        level: ``None`` for the test-set ranges, or a severity level (see the module docstring);
            ``"very_low"`` returns an unchanged copy.

    Returns:
        ``(image, params)``: the degraded ``uint8`` RGB image (``ceil(H/4) x ceil(W/4)`` for
        ``low_resolution``) and a JSON-serialisable dict with ``name``, ``level``, ``applied``
        and every value drawn; :func:`apply_params` replays it.

    Raises:
        ValueError: not a ``uint8`` ``H x W x 3`` array, unknown degradation or level.
        TypeError: ``rng`` is not a :class:`numpy.random.Generator`.
    """
    _check_image(img)
    check_degradation(name)
    _check_rng(rng)
    li = _check_level(level)
    if li == -1:
        return img.copy(), {"name": name, "level": level, "applied": False}
    params: Params = {"name": name, "level": level, "applied": True}
    params.update(_DRAW[name](rng, li))
    return _APPLY[name](img, params), params


def apply_params(img: np.ndarray, params: dict) -> np.ndarray:
    """Re-apply a degradation recorded by :func:`degrade` (bit-exact replay).

    Raises:
        ValueError: bad image, or ``params`` lacks ``name`` / names an unknown degradation.
    """
    _check_image(img)
    if not isinstance(params, dict) or "name" not in params:
        raise ValueError("params must be a dict returned by degrade() (it needs at least a 'name' key)")
    name = check_degradation(params["name"])
    if not params.get("applied", True):
        return img.copy()
    try:
        return _APPLY[name](img, params)
    except KeyError as exc:
        raise ValueError(f"params for {name!r} lack the key {exc.args[0]!r}; pass a dict returned by degrade()") from None


def degrade_chain(
    img: np.ndarray,
    names: Sequence[str],
    rng: np.random.Generator,
    *,
    levels: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Apply several degradations in the given order (a benchmark combination).

    Args:
        img: ``H x W x 3`` ``uint8`` RGB.
        names: degradation names, applied first to last.
        rng: the source of every random draw, consumed in order.
        levels: one level (or ``None`` for test-set ranges) per name; default all ``None``.

    Returns:
        ``(image, [params per degradation])``.

    Raises:
        ValueError: as :func:`degrade`, an empty ``names`` or ``levels`` of the wrong length.
    """
    if isinstance(names, str):
        raise ValueError(f"names must be a sequence of degradation names, not the string {names!r}")
    names = list(names)
    if not names:
        raise ValueError("names is empty; give at least one degradation")
    lv: list[str | None] = [None] * len(names) if levels is None else list(levels)
    if len(lv) != len(names):
        raise ValueError(f"got {len(lv)} levels for {len(names)} degradations; give one level per name")
    _check_image(img)
    for n in names:
        check_degradation(n)
    for level in lv:
        _check_level(level)
    out, all_params = img, []
    for n, level in zip(names, lv):
        out, p = degrade(out, n, rng, level=level)
        all_params.append(p)
    return out, all_params
