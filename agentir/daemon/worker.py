"""The worker: runs queued jobs from the store through one long-lived :class:`Restorer`.

* At most ``concurrency`` jobs run at once; the oldest queued job is claimed first.
* Progress (``JobProgress`` from the actors) is kept in memory and fanned out to watchers (the
  WebSocket endpoint); states live in the store, so a watcher that misses an event still reads
  the truth there.
* Cancelling a running job cancels its ``restore`` call; the store already says ``cancelled``,
  so a result that races in is discarded.
* Failure semantics: a :class:`~agentir.pipeline.RestoreError` or an input that no longer decodes
  fails the job. A full disk while storing the result re-queues the job without counting an
  attempt and stops claiming for ``disk_backoff`` seconds (the job is kept, not failed). Another
  ``OSError`` re-queues it, up to ``max_attempts`` attempts, then fails it with that error.
* The slot is always freed. When the store cannot even record the outcome (the database's disk is
  full too), the job is failed with "no space left on the data disk ..." through
  :meth:`~agentir.daemon.store.JobStore.fail_or_defer`: readers see it failed at once, and the
  worker retries writing it with a backoff (doubling from 0.5 s up to ``disk_backoff``).
* :meth:`Worker.drain` (graceful shutdown) stops claiming, lets running jobs finish for
  ``grace`` seconds and re-queues the rest, so a restart picks them up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from agentir.bus.messages import JobProgress
from agentir.daemon.metrics import Metrics
from agentir.daemon.store import CANCELLED, DONE, FAILED, QUEUED, JobRecord, JobStore, is_disk_full
from agentir.imageio import ImageInputError, decode_image, encode_png
from agentir.pipeline import RestoreError, Restorer

if TYPE_CHECKING:
    from agentir.daemon.previews import Previews

log = structlog.get_logger(__name__)

#: The error of a job whose outcome could not be stored because the data disk is full.
DISK_FULL_ERROR = (
    "no space left on the data disk while storing the job's outcome; the job was not completed: free space on the daemon's data disk and resubmit it"
)


@dataclass
class Progress:
    """The live view of a running job (not persisted: states are, stages are not)."""

    stage: str = "queued"
    detail: str = ""
    tool_calls: int = 0
    updated: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "detail": self.detail, "tool_calls": self.tool_calls}


@dataclass(frozen=True)
class JobEvent:
    """What watchers receive: a progress stage, or ``final=True`` once the job left ``running``."""

    job: str
    stage: str
    detail: str = ""
    tool_calls: int = 0
    final: bool = False


class Worker:
    """Claims and runs jobs (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        restorer: Restorer,
        metrics: Metrics,
        *,
        concurrency: int = 2,
        max_attempts: int = 3,
        max_pixels: int = 40_000_000,
        idle_poll: float = 5.0,
        disk_backoff: float = 30.0,
        previews: Previews | None = None,
    ) -> None:
        self.store = store
        self.previews = previews  # the console's thumbnails of each job (agentir.daemon.previews)
        self.restorer = restorer
        self.metrics = metrics
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.max_pixels = max_pixels
        self.idle_poll = idle_poll
        self.disk_backoff = disk_backoff
        self._resume_at = 0.0  # monotonic time before which nothing is claimed (disk full)
        self.progress: dict[str, Progress] = {}
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._cancelled: set[str] = set()
        self._watchers: dict[str, set[MemoryObjectSendStream[JobEvent]]] = {}
        self._slots = anyio.Semaphore(concurrency)
        self._wake = anyio.Event()
        self._draining = False
        self._paused = False
        self._idle = anyio.Event()
        self._idle.set()
        self._pending_wake = anyio.Event()  # set when the store holds failures it could not write
        self._tg: anyio.abc.TaskGroup | None = None

    # -- control -------------------------------------------------------------------------------
    def notify(self) -> None:
        """A job was queued: wake the claim loop."""
        self._wake.set()

    def pause(self) -> None:
        """Stop claiming new jobs (running ones go on); jobs stay queued."""
        self._paused = True

    def resume(self) -> None:
        """Claim jobs again after :meth:`pause`."""
        self._paused = False
        self.notify()

    @property
    def running(self) -> int:
        return len(self._scopes)

    def cancel(self, job: str) -> bool:
        """Cancel ``job`` if it runs here (the store must already say ``cancelled``)."""
        scope = self._scopes.get(job)
        if scope is None:
            return False
        self._cancelled.add(job)
        scope.cancel()
        return True

    def ended(self, job: str, state: str) -> None:
        """Tell ``job``'s watchers it ended outside the worker (a queued job was cancelled)."""
        self._emit(JobEvent(job=job, stage=state, final=True))

    def watch(self, job: str, send: MemoryObjectSendStream[JobEvent]) -> Callable[[], None]:
        """Send ``job``'s events to ``send`` (dropped when full; ``final`` closes nothing); returns unwatch."""
        self._watchers.setdefault(job, set()).add(send)

        def unwatch() -> None:
            group = self._watchers.get(job)
            if group is not None:
                group.discard(send)
                if not group:
                    self._watchers.pop(job, None)

        return unwatch

    def _emit(self, event: JobEvent) -> None:
        for send in list(self._watchers.get(event.job, ())):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                if event.final:
                    # A full watcher must not miss the end: it reads the state from the store.
                    send.close()
                self.metrics.inc("agentir_ws_events_dropped_total")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    # -- the claim loop --------------------------------------------------------------------------
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and run jobs until cancelled or drained."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            recorder = anyio.CancelScope()
            tg.start_soon(self._record_pending, recorder)
            task_status.started()
            while not self._draining:
                await self._slots.acquire()
                self._wake = anyio.Event()  # a new epoch before looking: no wake-up is lost
                job = None
                if not self._paused and not self._draining and time.monotonic() >= self._resume_at:
                    job = await self.store.claim()
                if job is None:
                    self._slots.release()
                    wait = self.idle_poll if time.monotonic() >= self._resume_at else min(self.idle_poll, self._resume_at - time.monotonic())
                    with anyio.move_on_after(max(wait, 0.01)):
                        await self._wake.wait()
                    continue
                self._idle = anyio.Event()
                self._scopes[job.id] = anyio.CancelScope()
                tg.start_soon(self._run_job, job)
            while self._scopes:  # drained: the jobs' outcomes are recorded before the recorder stops
                await self._idle.wait()
            recorder.cancel()  # the store's close makes a last attempt at what is still pending

    async def _record_pending(self, scope: anyio.CancelScope) -> None:
        """Retry writing the failures the store holds in memory, with a backoff, until none is left."""
        with scope:
            while True:
                await self._pending_wake.wait()
                self._pending_wake = anyio.Event()
                delay = min(0.5, self.disk_backoff)
                while self.store.pending_count:
                    await anyio.sleep(delay)
                    try:
                        left = await self.store.flush_pending()
                    except Exception as exc:  # the store is closed, ...
                        log.error("worker.record_pending_failed", error=f"{type(exc).__name__}: {exc}")
                        left = self.store.pending_count
                    if left:
                        delay = min(delay * 2, self.disk_backoff)

    async def drain(self, grace: float) -> int:
        """Stop claiming, give running jobs ``grace`` seconds, re-queue the rest; returns how many."""
        self._draining = True
        self.notify()
        with anyio.move_on_after(grace):
            while self._scopes:
                await self._idle.wait()
        left = list(self._scopes)
        for job in left:
            scope = self._scopes.get(job)
            if scope is not None:
                scope.cancel()
        with anyio.move_on_after(max(1.0, grace)):
            while self._scopes:
                await self._idle.wait()
        log.info("worker.drained", requeued=len(left))
        return len(left)

    # -- one job -----------------------------------------------------------------------------
    async def _run_job(self, job: JobRecord) -> None:
        scope = self._scopes[job.id]
        progress = self.progress[job.id] = Progress(stage="running", updated=time.time())
        self._emit(JobEvent(job=job.id, stage="running"))
        t0 = time.perf_counter()
        outcome = "requeued"
        with structlog.contextvars.bound_contextvars(job=job.id):
            log.info("job.started", attempt=job.attempts, policy=job.policy)
            try:
                with scope:
                    outcome = await self._execute(job, progress)
                if scope.cancelled_caught or scope.cancel_called:
                    if job.id in self._cancelled:
                        outcome = CANCELLED
                    else:  # drain: back to the queue for the next start
                        with anyio.CancelScope(shield=True):
                            await self.store.requeue(job.id)
                        outcome = "requeued"
            except Exception as exc:
                outcome = await self._on_error(job, exc)
            finally:
                self._scopes.pop(job.id, None)
                self._cancelled.discard(job.id)
                self.progress.pop(job.id, None)
                self._slots.release()
                if not self._scopes:
                    self._idle.set()
                self._emit(JobEvent(job=job.id, stage=outcome, final=True))
                self.notify()
            seconds = time.perf_counter() - t0
            self.metrics.inc("agentir_jobs_completed_total", state=outcome)
            if outcome == DONE:
                self.metrics.observe("agentir_job_duration_seconds", seconds)
            log.info("job.ended", state=outcome, seconds=round(seconds, 4))

    async def _execute(self, job: JobRecord, progress: Progress) -> str:
        data = await self.store.read_input(job.id)
        try:
            image = await anyio.to_thread.run_sync(lambda: decode_image(data, name=f"job {job.id}", max_pixels=self.max_pixels))
        except ImageInputError as exc:
            await self.store.fail(job.id, str(exc))
            return FAILED

        def on_progress(message: JobProgress) -> None:
            progress.stage, progress.detail, progress.tool_calls = message.stage, message.detail, message.tool_calls
            progress.updated = time.time()
            self._emit(JobEvent(job=job.id, stage=message.stage, detail=message.detail, tool_calls=message.tool_calls))

        if self.previews is not None:
            self.previews.begin(job.id)
        try:
            # Actor logs carry the same job id as the daemon's (a rerun only follows a finished attempt).
            result = await self.restorer.restore(image, policy=job.policy, options=job.options, job=job.id, on_progress=on_progress)
        except anyio.get_cancelled_exc_class():
            if self.previews is not None:
                self.previews.end(job.id)
            # Cancelled by the client or by shutdown: stop the actors' work on it too.
            with anyio.CancelScope(shield=True):
                try:
                    await self.restorer.drop(job.id, reason="cancelled")
                except Exception as exc:
                    log.info("job.drop_not_sent", error=str(exc))
            raise
        except RestoreError as exc:
            if self.previews is not None:
                self.previews.end(job.id)
            await self.store.fail(job.id, exc.error, self._clean_trace(exc.trace, job))
            return FAILED
        png = await anyio.to_thread.run_sync(encode_png, result.image)
        trace = self._clean_trace(result.trace, job)
        self._observe_trace(trace)
        if self.previews is not None:  # every judged candidate's thumbnail is on disk before "done"
            await self.previews.settle(job.id, expected=len(trace.get("steps") or ()))
            self.previews.end(job.id)
        with anyio.CancelScope(shield=True):  # the result is computed: store it even if cancelled now
            stored = await self.store.finish(job.id, png, trace)
        return DONE if stored else CANCELLED

    async def _on_error(self, job: JobRecord, exc: Exception) -> str:
        error = f"{type(exc).__name__}: {exc}"
        log.error("job.error", error=error, attempt=job.attempts)
        disk_full = is_disk_full(exc)
        if disk_full:
            self._resume_at = time.monotonic() + self.disk_backoff
            log.error("job.disk_full", backoff=self.disk_backoff)
            message = DISK_FULL_ERROR
        else:
            message = f"internal error: {error}; the job was not completed, resubmit it"
        with anyio.CancelScope(shield=True):
            try:
                if disk_full:
                    await self.store.requeue(job.id, count_attempt=False)
                    return QUEUED
                if isinstance(exc, OSError) and job.attempts < self.max_attempts:
                    await self.store.requeue(job.id, count_attempt=True)
                    return QUEUED
                await self.store.fail(job.id, message)
            except Exception as inner:
                # Not even the outcome can be written (the database's disk is full too): fail the job
                # in the store's memory now (readers see it) and record it once there is room.
                log.error("job.error_unrecorded", error=f"{type(inner).__name__}: {inner}", disk_full=disk_full or is_disk_full(inner))
                if is_disk_full(inner) and not disk_full:
                    self._resume_at = time.monotonic() + self.disk_backoff
                    message = DISK_FULL_ERROR
                if not await self.store.fail_or_defer(job.id, message):
                    self._pending_wake.set()
        return FAILED

    @staticmethod
    def _clean_trace(trace: dict[str, Any], job: JobRecord) -> dict[str, Any]:
        out = dict(trace)
        out["job"] = job.id
        return out

    def _observe_trace(self, trace: dict[str, Any]) -> None:
        for step in trace.get("steps", []) or []:
            if isinstance(step, dict) and step.get("tool") and isinstance(step.get("seconds"), (int, float)):
                self.metrics.observe("agentir_tool_duration_seconds", float(step["seconds"]), tool=str(step["tool"]))
        if isinstance(trace.get("perception_seconds"), (int, float)):
            self.metrics.observe("agentir_perception_duration_seconds", float(trace["perception_seconds"]))


__all__ = ["DISK_FULL_ERROR", "JobEvent", "Progress", "Worker"]
