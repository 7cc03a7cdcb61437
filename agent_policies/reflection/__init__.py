"""Reflection policies: judge a subtask's tool outputs from their re-perceived severity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bus.messages import Candidate
from toolbox.vocab import level_index

ACCEPT, SUCCESS, FAILURE, CONTINUE = "accept", "success", "failure", "continue"
VERDICTS = (ACCEPT, SUCCESS, FAILURE, CONTINUE)


@runtime_checkable
class ReflectionPolicy(Protocol):
    """``judge`` returns ``(verdict, best)``; ``best`` indexes ``candidates`` or is -1 when none ran.

    ``needs_ratings``: the Reflector re-perceives each output's degradation (``level`` and
    ``score`` of the candidates) before calling ``judge``; False skips that work.
    """

    name: str
    needs_ratings: bool

    def judge(self, subtask: str, candidates: Sequence[Candidate], *, remaining: int) -> tuple[str, int]: ...


def best_candidate(candidates: Sequence[Candidate]) -> int:
    """Index of the best rated output (lowest level, then lowest score, then earliest); -1 if none."""
    best, key = -1, None
    for i, c in enumerate(candidates):
        if c.error or c.image is None or not c.level:
            continue
        k = (level_index(c.level), c.score)
        if key is None or k < key:
            best, key = i, k
    return best


class ThresholdReflection:
    """The paper's rule: accept the first output rated very_low; when no tools remain, the best
    output is a success at ``low`` or better and a failure otherwise.

    ``accept_level`` raises the bar for stopping early: ``"low"`` accepts the first output rated
    low or better (the ``first-success`` policy). That suits a planner that tries tools in order
    of expected quality (``experience``): the first acceptable output is then usually the best
    one, and trying more tools only lets the judge prefer a harsher output that merely looks
    less degraded.
    """

    name = "threshold"
    needs_ratings = True

    def __init__(self, success_level: str = "low", accept_level: str = "very_low", name: str | None = None) -> None:
        self.success_rank = level_index(success_level)
        self.accept_rank = level_index(accept_level)
        if name:
            self.name = name

    def judge(self, subtask: str, candidates: Sequence[Candidate], *, remaining: int) -> tuple[str, int]:
        for i, c in enumerate(candidates):
            if not c.error and c.image is not None and c.level and level_index(c.level) <= self.accept_rank:
                return ACCEPT, i
        best = best_candidate(candidates)
        if remaining > 0:
            return CONTINUE, best
        if best >= 0 and level_index(candidates[best].level) <= self.success_rank:
            return SUCCESS, best
        return FAILURE, best


class NoReflection:
    """Ablation: take the first tool's output without judging it (never fails, never rolls back)."""

    name = "none"
    #: The Reflector skips re-perception for this policy: nothing is judged.
    needs_ratings = False

    def judge(self, subtask: str, candidates: Sequence[Candidate], *, remaining: int) -> tuple[str, int]:
        for i, c in enumerate(candidates):
            if not c.error and c.image is not None:
                return ACCEPT, i
        return (CONTINUE, -1) if remaining > 0 else (FAILURE, -1)
