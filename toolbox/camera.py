"""Realistic camera noise: unprocess an sRGB image to a raw-like mosaic, add sensor noise, re-process.

numpy + OpenCV only, no torch. Used to train perception on noise that looks like what real
cameras produce (the benchmark's own noise, :mod:`agentir.toolbox.degrade`, stays the paper's white
Gaussian / Poisson recipe and is not touched by this module).

Real camera noise is not white: it is added on the sensor's mosaic in linear light, where its
variance grows with the signal (photon shot noise) on top of a constant read-noise floor; the
camera then demosaics (which spreads each raw sample over its neighbours and colours), applies
white balance, a colour matrix (which mixes the channels' noise), a gamma and a tone curve
(which amplify noise in the shadows and compress it in the highlights), and usually JPEG. The
pipeline here follows Brooks et al., "Unprocessing Images for Learned Raw Denoising" (CVPR
2019), step for step:

1. *unprocess*: inverse smoothstep tone curve, inverse gamma (2.2), inverse colour matrix (a
   random blend of the identity and a typical camera matrix), inverse white balance (red and
   blue gains), RGGB mosaic;
2. *noise* on the mosaic: ``raw + N(0, 1) * sqrt(shot * raw + read)``, clipped to ``[0, 1]``
   (:func:`add_raw_noise`); ``log(shot)`` uniform and ``log(read)`` linear in it plus a little
   scatter, as in the paper. One addition: with probability 0.6 the unit normal field is first
   made *grainy*, Gaussian-blurred with sigma ``grain`` ~ U(0.4, 1.2) raw pixels and rescaled to
   unit variance, for the coarser noise of sensors with pixel crosstalk, in-camera noise
   reduction or resampling (the grain of many real noisy photos spans 2-4 pixels);
3. *process*: demosaic (OpenCV bilinear or edge-aware), white balance, colour matrix, gamma,
   smoothstep tone curve; with probability 0.5 in-camera chroma noise reduction (the colour
   differences to BT.601 luma Gaussian-blurred with sigma ``chroma_nr`` ~ U(1, 3) pixels, which
   leaves the luma-dominant noise of most real photos); round to ``uint8``; optionally JPEG at an
   ordinary camera quality.

As in :mod:`agentir.toolbox.degrade`, a *draw* step puts every random number into a JSON-serialisable
``params`` dict (the per-pixel noise comes from one drawn ``field_seed``) and an *apply* step is
a pure function of ``(image, params)``, so :func:`camera_noise` is deterministic given the
generator state and :func:`apply_camera_noise` replays recorded params bit-exactly.

:func:`effective_sigma` measures how strong the result is on the benchmark's scale: the standard
deviation (0..255) of the output minus the same pipeline run without noise, so a training label
can be put on the benchmark's severity levels (Gaussian sigma 2-6 low, 10-20 medium, ...).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CAMERA_MATRIX",
    "add_raw_noise",
    "apply_camera_noise",
    "camera_noise",
    "draw_camera_noise",
    "effective_sigma",
    "mosaic",
    "process",
    "unprocess",
]

#: A typical camera-RGB -> linear sRGB colour matrix (rows sum to 1, so grey stays grey); the
#: drawn matrix is a blend of it with the identity. Off-diagonal terms mix the channels' noise.
CAMERA_MATRIX = np.array([[1.62, -0.52, -0.10], [-0.20, 1.50, -0.30], [0.02, -0.48, 1.46]])

#: Range of ``log(shot)`` (shot-noise variance per unit linear signal) the draw covers: from
#: barely visible to a dim indoor phone shot (Brooks et al. use 1e-4 .. 1.2e-2).
LOG_SHOT_RANGE = (math.log(1e-4), math.log(3e-2))

_LUMA = np.array([0.299, 0.587, 0.114])
_DEMOSAIC = {"bilinear": cv2.COLOR_BayerBG2RGB, "edge_aware": cv2.COLOR_BayerBG2RGB_EA}


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 H x W x 3 array, got {getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"camera noise needs at least 2 x 2 pixels (one Bayer cell), got {img.shape[:2]}")


def _ccm(blend: float) -> np.ndarray:
    return (1.0 - blend) * np.eye(3) + blend * CAMERA_MATRIX


def draw_camera_noise(rng: np.random.Generator, *, log_shot: float | None = None, jpeg: bool | None = None) -> dict[str, Any]:
    """Draw the parameters of one camera: noise levels, white balance, colour matrix, demosaic, JPEG.

    Args:
        rng: the caller's generator (the only source of randomness).
        log_shot: natural log of the shot-noise variance per unit signal; default uniform over
            :data:`LOG_SHOT_RANGE`.
        jpeg: force JPEG on / off; default on with probability 0.6 (quality ``randint[60, 96)``).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    ls = float(rng.uniform(*LOG_SHOT_RANGE)) if log_shot is None else float(log_shot)
    # Brooks et al.: log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26) (read is a variance too)
    log_read = 2.18 * ls + 1.20 + float(rng.normal(0.0, 0.26))
    use_jpeg = bool(rng.random() < 0.6) if jpeg is None else bool(jpeg)
    return {
        "name": "camera_noise",
        "shot": math.exp(ls),
        "read": math.exp(log_read),
        "red_gain": float(rng.uniform(1.9, 2.4)),
        "blue_gain": float(rng.uniform(1.5, 1.9)),
        "ccm_blend": float(rng.uniform(0.0, 1.0)),
        "demosaic": "edge_aware" if rng.random() < 0.5 else "bilinear",
        "grain": float(rng.uniform(0.4, 1.2)) if rng.random() < 0.6 else 0.0,
        "chroma_nr": float(rng.uniform(1.0, 3.0)) if rng.random() < 0.5 else 0.0,
        "jpeg_quality": int(rng.integers(60, 96)) if use_jpeg else None,
        "field_seed": int(rng.integers(0, 2**31 - 1)),
    }


def unprocess(img: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """sRGB ``uint8`` -> linear camera RGB (float64 in [0, 1], before white balance)."""
    x = img.astype(np.float64) / 255.0
    x = 0.5 - np.sin(np.arcsin(np.clip(1.0 - 2.0 * x, -1.0, 1.0)) / 3.0)  # inverse smoothstep
    x = np.maximum(x, 1e-8) ** 2.2  # inverse gamma
    x = np.clip(x @ np.linalg.inv(_ccm(p["ccm_blend"])).T, 0.0, 1.0)  # inverse colour matrix
    return x / np.array([p["red_gain"], 1.0, p["blue_gain"]])  # inverse white balance


def mosaic(lin: np.ndarray) -> np.ndarray:
    """RGGB Bayer mosaic (``H x W``, even sizes: odd last row / column dropped) of an ``H x W x 3`` image."""
    h, w = lin.shape[0] // 2 * 2, lin.shape[1] // 2 * 2
    raw = np.empty((h, w), dtype=np.float64)
    raw[0::2, 0::2] = lin[0:h:2, 0:w:2, 0]
    raw[0::2, 1::2] = lin[0:h:2, 1:w:2, 1]
    raw[1::2, 0::2] = lin[1:h:2, 0:w:2, 1]
    raw[1::2, 1::2] = lin[1:h:2, 1:w:2, 2]
    return raw


def add_raw_noise(raw: np.ndarray, shot: float, read: float, rng: np.random.Generator, grain: float = 0.0) -> np.ndarray:
    """Shot + read noise on a linear mosaic: ``raw + N(0, 1) * sqrt(shot * raw + read)``, clipped to [0, 1].

    The variance is ``shot * raw + read``: it grows linearly with the signal (heteroscedastic).
    ``grain > 0`` Gaussian-blurs the unit normal field with that sigma (pixels) and rescales it
    to unit variance first, so neighbouring samples' noise is correlated.
    """
    z: np.ndarray = rng.standard_normal(raw.shape)
    if grain > 0:
        z = np.asarray(cv2.GaussianBlur(z, (0, 0), float(grain), borderType=cv2.BORDER_REFLECT), dtype=np.float64)
        z /= max(float(z.std()), 1e-12)
    sd = np.sqrt(shot * np.maximum(raw, 0.0) + read)
    return np.clip(raw + z * sd, 0.0, 1.0)


def process(raw: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Linear RGGB mosaic -> sRGB ``uint8`` (demosaic, white balance, colour matrix, gamma, tone curve)."""
    r16 = np.round(np.clip(raw, 0.0, 1.0) * 65535.0).astype(np.uint16)
    # OpenCV names Bayer patterns by the 2nd row's 2nd/3rd pixels: BG here is an RGGB mosaic
    rgb = cv2.cvtColor(r16, _DEMOSAIC[p["demosaic"]]).astype(np.float64) / 65535.0
    rgb = np.clip(rgb * np.array([p["red_gain"], 1.0, p["blue_gain"]]), 0.0, 1.0)
    rgb = np.clip(rgb @ _ccm(p["ccm_blend"]).T, 0.0, 1.0)
    rgb = np.maximum(rgb, 1e-8) ** (1.0 / 2.2)
    rgb = 3.0 * rgb * rgb - 2.0 * rgb**3  # smoothstep tone curve
    nr = float(p.get("chroma_nr", 0.0))
    if nr > 0:  # in-camera chroma noise reduction: blur the colour differences, keep the luma
        y = rgb @ _LUMA
        chroma = np.asarray(cv2.GaussianBlur(rgb - y[..., None], (0, 0), nr, borderType=cv2.BORDER_REFLECT), dtype=np.float64)
        rgb = y[..., None] + chroma
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if dec is None:  # pragma: no cover - OpenCV decodes what it encoded
        raise RuntimeError("JPEG decoding failed")
    return np.ascontiguousarray(cv2.cvtColor(dec, cv2.COLOR_BGR2RGB))


def apply_camera_noise(img: np.ndarray, p: dict[str, Any], *, noise: bool = True) -> np.ndarray:
    """Run the whole pipeline on ``img`` with the drawn params ``p`` (pure; see the module docstring).

    ``noise=False`` runs the same pipeline without the sensor noise (the reference for
    :func:`effective_sigma`). An odd height or width loses its last row / column (a Bayer cell is
    2 x 2), so compare against ``img[: h // 2 * 2, : w // 2 * 2]``.

    Raises:
        ValueError: not an RGB ``uint8`` image of at least 2 x 2 pixels.
    """
    _check_image(img)
    raw = mosaic(unprocess(img, p))
    if noise:
        raw = add_raw_noise(raw, float(p["shot"]), float(p["read"]), np.random.default_rng(int(p["field_seed"])), float(p.get("grain", 0.0)))
    out = process(raw, p)
    if p.get("jpeg_quality") is not None:
        out = _jpeg(out, int(p["jpeg_quality"]))
    return out


def camera_noise(img: np.ndarray, rng: np.random.Generator, **draw: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw camera params from ``rng`` (keywords go to :func:`draw_camera_noise`) and apply them.

    Returns ``(noisy image, params)``; params carry ``sigma_eff`` (:func:`effective_sigma`).
    """
    _check_image(img)
    p = draw_camera_noise(rng, **draw)
    out = apply_camera_noise(img, p)
    p["sigma_eff"] = effective_sigma(out, apply_camera_noise(img, p, noise=False))
    return out, p


def effective_sigma(noisy: np.ndarray, reference: np.ndarray) -> float:
    """Noise strength on the benchmark's 0..255 scale: the standard deviation of ``noisy - reference``."""
    return float(np.std(noisy.astype(np.float64) - reference.astype(np.float64)))
