"""Helpers shared by the actor tests: a bounded subscription reader and the test tools the scheduler runs.

A plain module, imported by bare name (``from actor_helpers import Inbox``): pytest puts this folder on
``sys.path`` for the test files in it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import anyio
import torch

from agentir.bus.base import Delivery
from agentir.bus.schema import Message
from agentir.toolbox.base import ToolError, ToolInfo, register_tool, unregister_tool


class Inbox:
    """One subscription read message by message, each wait bounded by ``fail_after``."""

    def __init__(self, sub) -> None:
        self._it = aiter(sub)

    async def next(self, timeout: float = 5.0) -> Delivery:
        with anyio.fail_after(timeout):
            return await anext(self._it)

    async def until(self, pred: Callable[[Message], bool], timeout: float = 5.0) -> tuple[Delivery, list[Message]]:
        """The first delivery whose message matches ``pred``, and every message read before it."""
        skipped: list[Message] = []
        with anyio.fail_after(timeout):
            while True:
                delivery = await anext(self._it)
                if pred(delivery.message):
                    return delivery, skipped
                skipped.append(delivery.message)


class BlackFails:
    """Inverts the image; fails on any image (or tile) that is entirely black, to model bad input.

    ``batches`` records the per-image means of every batch it is called with.
    """

    name = "test_black_fails"
    degradation = "noise"
    scale = 1
    device = "cpu"
    batches: ClassVar[list[list[float]]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        BlackFails.batches.append([float(b.mean()) for b in batch])
        if any(float(b.max()) == 0.0 for b in batch):
            raise ToolError(self.name, "cannot restore an all-black image")
        return 1.0 - batch


class Gate:
    """Blocks every call until ``release`` is set; ``entered`` is set when a call is waiting."""

    name = "test_gate"
    degradation = "noise"
    scale = 1
    device = "cpu"
    entered = threading.Event()
    release = threading.Event()
    seen: ClassVar[list[list[int]]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        Gate.seen.append([round(float(b.mean()) * 255) for b in batch])
        Gate.entered.set()
        if not Gate.release.wait(20):
            raise ToolError(self.name, "gate never opened")
        return batch.clone()


@contextmanager
def registered_tools(*classes: type) -> Iterator[None]:
    """Resets the state :class:`Gate` and :class:`BlackFails` keep, registers ``classes`` as learned noise tools, then removes them.

    On the way out the gate is opened, so no call is left waiting on it.
    """
    Gate.entered, Gate.release, Gate.seen, BlackFails.batches = threading.Event(), threading.Event(), [], []
    for cls in classes:
        register_tool(ToolInfo(name=cls.name, degradation="noise", kind="learned", description="test tool"), cls)
    try:
        yield
    finally:
        Gate.release.set()
        for cls in classes:
            unregister_tool(cls.name)
