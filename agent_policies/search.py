"""The AgenticIR search over subtask orders, as a pure state machine (no I/O, no actors).

The Planner actor feeds it messages and carries out the actions it returns:

* :meth:`Search.start` after perception -> the first :class:`Execute` (or :class:`Finish`).
* :meth:`Search.on_reflected` after each reflection -> the next :class:`Execute` or :class:`Finish`.

Semantics, following the paper (Zhu et al., ICLR 2025):

1. The subtasks are the degradations perceived at ``medium`` or worse, ordered by the planning
   policy.
2. At a node (an image plus the subtasks still to do) the first subtask of the node's order runs
   its tools in waves of ``wave`` tools; the reflection policy judges the outputs: ``accept`` a
   very_low output at once, else when the tools are exhausted ``success`` (best at low or better)
   or ``failure``.
3. On success the best output becomes a child node. On failure the node rolls back and re-plans
   with the failed subtask not first. When every subtask has failed first at a node, the search
   backtracks to the parent and forbids the subtask that led to the dead end (depth-first search
   over orders).
4. Budgets bound tool calls, rollbacks and seconds. When they run out, or every order failed, the
   search falls back to the best result seen: the deepest node, improved by its least-bad failed
   attempt when that lowered the degradation's severity, and continues greedily (failures are
   kept, not rolled back) while budget remains.

Every decision is recorded in :attr:`Search.trace`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentir.agent_policies.planning import LearningPolicy, PlanContext, PlanningPolicy
from agentir.agent_policies.reflection import ACCEPT, CONTINUE, FAILURE, SUCCESS, ReflectionPolicy
from agentir.agent_policies.trace import Trace
from agentir.bus.blobs import BlobRef
from agentir.bus.messages import Candidate
from agentir.toolbox.vocab import DEGRADATIONS, check_degradation, is_present, level_index


@dataclass(frozen=True)
class Budget:
    """Limits on one job's search. ``wave`` tools run per step; 0 means all of a subtask's tools.

    ``keep_improved``: a failed step whose best output still lowered the perceived severity of
    its degradation is kept (the search moves on from it) instead of rolled back; only steps
    that did not help at all roll back (the paper rolls back on any failure: ``False``).

    Built from a job's options by :meth:`agentir.agent_policies.options.JobOptions.budget`, which also
    validates them; the defaults here are the job defaults (``JobOptions`` takes them from here).
    """

    max_tool_calls: int = 32
    max_rollbacks: int = 8
    max_seconds: float = 300.0
    wave: int = 1
    rollback: bool = True
    keep_improved: bool = True


@dataclass(frozen=True)
class Execute:
    """Action: run ``tools`` for ``subtask`` on ``image`` at ``node``."""

    node: int
    subtask: str
    image: BlobRef
    tools: list[str]
    remaining: list[str]
    prior: list[Candidate]


@dataclass(frozen=True)
class Finish:
    """Action: the job is done; ``image`` is the result."""

    image: BlobRef
    status: str  # "success" | "nothing_to_do" | "fallback" | "kept_input" (a result predicted worse than the input)


Action = Execute | Finish


@dataclass
class _Attempt:
    subtask: str
    best: Candidate | None


@dataclass
class _Node:
    id: int
    parent: int | None
    image: BlobRef
    done: tuple[str, ...]
    remaining: tuple[str, ...]
    via: str | None = None
    order: list[str] = field(default_factory=list)
    failed_first: set[str] = field(default_factory=set)
    failures: list[_Attempt] = field(default_factory=list)
    #: The judge's predicted PSNR gain (dB) of the step that made this node from its parent:
    #: 0.0 for a step that kept its input, None for an unjudged step (and the root).
    gain: float | None = None


class Search:
    """One job's search tree (see the module docstring)."""

    def __init__(
        self,
        *,
        image: BlobRef,
        levels: dict[str, str],
        scores: dict[str, float],
        planner: PlanningPolicy,
        reflection: ReflectionPolicy,
        tools: Callable[[str], Sequence[str]],
        budget: Budget = Budget(),
        seed: int = 0,
        subtasks: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.levels = dict(levels)
        self.scores = dict(scores)
        self.planner = planner
        self.reflection = reflection
        self.budget = budget
        self.seed = seed
        #: Given subtasks replace the perceived ones (the ``random-gt`` baseline, known degradations).
        self.given_subtasks = None if subtasks is None else [check_degradation(s) for s in subtasks]
        self._clock = clock
        self._t0 = clock()
        self._tool_table = {d: list(tools(d)) for d in DEGRADATIONS}
        self.nodes: dict[int, _Node] = {}
        self.tool_calls = 0
        self.rollbacks = 0
        self.greedy = False
        self.finished: Finish | None = None
        self._seen: set[tuple[int, str, int]] = set()
        self._priors: dict[tuple[int, str], list[Candidate]] = {}  # rated candidates per (node, subtask)
        self._pending_tools: dict[tuple[int, str], list[str]] = {}  # tools not yet run per (node, subtask)
        self.trace: Trace = {
            "perception": dict(self.levels),
            "scores": {k: round(float(v), 3) for k, v in self.scores.items()},
            "planner": planner.name,
            "reflection": reflection.name,
            "plan": [],
            "steps": [],
            "events": [],
        }
        info = planner.info()
        if info:
            self.trace["planner_info"] = info
        self._learner = planner if isinstance(planner, LearningPolicy) else None
        self._root = self._new_node(parent=None, image=image, done=(), remaining=())

    # ------------------------------------------------------------------ helpers
    def _new_node(self, *, parent: int | None, image: BlobRef, done: tuple[str, ...], remaining: tuple[str, ...], via: str | None = None) -> _Node:
        node = _Node(id=len(self.nodes), parent=parent, image=image, done=done, remaining=remaining, via=via)
        self.nodes[node.id] = node
        return node

    def _context(self, node: _Node) -> PlanContext:
        return PlanContext(levels=self.levels, scores=self.scores, tools=self._tool_table, seed=self.seed, done=node.done, note=self._event)

    def _event(self, kind: str, **data: Any) -> None:
        self.trace["events"].append({"type": kind, **data})

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def _out_of_budget(self) -> str | None:
        if self.tool_calls >= self.budget.max_tool_calls:
            return "tool-call budget"
        if self.elapsed() >= self.budget.max_seconds:
            return "time budget"
        return None

    def _wave(self, tools: Sequence[str]) -> tuple[list[str], list[str]]:
        n = len(tools) if self.budget.wave <= 0 else self.budget.wave
        n = max(1, min(n, self.budget.max_tool_calls - self.tool_calls))
        return list(tools[:n]), list(tools[n:])

    # ------------------------------------------------------------------ protocol
    def start(self) -> Action:
        """Plan from the perception and return the first action."""
        if self.given_subtasks is not None:
            subtasks = list(dict.fromkeys(self.given_subtasks))
        else:
            subtasks = [d for d in DEGRADATIONS if is_present(self.levels.get(d, "very_low"))]
        root = self._root
        if not subtasks:
            self.trace["plan"] = []
            return self._finish(root.image, "nothing_to_do")
        plan = self.planner.plan(subtasks, self._context(root))
        self.trace["plan"] = list(plan)
        root.remaining = tuple(plan)
        return self._advance(root)

    def on_reflected(self, node_id: int, subtask: str, candidates: Sequence[Candidate], verdict: str, best: int) -> Action | None:
        """Take a reflection's judgement; returns the next action, or None for a duplicate delivery."""
        if self.finished is not None:
            return None
        key = (node_id, subtask, len(candidates))
        if key in self._seen:
            # At-least-once delivery: the same wave judged twice. Checked before the node's state,
            # which the first copy may have changed (a rollback re-plans the node's order).
            return None
        node = self.nodes.get(node_id)
        if node is None or not node.order or node.order[0] != subtask:
            raise ValueError(f"reflection for node {node_id} subtask {subtask!r} does not match the search state")
        self._seen.add(key)
        new = list(candidates[len(self._prior(node_id, subtask)) :])
        self.tool_calls += len(new)
        for c in new:
            self.trace["steps"].append(
                {
                    "node": node_id,
                    "subtask": subtask,
                    "tool": c.tool,
                    "level": c.level,
                    "score": round(float(c.score), 3),
                    "seconds": round(float(c.seconds), 4),
                    **({"gain_db": round(float(c.gain), 3)} if c.gain is not None else {}),
                    **({"error": c.error} if c.error else {}),
                }
            )
        self._priors[(node_id, subtask)] = list(candidates)
        best_c = candidates[best] if 0 <= best < len(candidates) else None
        if verdict == CONTINUE:
            remaining = self._pending_tools.get((node_id, subtask), [])
            if remaining and self._out_of_budget() is None:
                return self._execute(node, subtask, remaining, list(candidates))
            verdict = SUCCESS if best_c is not None and self._good(best_c) else FAILURE
        self._mark(node_id, subtask, best, verdict)
        self._learn(node, subtask, list(candidates), verdict)
        if verdict in (ACCEPT, SUCCESS):
            if best_c is None or best_c.image is None:
                raise ValueError(f"reflection verdict {verdict!r} for node {node_id} names no output image")
            child = self._new_node(parent=node.id, image=best_c.image, done=node.done + (subtask,), remaining=tuple(node.order[1:]), via=subtask)
            child.gain = best_c.gain
            return self._advance(child)
        return self._failed(node, subtask, best_c)

    # ------------------------------------------------------------------ internals
    def _learn(self, node: _Node, subtask: str, candidates: list[Candidate], verdict: str) -> None:
        """Tell a learning planner how each judged output and this first step went."""
        if self._learner is None or self.reflection.name == "none":
            return  # unjudged outputs carry no evidence
        level = self.levels.get(subtask, "high")
        for c in candidates:
            ok = not c.error and c.image is not None and self._good(c)
            self._learner.observe_step(subtask, level, c.tool, ok)
        pending = [s for s in node.order[1:] if s != subtask]
        if pending:
            self._learner.observe_order(subtask, pending, verdict in (ACCEPT, SUCCESS))

    def _good(self, c: Candidate) -> bool:
        """Whether an output did its job: the judge predicts it gains more than its minimum (a
        judged output), or it is re-perceived low or better (otherwise)."""
        if c.gain is not None and c.gain < float(getattr(self.reflection, "min_db", 0.0)):
            return False
        return bool(c.level) and level_index(c.level) <= 1

    def _prior(self, node_id: int, subtask: str) -> list[Candidate]:
        return self._priors.get((node_id, subtask), [])

    def _mark(self, node_id: int, subtask: str, best: int, verdict: str) -> None:
        """Write the verdict into the trace rows of this node's subtask."""
        rows = [r for r in self.trace["steps"] if r["node"] == node_id and r["subtask"] == subtask]
        for i, row in enumerate(rows):
            row["verdict"] = ("accepted" if verdict in (ACCEPT, SUCCESS) else "best-of-failed") if i == best else "rejected"
        self._event("reflect", node=node_id, subtask=subtask, verdict=verdict, best=rows[best]["tool"] if 0 <= best < len(rows) else None)

    def _execute(self, node: _Node, subtask: str, tools: Sequence[str], prior: list[Candidate]) -> Execute:
        wave, rest = self._wave(tools)
        self._pending_tools[(node.id, subtask)] = rest
        self._priors[(node.id, subtask)] = prior
        return Execute(node=node.id, subtask=subtask, image=node.image, tools=wave, remaining=rest, prior=prior)

    def _advance(self, node: _Node) -> Action:
        if not node.remaining:
            return self._finish(node.image, "fallback" if self.greedy else "success")
        reason = self._out_of_budget()
        if reason:
            self._event("budget", reason=reason, node=node.id)
            return self._fallback()
        order = self.planner.replan(list(node.remaining), self._context(node), not_first=node.failed_first)
        if order is None:
            return self._dead_end(node)
        if node.order and order != node.order:
            self._event("replan", node=node.id, order=list(order))
        node.order = list(order)
        subtask = order[0]
        tools = self.planner.tool_order(subtask, self._context(node))
        if not tools:
            self._event("no_tools", node=node.id, subtask=subtask)
            return self._failed(node, subtask, None)
        return self._execute(node, subtask, tools, [])

    def _failed(self, node: _Node, subtask: str, best: Candidate | None) -> Action:
        node.failures.append(_Attempt(subtask, best))
        if not self.greedy and self.budget.rollback and self.budget.keep_improved:
            kept = self._helped(subtask, best)
            if kept is not None:
                self._event("keep_improved", node=node.id, subtask=subtask)
                child = self._new_node(parent=node.id, image=kept, done=node.done + (subtask,), remaining=tuple(node.order[1:]), via=subtask)
                child.gain = best.gain if best is not None else None
                return self._advance(child)
        if self.greedy or not self.budget.rollback:
            # Keep the least-bad output (if it helped) and move on without backtracking.
            kept = self._helped(subtask, best)
            image = kept if kept is not None else node.image
            self._event("keep_failed" if kept is not None else "skip", node=node.id, subtask=subtask)
            child = self._new_node(parent=node.id, image=image, done=node.done + (subtask,), remaining=tuple(node.order[1:]), via=subtask)
            child.gain = (best.gain if best is not None else None) if kept is not None else 0.0
            return self._advance(child)
        if self.rollbacks >= self.budget.max_rollbacks:
            self._event("budget", reason="rollback budget", node=node.id)
            return self._fallback()
        self.rollbacks += 1
        node.failed_first.add(subtask)
        self._event("rollback", node=node.id, subtask=subtask, reason="no tool output judged low or better")
        return self._advance(node)

    def _dead_end(self, node: _Node) -> Action:
        self._event("dead_end", node=node.id)
        if node.parent is None or node.via is None:
            return self._fallback()
        parent = self.nodes[node.parent]
        if self.rollbacks >= self.budget.max_rollbacks:
            self._event("budget", reason="rollback budget", node=node.id)
            return self._fallback()
        self.rollbacks += 1
        parent.failed_first.add(node.via)
        self._event("backtrack", node=node.id, to=parent.id, subtask=node.via)
        return self._advance(parent)

    def _helped(self, subtask: str, best: Candidate | None) -> BlobRef | None:
        """The failed output's image when it lowered the degradation's perceived severity, else None."""
        if best is None or best.image is None:
            return None
        if best.gain is not None and best.gain < float(getattr(self.reflection, "min_db", 0.0)):
            return None  # the judge predicts it makes the image worse: never kept
        if not best.level:
            return None
        before = self.levels.get(subtask, "very_high"), self.scores.get(subtask, 4.0)
        if (level_index(best.level), best.score) < (level_index(before[0]), float(before[1])):
            return best.image
        return None

    def _fallback(self) -> Action:
        """Continue from the best result seen: the deepest node, plus its least-bad failure if it helped.

        Subtasks that already failed at that node are not run again on the same image (tools
        are deterministic, the outcome would be the same): they are given up.
        """
        self.greedy = True
        deepest = max(self.nodes.values(), key=lambda n: (len(n.done), -n.id))
        image, done = deepest.image, deepest.done
        gain: float | None = 0.0
        helpful = [(a, best, kept) for a in deepest.failures if (best := a.best) is not None and (kept := self._helped(a.subtask, best)) is not None]
        if helpful:
            pick, _, kept = min(helpful, key=lambda t: (level_index(t[1].level), t[1].score))
            image, done, gain = kept, done + (pick.subtask,), pick.best.gain if pick.best is not None else None
        failed_here = {a.subtask for a in deepest.failures}
        given_up = [s for s in dict.fromkeys((*deepest.order, *deepest.remaining)) if s in failed_here and s not in done]
        remaining = tuple(s for s in dict.fromkeys((*deepest.order, *deepest.remaining)) if s not in done and s not in failed_here)
        self._event("fallback", node=deepest.id, done=list(done), given_up=given_up, remaining=list(remaining))
        node = self._new_node(parent=deepest.id, image=image, done=done, remaining=remaining)
        node.gain = gain
        if self._out_of_budget() or not remaining:
            return self._finish(node.image, "fallback")
        return self._advance(node)

    def _predicted_gain(self, node: _Node) -> float | None:
        """The judge's predicted gain of the whole path from the input to ``node`` (the sum of its
        steps'), or None when a step on it was not judged."""
        total = 0.0
        while node.parent is not None:
            if node.gain is None:
                return None
            total += node.gain
            node = self.nodes[node.parent]
        return total

    def _finish(self, image: BlobRef, status: str) -> Finish:
        final = max((n for n in self.nodes.values() if n.image == image), key=lambda n: len(n.done), default=None)
        if final is not None and final.parent is not None:
            # Do no harm: a result the judge predicts worse than the input (by more than the
            # step veto's margin) is not returned; the input is.
            predicted = self._predicted_gain(final)
            limit = float(getattr(self.reflection, "min_db", 0.0))
            if predicted is not None:
                self.trace["predicted_gain_db"] = round(predicted, 3)
                if predicted < limit:
                    self._event("kept_input", node=final.id, predicted_gain_db=round(predicted, 3), limit_db=limit)
                    image, status, final = self._root.image, "kept_input", self._root
        self.trace["status"] = status
        self.trace["done"] = list(final.done) if final else []
        self.trace["tool_calls"] = self.tool_calls
        self.trace["rollbacks"] = self.rollbacks
        self.trace["search_seconds"] = round(self.elapsed(), 4)
        self.finished = Finish(image=image, status=status)
        return self.finished
