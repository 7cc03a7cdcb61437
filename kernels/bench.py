"""Time each Triton kernel against its torch reference and a plain torch-eager expression.

``run_kernel_bench`` measures, in one run on one device, for each op and image size:

* ``triton``: the op's launcher (the Triton kernel), only on CUDA with natively compiled
  kernels; the interpreter is a correctness tool, so it is never timed;
* ``reference``: the op's pure-torch reference (the spec), on the same device;
* ``eager``: what one would write without this package (for example
  ``x.permute(0, 3, 1, 2).float().div(255)``), on the same device.

Each entry reports milliseconds (median of ``repeats``), effective bandwidth in GB/s (the
bytes an ideal implementation must read and write, divided by the time) and the speed-up
ratios ``reference_ms / triton_ms`` and ``eager_ms / triton_ms``. Run ``python -m agentir.kernels.bench``
for a table. Benchmarks never assert on time; tests only check the report's shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from agentir.kernels import backend, color, convert, stats, tiles

__all__ = ["main", "run_kernel_bench"]

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((540, 960), (1080, 1920), (2160, 3840))


def _time_ms(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call (compiles, caches)."""
    fn()
    samples: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _eager_blend(t: torch.Tensor, pos: torch.Tensor, hw: tuple[int, int], overlap: int) -> torch.Tensor:
    """Vectorised torch blend: weighted ``index_add_`` of all tiles, then a division."""
    n, c, th, tw = t.shape
    h, w = hw
    wgt = tiles.feather_ramp(th, overlap, device=t.device)[:, None] * tiles.feather_ramp(tw, overlap, device=t.device)[None, :]
    iy = pos[:, 0, None, None] + torch.arange(th, device=t.device)[None, :, None]
    ix = pos[:, 1, None, None] + torch.arange(tw, device=t.device)[None, None, :]
    flat = (iy * w + ix).reshape(-1)
    num = torch.zeros((c, h * w), dtype=torch.float32, device=t.device)
    num.index_add_(1, flat, (t * wgt).permute(1, 0, 2, 3).reshape(c, -1))
    den = torch.zeros(h * w, dtype=torch.float32, device=t.device)
    den.index_add_(0, flat, wgt.expand(n, th, tw).reshape(-1))
    return (num / den).reshape(c, h, w)


def _eager_stats(f: torch.Tensor, m: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """The statistics of :func:`agentir.kernels.stats.image_stats` as unfused float32 torch ops."""
    y = torch.einsum("j,njhw->nhw", m[0], f) + off[0, 0, 0]
    v, d = f.amax(dim=1), f.amin(dim=1)
    sat = torch.where(v > 0, (v - d) / v.clamp_min(1e-12), torch.zeros_like(v))
    dx = (y[:, :, 1:] - y[:, :, :-1]).abs()
    dy = (y[:, 1:] - y[:, :-1]).abs()
    edge = torch.arange(dx.shape[-1], device=f.device) % 8 == 7
    block = dx[..., edge].mean(dim=(1, 2)) / dx[..., ~edge].mean(dim=(1, 2))
    return torch.stack(
        [
            y.mean((1, 2)),
            y.var((1, 2), unbiased=False),
            v.mean((1, 2)),
            v.var((1, 2), unbiased=False),
            d.mean((1, 2)),
            sat.mean((1, 2)),
            dx.mean((1, 2)),
            dy.mean((1, 2)),
            block,
        ],
        dim=1,
    )


def _cases(n: int, h: int, w: int, device: torch.device, tile: int, overlap: int) -> list[dict[str, Any]]:
    """(op, bytes, triton launcher, reference, eager) per op for one image size."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    u8 = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=gen).to(device)
    f = torch.rand((n, 3, h, w), generator=gen).to(device)
    m = torch.tensor(color.YCBCR_MATRIX, device=device)
    off = torch.tensor(color.YCBCR_OFFSET, device=device)[:, None, None]
    img = f[0]
    tl_, pos = tiles.extract_tiles(img, tile, overlap)
    ramp = (overlap + 1, overlap + 1)
    px = n * h * w
    return [
        dict(
            op="to_float_nchw",
            bytes=px * 3 * (1 + 4),
            triton=lambda: convert._launch_to_float_nchw(u8, convert.DEFAULT_SCALE, torch.float32),
            reference=lambda: convert.to_float_nchw_reference(u8),
            eager=lambda: u8.permute(0, 3, 1, 2).float().div(255.0).contiguous(),
        ),
        dict(
            op="to_uint8_nhwc",
            bytes=px * 3 * (4 + 1),
            triton=lambda: convert._launch_to_uint8_nhwc(f),
            reference=lambda: convert.to_uint8_nhwc_reference(f),
            eager=lambda: f.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous(),
        ),
        dict(
            op="rgb_to_ycbcr",
            bytes=px * 3 * 8,
            triton=lambda: color._launch_color_affine(f, color.YCBCR_MATRIX, color._ZERO, color.YCBCR_OFFSET),
            reference=lambda: color.rgb_to_ycbcr_reference(f),
            eager=lambda: torch.einsum("ij,njhw->nihw", m, f) + off,
        ),
        dict(
            op="rgb_to_value",
            bytes=px * 4 * (3 + 1),
            triton=lambda: color._launch_rgb_to_value(f),
            reference=lambda: color.rgb_to_value_reference(f),
            eager=lambda: f.amax(dim=1, keepdim=True),
        ),
        dict(
            op="image_stats",
            bytes=px * 3 * 4,  # the input read once; the N x 9 output is negligible
            triton=lambda: stats._launch_image_stats(f),
            reference=lambda: stats.image_stats_reference(f),
            eager=lambda: _eager_stats(f, m, off),
        ),
        dict(
            op=f"blend_tiles[{tile}/{overlap}]",
            bytes=tl_.numel() * 4 + img.numel() * 4,
            triton=lambda: tiles._launch_blend_tiles(tl_, pos, (h, w), ramp),
            reference=lambda: tiles.blend_tiles_reference(tl_, pos, (h, w), overlap=overlap),
            eager=lambda: _eager_blend(tl_, pos, (h, w), overlap),
        ),
    ]


def run_kernel_bench(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    repeats: int = 20,
    *,
    batch: int = 1,
    tile: int = 512,
    overlap: int = 32,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Benchmark every kernel at each ``(height, width)`` in ``sizes``; return a report dict.

    Args:
        sizes: image sizes to time.
        repeats: timed calls per measurement (median reported); one warm-up call precedes.
        batch: images per batch for the per-pixel ops (blending uses one image).
        tile, overlap: tiling used for the ``blend_tiles`` case.
        device: where to run; default CUDA when available, else CPU.

    Returns:
        ``{"device", "triton_native", "note", "backend", "results": [...]}``; each result has
        ``op``, ``size``, ``batch``, ``bytes``, ``{triton,reference,eager}_ms`` and ``_gbps``,
        ``triton_vs_reference`` and ``triton_vs_eager`` (speed-ups; ``None`` where Triton
        was not timed).

    Raises:
        ValueError: ``repeats`` or ``batch`` below 1, or an empty size.
    """
    if repeats < 1 or batch < 1:
        raise ValueError(f"repeats and batch must be >= 1, got repeats={repeats}, batch={batch}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    native = dev.type == "cuda" and backend.HAS_TRITON and not backend.is_interpreted(convert._to_float_nchw_kernel)
    if native:
        note = "Triton kernels compiled natively and timed against the torch reference and eager."
        name = torch.cuda.get_device_name(dev)
    else:
        note = (
            f"Triton path not run natively on {dev.type} (no CUDA, or kernels built for the "
            "interpreter, which is not worth timing); only the torch reference and torch eager "
            "were timed."
        )
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    results: list[dict[str, Any]] = []
    for h, w in sizes:
        if h < 1 or w < 1:
            raise ValueError(f"sizes must be positive (height, width) pairs, got {(h, w)}")
        for case in _cases(batch, h, w, dev, tile, overlap):
            gb = case["bytes"] / 1e9
            entry: dict[str, Any] = {"op": case["op"], "size": [h, w], "batch": batch, "bytes": case["bytes"]}
            for which in ("triton", "reference", "eager"):
                ms = _time_ms(case[which], repeats, dev) if (which != "triton" or native) else None
                entry[f"{which}_ms"] = ms
                entry[f"{which}_gbps"] = gb / (ms / 1e3) if ms else None
            t = entry["triton_ms"]
            entry["triton_vs_reference"] = entry["reference_ms"] / t if t else None
            entry["triton_vs_eager"] = entry["eager_ms"] / t if t else None
            results.append(entry)
    return {
        "device": name,
        "triton_native": native,
        "note": note,
        "backend": backend.describe(),
        "results": results,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m agentir.kernels.bench [--sizes 1080x1920 ...] [--repeats N] [--json]``."""
    p = argparse.ArgumentParser(prog="python -m agentir.kernels.bench", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=[f"{h}x{w}" for h, w in DEFAULT_SIZES])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    # "HxW" pairs; a malformed size is refused by run_kernel_bench unpacking it, as before.
    sizes = cast(list[tuple[int, int]], [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes])
    report = run_kernel_bench(sizes, args.repeats, batch=args.batch)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"device: {report['device']}\n{report['note']}")
    print(f"{'op':<22}{'size':>11}{'triton ms':>11}{'GB/s':>8}{'ref ms':>10}{'GB/s':>8}{'eager ms':>10}{'GB/s':>8}{'x ref':>7}{'x eager':>8}")
    for r in report["results"]:
        print(
            f"{r['op']:<22}{r['size'][0]:>5}x{r['size'][1]:<5}"
            f"{_fmt(r['triton_ms'], '.3f'):>11}{_fmt(r['triton_gbps'], '.1f'):>8}"
            f"{_fmt(r['reference_ms'], '.3f'):>10}{_fmt(r['reference_gbps'], '.1f'):>8}"
            f"{_fmt(r['eager_ms'], '.3f'):>10}{_fmt(r['eager_gbps'], '.1f'):>8}"
            f"{_fmt(r['triton_vs_reference'], '.2f'):>7}{_fmt(r['triton_vs_eager'], '.2f'):>8}"
        )


if __name__ == "__main__":
    main()
