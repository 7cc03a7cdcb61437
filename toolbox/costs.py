"""Measured tool costs the planner can read: seconds per output megapixel on one CPU thread.

``toolbox/tool_costs.json`` ships with the repo, written by ``agentir bench tools DATA
--costs-out toolbox/tool_costs.json`` (the README's tool table comes from the same run). Tools
without a measurement (a new plug-in) have no entry: :func:`tool_cost` returns ``None``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["COSTS_FILE", "FORMAT", "MEMORY_FILE", "UNMEASURED_BYTES_PER_PIXEL", "affordable", "bytes_per_pixel", "costs_document", "load_costs", "tool_cost"]

FORMAT = "agentir-tool-costs"
COSTS_FILE = Path(__file__).with_name("tool_costs.json")


def costs_document(seconds_per_mp: Mapping[str, float], *, command: str, threads: int) -> dict:
    """The JSON object :func:`load_costs` reads."""
    return {
        "format": FORMAT,
        "version": 1,
        "command": command,
        "threads": int(threads),
        "seconds_per_mp": {k: round(float(v), 4) for k, v in sorted(seconds_per_mp.items())},
    }


def load_costs(path: str | os.PathLike[str] = COSTS_FILE) -> dict[str, float]:
    """``{tool: seconds per megapixel}``; an absent file is an empty table.

    Raises:
        ValueError: the file exists but is not a costs file (names it and the command that writes one).
    """
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"tool costs file {p} cannot be read ({exc}); rewrite it with `agentir bench tools DATA --costs-out {p}`") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("seconds_per_mp"), dict):
        raise ValueError(f"{p} is not an agentir tool costs file; rewrite it with `agentir bench tools DATA --costs-out {p}`")
    return {str(k): float(v) for k, v in obj["seconds_per_mp"].items()}


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, float]:
    return load_costs(COSTS_FILE)


def tool_cost(name: str) -> float | None:
    """Measured seconds per output megapixel of ``name`` (shipped table), or None when unmeasured."""
    return _shipped().get(name)


def affordable(tools: list[str], max_cost: float | None) -> list[str]:
    """``tools`` without those measured slower than ``max_cost`` seconds per megapixel.

    Unmeasured tools (plug-ins) stay. When every tool is too slow, the cheapest one stays, so a
    subtask never loses all its tools to a speed limit. ``None`` keeps every tool.
    """
    if max_cost is None:
        return list(tools)
    kept = [t for t in tools if (c := tool_cost(t)) is None or c <= max_cost]
    if kept or not tools:
        return kept
    return [min(tools, key=lambda t: tool_cost(t) or 0.0)]


#: Measured peak bytes per pixel of the tools that must see the whole image
#: (``python scripts/measure_tool_memory.py``); the Executor's memory cap reads it.
MEMORY_FILE = Path(__file__).with_name("tool_memory.json")
#: Bytes per pixel assumed for a whole-image tool with no measurement (a plug-in, a new tool).
UNMEASURED_BYTES_PER_PIXEL = 256


@functools.cache
def _memory_table() -> dict[str, int]:
    try:
        table = json.loads(MEMORY_FILE.read_text(encoding="utf-8"))["bytes_per_pixel"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {str(k): int(v) for k, v in table.items()}


def bytes_per_pixel(tool: str) -> int:
    """Peak bytes per pixel ``tool`` needs on a whole image (measured, else :data:`UNMEASURED_BYTES_PER_PIXEL`)."""
    return _memory_table().get(tool, UNMEASURED_BYTES_PER_PIXEL)
