"""The Perceiver: rates every degradation of a job's input (and answers perceive requests)."""

from __future__ import annotations

import time

import structlog

from agentir.actors.base import Actor
from agentir.agent_policies.perception import PerceptionPolicy
from agentir.bus.base import Bus, Delivery
from agentir.bus.blobs import BlobRef, BlobStore
from agentir.bus.messages import JobProgress, JobSubmitted, Perceived, PerceiveRequest, Subjects
from agentir.toolbox.vocab import is_present

log = structlog.get_logger(__name__)


class Perceiver(Actor):
    name = "perceiver"
    subjects = (Subjects.SUBMIT, Subjects.PERCEIVE)
    group = "perceiver"
    concurrency = 2
    worker_threads = 2

    def __init__(self, bus: Bus, blobs: BlobStore, *, policy: PerceptionPolicy) -> None:
        super().__init__(bus, blobs)
        self.policy = policy

    def _perceive(self, ref: BlobRef) -> tuple[dict[str, str], dict[str, float], float]:
        t0 = time.perf_counter()
        [result] = self.policy.perceive([self.blobs.get(ref)])
        return dict(result.levels), {k: float(v) for k, v in result.scores.items()}, time.perf_counter() - t0

    async def handle(self, delivery: Delivery) -> None:
        match delivery.message:
            case JobSubmitted(job=job, image=image, policy=policy, options=options):
                levels, scores, seconds = await self.offload(self._perceive, image)
                log.info("job.perceived", job=job, present=[d for d, lv in levels.items() if is_present(lv)], seconds=round(seconds, 4))
                await self.bus.publish(
                    Subjects.PLAN,
                    Perceived(job=job, image=image, levels=levels, scores=scores, seconds=seconds, policy=policy, options=options),
                    correlation_id=job,
                    cause=delivery.envelope.id,
                )
                await self.bus.publish(Subjects.EVENTS, JobProgress(job=job, stage="perceived", detail=_summary(levels)), correlation_id=job)
            case PerceiveRequest(image=image):
                levels, scores, seconds = await self.offload(self._perceive, image)
                await delivery.reply(Perceived(job="", image=image, levels=levels, scores=scores, seconds=seconds))
            case other:
                raise TypeError(f"perceiver cannot handle {type(other).__name__}")


def _summary(levels: dict[str, str]) -> str:
    present = [f"{d}={lv}" for d, lv in levels.items() if is_present(lv)]
    return ", ".join(present) or "no degradation at medium or worse"
