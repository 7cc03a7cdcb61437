"""Synthetic exploration records for the knowledge and planner tests."""

from __future__ import annotations

from typing import Any

from agentir.toolbox.vocab import DEGRADATIONS, level_index


def _levels(**present: str) -> dict[str, str]:
    return {d: present.get(d, "very_low") for d in DEGRADATIONS}


def _scores(levels: dict[str, str]) -> dict[str, float]:
    return {d: float(level_index(v)) for d, v in levels.items()}


def record(rid: str, a: str, b: str, *, psnr_ab: float, psnr_ba: float, good_tool: str = "t1") -> dict[str, Any]:
    """Two tools per step; ``good_tool`` removes its degradation (perceived very_low), the other leaves it high.

    The leaf reached through the good tools scores ``psnr_ab`` (a first) or ``psnr_ba`` (b first).
    """
    nodes = []
    inp = _levels(**{a: "high", b: "high"})
    for first, then, final in ((a, b, psnr_ab), (b, a, psnr_ba)):
        for t1 in ("t1", "t2"):
            ok1 = t1 == good_tool
            l1 = _levels(**{then: "high", **({} if ok1 else {first: "high"})})
            nodes.append({"path": [[first, t1]], "psnr": 20.0 + (2.0 if ok1 else 0.5), "ssim": 0.6, "levels": l1, "scores": _scores(l1), "seconds": 0.1})
            for t2 in ("t1", "t2"):
                ok2 = t2 == good_tool
                l2 = _levels(**({} if ok1 else {first: "high"}), **({} if ok2 else {then: "high"}))
                p = final if ok1 and ok2 else final - 3.0
                nodes.append({"path": [[first, t1], [then, t2]], "psnr": p, "ssim": 0.7, "levels": l2, "scores": _scores(l2), "seconds": 0.1})
    return {
        "id": rid,
        "combination": [a, b],
        "source": f"{rid}.png",
        "input": {"psnr": 18.0, "ssim": 0.5, "levels": inp, "scores": _scores(inp)},
        "nodes": nodes,
    }
