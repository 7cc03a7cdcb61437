"""The Planner: owns each job's search tree and decides the next step.

It starts a :class:`~agent_policies.search.Search` when a job's perception arrives, turns each
reflection into the next action (run a tool wave, roll back, re-plan, finish) and publishes
``ExecuteStep`` or ``JobFinished``. Job state lives here, so one Planner serves a bus (several
would need jobs partitioned by id). Duplicate deliveries are recognised by the search and ignored.
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from collections.abc import Callable

import structlog

from actors.base import Actor
from agent_policies.options import JobOptions
from agent_policies.registry import Policies
from agent_policies.search import Execute, Finish, Search
from agent_policies.trace import to_wire
from bus.base import Bus, Delivery
from bus.blobs import BlobStore
from bus.messages import ExecuteStep, JobCancel, JobFailed, JobFinished, JobProgress, Perceived, Reflected, Subjects
from toolbox.base import tools_for
from toolbox.costs import affordable

log = structlog.get_logger(__name__)


class Planner(Actor):
    name = "planner"
    subjects = (Subjects.PLAN,)
    group = "planner"
    concurrency = 1  # decisions are cheap; one at a time keeps job state simple

    def __init__(self, bus: Bus, blobs: BlobStore, *, policies: Policies | None = None, defaults: JobOptions | None = None) -> None:
        """``policies``: where planning and reflection policies come from (default: built-in
        settings); ``defaults``: the job options a job's own options apply over."""
        super().__init__(bus, blobs)
        self.policies = policies if policies is not None else Policies()
        self.defaults = defaults if defaults is not None else JobOptions()
        self.searches: dict[str, Search] = {}
        self._reflection: dict[str, str] = {}
        self._started: dict[str, float] = {}
        #: Recently cancelled jobs, so that a late perception does not start their search again.
        self._cancelled: OrderedDict[str, None] = OrderedDict()

    async def on_stop(self) -> None:
        self.policies.flush()  # small atomic JSON writes: learned experience survives a restart

    async def handle(self, delivery: Delivery) -> None:
        match delivery.message:
            case JobCancel(job=job):
                if job:
                    await self._cancel_job(job, delivery)
            case Perceived(job=job) as p if job:
                if job in self.searches or job in self._cancelled:
                    return  # redelivered perception (the search is already running), or cancelled
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
                )
                self.searches[job] = search
                self._reflection[job] = reflection_name
                self._started[job] = time.perf_counter() - p.seconds
                search.trace["perception_seconds"] = round(p.seconds, 4)
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
        trace["seconds"] = round(time.perf_counter() - self._started.pop(job), 4)
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
