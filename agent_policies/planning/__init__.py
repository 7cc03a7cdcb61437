"""Planning policies: order the subtasks of a job and choose which tools to try first."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class PlanContext:
    """What a planner may look at: the perception of the job's input and the tools on offer.

    ``seed`` makes randomised policies reproducible per job. ``tools`` maps each subtask
    (degradation name) to the registered tools treating it, in registry order. ``note(kind,
    **data)`` records an event in the job's trace (e.g. an LLM answer rejected, a fallback).
    """

    levels: Mapping[str, str]
    scores: Mapping[str, float]
    tools: Mapping[str, Sequence[str]]
    seed: int = 0
    done: tuple[str, ...] = field(default_factory=tuple)
    note: Callable[..., Any] | None = None


@runtime_checkable
class PlanningPolicy(Protocol):
    """Orders subtasks. ``replan`` returns None when every subtask is in ``not_first``.

    ``blocking``: the policy waits on I/O (an HTTP endpoint), so the Planner actor calls it in a
    worker thread. ``info()`` is what a job's trace records about the policy (``{}``: nothing).
    """

    name: str
    blocking: bool

    def plan(self, subtasks: Sequence[str], context: PlanContext) -> list[str]: ...

    def replan(self, subtasks: Sequence[str], context: PlanContext, *, not_first: Collection[str]) -> list[str] | None: ...

    def tool_order(self, subtask: str, context: PlanContext) -> list[str]: ...

    def info(self) -> dict[str, Any]: ...


@runtime_checkable
class LearningPolicy(Protocol):
    """A planner that learns from the search's judged steps (the ``experience`` planner);
    ``flush`` persists what it learned (the owner calls it on shutdown)."""

    def flush(self) -> None: ...

    def observe_step(self, subtask: str, level: str, tool: str, success: bool) -> None: ...

    def observe_order(self, first: str, pending: Sequence[str], success: bool) -> None: ...


class BasePlanner:
    """Shared behaviour: ``replan`` keeps the plan's order and brings the first allowed subtask forward."""

    name = "base"
    blocking = False

    def info(self) -> dict[str, Any]:
        return {}

    def plan(self, subtasks: Sequence[str], context: PlanContext) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def replan(self, subtasks: Sequence[str], context: PlanContext, *, not_first: Collection[str]) -> list[str] | None:
        order = self.plan(subtasks, context)
        for i, subtask in enumerate(order):
            if subtask not in not_first:
                return [subtask, *order[:i], *order[i + 1 :]]
        return None

    def tool_order(self, subtask: str, context: PlanContext) -> list[str]:
        return list(context.tools.get(subtask, ()))
