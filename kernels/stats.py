"""Per-image perception statistics of float ``N x 3 x H x W`` batches, fused in one pass.

:func:`image_stats` returns a float32 ``N x K`` tensor, one row per image, whose columns are
named by :data:`STATS_COLUMNS` (``K = len(STATS_COLUMNS)``). With ``Y`` the BT.601 luma of
:mod:`agentir.kernels.color` (``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``), ``V = max(R, G, B)``
and ``D = min(R, G, B)``:

``luma_mean``, ``luma_var``
    mean and population variance (divide by ``H * W``) of ``Y``;
``value_mean``, ``value_var``
    mean and population variance of the HSV value ``V``;
``dark_mean``
    mean of the dark channel ``D`` (per pixel, no spatial minimum filter);
``saturation_mean``
    mean HSV saturation ``(V - D) / V``, taken as 0 where ``V == 0``;
``grad_x_mean``, ``grad_y_mean``
    mean ``|Y[y, x+1] - Y[y, x]|`` over the ``H * (W - 1)`` horizontal pairs and mean
    ``|Y[y+1, x] - Y[y, x]|`` over the ``(H - 1) * W`` vertical pairs; 0 when there are no pairs;
``blockiness``
    8x8 blockiness of ``Y``: the mean horizontal ``|difference|`` over pairs starting at
    columns ``x % 8 == 7`` (JPEG block boundaries) divided by the mean over all other pairs.
    ``0 / 0`` is 1, a positive mean over a zero one is ``+inf``, and 1 when either set of pairs
    is empty (``W < 9``: nothing to compare).

An image with no pixels (``H == 0`` or ``W == 0``) has NaN means and variances, gradients 0 and
blockiness 1; an empty batch (``N == 0``) gives a ``0 x K`` tensor.

The Triton kernel runs one program per (image, block of rows) and reads each pixel from
memory once (the right and lower neighbours it also needs come from cache). Each program
writes float32 partial sums, which are then added in float64 in a fixed order (no atomics),
so results are deterministic run to run. Means and variances are formed from the sums in
float64; luma and value are accumulated shifted by 0.5 to limit cancellation in
``E[x^2] - E[x]^2``. Inputs (float32, float16, bfloat16) are upcast per element to float32.
"""

from __future__ import annotations

import math

import torch

from agentir.kernels import backend
from agentir.kernels._validate import FLOAT_DTYPES, check_channels, check_tensor
from agentir.kernels.backend import jit, tl
from agentir.kernels.color import YCBCR_MATRIX, YCBCR_OFFSET

__all__ = ["STATS_COLUMNS", "image_stats", "image_stats_reference"]

STATS_COLUMNS: tuple[str, ...] = (
    "luma_mean",
    "luma_var",
    "value_mean",
    "value_var",
    "dark_mean",
    "saturation_mean",
    "grad_x_mean",
    "grad_y_mean",
    "blockiness",
)

# Partial sums each kernel program writes, in this order.
_PARTS = 9  # sum(Y-s), sum((Y-s)^2), sum(V-s), sum((V-s)^2), sum(D), sum(sat), dx@edge, dx other, dy
_SHIFT = 0.5
_BLOCK = 8  # JPEG block size for the blockiness column


# --------------------------------------------------------------------------- kernel


@jit
def _image_stats_kernel(
    src_ptr,
    part_ptr,
    H,
    W,
    stride_n,
    stride_c,
    stride_h,
    stride_w,
    m00,
    m01,
    m02,
    q0,
    blocks_h,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    # One program per (image, BLOCK_H rows); it walks the full width in BLOCK_W chunks and
    # writes 9 float32 partial sums to part_ptr[pid, :].
    pid = tl.program_id(0)
    n = pid // blocks_h
    rows = (pid % blocks_h) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows[:, None] < H
    down_ok = (rows[:, None] + 1) < H
    base = src_ptr + n.to(tl.int64) * stride_n + rows[:, None] * stride_h
    acc_y = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_y2 = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_v = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_v2 = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_d = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_s = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_xe = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_xo = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    acc_dy = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    for c0 in range(0, W, BLOCK_W):
        cols = c0 + tl.arange(0, BLOCK_W)
        col_ok = cols[None, :] < W
        mask = row_ok & col_ok
        p = base + cols[None, :] * stride_w
        r = tl.load(p, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(p + stride_c, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(p + 2 * stride_c, mask=mask, other=0.0).to(tl.float32)
        y = m00 * r + m01 * g + m02 * b + q0
        v = tl.maximum(tl.maximum(r, g), b)
        d = tl.minimum(tl.minimum(r, g), b)
        ys = tl.where(mask, y - 0.5, 0.0)
        vs = tl.where(mask, v - 0.5, 0.0)
        acc_y += ys
        acc_y2 += ys * ys
        acc_v += vs
        acc_v2 += vs * vs
        acc_d += d  # masked pixels load as 0
        pos = v > 0.0
        acc_s += tl.where(pos, tl.math.div_rn(v - d, tl.where(pos, v, 1.0)), 0.0)
        # Right neighbour (same row, next column): mostly already in cache.
        rmask = row_ok & ((cols[None, :] + 1) < W)
        pr = p + stride_w
        rr = tl.load(pr, mask=rmask, other=0.0).to(tl.float32)
        gr = tl.load(pr + stride_c, mask=rmask, other=0.0).to(tl.float32)
        br = tl.load(pr + 2 * stride_c, mask=rmask, other=0.0).to(tl.float32)
        yr = m00 * rr + m01 * gr + m02 * br + q0
        dx = tl.where(rmask, tl.abs(yr - y), 0.0)
        edge = (cols[None, :] % 8) == 7
        acc_xe += tl.where(edge, dx, 0.0)
        acc_xo += tl.where(edge, 0.0, dx)
        # Lower neighbour (next row, same column).
        dmask = down_ok & col_ok
        pd = p + stride_h
        rd = tl.load(pd, mask=dmask, other=0.0).to(tl.float32)
        gd = tl.load(pd + stride_c, mask=dmask, other=0.0).to(tl.float32)
        bd = tl.load(pd + 2 * stride_c, mask=dmask, other=0.0).to(tl.float32)
        yd = m00 * rd + m01 * gd + m02 * bd + q0
        acc_dy += tl.where(dmask, tl.abs(yd - y), 0.0)
    # 9 == _PARTS and 0.5 == _SHIFT above; _finalize reads the sums in this order.
    out = part_ptr + pid.to(tl.int64) * 9
    tl.store(out + 0, tl.sum(tl.sum(acc_y, axis=1), axis=0))
    tl.store(out + 1, tl.sum(tl.sum(acc_y2, axis=1), axis=0))
    tl.store(out + 2, tl.sum(tl.sum(acc_v, axis=1), axis=0))
    tl.store(out + 3, tl.sum(tl.sum(acc_v2, axis=1), axis=0))
    tl.store(out + 4, tl.sum(tl.sum(acc_d, axis=1), axis=0))
    tl.store(out + 5, tl.sum(tl.sum(acc_s, axis=1), axis=0))
    tl.store(out + 6, tl.sum(tl.sum(acc_xe, axis=1), axis=0))
    tl.store(out + 7, tl.sum(tl.sum(acc_xo, axis=1), axis=0))
    tl.store(out + 8, tl.sum(tl.sum(acc_dy, axis=1), axis=0))


# --------------------------------------------------------------------------- launcher


def _edge_pairs(width: int) -> int:
    """Horizontal pairs per row that start at a column ``x % 8 == 7`` (x in 0..W-2)."""
    return max(0, width - 1) // _BLOCK


def _finalize(sums: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Turn float64 ``N x 9`` sums (the kernel's partial layout) into float32 ``N x K`` stats."""
    px = height * width
    cnt = float(px) if px else math.nan  # no pixels: NaN means and variances
    edge = height * _edge_pairs(width)
    other = height * max(0, width - 1) - edge
    vert = max(0, height - 1) * width
    y_m = sums[:, 0] / cnt
    v_m = sums[:, 2] / cnt
    y_var = (sums[:, 1] / cnt - y_m * y_m).clamp_min(0.0)
    v_var = (sums[:, 3] / cnt - v_m * v_m).clamp_min(0.0)
    mean_e = sums[:, 6] / max(edge, 1)
    mean_o = sums[:, 7] / max(other, 1)
    if edge == 0 or other == 0:
        block = torch.ones_like(mean_e)
    else:
        ratio = mean_e / torch.where(mean_o > 0, mean_o, torch.ones_like(mean_o))
        fallback = torch.where(mean_e > 0, torch.full_like(mean_e, math.inf), torch.ones_like(mean_e))
        block = torch.where(mean_o > 0, ratio, fallback)
    cols = [
        y_m + _SHIFT,
        y_var,
        v_m + _SHIFT,
        v_var,
        sums[:, 4] / cnt,
        sums[:, 5] / cnt,
        (sums[:, 6] + sums[:, 7]) / max(edge + other, 1),
        sums[:, 8] / max(vert, 1),
        block,
    ]
    return torch.stack(cols, dim=1).to(torch.float32)


def _stats_blocks(height: int, width: int) -> tuple[int, int]:
    # Natively 4 rows x 256 columns: about 270 programs per 1080p image (enough to fill an H100)
    # and 9 accumulators of 8 floats per thread. The interpreter gets large blocks.
    return backend.pick_blocks(height, width, kernel=_image_stats_kernel, block_h=4, block_w=256)


def _launch_image_stats(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    kernel = _image_stats_kernel
    block_h, block_w = _stats_blocks(h, w)
    blocks_h = backend.cdiv(h, block_h)
    part = torch.empty((n, blocks_h, _PARTS), dtype=torch.float32, device=x.device)
    m = YCBCR_MATRIX[0]
    with backend.launching(kernel, x.device):
        kernel[(n * blocks_h,)](
            x,
            part,
            h,
            w,
            *x.stride(),
            m[0],
            m[1],
            m[2],
            YCBCR_OFFSET[0],
            blocks_h,
            BLOCK_H=block_h,
            BLOCK_W=block_w,
            **backend.LAUNCH_OPTIONS,
        )
    # Fixed-order float64 reduction of the per-block partials: deterministic, no atomics.
    return _finalize(part.double().sum(dim=1), h, w)


# --------------------------------------------------------------------------- reference


def image_stats_reference(batch: torch.Tensor) -> torch.Tensor:
    """Pure-torch float64 specification of :func:`image_stats` on ``N x 3 x H x W`` (no validation)."""
    x = batch.double()
    n, _, h, w = x.shape
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    m = YCBCR_MATRIX[0]
    y = m[0] * r + m[1] * g + m[2] * b + YCBCR_OFFSET[0]
    v = torch.maximum(torch.maximum(r, g), b)
    d = torch.minimum(torch.minimum(r, g), b)
    sat = torch.where(v > 0, (v - d) / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    px = h * w
    cnt = float(px) if px else math.nan

    def mean(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).sum(dim=1) / cnt

    y_m, v_m = mean(y), mean(v)
    y_var = mean((y - y_m[:, None, None]) ** 2)
    v_var = mean((v - v_m[:, None, None]) ** 2)
    dx = (y[:, :, 1:] - y[:, :, :-1]).abs()
    dy = (y[:, 1:, :] - y[:, :-1, :]).abs()
    is_edge = torch.arange(max(0, w - 1), device=x.device) % _BLOCK == _BLOCK - 1
    de, do = dx[:, :, is_edge].flatten(1), dx[:, :, ~is_edge].flatten(1)
    grad_x = dx.flatten(1).sum(dim=1) / max(h * max(0, w - 1), 1)
    grad_y = dy.flatten(1).sum(dim=1) / max(max(0, h - 1) * w, 1)
    if de.shape[1] == 0 or do.shape[1] == 0:
        block = torch.ones(n, dtype=x.dtype, device=x.device)
    else:
        me, mo = de.mean(dim=1), do.mean(dim=1)
        block = torch.where(
            mo > 0,
            me / torch.where(mo > 0, mo, torch.ones_like(mo)),
            torch.where(me > 0, torch.full_like(me, math.inf), torch.ones_like(me)),
        )
    cols = [y_m, y_var, v_m, v_var, mean(d), mean(sat), grad_x, grad_y, block]
    return torch.stack(cols, dim=1).to(torch.float32)


# --------------------------------------------------------------------------- public op

_LAYOUT = "N x 3 x H x W or 3 x H x W"


def image_stats(batch: torch.Tensor) -> torch.Tensor:
    """Compute the per-image perception statistics of :data:`STATS_COLUMNS` in one pass.

    Args:
        batch: float32, float16 or bfloat16 RGB in [0, 1], ``N x 3 x H x W`` (or ``3 x H x W``);
            any strides.

    Returns:
        float32 ``N x K`` on the input's device (``K`` for a ``3 x H x W`` input), one column
        per name in :data:`STATS_COLUMNS`; see the module doc for the definitions.

    Raises:
        KernelInputError: (a ``ValueError``) wrong dtype, rank or channel count.
        KernelBackendError: ``AGENTIR_KERNELS=triton`` cannot be honoured for this tensor.
    """
    op = "image_stats"
    check_tensor(op, "batch", batch, dtypes=FLOAT_DTYPES, ndims=(3, 4), layout=_LAYOUT)
    check_channels(op, "batch", batch, -3, _LAYOUT)
    squeeze = batch.ndim == 3
    x = batch.unsqueeze(0) if squeeze else batch
    n, _, h, w = x.shape
    if x.numel() == 0:
        # No images, or images without pixels: nothing to read, the definitions give the rows.
        out = _finalize(torch.zeros((n, _PARTS), dtype=torch.float64, device=x.device), h, w)
    elif backend.use_triton(x, kernel=_image_stats_kernel, op=op):
        out = _launch_image_stats(x)
    else:
        out = image_stats_reference(x)
    return out[0] if squeeze else out
