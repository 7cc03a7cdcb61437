"""Experience: what self-exploration learned, distilled into explicit, inspectable knowledge.

``agentir explore`` (:mod:`agentir.explore`) runs the full tree of subtask orders and tools on
group-A training images and writes one record per image. :func:`distil` turns those records
into the knowledge file (``agent_policies/knowledge.json`` ships with the repo), and
:class:`Knowledge` answers the planner's two questions from it:

* **Which subtask first?** For every explored pair ``{a, b}``, each image compares the two
  orders by the PSNR of the path an agent would take (at each step the tool output perceived
  least degraded, as reflection picks it). ``wins`` counts the images where ``a`` first was
  better. A Bradley-Terry fit over all pairs gives each degradation a ``precedence`` strength
  (higher runs earlier), which orders pairs that were never explored together.
  ``P(a before b) = (wins_ab + M * sigmoid(s_a - s_b)) / (support + M)`` with ``M = PRIOR_WEIGHT``.
* **Which tool first?** Per (degradation, perceived level of the input) each tool's success
  rate (output perceived ``low`` or better, the paper's criterion) and mean PSNR gain of the
  step; tools are tried by expected utility (:meth:`Knowledge.tool_utility`: mostly the
  expected PSNR gain), with a level's numbers shrunk towards the tool's numbers over all levels
  (:meth:`Knowledge.tool_stats`). Timings are kept
  out of the file (they vary run to run); costs come from ``agentir bench tools``.

The file is JSON, versioned (``format``/``version``), sorted and rounded so that the same
exploration writes the same bytes. :meth:`Knowledge.describe` renders it as short prose (for
people, the README and the ``llm`` planner).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentir.toolbox.vocab import DEGRADATIONS, LEVELS, is_present, level_index

__all__ = [
    "DEFAULT_KNOWLEDGE",
    "FORMAT",
    "SHIPPED_RECORDS",
    "VERSION",
    "Knowledge",
    "KnowledgeError",
    "PairStat",
    "ToolStat",
    "agent_path",
    "distil",
    "knowledge_text",
    "read_records",
]

FORMAT = "agentir-knowledge"
VERSION = 1
#: The knowledge shipped with the repo (``agentir explore`` reproduces it; see the README).
DEFAULT_KNOWLEDGE = Path(__file__).with_name("knowledge.json")
#: The exploration records the shipped knowledge was distilled from (gzipped JSON lines; the
#: first line is the header). ``distil`` over them rewrites the shipped file byte for byte.
SHIPPED_RECORDS = Path(__file__).with_name("knowledge.records.jsonl.gz")
#: Pseudo-observations of the Bradley-Terry prior in a pair's preference.
PRIOR_WEIGHT = 2.0
#: L2 pull of the Bradley-Terry strengths towards 0 (keeps unexplored degradations neutral).
BT_RIDGE = 0.1
#: A tool's utility: success probability plus this weight times its mean gain in dB. Chosen with
#: two-fold cross-validation on the exploration records (`scripts/reflection_on_exploration.py`
#: replays it): ranking mostly by explored PSNR gain beat ranking mostly by perceived success
#: (0.15 before: first-success 22.12 -> 22.41 dB on the training images, knowledge from the other half).
GAIN_WEIGHT = 1.0
#: Pseudo-calls of a tool's all-levels statistics mixed into its statistics at one level
#: (empirical-Bayes shrinkage: a level seen a few times leans on the pooled numbers).
LEVEL_SHRINK = 16.0


class KnowledgeError(ValueError):
    """A knowledge file that cannot be used; ``path`` names it, the message says what to do."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        where = f"knowledge file {self.path}" if self.path else "knowledge"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class PairStat:
    """How the two orders of ``first`` and ``then`` compared on the images holding both."""

    first: str
    then: str
    support: int  # images compared
    wins: float  # images where ``first`` before ``then`` gave the higher PSNR (a tie counts one half)
    mean_gain_db: float  # mean PSNR of (first -> then) minus (then -> first)
    fail_rate: float  # share of leaves of the order first -> then still perceived degraded
    fail_rate_reverse: float  # the same for then -> first


@dataclass(frozen=True, slots=True)
class ToolStat:
    """One tool on one degradation at one perceived input level."""

    tool: str
    calls: float  # whole numbers in the file; shrunk estimates (tool_stats) are fractional
    successes: float
    mean_gain_db: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.calls if self.calls else 0.0


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# --------------------------------------------------------------------------------------------
# distillation (pure functions over exploration records)
# --------------------------------------------------------------------------------------------


def _rank(levels: Mapping[str, str], scores: Mapping[str, float], d: str) -> tuple[int, float]:
    return level_index(levels.get(d, "very_low")), float(scores.get(d, 0.0))


def _ok(node: Mapping[str, Any]) -> bool:
    return not node.get("error") and node.get("psnr") is not None


def agent_path(record: Mapping[str, Any], order: Sequence[str]) -> list[Mapping[str, Any]]:
    """The nodes an agent would visit for ``order``: at each step the output perceived least degraded.

    Returns the chosen node per step (shorter when a step has no usable output).
    """
    nodes = [n for n in record["nodes"] if _ok(n)]
    path: list[Mapping[str, Any]] = []
    prefix: list[list[str]] = []
    for d in order:
        children = [n for n in nodes if len(n["path"]) == len(prefix) + 1 and [list(p) for p in n["path"][:-1]] == prefix and n["path"][-1][0] == d]
        if not children:
            break
        best = min(children, key=lambda n: (_rank(n["levels"], n["scores"], d), n["path"][-1][1]))
        path.append(best)
        prefix = [list(p) for p in best["path"]]
    return path


def _failed(node: Mapping[str, Any]) -> bool:
    return any(is_present(lv) for lv in node["levels"].values())


def _bradley_terry(wins: Mapping[tuple[str, str], float], names: Sequence[str], *, ridge: float = BT_RIDGE, iters: int = 500) -> dict[str, float]:
    """Strengths maximising sum w_ab log sigmoid(s_a - s_b) - ridge * sum s^2 (Newton on a small dense system)."""
    idx = {n: i for i, n in enumerate(names)}
    s = [0.0] * len(names)
    for _ in range(iters):
        grad = [-2.0 * ridge * x for x in s]
        hess = [[(2.0 * ridge if i == j else 0.0) for j in range(len(names))] for i in range(len(names))]
        for (a, b), w in wins.items():
            if w <= 0:
                continue
            i, j = idx[a], idx[b]
            p = _sigmoid(s[i] - s[j])
            grad[i] += w * (1 - p)
            grad[j] -= w * (1 - p)
            h = w * p * (1 - p)
            hess[i][i] += h
            hess[j][j] += h
            hess[i][j] -= h
            hess[j][i] -= h
        step = _solve(hess, grad)
        s = [x + dx for x, dx in zip(s, step, strict=True)]
        if max((abs(dx) for dx in step), default=0.0) < 1e-10:
            break
    return {n: s[idx[n]] for n in names}


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the system is small and positive definite)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        pivot = m[c][c]
        for r in range(c + 1, n):
            f = m[r][c] / pivot
            for k in range(c, n + 1):
                m[r][k] -= f * m[c][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][k] * x[k] for k in range(r + 1, n))) / m[r][r]
    return x


def read_records(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the per-image records of an exploration records file (``.jsonl`` or ``.jsonl.gz``)."""
    import gzip

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh if line.strip()]
    if not lines or "header" not in lines[0]:
        raise ValueError(f"{p} is not an exploration records file (no header line); `agentir explore` writes one")
    return lines[0]["header"], lines[1:]


def knowledge_text(knowledge: Mapping[str, Any]) -> str:
    """The knowledge object as the file ``agentir explore`` writes (stable bytes)."""
    return json.dumps(knowledge, indent=1, allow_nan=False) + "\n"


def distil(records: Iterable[Mapping[str, Any]], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn exploration records (one per image, see :mod:`agentir.explore`) into the knowledge JSON object.

    Deterministic: the same records (in any order) give the same object.
    """
    recs = sorted(records, key=lambda r: r["id"])
    pair_rows: dict[tuple[str, str], list[float]] = defaultdict(list)
    combos: dict[tuple[str, ...], dict[tuple[str, ...], list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    tool_rows: dict[tuple[str, str, str], list[tuple[bool, float]]] = defaultdict(list)
    n_nodes = n_leaves = 0
    for rec in recs:
        names = list(rec["combination"])
        root = {"path": [], **rec["input"]}
        by_path = {json.dumps([]): root} | {json.dumps(n["path"]): n for n in rec["nodes"]}
        n_nodes += len(rec["nodes"])
        # tool statistics: every node against its parent
        for node in rec["nodes"]:
            parent = by_path.get(json.dumps(node["path"][:-1]))
            if parent is None or not _ok(parent):
                continue
            d, tool = node["path"][-1]
            lv = parent["levels"].get(d, "very_low")
            if not _ok(node):
                tool_rows[(d, lv, tool)].append((False, 0.0))
                continue
            ok = level_index(node["levels"][d]) <= 1
            tool_rows[(d, lv, tool)].append((ok, float(node["psnr"]) - float(parent["psnr"])))
        # orders: the agent's path, the best leaf, the fail rate
        per_order: dict[tuple[str, ...], float] = {}
        for order in itertools.permutations(names):
            leaves = [n for n in rec["nodes"] if _ok(n) and [p[0] for p in n["path"]] == list(order)]
            n_leaves += len(leaves)
            path = agent_path(rec, order)
            if not leaves or len(path) < len(order):
                continue
            agent = float(path[-1]["psnr"])
            per_order[order] = agent
            combos[tuple(sorted(names))][order].append(
                {
                    "agent_psnr": agent,
                    "best_psnr": max(float(n["psnr"]) for n in leaves),
                    "mean_psnr": sum(float(n["psnr"]) for n in leaves) / len(leaves),
                    "fail_rate": sum(_failed(n) for n in leaves) / len(leaves),
                    "input_psnr": float(rec["input"]["psnr"]),
                }
            )
        for a, b in itertools.combinations(names, 2):
            ab = next((v for o, v in per_order.items() if o.index(a) < o.index(b)), None)
            ba = next((v for o, v in per_order.items() if o.index(b) < o.index(a)), None)
            if len(names) == 2 and ab is not None and ba is not None:
                key = (a, b) if a < b else (b, a)
                diff = ab - ba if key == (a, b) else ba - ab
                pair_rows[key].append(diff)

    # per-combination order table (with the leaves' fail rates) and pairwise precedence
    combo_out = []
    fail: dict[tuple[str, str], float] = {}
    for combo, orders in sorted(combos.items()):
        rows = []
        for order, vals in sorted(orders.items()):
            means = {k: round(sum(v[k] for v in vals) / len(vals), 3) for k in vals[0]}
            rows.append({"order": list(order), "images": len(vals), **means})
            if len(order) == 2:
                fail[(order[0], order[1])] = means["fail_rate"]
        combo_out.append({"combination": list(combo), "orders": rows})
    pairs_out = []
    wins_for_bt: dict[tuple[str, str], float] = {}
    for (a, b), diffs in sorted(pair_rows.items()):
        n = len(diffs)
        w_ab = sum(1.0 for x in diffs if x > 0) + 0.5 * sum(1.0 for x in diffs if x == 0)
        mean = sum(diffs) / n
        first, then, wins, gain = (a, b, w_ab, mean) if w_ab >= n - w_ab else (b, a, n - w_ab, -mean)
        wins_for_bt[(first, then)] = wins
        wins_for_bt[(then, first)] = n - wins
        pairs_out.append(
            {
                "first": first,
                "then": then,
                "support": n,
                "wins": wins,
                "mean_gain_db": round(gain, 3),
                "fail_rate": _round_or_none(fail.get((first, then))),
                "fail_rate_reverse": _round_or_none(fail.get((then, first))),
            }
        )
    strengths = _bradley_terry(wins_for_bt, list(DEGRADATIONS))

    tools_out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (d, lv, tool), rows2 in sorted(tool_rows.items(), key=lambda kv: (DEGRADATIONS.index(kv[0][0]), level_index(kv[0][1]), kv[0][2])):
        tools_out.setdefault(d, {}).setdefault(lv, []).append(
            {
                "tool": tool,
                "calls": len(rows2),
                "successes": sum(1 for ok, _ in rows2 if ok),
                "mean_gain_db": round(sum(g for _, g in rows2) / len(rows2), 3),
            }
        )
    for d in tools_out:
        for lv in tools_out[d]:
            tools_out[d][lv].sort(key=lambda t: (-_utility(t["successes"], t["calls"], t["mean_gain_db"]), t["tool"]))
    knowledge = {
        "format": FORMAT,
        "version": VERSION,
        "config": dict(config or {}),
        "summary": {"images": len(recs), "nodes": n_nodes, "leaves": n_leaves},
        "precedence": {d: round(strengths[d], 4) for d in sorted(strengths, key=lambda d: (-strengths[d], DEGRADATIONS.index(d)))},
        "pairs": pairs_out,
        "combinations": combo_out,
        "tools": tools_out,
    }
    knowledge["rules"] = Knowledge.from_json(knowledge).rules()
    return knowledge


def _round_or_none(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _float_or_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def _utility(successes: float, calls: float, gain: float) -> float:
    return (successes + 1.0) / (calls + 2.0) + GAIN_WEIGHT * gain


# --------------------------------------------------------------------------------------------
# the knowledge the planner reads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knowledge:
    """Distilled exploration statistics (see the module docstring)."""

    precedence: dict[str, float]
    pairs: dict[tuple[str, str], PairStat]  # keyed by (first, then), the preferred direction
    tools: dict[str, dict[str, list[ToolStat]]]  # degradation -> level -> stats
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    combinations: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_json(cls, obj: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Knowledge:
        """Validate and build; raises :class:`KnowledgeError` naming what is wrong."""
        if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
            raise KnowledgeError(path, f"not an agentir knowledge file (expected format {FORMAT!r}); make one with `agentir explore`")
        version = obj.get("version")
        if version != VERSION:
            raise KnowledgeError(path, f"version {version!r} is not the supported version {VERSION}; re-run `agentir explore` to make a current one")
        try:
            precedence = {str(d): float(v) for d, v in obj["precedence"].items()}
            pairs = {}
            for p in obj["pairs"]:
                stat = PairStat(
                    first=str(p["first"]),
                    then=str(p["then"]),
                    support=int(p["support"]),
                    wins=float(p["wins"]),
                    mean_gain_db=float(p["mean_gain_db"]),
                    fail_rate=_float_or_nan(p["fail_rate"]),
                    fail_rate_reverse=_float_or_nan(p["fail_rate_reverse"]),
                )
                pairs[(stat.first, stat.then)] = stat
            tools = {
                str(d): {
                    str(lv): [ToolStat(str(t["tool"]), int(t["calls"]), int(t["successes"]), float(t["mean_gain_db"])) for t in rows]
                    for lv, rows in by_level.items()
                }
                for d, by_level in obj["tools"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KnowledgeError(path, f"malformed ({type(exc).__name__}: {exc}); re-run `agentir explore`") from None
        unknown = [d for d in (*precedence, *tools, *(x for k in pairs for x in k)) if d not in DEGRADATIONS]
        if unknown:
            raise KnowledgeError(path, f"unknown degradation {unknown[0]!r}")
        bad_levels = [lv for by in tools.values() for lv in by if lv not in LEVELS]
        if bad_levels:
            raise KnowledgeError(path, f"unknown severity level {bad_levels[0]!r}")
        return cls(
            precedence=precedence,
            pairs=pairs,
            tools=tools,
            config=dict(obj.get("config") or {}),
            summary=dict(obj.get("summary") or {}),
            combinations=list(obj.get("combinations") or []),
            path=None if path is None else str(path),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_KNOWLEDGE) -> Knowledge:
        """Read a knowledge file; raises :class:`KnowledgeError` when missing, corrupt or of another version."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KnowledgeError(p, "not found; make one with `agentir explore DATA -o FILE` or point AGENTIR_KNOWLEDGE at one") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KnowledgeError(p, f"cannot be read ({exc})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KnowledgeError(p, f"is not valid JSON (line {exc.lineno}: {exc.msg}); re-run `agentir explore`") from None
        return cls.from_json(obj, p)

    # ---------------------------------------------------------------- orders
    def p_before(self, a: str, b: str) -> float:
        """Probability that doing ``a`` before ``b`` is the better order (explored evidence + Bradley-Terry prior)."""
        prior = _sigmoid(self.precedence.get(a, 0.0) - self.precedence.get(b, 0.0))
        wins: float
        n: float
        if (a, b) in self.pairs:
            st = self.pairs[(a, b)]
            wins, n = st.wins, st.support
        elif (b, a) in self.pairs:
            st = self.pairs[(b, a)]
            wins, n = st.support - st.wins, st.support
        else:
            wins, n = 0.0, 0.0
        return (wins + PRIOR_WEIGHT * prior) / (n + PRIOR_WEIGHT)

    def order_score(self, order: Sequence[str], p_before: Callable[[str, str], float] | None = None) -> float:
        """Sum of log P(earlier before later) over every pair of the order (higher is better)."""
        p = p_before or self.p_before
        return sum(math.log(max(1e-9, p(a, b))) for a, b in itertools.combinations(order, 2))

    def best_order(
        self,
        subtasks: Sequence[str],
        *,
        tie_break: Mapping[str, int] | None = None,
        not_first: Collection[str] = (),
        p_before: Callable[[str, str], float] | None = None,
    ) -> list[str] | None:
        """The most probable order of ``subtasks`` not starting with one of ``not_first`` (None when
        every subtask is excluded). Exhaustive up to 7 subtasks, by precedence strength beyond.
        ``p_before`` replaces :meth:`p_before` (the experience planner adds online evidence)."""
        tb = tie_break or {}
        names = sorted(dict.fromkeys(subtasks), key=lambda d: (tb.get(d, 0), d))
        if len(names) > 7:
            ranked = sorted(names, key=lambda d: -self.precedence.get(d, 0.0))  # stable: ties keep the tie-break order
            allowed = [d for d in ranked if d not in not_first]
            return None if not allowed else [allowed[0], *(d for d in ranked if d != allowed[0])]
        best: list[str] | None = None
        best_score = -math.inf
        for perm in itertools.permutations(names):  # lexicographic in the tie-break order: the first of equals wins
            if perm[0] in not_first:
                continue
            score = round(self.order_score(perm, p_before), 9)
            if score > best_score:
                best, best_score = list(perm), score
        return best

    def order(self, subtasks: Sequence[str], *, tie_break: Mapping[str, int] | None = None) -> list[str]:
        """The most probable order of ``subtasks`` (see :meth:`best_order`)."""
        best = self.best_order(subtasks, tie_break=tie_break)
        assert best is not None  # nothing is excluded
        return best

    # ---------------------------------------------------------------- tools
    def tool_stats(self, degradation: str, level: str) -> dict[str, ToolStat]:
        """Per tool: its statistics at ``level`` shrunk towards its statistics over all levels.

        ``LEVEL_SHRINK`` pseudo-calls at the pooled success rate and gain are added to the calls
        at ``level``, so a level seen only a few times leans on the pooled numbers and a
        well-observed one keeps its own. A tool never seen at ``level`` gets the pooled numbers.
        """
        by_level = self.tools.get(degradation, {})
        pooled: dict[str, list[ToolStat]] = defaultdict(list)
        for rows in by_level.values():
            for t in rows:
                pooled[t.tool].append(t)
        out: dict[str, ToolStat] = {}
        exact = {t.tool: t for t in by_level.get(level, [])}
        for tool, rows in pooled.items():
            calls = sum(r.calls for r in rows)
            rate = sum(r.successes for r in rows) / calls if calls else 0.0
            gain = sum(r.mean_gain_db * r.calls for r in rows) / calls if calls else 0.0
            at = exact.get(tool)
            if at is None:
                out[tool] = ToolStat(tool, calls, sum(r.successes for r in rows), gain)
                continue
            m = LEVEL_SHRINK
            out[tool] = ToolStat(
                tool,
                at.calls + m,
                at.successes + m * rate,
                (at.calls * at.mean_gain_db + m * gain) / (at.calls + m),
            )
        return out

    def tool_utility(self, stat: ToolStat | None, *, extra_successes: float = 0.0, extra_calls: float = 0.0) -> float:
        """Expected utility of trying a tool: smoothed success probability + GAIN_WEIGHT x mean gain (dB).

        ``extra_successes`` of ``extra_calls`` are outcomes seen while serving (no reference, so
        no PSNR): a failed output is discarded, i.e. gains nothing, so a positive explored gain
        is scaled by the share of all calls that were not failures served since.
        """
        if stat is None:
            return _utility(extra_successes, extra_calls, 0.0)
        gain = stat.mean_gain_db
        if extra_calls > 0 and gain > 0:
            gain *= (stat.calls + extra_successes) / (stat.calls + extra_calls)
        return _utility(stat.successes + extra_successes, stat.calls + extra_calls, gain)

    # ---------------------------------------------------------------- prose
    def rules(self) -> list[str]:
        """The pairwise findings as sentences, most certain first."""
        out = []
        for st in sorted(self.pairs.values(), key=lambda s: (-(s.wins / s.support if s.support else 0), -s.support, s.first, s.then)):
            out.append(
                f"{st.first} before {st.then}: better on {st.wins:g} of {st.support} images, "
                f"{st.mean_gain_db:+.2f} dB on average; leaves still degraded {st.fail_rate:.0%} vs {st.fail_rate_reverse:.0%} in the other order"
            )
        return out

    def describe(self, subtasks: Sequence[str] | None = None) -> str:
        """Knowledge as short prose: precedence strengths, pairwise findings and the best tools."""
        lines = [
            "Precedence strength (higher should run earlier): " + ", ".join(f"{d} {v:+.2f}" for d, v in sorted(self.precedence.items(), key=lambda kv: -kv[1]))
        ]
        lines.append("Pairwise findings from self-exploration:")
        lines += [f"- {r}" for r in self.rules()]
        wanted = list(subtasks) if subtasks else list(self.tools)
        for d in wanted:
            stats = self.tool_stats(d, "high")
            if stats:
                ranked = sorted(stats.values(), key=lambda t: -self.tool_utility(t))
                lines.append(f"Tools for {d}: " + "; ".join(f"{t.tool} ({t.success_rate:.0%} success, {t.mean_gain_db:+.1f} dB)" for t in ranked))
        return "\n".join(lines)
