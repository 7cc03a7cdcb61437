"""Split an image into overlapping tiles and blend processed tiles back into one image.

The Executor runs tools on fixed-size tiles so large images fit in memory and tiles from
several jobs share one batch. :func:`extract_tiles` cuts the tiles; :func:`blend_tiles`
puts them back with a weighted average, so seams between tiles fade instead of showing.

Tiling rule (per axis, image length ``L``, tile ``t``, overlap ``o``): the tile is clipped to
``min(t, L)``; tiles start every ``t - o`` pixels from 0, and the last tile is moved back to
end exactly at the border, so every tile lies inside the image and every pixel is covered.
Neighbouring tiles overlap by at least ``o`` pixels.

Blending weights (``weights="feather"``): a separable linear ramp, per axis
``w(i) = min(i + 1, t - i, o + 1) / (o + 1)`` for ``i`` in ``0..t-1``, i.e. rising over the first
``o`` pixels of the tile, 1 in the middle, falling over the last ``o``. Two tiles overlapping by
exactly ``o`` pixels therefore cross-fade with weights summing to 1. Weights are never zero,
so each output pixel is ``sum(w * tile) / sum(w)`` over the tiles covering it, and blending
unmodified tiles reproduces the image up to float rounding. ``weights="uniform"`` gives every
pixel weight 1 (a plain average; the same as ``overlap=0``). Pixels no tile covers are 0, and
tile pixels that fall outside the output are dropped.

The Triton kernel gathers: one program per (channel, output block) loops over the tiles in
order, skips those that miss its block, and accumulates ``w * v`` and ``w`` in float32 before
dividing, all in one pass with no atomics (deterministic). Its per-block cost grows with the
number of tiles, which is fine up to a few thousand tiles per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from agentir.kernels import backend
from agentir.kernels._validate import FLOAT_DTYPES, check_int, check_tensor
from agentir.kernels.backend import KernelInputError, jit, tl

__all__ = [
    "WEIGHTS",
    "blend_tiles",
    "blend_tiles_reference",
    "extract_tiles",
    "feather_ramp",
    "tile_starts",
]

WEIGHTS = ("feather", "uniform")
IntPair = int | Sequence[int]


# --------------------------------------------------------------------------- kernel


@jit
def _blend_tiles_kernel(
    tiles_ptr,
    pos_ptr,
    out_ptr,
    T,
    H,
    W,
    TH,
    TW,
    stride_t,
    stride_c,
    stride_h,
    stride_w,
    ramp_y,
    ramp_x,
    inv_ramp_y,
    inv_ramp_x,
    tiles_w,
    tiles_per_plane,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid = tl.program_id(0)
    c = pid // tiles_per_plane
    block = pid % tiles_per_plane
    row0 = (block // tiles_w) * BLOCK_H
    col0 = (block % tiles_w) * BLOCK_W
    rows = row0 + tl.arange(0, BLOCK_H)
    cols = col0 + tl.arange(0, BLOCK_W)
    inside = (rows[:, None] < H) & (cols[None, :] < W)
    num = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    den = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    # Advancing a pointer (64-bit) instead of computing t * stride_t avoids int32 overflow.
    tile_ptr = tiles_ptr + c * stride_c
    for t in range(0, T):
        ty = tl.load(pos_ptr + 2 * t)
        tx = tl.load(pos_ptr + 2 * t + 1)
        # Skip tiles that miss this block entirely (the common case for large images).
        if (ty < row0 + BLOCK_H) & (ty + TH > row0) & (tx < col0 + BLOCK_W) & (tx + TW > col0):
            ly = rows - ty
            lx = cols - tx
            # Integer ramps are exact; one float32 multiply by 1 / ramp, as in feather_ramp.
            wy = tl.minimum(tl.minimum(ly + 1, TH - ly), ramp_y).to(tl.float32) * inv_ramp_y
            wx = tl.minimum(tl.minimum(lx + 1, TW - lx), ramp_x).to(tl.float32) * inv_ramp_x
            valid = inside & ((ly >= 0) & (ly < TH))[:, None] & ((lx >= 0) & (lx < TW))[None, :]
            src = tile_ptr + ly[:, None] * stride_h + lx[None, :] * stride_w
            v = tl.load(src, mask=valid, other=0.0).to(tl.float32)
            w = tl.where(valid, wy[:, None] * wx[None, :], 0.0)
            num += w * v
            den += w
        tile_ptr += stride_t
    # div_rn: IEEE division, as torch; plain "/" compiles to the approximate div.full.f32.
    res = tl.where(den > 0.0, tl.math.div_rn(num, tl.where(den > 0.0, den, 1.0)), 0.0)
    dst = out_ptr + c.to(tl.int64) * H * W + rows[:, None] * W + cols[None, :]
    tl.store(dst, res.to(out_ptr.dtype.element_ty), mask=inside)


# --------------------------------------------------------------------------- launcher


def _launch_blend_tiles(tiles: torch.Tensor, positions: torch.Tensor, out_hw: tuple[int, int], ramp: tuple[int, int]) -> torch.Tensor:
    t, c, th, tw = tiles.shape
    h, w = out_hw
    out = torch.empty((c, h, w), dtype=tiles.dtype, device=tiles.device)
    pos = positions.to(device=tiles.device, dtype=torch.int64).contiguous()
    kernel = _blend_tiles_kernel
    g = backend.image_grid(c, h, w, kernel=kernel)
    with backend.launching(kernel, tiles.device):
        kernel[g.grid](
            tiles,
            pos,
            out,
            t,
            h,
            w,
            th,
            tw,
            *tiles.stride(),
            ramp[0],
            ramp[1],
            1.0 / ramp[0],
            1.0 / ramp[1],
            g.tiles_w,
            g.tiles_per_image,
            BLOCK_H=g.block_h,
            BLOCK_W=g.block_w,
            **backend.LAUNCH_OPTIONS,
        )
    return out


# --------------------------------------------------------------------------- references


def feather_ramp(length: int, overlap: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """1-D feather weights ``min(i + 1, length - i, overlap + 1) / (overlap + 1)``.

    Computed as an exact integer ``min`` times ``1 / (overlap + 1)`` rounded to ``dtype``: the
    same arithmetic as the kernel.
    """
    i = torch.arange(length, device=device)
    ramp = torch.minimum(torch.minimum(i + 1, length - i), torch.tensor(overlap + 1, device=device))
    return ramp.to(dtype) * torch.tensor(1.0 / (overlap + 1), dtype=dtype, device=device)


def blend_tiles_reference(
    tiles: torch.Tensor,
    positions: torch.Tensor,
    out_hw: tuple[int, int],
    *,
    overlap: IntPair,
    weights: str = "feather",
) -> torch.Tensor:
    """Pure-torch specification of :func:`blend_tiles` (no validation).

    Accumulates tile by tile in order, in float32 (float64 for float64 tiles), then divides.
    """
    oy, ox = _pair(overlap)
    if weights == "uniform":
        oy = ox = 0
    _t, c, th, tw = tiles.shape
    h, w = out_hw
    compute = torch.float64 if tiles.dtype == torch.float64 else torch.float32
    num = torch.zeros((c, h, w), dtype=compute, device=tiles.device)
    den = torch.zeros((h, w), dtype=compute, device=tiles.device)
    weight = feather_ramp(th, oy, dtype=compute, device=tiles.device)[:, None] * feather_ramp(tw, ox, dtype=compute, device=tiles.device)[None, :]
    for k, (y, x) in enumerate(positions.tolist()):
        y0, y1, x0, x1 = max(y, 0), min(y + th, h), max(x, 0), min(x + tw, w)
        if y0 >= y1 or x0 >= x1:
            continue
        wk = weight[y0 - y : y1 - y, x0 - x : x1 - x]
        num[:, y0:y1, x0:x1] += wk * tiles[k, :, y0 - y : y1 - y, x0 - x : x1 - x].to(compute)
        den[y0:y1, x0:x1] += wk
    covered = den > 0
    out = torch.where(covered, num / torch.where(covered, den, torch.ones_like(den)), 0.0)
    return out.to(tiles.dtype)


# --------------------------------------------------------------------------- public ops


def _pair(value: IntPair) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    n = int(cast(int, value))  # neither tuple nor list: one size for both sides
    return n, n


def _check_pair(op: str, name: str, value: object, *, minimum: int) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise KernelInputError(op, f"{name} must be an int or a (height, width) pair, got {value!r}")
        return (
            check_int(op, f"{name}[0]", value[0], minimum=minimum),
            check_int(op, f"{name}[1]", value[1], minimum=minimum),
        )
    v = check_int(op, name, value, minimum=minimum)
    return v, v


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis (see the module doc for the rule).

    ``tile`` is clipped to ``length``; returns ``[]`` for an empty axis.
    """
    if length <= 0:
        return []
    tile = min(tile, length)
    stride = max(tile - overlap, 1)
    count = backend.cdiv(length - tile, stride) + 1
    return [min(i * stride, length - tile) for i in range(count)]


def extract_tiles(image: torch.Tensor, tile: IntPair, overlap: IntPair = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``image`` (``C x H x W``) into overlapping tiles covering every pixel.

    Args:
        image: any float dtype or uint8, ``C x H x W``, any strides.
        tile: tile size, an int or ``(height, width)``; clipped to the image size.
        overlap: minimum overlap of neighbouring tiles in pixels, an int or a pair; must be
            smaller than ``tile``.

    Returns:
        ``(tiles, positions)``: tiles ``T x C x th x tw`` (a new contiguous tensor, row-major
        tile order) and positions ``T x 2`` int64 ``(y, x)`` of each tile's top-left pixel,
        both on the image's device. Pass them (after processing the tiles) to
        :func:`blend_tiles` with the same ``overlap``.

    Raises:
        KernelInputError: (a ``ValueError``) wrong dtype or rank, non-positive tile, or an
            overlap that is negative or not smaller than the tile.
    """
    op = "extract_tiles"
    check_tensor(op, "image", image, dtypes=FLOAT_DTYPES + (torch.float64, torch.uint8), ndims=(3,), layout="C x H x W")
    th, tw = _check_pair(op, "tile", tile, minimum=1)
    oy, ox = _check_pair(op, "overlap", overlap, minimum=0)
    if oy >= th or ox >= tw:
        raise KernelInputError(op, f"overlap {(oy, ox)} must be smaller than tile {(th, tw)}; use a larger tile or a smaller overlap")
    c, h, w = image.shape
    ys, xs = tile_starts(h, th, oy), tile_starts(w, tw, ox)
    th, tw = min(th, h), min(tw, w)
    device = image.device
    if not ys or not xs:
        return (
            torch.empty((0, c, th, tw), dtype=image.dtype, device=device),
            torch.empty((0, 2), dtype=torch.int64, device=device),
        )
    y0 = torch.tensor(ys, dtype=torch.int64, device=device)
    x0 = torch.tensor(xs, dtype=torch.int64, device=device)
    rows = y0[:, None] + torch.arange(th, device=device)  # ny x th
    cols = x0[:, None] + torch.arange(tw, device=device)  # nx x tw
    # One gather: C x ny x nx x th x tw, then tiles first.
    patches = image[:, rows[:, None, :, None], cols[None, :, None, :]]
    tiles = patches.permute(1, 2, 0, 3, 4).reshape(len(ys) * len(xs), c, th, tw).contiguous()
    positions = torch.stack(torch.meshgrid(y0, x0, indexing="ij"), dim=-1).reshape(-1, 2)
    return tiles, positions


def blend_tiles(
    tiles: torch.Tensor,
    positions: torch.Tensor,
    out_hw: Sequence[int],
    *,
    overlap: IntPair,
    weights: str = "feather",
) -> torch.Tensor:
    """Blend overlapping tiles into one ``C x H x W`` image by weighted averaging.

    Args:
        tiles: float16, bfloat16 or float32 ``T x C x th x tw``; any strides.
        positions: integer ``T x 2`` top-left ``(y, x)`` of each tile in the output; may lie
            partly or wholly outside it (those pixels are dropped). Moved to the tiles' device.
        out_hw: output ``(H, W)``.
        overlap: the ramp length of the feather weights, an int or ``(y, x)`` pair; pass the
            overlap given to :func:`extract_tiles`.
        weights: ``"feather"`` (linear ramps, see the module doc) or ``"uniform"``.

    Returns:
        A new contiguous ``C x H x W`` tensor with the tiles' dtype; pixels no tile covers
        are 0.

    Raises:
        KernelInputError: (a ``ValueError``) wrong dtype or shape, positions not matching the
            tiles, negative sizes or overlap, or unknown weights.
        KernelBackendError: ``AGENTIR_KERNELS=triton`` cannot be honoured for these tensors.
    """
    op = "blend_tiles"
    check_tensor(op, "tiles", tiles, dtypes=FLOAT_DTYPES, ndims=(4,), layout="T x C x th x tw")
    if not isinstance(positions, torch.Tensor):
        raise KernelInputError(op, f"positions must be an integer torch.Tensor T x 2, got {type(positions).__name__}")
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise KernelInputError(op, f"positions must have an integer dtype, got {str(positions.dtype).replace('torch.', '')}")
    if positions.shape != (tiles.shape[0], 2):
        raise KernelInputError(op, f"positions must be T x 2 with T = {tiles.shape[0]} (one (y, x) per tile), got shape {tuple(positions.shape)}")
    if not isinstance(out_hw, (tuple, list, torch.Size)) or len(out_hw) != 2:
        raise KernelInputError(op, f"out_hw must be a (height, width) pair, got {out_hw!r}")
    h = check_int(op, "out_hw[0]", out_hw[0], minimum=0)
    w = check_int(op, "out_hw[1]", out_hw[1], minimum=0)
    oy, ox = _check_pair(op, "overlap", overlap, minimum=0)
    if weights not in WEIGHTS:
        raise KernelInputError(op, f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights == "uniform":
        oy = ox = 0
    c = tiles.shape[1]
    if tiles.numel() == 0 or h == 0 or w == 0:
        return torch.zeros((c, h, w), dtype=tiles.dtype, device=tiles.device)
    if backend.use_triton(tiles, kernel=_blend_tiles_kernel, op=op):
        return _launch_blend_tiles(tiles, positions, (h, w), (oy + 1, ox + 1))
    return blend_tiles_reference(tiles, positions.to(tiles.device), (h, w), overlap=(oy, ox), weights="feather")
