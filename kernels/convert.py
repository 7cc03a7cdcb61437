"""uint8 NHWC images <-> float NCHW batches: the first and last step of every tool call.

Decoded images arrive as ``uint8`` ``N x H x W x 3`` (PIL, OpenCV after BGR->RGB, the blob
store); tools take ``float`` ``N x 3 x H x W`` in [0, 1]. Doing the permute, the cast and the
scale in one pass avoids three full-size temporaries per image.

Rounding in :func:`to_uint8_nhwc` is **round half up**: ``floor(clamp(x, 0, 1) * 255 + 0.5)``
computed in float32, with NaN mapped to 0. The Triton kernel is launched with floating-point
fusion disabled so the multiply and the add round separately, exactly as in the reference;
the two therefore agree bit for bit.
"""

from __future__ import annotations

import math

import torch

from agentir.kernels import backend
from agentir.kernels._validate import FLOAT_DTYPES, check_channels, check_output_dtype, check_tensor
from agentir.kernels.backend import KernelInputError, jit, tile_grid, tl

__all__ = [
    "to_float_nchw",
    "to_float_nchw_reference",
    "to_uint8_nhwc",
    "to_uint8_nhwc_reference",
]

DEFAULT_SCALE = 1.0 / 255.0


# --------------------------------------------------------------------------- kernels


@jit
def _to_float_nchw_kernel(
    src_ptr,
    dst_ptr,
    H,
    W,
    stride_n,
    stride_h,
    stride_w,
    stride_c,
    scale,
    tiles_w,
    tiles_per_image,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    # One program per (image, BLOCK_H x BLOCK_W tile); the 1-D grid has no axis-size limits.
    n, rows, cols, mask, offsets = tile_grid(tl.program_id(0), H, W, stride_n, stride_h, stride_w, tiles_w, tiles_per_image, BLOCK_H, BLOCK_W)
    src = src_ptr + offsets
    plane = H * W
    dst = dst_ptr + n.to(tl.int64) * 3 * plane + rows[:, None] * W + cols[None, :]
    out_ty = dst_ptr.dtype.element_ty
    for c in tl.static_range(3):
        v = tl.load(src + c * stride_c, mask=mask, other=0)
        tl.store(dst + c * plane, (v.to(tl.float32) * scale).to(out_ty), mask=mask)


@jit
def _to_uint8_nhwc_kernel(
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
    dst = dst_ptr + n.to(tl.int64) * 3 * H * W + (rows[:, None] * W + cols[None, :]) * 3
    for c in tl.static_range(3):
        v = tl.load(src + c * stride_c, mask=mask, other=0.0).to(tl.float32)
        v = tl.where(v == v, v, 0.0)  # NaN -> 0 (the comparison is false only for NaN)
        v = tl.minimum(tl.maximum(v, 0.0), 1.0)
        q = tl.floor(v * 255.0 + 0.5)
        tl.store(dst + c, q.to(tl.uint8), mask=mask)


# --------------------------------------------------------------------------- launchers


def _launch_to_float_nchw(x: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    n, h, w, _ = x.shape
    out = torch.empty((n, 3, h, w), dtype=dtype, device=x.device)
    kernel = _to_float_nchw_kernel
    g = backend.image_grid(n, h, w, kernel=kernel)
    sn, sh, sw, sc = x.stride()
    with backend.launching(kernel, x.device):
        kernel[g.grid](
            x,
            out,
            h,
            w,
            sn,
            sh,
            sw,
            sc,
            scale,
            g.tiles_w,
            g.tiles_per_image,
            BLOCK_H=g.block_h,
            BLOCK_W=g.block_w,
            **backend.LAUNCH_OPTIONS,
        )
    return out


def _launch_to_uint8_nhwc(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.empty((n, h, w, 3), dtype=torch.uint8, device=x.device)
    kernel = _to_uint8_nhwc_kernel
    g = backend.image_grid(n, h, w, kernel=kernel)
    sn, sc, sh, sw = x.stride()
    with backend.launching(kernel, x.device):
        kernel[g.grid](
            x,
            out,
            h,
            w,
            sn,
            sc,
            sh,
            sw,
            g.tiles_w,
            g.tiles_per_image,
            BLOCK_H=g.block_h,
            BLOCK_W=g.block_w,
            **backend.LAUNCH_OPTIONS,
        )
    return out


# --------------------------------------------------------------------------- references


def to_float_nchw_reference(images: torch.Tensor, *, scale: float = DEFAULT_SCALE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pure-torch specification of :func:`to_float_nchw` (no validation).

    Each value is ``float32(u8) * float32(scale)`` rounded to float32, then cast to ``dtype``.
    A float64 ``dtype`` computes in float64 (used by the tests as the exact reference).
    """
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    x = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.permute(2, 0, 1)
    # Cast and transpose in one copy, then scale in place (the CPU production path).
    out = torch.empty(x.shape, dtype=compute, device=x.device).copy_(x)
    out.mul_(torch.tensor(scale, dtype=compute))
    return out.to(dtype)


def to_uint8_nhwc_reference(batch: torch.Tensor) -> torch.Tensor:
    """Pure-torch specification of :func:`to_uint8_nhwc` (no validation).

    ``floor(clamp(nan_to_num(x, 0), 0, 1) * 255 + 0.5)`` in float32 (float64 for float64 input).
    """
    compute = torch.float64 if batch.dtype == torch.float64 else torch.float32
    x = batch.to(compute, copy=True)
    # NaN -> 0; infinities become the largest finite values, which the clamp maps to 0 and 1.
    torch.nan_to_num_(x, nan=0.0)
    x.clamp_(0.0, 1.0).mul_(255.0).add_(0.5).floor_()
    x = x.permute(0, 2, 3, 1) if batch.ndim == 4 else x.permute(1, 2, 0)
    return torch.empty(x.shape, dtype=torch.uint8, device=x.device).copy_(x)


# --------------------------------------------------------------------------- public ops


def to_float_nchw(images: torch.Tensor, *, scale: float = DEFAULT_SCALE, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert uint8 images ``N x H x W x 3`` (or ``H x W x 3``) to float ``N x 3 x H x W``.

    Args:
        images: uint8 RGB images, channels last; any strides (crops and views are fine).
        scale: multiplier applied to each value; the default 1/255 maps 0..255 onto [0, 1].
        dtype: output dtype, float32 (default), float16 or bfloat16; the product is computed
            in float32 and then cast.

    Returns:
        A new contiguous tensor ``N x 3 x H x W`` (``3 x H x W`` for a 3-D input) on the
        input's device.

    Raises:
        KernelInputError: (a ``ValueError``) wrong dtype, rank, channel count, scale or dtype.
        KernelBackendError: ``AGENTIR_KERNELS=triton`` cannot be honoured for this tensor.
    """
    op = "to_float_nchw"
    check_tensor(op, "images", images, dtypes=(torch.uint8,), ndims=(3, 4), layout="N x H x W x 3 or H x W x 3")
    check_channels(op, "images", images, -1, "N x H x W x 3 or H x W x 3")
    check_output_dtype(op, dtype)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise KernelInputError(op, f"scale must be a finite number, got {scale!r}")
    scale = float(scale)
    squeeze = images.ndim == 3
    x = images.unsqueeze(0) if squeeze else images
    n, h, w, _ = x.shape
    if x.numel() == 0:
        out = torch.empty((n, 3, h, w), dtype=dtype, device=x.device)
    elif backend.use_triton(x, kernel=_to_float_nchw_kernel, op=op):
        out = _launch_to_float_nchw(x, scale, dtype)
    else:
        out = to_float_nchw_reference(x, scale=scale, dtype=dtype)
    return out[0] if squeeze else out


def to_uint8_nhwc(batch: torch.Tensor) -> torch.Tensor:
    """Convert a float batch ``N x 3 x H x W`` (or ``3 x H x W``) to uint8 ``N x H x W x 3``.

    Values are clamped to [0, 1], scaled by 255 and rounded half up (``floor(v * 255 + 0.5)``,
    in float32); NaN becomes 0. The Triton kernel and the reference agree exactly.

    Args:
        batch: float16, bfloat16 or float32 images, channels first; any strides.

    Returns:
        A new contiguous uint8 tensor ``N x H x W x 3`` (``H x W x 3`` for a 3-D input).

    Raises:
        KernelInputError: (a ``ValueError``) wrong dtype, rank or channel count.
        KernelBackendError: ``AGENTIR_KERNELS=triton`` cannot be honoured for this tensor.
    """
    op = "to_uint8_nhwc"
    check_tensor(op, "batch", batch, dtypes=FLOAT_DTYPES, ndims=(3, 4), layout="N x 3 x H x W or 3 x H x W")
    check_channels(op, "batch", batch, -3, "N x 3 x H x W or 3 x H x W")
    squeeze = batch.ndim == 3
    x = batch.unsqueeze(0) if squeeze else batch
    n, _, h, w = x.shape
    if x.numel() == 0:
        out = torch.empty((n, h, w, 3), dtype=torch.uint8, device=x.device)
    elif backend.use_triton(x, kernel=_to_uint8_nhwc_kernel, op=op):
        out = _launch_to_uint8_nhwc(x)
    else:
        out = to_uint8_nhwc_reference(x)
    return out[0] if squeeze else out
