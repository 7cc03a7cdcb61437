"""The daemon's ``/v1/stream`` WebSocket on loopback: frames in, restored frames out in order, bad
frames and bad clients (one that stops reading, one that disconnects), concurrent streams."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import cv2
import numpy as np
from test_stream_helpers import darken, pan

from agentir.bus.codec import decode, encode
from agentir.daemon import stream_ws
from agentir.daemon.app import Daemon, run_daemon
from agentir.daemon.config import DaemonConfig
from agentir.daemon.messages import WsError
from agentir.stream.messages import StreamEnd, StreamFrameError, StreamFrameIn, StreamResultOut, StreamStart, StreamStarted, StreamSummaryOut


@asynccontextmanager
async def daemon_at(tmp_path: Path) -> AsyncIterator[Daemon]:
    config = DaemonConfig(port=0, data=tmp_path / "data", min_free_bytes=0, retry_after=3)
    async with run_daemon(config) as daemon:
        yield daemon


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
    assert ok
    return buf.tobytes()


def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


async def read_all(ws: aiohttp.ClientWebSocketResponse) -> list[Any]:
    out = []
    with anyio.fail_after(120):
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            out.append(decode(msg.data).message)
    return out


async def wait_no_streams() -> None:
    with anyio.fail_after(30):
        while stream_ws.ACTIVE:
            await anyio.sleep(0.05)  # the handler's finally runs on the daemon's own schedule


async def test_stream_over_websocket_in_order_with_a_bad_frame(tmp_path: Path) -> None:
    """PNG, JPEG and raw RGB frames come back restored in order, in their own format; a corrupt one is a frame error; a summary ends it."""
    frames = darken(pan("rocket", 5))
    async with daemon_at(tmp_path) as daemon, aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/v1/stream") as ws:
        await ws.send_bytes(encode(StreamStart(reperceive_every=0)))
        await ws.send_bytes(encode(StreamFrameIn(data=png(frames[0]), stem="a")))
        await ws.send_bytes(encode(StreamFrameIn(data=jpeg(frames[1]), format="jpeg")))
        await ws.send_bytes(encode(StreamFrameIn(data=b"\xff\xd8\xff" + b"broken" * 20, format="jpeg")))
        h, w = frames[3].shape[:2]
        await ws.send_bytes(encode(StreamFrameIn(data=frames[3].tobytes(), format="rgb", width=w, height=h, timestamp=12.5)))
        await ws.send_bytes(encode(StreamFrameIn(data=frames[4].tobytes(), format="rgb", width=w + 1, height=h)))  # wrong size for its bytes
        await ws.send_bytes(encode(StreamEnd()))
        messages = await read_all(ws)
    assert isinstance(messages[0], StreamStarted)
    results = [m for m in messages if isinstance(m, StreamResultOut)]
    errors = [m for m in messages if isinstance(m, StreamFrameError)]
    assert [r.index for r in results] == [0, 1, 3], [getattr(m, "error", "") for m in messages]
    assert [r.format for r in results] == ["png", "jpeg", "rgb"]
    assert results[0].meta["stem"] == "a" and results[0].meta["event"] == "planned" and "dark" in results[0].meta["plan"]
    assert results[1].meta["event"] == "reused" and results[1].meta["chain"] == results[0].meta["chain"]
    assert results[2].timestamp == 12.5 and len(results[2].data) == h * w * 3
    assert all(r.meta["latency_ms"] > 0 for r in results)
    assert [e.index for e in errors] == [2, 4]
    assert "not a decodable" in errors[0].error and "needs" in errors[1].error
    decoded = cv2.imdecode(np.frombuffer(results[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == frames[0].shape and decoded.mean() > frames[0].mean() + 10
    summary = messages[-1]
    assert isinstance(summary, StreamSummaryOut)
    assert summary.summary["frames_in"] == 5 and summary.summary["frames_out"] == 3 and summary.summary["errors"] == 2
    assert summary.summary["plans"] == 1


async def test_bad_messages_get_errors_and_the_stream_stays_open(tmp_path: Path) -> None:
    """Text frames, non-msgpack bytes, a bad stream.start and a second stream.start are 400s; the stream still works."""
    frames = darken(pan("rocket", 1))
    async with daemon_at(tmp_path) as daemon, aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/v1/stream") as ws:
        await ws.send_str("hello")
        await ws.send_bytes(b"\x00not msgpack")
        await ws.send_bytes(encode(StreamStart(output="gif")))
        await ws.send_bytes(encode(StreamStart(policy="experiance")))
        await ws.send_bytes(encode(StreamStart()))
        await ws.send_bytes(encode(StreamStart()))
        await ws.send_bytes(encode(StreamFrameIn(data=png(frames[0]))))
        await ws.send_bytes(encode(StreamEnd()))
        messages = await read_all(ws)
    errors = [m for m in messages if isinstance(m, WsError)]
    assert [e.status for e in errors] == [400] * 5
    assert "text frames" in errors[0].error and "gif" in errors[2].error and "experience" in errors[3].error
    assert "first message" in errors[4].error
    assert sum(isinstance(m, StreamResultOut) for m in messages) == 1 and isinstance(messages[-1], StreamSummaryOut)


async def test_client_disconnecting_mid_stream_frees_the_stream(tmp_path: Path) -> None:
    """A client that goes away without stream.end: its pending frames are dropped and the stream closed; the daemon serves the next one."""
    frames = darken(pan("rocket", 6))
    async with daemon_at(tmp_path) as daemon, aiohttp.ClientSession() as http:
        async with http.ws_connect(daemon.url + "/v1/stream") as ws:
            for f in frames:
                await ws.send_bytes(encode(StreamFrameIn(data=png(f))))
        await wait_no_streams()
        async with http.ws_connect(daemon.url + "/v1/stream") as ws:
            await ws.send_bytes(encode(StreamFrameIn(data=png(frames[0]))))
            await ws.send_bytes(encode(StreamEnd()))
            messages = await read_all(ws)
        assert sum(isinstance(m, StreamResultOut) for m in messages) == 1
    assert not stream_ws.ACTIVE


# ----------------------------------------------------------------------------- a client that never reads
class RawWebSocket:
    """A minimal RFC 6455 client on a plain TCP stream, so that a test can stop reading for real
    (aiohttp's client reads into its own buffer in the background)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str, path: str, *, buffer: int = 0) -> RawWebSocket:
        """Open the socket; ``buffer`` > 0 caps its kernel send and receive buffers (bytes), so
        that backpressure shows after a few frames instead of megabytes."""
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0], head
        return cls(reader, writer)

    async def send(self, payload: bytes) -> None:
        n = len(payload)
        header = bytes([0x82]) + (
            bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 1 << 16 else bytes([0x80 | 127]) + struct.pack(">Q", n)
        )
        mask = os.urandom(4)
        body = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)).tobytes()
        self.writer.write(header + mask + body)
        await self.writer.drain()

    async def recv(self) -> bytes | None:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
        data = await self.reader.readexactly(n)
        if b0 & 0x0F == 0x8:
            return None
        return data

    def close(self) -> None:
        self.writer.close()


async def test_client_that_stops_reading_gets_drops_not_unbounded_memory(tmp_path: Path) -> None:
    """A realtime client that sends without reading: results wait in a bounded queue, the rest are dropped and counted."""
    frames = darken(pan("rocket", 4))
    h, w = frames[0].shape[:2]
    sent = 40
    async with daemon_at(tmp_path) as daemon:
        ws = await RawWebSocket.connect(daemon.url, "/v1/stream")
        try:
            await ws.send(encode(StreamStart(realtime=True, output="rgb", reperceive_every=0)))
            for i in range(sent):  # never reading meanwhile
                await ws.send(encode(StreamFrameIn(data=frames[i % 4].tobytes(), format="rgb", width=w, height=h)))
            await ws.send(encode(StreamEnd()))
            messages = []
            with anyio.fail_after(120):
                while (data := await ws.recv()) is not None:
                    messages.append(decode(data).message)
        finally:
            ws.close()
    results = [m for m in messages if isinstance(m, StreamResultOut)]
    summary = messages[-1]
    assert isinstance(summary, StreamSummaryOut)
    s = summary.summary
    assert s["frames_in"] == sent
    assert s["dropped"] == s["dropped_in"] + s["dropped_out"] > 0
    assert len(results) + s["dropped"] == sent  # every frame is either delivered or counted as dropped
    assert s["outbound_peak"] <= stream_ws.OUTBOUND
    indices = [r.index for r in results]
    assert indices == sorted(indices)


async def test_every_frame_client_that_stops_reading_is_slowed_down_and_loses_nothing(tmp_path: Path) -> None:
    """An every-frame client that sends without reading: the daemon's queues fill, it stops
    reading the socket, and the client's sends block (TCP backpressure), long before all frames
    are sent; once the client reads again, every frame arrives, in order, none dropped."""
    frames = darken(pan("rocket", 4))
    h, w = frames[0].shape[:2]
    total = 400  # ~80 MB of raw frames: far more than the queues and the capped socket buffers hold
    async with daemon_at(tmp_path) as daemon:
        ws = await RawWebSocket.connect(daemon.url, "/v1/stream", buffer=1 << 16)
        try:
            await ws.send(encode(StreamStart(realtime=False, output="rgb", reperceive_every=0)))
            sent = 0
            stalled = False
            with anyio.fail_after(120):
                while sent < total:
                    with anyio.move_on_after(3) as scope:
                        await ws.send(encode(StreamFrameIn(data=frames[sent % 4].tobytes(), format="rgb", width=w, height=h)))
                    if scope.cancelled_caught:
                        stalled = True  # this frame's bytes are half written: the rest follow below
                        break
                    sent += 1
            assert stalled, f"all {total} frames were accepted without the client reading: no backpressure"
            assert sent < total // 2, sent
            print(f"sends blocked after {sent} frames")

            messages: list[Any] = []

            async def read() -> None:
                while (data := await ws.recv()) is not None:
                    messages.append(decode(data).message)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                with anyio.fail_after(120):
                    await ws.writer.drain()  # the stalled frame goes out once the daemon reads again
                    sent += 1
                    await ws.send(encode(StreamEnd()))
        finally:
            ws.close()
    results = [m for m in messages if isinstance(m, StreamResultOut)]
    summary = messages[-1]
    assert isinstance(summary, StreamSummaryOut), messages[-1]
    s = summary.summary
    assert s["frames_in"] == sent and s["dropped"] == 0
    assert [r.index for r in results] == list(range(sent))
    assert s["outbound_peak"] <= stream_ws.OUTBOUND


async def test_concurrent_streams_share_the_executor(tmp_path: Path) -> None:
    """Two streams at once whose chain has a tool without held parameters run it through the daemon's one Executor; both get every frame in order."""
    # 128x128 frames read as low resolution: bicubic_sr has no held parameters, so it goes through the scheduler.
    from test_stream_helpers import DATA

    img = cv2.imread(str(DATA / "rocket.png"))[..., ::-1]
    frames = [np.ascontiguousarray(np.roll(img, 2 * i, axis=1)) for i in range(4)]
    async with daemon_at(tmp_path) as daemon, aiohttp.ClientSession() as http:
        before = daemon.restorer.executor_stats()
        assert before is not None

        async def one() -> list[Any]:
            async with http.ws_connect(daemon.url + "/v1/stream") as ws:
                await ws.send_bytes(encode(StreamStart(max_frame_ms=0, reperceive_every=0)))
                for f in frames:
                    await ws.send_bytes(encode(StreamFrameIn(data=png(f))))
                await ws.send_bytes(encode(StreamEnd()))
                return await read_all(ws)

        got: list[list[Any]] = []

        async def run() -> None:
            got.append(await one())

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            tg.start_soon(run)
        after = daemon.restorer.executor_stats()
    assert after is not None
    for messages in got:
        results = [m for m in messages if isinstance(m, StreamResultOut)]
        assert [r.index for r in results] == [0, 1, 2, 3]
        assert "bicubic_sr" in results[-1].meta["chain"]
        assert (results[0].height, results[0].width) == (512, 512)
    # Each stream ran bicubic_sr through the shared scheduler for its frames (plus the agents' own calls).
    assert after.units - before.units >= 2 * len(frames)


async def test_open_streams_are_listed_with_live_counters_and_a_preview(tmp_path: Path) -> None:
    """GET /v1/streams lists an open stream (frames, fps, chain); its preview is a small JPEG of the
    latest restored frame; an unknown stream is a 404; the list empties when the stream ends."""
    frames = darken(pan("rocket", 6))
    async with daemon_at(tmp_path) as daemon, aiohttp.ClientSession(base_url=daemon.url) as http:
        async with http.get("/v1/streams") as r:
            assert r.status == 200 and (await r.json()) == {"streams": []}
        async with http.ws_connect("/v1/stream") as ws:
            await ws.send_bytes(encode(StreamStart(reperceive_every=0)))
            got = 0
            for f in frames:
                await ws.send_bytes(encode(StreamFrameIn(data=png(f))))
            with anyio.fail_after(60):
                async for msg in ws:
                    if isinstance(decode(msg.data).message, StreamResultOut):
                        got += 1
                        if got == len(frames):
                            break
            async with http.get("/v1/streams") as r:
                streams = (await r.json())["streams"]
            assert len(streams) == 1
            s = streams[0]
            assert s["frames_in"] == s["frames_out"] == len(frames) and s["dropped"] == 0 and s["mode"] == "every-frame"
            assert s["fps"] > 0 and s["latency_ms_p50"] > 0 and s["chain"] and (s["width"], s["height"]) == (frames[0].shape[1], frames[0].shape[0])
            assert s["opened_at"].endswith("Z") and s["preview"] == f"/v1/streams/{s['id']}/preview.jpg"
            async with http.get(s["preview"]) as r:
                assert r.status == 200 and r.content_type == "image/jpeg"
                preview = cv2.imdecode(np.frombuffer(await r.read(), np.uint8), cv2.IMREAD_COLOR)
            assert preview is not None and preview.shape[1] == min(frames[0].shape[1], stream_ws.PREVIEW_WIDTH)
            assert preview.mean() > frames[-1].mean() + 10  # the restored (brightened) frame, not the input
            async with http.get("/v1/streams/ws-nosuch/preview.jpg") as r:
                assert r.status == 404 and "GET /v1/streams" in (await r.json())["detail"]
            await ws.send_bytes(encode(StreamEnd()))
            await read_all(ws)
        await wait_no_streams()
        async with http.get("/v1/streams") as r:
            assert (await r.json())["streams"] == []


async def test_the_stream_list_needs_the_token(tmp_path: Path) -> None:
    config = DaemonConfig(port=0, data=tmp_path / "data", min_free_bytes=0, token="s3cret")
    async with run_daemon(config) as daemon, aiohttp.ClientSession(base_url=daemon.url) as http:
        async with http.get("/v1/streams") as r:
            assert r.status == 401
        async with http.get("/v1/streams/ws-x/preview.jpg") as r:
            assert r.status == 401
        async with http.get("/v1/streams", headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200
