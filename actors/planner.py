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
from typing import Any

import structlog

from actors.base import Actor
from agent_policies.registry import DEFAULT_JOB_OPTIONS, DEFAULT_PLANNING, PLANNING, REFLECTION
from agent_policies.search import Budget, Execute, Finish, Search
from bus.base import Delivery
from bus.messages import ExecuteStep, JobCancel, JobFailed, JobFinished, JobProgress, Perceived, Reflected, Subjects
from toolbox.base import tools_for
from toolbox.costs import affordable

log = structlog.get_logger(__name__)


class Planner(Actor):
    name = "planner"
    subjects = (Subjects.PLAN,)
    group = "planner"
    concurrency = 1  # decisions are cheap; one at a time keeps job state simple

    def __init__(self, bus: Any, blobs: Any) -> None:
        super().__init__(bus, blobs)
        self.searches: dict[str, Search] = {}
        self._reflection: dict[str, str] = {}
        self._started: dict[str, float] = {}
        #: Recently cancelled jobs, so that a late perception does not start their search again.
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        #: Planning policies used so far (learning ones are flushed on stop).
        self._policies: dict[str, Any] = {}

    async def on_stop(self) -> None:
        for policy in self._policies.values():
            flush = getattr(policy, "flush", None)
            if callable(flush):
                flush()  # small atomic JSON write: learned experience survives a restart

    async def handle(self, delivery: Delivery) -> None:
        match delivery.message:
            case JobCancel(job=job):
                if job:
                    await self._cancel_job(job, delivery)
            case Perceived(job=job) as p if job:
                if job in self.searches or job in self._cancelled:
                    return  # redelivered perception (the search is already running), or cancelled
                options = {**DEFAULT_JOB_OPTIONS, **p.options}
                reflection_name = str(options["reflection"])
                planner = PLANNING.get(p.policy or DEFAULT_PLANNING)
                self._policies[planner.name] = planner
                reflection = REFLECTION.get(reflection_name)
                search = Search(
                    image=p.image,
                    levels=p.levels,
                    scores=p.scores,
                    planner=planner,
                    reflection=reflection,
                    tools=_tool_lister(options),
                    budget=Budget.from_options(options),
                    seed=zlib.crc32(job.encode()),
                    subtasks=_given_subtasks(options),
                )
                self.searches[job] = search
                self._reflection[job] = reflection_name
                self._started[job] = time.perf_counter() - p.seconds
                search.trace["perception_seconds"] = round(p.seconds, 4)
                # A blocking policy (the llm planner asks over HTTP) plans in a worker thread.
                blocking = bool(getattr(planner, "blocking", False))
                action = await self.offload(search.start) if blocking else search.start()
                await self._progress(job, "planned", " -> ".join(search.trace["plan"]) or "nothing to do", search)
                await self._act(job, search, action, delivery)
            case Reflected(job=job) as r:
                running = self.searches.get(job)
                if running is None:
                    log.info("planner.unknown_job", job=job)  # finished already: a duplicate
                    return
                rollbacks = running.rollbacks
                args = (r.node, r.subtask, r.candidates, r.verdict, r.best)
                if getattr(running.planner, "blocking", False):
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
        await self.bus.publish(Subjects.EVENTS, JobFinished(job=job, result=action.image, trace=trace), correlation_id=job, cause=delivery.envelope.id)

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
                JobFailed(job=job, error=f"job {job} was cancelled: {reason}", trace=search.trace),
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


def _tool_lister(options: dict[str, Any]):
    """Tools per subtask, optionally restricted by the job's ``tools`` option ({subtask: [names]})
    and, among the registered ones, by its ``max_tool_cost`` option (seconds per megapixel)."""
    override = options.get("tools") or {}
    if not isinstance(override, dict):
        raise ValueError("job option 'tools' must map a subtask to a list of tool names")
    max_cost = max_tool_cost(options)

    def lister(subtask: str) -> list[str]:
        if subtask in override:
            return [str(t) for t in override[subtask]]
        return affordable(tools_for(subtask), max_cost)

    return lister


def max_tool_cost(options: dict[str, Any]) -> float | None:
    """The job's ``max_tool_cost`` option, validated (a positive number of seconds per megapixel)."""
    value = options.get("max_tool_cost")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"job option 'max_tool_cost' must be a positive number of seconds per megapixel, got {value!r}")
    return float(value)


def _given_subtasks(options: dict[str, Any]) -> list[str] | None:
    """The job's ``subtasks`` option (known degradations that replace perception), validated."""
    given = options.get("subtasks")
    if given is None:
        return None
    if not isinstance(given, list) or not all(isinstance(s, str) for s in given):
        raise ValueError("job option 'subtasks' must be a list of degradation names")
    return given
