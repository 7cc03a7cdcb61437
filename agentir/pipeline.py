"""The in-process API: start the actor system, submit images, get results and traces.

Example::

    async with Restorer() as restorer:
        result = await restorer.restore(image)      # uint8 H x W x 3 RGB
        result.image, result.trace

Everything crosses the bus as msgpack messages; images go through the blob store.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import anyio
import numpy as np
import structlog

from agentir.actors.supervisor import Supervisor, build_actors
from agentir.agent_policies.options import JobOptions
from agentir.agent_policies.registry import DEFAULT_PERCEPTION, DEFAULT_PLANNING, Policies
from agentir.bus.base import Bus
from agentir.bus.blobs import BlobStore, MemoryBlobStore
from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import JobCancel, JobFailed, JobFinished, JobProgress, JobSubmitted, Perceived, PerceiveRequest, Subjects
from agentir.logs import ensure_logging
from agentir.settings import Settings

if TYPE_CHECKING:
    from agentir.actors.executor import Executor
    from agentir.actors.scheduler import BatchStats
    from agentir.stream.api import FrameStream

log = structlog.get_logger(__name__)

#: The broker URL a Restorer built without ``bus=`` uses (None: its own in-memory bus with local
#: actors). ``agentir serve --bus URL`` sets it around the daemon, which builds its Restorer.
DEFAULT_BUS: ContextVar[str | None] = ContextVar("agentir_default_bus", default=None)


class RestoreError(RuntimeError):
    """A job failed; ``job`` names it and ``trace`` holds what was done before the failure."""

    def __init__(self, job: str, error: str, trace: dict[str, Any] | None = None) -> None:
        self.job = job
        self.error = error
        self.trace = trace or {}
        super().__init__(error)


@dataclass
class RestoreResult:
    """The restored image (uint8 H x W x 3, 4x larger if super-resolution ran) and the job's trace."""

    job: str
    image: np.ndarray
    trace: dict[str, Any]


@dataclass
class _Waiter:
    done: anyio.Event = field(default_factory=anyio.Event)
    finished: JobFinished | None = None
    failed: JobFailed | None = None
    on_progress: Callable[[JobProgress], None] | None = None


class Restorer:
    """Async context manager running the four actors on an in-memory bus (see module docstring).

    Args:
        policy: default planning policy name (default ``experience``; ``rules``, ``random``, ...).
        perception: perception policy name.
        options: default job options (the wire form of :class:`~agentir.agent_policies.options.JobOptions`:
            budgets, ``reflection``, ``rollback``, ``wave``...), validated here; a job's own
            options apply over them.
        settings: what policies and plug-ins are configured with (default
            :meth:`Settings.from_env`: the ``AGENTIR_*`` variables, read once, here).
        max_inflight: jobs running at once; more ``restore`` calls wait for a slot. Keeping this
            below the actors' mailbox sizes is what rules out deadlock in the actor cycle.
        job_timeout: seconds before a job is declared failed.
        bus: where the actors are: None (default) runs them here on an in-memory bus; a broker
            URL (``redis://HOST:6379/0``) makes this Restorer a front end of workers started
            with ``agentir worker`` (images travel through the broker's blob store, which
            replaces ``blobs``); or a :class:`~agentir.bus.base.Bus` instance (then pass ``blobs`` the
            workers can read too). Without ``bus=``, :data:`DEFAULT_BUS` decides.
        local_actors: run the actors in this process (default: only with the in-memory bus).

    Logging: if the application has not configured structlog, constructing a Restorer points
    agentir's logs at stderr, warnings and up (or at the application's stdlib ``logging``
    handlers), never stdout: see :func:`agentir.logs.ensure_logging`. An application's own
    ``structlog.configure`` wins, whether it runs before or after.

    Raises:
        OptionError: an option in ``options`` is unknown or has a bad value.
        UnknownNameError: no policy has that name (close matches listed).
        ValueError: a policy cannot be built with these settings (e.g. ``llm`` without an endpoint).
    """

    def __init__(
        self,
        *,
        policy: str | None = None,
        perception: str = DEFAULT_PERCEPTION,
        options: Mapping[str, Any] | None = None,
        settings: Settings | None = None,
        blobs: BlobStore | None = None,
        max_inflight: int = 8,
        job_timeout: float = 600.0,
        executor_options: dict[str, Any] | None = None,
        plugins: str | os.PathLike[str] | None = None,
        bus: Bus | str | None = None,
        local_actors: bool | None = None,
    ) -> None:
        ensure_logging()  # structlog's unconfigured default prints to stdout
        self.settings = settings if settings is not None else Settings.from_env()
        # Tools first (built-in, the settings' plug-ins, then ``plugins``): a bad plug-in file
        # fails here, before any actor starts.
        import agentir.toolbox.tools  # noqa: F401 - registers the built-in tools
        from agentir.toolbox.plugins import ensure_plugins

        for path in self.settings.plugins:
            ensure_plugins(path)
        if plugins is not None:
            ensure_plugins(plugins)
        self.policies = Policies(self.settings.policies)
        policy = policy or DEFAULT_PLANNING
        # Build it now (kept for the jobs): an unknown name (UnknownNameError with close matches)
        # or an unconfigured policy (the llm planner without an endpoint) fails here, once.
        self.policies.planning(policy)
        self.policy = policy
        self.options = JobOptions.validate(options)
        self.defaults = JobOptions.parse(self.options)
        self.policies.reflection(self.defaults.reflection)
        self.perception_name = perception
        self.perception = self.policies.perception(perception)
        self._owned: list[Any] = []  # broker clients this Restorer opened (and closes)
        if bus is None:
            bus = DEFAULT_BUS.get()
        if isinstance(bus, str):
            from agentir.bus.redis import RedisBus
            from agentir.bus.redis_blobs import RedisBlobStore

            self.bus: Bus = RedisBus(bus, source="agentir-frontend")
            # Workers elsewhere read the images: they live in the broker, whatever ``blobs`` says.
            self.blobs: BlobStore = RedisBlobStore(bus, ttl=max(3600.0, 2 * job_timeout))
            self._owned = [self.bus, self.blobs]
            self.local_actors = bool(local_actors)
        elif bus is not None:
            self.bus = bus
            self.blobs = blobs or MemoryBlobStore()
            self.local_actors = True if local_actors is None else local_actors
        else:
            self.bus = InMemoryBus(source="agentir")
            self.blobs = blobs or MemoryBlobStore()
            self.local_actors = True if local_actors is None else local_actors
        self.max_inflight = max_inflight
        self.job_timeout = job_timeout
        self.executor_options = executor_options or {}
        self._slots = anyio.Semaphore(max_inflight)
        self._waiters: dict[str, _Waiter] = {}
        #: Jobs cancelled before they started (waiting for a slot): they fail instead of running.
        self._cancelled: set[str] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._supervisor: Supervisor | None = None

    def validate(self, policy: str | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check a job's planning policy and options as :meth:`restore` would, without running it;
        returns the options normalised (the wire form).

        Raises:
            OptionError: an unknown option or a bad value (``error.option`` names it).
            UnknownNameError: no planning policy has that name.
            ValueError: the policy cannot be built here (e.g. ``llm`` without an endpoint).
        """
        self.policies.planning(policy or self.policy)
        values = JobOptions.validate(options)
        if "reflection" in values:
            self.policies.reflection(values["reflection"])
        return values

    async def __aenter__(self) -> Restorer:
        if self._owned:
            await self._connect()  # a wrong or unreachable broker URL: one clear error, here
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        events = await self.bus.subscribe(Subjects.EVENTS, max_pending=max(64, 16 * self.max_inflight))
        self._tg.start_soon(self._pump, events)
        if self.local_actors:
            self._supervisor = Supervisor(
                build_actors(self.bus, self.blobs, perception=self.perception, policies=self.policies, executor_options=self.executor_options)
            )
            await self._tg.start(self._supervisor.run)
        return self

    async def _connect(self) -> None:
        from agentir.bus.redis import RedisBus
        from agentir.bus.redis_blobs import RedisBlobStore

        for part in self._owned:
            try:
                if isinstance(part, RedisBus):
                    await part.connect()
                elif isinstance(part, RedisBlobStore):
                    await anyio.to_thread.run_sync(part.ping)
            except BaseException:
                await self._close_owned()
                raise

    async def _close_owned(self) -> None:
        from agentir.bus.redis import RedisBus

        with anyio.CancelScope(shield=True):
            for part in self._owned:
                if isinstance(part, RedisBus):
                    await part.close()
                else:
                    part.close()  # the blob store's client (synchronous)

    async def __aexit__(self, *exc: Any) -> bool | None:
        if self._tg is None:
            raise RuntimeError("Restorer was not entered")
        if self._supervisor is not None:
            self._supervisor.stop()
        self.policies.flush()  # what a learning planner learned survives the process
        await self.bus.close()
        if self._owned:
            await self._close_owned()
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(*exc)

    async def _pump(self, events: Any) -> None:
        async for delivery in events:
            await delivery.ack()  # a notification: taken now (a broker bus holds unacknowledged ones against the mailbox)
            message = delivery.message
            waiter = self._waiters.get(getattr(message, "job", ""))
            if waiter is None or waiter.done.is_set():
                continue  # not ours, or a copy of an outcome already taken (at-least-once delivery)
            match message:
                case JobFinished():
                    waiter.finished = message
                    waiter.done.set()
                case JobFailed():
                    waiter.failed = message
                    waiter.done.set()
                case JobProgress() if waiter.on_progress is not None:
                    waiter.on_progress(message)

    async def restore(
        self,
        image: np.ndarray,
        *,
        policy: str | None = None,
        options: Mapping[str, Any] | None = None,
        job: str | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> RestoreResult:
        """Restore one uint8 H x W x 3 RGB image.

        Raises:
            ValueError: the image is not uint8 H x W x 3.
            OptionError: an option in ``options`` is unknown or has a bad value.
            RestoreError: the job failed or timed out.
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("restore() takes a uint8 H x W x 3 RGB numpy array")
        job = job or uuid.uuid4().hex[:12]
        opts = {**self.options, **self.validate(policy, options)}
        async with self._slots:
            if job in self._cancelled:
                self._cancelled.discard(job)
                raise RestoreError(job, f"job {job} was cancelled before it started")
            waiter = _Waiter(on_progress=on_progress)
            self._waiters[job] = waiter
            t0 = time.perf_counter()
            try:
                ref = self.blobs.put(np.ascontiguousarray(image))
                await self.bus.publish(Subjects.SUBMIT, JobSubmitted(job=job, image=ref, policy=policy or self.policy, options=opts), correlation_id=job)
                with anyio.move_on_after(self.job_timeout):
                    await waiter.done.wait()
            finally:
                self._waiters.pop(job, None)
            if waiter.failed is not None:
                raise RestoreError(job, waiter.failed.error, waiter.failed.trace)
            if waiter.finished is None:
                raise RestoreError(job, f"job {job} did not finish within {self.job_timeout:g} s")
            result = np.array(self.blobs.get(waiter.finished.result))
            trace = dict(waiter.finished.trace)
            trace["seconds"] = round(time.perf_counter() - t0, 4)
            trace["job"] = job
            return RestoreResult(job=job, image=result, trace=trace)

    async def drop(self, job: str, *, reason: str) -> None:
        """Tell the actors to drop ``job``'s remaining work; this Restorer's own waiters are untouched.

        For a caller that already stopped waiting (its ``restore()`` was cancelled) and wants the
        Planner and Executor to stop spending time on the job.
        """
        if self._tg is None:
            raise RuntimeError("Restorer was not entered")
        await self.bus.publish(Subjects.PLAN, JobCancel(job=job, reason=reason), correlation_id=job)

    async def cancel(self, job: str, *, reason: str = "cancelled by the client") -> bool:
        """Cancel ``job``: its ``restore()`` raises :class:`RestoreError` now.

        The Planner drops the job's search and the Executor its queued tool work (a batch already
        running finishes; its output is not used). A job still waiting for a slot never starts.
        Returns True when the job was running here (the message is sent either way, so a job
        another client of the bus submitted is cancelled too).
        """
        await self.drop(job, reason=reason)
        waiter = self._waiters.get(job)
        if waiter is None:
            if len(self._cancelled) < 4096:  # bounded: ids of jobs that may still be waiting for a slot
                self._cancelled.add(job)
            return False
        if not waiter.done.is_set():
            waiter.failed = JobFailed(job=job, error=f"job {job} was cancelled: {reason}")
            waiter.done.set()
        return True

    def stats(self) -> dict[str, Any]:
        """The Executor's counters (batches, mean batch size, tiles, dropped units, devices) and jobs in flight."""
        executor = self.executor_stats()
        stats: dict[str, Any] = executor.as_dict() if executor is not None else {}
        stats["jobs_in_flight"] = len(self._waiters)
        return stats

    @property
    def executor(self) -> Executor | None:
        """The in-process Executor actor (its scheduler batches tool calls); None when this
        Restorer runs none (not entered, or a remote bus whose workers execute)."""
        if self._supervisor is None:
            return None
        from agentir.actors.executor import Executor  # imported already: the supervisor built the actors

        executor = self._supervisor.actors.get("executor")
        return executor if isinstance(executor, Executor) else None

    def executor_stats(self) -> BatchStats | None:
        """The running Executor's batch counters, recent batch sizes included; None when none runs."""
        executor = self.executor
        return executor.stats() if executor is not None else None

    def stream(self, frames: Any, **options: Any) -> FrameStream:
        """Restore a video stream, plans reused across frames: ``async for r in restorer.stream(frames)``.

        ``frames``: an (async) iterable of uint8 H x W x 3 RGB arrays or :class:`agentir.stream.Frame`;
        ``options``: :class:`agentir.stream.StreamConfig` fields (``realtime``, ``max_frame_ms``, ...)
        or ``config=``. Results come in order (:class:`agentir.stream.StreamResult`); tools without
        held parameters share the Executor's batches with other streams and jobs. See
        :mod:`agentir.stream.api`.
        """
        from agentir.stream.api import stream_frames

        if self._tg is None:
            raise RuntimeError("Restorer was not entered")
        executor = self.executor
        scheduler = executor.scheduler if executor is not None else None
        return stream_frames(self, frames, spawn=self._tg.start_soon, scheduler=scheduler, **options)

    async def perceive(self, image: np.ndarray, *, timeout: float = 60.0) -> Perceived:
        """Rate every degradation of ``image`` through the Perceiver (request/reply on the bus)."""
        ref = self.blobs.put(np.ascontiguousarray(image))
        envelope = await self.bus.request(Subjects.PERCEIVE, PerceiveRequest(image=ref), timeout=timeout)
        return cast(Perceived, envelope.message)  # the Perceiver replies with a Perceived
