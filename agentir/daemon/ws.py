"""The WebSocket endpoint ``/v1/ws``: bus envelopes (msgpack, :mod:`agentir.bus.codec`) in binary frames.

Client to daemon:

* ``ws.submit`` v1 ``{image: bin, policy, options, idempotency_key, watch}``: queue a job; answered
  with ``ws.ack`` (its ``cid`` is the submit's envelope id). With ``watch`` (default) the daemon
  then streams the job's ``job.progress`` events and finally one ``ws.result``.
* ``ws.watch`` v1 ``{job}``: stream an existing job's events and result.
* ``ws.cancel`` v1 ``{job}``: cancel; answered with ``ws.ack`` (state ``cancelled``).

Daemon to client: ``ws.ack``, ``job.progress`` (the bus's own kind; ``cid`` = job id),
``ws.result {job, state, png, trace, error}`` (``png`` holds the result for state ``done``) and
``ws.error {status, error, retry_after}`` (``status`` mirrors the HTTP API's codes; ``cid`` is the
offending envelope's id when it could be read).

Bad frames (not msgpack, unknown kinds or versions, wrong fields, text frames, kinds a client may
not send) get a ``ws.error`` with status 400 and the socket stays open; jobs of the same socket are
not affected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import structlog
from aiohttp import WSMsgType, web

from agentir.bus.codec import decode, encode
from agentir.bus.errors import CodecError
from agentir.bus.messages import JobProgress
from agentir.bus.schema import Message
from agentir.daemon.errors import ApiError
from agentir.daemon.messages import WsAck, WsCancel, WsError, WsResult, WsSubmit, WsWatch
from agentir.daemon.store import DONE, TERMINAL, StoreError
from agentir.daemon.worker import JobEvent

if TYPE_CHECKING:
    from agentir.daemon.app import Daemon

log = structlog.get_logger(__name__)

#: Limit on encoded messages the daemon sends (a result PNG can be far larger than an upload).
MAX_SEND_BYTES = 1 << 30

#: WebSocket subprotocols. Browsers cannot send an Authorization header on a WebSocket, so the
#: console offers ``agentir.v1`` plus ``agentir.bearer.<base64url of the token, no padding>``
#: (checked by the daemon's auth middleware); the daemon answers ``agentir.v1``, never the token.
WS_PROTOCOL = "agentir.v1"
WS_BEARER_PREFIX = "agentir.bearer."


# ----------------------------------------------------------------------------- handler
class _Socket:
    """One connection: serialises sends, follows jobs in child tasks."""

    def __init__(self, daemon: Daemon, ws: web.WebSocketResponse, client: str) -> None:
        self.daemon = daemon
        self.ws = ws
        self.client = client
        self._lock = anyio.Lock()

    async def send(self, msg: Message, *, cid: str | None = None) -> None:
        data = encode(msg, correlation_id=cid, source="agentir.daemon", max_bytes=MAX_SEND_BYTES)
        async with self._lock:
            if not self.ws.closed:
                try:
                    await self.ws.send_bytes(data)
                except ConnectionError:  # the client went away; its reader loop ends the handler
                    log.info("ws.send_failed", client=self.client, kind=msg.KIND)

    async def error(self, status: int, text: str, *, cid: str | None = None, retry_after: float = 0.0) -> None:
        self.daemon.metrics.inc("agentir_ws_errors_total", status=str(status))
        await self.send(WsError(status=status, error=text, retry_after=retry_after), cid=cid)

    async def handle(self, data: bytes, tg: anyio.abc.TaskGroup) -> None:
        try:
            envelope = decode(data, max_bytes=self.daemon.config.max_body_bytes + (64 << 10))
        except CodecError as exc:
            await self.error(400, str(exc))
            return
        cid = envelope.id
        try:
            match envelope.message:
                case WsSubmit() as submit:
                    try:
                        record, created = await self.daemon.accept(
                            bytes(submit.image),
                            client=self.client,
                            policy=submit.policy or None,
                            options=dict(submit.options),
                            idem_key=submit.idempotency_key or None,
                        )
                    except ApiError as exc:
                        await self.error(exc.status, exc.message, cid=cid, retry_after=float(exc.retry_after or 0))
                        return
                    await self.send(WsAck(job=record.id, state=record.state, replayed=not created), cid=cid)
                    if submit.watch:
                        tg.start_soon(self.follow, record.id)
                case WsWatch(job=job):
                    await self.daemon.store.get(job)  # 404 for unknown ids
                    tg.start_soon(self.follow, job)
                case WsCancel(job=job):
                    await self.daemon.cancel(job)
                    await self.send(WsAck(job=job, state="cancelled"), cid=cid)
                case other:
                    await self.error(400, f"message kind {other.KIND!r} cannot be sent to the daemon; send ws.submit, ws.watch or ws.cancel", cid=cid)
        except StoreError as exc:
            await self.error(exc.status, str(exc), cid=cid, retry_after=float(exc.retry_after or 0))

    async def follow(self, job: str) -> None:
        """Send ``job``'s progress events until it ends, then its ``ws.result`` (errors as ``ws.error``)."""
        try:
            await self._follow(job)
        except StoreError as exc:  # deleted by retention meanwhile, store closing at shutdown
            await self.error(exc.status, str(exc), cid=job)

    async def _follow(self, job: str) -> None:
        worker, store = self.daemon.worker, self.daemon.store
        while True:
            send, recv = anyio.create_memory_object_stream[JobEvent](64)
            unwatch = worker.watch(job, send)
            try:
                record = await store.get(job)
                if record.state in TERMINAL:
                    break
                async for event in recv:
                    if event.final:
                        break
                    await self.send(JobProgress(job=job, stage=event.stage, detail=event.detail, tool_calls=event.tool_calls), cid=job)
            finally:
                unwatch()
                send.close()
                recv.close()
        png = b""
        if record.state == DONE:
            try:
                png = await anyio.to_thread.run_sync(store.result_path(job).read_bytes)
            except FileNotFoundError:
                await self.send(WsResult(job=job, state=record.state, error="the result was deleted by retention"), cid=job)
                return
        await self.send(WsResult(job=job, state=record.state, png=png, trace=record.trace or {}, error=record.error), cid=job)


def websocket_route(daemon: Daemon) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The ``GET /v1/ws`` handler of ``daemon``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await websocket_handler(daemon, request)

    return handler


async def websocket_handler(daemon: Daemon, request: web.Request) -> web.StreamResponse:
    """``GET /v1/ws``: upgrade and serve one client until it closes (see the module docstring)."""
    if daemon.ws_connections >= daemon.config.max_ws_connections:
        raise ApiError(503, f"too many open WebSockets ({daemon.config.max_ws_connections}); use HTTP or retry later", retry_after=daemon.config.retry_after)
    if daemon.draining:
        raise ApiError(503, "the daemon is shutting down; retry against the restarted daemon", retry_after=daemon.config.retry_after)
    # protocols: a browser that offers agentir.v1 (the console) gets it back; other clients offer none.
    ws = web.WebSocketResponse(max_msg_size=daemon.config.max_body_bytes + (64 << 10), heartbeat=30.0, protocols=(WS_PROTOCOL,))
    await ws.prepare(request)
    sock = _Socket(daemon, ws, daemon.client_of(request))
    daemon.ws_connections += 1
    daemon.sockets.add(ws)
    log.info("ws.connected", client=sock.client)
    try:
        async with anyio.create_task_group() as tg:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await sock.handle(msg.data, tg)
                elif msg.type == WSMsgType.TEXT:
                    await sock.error(400, "text frames are not understood; send binary frames holding msgpack envelopes (docs/PROTOCOL.md)")
                elif msg.type == WSMsgType.ERROR:
                    log.warning("ws.error", client=sock.client, error=str(ws.exception()))
                    break
            tg.cancel_scope.cancel()
    finally:
        daemon.ws_connections -= 1
        daemon.sockets.discard(ws)
        log.info("ws.closed", client=sock.client)
    return ws
