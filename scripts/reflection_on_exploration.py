"""Replay reflection rules on self-exploration records (training images only).

Usage: python scripts/reflection_on_exploration.py RECORDS.jsonl [KNOWLEDGE.json]

For every explored image it follows the knowledge's order and, at each step, picks among the
recorded tool outputs (tools tried in the knowledge's order) by one reflection rule, without
rollback: ``first`` (no reflection: the first tool), ``threshold`` (the paper's: stop at the
first very_low output, else the least degraded-looking one), ``first-success`` (stop at the
first output judged low or better). Prints the mean PSNR of the final images and tool calls per
image for each rule. A check of reflection choices that needs no benchmark images.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent_policies.knowledge import DEFAULT_KNOWLEDGE, Knowledge
from toolbox.vocab import level_index


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    records = [json.loads(line) for line in Path(argv[0]).read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    k = Knowledge.load(argv[1] if len(argv) > 1 else DEFAULT_KNOWLEDGE)

    def pick(rec: dict, prefix: list, d: str, parent_level: str, rule: str) -> tuple[dict, int]:
        outs = {n["path"][-1][1]: n for n in rec["nodes"] if n["path"][:-1] == prefix and len(n["path"]) == len(prefix) + 1 and n["path"][-1][0] == d and "psnr" in n}
        stats = k.tool_stats(d, parent_level)
        order = sorted(outs, key=lambda t: -k.tool_utility(stats.get(t)))
        if rule == "first":
            return outs[order[0]], 1
        accept = 0 if rule == "threshold" else 1
        for i, t in enumerate(order):
            if level_index(outs[t]["levels"][d]) <= accept:
                return outs[t], i + 1
        return min((outs[t] for t in order), key=lambda n: (level_index(n["levels"][d]), n["scores"][d])), len(order)

    for rule in ("first", "threshold", "first-success"):
        psnr, calls = [], []
        for rec in records:
            prefix: list = []
            levels, node, c = rec["input"]["levels"], rec["input"], 0
            for d in k.order(rec["combination"]):
                node, n = pick(rec, prefix, d, levels.get(d, "high"), rule)
                prefix, levels, c = node["path"], node["levels"], c + n
            psnr.append(node["psnr"])
            calls.append(c)
        print(f"{rule:14s} mean PSNR {sum(psnr) / len(psnr):.2f} dB   tool calls {sum(calls) / len(calls):.2f}   ({len(psnr)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
