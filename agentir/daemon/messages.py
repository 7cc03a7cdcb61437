"""The WebSocket message kinds (``ws.*``), registered with the bus schema registry.

Light on purpose (imports only :mod:`agentir.bus`), so clients can use them without the daemon's
dependencies. Semantics are in :mod:`agentir.daemon.ws` and ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from agentir.bus.schema import Message, message

__all__ = ["WsAck", "WsCancel", "WsError", "WsResult", "WsSubmit", "WsWatch"]


@message("ws.submit")
class WsSubmit(Message):
    """Queue ``image`` (encoded PNG/JPEG/... bytes) for restoration; see the module docstring."""

    image: bytes
    policy: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    watch: bool = True


@message("ws.watch")
class WsWatch(Message):
    """Stream ``job``'s progress and result on this socket."""

    job: str


@message("ws.cancel")
class WsCancel(Message):
    """Cancel ``job`` (queued or running)."""

    job: str


@message("ws.ack")
class WsAck(Message):
    """A submit or cancel was done: ``job`` is now in ``state``; ``replayed`` for an idempotent resubmit."""

    job: str
    state: str
    replayed: bool = False


@message("ws.result")
class WsResult(Message):
    """A job ended: ``state`` is done (``png`` holds the result), failed or cancelled (``error`` says why)."""

    job: str
    state: str
    png: bytes = b""
    trace: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@message("ws.error")
class WsError(Message):
    """A request could not be served; ``status`` as in HTTP, ``retry_after`` seconds for 429/503."""

    status: int
    error: str
    retry_after: float = 0.0
