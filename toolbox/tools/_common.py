"""Shared helpers for the classical tools: the numpy tool base class, colour transforms,
noise estimation, guided filtering, FFT deconvolution and the benchmark's blur kernels.

Every tool here works on one ``H x W x 3`` float32 image in ``[0, 1]`` at a time; the base
class turns the batch contract of :mod:`agentir.toolbox.base` into per-image calls.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from agentir.toolbox.base import ToolError, check_batch

__all__ = [
    "NumpyTool",
    "dct_threshold",
    "defocus_kernel",
    "estimate_noise_sigma",
    "from_opponent",
    "guided_filter",
    "motion_kernel",
    "pad_taper",
    "psf2otf",
    "to_opponent",
    "wiener_deconv",
]


class NumpyTool:
    """Base class: validates the batch, runs :meth:`process` on each image, clamps the result.

    Subclasses set ``name``, ``degradation``, ``scale`` and implement ``process(img)`` on an
    ``H x W x 3`` float32 array in ``[0, 1]`` that returns ``scale*H x scale*W x 3``. Images
    smaller than ``min_size`` on a side are padded (mirrored) before processing and cropped after,
    so that tiny inputs never crash a filter. The input tensor is never modified.
    """

    name: str = "numpy_tool"
    degradation: str = "noise"
    scale: int = 1
    device: str = "cpu"
    min_size: int = 16

    def process(self, img: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, degradation={self.degradation!r})"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Restore every image of ``batch`` (``N x 3 x H x W`` in ``[0, 1]``).

        Raises:
            ToolError: the batch has the wrong layout or dtype, or processing failed.
        """
        check_batch(self.name, batch)
        n, _, h, w = batch.shape
        s = self.scale
        if n == 0 or h == 0 or w == 0:
            return batch.new_zeros((n, 3, h * s, w * s))
        x = torch.nan_to_num(batch.detach().to("cpu", torch.float32), nan=0.0).clamp(0.0, 1.0)
        outs = []
        for i in range(n):
            img = np.ascontiguousarray(x[i].permute(1, 2, 0).numpy(), dtype=np.float32)
            ph, pw = max(0, self.min_size - h), max(0, self.min_size - w)
            if ph or pw:
                img = _pad_symmetric(img, ph, pw)
            try:
                out = self.process(img)
            except ToolError:
                raise
            except Exception as exc:  # numpy/OpenCV failures become the tool's error
                raise ToolError(self.name, f"{type(exc).__name__}: {exc}") from exc
            out = np.asarray(out, dtype=np.float32)
            if out.shape != (img.shape[0] * s, img.shape[1] * s, 3):
                raise ToolError(self.name, f"internal shape error: {img.shape} -> {out.shape}")
            out = out[: h * s, : w * s]
            outs.append(torch.from_numpy(np.ascontiguousarray(np.clip(out, 0.0, 1.0))).permute(2, 0, 1))
        y = torch.stack(outs).to(device=batch.device, dtype=batch.dtype)
        return y.clamp_(0.0, 1.0)


def _pad_symmetric(img: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """Pad bottom/right by mirroring, repeatedly if the image is smaller than the pad."""
    while ph > 0 or pw > 0:
        h, w = img.shape[:2]
        a, b = min(ph, h), min(pw, w)
        img = np.pad(img, ((0, a), (0, b), (0, 0)), mode="symmetric")
        ph, pw = ph - a, pw - b
    return img


# --- colour --------------------------------------------------------------------------------

# Orthonormal opponent transform: white noise keeps its sigma in every channel.
_OPP = np.array(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
        [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)],
    ],
    dtype=np.float32,
)


def to_opponent(img: np.ndarray) -> np.ndarray:
    """RGB ``H x W x 3`` -> orthonormal opponent colour space (luma-like first channel)."""
    return img @ _OPP.T


def from_opponent(img: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_opponent`."""
    return img @ _OPP


# --- noise ---------------------------------------------------------------------------------


def estimate_noise_sigma(img: np.ndarray) -> float:
    """Robust white-noise sigma of an ``H x W x 3`` (or ``H x W``) image in ``[0, 1]`` units.

    Median absolute deviation of the finest diagonal Haar coefficients (Donoho), averaged over
    the opponent channels. Texture inflates it a little; a clean image gives ~1/255.
    """
    chans = to_opponent(img) if img.ndim == 3 else img[..., None]
    h, w = chans.shape[:2]
    h2, w2 = h - h % 2, w - w % 2
    if h2 < 2 or w2 < 2:
        return 0.0
    c = chans[:h2, :w2]
    hh = (c[0::2, 0::2] - c[1::2, 0::2] - c[0::2, 1::2] + c[1::2, 1::2]) / 2.0
    sig = np.median(np.abs(hh), axis=(0, 1)) / 0.6745
    return float(np.mean(sig))


# --- filters -------------------------------------------------------------------------------


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey ``guide`` and grey ``src`` (both ``H x W`` float32)."""
    k = (2 * radius + 1, 2 * radius + 1)

    def box(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, -1, k, borderType=cv2.BORDER_REFLECT)

    mi, ms = box(guide), box(src)
    cov = box(guide * src) - mi * ms
    var = box(guide * guide) - mi * mi
    a = cov / (var + eps)
    b = ms - a * mi
    return box(a) * guide + box(b)


_DCT_CACHE: dict[int, torch.Tensor] = {}


def _dct_basis(p: int) -> torch.Tensor:
    """``p*p x 1 x p x p`` orthonormal 2-D DCT-II basis (conv2d weights)."""
    if p not in _DCT_CACHE:
        n = np.arange(p)
        c = np.sqrt(2.0 / p) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * p))
        c[0] /= np.sqrt(2.0)
        basis = np.einsum("ux,vy->uvxy", c, c).reshape(p * p, 1, p, p)
        _DCT_CACHE[p] = torch.from_numpy(basis.astype(np.float32))
    return _DCT_CACHE[p]


def dct_threshold(chans: np.ndarray, thresholds: np.ndarray, *, patch: int = 8, stride: int = 2) -> np.ndarray:
    """Sliding-window DCT hard thresholding of an ``H x W x C`` float32 array.

    Every ``patch x patch`` window (step ``stride``) is transformed, coefficients below the
    channel's threshold are zeroed (DC kept), and windows are averaged back with weights
    ``1 / (1 + kept coefficients)`` (sparser windows are trusted more, as in BM3D).
    """
    h, w, c = chans.shape
    p = patch
    # Mirror-pad so that every pixel is covered by the same number of windows.
    pad = p - 1
    x = torch.from_numpy(np.ascontiguousarray(chans.transpose(2, 0, 1)))[:, None]
    right = pad + (stride - (w + pad) % stride) % stride
    bottom = pad + (stride - (h + pad) % stride) % stride
    mode = "reflect" if min(h, w) > max(right, bottom) else "replicate"  # reflect needs pad < size
    x = F.pad(x, (pad, right, pad, bottom), mode=mode)
    basis = _dct_basis(p)
    with torch.no_grad():
        coef = F.conv2d(x, basis, stride=stride)  # C x p*p x h' x w'
        thr = torch.from_numpy(np.asarray(thresholds, dtype=np.float32)).view(c, 1, 1, 1)
        keep = coef.abs() >= thr
        keep[:, 0] = True
        coef = coef * keep
        wgt = 1.0 / keep.sum(dim=1, keepdim=True).float()
        # Back to pixels: each window's inverse DCT (a matrix product), overlapping windows summed
        # by F.fold. The same sums as conv_transpose2d with the basis, about 3x faster on the CPU.
        n_c, n_k, hq, wq = coef.shape
        size = ((hq - 1) * stride + p, (wq - 1) * stride + p)
        windows = torch.matmul(basis.view(p * p, p * p).t(), (coef * wgt).view(n_c, n_k, hq * wq))
        rec = F.fold(windows, output_size=size, kernel_size=p, stride=stride)
        norm = F.conv_transpose2d(wgt, torch.ones(1, 1, p, p), stride=stride)  # one channel: cheap either way
        out = rec / norm.clamp_min(1e-8)
    out = out[:, 0, pad : pad + h, pad : pad + w]
    return out.permute(1, 2, 0).numpy()


# --- deconvolution -------------------------------------------------------------------------


def pad_taper(ch: np.ndarray, pad: int) -> np.ndarray:
    """Pad ``H x W (x C)`` by ``pad`` with replicated edges blended into the opposite edge.

    Makes the image close to periodic so that FFT deconvolution does not ring at the borders.
    """
    if pad <= 0:
        return ch
    spec = ((pad, pad), (pad, pad)) + (((0, 0),) if ch.ndim == 3 else ())
    rep = np.pad(ch, spec, mode="edge")
    hh, ww = rep.shape[:2]
    # Fade from the replicated edge to the image mean over the pad: the outer frame is one
    # constant, so the periodic wrap-around of the FFT is continuous.
    ry = np.minimum(np.arange(hh), np.arange(hh)[::-1]).astype(np.float32)
    rx = np.minimum(np.arange(ww), np.arange(ww)[::-1]).astype(np.float32)
    alpha = np.minimum(np.clip(ry / pad, 0, 1)[:, None], np.clip(rx / pad, 0, 1)[None, :])
    alpha = 0.5 - 0.5 * np.cos(np.pi * alpha)
    mean = ch.mean(axis=(0, 1), keepdims=True)
    if ch.ndim == 3:
        alpha = alpha[..., None]
    return (alpha * rep + (1 - alpha) * mean).astype(np.float32)


def psf2otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2-layout transfer function of a convolution ``kernel`` whose origin is its centre pixel."""
    kh, kw = kernel.shape
    big = np.zeros(shape, dtype=np.float64)
    big[:kh, :kw] = kernel
    big = np.roll(big, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return np.fft.rfft2(big)


def wiener_deconv(img: np.ndarray, kernel: np.ndarray, reg: float, *, pad: int | None = None) -> np.ndarray:
    """Deconvolve ``H x W x C`` by a convolution ``kernel`` with a gradient (Laplacian) prior.

    ``X = conj(K) Y / (|K|^2 + reg |D|^2)``, ``D`` the discrete gradient; edges are tapered first.
    """
    kh, kw = kernel.shape
    if pad is None:
        pad = max(kh, kw)
    y = pad_taper(img, pad)
    hh, ww = y.shape[:2]
    otf = psf2otf(kernel, (hh, ww))
    fy = np.fft.fftfreq(hh)[:, None]
    fx = np.fft.rfftfreq(ww)[None, :]
    grad2 = (2 - 2 * np.cos(2 * np.pi * fy)) + (2 - 2 * np.cos(2 * np.pi * fx))
    filt = np.conj(otf) / (np.abs(otf) ** 2 + reg * grad2)
    out = np.empty_like(y)
    for c in range(y.shape[2]):
        out[..., c] = np.fft.irfft2(np.fft.rfft2(y[..., c]) * filt, s=(hh, ww))
    return out[pad : pad + img.shape[0], pad : pad + img.shape[1]]


# --- the benchmark's blur kernels ----------------------------------------------------------


def motion_kernel(radius: int, sigma: float, angle_deg: float) -> np.ndarray:
    """The recipe's one-sided motion kernel as a *convolution* kernel (odd square, centred).

    The synthesis (ImageNet-C style) computes ``out(p) = sum_i w_i * in(p + d_i)`` with
    ``d_i = (ceil(i cos a - 0.5), ceil(i sin a - 0.5))`` (x right, y down), ``i = 0..2r``,
    ``w_i ~ exp(-i^2 / (2 sigma^2))``. As a convolution kernel the taps sit at ``-d_i``.
    """
    width = 2 * radius + 1
    w = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma**2))
    w /= w.sum()
    a = np.deg2rad(angle_deg)
    size = 2 * width + 1
    k = np.zeros((size, size), dtype=np.float64)
    c = width
    for i in range(width):
        dx = math.ceil(i * math.cos(a) - 0.5)
        dy = math.ceil(i * math.sin(a) - 0.5)
        k[c - dy, c - dx] += w[i]
    return k


def defocus_kernel(radius: float, alias: float) -> np.ndarray:
    """The recipe's defocus kernel: a disk of ``radius`` on a 17x17 grid, then a 3x3 Gaussian."""
    half = max(8, int(math.ceil(radius)))
    ax = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(ax, ax)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, (3, 3), sigmaX=alias).astype(np.float64)
