"""Reflection policies: judge a subtask's tool outputs from their re-perceived severity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agentir.bus.messages import Candidate
from agentir.toolbox.vocab import level_index

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


class JudgeReflection(ThresholdReflection):
    """First-success with a judge that sees harm (:mod:`agentir.agent_policies.reflection.judge`).

    Every output gets a predicted PSNR gain over the step's input (``Candidate.gain``, set by the
    Reflector from the step's input and the output). The decision is ``first-success``'s (the
    first output re-perceived low or better, in the planner's tool order), except that an output
    predicted to lose more than ``-min_db`` dB is never taken, not even as the best of a failed
    subtask: when every output is vetoed the verdict is ``failure`` with no output (``best =
    -1``), so the search rolls back or gives the subtask up and the image stays as it was.

    Cross-validated on the fit images (``agentir train judge``), the judge alone picks the best
    tool of a step less often than the planner's order does, but it sees harm: a tool run for a
    degradation the image does not have loses 21.7 dB on average there, and the veto at
    ``min_db = -2`` refuses about half of those steps while refusing 9 % of genuine ones
    (the numbers are in ``judge.json``'s ``cross_validation``).
    """

    name = "judge"
    needs_ratings = True
    #: The Reflector fills ``Candidate.gain`` from the step's input for this policy.
    needs_source = True

    def __init__(self, min_db: float = -2.0, path: str | None = None) -> None:
        from agentir.agent_policies.reflection.judge import load_judge

        super().__init__(accept_level="low", name="judge")
        self.min_db = float(min_db)
        self.model = load_judge(path)  # JudgeError names the file and the rebuild command

    def gains(self, subtask: str, source: object, outputs: Sequence[tuple[str, object]]) -> list[float]:
        """Predicted gain (dB) of each ``(tool, output image)`` over ``source`` (uint8 RGB arrays)."""
        import numpy as np

        from agentir.agent_policies.reflection.judge import descriptors

        x = np.asarray(source)
        desc = descriptors(x)
        return [self.model.predict_step(subtask, tool, x, np.asarray(y), desc) for tool, y in outputs]

    def vetoed(self, c: Candidate) -> bool:
        """An output the judge predicts to make the image worse than ``min_db``."""
        return c.gain is not None and c.gain < self.min_db

    def judge(self, subtask: str, candidates: Sequence[Candidate], *, remaining: int) -> tuple[str, int]:
        allowed = [c if not self.vetoed(c) else Candidate(tool=c.tool, error="vetoed by the judge") for c in candidates]
        verdict, best = super().judge(subtask, allowed, remaining=remaining)
        if verdict == FAILURE and best < 0:
            return FAILURE, -1
        return verdict, best
