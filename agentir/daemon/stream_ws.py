"""The WebSocket endpoint ``/v1/stream``: one video stream per socket, msgpack envelopes both ways.

The message kinds are in :mod:`agentir.stream.messages` (``docs/PROTOCOL.md``, section
"Streams"). A client may send ``stream.start`` first (else the defaults apply), then
``stream.frame`` per frame and ``stream.end``; the daemon answers ``stream.started``, one
``stream.result`` per restored frame in order (or ``stream.frame_error``), and after
``stream.end`` a ``stream.summary``, then closes. Frames of every open stream go through the
daemon's one :class:`~agentir.pipeline.Restorer`: its agent plans, and tools without held
parameters share its Executor's batches.

Bounded memory, whatever the client does:

* frames in: ``--every-frame`` streams (the default) keep at most :data:`INBOUND` frames
  waiting; then the daemon stops reading the socket (TCP backpressure on the client's
  sends). Realtime streams keep one, newest wins, and count the others as dropped.
* results out: at most :data:`OUTBOUND` wait to be sent. A client that stops reading makes the
  send wait (aiohttp waits for the socket to drain); then, in realtime, the oldest waiting
  result is dropped (counted), and in every-frame mode the stream waits (backpressure through to
  the client's sends).
* a client that disconnects: the stream's tasks are cancelled at once, its waiting frames and
  results are freed (:data:`ACTIVE` counts the streams still open).

At most :data:`MAX_STREAMS` streams at once (a 503 ``ws.error`` beyond).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import cv2
import numpy as np
import structlog
from aiohttp import WSMsgType, web

from agentir.bus.codec import decode, encode
from agentir.bus.errors import CodecError
from agentir.bus.schema import Message
from agentir.daemon.errors import ApiError
from agentir.daemon.messages import WsError
from agentir.daemon.previews import jpeg_thumbnail
from agentir.stream.engine import Frame, StreamConfig, StreamEngine, StreamError, StreamResult
from agentir.stream.messages import StreamEnd, StreamFrameError, StreamFrameIn, StreamResultOut, StreamStart, StreamStarted, StreamSummaryOut
from agentir.stream.runner import LatestSlot, StreamSummary

if TYPE_CHECKING:
    from agentir.daemon.app import Daemon

log = structlog.get_logger(__name__)

__all__ = ["ACTIVE", "INBOUND", "MAX_STREAMS", "OUTBOUND", "decode_frame", "stream_preview", "stream_route", "streams_status"]

#: Streams open at once per process (all daemons in it).
MAX_STREAMS = 8
#: Frames waiting to be restored per every-frame stream.
INBOUND = 4
#: Results waiting to be sent per stream.
OUTBOUND = 8
#: Largest frame accepted (encoded or raw bytes).
MAX_FRAME_BYTES = 64 << 20
#: Largest frame in pixels (a decompression bomb is refused before decoding).
MAX_FRAME_PIXELS = 40_000_000
#: Streams open now, by id (tests, metrics and ``GET /v1/streams`` read it).
ACTIVE: dict[str, _StreamSocket] = {}
#: Longest side of the console's live preview JPEG, and how often it is refreshed (seconds).
PREVIEW_WIDTH = 320
PREVIEW_EVERY = 0.25

_FORMATS = ("jpeg", "png", "rgb")


def decode_frame(msg: StreamFrameIn) -> np.ndarray:
    """The frame's uint8 ``H x W x 3`` RGB pixels.

    Raises:
        ValueError: an unknown format, raw bytes that do not match ``width x height x 3``, or
            bytes that are not a decodable JPEG/PNG (one line saying which).
    """
    data = bytes(msg.data)
    fmt = (msg.format or "").lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in ("", *_FORMATS):
        raise ValueError(f"unknown frame format {msg.format!r}; use jpeg, png or rgb")
    if len(data) > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {len(data)} bytes is over the {MAX_FRAME_BYTES} byte limit")
    if fmt == "rgb":
        w, h = int(msg.width), int(msg.height)
        if w < 1 or h < 1 or w * h > MAX_FRAME_PIXELS:
            raise ValueError(f"raw rgb frame needs width and height (1..{MAX_FRAME_PIXELS} pixels), got {w}x{h}")
        if len(data) != w * h * 3:
            raise ValueError(f"raw rgb frame of {w}x{h} needs {w * h * 3} bytes, got {len(data)}")
        return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()
    if not data:
        raise ValueError("empty frame")
    buf = np.frombuffer(data, np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"frame bytes are not a decodable {fmt or 'JPEG/PNG'} image ({len(data)} bytes)")
    if bgr.shape[0] * bgr.shape[1] > MAX_FRAME_PIXELS:
        raise ValueError(f"frame of {bgr.shape[1]}x{bgr.shape[0]} is over the {MAX_FRAME_PIXELS} pixel limit")
    return np.ascontiguousarray(bgr[..., ::-1])


def _guess_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "png"


def encode_frame(image: np.ndarray, fmt: str) -> bytes:
    """``image`` (uint8 RGB) as ``fmt`` bytes (JPEG quality 95, PNG, or raw RGB)."""
    if fmt == "rgb":
        return np.ascontiguousarray(image).tobytes()
    ext, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]) if fmt == "jpeg" else (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image[..., ::-1]), params)
    if not ok:
        raise ValueError(f"cannot encode the result as {fmt}")
    return buf.tobytes()


def _encode_result(image: np.ndarray, fmt: str, preview: bool) -> tuple[bytes, bytes | None]:
    """The result in ``fmt`` and, when ``preview``, the console's small JPEG of it."""
    return encode_frame(image, fmt), (jpeg_thumbnail(image, PREVIEW_WIDTH, 80)[0] if preview else None)


class _Outbox:
    """Results waiting to be sent, at most ``limit``; in ``lossy`` mode the oldest is dropped
    instead of waiting when full (counted in ``dropped``)."""

    def __init__(self, limit: int, *, lossy: bool) -> None:
        self.limit = limit
        self.lossy = lossy
        self.items: deque[Message] = deque()
        self.dropped = 0
        self.peak = 0
        self._changed = anyio.Event()
        self.closed = False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def put(self, item: Message, *, droppable: bool = True) -> None:
        while len(self.items) >= self.limit and not (self.lossy and droppable):
            await self._changed.wait()
        if len(self.items) >= self.limit:
            for i, old in enumerate(self.items):  # drop the oldest result, never an error or the summary
                if isinstance(old, StreamResultOut):
                    del self.items[i]
                    self.dropped += 1
                    break
        self.items.append(item)
        self.peak = max(self.peak, len(self.items))
        self._notify()

    async def get(self) -> Message | None:
        while not self.items:
            if self.closed:
                return None
            await self._changed.wait()
        item = self.items.popleft()
        self._notify()
        return item

    def close(self) -> None:
        self.closed = True
        self._notify()


class _StreamSocket:
    """One stream on one socket (see the module docstring)."""

    def __init__(self, daemon: Daemon, ws: web.WebSocketResponse, client: str) -> None:
        self.daemon = daemon
        self.ws = ws
        self.client = client
        self.id = f"ws-{uuid.uuid4().hex[:10]}"
        self.config = StreamConfig()
        self.output = ""
        self.fps = 30.0
        self.started = False
        self.ended = anyio.Event()
        self.frames_in = 0
        self.inbox_send, self.inbox_recv = anyio.create_memory_object_stream[Frame | None](INBOUND)
        self.slot: LatestSlot | None = None
        self.outbox = _Outbox(OUTBOUND, lossy=False)
        self.formats: dict[int, str] = {}
        self.summary = StreamSummary(source=f"ws:{client}", sink="ws", mode="every-frame")
        self.t0 = time.perf_counter()
        self.opened = time.time()
        #: Monotonic times of the last results (the live fps), the last result's chain and size.
        self.out_times: deque[float] = deque(maxlen=64)
        self.chain: list[str] = []
        self.size: tuple[int, int] | None = None
        #: The latest restored frame as a small JPEG (the console's live preview), and when made.
        self.preview: bytes | None = None
        self.preview_at = -1.0
        self.preview_seq = 0
        #: Cancels the stream's tasks (set by the handler): a client that went away frees everything.
        self.cancel_scope: anyio.CancelScope | None = None

    async def send_now(self, msg: Message, *, cid: str | None = None) -> None:
        data = encode(msg, correlation_id=cid or self.id, source="agentir.daemon", max_bytes=MAX_FRAME_BYTES * 2)
        await self.ws.send_bytes(data)

    async def sender(self) -> None:
        while True:
            msg = await self.outbox.get()
            if msg is None:
                return
            try:
                await self.send_now(msg)
            except (ConnectionError, RuntimeError):  # the client went away: drop the stream's pending work
                if self.cancel_scope is not None:
                    self.cancel_scope.cancel()
                return

    @property
    def dropped_in(self) -> int:
        """Frames a realtime stream dropped on the way in (newest wins)."""
        return self.slot.dropped if self.slot is not None else 0

    @property
    def dropped(self) -> int:
        """Frames dropped in all: on the way in, and results a slow client did not read in time."""
        return self.dropped_in + self.outbox.dropped

    def status(self) -> dict[str, object]:
        """What the console's stream list shows: counters, live fps and latency, the chain."""
        from agentir.daemon.store import rfc3339

        now = time.monotonic()
        recent = [t for t in self.out_times if now - t <= 2.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
        latencies = self.summary.latencies_ms[-32:]
        return {
            "id": self.id,
            "client": self.client,
            "mode": "realtime" if self.config.realtime else "every-frame",
            "opened": round(self.opened, 3),
            "opened_at": rfc3339(self.opened),
            "frames_in": self.frames_in,
            "frames_out": self.summary.frames_out,
            "dropped": self.dropped,
            "errors": self.summary.errors,
            "fps": round(fps, 2),
            "latency_ms_p50": round(float(np.median(latencies)), 2) if latencies else None,
            "chain": self.chain,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "preview": f"/v1/streams/{self.id}/preview.jpg" if self.preview is not None else None,
            "preview_seq": self.preview_seq,
        }

    def start(self, msg: StreamStart | None) -> None:
        if msg is not None:
            output = (msg.output or "").lower().replace("jpg", "jpeg")
            if output not in ("", *_FORMATS):
                raise StreamError(f"unknown output format {msg.output!r}; use jpeg, png, rgb or leave it empty")
            if msg.policy:
                self.daemon.restorer.policies.planning(msg.policy)  # UnknownNameError with close matches
            if not (msg.fps > 0):
                raise StreamError(f"fps must be positive, got {msg.fps}")
            self.config = StreamConfig(
                realtime=bool(msg.realtime),
                max_frame_ms=float(msg.max_frame_ms) if msg.max_frame_ms else None,
                reperceive_every=int(msg.reperceive_every),
                policy=msg.policy or None,
            )
            self.output, self.fps = output, float(msg.fps)
        self.slot = LatestSlot() if self.config.realtime else None
        self.outbox.lossy = self.config.realtime
        self.summary.mode = "realtime" if self.config.realtime else "every-frame"
        self.started = True

    async def frames(self) -> AsyncIterator[Frame]:
        while True:
            if self.slot is not None:
                frame = await self.slot.get()
            else:
                try:
                    frame = await self.inbox_recv.receive()
                except anyio.EndOfStream:
                    frame = None
            if frame is None:
                return
            yield frame

    async def process(self) -> None:
        executor = self.daemon.restorer.executor
        scheduler = executor.scheduler if executor is not None else None
        async with StreamEngine(self.daemon.restorer, self.config, scheduler=scheduler, stream_id=self.id) as engine:
            async for frame in self.frames():
                result = await engine.process(frame)
                self.summary.engine = engine.stats()
                await self.emit(result)
            self.summary.engine = engine.stats()
        self.summary.dropped = self.dropped
        self.summary.seconds = time.perf_counter() - self.t0
        summary = self.summary.as_dict()
        summary["frames_in"] = self.frames_in
        summary["dropped_in"] = self.dropped_in
        summary["dropped_out"] = self.outbox.dropped
        summary["outbound_peak"] = self.outbox.peak
        await self.outbox.put(StreamSummaryOut(summary=summary), droppable=False)
        self.outbox.close()

    async def emit(self, result: StreamResult) -> None:
        if result.error or result.image is None:
            self.summary.errors += 1
            self.summary.error_messages.append(result.error)
            await self.outbox.put(StreamFrameError(index=result.index, timestamp=result.timestamp, error=result.error), droppable=False)
            return
        fmt = self.output or self.formats.get(result.index, "png")
        self.formats.pop(result.index, None)
        now = time.monotonic()
        want_preview = now - self.preview_at >= PREVIEW_EVERY
        data, preview = await anyio.to_thread.run_sync(_encode_result, result.image, fmt, want_preview)
        if preview is not None:
            self.preview, self.preview_at = preview, now
            self.preview_seq += 1
        self.out_times.append(now)
        h, w = result.image.shape[:2]
        self.chain, self.size = list(result.chain), (w, h)
        meta = result.meta()
        meta["dropped"] = self.dropped
        self.summary.frames_out += 1
        self.summary.latencies_ms.append(result.latency_ms)
        key = " > ".join(result.chain)
        self.summary.chains[key] = self.summary.chains.get(key, 0) + 1
        await self.outbox.put(StreamResultOut(index=result.index, timestamp=result.timestamp, data=data, format=fmt, width=w, height=h, meta=meta))

    async def accept_frame(self, msg: StreamFrameIn, cid: str) -> None:
        index = msg.index if msg.index >= 0 else self.frames_in
        ts = msg.timestamp if msg.timestamp >= 0 else index / self.fps
        self.frames_in += 1
        try:
            image = await anyio.to_thread.run_sync(decode_frame, msg)
            frame = Frame(index=index, timestamp=ts, image=image, stem=msg.stem or f"frame_{index:06d}")
            self.formats[index] = (msg.format or _guess_format(bytes(msg.data[:8]))).lower().replace("jpg", "jpeg")
            if len(self.formats) > 4 * (INBOUND + OUTBOUND):  # bounded: results of dropped frames never pop theirs
                self.formats.pop(next(iter(self.formats)))
        except ValueError as exc:
            frame = Frame(index=index, timestamp=ts, image=None, stem=msg.stem, error=f"frame {index}: {exc}")
        if self.slot is not None:
            self.slot.put(frame)
        else:
            await self.inbox_send.send(frame)  # waits when INBOUND frames wait: backpressure

    def finish_input(self) -> None:
        if self.slot is not None:
            self.slot.close()
        self.inbox_send.close()


async def _error(sock: _StreamSocket, status: int, text: str, cid: str | None = None) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await sock.send_now(WsError(status=status, error=text), cid=cid)


async def stream_handler(daemon: Daemon, request: web.Request) -> web.StreamResponse:
    """``GET /v1/stream``: upgrade and serve one stream until ``stream.end`` or the client leaves."""
    if len(ACTIVE) >= MAX_STREAMS:
        raise ApiError(503, f"too many open streams ({MAX_STREAMS}); retry later", retry_after=daemon.config.retry_after)
    if daemon.draining:
        raise ApiError(503, "the daemon is shutting down; retry against the restarted daemon", retry_after=daemon.config.retry_after)
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES + (64 << 10), heartbeat=30.0)
    await ws.prepare(request)
    sock = _StreamSocket(daemon, ws, daemon.client_of(request))
    ACTIVE[sock.id] = sock
    daemon.sockets.add(ws)
    log.info("stream.connected", client=sock.client, stream=sock.id)
    try:
        async with anyio.create_task_group() as tg:
            sock.cancel_scope = tg.cancel_scope
            tg.start_soon(sock.sender)
            processing = False
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await _error(sock, 400, "text frames are not understood; send binary frames holding msgpack envelopes (docs/PROTOCOL.md)")
                    continue
                if msg.type != WSMsgType.BINARY:
                    if msg.type == WSMsgType.ERROR:
                        log.warning("stream.ws_error", stream=sock.id, error=str(ws.exception()))
                    break
                try:
                    envelope = decode(msg.data, max_bytes=MAX_FRAME_BYTES + (64 << 10))
                except CodecError as exc:
                    await _error(sock, 400, str(exc))
                    continue
                cid = envelope.id
                try:
                    match envelope.message:
                        case StreamStart() as start if not sock.started:
                            sock.start(start)
                            await sock.outbox.put(
                                StreamStarted(
                                    stream=sock.id,
                                    config={
                                        "realtime": sock.config.realtime,
                                        "max_frame_ms": sock.config.max_frame_ms,
                                        "reperceive_every": sock.config.reperceive_every,
                                        "output": sock.output,
                                    },
                                ),
                                droppable=False,
                            )
                        case StreamStart():
                            await _error(sock, 400, "stream.start must be the first message of a stream", cid)
                        case StreamFrameIn() as frame:
                            if not sock.started:
                                sock.start(None)
                                await sock.outbox.put(StreamStarted(stream=sock.id, config={"realtime": False}), droppable=False)
                            if not processing:
                                processing = True
                                tg.start_soon(sock.process)
                            await sock.accept_frame(frame, cid)
                        case StreamEnd():
                            if not sock.started:
                                sock.start(None)
                            if not processing:
                                processing = True
                                tg.start_soon(sock.process)
                            sock.finish_input()
                            break
                        case other:
                            await _error(
                                sock, 400, f"message kind {other.KIND!r} cannot be sent on /v1/stream; send stream.start, stream.frame or stream.end", cid
                            )
                except (StreamError, ValueError) as exc:  # a bad stream.start (UnknownNameError is a KeyError)
                    await _error(sock, 400, str(exc), cid)
                except KeyError as exc:
                    await _error(sock, 400, str(exc.args[0]) if exc.args else str(exc), cid)
            else:
                # The client closed (or vanished) without stream.end: drop everything pending.
                tg.cancel_scope.cancel()
            if not processing:
                sock.outbox.close()
    finally:
        ACTIVE.pop(sock.id, None)
        daemon.sockets.discard(ws)
        sock.inbox_send.close()
        sock.inbox_recv.close()
        log.info("stream.closed", client=sock.client, stream=sock.id, frames_in=sock.frames_in, frames_out=sock.summary.frames_out)
    if not ws.closed:
        await ws.close()
    return ws


def streams_status(daemon: Daemon) -> list[dict[str, object]]:
    """The open streams of ``daemon``, oldest first (``GET /v1/streams``)."""
    return [sock.status() for sock in sorted(ACTIVE.values(), key=lambda s: s.opened) if sock.daemon is daemon]


def stream_preview(daemon: Daemon, stream: str) -> bytes:
    """The latest restored frame of ``stream`` as a small JPEG (``GET /v1/streams/{id}/preview.jpg``).

    Raises:
        ApiError: 404 for a stream that is not open here, or has restored no frame yet.
    """
    sock = ACTIVE.get(stream)
    if sock is None or sock.daemon is not daemon:
        raise ApiError(404, f"no open stream {stream!r}; GET /v1/streams lists the open ones")
    if sock.preview is None:
        raise ApiError(404, f"stream {stream} has restored no frame yet; try again in a moment")
    return sock.preview


def stream_route(daemon: Daemon) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The ``GET /v1/stream`` handler of ``daemon``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream_handler(daemon, request)

    return handler
