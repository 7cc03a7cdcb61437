"""The Actor base: lifecycle, bounded mailbox, failure isolation, work off the event loop.

Semantics (after pykka, on anyio):

* :meth:`Actor.run` subscribes to the actor's subjects (bounded mailboxes of ``mailbox_size``),
  calls :meth:`on_start`, then signals readiness through ``task_status.started()``; it returns
  when cancelled or when the bus closes, calling :meth:`on_stop` (shielded) on the way out.
* Up to ``concurrency`` messages are handled at once; each handler runs under a timeout of
  ``handler_timeout`` seconds.
* A handler that raises does not kill the actor: :meth:`on_failure` logs it, answers a request
  with an ``ErrorReply`` and, for a message that belongs to a job, publishes ``JobFailed`` so the
  client is not left waiting. Cancellation is never swallowed.
* CPU-bound or blocking work goes through :meth:`offload` (a worker thread, bounded by the
  actor's own limiter), never inline on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import anyio
import structlog
from anyio.abc import TaskStatus

from agentir.bus.base import Bus, Delivery
from agentir.bus.blobs import BlobStore
from agentir.bus.errors import BusClosed, BusError
from agentir.bus.messages import ErrorReply, JobFailed, Subjects

log = structlog.get_logger(__name__)
R = TypeVar("R")


class ActorError(Exception):
    """Base class of the errors the actors raise."""


class Actor:
    """Subclass and implement :meth:`handle`; set ``subjects`` (and optionally ``group``)."""

    name: ClassVar[str] = "actor"
    subjects: ClassVar[tuple[str, ...]] = ()
    #: Queue group shared by replicas of this actor (None: every replica gets every message).
    group: ClassVar[str | None] = None
    mailbox_size: int = 64
    concurrency: int = 1
    handler_timeout: float = 600.0
    worker_threads: int = 1

    def __init__(self, bus: Bus, blobs: BlobStore) -> None:
        self.bus = bus
        self.blobs = blobs
        self.handled = 0
        self.failed = 0
        self._limiter = anyio.CapacityLimiter(self.worker_threads)
        self._cancel: anyio.CancelScope | None = None
        self.running = False
        #: Task group for a subclass's background tasks while the actor runs.
        self.task_group: anyio.abc.TaskGroup | None = None

    # -- hooks -------------------------------------------------------------------------------
    async def on_start(self) -> None:
        """Called once before the first message; raise to refuse to start."""

    async def on_stop(self) -> None:
        """Called once when the actor stops (also after a crash); must not block for long."""

    async def handle(self, delivery: Delivery) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def on_failure(self, exc: Exception, delivery: Delivery) -> None:
        """Default failure handling (see the module docstring)."""
        self.failed += 1
        message = delivery.message
        log.error("actor.handler_failed", actor=self.name, kind=delivery.envelope.kind, error=f"{type(exc).__name__}: {exc}")
        try:
            if delivery.envelope.reply_to:
                await delivery.reply(ErrorReply(error_type=type(exc).__name__, detail=str(exc)))
            job = getattr(message, "job", "")
            if job:
                await self.bus.publish(
                    Subjects.EVENTS,
                    JobFailed(job=job, error=f"{self.name}: {type(exc).__name__}: {exc}"),
                    correlation_id=job,
                    cause=delivery.envelope.id,
                )
        except BusError as bus_exc:  # the bus is closing: nobody left to tell
            log.warning("actor.failure_not_reported", actor=self.name, error=str(bus_exc))

    # -- helpers -------------------------------------------------------------------------------
    async def offload(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(*args)`` in a worker thread (bounded by ``worker_threads``)."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def stop(self) -> None:
        """Ask the actor to stop; :meth:`run` returns soon after."""
        if self._cancel is not None:
            self._cancel.cancel()

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, start, serve until stopped (see the module docstring)."""
        subs = []
        try:
            for subject in self.subjects:
                subs.append(await self.bus.subscribe(subject, group=self.group, max_pending=self.mailbox_size))
            await self.on_start()
            self.running = True
            with anyio.CancelScope() as scope:
                self._cancel = scope
                task_status.started()
                slots = anyio.Semaphore(max(1, self.concurrency))
                async with anyio.create_task_group() as tg:
                    self.task_group = tg
                    for sub in subs:
                        tg.start_soon(self._consume, sub, tg, slots)
        except BusClosed:
            pass
        finally:
            self.running = False
            self.task_group = None
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await sub.close()
                await self.on_stop()

    async def _consume(self, sub: Any, tg: anyio.abc.TaskGroup, slots: anyio.Semaphore) -> None:
        async for delivery in sub:
            await slots.acquire()
            tg.start_soon(self._process, delivery, slots)

    async def _process(self, delivery: Delivery, slots: anyio.Semaphore) -> None:
        try:
            with structlog.contextvars.bound_contextvars(actor=self.name, job=getattr(delivery.message, "job", None)):
                try:
                    with anyio.fail_after(self.handler_timeout):
                        await self.handle(delivery)
                    self.handled += 1
                except Exception as exc:
                    await self.on_failure(exc, delivery)
                # Poison messages are not redelivered: the failure was reported instead.
                await delivery.ack()
        finally:
            slots.release()
