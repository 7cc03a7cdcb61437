"""The supervisor: starts the four actors on one bus, restarts a crashed actor, stops them all.

A handler failure never reaches the supervisor (the actor isolates it); what does is an actor
whose run loop itself crashed. Such an actor is restarted up to ``max_restarts`` times within
``window`` seconds; beyond that the supervisor gives up and the whole system stops with
:class:`SupervisorGaveUp`, since a half-running pipeline would leave jobs hanging.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from agentir.actors.base import Actor, ActorError
from agentir.agent_policies.options import JobOptions
from agentir.agent_policies.perception import PerceptionPolicy
from agentir.agent_policies.registry import Policies
from agentir.bus.base import Bus
from agentir.bus.blobs import BlobStore

if TYPE_CHECKING:
    from agentir.actors.planner import JobStateStore

log = structlog.get_logger(__name__)


class SupervisorGaveUp(ActorError):
    """An actor crashed more often than the restart policy allows."""

    def __init__(self, actor: str, restarts: int, window: float) -> None:
        self.actor = actor
        super().__init__(f"actor {actor!r} crashed {restarts} times within {window:g} s; giving up")


class Supervisor:
    """Runs actors built by ``factories``; :meth:`run` signals readiness once all have started."""

    def __init__(self, factories: list[Callable[[], Actor]], *, max_restarts: int = 3, window: float = 60.0) -> None:
        self.factories = factories
        self.max_restarts = max_restarts
        self.window = window
        self.actors: dict[str, Actor] = {}
        self.restarts: dict[str, int] = {}
        self._scope: anyio.CancelScope | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            async with anyio.create_task_group() as tg:
                for factory in self.factories:
                    await tg.start(self._supervise, factory)
                task_status.started()

    async def _supervise(self, factory: Callable[[], Actor], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        crashes: deque[float] = deque()
        started = False

        class _Ready:
            """Passes readiness on once; later restarts need no handshake."""

            def started(self, value: None = None) -> None:
                nonlocal started
                if not started:
                    started = True
                    task_status.started(value)

        while True:
            actor = factory()
            self.actors[actor.name] = actor
            try:
                await actor.run(task_status=_Ready())
                return  # stopped on purpose
            except Exception as exc:
                now = time.monotonic()
                crashes.append(now)
                while crashes and now - crashes[0] > self.window:
                    crashes.popleft()
                self.restarts[actor.name] = self.restarts.get(actor.name, 0) + 1
                log.error("actor.crashed", actor=actor.name, error=f"{type(exc).__name__}: {exc}", restarts=len(crashes))
                if not started or len(crashes) > self.max_restarts:
                    # An actor that never got going cannot be helped by restarting it.
                    raise SupervisorGaveUp(actor.name, len(crashes), self.window) from exc

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


#: The actors a worker can run, in pipeline order.
ACTOR_NAMES = ("perceiver", "planner", "executor", "reflector")


def build_actors(
    bus: Bus,
    blobs: BlobStore,
    *,
    perception: PerceptionPolicy,
    policies: Policies | None = None,
    defaults: JobOptions | None = None,
    executor_options: dict[str, Any] | None = None,
    names: Sequence[str] = ACTOR_NAMES,
    state: JobStateStore | None = None,
    concurrency: int | None = None,
) -> list[Callable[[], Actor]]:
    """Factories for the standard actors sharing ``bus``, ``blobs`` and ``policies``;
    ``defaults`` are the job options jobs' own options apply over.

    ``names`` picks some of :data:`ACTOR_NAMES` (a worker process running part of the pipeline);
    ``state`` makes the Planner share job state with Planners elsewhere (see
    :mod:`agentir.actors.planner`); ``concurrency`` caps the CPU-bound calls (perception, tools,
    ratings) running at once across the Perceiver, Executor and Reflector together, through one
    shared thread limiter: a worker process given N cores runs N at a time (default: each
    actor's own limits).

    Raises:
        ValueError: an unknown actor name, or ``concurrency`` below 1.
    """
    from agentir.actors.executor import Executor
    from agentir.actors.perceiver import Perceiver
    from agentir.actors.planner import Planner
    from agentir.actors.reflector import Reflector

    unknown = [n for n in names if n not in ACTOR_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown actor(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(ACTOR_NAMES)}")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    opts = dict(executor_options or {})
    if concurrency is not None:
        opts.setdefault("worker_threads", concurrency)
    shared = policies if policies is not None else Policies()

    cpu: list[anyio.CapacityLimiter] = []  # made on first use: a limiter belongs to the running event loop

    def sized(actor: Actor) -> Actor:
        if concurrency is not None:
            if not cpu:
                cpu.append(anyio.CapacityLimiter(concurrency))
            actor.concurrency = max(actor.concurrency, concurrency)
            actor.worker_threads = concurrency
            actor._limiter = cpu[0]
        return actor

    table: dict[str, Callable[[], Actor]] = {
        "perceiver": lambda: sized(Perceiver(bus, blobs, policy=perception)),
        "planner": lambda: Planner(bus, blobs, policies=shared, defaults=defaults, state=state),
        "executor": lambda: sized(Executor(bus, blobs, **opts)),
        "reflector": lambda: sized(Reflector(bus, blobs, perception=perception, policies=shared)),
    }
    return [table[n] for n in ACTOR_NAMES if n in names]
