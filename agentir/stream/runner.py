"""Runs a stream end to end: source -> bounded queue -> engine -> bounded queue -> sink.

Three tasks joined by bounded queues, so memory never grows with the stream:

* the **reader** pulls frames from the source in a worker thread. ``--every-frame``: a queue of
  ``queue_size`` frames; when it is full the reader waits (backpressure on the source, no frame
  lost). ``--realtime``: a :class:`LatestSlot`: a frame that arrives while the previous one still
  waits replaces it (newest wins) and is counted as dropped. A file or folder is played at its
  frame rate in realtime (as a camera would deliver it); a live source runs on its own clock.
* the **processor** restores frames in order (:class:`~agentir.stream.engine.StreamEngine`).
* the **writer** encodes outputs in a worker thread.

Latency is measured from the moment a frame was delivered (read from a live or paced source;
taken from the queue when the source is read as fast as the engine goes) to the moment its
output is ready; frames keep their index, timestamp and stem.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agentir.stream.engine import Frame, StreamConfig, StreamEngine, StreamResult

if TYPE_CHECKING:
    from agentir.actors.scheduler import BatchScheduler
    from agentir.pipeline import Restorer
    from agentir.stream.io import Sink, Source

__all__ = ["LatestSlot", "StreamSummary", "percentile", "run_stream"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-interpolated percentile (numpy's linear); NaN for no values."""
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class LatestSlot:
    """A one-frame mailbox where the newest frame wins (realtime mode).

    ``put`` never blocks: a frame still waiting is replaced and counted in ``dropped``.
    ``get`` waits for a frame; after ``close`` it returns the last waiting frame, then None.
    """

    def __init__(self) -> None:
        self._item: Any = None
        self._event = anyio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> None:
        if self._item is not None:
            self.dropped += 1
        self._item = item
        self._event.set()

    def close(self) -> None:
        self._closed = True
        self._event.set()

    async def get(self) -> Any:
        while self._item is None:
            if self._closed:
                return None
            await self._event.wait()
            self._event = anyio.Event()
        item, self._item = self._item, None
        return item


@dataclass
class StreamSummary:
    """What one stream did; :meth:`as_dict` is the ``--json`` line."""

    source: str
    sink: str
    mode: str
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=dict)
    chains: dict[str, int] = field(default_factory=dict)
    error_messages: list[str] = field(default_factory=list)
    source_ended: str = "end"

    def as_dict(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "source": self.source,
            "sink": self.sink,
            "mode": self.mode,
            "fps": round(self.frames_out / self.seconds, 3) if self.seconds > 0 else 0.0,
            "seconds": round(self.seconds, 3),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "errors": self.errors,
            "latency_ms": {
                "p50": _r(percentile(lat, 50)),
                "p95": _r(percentile(lat, 95)),
                "p99": _r(percentile(lat, 99)),
                "max": _r(max(lat) if lat else math.nan),
            },
            "plans": self.engine.get("plans", 0),
            "reperceptions": self.engine.get("reperceptions", 0),
            "scene_changes": self.engine.get("scene_changes", 0),
            "replans": self.engine.get("replans", 0),
            "chains": dict(self.chains),
            "ms_per_mp": self.engine.get("ms_per_mp", {}),
            "source_ended": self.source_ended,
            "error_messages": self.error_messages[:10],
        }


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def _next(it: Iterator[Frame]) -> Frame | None:
    return next(it, None)


async def iterate(
    frames: AsyncIterator[Frame],
    engine: StreamEngine,
    *,
    realtime: bool,
    queue_size: int = 4,
    stamp_on_take: bool = False,
) -> AsyncGenerator[tuple[StreamResult, int], None]:
    """Run ``engine`` over ``frames`` through a bounded queue (or a newest-wins slot); yields
    ``(result, frames dropped so far)`` in order. Leaving the loop early cancels the reader."""
    slot = LatestSlot() if realtime else None
    send: MemoryObjectSendStream[Frame | None]
    recv: MemoryObjectReceiveStream[Frame | None]
    send, recv = anyio.create_memory_object_stream(max(1, queue_size))

    async def read() -> None:
        try:
            async for frame in frames:
                frame.arrived = time.perf_counter()
                if slot is not None:
                    slot.put(frame)
                else:
                    await send.send(frame)
        finally:
            if slot is not None:
                slot.close()
            send.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        try:
            while True:
                if slot is not None:
                    frame = await slot.get()
                else:
                    try:
                        frame = await recv.receive()
                    except anyio.EndOfStream:
                        frame = None
                if frame is None:
                    break
                if stamp_on_take:
                    frame.arrived = time.perf_counter()
                result = await engine.process(frame)
                yield result, slot.dropped if slot is not None else 0
        finally:
            tg.cancel_scope.cancel()
            recv.close()


async def source_frames(source: Source, *, pace: bool) -> AsyncIterator[Frame]:
    """The source's frames, read in a worker thread; ``pace`` plays them at their timestamps."""
    it = source.frames()
    t0: float | None = None
    ts0 = 0.0
    while True:
        frame = await anyio.to_thread.run_sync(_next, it)
        if frame is None:
            return
        if pace:
            now = time.perf_counter()
            if t0 is None:
                t0, ts0 = now, frame.timestamp
            wait = t0 + (frame.timestamp - ts0) - now
            if wait > 0:
                await anyio.sleep(wait)
        yield frame


async def run_stream(
    source: Source,
    sink: Sink,
    restorer: Restorer,
    config: StreamConfig,
    *,
    scheduler: BatchScheduler | None = None,
    queue_size: int = 4,
    on_result: Callable[[StreamResult, StreamSummary], None] | None = None,
    max_frames: int | None = None,
) -> StreamSummary:
    """Restore ``source`` into ``sink`` (see the module docstring); returns the summary.

    ``max_frames`` stops after that many input frames. Cancelling the caller stops the stream;
    the sink is closed either way (a video is renamed into place with what was written).
    """
    summary = StreamSummary(source=source.name, sink=sink.name, mode="realtime" if config.realtime else "every-frame")
    pace = config.realtime and not source.live

    async def frames() -> AsyncIterator[Frame]:
        n = 0
        async for frame in source_frames(source, pace=pace):
            summary.frames_in += 1
            yield frame
            n += 1
            if max_frames is not None and n >= max_frames:
                return

    send: MemoryObjectSendStream[StreamResult | None]
    recv: MemoryObjectReceiveStream[StreamResult | None]
    send, recv = anyio.create_memory_object_stream(8)

    async def write() -> None:
        async with recv:
            async for result in recv:
                if result is None:
                    continue
                await anyio.to_thread.run_sync(sink.write, result.stem, result.image)

    t0 = time.perf_counter()
    try:
        async with StreamEngine(restorer, config, scheduler=scheduler) as engine, anyio.create_task_group() as tg:
            tg.start_soon(write)
            try:
                results = iterate(frames(), engine, realtime=config.realtime, queue_size=queue_size, stamp_on_take=not (source.live or pace))
                async with aclosing(results):  # finalised here, in this task, whatever happens
                    async for result, dropped in results:
                        summary.dropped = dropped
                        if result.error:
                            summary.errors += 1
                            summary.error_messages.append(result.error)
                        else:
                            summary.frames_out += 1
                            summary.latencies_ms.append(result.latency_ms)
                            key = " > ".join(result.chain) or "(nothing to do)"
                            summary.chains[key] = summary.chains.get(key, 0) + 1
                        summary.engine = engine.stats()
                        await send.send(result)
                        summary.seconds = time.perf_counter() - t0
                        if on_result is not None:
                            on_result(result, summary)
            finally:
                send.close()
            summary.engine = engine.stats()
    finally:
        summary.seconds = time.perf_counter() - t0
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(sink.close)
            await anyio.to_thread.run_sync(source.close)
    if source.live:
        summary.source_ended = "disconnected"
    return summary
