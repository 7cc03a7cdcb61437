"""``async for result in restorer.stream(frames)``: the stream engine for embedders.

``frames`` is any iterable or async iterable of uint8 ``H x W x 3`` RGB arrays (numbered and
timestamped by arrival at ``fps``) or :class:`~agentir.stream.engine.Frame` objects (kept as
given). Results come in order. At most ``queue_size`` frames wait besides the one being
restored (``realtime=True``: one, newest wins, drops counted in ``result.dropped``).

The frames are read by a background task of the Restorer (so that a camera keeps being read
while a frame is restored), not of the caller: an ``async for`` can be left at any point
(``break``, an exception, cancellation) without structured-concurrency errors. Leaving it
stops the reader as soon as the iterator is dropped or closed (``await it.aclose()``, or use
``async with restorer.stream(frames) as results:``); frames already read are freed with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from agentir.stream.engine import Frame, StreamConfig, StreamEngine, StreamError, StreamResult
from agentir.stream.runner import LatestSlot

if TYPE_CHECKING:
    from agentir.actors.scheduler import BatchScheduler
    from agentir.pipeline import Restorer

__all__ = ["FrameStream", "stream_frames"]


async def _frames(frames: Iterable[Any] | AsyncIterable[Any], fps: float) -> AsyncIterator[Frame]:
    def wrap(i: int, item: Any) -> Frame:
        if isinstance(item, Frame):
            return item
        if isinstance(item, np.ndarray):
            return Frame(index=i, timestamp=i / fps, image=item, stem=f"frame_{i:06d}")
        return Frame(
            index=i, timestamp=i / fps, image=None, stem=f"frame_{i:06d}", error=f"frame {i} is a {type(item).__name__}, not a uint8 H x W x 3 numpy array"
        )

    if isinstance(frames, AsyncIterable):
        i = 0
        async for item in frames:
            yield wrap(i, item)
            i += 1
    else:
        for i, item in enumerate(frames):
            yield wrap(i, item)
            await anyio.sleep(0)  # a plain list must not starve the event loop


class FrameStream:
    """The async iterator :meth:`Restorer.stream` returns (see the module docstring)."""

    def __init__(
        self,
        restorer: Restorer,
        frames: Iterable[Any] | AsyncIterable[Any],
        config: StreamConfig,
        *,
        spawn: Callable[..., object],
        scheduler: BatchScheduler | None = None,
        fps: float = 30.0,
        queue_size: int = 4,
    ) -> None:
        self.config = config
        self._source = _frames(frames, fps)
        self._spawn = spawn
        self._scopes: set[anyio.CancelScope] = set()
        self.engine = StreamEngine(restorer, config, scheduler=scheduler, spawn=self._guarded_spawn)
        self._slot = LatestSlot() if config.realtime else None
        self._send, self._recv = anyio.create_memory_object_stream[Frame](max(1, queue_size))
        self._started = False
        self._closed = False

    # -- background work, cancelled with the stream ------------------------------------------
    def _guarded_spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        async def run() -> None:
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    await fn(*args)
                finally:
                    self._scopes.discard(scope)

        self._spawn(run)

    async def _read(self) -> None:
        try:
            async for frame in self._source:
                if self._slot is not None:
                    self._slot.put(frame)
                else:
                    await self._send.send(frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            if self._slot is not None:
                self._slot.close()
            self._send.close()

    # -- iteration ----------------------------------------------------------------------------
    def __aiter__(self) -> FrameStream:
        return self

    async def __anext__(self) -> StreamResult:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            self._guarded_spawn(self._read)
        if self._slot is not None:
            frame = await self._slot.get()
        else:
            try:
                frame = await self._recv.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                frame = None
        if frame is None:
            await self.aclose()
            raise StopAsyncIteration
        if self._slot is None:
            import time

            frame.arrived = time.perf_counter()
        result = await self.engine.process(frame)
        result.dropped = self._slot.dropped if self._slot is not None else 0
        return result

    async def aclose(self) -> None:
        """Stop reading frames and drop the ones waiting (idempotent)."""
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for scope in list(self._scopes):
            scope.cancel()
        self._recv.close()
        if self._slot is not None:
            self._slot.close()

    def __del__(self) -> None:  # a caller that broke out of its loop: stop the reader
        with contextlib.suppress(Exception):  # interpreter shutdown
            self._close()

    async def __aenter__(self) -> FrameStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def stream_frames(
    restorer: Restorer,
    frames: Iterable[Any] | AsyncIterable[Any],
    *,
    spawn: Callable[..., object],
    config: StreamConfig | None = None,
    scheduler: BatchScheduler | None = None,
    fps: float = 30.0,
    queue_size: int = 4,
    **options: Any,
) -> FrameStream:
    """A :class:`FrameStream` over ``frames`` (see the module docstring); ``spawn`` starts its
    background tasks (the Restorer's task group). ``options`` are :class:`StreamConfig` fields.

    Raises:
        StreamError: an unknown or bad option.
    """
    try:
        cfg = config if config is not None else StreamConfig(**options)
    except TypeError as exc:
        raise StreamError(f"unknown stream option: {exc}; see agentir.stream.StreamConfig") from None
    return FrameStream(restorer, frames, cfg, spawn=spawn, scheduler=scheduler, fps=fps, queue_size=queue_size)
