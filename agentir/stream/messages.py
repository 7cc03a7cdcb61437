"""The stream message kinds (``stream.*``) of the daemon's ``/v1/stream`` WebSocket.

Registered with the bus schema registry, so they travel in the bus's msgpack envelopes like
every other message (``docs/PROTOCOL.md``, section "Streams"). Imports only :mod:`agentir.bus`.

Client to daemon: ``stream.start`` (optional, first), ``stream.frame`` (one per frame),
``stream.end``. Daemon to client: ``stream.started``, ``stream.result`` (one per restored
frame, in order), ``stream.frame_error`` (a frame that could not be decoded or restored; the
stream goes on), ``stream.summary`` (last, after ``stream.end``), and ``ws.error``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from agentir.bus.schema import Message, message

__all__ = ["StreamEnd", "StreamFrameError", "StreamFrameIn", "StreamResultOut", "StreamStart", "StreamStarted", "StreamSummaryOut"]


@message("stream.start")
class StreamStart(Message):
    """Open a stream: ``realtime`` (newest frame wins), ``max_frame_ms`` (0: the agent's own tools),
    ``reperceive_every``, ``policy``, ``output`` (``jpeg``, ``png``, ``rgb``; empty: as each frame came),
    ``fps`` (for timestamps the client leaves out)."""

    realtime: bool = False
    max_frame_ms: float = 50.0
    reperceive_every: int = 30
    policy: str = ""
    output: str = ""
    fps: float = 30.0


@message("stream.started")
class StreamStarted(Message):
    """The stream is open; ``stream`` names it (in logs and the Executor's round robin)."""

    stream: str
    config: dict[str, Any] = field(default_factory=dict)


@message("stream.frame")
class StreamFrameIn(Message):
    """One frame: ``data`` is JPEG or PNG bytes, or raw RGB (``format`` ``rgb`` with ``width``
    and ``height``); ``format`` empty guesses JPEG/PNG from the bytes. ``index`` and ``timestamp``
    (seconds) come back on the result; -1 / a negative timestamp: numbered by arrival."""

    data: bytes
    format: str = ""
    width: int = 0
    height: int = 0
    index: int = -1
    timestamp: float = -1.0
    stem: str = ""


@message("stream.end")
class StreamEnd(Message):
    """No more frames: the daemon sends what is pending, then ``stream.summary``, then closes."""


@message("stream.result")
class StreamResultOut(Message):
    """One restored frame (in order): ``data`` in ``format`` (``rgb``: ``width`` x ``height`` x 3 bytes);
    ``meta``: index, timestamp, stem, event, plan, chain, scene, latency_ms, dropped."""

    index: int
    timestamp: float
    data: bytes
    format: str
    width: int
    height: int
    meta: dict[str, Any] = field(default_factory=dict)


@message("stream.frame_error")
class StreamFrameError(Message):
    """Frame ``index`` could not be decoded or restored (``error`` says why); the stream goes on."""

    index: int
    timestamp: float
    error: str


@message("stream.summary")
class StreamSummaryOut(Message):
    """The stream's totals: frames in / out / dropped, errors, fps, latency percentiles, plans, ..."""

    summary: dict[str, Any] = field(default_factory=dict)
