"""The Planner: owns each job's search tree and decides the next step.

It starts a :class:`~agentir.agent_policies.search.Search` when a job's perception arrives, turns each
reflection into the next action (run a tool wave, roll back, re-plan, finish) and publishes
``ExecuteStep`` or ``JobFinished``. Job state lives here, so one Planner serves a bus (several
would need jobs partitioned by id). Duplicate deliveries are recognised by the search and ignored.

Shared state (several Planners, e.g. one per worker process on a Redis bus): given a ``state``
store (:class:`JobStateStore`), the Planner keeps no job between messages. Each Perceived or
Reflected loads the job's snapshot, advances the search, and saves it with compare-and-set
before publishing what it decided, so any Planner can take any message of any job, and of two
copies of one message (a redelivery) exactly one advances the search. The snapshot records the
last decision and whether it was published: a copy of the message that arrives after a crash
between saving and publishing publishes it (once, after the bus's visibility timeout has given
the deciding Planner time to mark it sent); any other copy, and any copy for a finished job, is
ignored. A finished job's
snapshot stays (``JobFinished`` is published again for a resubmitted job, e.g. after a front end
restarted) until the store expires it.
"""

from __future__ import annotations

import io
import pickle
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import structlog

from agentir.actors.base import Actor
from agentir.agent_policies.options import JobOptions
from agentir.agent_policies.planning import LearningPolicy
from agentir.agent_policies.registry import Policies
from agentir.agent_policies.search import Execute, Finish, Search
from agentir.agent_policies.trace import to_wire
from agentir.bus.base import Bus, Delivery
from agentir.bus.blobs import BlobStore
from agentir.bus.messages import ExecuteStep, JobCancel, JobFailed, JobFinished, JobProgress, Perceived, Reflected, Subjects
from agentir.toolbox.base import tools_for
from agentir.toolbox.costs import affordable

log = structlog.get_logger(__name__)


class JobStateStore(Protocol):
    """Versioned state per job with compare-and-set (``agentir.bus.redis.RedisStateStore``, :class:`MemoryStateStore`)."""

    async def load(self, key: str) -> tuple[int, bytes] | None:
        """``(version, data)`` of ``key``, or None."""

    async def save(self, key: str, version: int, data: bytes) -> bool:
        """Store ``data`` as version ``version + 1`` if ``key`` is still at ``version`` (0: absent)."""


class MemoryStateStore:
    """A :class:`JobStateStore` in this process (tests; Planners sharing one process)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[int, bytes]] = {}

    async def load(self, key: str) -> tuple[int, bytes] | None:
        return self._data.get(key)

    async def save(self, key: str, version: int, data: bytes) -> bool:
        current = self._data.get(key, (0, b""))[0]
        if current != version:
            return False
        self._data[key] = (version + 1, data)
        return True


# What a snapshot may contain: the search's own types and plain containers. Anything else in a
# stored snapshot is refused (a snapshot is data from the broker, not code).
_SNAPSHOT_MODULES = frozenset({"agentir.agent_policies.search", "agentir.bus.blobs", "agentir.bus.messages"})
_SNAPSHOT_BUILTINS = frozenset({"set", "frozenset", "dict", "list", "tuple"})
# The search's attributes that are policies or functions: re-attached on load, never stored.
_LIVE_ATTRS = ("planner", "reflection", "_learner", "_clock")


class _SnapshotUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _SNAPSHOT_MODULES or (module == "builtins" and name in _SNAPSHOT_BUILTINS):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a planner snapshot may not contain {module}.{name}")


class Planner(Actor):
    name = "planner"
    subjects = (Subjects.PLAN,)
    group = "planner"
    concurrency = 1  # decisions are cheap; one at a time keeps job state simple

    def __init__(
        self, bus: Bus, blobs: BlobStore, *, policies: Policies | None = None, defaults: JobOptions | None = None, state: JobStateStore | None = None
    ) -> None:
        """``policies``: where planning and reflection policies come from (default: built-in
        settings); ``defaults``: the job options a job's own options apply over; ``state``: share
        job state with other Planners through this store (see the module docstring)."""
        super().__init__(bus, blobs)
        self.state = state
        # Shared snapshots move between machines: wall-clock time, not this process's monotonic clock.
        self._now: Callable[[], float] = time.time if state is not None else time.perf_counter
        self.policies = policies if policies is not None else Policies()
        self.defaults = defaults if defaults is not None else JobOptions()
        self.searches: dict[str, Search] = {}
        self._reflection: dict[str, str] = {}
        self._started: dict[str, float] = {}
        #: Recently cancelled jobs, so that a late perception does not start their search again.
        self._cancelled: OrderedDict[str, None] = OrderedDict()

    async def on_stop(self) -> None:
        self.policies.flush()  # small atomic JSON writes: learned experience survives a restart

    def _new_search(self, job: str, p: Perceived) -> Search:
        options = JobOptions.parse(p.options, base=self.defaults)
        reflection_name = options.reflection
        planner = self.policies.planning(p.policy or None)
        reflection = self.policies.reflection(reflection_name)
        search = Search(
            image=p.image,
            levels=p.levels,
            scores=p.scores,
            planner=planner,
            reflection=reflection,
            tools=_tool_lister(options),
            budget=options.budget(),
            seed=zlib.crc32(job.encode()),
            subtasks=options.subtasks,
            **({"clock": time.time} if self.state is not None else {}),
        )
        self.searches[job] = search
        self._reflection[job] = reflection_name
        self._started[job] = self._now() - p.seconds
        search.trace["perception_seconds"] = round(p.seconds, 4)
        return search

    async def handle(self, delivery: Delivery) -> None:
        if self.state is not None:
            await self._handle_shared(delivery, self.state)
            return
        match delivery.message:
            case JobCancel(job=job):
                if job:
                    await self._cancel_job(job, delivery)
            case Perceived(job=job) as p if job:
                if job in self.searches or job in self._cancelled:
                    return  # redelivered perception (the search is already running), or cancelled
                search = self._new_search(job, p)
                planner = search.planner
                # A blocking policy (the llm planner asks over HTTP) plans in a worker thread.
                action = await self.offload(search.start) if planner.blocking else search.start()
                await self._progress(job, "planned", " -> ".join(search.trace["plan"]) or "nothing to do", search)
                await self._act(job, search, action, delivery)
            case Reflected(job=job) as r:
                running = self.searches.get(job)
                if running is None:
                    log.info("planner.unknown_job", job=job)  # finished already: a duplicate
                    return
                rollbacks = running.rollbacks
                args = (r.node, r.subtask, r.candidates, r.verdict, r.best)
                if running.planner.blocking:
                    following = await self.offload(running.on_reflected, *args)
                else:
                    following = running.on_reflected(*args)
                if following is None:
                    return
                if running.rollbacks > rollbacks:
                    await self._progress(job, "rollback", f"{r.subtask} failed at node {r.node}; re-planning", running)
                await self._act(job, running, following, delivery)
            case other:
                raise TypeError(f"planner cannot handle {type(other).__name__}")

    async def _act(self, job: str, search: Search, action: Execute | Finish, delivery: Delivery) -> None:
        if isinstance(action, Execute):
            await self._progress(job, "executing", f"{action.subtask}: {', '.join(action.tools)}", search)
            await self.bus.publish(
                Subjects.EXECUTE,
                ExecuteStep(
                    job=job,
                    node=action.node,
                    subtask=action.subtask,
                    image=action.image,
                    tools=action.tools,
                    remaining=action.remaining,
                    prior=action.prior,
                    reflection=self._reflection[job],
                ),
                correlation_id=job,
                cause=delivery.envelope.id,
            )
            return
        trace = search.trace
        trace["seconds"] = round(self._now() - self._started.pop(job), 4)
        del self.searches[job]
        self._reflection.pop(job, None)
        log.info("job.planned_finish", job=job, status=action.status, tool_calls=search.tool_calls, rollbacks=search.rollbacks)
        await self.bus.publish(Subjects.EVENTS, JobFinished(job=job, result=action.image, trace=to_wire(trace)), correlation_id=job, cause=delivery.envelope.id)

    async def _cancel_job(self, job: str, delivery: Delivery) -> None:
        """Drop ``job``'s search, tell the Executor to drop its queued work, and report the job failed."""
        self._cancelled[job] = None
        while len(self._cancelled) > 4096:
            self._cancelled.popitem(last=False)
        search = self.searches.pop(job, None)
        self._reflection.pop(job, None)
        self._started.pop(job, None)
        reason = getattr(delivery.message, "reason", "") or "cancelled by the client"
        await self.bus.publish(Subjects.EXECUTE, JobCancel(job=job, reason=reason), correlation_id=job, cause=delivery.envelope.id)
        if search is not None:
            log.info("job.cancelled", job=job, tool_calls=search.tool_calls)
            await self.bus.publish(
                Subjects.EVENTS,
                JobFailed(job=job, error=f"job {job} was cancelled: {reason}", trace=to_wire(search.trace)),
                correlation_id=job,
                cause=delivery.envelope.id,
            )

    # -- shared state --------------------------------------------------------------------------
    def _freeze(self, job: str, search: Search | None, policy: str, **extra: Any) -> bytes:
        state = None if search is None else {k: v for k, v in vars(search).items() if k not in _LIVE_ATTRS}
        return pickle.dumps(
            {"search": state, "policy": policy, "reflection": self._reflection.get(job, ""), "started": self._started.get(job, 0.0), **extra},
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    def _thaw(self, job: str, data: bytes) -> tuple[Search | None, dict[str, Any]]:
        snap = _SnapshotUnpickler(io.BytesIO(data)).load()
        state = snap.pop("search")
        if state is None:
            return None, snap
        search = Search.__new__(Search)
        vars(search).update(state)
        planner = self.policies.planning(snap["policy"] or None)
        search.planner = planner
        search.reflection = self.policies.reflection(snap["reflection"] or JobOptions().reflection)
        search._learner = planner if isinstance(planner, LearningPolicy) else None  # type: ignore[assignment]
        search._clock = time.time
        self.searches[job] = search
        self._reflection[job] = snap["reflection"]
        self._started[job] = snap["started"]
        return search, snap

    def _forget(self, job: str) -> None:
        self.searches.pop(job, None)
        self._reflection.pop(job, None)
        self._started.pop(job, None)

    async def _handle_shared(self, delivery: Delivery, store: JobStateStore) -> None:
        message = delivery.message
        job = getattr(message, "job", "")
        if not job:
            return
        try:
            await self._advance_shared(delivery, store, job)
        finally:
            self._forget(job)

    async def _advance_shared(self, delivery: Delivery, store: JobStateStore, job: str) -> None:
        message = delivery.message
        loaded = await store.load(job)
        version = loaded[0] if loaded is not None else 0
        search, snap = self._thaw(job, loaded[1]) if loaded is not None else (None, {})
        if isinstance(message, JobCancel):
            reason = message.reason or "cancelled by the client"
            running = search is not None and search.finished is None and not snap.get("cancelled")
            if not await store.save(job, version, self._freeze(job, search, snap.get("policy", ""), cancelled=True)):
                raise RuntimeError(f"job {job} changed while being cancelled; cancel it again")
            await self.bus.publish(Subjects.EXECUTE, JobCancel(job=job, reason=reason), correlation_id=job, cause=delivery.envelope.id)
            if running and search is not None:
                log.info("job.cancelled", job=job, tool_calls=search.tool_calls)
                await self.bus.publish(
                    Subjects.EVENTS,
                    JobFailed(job=job, error=f"job {job} was cancelled: {reason}", trace=to_wire(search.trace)),
                    correlation_id=job,
                    cause=delivery.envelope.id,
                )
            return
        if snap.get("cancelled"):
            return
        if isinstance(message, Perceived):
            key: Any = "perceived"
            if search is not None:
                if search.finished is not None:
                    # The job is resubmitted (its front end restarted): say again how it ended.
                    await self._act(job, search, search.finished, delivery)
                else:
                    await self._resend(job, search, snap, key, version, delivery, store)
                return
            search = self._new_search(job, message)
            planner = search.planner
            action: Execute | Finish | None = await self.offload(search.start) if planner.blocking else search.start()
            policy = message.policy
        elif isinstance(message, Reflected):
            if search is None:
                log.info("planner.unknown_job", job=job)
                return
            r = message
            key = (r.node, r.subtask, len(r.candidates))
            if search.finished is not None or snap.get("last") == key:
                # A late copy (a stalled Executor resumed after its step was redone elsewhere): the
                # decision it leads to was made already; publish it only if it never was.
                await self._resend(job, search, snap, key, version, delivery, store)
                return
            rollbacks = search.rollbacks
            args = (r.node, r.subtask, r.candidates, r.verdict, r.best)
            action = await self.offload(search.on_reflected, *args) if search.planner.blocking else search.on_reflected(*args)
            if action is None:
                await self._resend(job, search, snap, key, version, delivery, store)
                return
            policy = snap.get("policy", "")
        else:
            raise TypeError(f"planner cannot handle {type(message).__name__}")
        if action is None:
            return
        # Decide, record the decision (compare-and-set), then carry it out, then mark it done.
        if not await store.save(job, version, self._freeze(job, search, policy, last=key, action=action, sent=False, decided=time.time())):
            log.info("planner.lost_race", job=job, key=str(key))  # another Planner took this very message
            return
        if isinstance(message, Perceived):
            await self._progress(job, "planned", " -> ".join(search.trace["plan"]) or "nothing to do", search)
        elif search.rollbacks > rollbacks:
            await self._progress(job, "rollback", f"{message.subtask} failed at node {message.node}; re-planning", search)
        started = self._started.get(job, 0.0)
        await self._act(job, search, action, delivery)
        self._started[job] = started
        await store.save(job, version + 1, self._freeze(job, search, policy, last=key, action=action, sent=True))

    async def _resend(self, job: str, search: Search, snap: dict[str, Any], key: Any, version: int, delivery: Delivery, store: JobStateStore) -> None:
        """A copy of the message behind the last decision: publish that decision if it never was."""
        if snap.get("last") != key or snap.get("sent", True) or snap.get("action") is None:
            log.info("planner.duplicate_ignored", job=job, key=str(key))
            return
        # Saved but not yet marked sent: the Planner that decided may be publishing it right now.
        # Give it the bus's lease (a member silent that long has lost its deliveries too), then
        # publish it here only if it is still unsent: a decision is lost by no crash and sent twice
        # only by a Planner stalled for longer than the lease between saving and publishing.
        lease = float(getattr(self.bus, "visibility_timeout", 0.0) or 0.0)
        deadline = float(snap.get("decided", 0.0)) + lease
        while time.time() < deadline:
            await anyio.sleep(min(0.05, max(0.0, deadline - time.time())))
            loaded = await store.load(job)
            if loaded is None or loaded[0] != version:
                log.info("planner.duplicate_ignored", job=job, key=str(key))  # the decider marked it sent
                return
        log.info("planner.resend", job=job, key=str(key))
        started = self._started.get(job, 0.0)
        await self._act(job, search, snap["action"], delivery)
        self._started[job] = started
        await store.save(job, version, self._freeze(job, search, snap.get("policy", ""), last=key, action=snap["action"], sent=True))

    async def _progress(self, job: str, stage: str, detail: str, search: Search) -> None:
        await self.bus.publish(Subjects.EVENTS, JobProgress(job=job, stage=stage, detail=detail, tool_calls=search.tool_calls), correlation_id=job)

    async def on_failure(self, exc: Exception, delivery: Delivery) -> None:
        job = getattr(delivery.message, "job", "")
        self.searches.pop(job, None)  # a job whose search broke is over; do not leak its state
        self._reflection.pop(job, None)
        self._started.pop(job, None)
        await super().on_failure(exc, delivery)


def _tool_lister(options: JobOptions) -> Callable[[str], list[str]]:
    """Tools per subtask: the job's ``tools`` option where it names a subtask, else the
    registered ones, minus those slower than its ``max_tool_cost`` (seconds per megapixel)."""
    override = options.tools or {}
    max_cost = options.max_tool_cost

    def lister(subtask: str) -> list[str]:
        if subtask in override:
            return list(override[subtask])
        return affordable(tools_for(subtask), max_cost)

    return lister
