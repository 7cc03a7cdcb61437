"""``agentir bench tools DATA``: every tool's PSNR / SSIM gain per degradation and severity level.

``agentir bench tools DATA [--tools a,b] [--degradations noise,jpeg] [--limit N] [--out DIR]
[--plugins FILE] [--threads N] [-q]`` (plug-ins of ``$AGENTIR_PLUGINS`` are measured too)

``DATA`` is a *levels* benchmark (single degradations at several severity levels)::

    agentir degrade CLEAN OUT --levels low,medium,high,very_high --per-combo 10

For each image of a degradation, every tool registered for that degradation (manual-tagged ones
and plug-ins included: ``tools_for(d, include_manual=True)``) restores the degraded input, and
the output is scored against the clean reference (:func:`agentir.toolbox.metrics.score`). The *gain* is
that score minus the input's own score; for ``low_resolution`` the input is scored after x4
bicubic upscaling (as ``score`` does), so the gain is over bicubic. Time is wall-clock seconds
of the tool call per megapixel of *output*, on ``--threads`` threads (default 1, so that tools
compare), after one warm-up call per tool on a small crop (model loading and first-call
compilation are not counted).

Writes ``--out`` (default ``DATA/bench/tools``): ``tools.json`` (every row, the per-tool
``cost_per_mp`` table a planner can read, the command and the benchmark's hash) and
``tools.md`` (the Markdown table for the README), and prints the table.

Exit codes: 0 done; 1 a tool failed on some images (one line each on stderr; the rest scored);
2 usage error (missing or non-levels benchmark, unknown tool or degradation, bad plug-in file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentir.bench.runner import BenchError, BenchItemError, item_id, load_pair, open_benchmark
from agentir.imageio import write_text_atomic
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS

__all__ = [
    "bench_tools",
    "build_parser",
    "format_markdown",
    "main_bench_tools",
    "read_costs",
    "select_tools",
    "write_results",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_WARMUP_SIDE = 64
#: ``tools.json`` layout version.
RESULTS_VERSION = 1


def _split(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    return [p.strip() for t in parts for p in t.split(",") if p.strip()]


def select_tools(tools: Sequence[str] | None, degradations: Sequence[str] | None) -> dict[str, list[str]]:
    """Degradation -> tool names to measure, in registration order.

    With neither argument: every degradation, every tool (manual and plug-ins included). With
    ``tools``: only those, and (unless ``degradations`` is given) only their degradations.

    Raises:
        UnknownNameError: an unknown tool (with close matches).
        BenchError: an unknown degradation, or a named tool outside the named degradations.
    """
    import agentir.toolbox.tools  # noqa: F401 - registers the built-in tools
    from agentir.toolbox.base import TOOL_INFO, TOOLS, tools_for
    from agentir.toolbox.registry import UnknownNameError

    wanted = list(dict.fromkeys(tools or []))
    for name in wanted:
        if name not in TOOLS:
            raise UnknownNameError("tool", name, TOOLS.names())
    if degradations:
        degs = list(dict.fromkeys(degradations))
        for d in degs:
            if d not in DEGRADATIONS:
                import difflib

                close = difflib.get_close_matches(d, DEGRADATIONS, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(DEGRADATIONS)}"
                raise BenchError(f"unknown degradation {d!r} in --degradations; {hint}")
    else:
        degs = [d for d in DEGRADATIONS if not wanted or any(TOOL_INFO[n].degradation == d for n in wanted)]
    outside = [n for n in wanted if TOOL_INFO[n].degradation not in degs]
    if outside:
        raise BenchError(f"tool {outside[0]!r} treats {TOOL_INFO[outside[0]].degradation}, which is not in --degradations; add it or drop the tool")
    out: dict[str, list[str]] = {}
    for d in degs:
        names = [n for n in tools_for(d, include_manual=True) if not wanted or n in wanted]
        if names:
            out[d] = names
    return out


def _check_levels_manifest(manifest: Mapping[str, Any], data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    items = [it for it in manifest["items"] if it.get("group") == "single" and it.get("level")]
    if manifest.get("mode") != "levels" or not items:
        raise BenchError(
            f"{data_dir} is a {manifest.get('mode', 'combinations')!r} benchmark without single-degradation levels; "
            f"build one with `agentir degrade CLEAN_DIR OUT --levels low,medium,high,very_high`"
        )
    return items


def _to_tensor(rgb: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _to_rgb(t) -> np.ndarray:
    return np.ascontiguousarray(t[0].detach().to("cpu").float().clamp(0, 1).permute(1, 2, 0).numpy(), dtype=np.float64)


def _finite(x: float) -> float:
    """PSNR of identical images is inf; JSON wants finite numbers."""
    return 100.0 if math.isinf(x) else float(x)


def bench_tools(
    data_dir: str | os.PathLike[str],
    *,
    tools: Sequence[str] | None = None,
    degradations: Sequence[str] | None = None,
    limit: int | None = None,
    progress: bool = True,
    on_error: Any = None,
) -> dict[str, Any]:
    """Measure the selected tools on a levels benchmark; returns the results (see ``tools.json``).

    Args:
        data_dir: a benchmark folder written by ``agentir degrade ... --levels ...``.
        tools / degradations: the selection (:func:`select_tools`).
        limit: at most this many images per (degradation, level), the first ones.
        progress: show a tqdm bar.
        on_error: called with a one-line message for each (tool, image) that failed.

    Returns:
        ``{"version", "data_dir", "manifest_sha256", "levels", "rows": [...], "cost_per_mp":
        {tool: s/MP}, "tools": {tool: {...metadata, "cost_per_mp", "n"}}, "errors": [...]}``;
        each row: ``degradation, level, tool, kind, n, psnr_in, ssim_in, psnr, ssim,
        psnr_gain, ssim_gain, min_psnr_gain, seconds, s_per_mp``.

    Raises:
        BenchError: missing / unreadable manifest, not a levels benchmark, bad selection, ``limit < 1``,
            or no image left to measure.
    """
    import torch
    from tqdm import tqdm

    from agentir.toolbox.base import TOOL_INFO, TOOLS
    from agentir.toolbox.metrics import score

    if limit is not None and limit < 1:
        raise BenchError(f"--limit must be at least 1, got {limit}")
    manifest, digest = open_benchmark(data_dir)
    items = _check_levels_manifest(manifest, data_dir)
    plan = select_tools(tools, degradations)
    root = Path(data_dir)
    chosen: list[dict[str, Any]] = []
    count: dict[tuple[str, str], int] = {}
    for it in items:
        key = (it["combo"], it["level"])
        if it["combo"] in plan and (limit is None or count.get(key, 0) < limit):
            count[key] = count.get(key, 0) + 1
            chosen.append(it)
    if not chosen:
        raise BenchError(f"{data_dir} has no images of {', '.join(plan) or 'the selected degradations'}; rebuild it with those degradations")

    # Build (load) every tool and warm it up once, so that timings leave loading out.
    for names in plan.values():
        for name in names:
            tool = TOOLS.get(name)
            with torch.inference_mode():
                tool(torch.full((1, 3, _WARMUP_SIDE, _WARMUP_SIDE), 0.5))

    acc: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    errors: list[str] = []
    total = sum(len(plan[it["combo"]]) for it in chosen)
    bar = tqdm(total=total, disable=not progress, unit="call", desc="bench tools")
    try:
        for it in chosen:
            deg, level, iid = it["combo"], it["level"], item_id(it)
            try:
                lq, hq = load_pair(root, it)
            except BenchItemError as exc:
                msg = f"{iid}: {exc}"
                errors.append(msg)
                if on_error:
                    on_error(msg)
                bar.update(len(plan[deg]))
                continue
            s_in = score(lq, hq)
            x = _to_tensor(lq)
            for name in plan[deg]:
                bar.set_postfix_str(f"{deg}/{level} {name}", refresh=False)
                tool = TOOLS.get(name)
                try:
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        y = tool(x)
                    dt = time.perf_counter() - t0
                    s_out = score(_to_rgb(y), hq)
                except Exception as exc:
                    msg = f"{iid}: tool {name!r} failed: {' '.join(str(exc).split())[:300]}"
                    errors.append(msg)
                    if on_error:
                        on_error(msg)
                    bar.update(1)
                    continue
                a = acc.setdefault((deg, level, name), {"psnr_in": [], "ssim_in": [], "psnr": [], "ssim": [], "gain": [], "sec": [], "mp": []})
                a["psnr_in"].append(_finite(s_in["psnr"]))
                a["ssim_in"].append(s_in["ssim"])
                a["psnr"].append(_finite(s_out["psnr"]))
                a["ssim"].append(s_out["ssim"])
                a["gain"].append(_finite(s_out["psnr"]) - _finite(s_in["psnr"]))
                a["sec"].append(dt)
                a["mp"].append(y.shape[-2] * y.shape[-1] / 1e6)
                bar.update(1)
    finally:
        bar.close()

    level_order = [lv for lv in LEVELS if any(it["level"] == lv for it in chosen)]
    rows: list[dict[str, Any]] = []
    for deg, names in plan.items():
        for level in level_order:
            for name in names:
                if (deg, level, name) not in acc:
                    continue
                a = acc[(deg, level, name)]
                # Gains against the input scores of the same images the tool succeeded on.
                pin, sin = float(np.mean(a["psnr_in"])), float(np.mean(a["ssim_in"]))
                rows.append(
                    {
                        "degradation": deg,
                        "level": level,
                        "tool": name,
                        "kind": TOOL_INFO[name].kind,
                        "n": len(a["psnr"]),
                        "psnr_in": pin,
                        "ssim_in": sin,
                        "psnr": float(np.mean(a["psnr"])),
                        "ssim": float(np.mean(a["ssim"])),
                        "psnr_gain": float(np.mean(a["gain"])),
                        "ssim_gain": float(np.mean(a["ssim"])) - sin,
                        "min_psnr_gain": float(np.min(a["gain"])),
                        "seconds": float(np.mean(a["sec"])),
                        "s_per_mp": float(np.sum(a["sec"]) / np.sum(a["mp"])),
                    }
                )
    tools_meta: dict[str, dict[str, Any]] = {}
    for names in plan.values():
        for name in names:
            runs = [acc[k] for k in acc if k[2] == name]
            if not runs:
                continue
            sec = sum(sum(r["sec"]) for r in runs)
            mp = sum(sum(r["mp"]) for r in runs)
            info = TOOL_INFO[name]
            tools_meta[name] = {
                "degradation": info.degradation,
                "scale": info.scale,
                "kind": info.kind,
                "tags": list(info.tags),
                "cost_per_mp": sec / mp,
                "n": sum(len(r["sec"]) for r in runs),
            }
    return {
        "format": "agentir-bench-tools",
        "version": RESULTS_VERSION,
        "data_dir": str(Path(data_dir).resolve()),
        "manifest_sha256": digest,
        "levels": level_order,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "cost_per_mp": {k: v["cost_per_mp"] for k, v in tools_meta.items()},
        "tools": tools_meta,
        "errors": errors,
    }


def format_markdown(result: Mapping[str, Any]) -> str:
    """The README table: one line per (degradation, tool), ``PSNR dB / SSIM`` gain per level, s/MP.

    Each degradation starts with an ``input`` line holding the degraded inputs' own PSNR / SSIM
    (for ``low_resolution``: after x4 bicubic upscaling).
    """
    levels = list(result["levels"])
    rows = result["rows"]
    by = {(r["degradation"], r["tool"], r["level"]): r for r in rows}
    head = "| degradation | tool | " + " | ".join(f"{lv} dB / SSIM" for lv in levels) + " | s/MP |"
    lines = [head, "|---|---|" + "---:|" * (len(levels) + 1)]
    for deg in dict.fromkeys(r["degradation"] for r in rows):
        cells = []
        for lv in levels:
            first = next((x for x in rows if x["degradation"] == deg and x["level"] == lv), None)
            cells.append(f"{first['psnr_in']:.2f} / {first['ssim_in']:.3f}" if first else "")
        lines.append(f"| {deg} | *input* | " + " | ".join(cells) + " | |")
        for tool in dict.fromkeys(r["tool"] for r in rows if r["degradation"] == deg):
            cells = []
            for lv in levels:
                r = by.get((deg, tool, lv))
                cells.append(f"{r['psnr_gain']:+.2f} / {r['ssim_gain']:+.3f}" if r else "")
            cost = result["tools"].get(tool, {}).get("cost_per_mp")
            kind = result["tools"].get(tool, {}).get("kind", "")
            label = tool + (f" ({kind})" if kind and kind != "classical" else "")
            cost_cell = f"{cost:.2f}" if cost is not None else ""
            lines.append(f"| {deg} | {label} | " + " | ".join(cells) + f" | {cost_cell} |")
    n = sorted({r["n"] for r in rows})
    lines.append("")
    lines.append(
        f"Gain over the degraded input (low_resolution: over x4 bicubic), mean of {n[0] if len(n) == 1 else f'{n[0]}-{n[-1]}'} "
        f"images per cell; s/MP: seconds per megapixel of output on {result.get('threads', 1)} CPU thread(s)."
    )
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def write_results(result: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``tools.json`` and ``tools.md`` into ``out_dir`` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pj, pm = out / "tools.json", out / "tools.md"
    write_text_atomic(pj, json.dumps(_json_safe(dict(result)), indent=1, allow_nan=False) + "\n")
    write_text_atomic(pm, format_markdown(result) + "\n")
    return pj, pm


def read_costs(path: str | os.PathLike[str]) -> dict[str, float]:
    """The measured ``cost_per_mp`` (seconds per output megapixel) per tool from a ``tools.json``.

    Raises:
        ValueError: the file is missing or is not a ``tools.json`` written by this benchmark.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read tool costs from {p} ({exc}); run `agentir bench tools DATA` to write it") from None
    if not isinstance(data, dict) or data.get("format") != "agentir-bench-tools" or not isinstance(data.get("cost_per_mp"), dict):
        raise ValueError(f"{p} is not a tools.json from `agentir bench tools`; run it to write one")
    return {str(k): float(v) for k, v in data["cost_per_mp"].items()}


def build_parser(prog: str = "agentir bench tools") -> argparse.ArgumentParser:
    """The ``agentir bench tools`` argument parser."""
    p = argparse.ArgumentParser(prog=prog, description="PSNR / SSIM gain and time per megapixel of every tool on a levels benchmark.")
    p.add_argument("data_dir", metavar="DATA", help="levels benchmark folder (agentir degrade CLEAN OUT --levels low,medium,high,very_high)")
    p.add_argument("--tools", action="append", default=None, help="comma-separated tool names (default: all of each degradation, manual and plug-ins included)")
    p.add_argument("--degradations", action="append", default=None, help="comma-separated degradations (default: all, or those of --tools)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N images per degradation and level")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default DATA/bench/tools)")
    p.add_argument(
        "--plugins", default=None, metavar="FILE", help="also measure the plug-in tools of this TOML file (those of $AGENTIR_PLUGINS are always included)"
    )
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch / OpenCV threads while timing (default 1)")
    p.add_argument(
        "--costs-out",
        default=None,
        metavar="FILE",
        help="also write the measured seconds per megapixel as a tool costs file (the shipped one: toolbox/tool_costs.json)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main_bench_tools(argv: Sequence[str]) -> int:
    """Entry point of ``agentir bench tools`` (see the module docstring); returns the exit code."""
    import cv2
    import torch

    from agentir.settings import Settings
    from agentir.toolbox.plugins import PluginError, ensure_plugins
    from agentir.toolbox.registry import UnknownNameError

    args = build_parser().parse_args(list(argv))
    out = args.out or str(Path(args.data_dir) / "bench" / "tools")
    if args.threads < 1:
        _err(f"error: --threads must be at least 1, got {args.threads}")
        return EXIT_USAGE
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    try:
        for path in Settings.from_env().plugins:
            ensure_plugins(path, eager=True)
        if args.plugins:
            ensure_plugins(args.plugins, eager=True)
        result = bench_tools(
            args.data_dir,
            tools=_split(args.tools),
            degradations=_split(args.degradations),
            limit=args.limit,
            progress=not args.quiet,
            on_error=_err,
        )
    except (BenchError, UnknownNameError, PluginError) as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    result["command"] = "agentir bench tools " + " ".join(shlex.quote(a) for a in argv)
    try:
        pj, pm = write_results(result, out)
        if args.costs_out:
            from agentir.toolbox.costs import costs_document

            write_text_atomic(
                args.costs_out, json.dumps(costs_document(result["cost_per_mp"], command=result["command"], threads=args.threads), indent=1) + "\n"
            )
    except OSError as exc:
        _err(f"error: cannot write results to {out}: {exc}")
        return EXIT_FAILED
    print(format_markdown(result), flush=True)
    _err(f"results in {pj} and {pm}")
    if result["errors"]:
        _err(f"{len(result['errors'])} tool calls or images failed (listed above and in {pj})")
        return EXIT_FAILED
    return EXIT_OK
