"""Colour-space transforms on float ``N x 3 x H x W`` batches: BT.601 YCbCr and HSV value.

Who calls them: :func:`rgb_to_ycbcr` gives the stream engine's device-side scene check its luma
thumbnail (``agentir.stream.engine``); :func:`rgb_to_value` is the V channel of the brightening
tools' torch path (``agentir.toolbox.tools.brighten``). The inverse (YCbCr to RGB) was removed: nothing
needed it.

:func:`rgb_to_ycbcr` is ITU-R BT.601 with studio-swing output, the formula MATLAB's
``rgb2ycbcr`` uses and the one the benchmark's SSIM is computed on (``BENCHMARK.md``).
For ``R, G, B`` in [0, 1]::

    Y  = (16  +  65.481 R + 128.553 G +  24.966 B) / 255     in [16/255, 235/255]
    Cb = (128 -  37.797 R -  74.203 G + 112.000 B) / 255     in [16/255, 240/255]
    Cr = (128 + 112.000 R -  93.786 G -  18.214 B) / 255     in [16/255, 240/255]

:func:`rgb_to_value` is HSV's V channel, ``max(R, G, B)``, as ``N x 1 x H x W``.

Both compute in float32 (float16 and bfloat16 inputs are upcast per element) and return
the input dtype. NaN handling of :func:`rgb_to_value` is unspecified.
"""

from __future__ import annotations

import torch

from agentir.kernels import backend
from agentir.kernels._validate import FLOAT_DTYPES, check_channels, check_tensor
from agentir.kernels.backend import jit, tile_grid, tl

__all__ = [
    "YCBCR_MATRIX",
    "YCBCR_OFFSET",
    "rgb_to_value",
    "rgb_to_value_reference",
    "rgb_to_ycbcr",
    "rgb_to_ycbcr_reference",
]

Matrix = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
Vector = tuple[float, float, float]

YCBCR_MATRIX: Matrix = (
    (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0),
    (-37.797 / 255.0, -74.203 / 255.0, 112.0 / 255.0),
    (112.0 / 255.0, -93.786 / 255.0, -18.214 / 255.0),
)
YCBCR_OFFSET: Vector = (16.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)
_ZERO: Vector = (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- kernels


@jit
def _color_affine_kernel(
    src_ptr,
    dst_ptr,
    H,
    W,
    stride_n,
    stride_c,
    stride_h,
    stride_w,
    m00,
    m01,
    m02,
    m10,
    m11,
    m12,
    m20,
    m21,
    m22,
    p0,
    p1,
    p2,
    q0,
    q1,
    q2,
    tiles_w,
    tiles_per_image,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    # out_i = sum_j m_ij * (x_j - p_j) + q_i, per pixel; output contiguous N x 3 x H x W.
    n, rows, cols, mask, offsets = tile_grid(tl.program_id(0), H, W, stride_n, stride_h, stride_w, tiles_w, tiles_per_image, BLOCK_H, BLOCK_W)
    src = src_ptr + offsets
    d0 = tl.load(src, mask=mask, other=0.0).to(tl.float32) - p0
    d1 = tl.load(src + stride_c, mask=mask, other=0.0).to(tl.float32) - p1
    d2 = tl.load(src + 2 * stride_c, mask=mask, other=0.0).to(tl.float32) - p2
    plane = H * W
    dst = dst_ptr + n.to(tl.int64) * 3 * plane + rows[:, None] * W + cols[None, :]
    out_ty = dst_ptr.dtype.element_ty
    tl.store(dst, (m00 * d0 + m01 * d1 + m02 * d2 + q0).to(out_ty), mask=mask)
    tl.store(dst + plane, (m10 * d0 + m11 * d1 + m12 * d2 + q1).to(out_ty), mask=mask)
    tl.store(dst + 2 * plane, (m20 * d0 + m21 * d1 + m22 * d2 + q2).to(out_ty), mask=mask)


@jit
def _rgb_to_value_kernel(
    src_ptr,
    dst_ptr,
    H,
    W,
    stride_n,
    stride_c,
    stride_h,
    stride_w,
    tiles_w,
    tiles_per_image,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    n, rows, cols, mask, offsets = tile_grid(tl.program_id(0), H, W, stride_n, stride_h, stride_w, tiles_w, tiles_per_image, BLOCK_H, BLOCK_W)
    src = src_ptr + offsets
    r = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(src + stride_c, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(src + 2 * stride_c, mask=mask, other=0.0).to(tl.float32)
    v = tl.maximum(tl.maximum(r, g), b)
    dst = dst_ptr + n.to(tl.int64) * H * W + rows[:, None] * W + cols[None, :]
    tl.store(dst, v.to(dst_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- launchers


def _launch_color_affine(x: torch.Tensor, m: Matrix, pre: Vector, post: Vector) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.empty((n, 3, h, w), dtype=x.dtype, device=x.device)
    kernel = _color_affine_kernel
    g = backend.image_grid(n, h, w, kernel=kernel)
    with backend.launching(kernel, x.device):
        kernel[g.grid](
            x,
            out,
            h,
            w,
            *x.stride(),
            *m[0],
            *m[1],
            *m[2],
            *pre,
            *post,
            g.tiles_w,
            g.tiles_per_image,
            BLOCK_H=g.block_h,
            BLOCK_W=g.block_w,
            **backend.LAUNCH_OPTIONS,
        )
    return out


def _launch_rgb_to_value(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.empty((n, 1, h, w), dtype=x.dtype, device=x.device)
    kernel = _rgb_to_value_kernel
    g = backend.image_grid(n, h, w, kernel=kernel)
    with backend.launching(kernel, x.device):
        kernel[g.grid](
            x,
            out,
            h,
            w,
            *x.stride(),
            g.tiles_w,
            g.tiles_per_image,
            BLOCK_H=g.block_h,
            BLOCK_W=g.block_w,
            **backend.LAUNCH_OPTIONS,
        )
    return out


# --------------------------------------------------------------------------- references


def _affine_reference(x: torch.Tensor, m: Matrix, pre: Vector, post: Vector) -> torch.Tensor:
    # The kernel's operation order, one IEEE rounding per step (the kernel runs without FMA
    # contraction), so float32 results match it. This is also the CPU production path, hence
    # the in-place steps instead of one temporary per term.
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    c = x.to(compute)
    n, _, h, w = x.shape
    out = torch.empty((n, 3, h, w), dtype=compute, device=x.device)
    d = [c[:, j] if pre[j] == 0.0 else c[:, j] - pre[j] for j in range(3)]  # x - 0 == x
    for i in range(3):
        o = out[:, i]
        torch.mul(d[0], m[i][0], out=o)
        o.add_(d[1] * m[i][1])
        o.add_(d[2] * m[i][2])
        o.add_(post[i])
    return out.to(x.dtype)


def rgb_to_ycbcr_reference(batch: torch.Tensor) -> torch.Tensor:
    """Pure-torch specification of :func:`rgb_to_ycbcr` on ``N x 3 x H x W`` (no validation)."""
    return _affine_reference(batch, YCBCR_MATRIX, _ZERO, YCBCR_OFFSET)


def rgb_to_value_reference(batch: torch.Tensor) -> torch.Tensor:
    """Pure-torch specification of :func:`rgb_to_value` on ``N x 3 x H x W`` (no validation)."""
    r, g, b = batch[:, 0:1], batch[:, 1:2], batch[:, 2:3]
    return torch.maximum(torch.maximum(r, g), b).contiguous()


# --------------------------------------------------------------------------- public ops

_LAYOUT = "N x 3 x H x W or 3 x H x W"


def _prepare(op: str, batch: torch.Tensor) -> tuple[torch.Tensor, bool]:
    check_tensor(op, "batch", batch, dtypes=FLOAT_DTYPES, ndims=(3, 4), layout=_LAYOUT)
    check_channels(op, "batch", batch, -3, _LAYOUT)
    squeeze = batch.ndim == 3
    return (batch.unsqueeze(0) if squeeze else batch), squeeze


def _affine(op: str, batch: torch.Tensor, m: Matrix, pre: Vector, post: Vector) -> torch.Tensor:
    x, squeeze = _prepare(op, batch)
    if x.numel() == 0:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    elif backend.use_triton(x, kernel=_color_affine_kernel, op=op):
        out = _launch_color_affine(x, m, pre, post)
    else:
        out = _affine_reference(x, m, pre, post)
    return out[0] if squeeze else out


def rgb_to_ycbcr(batch: torch.Tensor) -> torch.Tensor:
    """Convert RGB in [0, 1] to BT.601 studio-swing YCbCr in [0, 1] (see the module doc).

    Args:
        batch: float16, bfloat16 or float32 ``N x 3 x H x W`` (or ``3 x H x W``); any strides.

    Returns:
        A new contiguous tensor of the same shape and dtype; channel 0 is Y, 1 Cb, 2 Cr.

    Raises:
        KernelInputError: (a ``ValueError``) wrong dtype, rank or channel count.
        KernelBackendError: ``AGENTIR_KERNELS=triton`` cannot be honoured for this tensor.
    """
    return _affine("rgb_to_ycbcr", batch, YCBCR_MATRIX, _ZERO, YCBCR_OFFSET)


def rgb_to_value(batch: torch.Tensor) -> torch.Tensor:
    """Return HSV value ``max(R, G, B)`` of ``N x 3 x H x W`` as ``N x 1 x H x W``.

    A ``3 x H x W`` input gives ``1 x H x W``. The result is exact (no rounding).

    Raises:
        KernelInputError: (a ``ValueError``) wrong dtype, rank or channel count.
        KernelBackendError: ``AGENTIR_KERNELS=triton`` cannot be honoured for this tensor.
    """
    op = "rgb_to_value"
    x, squeeze = _prepare(op, batch)
    n, _, h, w = x.shape
    if x.numel() == 0:
        out = torch.empty((n, 1, h, w), dtype=x.dtype, device=x.device)
    elif backend.use_triton(x, kernel=_rgb_to_value_kernel, op=op):
        out = _launch_rgb_to_value(x)
    else:
        out = rgb_to_value_reference(x)
    return out[0] if squeeze else out
