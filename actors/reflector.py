"""The Reflector: re-perceives the treated degradation on each tool output and judges the node."""

from __future__ import annotations

import dataclasses

from agentir.actors.base import Actor
from agentir.agent_policies.options import JobOptions
from agentir.agent_policies.perception import PerceptionPolicy
from agentir.agent_policies.registry import Policies
from agentir.bus.base import Bus, Delivery
from agentir.bus.blobs import BlobRef, BlobStore
from agentir.bus.messages import Candidate, Reflected, StepExecuted, Subjects


class Reflector(Actor):
    name = "reflector"
    subjects = (Subjects.REFLECT,)
    group = "reflector"
    concurrency = 4
    worker_threads = 2

    def __init__(self, bus: Bus, blobs: BlobStore, *, perception: PerceptionPolicy, policies: Policies | None = None) -> None:
        """``perception`` re-rates outputs; ``policies`` supplies the reflection policies by name."""
        super().__init__(bus, blobs)
        self.perception = perception
        self.policies = policies if policies is not None else Policies()

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

    def _judge_gains(self, policy: object, subtask: str, source: BlobRef | None, outputs: list[Candidate]) -> list[Candidate]:
        """Set each output's predicted gain over the step's input (a policy with ``needs_source``)."""
        live = [(c.tool, c.image) for c in outputs if c.image is not None and not c.error]
        if source is None or not live:
            return list(outputs)
        x = self.blobs.get(source)
        gains = iter(policy.gains(subtask, x, [(tool, self.blobs.get(ref)) for tool, ref in live]))  # type: ignore[attr-defined]  # needs_source policies define gains
        return [dataclasses.replace(c, gain=round(float(next(gains)), 3)) if c.image is not None and not c.error else c for c in outputs]

    async def handle(self, delivery: Delivery) -> None:
        match delivery.message:
            case StepExecuted() as step:
                # An empty name (a sender that set none) is the job default's reflection.
                policy = self.policies.reflection(step.reflection or JobOptions().reflection)
                outputs = step.outputs
                if policy.needs_ratings:
                    outputs = await self.offload(self._rate, step.subtask, list(step.outputs))
                if getattr(policy, "needs_source", False):
                    outputs = await self.offload(self._judge_gains, policy, step.subtask, step.source, list(outputs))
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
