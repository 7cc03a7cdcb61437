"""The Reflector: re-perceives the treated degradation on each tool output and judges the node."""

from __future__ import annotations

import dataclasses
from typing import Any

from actors.base import Actor
from agent_policies.registry import REFLECTION
from bus.base import Delivery
from bus.messages import Candidate, Reflected, StepExecuted, Subjects


class Reflector(Actor):
    name = "reflector"
    subjects = (Subjects.REFLECT,)
    group = "reflector"
    concurrency = 4
    worker_threads = 2

    def __init__(self, bus: Any, blobs: Any, *, perception: Any) -> None:
        super().__init__(bus, blobs)
        self.perception = perception

    def _rate(self, subtask: str, outputs: list[Candidate]) -> list[Candidate]:
        images = [self.blobs.get(c.image) for c in outputs if c.image is not None and not c.error]
        if not images:
            return list(outputs)
        ratings = iter(self.perception.rate(images, subtask))
        rated = []
        for c in outputs:
            if c.image is not None and not c.error:
                level, score = next(ratings)
                c = dataclasses.replace(c, level=level, score=float(score))
            rated.append(c)
        return rated

    async def handle(self, delivery: Delivery) -> None:
        match delivery.message:
            case StepExecuted() as step:
                policy = REFLECTION.get(step.reflection)
                outputs = step.outputs
                if getattr(policy, "needs_ratings", True):
                    outputs = await self.offload(self._rate, step.subtask, list(step.outputs))
                candidates = [*step.prior, *outputs]
                verdict, best = policy.judge(step.subtask, candidates, remaining=len(step.remaining))
                await self.bus.publish(
                    Subjects.PLAN,
                    Reflected(job=step.job, node=step.node, subtask=step.subtask, candidates=candidates, verdict=verdict, best=best),
                    correlation_id=step.job,
                    cause=delivery.envelope.id,
                )
            case other:
                raise TypeError(f"reflector cannot handle {type(other).__name__}")
