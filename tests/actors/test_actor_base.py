"""The Actor base and supervisor: failure isolation, replies, lifecycle, restarts, shutdown."""

from __future__ import annotations

from typing import ClassVar

import anyio
import pytest

from agentir.actors.base import Actor
from agentir.actors.supervisor import Supervisor, SupervisorGaveUp
from agentir.bus.blobs import BlobRef, MemoryBlobStore
from agentir.bus.errors import BusClosed, RemoteError
from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import JobFailed, JobProgress, Perceived, PerceiveRequest, Subjects

REF = BlobRef(sha256="ef" * 32, shape=(2, 2, 3), dtype="uint8")


class Echo(Actor):
    """Replies to perceive requests; fails on a request for a 1-pixel image; records lifecycle."""

    name = "echo"
    subjects = ("echo", "jobs")
    events: ClassVar[list[str]] = []

    async def on_start(self):
        Echo.events.append("start")

    async def on_stop(self):
        Echo.events.append("stop")

    async def handle(self, delivery):
        match delivery.message:
            case PerceiveRequest(image=image) if image.shape == (1,):
                raise ValueError("cannot perceive a 1-pixel image")
            case PerceiveRequest(image=image):
                await delivery.reply(Perceived(job="", image=image, levels={"noise": "low"}, scores={}))
            case JobProgress():
                raise RuntimeError("job handler broke")


async def test_failing_handler_answers_with_error_and_actor_keeps_serving():
    """A handler exception becomes an error reply; the next request is served normally."""
    Echo.events = []
    async with InMemoryBus() as bus, anyio.create_task_group() as tg:
        actor = Echo(bus, MemoryBlobStore())
        await tg.start(actor.run)
        with anyio.fail_after(2):
            with pytest.raises(RemoteError, match="1-pixel"):
                await bus.request("echo", PerceiveRequest(image=BlobRef(sha256="0" * 64, shape=(1,), dtype="uint8")), timeout=1)
            reply = await bus.request("echo", PerceiveRequest(image=REF), timeout=1)
        assert reply.message.levels == {"noise": "low"}
        assert actor.failed == 1 and actor.handled == 1
        actor.stop()
    assert Echo.events == ["start", "stop"]


async def test_failure_of_a_job_message_publishes_job_failed():
    """A handler failing on a job's message tells the job's client through JobFailed."""
    async with InMemoryBus() as bus, anyio.create_task_group() as tg:
        events = await bus.subscribe(Subjects.EVENTS)
        actor = Echo(bus, MemoryBlobStore())
        await tg.start(actor.run)
        await bus.publish("jobs", JobProgress(job="job-7", stage="x"))
        with anyio.fail_after(2):
            async for d in events:
                assert isinstance(d.message, JobFailed)
                assert d.message.job == "job-7" and "job handler broke" in d.message.error
                break
        actor.stop()


async def test_stopping_the_bus_fails_a_pending_request_and_stops_the_actor():
    """Closing the bus ends the actor's run and fails requests still waiting, nothing hangs."""

    class Slow(Actor):
        name = "slow"
        subjects = ("slow",)

        async def handle(self, delivery):
            await anyio.sleep_forever()

    bus = InMemoryBus()
    outcome = []
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            actor = Slow(bus, MemoryBlobStore())
            await tg.start(actor.run)

            async def ask():
                try:
                    await bus.request("slow", PerceiveRequest(image=REF), timeout=30)
                except BusClosed:
                    outcome.append("closed")

            tg.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            await bus.close()
            actor.stop()
    assert outcome == ["closed"] and not actor.running


async def test_handler_timeout_is_reported_as_failure():
    """A handler exceeding its timeout fails that message only, with an error reply."""

    class Stuck(Actor):
        name = "stuck"
        subjects = ("stuck",)
        handler_timeout = 0.05

        async def handle(self, delivery):
            await anyio.sleep_forever()

    async with InMemoryBus() as bus, anyio.create_task_group() as tg:
        actor = Stuck(bus, MemoryBlobStore())
        await tg.start(actor.run)
        with anyio.fail_after(2), pytest.raises(RemoteError, match="TimeoutError"):
            await bus.request("stuck", PerceiveRequest(image=REF), timeout=1)
        actor.stop()


async def test_supervisor_restarts_a_crashed_actor_then_gives_up():
    """An actor whose run loop crashes is restarted up to the limit, then the supervisor gives up."""
    starts = []
    crash = anyio.Event()

    class Fragile(Actor):
        name = "fragile"

        async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED):
            starts.append(1)
            task_status.started()
            await crash.wait()
            raise RuntimeError("run loop broke")

    sup = Supervisor([lambda: Fragile(InMemoryBus(), MemoryBlobStore())], max_restarts=2, window=60)
    with anyio.fail_after(3), pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            assert len(starts) == 1
            crash.set()
    assert info.group_contains(SupervisorGaveUp)
    assert len(starts) == 3 and sup.restarts["fragile"] == 3


async def test_supervisor_stop_ends_all_actors_cleanly():
    """stop() cancels every actor; each runs its on_stop."""
    Echo.events = []
    async with InMemoryBus() as bus:
        sup = Supervisor([lambda: Echo(bus, MemoryBlobStore())])
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                await tg.start(sup.run)
                assert sup.actors["echo"].running
                sup.stop()
    assert Echo.events == ["start", "stop"]
