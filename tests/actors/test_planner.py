"""The Planner: from perception and reflections to ExecuteSteps and JobFinished, rollbacks, budgets, cancels, options.

The test plays the Perceiver, Executor and Reflector: it publishes ``Perceived`` and ``Reflected``
by hand and reads what the Planner publishes on the execute and events subjects. Tools are named
by the job's ``tools`` option (built-in names); none of them runs.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import numpy as np
from actor_helpers import Inbox

import agentir.toolbox.tools  # noqa: F401 - registers the built-in tools the jobs name (options may be checked against them)
from agentir.actors.planner import Planner
from agentir.bus.base import Delivery
from agentir.bus.blobs import BlobRef, MemoryBlobStore
from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import Candidate, ExecuteStep, JobCancel, JobFailed, JobFinished, JobProgress, Perceived, Reflected, Subjects
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS

#: The paper's search: threshold reflection, every failure rolled back.
STRICT = {"reflection": "threshold", "keep_improved": False}
#: Known tool names per subtask (the job's ``tools`` option).
TOOLS = {"noise": ["dct_denoise"], "haze": ["dcp_dehaze"]}


@dataclass
class Harness:
    planner: Planner
    bus: InMemoryBus
    blobs: MemoryBlobStore
    execute: Inbox
    events: Inbox
    _syncs: itertools.count = field(default_factory=itertools.count)

    def image(self, value: int) -> BlobRef:
        return self.blobs.put(np.full((4, 6, 3), value, dtype=np.uint8))

    async def perceived(self, job: str, image: BlobRef, levels: dict[str, str], *, policy: str = "rules", options: dict | None = None) -> str:
        """Publish the Perceiver's answer for ``job`` (every degradation not named is very_low)."""
        full = {d: levels.get(d, "very_low") for d in DEGRADATIONS}
        scores = {d: float(LEVELS.index(lv)) for d, lv in full.items()}
        message = Perceived(
            job=job, image=image, levels=full, scores=scores, seconds=0.01, policy=policy, options={**STRICT, "tools": TOOLS, **(options or {})}
        )
        return await self.bus.publish(Subjects.PLAN, message, correlation_id=job)

    async def reflected(self, job: str, node: int, subtask: str, candidates: list[Candidate], verdict: str, best: int) -> str:
        """Publish the Reflector's judgement of one node."""
        message = Reflected(job=job, node=node, subtask=subtask, candidates=candidates, verdict=verdict, best=best)
        return await self.bus.publish(Subjects.PLAN, message, correlation_id=job)

    async def step(self) -> tuple[ExecuteStep, Delivery]:
        delivery = await self.execute.next()
        assert isinstance(delivery.message, ExecuteStep), delivery.message
        return delivery.message, delivery

    async def finished(self, job: str) -> JobFinished:
        delivery, _ = await self.events.until(lambda m: isinstance(m, (JobFinished, JobFailed)) and m.job == job)
        assert isinstance(delivery.message, JobFinished), delivery.message
        return delivery.message

    async def sync(self) -> None:
        """Run a fresh job through the Planner and check that its messages are the next on both subjects.

        The Planner handles one message at a time, in order, so anything it would have published for
        earlier messages would arrive before these: this proves earlier messages published nothing.
        """
        job = f"sync-{next(self._syncs)}"
        await self.perceived(job, self.image(250), {"noise": "high"})
        step, _ = await self.step()
        assert step.job == job, f"unexpected {step!r}"
        progress = (await self.events.next()).message
        assert isinstance(progress, JobProgress) and progress.job == job and progress.stage == "planned", f"unexpected {progress!r}"


def make_planner(bus: InMemoryBus, blobs: MemoryBlobStore) -> Planner:
    """The Planner under test, built as ``agentir.actors.supervisor.build_actors`` builds it."""
    return Planner(bus, blobs)


@asynccontextmanager
async def running() -> AsyncIterator[Harness]:
    """A Planner on an in-memory bus, with subscriptions to the execute and events subjects."""
    async with InMemoryBus() as bus, anyio.create_task_group() as tg:
        blobs = MemoryBlobStore()
        execute = Inbox(await bus.subscribe(Subjects.EXECUTE, max_pending=256))
        events = Inbox(await bus.subscribe(Subjects.EVENTS, max_pending=256))
        planner = make_planner(bus, blobs)
        await tg.start(planner.run)
        try:
            yield Harness(planner, bus, blobs, execute, events)
        finally:
            planner.stop()


def out(tool: str, image: BlobRef | None, level: str, score: float | None = None, error: str = "") -> Candidate:
    return Candidate(tool=tool, image=image, level=level, score=float(LEVELS.index(level)) if score is None else score, seconds=0.01, error=error)


async def test_nothing_present_finishes_at_once():
    """A perception with nothing at medium or worse finishes the job at once with the input, status nothing_to_do, no tool run."""
    async with running() as h:
        ref = h.image(10)
        await h.perceived("clean", ref, {"noise": "low", "haze": "very_low"})
        done = await h.finished("clean")
        assert done.result == ref
        assert done.trace["status"] == "nothing_to_do" and done.trace["plan"] == [] and done.trace["tool_calls"] == 0
        await h.sync()  # and no ExecuteStep was published for it
        assert "clean" not in h.planner.searches


async def test_first_step_runs_the_first_planned_subtask():
    """The first ExecuteStep treats the first subtask of the plan with the job's tools and reflection, caused by the Perceived."""
    async with running() as h:
        ref = h.image(10)
        perceived_id = await h.perceived("job", ref, {"haze": "medium", "noise": "high"})
        step, delivery = await h.step()
        assert step.job == "job" and step.node == 0 and step.subtask == "noise" and step.image == ref
        assert step.tools == ["dct_denoise"] and step.remaining == [] and step.prior == []
        assert step.reflection == "threshold"
        assert delivery.envelope.correlation_id == "job" and delivery.envelope.cause == perceived_id
        planned, _ = await h.events.until(lambda m: isinstance(m, JobProgress) and m.stage == "planned")
        assert planned.message.detail == "noise -> haze"


async def test_success_verdict_moves_on_to_the_next_subtask_then_finishes():
    """A success verdict makes the best output the next node's image; the last success finishes the job with it."""
    async with running() as h:
        ref0, ref1, ref2 = h.image(10), h.image(11), h.image(12)
        await h.perceived("job", ref0, {"haze": "medium", "noise": "high"})
        first, _ = await h.step()
        reflected_id = await h.reflected("job", first.node, "noise", [out("dct_denoise", ref1, "low")], "success", 0)
        second, delivery = await h.step()
        assert second.subtask == "haze" and second.image == ref1 and second.node != first.node and second.tools == ["dcp_dehaze"]
        assert delivery.envelope.cause == reflected_id
        await h.reflected("job", second.node, "haze", [out("dcp_dehaze", ref2, "very_low")], "accept", 0)
        done = await h.finished("job")
    assert done.result == ref2
    assert done.trace["status"] == "success" and done.trace["done"] == ["noise", "haze"]
    assert done.trace["tool_calls"] == 2 and [s["tool"] for s in done.trace["steps"]] == ["dct_denoise", "dcp_dehaze"]
    assert "job" not in h.planner.searches


async def test_failure_verdict_rolls_back_and_replans_without_that_subtask_first():
    """A failure verdict rolls the node back (JobProgress 'rollback') and re-plans from the same image with the failed subtask not first."""
    async with running() as h:
        ref0, bad, ref1, ref2 = h.image(10), h.image(11), h.image(12), h.image(13)
        await h.perceived("job", ref0, {"haze": "medium", "noise": "high"})
        first, _ = await h.step()
        assert first.subtask == "noise"
        await h.reflected("job", first.node, "noise", [out("dct_denoise", bad, "high")], "failure", 0)
        rollback, _ = await h.events.until(lambda m: isinstance(m, JobProgress) and m.stage == "rollback")
        assert rollback.message.job == "job" and "noise" in rollback.message.detail
        retry, _ = await h.step()
        assert retry.node == first.node and retry.subtask == "haze" and retry.image == ref0
        await h.reflected("job", retry.node, "haze", [out("dcp_dehaze", ref1, "very_low")], "accept", 0)
        then, _ = await h.step()
        assert then.subtask == "noise" and then.image == ref1
        await h.reflected("job", then.node, "noise", [out("dct_denoise", ref2, "very_low")], "accept", 0)
        done = await h.finished("job")
    assert done.result == ref2 and done.trace["done"] == ["haze", "noise"] and done.trace["rollbacks"] == 1
    assert any(e["type"] == "rollback" and e["subtask"] == "noise" for e in done.trace["events"])


async def test_continue_verdict_runs_the_next_wave_with_earlier_outputs_as_prior():
    """With one tool per wave, a continue verdict runs the subtask's next tool at the same node, the rated outputs so far as prior."""
    async with running() as h:
        ref0, first_out = h.image(10), h.image(11)
        await h.perceived("job", ref0, {"noise": "high"}, options={"tools": {"noise": ["dct_denoise", "bilateral_denoise", "nlm_denoise"]}, "wave": 1})
        first, _ = await h.step()
        assert first.tools == ["dct_denoise"] and first.remaining == ["bilateral_denoise", "nlm_denoise"]
        tried = [out("dct_denoise", first_out, "medium")]
        await h.reflected("job", first.node, "noise", tried, "continue", 0)
        second, _ = await h.step()
    assert second.node == first.node and second.image == ref0
    assert second.tools == ["bilateral_denoise"] and second.remaining == ["nlm_denoise"] and second.prior == tried


async def test_tool_call_budget_ends_the_job():
    """Once max_tool_calls tools have run, the job finishes with the best result so far instead of starting the next subtask."""
    async with running() as h:
        ref0, ref1 = h.image(10), h.image(11)
        await h.perceived("job", ref0, {"haze": "medium", "noise": "high"}, options={"max_tool_calls": 1})
        first, _ = await h.step()
        await h.reflected("job", first.node, "noise", [out("dct_denoise", ref1, "low")], "success", 0)
        done = await h.finished("job")
        assert done.result == ref1
        assert done.trace["status"] == "fallback" and done.trace["tool_calls"] == 1 and done.trace["done"] == ["noise"]
        assert any(e["type"] == "budget" and e["reason"] == "tool-call budget" for e in done.trace["events"])
        await h.sync()  # no ExecuteStep for haze


async def test_redelivered_perception_of_a_running_job_is_ignored():
    """A second Perceived for a job whose search runs publishes no second ExecuteStep."""
    async with running() as h:
        ref = h.image(10)
        await h.perceived("job", ref, {"noise": "high"})
        first, _ = await h.step()
        await h.perceived("job", ref, {"noise": "high"})
        await h.events.until(lambda m: isinstance(m, JobProgress) and m.job == "job" and m.stage == "executing")
        await h.sync()
        assert h.planner.failed == 0 and first.job == "job"


async def test_redelivered_reflection_is_ignored():
    """The same Reflected delivered twice advances the search once."""
    async with running() as h:
        ref0, ref1 = h.image(10), h.image(11)
        await h.perceived("job", ref0, {"haze": "medium", "noise": "high"})
        first, _ = await h.step()
        judged = [out("dct_denoise", ref1, "low")]
        await h.reflected("job", first.node, "noise", judged, "success", 0)
        second, _ = await h.step()
        await h.reflected("job", first.node, "noise", judged, "success", 0)
        await h.events.until(lambda m: isinstance(m, JobProgress) and m.job == "job" and m.detail.startswith("haze"))
        await h.sync()
    assert second.subtask == "haze" and h.planner.failed == 0


async def test_reflection_for_an_unknown_job_is_ignored():
    """A Reflected for a job the Planner does not know (finished already) publishes nothing and fails nothing."""
    async with running() as h:
        await h.reflected("ghost", 0, "noise", [out("dct_denoise", h.image(11), "very_low")], "accept", 0)
        await h.sync()
        assert h.planner.failed == 0 and "ghost" not in h.planner.searches


async def test_cancel_stops_a_running_job_and_a_late_perception_does_not_restart_it():
    """JobCancel passes a JobCancel to the Executor and reports JobFailed; later Reflected and Perceived for the job are ignored."""
    async with running() as h:
        ref0 = h.image(10)
        await h.perceived("job", ref0, {"noise": "high"})
        first, _ = await h.step()
        cancel_id = await h.bus.publish(Subjects.PLAN, JobCancel(job="job", reason="client gave up"), correlation_id="job")
        passed = await h.execute.next()
        assert isinstance(passed.message, JobCancel) and passed.message.job == "job" and passed.message.reason == "client gave up"
        assert passed.envelope.cause == cancel_id
        failed, _ = await h.events.until(lambda m: isinstance(m, JobFailed))
        assert failed.message.job == "job" and "cancelled" in failed.message.error and "client gave up" in failed.message.error
        assert failed.message.trace["plan"] == ["noise"]
        await h.reflected("job", first.node, "noise", [out("dct_denoise", h.image(11), "very_low")], "accept", 0)
        await h.perceived("job", ref0, {"noise": "high"})
        await h.sync()
        assert "job" not in h.planner.searches and h.planner.failed == 0


async def test_cancel_before_perception_keeps_the_job_from_starting():
    """A JobCancel that overtakes the job's perception is passed on, reports nothing (no search yet), and the perception is then ignored."""
    async with running() as h:
        await h.bus.publish(Subjects.PLAN, JobCancel(job="early", reason=""), correlation_id="early")
        passed = (await h.execute.next()).message
        assert isinstance(passed, JobCancel) and passed.job == "early" and passed.reason == "cancelled by the client"
        await h.perceived("early", h.image(10), {"noise": "high"})
        await h.sync()
        assert "early" not in h.planner.searches


async def test_given_subtasks_replace_perception():
    """The job option 'subtasks' plans the named degradations instead of the perceived ones."""
    async with running() as h:
        ref0, ref1 = h.image(10), h.image(11)
        await h.perceived("job", ref0, {"noise": "very_high"}, options={"subtasks": ["haze"]})
        step, _ = await h.step()
        assert step.subtask == "haze" and step.tools == ["dcp_dehaze"]
        await h.reflected("job", step.node, "haze", [out("dcp_dehaze", ref1, "very_low")], "accept", 0)
        done = await h.finished("job")
    assert done.trace["plan"] == ["haze"] and done.trace["done"] == ["haze"] and done.result == ref1


async def test_tools_option_chooses_each_subtasks_tools_and_wave_zero_runs_them_together():
    """The job option 'tools' names the tools tried per subtask, in order; with 'wave' 0 they run in one step."""
    async with running() as h:
        await h.perceived(
            "job", h.image(10), {"rain": "high"}, options={"tools": {"rain": ["median_derain", "streak_derain", "streak_derain_mild"]}, "wave": 0}
        )
        step, _ = await h.step()
    assert step.subtask == "rain" and step.tools == ["median_derain", "streak_derain", "streak_derain_mild"] and step.remaining == []


async def test_fixed_planning_policy_orders_by_the_vocabulary():
    """The job's planning policy orders the subtasks: 'fixed' takes the vocabulary's order (low_resolution first), 'rules' puts noise first."""
    async with running() as h:
        levels = {"noise": "medium", "low_resolution": "very_high"}
        await h.perceived("fixed", h.image(10), levels, policy="fixed", options={"tools": {"noise": ["dct_denoise"], "low_resolution": ["bicubic_sr"]}})
        await h.perceived("rules", h.image(11), levels, policy="rules", options={"tools": {"noise": ["dct_denoise"], "low_resolution": ["bicubic_sr"]}})
        fixed, _ = await h.step()
        rules, _ = await h.step()
    assert (fixed.job, fixed.subtask) == ("fixed", "low_resolution")
    assert (rules.job, rules.subtask) == ("rules", "noise")


async def test_invalid_option_fails_the_job_and_the_planner_carries_on():
    """A malformed job option fails that job with a JobFailed naming the option; other jobs still plan."""
    async with running() as h:
        await h.perceived("bad", h.image(10), {"noise": "high"}, options={"subtasks": "noise"})
        failed, _ = await h.events.until(lambda m: isinstance(m, JobFailed))
        assert failed.message.job == "bad" and "subtasks" in failed.message.error
        await h.sync()
        assert "bad" not in h.planner.searches


async def test_redelivered_failure_reflection_after_the_rollback_is_ignored():
    """A failure Reflected delivered again after the rollback re-planned the node is a duplicate: it publishes nothing and the job goes on."""
    async with running() as h:
        ref0, bad = h.image(10), h.image(11)
        await h.perceived("job", ref0, {"haze": "medium", "noise": "high"})
        first, _ = await h.step()
        judged = [out("dct_denoise", bad, "high")]
        await h.reflected("job", first.node, "noise", judged, "failure", 0)
        retry, _ = await h.step()
        await h.events.until(lambda m: isinstance(m, JobProgress) and m.stage == "executing" and m.detail.startswith("haze"))
        await h.reflected("job", first.node, "noise", judged, "failure", 0)
        await h.sync()
        assert "job" in h.planner.searches and h.planner.failed == 0 and retry.subtask == "haze"
