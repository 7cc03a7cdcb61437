"""Replay reflection rules and subtask orders on self-exploration records (training images only).

Usage: python scripts/reflection_on_exploration.py RECORDS.jsonl

The records (``agentir explore`` writes them next to the knowledge file, e.g.
``agent_policies/knowledge.json.records.jsonl``; the records of the shipped knowledge ship as
``agent_policies/knowledge.records.jsonl.gz``) hold every order and every tool output of each
explored image, perceived and scored against its reference, so choices can be compared without
running a tool. Two-fold cross-validation keeps it honest: the records are split in two by id;
knowledge distilled from one half decides (order, tool ranking) on the other half, and the
other way round, so no image is judged with knowledge learned from itself.

Reflection rules, each following the knowledge's order without rollback: ``first`` (no
reflection: the best-ranked tool), ``threshold`` (the paper's: stop at the first very_low output,
else the least degraded-looking one), ``first-success`` (stop at the first output judged low or
better, else the least degraded-looking one), ``oracle`` (the tool output with the best PSNR: a
ceiling no judge without the reference reaches). Orders, with the first-success rule: the
knowledge's, the vocabulary's (``fixed``), the mean over all orders (what ``random`` gets on
average) and the best and worst order per image.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from agentir.agent_policies.knowledge import Knowledge, distil, read_records
from agentir.toolbox.vocab import DEGRADATIONS, level_index

RULES = ("first", "threshold", "first-success", "oracle")


def pick(k: Knowledge, rec: Mapping[str, Any], parent: Mapping[str, Any], d: str, rule: str) -> tuple[Mapping[str, Any], int]:
    """The node ``rule`` ends on for subtask ``d`` below ``parent``, and the tool calls it made."""
    prefix = parent["path"]
    outs = {
        n["path"][-1][1]: n for n in rec["nodes"] if len(n["path"]) == len(prefix) + 1 and n["path"][:-1] == prefix and n["path"][-1][0] == d and "psnr" in n
    }
    stats = k.tool_stats(d, parent["levels"].get(d, "high"))
    order = sorted(outs, key=lambda t: -k.tool_utility(stats.get(t)))
    if rule == "first":
        return outs[order[0]], 1
    if rule == "oracle":
        return max(outs.values(), key=lambda n: n["psnr"]), len(order)
    accept = 0 if rule == "threshold" else 1
    for i, t in enumerate(order):
        if level_index(outs[t]["levels"][d]) <= accept:
            return outs[t], i + 1
    return min((outs[t] for t in order), key=lambda n: (level_index(n["levels"][d]), n["scores"][d])), len(order)


def follow(k: Knowledge, rec: Mapping[str, Any], order: Sequence[str], rule: str) -> tuple[float, int]:
    """Final PSNR and tool calls of ``rule`` along ``order``."""
    node: Mapping[str, Any] = {"path": [], **rec["input"]}
    calls = 0
    for d in order:
        node, n = pick(k, rec, node, d, rule)
        calls += n
    return float(node["psnr"]), calls


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    _header, records = read_records(argv[0])  # .jsonl or the shipped .jsonl.gz
    records.sort(key=lambda r: r["id"])
    folds = [records[0::2], records[1::2]]
    knowledge = [Knowledge.from_json(distil(folds[1])), Knowledge.from_json(distil(folds[0]))]
    print(f"{len(records)} explored images, 2-fold cross-validated knowledge")
    for rule in RULES:
        psnr, calls = [], []
        for k, fold in zip(knowledge, folds, strict=True):
            for rec in fold:
                p, c = follow(k, rec, k.order(rec["combination"]), rule)
                psnr.append(p)
                calls.append(c)
        print(f"  reflection {rule:14s} mean PSNR {sum(psnr) / len(psnr):.2f} dB   tool calls {sum(calls) / len(calls):.2f}")
    rows: dict[str, list[float]] = {"knowledge": [], "fixed": [], "random (mean of orders)": [], "best order": [], "worst order": []}
    for k, fold in zip(knowledge, folds, strict=True):
        for rec in fold:
            combo = rec["combination"]
            per = {o: follow(k, rec, o, "first-success")[0] for o in itertools.permutations(combo)}
            rows["knowledge"].append(per[tuple(k.order(combo))])
            rows["fixed"].append(per[tuple(sorted(combo, key=DEGRADATIONS.index))])
            rows["random (mean of orders)"].append(sum(per.values()) / len(per))
            rows["best order"].append(max(per.values()))
            rows["worst order"].append(min(per.values()))
    for name, vals in rows.items():
        print(f"  order {name:24s} mean PSNR {sum(vals) / len(vals):.2f} dB (first-success)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
