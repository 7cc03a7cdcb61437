"""The Executor: the actor that runs restoration tools for ``ExecuteStep`` waves.

It turns each ``ExecuteStep`` into one :meth:`~agentir.actors.scheduler.BatchScheduler.submit` per tool
(all at once, so a wave's tools and other jobs' calls to the same tool batch together), stores
the outputs in the blob store and publishes one ``StepExecuted`` with a
:class:`~agentir.bus.messages.Candidate` per tool, in the step's tool order. How calls are batched,
tiled, capped, retried on failure and placed on devices is the scheduler's business: see
:mod:`agentir.actors.scheduler`.

Cancellation. A :class:`~agentir.bus.messages.JobCancel` on the execute subject drops the job's queued
units at once (:meth:`Executor.cancel`); a batch already running finishes, its results for the
job are discarded, and no ``StepExecuted`` is published for the job. Steps of a cancelled job
that arrive later are dropped. The execute subject is a queue group (one executor of several
gets the cancel), so the executor that gets it passes it on to :data:`CANCEL_BROADCAST`, which
every executor subscribes to without a group: on several workers every executor drops the job.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import numpy as np
import structlog

from agentir.actors.base import Actor
from agentir.actors.scheduler import (
    DEFAULT_BATCH_WINDOW,
    DEFAULT_CPU_BATCH_BYTES,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    DEFAULT_TILE_THRESHOLD,
    BatchScheduler,
    BatchStats,
    ToolResult,
    from_batch,
    to_batch,
    tool_device,
)
from agentir.bus.base import Bus, Delivery
from agentir.bus.blobs import BlobStore
from agentir.bus.messages import Candidate, ExecuteStep, JobCancel, StepExecuted, Subjects

# from_batch, to_batch and tool_device live in agentir.actors.scheduler; still importable from here.
__all__ = ["CANCEL_BROADCAST", "Executor", "from_batch", "to_batch", "tool_device"]

#: Subject every executor reads (no queue group): a job's cancellation reaches all of them.
CANCEL_BROADCAST = Subjects.EXECUTE_CANCEL


log = structlog.get_logger(__name__)


class Executor(Actor):
    """Runs ``ExecuteStep`` waves through a :class:`~agentir.actors.scheduler.BatchScheduler` (see the module docstring).

    Args:
        batch_window: seconds a tool's first queued unit waits for others (0: no waiting).
        max_batch: most units per tool call.
        worker_threads: tool calls that may run at once (different tools).
        tile_threshold: images with more pixels than this are tiled (tile-safe tools only).
        tile: tile side in pixels.
        overlap: overlap of neighbouring tiles in pixels (the feather ramp length).
        max_batch_bytes: cap on one batch's estimated float input + output bytes.
        cpu_batch_bytes: the (lower) batch cap for tools running on the CPU.

    The batching options are the scheduler's (:class:`~agentir.actors.scheduler.BatchScheduler` explains
    them); ``scheduler`` is the one this actor uses.

    Raises:
        ValueError: an option out of range.
    """

    name = "executor"
    subjects = (Subjects.EXECUTE,)
    group = "executor"
    concurrency = 32  # steps waiting for a batch do not hold a worker thread
    worker_threads = 1

    def __init__(
        self,
        bus: Bus,
        blobs: BlobStore,
        *,
        batch_window: float = DEFAULT_BATCH_WINDOW,
        max_batch: int = DEFAULT_MAX_BATCH,
        worker_threads: int = 1,
        tile_threshold: int = DEFAULT_TILE_THRESHOLD,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        cpu_batch_bytes: int = DEFAULT_CPU_BATCH_BYTES,
        memory_cap: int | None = None,
    ) -> None:
        self.worker_threads = worker_threads  # before Actor.__init__, which sizes the thread limiter
        super().__init__(bus, blobs)
        #: The batching scheduler; its loops run in this actor's task group, its batches in this
        #: actor's worker threads.
        self.scheduler = BatchScheduler(
            batch_window=batch_window,
            max_batch=max_batch,
            tile_threshold=tile_threshold,
            tile=tile,
            overlap=overlap,
            max_batch_bytes=max_batch_bytes,
            cpu_batch_bytes=cpu_batch_bytes,
            memory_cap=memory_cap,
            run_sync=self.offload,
            spawn=self._spawn,
            on_queued=self.on_queued,
        )

    # -- public ------------------------------------------------------------------------------
    def stats(self) -> BatchStats:
        """The scheduler's counters (batches, batch sizes, tiles, drops, devices; see :class:`~agentir.actors.scheduler.BatchStats`)."""
        return self.scheduler.stats()

    def cancel(self, job: str) -> int:
        """Drop ``job``'s queued units and finish its requests as cancelled; returns the units dropped."""
        return self.scheduler.cancel(job)

    def on_queued(self, job: str, tool: str, units: int) -> None:
        """Hook called on the event loop once a request's ``units`` are queued (metrics, tests)."""

    # -- helpers -----------------------------------------------------------------------------
    def _spawn(self, fn: Any, *args: Any) -> None:
        """Start a scheduler loop in this actor's task group (so stopping the actor stops it)."""
        if self.task_group is None:
            raise RuntimeError("executor is not running")
        self.task_group.start_soon(fn, *args)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """As :meth:`Actor.run`, also reading :data:`CANCEL_BROADCAST` (every executor's copy)."""
        cancels = await self.bus.subscribe(CANCEL_BROADCAST, max_pending=self.mailbox_size)

        async def read_cancels() -> None:
            async for d in cancels:
                if isinstance(d.message, JobCancel):
                    self.cancel(d.message.job)
                await d.ack()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_cancels)
                await super().run(task_status=task_status)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await cancels.close()

    # -- messages ----------------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> None:
        match delivery.message:
            case JobCancel(job=job):
                self.cancel(job)
                # The execute subject's group gave this cancel to one executor: tell them all.
                await self.bus.publish(CANCEL_BROADCAST, delivery.message, correlation_id=job, cause=delivery.envelope.id)
            case ExecuteStep() as step:
                if self.scheduler.is_cancelled(step.job):
                    log.info("executor.step_dropped", job=step.job, node=step.node)
                    return
                image = np.asarray(self.blobs.get(step.image))
                results: dict[int, ToolResult] = {}

                async def run_one(i: int, tool: str) -> None:
                    results[i] = await self.scheduler.submit(step.job, tool, image)

                async with anyio.create_task_group() as tg:
                    for i, tool in enumerate(step.tools):
                        tg.start_soon(run_one, i, tool)
                if self.scheduler.is_cancelled(step.job) or any(r.cancelled for r in results.values()):
                    log.info("executor.step_dropped", job=step.job, node=step.node)
                    return
                outputs = []
                for i, tool in enumerate(step.tools):
                    r = results[i]
                    if r.output is None:
                        outputs.append(Candidate(tool=tool, error=r.error or "tool produced no output", seconds=r.seconds))
                    else:
                        outputs.append(Candidate(tool=tool, image=self.blobs.put(r.output), seconds=r.seconds))
                await self.bus.publish(
                    Subjects.REFLECT,
                    StepExecuted(
                        job=step.job,
                        node=step.node,
                        subtask=step.subtask,
                        outputs=outputs,
                        remaining=step.remaining,
                        prior=step.prior,
                        reflection=step.reflection,
                        source=step.image,
                    ),
                    correlation_id=step.job,
                    cause=delivery.envelope.id,
                )
            case other:
                raise TypeError(f"executor cannot handle {type(other).__name__}")
