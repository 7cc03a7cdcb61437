"""The supervisor: starts the four actors on one bus, restarts a crashed actor, stops them all.

A handler failure never reaches the supervisor (the actor isolates it); what does is an actor
whose run loop itself crashed. Such an actor is restarted up to ``max_restarts`` times within
``window`` seconds; beyond that the supervisor gives up and the whole system stops with
:class:`SupervisorGaveUp`, since a half-running pipeline would leave jobs hanging.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from actors.base import Actor, ActorError
from agent_policies.options import JobOptions
from agent_policies.perception import PerceptionPolicy
from agent_policies.registry import Policies
from bus.base import Bus
from bus.blobs import BlobStore

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


def build_actors(
    bus: Bus,
    blobs: BlobStore,
    *,
    perception: PerceptionPolicy,
    policies: Policies | None = None,
    defaults: JobOptions | None = None,
    executor_options: dict[str, Any] | None = None,
) -> list[Callable[[], Actor]]:
    """Factories for the standard four actors sharing ``bus``, ``blobs`` and ``policies``;
    ``defaults`` are the job options jobs' own options apply over."""
    from actors.executor import Executor
    from actors.perceiver import Perceiver
    from actors.planner import Planner
    from actors.reflector import Reflector

    opts = executor_options or {}
    shared = policies if policies is not None else Policies()
    return [
        lambda: Perceiver(bus, blobs, policy=perception),
        lambda: Planner(bus, blobs, policies=shared, defaults=defaults),
        lambda: Executor(bus, blobs, **opts),
        lambda: Reflector(bus, blobs, perception=perception, policies=shared),
    ]
