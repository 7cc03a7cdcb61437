"""Analytic image features behind :class:`~agentir.agent_policies.perception.analytic.AnalyticPerception`.

numpy + OpenCV only. Every feature is a single float computed from an RGB ``uint8`` image; they
are grouped so that :meth:`AnalyticPerception.rate` computes only the groups one degradation's
model needs. Texture groups (noise, JPEG, blur, rain) look at a centre crop of at most
:data:`CROP` pixels per side, taken at offsets that are multiples of 8 so the JPEG block grid of
the full image is kept; global groups (size, luminance, haze) look at the whole frame, shrunk to
at most :data:`GLOBAL_SIDE` pixels. Tiny images are padded by edge replication first, so any
``H x W x 3`` image with ``H, W >= 1`` yields finite features.

Groups (feature names are ``<group>.<what>``):

* ``size``: ``log2`` of the long and short side. The benchmark keeps x4-downscaled images small
  (CBSD68 481 x 321 -> 121 x 81), so size is the strongest cue for ``low_resolution``; the fine-
  to-coarse gradient ratios of the ``blur`` group add content (a bicubic x4 downscale is *sharp*
  per pixel, a blurred image is not).
* ``noise``: robust noise sigma on 0..255: the MAD of the finest Haar HH band (luma and two
  chroma differences, because the benchmark's noise is independent per channel while image
  chroma is smooth), and Immerkaer's Laplacian-difference estimator over the flattest 8 x 8
  blocks (10th / 50th percentile, and the 10th percentile on the chroma differences), which is
  what survives in textured images.
* ``jpeg``: blockiness, the mean clipped step across 8-pixel block boundaries over the step
  elsewhere (both axes), and the 8 x 8 DCT high-frequency energy on the aligned grid versus a grid
  shifted by 4 (JPEG quantises the aligned blocks only).
* ``lum``: V (= max of RGB) and luma statistics: mean, percentiles, fraction of black pixels.
* ``haze``: the dark channel (min over RGB, 7 x 7 min filter) statistics, saturation, luma
  contrast, the lifted black floor, and the dark channel's top-minus-bottom difference (haze
  grows with depth, usually towards the top of the frame).
* ``blur``: log ratios of the 99th-percentile gradient magnitude between scales 1, 2 and 4
  (isotropic sharpness), the global structure-tensor coherence at scales 2 and 4, the min/max
  ratio of directional derivative percentiles over 8 directions at scales 2 and 4, and per
  direction the fine-over-coarse (scale 1 / scale 4) derivative ratio: its min, max and spread
  (motion blur kills the fine scale along one direction only, texture anisotropy does not
  change with scale).
* ``rain``: a white top-hat (thin bright structures) of the lightly smoothed luma: its energy
  and tail, its normalised autocorrelation 6 pixels away along the best of 12 directions
  (rain streaks are long and share one orientation; noise and most textures do not), the same
  correlation of the black top-hat along that direction subtracted (motion blur smears bright and
  dark lines alike, rain adds bright ones only), how vertical the best direction is, and how
  colourless the strong bright lines are (rain is added equally to R, G and B).
* ``motion``: line-blur evidence that survives an x4 downscale (where a 10-15 px one-sided motion
  blur shrinks to 2-4 px and the gradient-percentile ratios of ``blur`` no longer see it). The
  normalised autocorrelation of the Laplacian one step away along 8 directions (0, 26.6, 45,
  63.4, ... degrees), at scale 1 on a centre crop of at most :data:`MOTION_CROP` pixels and at
  scale 2 on the texture crop: its spread (max - min), maximum, median, max - median and max
  minus the orthogonal direction (a line blur makes neighbouring second derivatives along it
  alike and leaves the orthogonal ones independent); the same at two steps (scale 1: spread, max,
  max minus orthogonal); and per direction (0 / 45 / 90 / 135 degrees) the log ratio of the mean
  absolute second difference at scale 1 over scale 2 of the same area: its spread, its minimum
  and its value orthogonal to the blur direction minus along it (texture anisotropy is about
  scale-invariant, a fine line blur is not). About 2 ms per 512 x 512 image.
* ``grain``: coarse noise, as real cameras leave it (demosaicing, in-camera noise reduction and
  JPEG make it correlated over 2-4 pixels, which the finest-scale ``noise`` estimators barely
  see): Immerkaer's estimator over the flattest 8 x 8 blocks (10th / 50th percentile) of the luma
  area-downscaled by 2 and by 4, and the 10th percentile on the chroma differences at scale 2.
  White noise of sigma ``s`` reads about ``s / 2`` and ``s / 4`` there; noise correlated over a
  few pixels much more.
* ``vhist``: what a darkening did to the V (= max of RGB) histogram of the whole uint8 image,
  which a dim but untouched photo does not show: the fraction of empty V levels in the top
  quarter of the occupied range minus that in the middle half (a gamma > 1 on V stretches the
  bright end and leaves every other level empty there; a uniform stretch, as video decoding's
  16-235 expansion, leaves gaps everywhere alike), the highest level, the spike at the highest
  and at the lowest level over their neighbours (a shift clips both ends onto one level, a
  min-max rescale puts its minimum at 0) and the number of used levels over the occupied range.
* ``hazemap``: where the haze is. On a 6 x 6 grid of the small frame, per cell the dark-channel
  median and the luma contrast (std over mean): their rank correlation across cells (haze
  lowers contrast exactly where it lifts the dark channel; a flat grey surface has neither
  trend), the dark-channel floor (the lowest cell: haze lifts every cell, a grey scene leaves
  shadows in some), the spread of the cells' dark channels, the brightness of the most hazy cells
  (airlight is bright: A >= 0.6), and how neutral the brightest dark-channel cells are.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

#: Texture features look at a centre crop of at most this many pixels per side.
CROP = 512
#: Global features (luminance, haze) look at the frame shrunk to at most this many pixels per side.
GLOBAL_SIDE = 256
#: Images smaller than this per side are edge-padded before any feature is computed.
MIN_SIDE = 32

GROUPS: tuple[str, ...] = ("size", "noise", "jpeg", "lum", "haze", "blur", "rain", "motion", "grain", "vhist", "hazemap")

_EPS = 1e-6


def _dct_matrix(n: int = 8) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.astype(np.float32)


_DCT8 = _dct_matrix()
# DCT coefficients with u + v >= 6: high frequencies that JPEG at low quality zeroes first.
_HF_MASK = (np.add.outer(np.arange(8), np.arange(8)) >= 6).astype(np.float32)


class _Prepared:
    """Per-image intermediate arrays, computed lazily and shared between feature groups."""

    def __init__(self, img: np.ndarray) -> None:
        self.height, self.width = int(img.shape[0]), int(img.shape[1])
        h, w = self.height, self.width
        if h < MIN_SIDE or w < MIN_SIDE:
            img = cv2.copyMakeBorder(img, 0, max(0, MIN_SIDE - h), 0, max(0, MIN_SIDE - w), cv2.BORDER_REPLICATE)
            h, w = img.shape[:2]
        self.img = img
        # Centre crop for texture features; offsets are multiples of 8 to keep the JPEG grid.
        ch, cw = min(h, CROP), min(w, CROP)
        y0 = ((h - ch) // 2) // 8 * 8
        x0 = ((w - cw) // 2) // 8 * 8
        self.crop = img[y0 : y0 + ch, x0 : x0 + cw]
        self._cache: dict[str, Any] = {}  # arrays; "planes" and "grad{s}" hold tuples of them

    @property
    def rgb(self) -> np.ndarray:
        """The crop as float32 RGB on 0..255."""
        if "rgb" not in self._cache:
            self._cache["rgb"] = self.crop.astype(np.float32)
        return self._cache["rgb"]

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The crop's R, G, B as contiguous float32 planes (same values as :attr:`rgb`; faster to combine)."""
        if "planes" not in self._cache:
            self._cache["planes"] = tuple(np.ascontiguousarray(self.rgb[..., i]) for i in range(3))
        return self._cache["planes"]

    @property
    def gray(self) -> np.ndarray:
        """BT.601 luma of the crop, float32 on 0..255."""
        if "gray" not in self._cache:
            r, g, b = self.planes
            self._cache["gray"] = 0.299 * r + 0.587 * g + 0.114 * b
        return self._cache["gray"]

    def gray_scale(self, s: int) -> np.ndarray:
        """Luma of the crop area-downscaled by ``s`` (1, 2 or 4)."""
        key = f"gray{s}"
        if key not in self._cache:
            g = self.gray
            if s == 1:
                out = g
            else:
                h, w = g.shape
                out = cv2.resize(g, (max(1, w // s), max(1, h // s)), interpolation=cv2.INTER_AREA)
            self._cache[key] = out
        return self._cache[key]

    def grad(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Sobel gradients (x, y) of :meth:`gray_scale` ``s``, cached."""
        key = f"grad{s}"
        if key not in self._cache:
            self._cache[key] = _grad(self.gray_scale(s))
        return self._cache[key]

    @property
    def small(self) -> np.ndarray:
        """The whole frame as float32 RGB in 0..1, shrunk to at most GLOBAL_SIDE per side."""
        if "small" not in self._cache:
            h, w = self.img.shape[:2]
            f = min(1.0, GLOBAL_SIDE / max(h, w))
            im = self.img
            if f < 1.0:
                im = cv2.resize(im, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            self._cache["small"] = im.astype(np.float32) / 255.0
        return self._cache["small"]


def _pct(a: np.ndarray, q: float) -> float:
    """``np.percentile(a, q)`` (linear interpolation) of a finite array, via partitions: several times faster.

    For a high ``q`` on a large array only the top of the distribution is partitioned: a threshold
    ``t`` from a strided sample (its ``q - 4`` percentile) keeps the elements ``>= t``; when at least
    the wanted ranks are among them (almost always), the rank shifted by the number of elements
    below ``t`` picks the same value as a full partition would, so the result is bit-identical;
    otherwise the whole array is partitioned.
    """
    flat = a.ravel()
    n = flat.size
    idx = q / 100.0 * (n - 1)
    lo = int(math.floor(idx))
    hi = min(lo + 1, n - 1)
    if n >= 8192 and q >= 50:
        sample = flat[::16]
        k = int(sample.size * (q - 4.0) / 100.0)
        t = np.partition(sample, k)[k]
        keep = flat >= t
        below = n - int(np.count_nonzero(keep))
        if lo >= below:
            part = np.partition(flat[keep], (lo - below, hi - below))
            a_lo, a_hi = float(part[lo - below]), float(part[hi - below])
            return a_lo + (a_hi - a_lo) * (idx - lo)
    part = np.partition(flat, (lo, hi))
    a_lo, a_hi = float(part[lo]), float(part[hi])
    return a_lo + (a_hi - a_lo) * (idx - lo)


# --------------------------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------------------------


def _size(p: _Prepared) -> dict[str, float]:
    return {
        "size.log_long": math.log2(max(p.height, p.width)),
        "size.log_short": math.log2(min(p.height, p.width)),
    }


def _haar_hh(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) * 0.5


def _mad_sigma(x: np.ndarray) -> float:
    return float(np.median(np.abs(_haar_hh(x)))) / 0.6745


_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def _noise(p: _Prepared) -> dict[str, float]:
    cr, cg, cb = p.planes
    d01, d21 = cr - cg, cb - cg  # chroma differences, each computed once
    g = p.gray
    s_luma = _mad_sigma(g)
    s_c1 = _mad_sigma(d01) / math.sqrt(2.0)
    s_c2 = _mad_sigma(d21) / math.sqrt(2.0)
    # Immerkaer (1996): sigma = sqrt(pi/2) / 6 * mean |I * N| over homogeneous regions.
    p10, p50 = _imm_block_sigma(g, (10, 50))
    k = math.sqrt(math.pi / 2.0) / 6.0
    bh, bw = (g.shape[0] - 2) // 8, (g.shape[1] - 2) // 8  # the chroma residual's blocks, as the luma's
    rc = np.abs(cv2.filter2D(d01, -1, _IMMERKAER, borderType=cv2.BORDER_REFLECT))
    rc += np.abs(cv2.filter2D(d21, -1, _IMMERKAER, borderType=cv2.BORDER_REFLECT))
    rc = rc[1:-1, 1:-1]
    if bh >= 1 and bw >= 1:
        cblocks = rc[: bh * 8, : bw * 8].reshape(bh, 8, bw, 8).mean(axis=(1, 3)).ravel()
    else:
        cblocks = np.array([rc.mean()])
    c10 = float(np.percentile(cblocks, 10)) * k / (2.0 * math.sqrt(2.0))
    return {
        "noise.hh_luma": math.log(s_luma + 0.5),
        "noise.hh_chroma": math.log(0.5 * (s_c1 + s_c2) + 0.5),
        "noise.imm_p10": math.log(float(p10) + 0.5),
        "noise.imm_p50": math.log(float(p50) + 0.5),
        "noise.imm_chroma_p10": math.log(c10 + 0.5),
    }


def _blockiness(g: np.ndarray, axis: int) -> float:
    d = np.minimum(np.abs(np.diff(g, axis=axis)), 12.0)
    prof = d.mean(axis=1 - axis)  # one mean step per position along `axis`
    n = prof.shape[0]
    if n < 16:
        return 0.0
    pos = np.arange(n) % 8
    at = prof[pos == 7].mean()  # step between pixel 8k+7 and 8k+8: a block boundary
    off = prof[(pos != 7)].mean()
    return math.log((at + 0.05) / (off + 0.05))


def _block_dct_hf(g: np.ndarray, off: int) -> tuple[float, float]:
    """Mean |HF DCT| and the fraction of near-zero HF coefficients over 8x8 blocks from ``off``."""
    x = g[off:, off:]
    bh, bw = x.shape[0] // 8, x.shape[1] // 8
    if bh < 1 or bw < 1:
        return 0.0, 0.0
    b = x[: bh * 8, : bw * 8].reshape(bh, 8, bw, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)
    co = np.abs(_DCT8 @ b @ _DCT8.T)
    hf = co * _HF_MASK
    n = _HF_MASK.sum() * co.shape[0]
    return float(hf.sum() / n), float(((co < 1.0) * _HF_MASK).sum() / n)


def _jpeg(p: _Prepared) -> dict[str, float]:
    g = p.gray
    a_mag, a_zero = _block_dct_hf(g, 0)
    s_mag, s_zero = _block_dct_hf(g, 4)
    bh = _blockiness(g, 1)
    bv = _blockiness(g, 0)
    return {
        "jpeg.block_h": bh,
        "jpeg.block_v": bv,
        "jpeg.block_min": min(bh, bv),
        "jpeg.dct_ratio": math.log((a_mag + 0.05) / (s_mag + 0.05)),
        "jpeg.zero_diff": a_zero - s_zero,
        "jpeg.zero_aligned": a_zero,
    }


def _max3(s: np.ndarray) -> np.ndarray:
    """``s.max(axis=2)`` for an H x W x 3 array, bit-identical and several times faster."""
    return np.maximum(np.maximum(s[..., 0], s[..., 1]), s[..., 2])


def _min3(s: np.ndarray) -> np.ndarray:
    """``s.min(axis=2)`` for an H x W x 3 array, bit-identical and several times faster."""
    return np.minimum(np.minimum(s[..., 0], s[..., 1]), s[..., 2])


def _lum(p: _Prepared) -> dict[str, float]:
    s = p.small
    v = _max3(s)
    y = 0.299 * s[..., 0] + 0.587 * s[..., 1] + 0.114 * s[..., 2]
    p5, p50, p95, p99 = np.percentile(v, [5, 50, 95, 99])
    return {
        "lum.v_mean": float(v.mean()),
        "lum.v_p5": float(p5),
        "lum.v_p50": float(p50),
        "lum.v_p95": float(p95),
        "lum.v_p99": float(p99),
        "lum.y_mean": float(y.mean()),
        "lum.black": float((v <= 2.0 / 255.0).mean()),
        "lum.dim": float((v <= 0.15).mean()),
    }


def _haze(p: _Prepared) -> dict[str, float]:
    s = p.small
    mn = _min3(s)
    mx = _max3(s)
    dc = cv2.erode(mn, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_REPLICATE)
    sat = (mx - mn) / (mx + 1e-3)
    y = 0.299 * s[..., 0] + 0.587 * s[..., 1] + 0.114 * s[..., 2]
    h = dc.shape[0]
    t = max(1, h // 3)
    mu = cv2.blur(y, (7, 7))
    loc_sd = np.sqrt(np.maximum(cv2.blur(y * y, (7, 7)) - mu * mu, 0.0))
    y1, y99 = np.percentile(y, [1, 99])
    return {
        "haze.dc_mean": float(dc.mean()),
        "haze.dc_p10": float(np.percentile(dc, 10)),
        "haze.dc_p50": float(np.median(dc)),
        "haze.min_p1": float(np.percentile(mn, 1)),
        "haze.sat_mean": float(sat.mean()),
        "haze.y_std": float(y.std()),
        "haze.y_range": float(y99 - y1),
        "haze.local_contrast": float(loc_sd.mean() / (y.mean() + 0.02)),
        "haze.dc_top_minus_bottom": float(dc[:t].mean() - dc[-t:].mean()),
    }


def _grad(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE) * 0.125
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE) * 0.125
    return gx, gy


def _coherence(gx: np.ndarray, gy: np.ndarray) -> float:
    jxx, jyy, jxy = float((gx * gx).mean()), float((gy * gy).mean()), float((gx * gy).mean())
    tr = jxx + jyy
    det_term = math.sqrt(max((jxx - jyy) ** 2 + 4 * jxy * jxy, 0.0))
    return det_term / (tr + _EPS)


_ANGLES8 = np.deg2rad(np.arange(8) * 22.5)


def _blur(p: _Prepared) -> dict[str, float]:
    out: dict[str, float] = {}
    p99 = {}
    for s in (1, 2, 4):
        gx, gy = p.grad(s)
        mag = np.sqrt(gx * gx + gy * gy)
        p99[s] = _pct(mag, 99) + 0.1
        if s in (2, 4):
            out[f"blur.coherence{s}"] = _coherence(gx, gy)
        if s == 2:
            # directional derivative tails: motion blur suppresses one direction only
            d = [_pct(np.abs(math.cos(a) * gx + math.sin(a) * gy), 98) + 0.1 for a in _ANGLES8]
            out["blur.dir_ratio"] = math.log(min(d) / max(d))
            out["blur.sharp2"] = math.log(p99[2])
        if s == 4:
            # kept raw: the per-direction sharpness ratios below reuse them
            q4 = [_pct(np.abs(math.cos(a) * gx + math.sin(a) * gy), 98) for a in _ANGLES8]
            d = [q + 0.1 for q in q4]
            out["blur.dir_ratio4"] = math.log(min(d) / max(d))
    # blur anisotropy that texture anisotropy does not fake: per direction, how much sharper the
    # fine scale is than scale 4 (a motion blur kills the fine scale along its direction only)
    gx1, gy1 = p.grad(1)
    gx1, gy1 = np.ascontiguousarray(gx1[::2, ::2]), np.ascontiguousarray(gy1[::2, ::2])
    r = []
    for a, q in zip(_ANGLES8, q4):
        c, s_ = math.cos(a), math.sin(a)
        d1 = _pct(np.abs(c * gx1 + s_ * gy1), 98) + 0.2
        d4 = q + 0.2
        r.append(math.log(d1 / d4))
    out["blur.dirsharp_min"] = min(r)
    out["blur.dirsharp_max"] = max(r)
    out["blur.dirsharp_aniso"] = max(r) - min(r)
    out["blur.ratio12"] = math.log(p99[1] / p99[2])
    out["blur.ratio24"] = math.log(p99[2] / p99[4])
    out["blur.ratio14"] = math.log(p99[1] / p99[4])
    return out


_RAIN_DIRS = [(round(6 * math.sin(a)), round(6 * math.cos(a))) for a in np.deg2rad(np.arange(12) * 15.0)]
_RAIN_SE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))


def _shift_corr(r: np.ndarray, dy: int, dx: int) -> float:
    h, w = r.shape
    if abs(dy) >= h or abs(dx) >= w:
        return 0.0
    a = r[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
    b = r[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
    return float(np.einsum("ij,ij->", a, b, dtype=np.float64)) / a.size


def _rain(p: _Prepared) -> dict[str, float]:
    g = cv2.GaussianBlur(p.gray, (3, 3), 0.8)
    th = g - cv2.morphologyEx(g, cv2.MORPH_OPEN, _RAIN_SE, borderType=cv2.BORDER_REPLICATE)
    r = th - th.mean()
    var = float((r * r).mean()) + 1e-3
    cors = [_shift_corr(r, dy, dx) / var for dy, dx in _RAIN_DIRS]
    # the same for thin *dark* structures: blur and texture correlate both, rain only the bright ones
    bh = cv2.morphologyEx(g, cv2.MORPH_CLOSE, _RAIN_SE, borderType=cv2.BORDER_REPLICATE) - g
    rb = bh - bh.mean()
    var_b = float((rb * rb).mean()) + 1e-3
    best = int(np.argmax(cors))
    dy, dx = _RAIN_DIRS[best]
    cor_b = _shift_corr(rb, dy, dx) / var_b
    # achromatic: the top-hat of the chroma difference is small when the bright lines are white
    strong = th > 12.0
    frac = float(strong.mean())
    if strong.any():
        c = p.rgb[strong]  # only the strong pixels' chroma is used (same values, far fewer pixels)
        chroma_strong = float((np.abs(c[:, 0] - c[:, 2]) + np.abs(c[:, 1] - c[:, 2])).mean())
    else:
        chroma_strong = 0.0
    return {
        "rain.tophat_mean": math.log(float(th.mean()) + 0.1),
        "rain.tophat_p99": math.log(_pct(th, 99) + 0.1),
        "rain.strong_frac": frac,
        "rain.corr_max": max(cors),
        "rain.corr_contrast": max(cors) - float(np.median(cors)),
        "rain.chroma_strong": math.log(chroma_strong + 1.0),
        "rain.bright_minus_dark_corr": max(cors) - cor_b,
        "rain.bright_over_dark": math.log((float(th.mean()) + 0.1) / (float(bh.mean()) + 0.1)),
        "rain.best_dir_vertical": abs(math.sin(math.radians(best * 15.0))),
    }


# one step along 8 directions (dy, dx); entries i and i + 4 are orthogonal
_MOTION_DIRS = ((0, 1), (1, 2), (1, 1), (2, 1), (1, 0), (2, -1), (1, -1), (1, -2))
# second differences along 0, 45, 90 and 135 degrees (= _MOTION_DIRS 0, 2, 4, 6) as 3 x 3 kernels
_SECOND_DIFF = tuple(
    np.array(k, dtype=np.float32)
    for k in (
        [[0, 0, 0], [1, -2, 1], [0, 0, 0]],
        [[1, 0, 0], [0, -2, 0], [0, 0, 1]],
        [[0, 1, 0], [0, -2, 0], [0, 1, 0]],
        [[0, 0, 1], [0, -2, 0], [1, 0, 0]],
    )
)
#: The finest-scale motion features look at a centre crop of at most this many pixels per side.
MOTION_CROP = 256


def _centre(a: np.ndarray, side: int) -> np.ndarray:
    h, w = a.shape
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return a[y0 : y0 + side, x0 : x0 + side]


def _lap_dir_corr(g: np.ndarray, lags: tuple[int, ...] = (1,)) -> list[np.ndarray]:
    """Normalised autocorrelation of the Laplacian of ``g``, ``lag`` steps along each of :data:`_MOTION_DIRS`, per lag."""
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REPLICATE)
    lap = lap - np.float32(lap.mean())
    var = float(np.einsum("ij,ij->", lap, lap, dtype=np.float64)) / lap.size + 1e-3
    return [np.array([_shift_corr(lap, lag * dy, lag * dx) / var for dy, dx in _MOTION_DIRS]) for lag in lags]


def _second_diff_energy(g: np.ndarray) -> np.ndarray:
    """Mean |second difference| of ``g`` along 0, 45, 90 and 135 degrees, + 0.05."""
    return np.array([float(np.abs(cv2.filter2D(g, -1, k, borderType=cv2.BORDER_REPLICATE)).mean()) + 0.05 for k in _SECOND_DIFF])


def _motion(p: _Prepared) -> dict[str, float]:
    out: dict[str, float] = {}
    g1 = np.ascontiguousarray(_centre(p.gray_scale(1), MOTION_CROP))
    c1, c1b = _lap_dir_corr(g1, (1, 2))
    c2 = _lap_dir_corr(p.gray_scale(2))[0]
    for tag, c in (("ac1", c1), ("ac2", c2)):
        k = int(np.argmax(c))
        med = float(np.median(c))
        out[f"motion.{tag}_spread"] = float(c.max() - c.min())
        out[f"motion.{tag}_max"] = float(c[k])
        out[f"motion.{tag}_median"] = med
        out[f"motion.{tag}_max_minus_median"] = float(c[k]) - med
        out[f"motion.{tag}_max_minus_orth"] = float(c[k] - c[(k + 4) % 8])
    k = int(np.argmax(c1b))
    out["motion.ac1_lag2_spread"] = float(c1b.max() - c1b.min())
    out["motion.ac1_lag2_max"] = float(c1b[k])
    out["motion.ac1_lag2_max_minus_orth"] = float(c1b[k] - c1b[(k + 4) % 8])
    # per direction, second differences at scale 1 over scale 2 (same area): texture anisotropy
    # is about scale-invariant, a fine line blur is not
    g2 = cv2.resize(g1, (max(1, g1.shape[1] // 2), max(1, g1.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    r = np.log(_second_diff_energy(g1) / _second_diff_energy(g2))
    kb = int(np.argmax(c1)) // 2  # the blur direction's nearest of the four
    out["motion.fine_mid_spread"] = float(r.max() - r.min())
    out["motion.fine_mid_orth_minus_blur"] = float(r[(kb + 2) % 4] - r[kb])
    out["motion.fine_mid_min"] = float(r.min())
    return out


def _imm_block_sigma(x: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Immerkaer's sigma (see :func:`_noise`) over 8 x 8 blocks of ``x``: the ``qs`` percentiles."""
    r = np.abs(cv2.filter2D(x, -1, _IMMERKAER, borderType=cv2.BORDER_REFLECT))
    if r.shape[0] > 2 and r.shape[1] > 2:
        r = r[1:-1, 1:-1]
    bh, bw = r.shape[0] // 8, r.shape[1] // 8
    if bh >= 1 and bw >= 1:
        blocks = r[: bh * 8, : bw * 8].reshape(bh, 8, bw, 8).mean(axis=(1, 3)).ravel()
    else:
        blocks = np.array([r.mean()])
    k = math.sqrt(math.pi / 2.0) / 6.0
    return [float(v) * k for v in np.percentile(blocks, qs)]


def _grain(p: _Prepared) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in (2, 4):
        p10, p50 = _imm_block_sigma(p.gray_scale(s), (10, 50))
        out[f"grain.imm{s}_p10"] = math.log(p10 + 0.5)
        out[f"grain.imm{s}_p50"] = math.log(p50 + 0.5)
    cr, cg, cb = p.planes
    h, w = cr.shape
    size = (max(1, w // 2), max(1, h // 2))
    c1 = cv2.resize(cr - cg, size, interpolation=cv2.INTER_AREA)
    c2 = cv2.resize(cb - cg, size, interpolation=cv2.INTER_AREA)
    (a,) = _imm_block_sigma(c1, (10,))
    (b,) = _imm_block_sigma(c2, (10,))
    out["grain.chroma2_p10"] = math.log(0.5 * (a + b) / math.sqrt(2.0) + 0.5)
    return out


def _vhist(p: _Prepared) -> dict[str, float]:
    img = p.img
    v = np.maximum(np.maximum(img[..., 0], img[..., 1]), img[..., 2])
    n = np.bincount(v.ravel().astype(np.int64), minlength=256).astype(np.float64)
    used = np.nonzero(n)[0]
    lo, hi = int(used[0]), int(used[-1])
    span = hi - lo
    if span >= 16:
        q1, q3 = lo + span // 4, lo + 3 * span // 4
        gap_top = float((n[q3 : hi + 1] == 0).mean())
        gap_mid = float((n[q1 : q3 + 1] == 0).mean())
    else:
        gap_top = gap_mid = 0.0
    top_nb = n[max(lo, hi - 4) : hi].mean() if hi > lo else 0.0
    low_nb = n[lo + 1 : min(hi, lo + 4) + 1].mean() if hi > lo else 0.0
    return {
        "vhist.gap_top_minus_mid": gap_top - gap_mid,
        "vhist.gap_top": gap_top,
        "vhist.vmax": hi / 255.0,
        "vhist.top_spike": math.log((n[hi] + 1.0) / (top_nb + 1.0)),
        "vhist.low_spike": math.log((n[lo] + 1.0) / (low_nb + 1.0)) if lo <= 2 else 0.0,
        "vhist.used_fraction": float(len(used)) / float(span + 1),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or float(a.std()) < 1e-9 or float(b.std()) < 1e-9:
        return 0.0
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def _hazemap(p: _Prepared) -> dict[str, float]:
    s = p.small
    mn = _min3(s)
    mx = _max3(s)
    dc = cv2.erode(mn, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_REPLICATE)
    y = 0.299 * s[..., 0] + 0.587 * s[..., 1] + 0.114 * s[..., 2]
    h, w = y.shape
    g = 6
    cdc, ccon, cy, csat = [], [], [], []
    for i in range(g):
        for j in range(g):
            ys, xs = slice(i * h // g, max(i * h // g + 1, (i + 1) * h // g)), slice(j * w // g, max(j * w // g + 1, (j + 1) * w // g))
            cell = y[ys, xs]
            cdc.append(float(np.median(dc[ys, xs])))
            ccon.append(float(cell.std()) / (float(cell.mean()) + 0.02))
            cy.append(float(cell.mean()))
            m1, m0 = float(mx[ys, xs].mean()), float(mn[ys, xs].mean())
            csat.append((m1 - m0) / (m1 + 1e-3))
    a_dc, a_con, a_y, a_sat = (np.array(t) for t in (cdc, ccon, cy, csat))
    order = np.argsort(a_dc)
    top = order[-max(1, len(order) // 6) :]
    return {
        "hazemap.dc_contrast_corr": _spearman(a_dc, np.log(a_con + 1e-3)),
        "hazemap.dc_floor": float(a_dc[order[0]]),
        "hazemap.dc_spread": float(a_dc[top].mean() - a_dc[order[: max(1, len(order) // 6)]].mean()),
        "hazemap.hazy_cells_y": float(a_y[top].mean()),
        "hazemap.hazy_cells_sat": float(a_sat[top].mean()),
        "hazemap.hazy_cells_contrast": math.log(float(a_con[top].mean()) + 1e-3),
    }


_GROUP_FUNCS = {
    "size": _size,
    "noise": _noise,
    "jpeg": _jpeg,
    "lum": _lum,
    "haze": _haze,
    "blur": _blur,
    "rain": _rain,
    "motion": _motion,
    "grain": _grain,
    "vhist": _vhist,
    "hazemap": _hazemap,
}


def compute_features(img: np.ndarray, groups: tuple[str, ...] | list[str] = GROUPS) -> dict[str, float]:
    """Return ``{feature name: value}`` for the requested ``groups`` of one validated RGB ``uint8`` image.

    Non-finite values (impossible in practice, but degenerate inputs are allowed) are replaced by 0.

    Raises:
        ValueError: an unknown group name.
    """
    unknown = [g for g in groups if g not in _GROUP_FUNCS]
    if unknown:
        raise ValueError(f"unknown feature group(s) {unknown}; expected some of {', '.join(GROUPS)}")
    prep = _Prepared(img)
    out: dict[str, float] = {}
    for gname in groups:
        out.update(_GROUP_FUNCS[gname](prep))
    return {k: (v if math.isfinite(v) else 0.0) for k, v in out.items()}


_NAMES: dict[str, list[str]] = {}


def feature_names(groups: tuple[str, ...] | list[str] = GROUPS) -> list[str]:
    """The feature names :func:`compute_features` returns for ``groups``, in order."""
    key = ",".join(groups)
    if key not in _NAMES:
        _NAMES[key] = list(compute_features(np.full((64, 64, 3), 128, np.uint8), groups))
    return list(_NAMES[key])
