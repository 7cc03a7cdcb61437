"""The Perceiver: jobs perceived and handed to the Planner, perceive requests, failures, worker threads."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import numpy as np
import pytest
from actor_helpers import Inbox

from agentir.actors.perceiver import Perceiver
from agentir.agent_policies.perception import Perception
from agentir.bus.blobs import MemoryBlobStore
from agentir.bus.errors import RemoteError
from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import JobFailed, JobProgress, JobSubmitted, Perceived, PerceiveRequest, Subjects
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS

#: An image shape the fake policy refuses, as a real one refuses an image it cannot read.
BAD_SHAPE = (1, 1, 3)


class FakePerception:
    """A perception policy (the ``perceive``/``rate`` protocol) with fixed answers; records its calls.

    ``perceive`` raises ``ValueError`` for an image of :data:`BAD_SHAPE`, and calls ``hook`` (if set)
    with each image before answering, so a test can hold it.
    """

    name = "fake"

    def __init__(self, levels: dict[str, str], hook: Callable[[np.ndarray], None] | None = None) -> None:
        self.levels = {d: levels.get(d, "very_low") for d in DEGRADATIONS}
        self.scores = {d: LEVELS.index(lv) + 0.25 for d, lv in self.levels.items()}
        self.hook = hook
        self.seen: list[np.ndarray] = []
        self.threads: list[int] = []

    def perceive(self, images):
        self.threads.append(threading.get_ident())
        out = []
        for image in images:
            if image.shape == BAD_SHAPE:
                raise ValueError("cannot perceive a 1x1 image")
            if self.hook is not None:
                self.hook(image)
            self.seen.append(np.array(image))
            out.append(Perception(levels=dict(self.levels), scores=dict(self.scores)))
        return out

    def rate(self, images, degradation):
        return [(self.levels[degradation], self.scores[degradation]) for _ in images]


@dataclass
class Harness:
    perceiver: Perceiver
    policy: FakePerception
    bus: InMemoryBus
    blobs: MemoryBlobStore
    plan: Inbox
    events: Inbox


def make_perceiver(bus: InMemoryBus, blobs: MemoryBlobStore, policy: FakePerception) -> Perceiver:
    """The Perceiver under test, built as ``agentir.actors.supervisor.build_actors`` builds it."""
    return Perceiver(bus, blobs, policy=policy)


@asynccontextmanager
async def running(policy: FakePerception) -> AsyncIterator[Harness]:
    """A Perceiver on an in-memory bus, with subscriptions to the plan and events subjects."""
    async with InMemoryBus() as bus, anyio.create_task_group() as tg:
        blobs = MemoryBlobStore()
        plan = Inbox(await bus.subscribe(Subjects.PLAN, max_pending=256))
        events = Inbox(await bus.subscribe(Subjects.EVENTS, max_pending=256))
        perceiver = make_perceiver(bus, blobs, policy)
        await tg.start(perceiver.run)
        try:
            yield Harness(perceiver, policy, bus, blobs, plan, events)
        finally:
            perceiver.stop()


def image(value: int = 90, shape: tuple[int, ...] = (8, 12, 3)) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def submit(job: str, ref, *, policy: str = "rules", options: dict | None = None) -> JobSubmitted:
    return JobSubmitted(job=job, image=ref, policy=policy, options=dict(options or {}))


async def test_submitted_job_is_perceived_and_handed_to_the_planner():
    """A JobSubmitted becomes a Perceived on the plan subject carrying the policy's levels and scores and the job's policy and options."""
    options = {"max_tool_calls": 3, "tools": {"noise": ["a", "b"]}, "reflection": "threshold"}
    async with running(FakePerception({"noise": "high", "haze": "medium"})) as h:
        pixels = image()
        ref = h.blobs.put(pixels)
        submit_id = await h.bus.publish(Subjects.SUBMIT, submit("job-1", ref, policy="fixed", options=options), correlation_id="job-1")
        delivery = await h.plan.next()
    p = delivery.message
    assert isinstance(p, Perceived)
    assert p.job == "job-1" and p.image == ref
    assert p.levels == h.policy.levels and p.levels["noise"] == "high" and p.levels["haze"] == "medium"
    assert p.scores == h.policy.scores
    assert p.policy == "fixed" and p.options == options
    assert p.seconds >= 0.0
    assert delivery.envelope.correlation_id == "job-1" and delivery.envelope.cause == submit_id
    [seen] = h.policy.seen
    np.testing.assert_array_equal(seen, pixels)


async def test_submitted_job_reports_progress_perceived():
    """Perceiving a job publishes JobProgress 'perceived' on the events subject, naming the degradations found."""
    async with running(FakePerception({"noise": "high", "rain": "low"})) as h:
        await h.bus.publish(Subjects.SUBMIT, submit("job-2", h.blobs.put(image())), correlation_id="job-2")
        delivery = await h.events.next()
    progress = delivery.message
    assert isinstance(progress, JobProgress)
    assert progress.job == "job-2" and progress.stage == "perceived"
    assert "noise=high" in progress.detail and "rain" not in progress.detail
    assert delivery.envelope.correlation_id == "job-2"


async def test_perceive_request_is_answered_with_a_perceived_without_job():
    """A PerceiveRequest is answered by request/reply with a Perceived whose job is empty, and nothing goes to the Planner."""
    async with running(FakePerception({"dark": "very_high"})) as h:
        ref = h.blobs.put(image())
        with anyio.fail_after(5):
            reply = await h.bus.request(Subjects.PERCEIVE, PerceiveRequest(image=ref), timeout=5)
        answer = reply.message
        assert isinstance(answer, Perceived)
        assert answer.job == "" and answer.image == ref
        assert answer.levels == h.policy.levels and answer.scores == h.policy.scores
        # The next thing on the plan subject is the job submitted afterwards, not the request.
        await h.bus.publish(Subjects.SUBMIT, submit("job-after", ref), correlation_id="job-after")
        assert (await h.plan.next()).message.job == "job-after"


async def test_failing_policy_answers_a_request_with_an_error_and_keeps_serving():
    """A policy that raises on a perceive request makes the requester get a RemoteError naming it; the next request is served."""
    async with running(FakePerception({"noise": "high"})) as h:
        with anyio.fail_after(5):
            with pytest.raises(RemoteError, match="1x1") as info:
                await h.bus.request(Subjects.PERCEIVE, PerceiveRequest(image=h.blobs.put(image(shape=BAD_SHAPE))), timeout=5)
            reply = await h.bus.request(Subjects.PERCEIVE, PerceiveRequest(image=h.blobs.put(image())), timeout=5)
        assert info.value.error_type == "ValueError"
        assert reply.message.levels["noise"] == "high"
        assert h.perceiver.failed == 1 and h.perceiver.running


async def test_failing_policy_fails_the_job_and_the_next_job_is_perceived():
    """A policy that raises on a submitted job publishes JobFailed for that job (no Perceived), and the next job goes through."""
    async with running(FakePerception({"noise": "high"})) as h:
        await h.bus.publish(Subjects.SUBMIT, submit("bad", h.blobs.put(image(shape=BAD_SHAPE))), correlation_id="bad")
        failed = (await h.events.next()).message
        assert isinstance(failed, JobFailed)
        assert failed.job == "bad" and "perceiver" in failed.error and "1x1" in failed.error
        await h.bus.publish(Subjects.SUBMIT, submit("good", h.blobs.put(image())), correlation_id="good")
        assert (await h.plan.next()).message.job == "good"
        assert h.perceiver.failed == 1


async def test_policy_runs_in_a_worker_thread():
    """The perception policy is called off the event loop's thread."""
    loop_thread = threading.get_ident()
    async with running(FakePerception({})) as h:
        ref = h.blobs.put(image())
        await h.bus.publish(Subjects.SUBMIT, submit("job-t", ref), correlation_id="job-t")
        await h.plan.next()
        with anyio.fail_after(5):
            await h.bus.request(Subjects.PERCEIVE, PerceiveRequest(image=ref), timeout=5)
    assert len(h.policy.threads) == 2 and loop_thread not in h.policy.threads


async def test_a_slow_perception_does_not_block_the_event_loop():
    """While the policy is busy with one image, the loop stays free and a second request is answered first."""
    entered, release = threading.Event(), threading.Event()
    slow = image(1)

    def hold(pixels: np.ndarray) -> None:
        if np.array_equal(pixels, slow):
            entered.set()
            release.wait(10)

    order: list[str] = []
    async with running(FakePerception({"haze": "high"}, hook=hold)) as h:

        async def ask(name: str, pixels: np.ndarray) -> None:
            await h.bus.request(Subjects.PERCEIVE, PerceiveRequest(image=h.blobs.put(pixels)), timeout=10)
            order.append(name)

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ask, "slow", slow)
                    assert await anyio.to_thread.run_sync(entered.wait, 5), "the slow perception never started"
                    await ask("fast", image(2))
                    release.set()
        finally:
            release.set()
    assert order == ["fast", "slow"]
