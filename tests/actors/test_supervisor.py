"""The supervisor: restarts within the window, readiness, shutdown, and the standard four actors.

``tests/actors/test_actor_base.py`` covers the basic restart limit and a clean stop; these tests
pin what a restart actually gives back, how the window counts crashes, and the wiring of
:func:`agentir.actors.supervisor.build_actors`.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable
from typing import ClassVar

import anyio
import numpy as np
import pytest

import agentir.actors.supervisor as supervisor_module
from agentir.actors.base import Actor
from agentir.actors.executor import Executor
from agentir.actors.perceiver import Perceiver
from agentir.actors.planner import Planner
from agentir.actors.reflector import Reflector
from agentir.actors.supervisor import Supervisor, SupervisorGaveUp, build_actors
from agentir.agent_policies.options import JobOptions
from agentir.agent_policies.perception import Perception
from agentir.agent_policies.registry import Policies
from agentir.bus.blobs import BlobRef, MemoryBlobStore
from agentir.bus.errors import BusClosed, NoResponders
from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import JobProgress, Perceived, PerceiveRequest, Subjects
from agentir.toolbox.vocab import DEGRADATIONS

REF = BlobRef(sha256="ab" * 32, shape=(2, 2, 3), dtype="uint8")


class Crashy(Actor):
    """Answers a perceive request with its generation number; a JobProgress 'crash' makes its run loop crash.

    The crash comes from a background task in the actor's task group, so it is the run loop that
    fails (what the supervisor restarts), not a handler (which the actor isolates).
    """

    name = "crashy"
    subjects = ("crashy",)
    generations = itertools.count(1)
    started: ClassVar[dict[int, anyio.Event]] = {}

    def __init__(self, bus, blobs) -> None:
        super().__init__(bus, blobs)
        self.generation = next(Crashy.generations)

    @classmethod
    def reset(cls) -> None:
        cls.generations = itertools.count(1)
        cls.started = {}

    @classmethod
    def ready(cls, generation: int) -> anyio.Event:
        return cls.started.setdefault(generation, anyio.Event())

    async def on_start(self) -> None:
        Crashy.ready(self.generation).set()

    async def handle(self, delivery) -> None:
        match delivery.message:
            case PerceiveRequest(image=image):
                await delivery.reply(Perceived(job="", image=image, levels={"noise": str(self.generation)}, scores={}))
            case JobProgress(stage="crash"):
                assert self.task_group is not None
                self.task_group.start_soon(self._explode)

    async def _explode(self) -> None:
        raise RuntimeError(f"run loop of generation {self.generation} broke")


class Recorder(Actor):
    """A well-behaved bystander: records its lifecycle; ``gate`` (if set) holds its start."""

    name = "recorder"
    subjects = ("recorder",)
    events: ClassVar[list[str]] = []
    gate: ClassVar[anyio.Event | None] = None

    async def on_start(self) -> None:
        if Recorder.gate is not None:
            await Recorder.gate.wait()
        Recorder.events.append("start")

    async def on_stop(self) -> None:
        Recorder.events.append("stop")

    async def handle(self, delivery) -> None:
        match delivery.message:
            case PerceiveRequest(image=image):
                await delivery.reply(Perceived(job="", image=image, levels={}, scores={}))


class Slow(Actor):
    """Never finishes a request; ``entered`` is set once one is being handled."""

    name = "slow"
    subjects = ("slow",)
    entered: ClassVar[anyio.Event] = anyio.Event()

    async def handle(self, delivery) -> None:
        Slow.entered.set()
        await anyio.sleep_forever()


@pytest.fixture(autouse=True)
def fresh_actor_state():
    """Each test starts with fresh class-level records."""
    Crashy.reset()
    Recorder.events, Recorder.gate = [], None
    Slow.entered = anyio.Event()


def supervise(factories: list[Callable[[], Actor]], **policy) -> Supervisor:
    """The supervisor under test (one place to adapt if its construction changes)."""
    return Supervisor(factories, **policy)


def leaves(group: BaseException | None) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if group is None:
        return []
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in leaves(inner)]
    return [group]


async def generation(bus: InMemoryBus) -> int:
    reply = await bus.request("crashy", PerceiveRequest(image=REF), timeout=5)
    return int(reply.message.levels["noise"])


async def crash(bus: InMemoryBus) -> None:
    await bus.publish("crashy", JobProgress(job="", stage="crash"))


async def test_crashed_actor_is_replaced_by_a_fresh_one_that_serves_until_the_limit():
    """Within the window a crashed actor is rebuilt and serves again; one crash past max_restarts stops everything with SupervisorGaveUp."""
    async with InMemoryBus() as bus:
        blobs = MemoryBlobStore()
        sup = supervise([lambda: Crashy(bus, blobs), lambda: Recorder(bus, blobs)], max_restarts=1, window=3600)
        with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
            async with anyio.create_task_group() as tg:
                await tg.start(sup.run)
                assert await generation(bus) == 1
                await crash(bus)
                await Crashy.ready(2).wait()
                assert await generation(bus) == 2 and sup.actors["crashy"].generation == 2
                assert sup.restarts == {"crashy": 1}
                await crash(bus)
                await anyio.sleep_forever()  # the supervisor ends this task group
    [gave_up] = leaves(info.value.subgroup(SupervisorGaveUp))
    assert gave_up.actor == "crashy" and any("generation 2 broke" in str(e) for e in leaves(gave_up.__cause__))
    assert sup.restarts == {"crashy": 2}
    assert Recorder.events == ["start", "stop"]  # the bystander was stopped too, not left half running
    assert not any(a.running for a in sup.actors.values())


async def test_crashes_further_apart_than_the_window_do_not_add_up(monkeypatch):
    """Only crashes inside the window count: an actor crashing once per window is restarted every time."""
    clock = itertools.count(0.0, 1000.0)  # every crash is 1000 s after the previous one
    monkeypatch.setattr(supervisor_module, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    async with InMemoryBus() as bus:
        blobs = MemoryBlobStore()
        sup = supervise([lambda: Crashy(bus, blobs)], max_restarts=1, window=60)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(sup.run)
                for n in range(1, 5):
                    await crash(bus)
                    await Crashy.ready(n + 1).wait()
                assert await generation(bus) == 5
                sup.stop()
    assert sup.restarts == {"crashy": 4}


async def test_actor_that_cannot_start_is_not_restarted():
    """An actor whose on_start raises is built once, and the supervisor gives up before signalling readiness."""
    built = []

    class Refuses(Actor):
        name = "refuses"

        async def on_start(self) -> None:
            raise RuntimeError("no model weights")

    def factory() -> Actor:
        built.append(1)
        return Refuses(InMemoryBus(), MemoryBlobStore())

    sup = supervise([factory], max_restarts=5, window=60)
    ready = False
    with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            ready = True
    assert info.group_contains(SupervisorGaveUp)
    assert built == [1] and not ready


async def test_readiness_waits_for_every_actor_to_start():
    """run() signals readiness only once every actor has subscribed and finished on_start, not after the first."""
    Recorder.gate = anyio.Event()
    async with InMemoryBus() as bus:
        blobs = MemoryBlobStore()
        sup = supervise([lambda: Crashy(bus, blobs), lambda: Recorder(bus, blobs)])
        ready = anyio.Event()

        async def start(tg: anyio.abc.TaskGroup) -> None:
            await tg.start(sup.run)
            ready.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(start, tg)
                await Crashy.ready(1).wait()
                await anyio.wait_all_tasks_blocked()
                assert not ready.is_set()  # the first actor runs, the second is still starting
                assert sup.actors["crashy"].running and not sup.actors["recorder"].running
                Recorder.gate.set()
                await ready.wait()
                assert all(a.running for a in sup.actors.values()) and Recorder.events == ["start"]
                assert (await bus.request("recorder", PerceiveRequest(image=REF), timeout=5)).message.image == REF
                sup.stop()


async def test_stop_ends_every_actor_and_nothing_waits_forever():
    """stop() ends every actor (on_stop runs); a request to a stopped actor finds no responder and one in flight fails when the bus closes."""
    bus = InMemoryBus()
    blobs = MemoryBlobStore()
    sup = supervise([lambda: Slow(bus, blobs), lambda: Recorder(bus, blobs)])
    outcome: list[str] = []
    stopped = anyio.Event()

    async def run_supervisor(*, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        await sup.run(task_status=task_status)
        stopped.set()

    async def ask_slow() -> None:
        try:
            await bus.request("slow", PerceiveRequest(image=REF), timeout=60)
        except BusClosed:
            outcome.append("closed")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(run_supervisor)
            tg.start_soon(ask_slow)
            await Slow.entered.wait()
            sup.stop()
            await stopped.wait()
            assert not any(a.running for a in sup.actors.values())
            assert Recorder.events == ["start", "stop"]
            with pytest.raises(NoResponders):
                await bus.request("recorder", PerceiveRequest(image=REF), timeout=5)
            await bus.close()  # as Restorer.close() does after stopping the supervisor
    assert outcome == ["closed"]


class Fixed:
    """A perception policy with one answer (only its identity matters here)."""

    name = "fixed"

    def perceive(self, images):
        return [Perception(levels=dict.fromkeys(DEGRADATIONS, "very_low"), scores=dict.fromkeys(DEGRADATIONS, 0.0)) for _ in images]

    def rate(self, images, degradation):
        return [("very_low", 0.0) for _ in images]


def batching(executor: Executor) -> tuple[float, int, int]:
    """An Executor's batch window, batch cap and worker threads (the batching options live on its scheduler)."""
    return executor.scheduler.batch_window, executor.scheduler.max_batch, executor.worker_threads


async def test_build_actors_builds_the_four_standard_actors_with_the_given_options():
    """build_actors returns one factory per standard actor, each building a fresh actor on the shared bus with the given policies and options."""
    bus, blobs, perception = InMemoryBus(), MemoryBlobStore(), Fixed()
    policies, defaults = Policies(), JobOptions(max_tool_calls=5, reflection="threshold")
    factories = build_actors(
        bus, blobs, perception=perception, policies=policies, defaults=defaults, executor_options={"batch_window": 0.05, "max_batch": 2, "worker_threads": 2}
    )
    actors = [f() for f in factories]
    assert [type(a) for a in actors] == [Perceiver, Planner, Executor, Reflector]
    assert [a.name for a in actors] == ["perceiver", "planner", "executor", "reflector"]
    assert all(a.bus is bus and a.blobs is blobs for a in actors)
    perceiver, planner, executor, reflector = actors
    assert perceiver.policy is perception and reflector.perception is perception
    assert planner.policies is policies and reflector.policies is policies and planner.defaults == defaults
    assert batching(executor) == (0.05, 2, 2)
    assert all(f() is not a for f, a in zip(factories, actors, strict=True))  # a restart gets a fresh actor


async def test_build_actors_defaults_share_one_policies_object():
    """Without policies or executor options, the Planner and Reflector still share one Policies object and the Executor has its defaults."""
    bus, blobs = InMemoryBus(), MemoryBlobStore()
    _, planner, executor, reflector = (f() for f in build_actors(bus, blobs, perception=Fixed()))
    assert planner.policies is reflector.policies
    assert planner.defaults == JobOptions()
    assert batching(executor) == batching(Executor(bus, blobs))


async def test_standard_actors_start_and_stop_under_the_supervisor():
    """The four standard actors all start under a supervisor (readiness with all four running) and all stop on stop()."""
    async with InMemoryBus() as bus:
        blobs = MemoryBlobStore()
        sup = supervise(build_actors(bus, blobs, perception=Fixed()))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(sup.run)
                assert sorted(sup.actors) == ["executor", "perceiver", "planner", "reflector"]
                assert all(a.running for a in sup.actors.values())
                reply = await bus.request(Subjects.PERCEIVE, PerceiveRequest(image=blobs.put(np.zeros((2, 2, 3), np.uint8))), timeout=5)
                assert reply.message.job == "" and reply.message.levels["noise"] == "very_low"
                sup.stop()
    assert not any(a.running for a in sup.actors.values())
