"""The Reflector: tool outputs rated by the perception policy, verdicts per reflection policy, failed and prior candidates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import pytest
from actor_helpers import Inbox

from agentir.actors.reflector import Reflector
from agentir.agent_policies.perception import AnalyticPerception, Perception
from agentir.bus.base import Delivery
from agentir.bus.blobs import BlobRef, MemoryBlobStore
from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import Candidate, JobFailed, Reflected, StepExecuted, Subjects
from agentir.imageio import load_image
from agentir.toolbox.degrade import degrade
from agentir.toolbox.vocab import DEGRADATIONS

DATA = Path(__file__).resolve().parents[2] / "examples" / "clean"

#: What the fake policy rates an image whose pixels all equal the key.
RATINGS = {10: ("very_low", 0.2), 20: ("low", 1.1), 30: ("medium", 2.2), 40: ("high", 3.3)}


class FakePerception:
    """A perception policy (the ``perceive``/``rate`` protocol) whose rating is read off the pixel value.

    ``rate`` records each call as ``(degradation, number of images)``; an image whose pixels are 99
    makes it raise, as a policy does on an image it cannot read.
    """

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def perceive(self, images):
        return [Perception(levels=dict.fromkeys(DEGRADATIONS, "very_low"), scores=dict.fromkeys(DEGRADATIONS, 0.0)) for _ in images]

    def rate(self, images, degradation):
        self.calls.append((degradation, len(images)))
        out = []
        for image in images:
            value = int(image.flat[0])
            if value == 99:
                raise ValueError("cannot rate this image")
            out.append(RATINGS[value])
        return out


@dataclass
class Harness:
    reflector: Reflector
    bus: InMemoryBus
    blobs: MemoryBlobStore
    plan: Inbox
    events: Inbox

    def image(self, value: int) -> BlobRef:
        return self.blobs.put(np.full((4, 6, 3), value, dtype=np.uint8))

    def output(self, tool: str, value: int) -> Candidate:
        return Candidate(tool=tool, image=self.image(value), seconds=0.5)

    async def judge(
        self, outputs: list[Candidate], *, reflection: str, remaining: list[str] | None = None, prior: list[Candidate] | None = None, subtask: str = "noise"
    ) -> tuple[Reflected, Delivery, str]:
        """Publish one executed wave and return the Reflector's answer on the plan subject (and the wave's id)."""
        step = StepExecuted(
            job="job", node=3, subtask=subtask, outputs=outputs, remaining=list(remaining or []), prior=list(prior or []), reflection=reflection
        )
        step_id = await self.bus.publish(Subjects.REFLECT, step, correlation_id="job")
        delivery = await self.plan.next()
        assert isinstance(delivery.message, Reflected), delivery.message
        return delivery.message, delivery, step_id


def make_reflector(bus: InMemoryBus, blobs: MemoryBlobStore, perception) -> Reflector:
    """The Reflector under test, built as ``agentir.actors.supervisor.build_actors`` builds it."""
    return Reflector(bus, blobs, perception=perception)


@asynccontextmanager
async def running(perception=None) -> AsyncIterator[Harness]:
    """A Reflector on an in-memory bus, with subscriptions to the plan and events subjects."""
    async with InMemoryBus() as bus, anyio.create_task_group() as tg:
        blobs = MemoryBlobStore()
        plan = Inbox(await bus.subscribe(Subjects.PLAN, max_pending=256))
        events = Inbox(await bus.subscribe(Subjects.EVENTS, max_pending=256))
        reflector = make_reflector(bus, blobs, perception if perception is not None else FakePerception())
        await tg.start(reflector.run)
        try:
            yield Harness(reflector, bus, blobs, plan, events)
        finally:
            reflector.stop()


async def test_outputs_are_rated_with_the_perception_policy():
    """Each output gets the level and score the policy's rate() gives for the step's degradation; tool, image and seconds are kept."""
    policy = FakePerception()
    async with running(policy) as h:
        outputs = [h.output("a", 30), h.output("b", 20)]
        reflected, delivery, step_id = await h.judge(outputs, reflection="threshold", subtask="haze")
    assert policy.calls == [("haze", 2)]
    assert [(c.tool, c.level, c.score) for c in reflected.candidates] == [("a", "medium", 2.2), ("b", "low", 1.1)]
    assert [c.image for c in reflected.candidates] == [c.image for c in outputs]
    assert all(c.seconds == 0.5 and not c.error for c in reflected.candidates)
    assert (reflected.job, reflected.node, reflected.subtask) == ("job", 3, "haze")
    assert delivery.envelope.correlation_id == "job" and delivery.envelope.cause == step_id


@pytest.mark.parametrize(
    ("values", "remaining", "verdict", "best"),
    [
        ([30, 10], [], "accept", 1),  # the first very_low output is accepted
        ([30, 20], [], "success", 1),  # no tools left: the best output is low
        ([40, 30], [], "failure", 1),  # no tools left: the best output is still medium
        ([30], ["next_tool"], "continue", 0),  # nothing good enough yet, tools remain
        ([20], ["next_tool"], "continue", 0),  # low is not accepted early under threshold
    ],
)
async def test_threshold_reflection_verdicts(values, remaining, verdict, best):
    """Threshold reflection: accept very_low at once; with tools left otherwise continue; at the end success at low or better, else failure."""
    async with running() as h:
        reflected, _, _ = await h.judge([h.output(f"t{i}", v) for i, v in enumerate(values)], reflection="threshold", remaining=remaining)
    assert (reflected.verdict, reflected.best) == (verdict, best)


async def test_first_success_reflection_accepts_a_low_output_early():
    """first-success reflection accepts the first output rated low even though tools remain."""
    async with running() as h:
        reflected, _, _ = await h.judge([h.output("a", 30), h.output("b", 20)], reflection="first-success", remaining=["c"])
    assert (reflected.verdict, reflected.best) == ("accept", 1)


async def test_no_reflection_takes_the_first_output_without_rating():
    """Reflection 'none' never calls the perception policy and accepts the first output that has an image."""
    policy = FakePerception()
    async with running(policy) as h:
        failed = Candidate(tool="a", image=None, error="tool 'a' failed: boom")
        reflected, _, _ = await h.judge([failed, h.output("b", 40), h.output("c", 10)], reflection="none")
    assert policy.calls == []
    assert [c.level for c in reflected.candidates] == ["", "", ""]
    assert (reflected.verdict, reflected.best) == ("accept", 1)


async def test_failed_candidates_are_not_rated():
    """Outputs with an error and no image are passed on unrated; only the others go to rate()."""
    policy = FakePerception()
    async with running(policy) as h:
        failed = Candidate(tool="a", image=None, seconds=0.1, error="tool 'a' failed: boom")
        reflected, _, _ = await h.judge([failed, h.output("b", 20)], reflection="threshold")
    assert policy.calls == [("noise", 1)]
    assert reflected.candidates[0] == failed
    assert (reflected.candidates[1].level, reflected.candidates[1].score) == ("low", 1.1)
    assert (reflected.verdict, reflected.best) == ("success", 1)


async def test_every_tool_failed_is_a_failure_without_best():
    """When every output failed, nothing is rated and the verdict is failure with best -1."""
    policy = FakePerception()
    async with running(policy) as h:
        outputs = [Candidate(tool=t, image=None, error=f"tool {t!r} failed") for t in ("a", "b")]
        reflected, _, _ = await h.judge(outputs, reflection="threshold")
    assert policy.calls == []
    assert reflected.candidates == outputs
    assert (reflected.verdict, reflected.best) == ("failure", -1)


async def test_prior_candidates_come_first_and_are_not_rated_again():
    """Candidates of earlier waves lead the list unchanged; only the new wave is rated, and the node is judged as a whole."""
    policy = FakePerception()
    async with running(policy) as h:
        prior = [Candidate(tool="p", image=h.image(40), level="low", score=1.5, seconds=0.2)]
        reflected, _, _ = await h.judge([h.output("n", 30)], reflection="threshold", prior=prior)
    assert policy.calls == [("noise", 1)]
    assert reflected.candidates[0] == prior[0]  # its (recorded) rating is kept, not re-read from its pixels
    assert [(c.tool, c.level) for c in reflected.candidates] == [("p", "low"), ("n", "medium")]
    assert (reflected.verdict, reflected.best) == ("success", 0)


async def test_a_failing_rating_fails_the_job_and_the_reflector_carries_on():
    """A policy that raises while rating publishes JobFailed for the step's job, and the next step is judged."""
    async with running() as h:
        await h.bus.publish(Subjects.REFLECT, StepExecuted(job="bad", node=0, subtask="noise", outputs=[h.output("a", 99)], reflection="threshold"))
        failed = (await h.events.next()).message
        assert isinstance(failed, JobFailed) and failed.job == "bad" and "cannot rate" in failed.error
        reflected, _, _ = await h.judge([h.output("a", 10)], reflection="threshold")
    assert reflected.verdict == "accept" and h.reflector.failed == 1


async def test_analytic_policy_rates_real_outputs():
    """With the built-in analytic policy, a denoised-like (clean) output rates better than a noisy one and is chosen."""
    clean = load_image(DATA / "coffee.png")
    noisy, _ = degrade(clean, "noise", np.random.default_rng(3), level="high")
    policy = AnalyticPerception()
    expected = policy.rate([noisy, clean], "noise")
    async with running(policy) as h:
        outputs = [Candidate(tool="weak", image=h.blobs.put(noisy)), Candidate(tool="strong", image=h.blobs.put(clean))]
        reflected, _, _ = await h.judge(outputs, reflection="threshold")
    assert [(c.level, c.score) for c in reflected.candidates] == [(lv, float(s)) for lv, s in expected]
    assert expected[0][0] in ("medium", "high", "very_high") and expected[1][0] in ("very_low", "low")
    assert reflected.best == 1 and reflected.verdict in ("accept", "success")
