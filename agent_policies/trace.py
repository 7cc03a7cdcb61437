"""The shape of a job's trace: what every decision of a search leaves behind.

A trace travels as a plain JSON-ready map (``JobFinished.trace``, the CLI's ``.trace.json``,
the daemon's job record); these ``TypedDict`` s name its keys and their types, so the code that
writes it (the search, the Planner, the ``Restorer``) and the code that reads it (the CLI, the
benchmarks, the daemon's metrics) agree under mypy. Keys are added, never renamed (clients and
stored records read them).
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["StepRecord", "Trace", "to_wire"]


class StepRecord(TypedDict, total=False):
    """One tool output judged at one node: ``level``/``score`` as re-perceived, ``gain_db`` the step
    judge's predicted PSNR gain over the step's input (``judge`` reflection only), ``error`` if the
    tool failed, ``verdict`` what the judge made of it (``accepted``, ``best-of-failed`` or ``rejected``)."""

    node: int
    subtask: str
    tool: str
    level: str
    score: float
    seconds: float
    gain_db: float
    error: str
    verdict: str


class Trace(TypedDict, total=False):
    """A job's trace.

    Attributes:
        perception: the perceived level of each of the eight degradations.
        scores: the continuous perception scores (0 = absent .. 4).
        planner, reflection: the policies' names; ``planner_info`` what the planner reports
            about itself (e.g. the knowledge file used).
        plan: the first order of subtasks; ``done`` the subtasks of the result, in order.
        steps: every judged tool output; ``events`` every other decision (rollbacks, re-plans,
            fallbacks, policy notes), each ``{"type": ..., ...}``.
        status: ``success``, ``nothing_to_do``, ``fallback``, or ``kept_input`` (the judge
            predicted the result worse than the input by more than its margin, so the input is
            the result; the ``kept_input`` event says by how much).
        predicted_gain_db: with a judging reflection, the judge's predicted gain of the result
            over the input (the sum of its steps' predicted gains).
        tool_calls, rollbacks: counts; ``search_seconds``, ``perception_seconds``, ``seconds``
            (the whole job) timings.
        job: the job id.
    """

    perception: dict[str, str]
    scores: dict[str, float]
    planner: str
    reflection: str
    planner_info: dict[str, Any]
    plan: list[str]
    steps: list[StepRecord]
    events: list[dict[str, Any]]
    status: str
    predicted_gain_db: float
    done: list[str]
    tool_calls: int
    rollbacks: int
    search_seconds: float
    perception_seconds: float
    seconds: float
    job: str


def to_wire(trace: Trace) -> dict[str, Any]:
    """The trace as the plain map messages carry (a shallow copy)."""
    return dict(trace)
