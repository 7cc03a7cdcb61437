"""The daemon: the aiohttp application, its routes and :func:`run_daemon` (store + Restorer + worker).

HTTP API (``docs/PROTOCOL.md`` has the full reference)::

    POST   /v1/jobs               image body (image/*) or multipart (image, policy, options) -> 202 {"id"}
    GET    /v1/jobs               list, newest first: ?limit=50&before=<cursor>&state=<state>
    GET    /v1/jobs/{id}          state, progress, trace
    GET    /v1/jobs/{id}/result   the PNG (409 until done)
    DELETE /v1/jobs/{id}          cancel a queued or running job
    GET    /v1/ws                 WebSocket, msgpack bus envelopes (agentir.daemon.ws)
    GET    /healthz  /readyz  /metrics
    GET    /openapi.json          the OpenAPI 3.1 document (agentir.daemon.openapi)
    GET    /docs                  the same document as a self-contained HTML page
    GET    /  /console/{name}     the web console (agentir.daemon.web; static files, strict CSP)
    GET    /v1/info               policies, options and limits a job may choose (the console's form)
    GET    /v1/jobs/{id}/previews[/{name}]  JPEG input copy and candidate thumbnails (agentir.daemon.previews)

Every error is an RFC 9457 problem-details body (``application/problem+json``: ``type``,
``title``, ``status``, ``detail``, ``instance``, plus the older ``"error": "<one line that says
what to do>"``) with the status code of the table in ``docs/PROTOCOL.md``; 429 and 503 carry
``Retry-After``, 405 carries ``Allow``.

Slow clients: a connection whose request headers are not complete ``header_timeout`` seconds
after its first byte (or after it connected) gets a 408 and is closed
(:class:`TimedRequestHandler`); an upload whose body takes longer than ``body_timeout`` gets a
408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import structlog
from aiohttp import BodyPartReader, web
from aiohttp import __version__ as aiohttp_version
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from aiohttp.web_server import Server

from agentir.bus.blobs import MemoryBlobStore
from agentir.daemon.config import DaemonConfig
from agentir.daemon.errors import PROBLEM_CONTENT_TYPE, ApiError, problem
from agentir.daemon.metrics import Metrics
from agentir.daemon.previews import Previews
from agentir.daemon.store import DONE, QUEUED, RUNNING, STATES, JobRecord, JobStore, ResultNotReady, StoreError
from agentir.daemon.worker import Worker
from agentir.imageio import ImageInputError, decode_image, write_text_atomic
from agentir.pipeline import Restorer
from agentir.settings import Settings

log = structlog.get_logger(__name__)

#: Where routes find the :class:`Daemon` (``request.app[DAEMON]``).
DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"WEBP", 8, "WEBP"),
)


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes (never the Content-Type header), or None."""
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if name == "WEBP" and data[:4] != b"RIFF":
                continue
            return name
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3] in b" \t\r\n":
        return "PPM"
    return None


def validate_job(restorer: Restorer, policy: str, options: Any) -> dict[str, Any]:
    """Check a job's planning policy and options before it is accepted; returns the options
    normalised (what is stored and sent on). Raises ApiError(422) naming the bad policy or option."""
    from agentir.agent_policies.options import OptionError
    from agentir.toolbox.registry import UnknownNameError

    try:
        return restorer.validate(policy, options)
    except OptionError as exc:
        raise ApiError(422, str(exc)) from None
    except UnknownNameError as exc:
        raise ApiError(422, str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)) from None
    except ValueError as exc:  # a policy that cannot be built here (llm without an endpoint)
        raise ApiError(422, f"planning policy {policy!r} is not usable on this daemon: {exc}") from None


class Daemon:
    """The running daemon's parts; routes reach it as ``request.app[DAEMON]``."""

    def __init__(self, config: DaemonConfig, store: JobStore, worker: Worker, metrics: Metrics, restorer: Restorer) -> None:
        self.config = config
        self.store = store
        self.worker = worker
        self.metrics = metrics
        self.restorer = restorer
        self.ready = False
        self.draining = False
        self.port = 0
        self.started = time.time()
        self._decode_slots = anyio.CapacityLimiter(2)  # bounds memory held by concurrent decodes
        self._batches_seen = 0
        self.ws_connections = 0
        self.sockets: set[web.WebSocketResponse] = set()  # the open WebSockets (agentir.daemon.ws)
        self.console_info: dict[str, Any] | None = None  # GET /v1/info, built once (agentir.daemon.web)

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def client_of(self, request: web.Request) -> str:
        """Who a request counts against for per-client limits and idempotency keys."""
        if self.config.trust_client_header:
            given = request.headers.get("X-Client-Id", "").strip()
            if given:
                return given[:128]
        return request.remote or "unknown"

    async def accept(self, data: bytes, *, client: str, policy: str | None, options: dict[str, Any] | None, idem_key: str | None) -> tuple[JobRecord, bool]:
        """Validate and durably queue one job (shared by HTTP and WebSocket); raises ApiError."""
        if self.draining or not self.ready:
            self.metrics.inc("agentir_jobs_rejected_total", reason="shutting_down")
            raise ApiError(503, "the daemon is shutting down; retry against the restarted daemon", retry_after=self.config.retry_after)
        if len(data) > self.config.max_body_bytes:
            self.metrics.inc("agentir_jobs_rejected_total", reason="too_large")
            raise ApiError(413, f"image of {len(data)} bytes exceeds the limit of {self.config.max_body_bytes} bytes; downscale or recompress it")
        if idem_key is not None and (len(idem_key) > 128 or not idem_key.isprintable()):
            raise ApiError(400, "Idempotency-Key must be at most 128 printable characters")
        policy = policy or self.config.policy
        options = validate_job(self.restorer, policy, options if options is not None else {})
        if self.config.max_tool_cost is not None and "max_tool_cost" not in options:
            options = {**options, "max_tool_cost": float(self.config.max_tool_cost)}  # the daemon's default, recorded with the job
        kind = sniff_format(data)
        if kind is None:
            self.metrics.inc("agentir_jobs_rejected_total", reason="unsupported_type")
            raise ApiError(
                415, "the body is not a supported image (PNG, JPEG, BMP, TIFF, WebP, PPM/PGM or GIF, judged from its bytes); send the encoded image file"
            )
        try:
            image = await anyio.to_thread.run_sync(lambda: decode_image(data, name="upload", max_pixels=self.config.max_pixels), limiter=self._decode_slots)
        except ImageInputError as exc:
            too_large = exc.reason.startswith("image is too large")
            self.metrics.inc("agentir_jobs_rejected_total", reason="too_many_pixels" if too_large else "bad_image")
            raise ApiError(413 if too_large else 422, str(exc)) from None
        sha = hashlib.sha256(data).hexdigest()
        try:
            record, created = await self.store.submit(
                data,
                client=client,
                input_sha=sha,
                width=int(image.shape[1]),
                height=int(image.shape[0]),
                policy=policy,
                options=options,
                idem_key=idem_key,
                max_queue=self.config.max_queue,
                max_per_client=self.config.max_per_client,
                retry_after=self.config.retry_after,
            )
        except StoreError as exc:
            self.metrics.inc("agentir_jobs_rejected_total", reason=type(exc).__name__)
            raise ApiError(exc.status, str(exc), retry_after=exc.retry_after) from None
        if created:
            self.metrics.inc("agentir_jobs_submitted_total")
            self.metrics.observe("agentir_upload_size_bytes", float(len(data)))
            log.info("job.accepted", job=record.id, client=client, bytes=len(data), width=record.width, height=record.height, policy=policy)
            self.worker.notify()
        return record, created

    async def cancel(self, job: str) -> str:
        """Cancel ``job``; returns the state it had. Raises StoreError (404, 409)."""
        previous = await self.store.cancel(job)
        if previous == RUNNING:
            self.worker.cancel(job)
        else:
            self.worker.ended(job, "cancelled")
        log.info("job.cancelled", job=job, was=previous)
        return previous

    async def view(self, record: JobRecord, *, with_trace: bool = True) -> dict[str, Any]:
        out = record.to_json(with_trace=with_trace)
        live = self.worker.progress.get(record.id)
        if record.state == RUNNING and live is not None:
            out["progress"] = live.to_json()
        else:
            out["progress"] = {"stage": record.state}
        if record.state == DONE:
            out["result"] = f"/v1/jobs/{record.id}/result"
        if record.extra.get("recorded") is False:
            out["progress"]["detail"] = "not yet written to the job store (its disk is full); the daemon keeps retrying"
        return out

    async def refresh_gauges(self) -> None:
        counts = await self.store.counts()
        for state, n in counts.items():
            self.metrics.set("agentir_jobs", n, state=state)
        self.metrics.set("agentir_queue_depth", counts[QUEUED])
        self.metrics.set("agentir_jobs_running", self.worker.running)
        self.metrics.set("agentir_ws_connections", self.ws_connections)
        batching = self.restorer.executor_stats()
        if batching is not None:
            sizes, total = batching.recent_batch_sizes, batching.batches
            if total < self._batches_seen:  # the executor was restarted
                self._batches_seen = 0
            new = min(total - self._batches_seen, len(sizes))  # the executor keeps only recent sizes
            for size in sizes[len(sizes) - new :] if new > 0 else ():
                self.metrics.observe("agentir_executor_batch_images", float(size))
            self._batches_seen = total


# ----------------------------------------------------------------------------- middleware
def _error_response(
    status: int, message: str, *, instance: str | None = None, retry_after: int | None = None, headers: dict[str, str] | None = None, **extensions: Any
) -> web.Response:
    """An RFC 9457 problem-details answer (``application/problem+json``; see :func:`problem`)."""
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = str(int(retry_after))
    body = problem(status, message, instance=instance, **extensions)
    return web.json_response(body, status=status, headers=hdrs, content_type=PROBLEM_CONTENT_TYPE)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Problem-details (RFC 9457) bodies for every failure, including aiohttp's own 404 and 405
    for unknown routes and methods; request counts for /metrics."""
    daemon: Daemon = request.app[DAEMON]
    path = request.path
    t0 = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_response(exc.status, exc.message, instance=path, retry_after=exc.retry_after)
    except StoreError as exc:
        response = _error_response(exc.status, str(exc), instance=path, retry_after=exc.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        headers: dict[str, str] = {}
        if exc.status == 404:
            text = f"no such endpoint {request.method} {path}; see GET /docs or docs/PROTOCOL.md"
        elif exc.status == 405:
            allowed = sorted(exc.allowed_methods) if isinstance(exc, web.HTTPMethodNotAllowed) else []
            text = f"method {request.method} is not allowed on {path}; use {', '.join(allowed) or 'another method'}"
            headers["Allow"] = ", ".join(allowed)
        elif exc.status == 413:
            text = f"request body exceeds the limit of {daemon.config.max_body_bytes} bytes; downscale or recompress the image"
        response = _error_response(exc.status, text, instance=path, headers=headers)
    except Exception as exc:
        log.exception("http.internal_error", path=path, error=f"{type(exc).__name__}: {exc}")
        response = _error_response(500, f"internal error ({type(exc).__name__}); the daemon logged it, retry or report it", instance=path)
    route = request.match_info.route.resource.canonical if request.match_info.route.resource is not None else "other"
    daemon.metrics.inc("agentir_http_requests_total", method=request.method, route=route, status=str(response.status))
    if not isinstance(response, web.WebSocketResponse):  # a WebSocket's time is its connection's
        daemon.metrics.observe("agentir_http_request_duration_seconds", time.perf_counter() - t0, method=request.method, route=route)
    return response


#: Paths that never need the bearer token: the probes, the API description and the console's own
#: files (no jobs in them; the console asks for the token before it reads a job).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/"})
PUBLIC_PREFIXES = ("/console/",)


def _ws_token(request: web.Request) -> str | None:
    """The token a WebSocket upgrade carries in ``Sec-WebSocket-Protocol``, if any
    (:data:`agentir.daemon.ws.WS_BEARER_PREFIX`)."""
    import base64
    import binascii

    from agentir.daemon.ws import WS_BEARER_PREFIX

    for item in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        item = item.strip()
        if item.startswith(WS_BEARER_PREFIX):
            raw = item[len(WS_BEARER_PREFIX) :]
            try:
                return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token check (when a token is configured) on everything but :data:`PUBLIC_PATHS`;
    a WebSocket upgrade may carry the token as a subprotocol instead (see :func:`_ws_token`)."""
    daemon: Daemon = request.app[DAEMON]
    token = daemon.config.token
    if token and request.path not in PUBLIC_PATHS and not request.path.startswith(PUBLIC_PREFIXES):
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
        if not ok and request.headers.get("Upgrade", "").lower() == "websocket":  # /v1/ws and any later WebSocket route
            carried = _ws_token(request)
            ok = carried is not None and hmac.compare_digest(carried.encode(), token.encode())
        if not ok:
            raise ApiError(401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'") from None
    return await handler(request)


# ----------------------------------------------------------------------------- routes
async def _read_limited(read: Callable[[], Awaitable[bytes]], limit: int) -> bytes:
    """Read chunks until EOF, refusing (413) once more than ``limit`` bytes arrived."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = await read()
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes; downscale or recompress the image")
        parts.append(chunk)
    return b"".join(parts)


def _parse_options(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ApiError(422, 'options must be a JSON object, e.g. {"max_tool_calls": 16}') from None
    if not isinstance(value, dict):
        raise ApiError(422, 'options must be a JSON object, e.g. {"max_tool_calls": 16}')
    return value


async def post_job(request: web.Request) -> web.Response:
    daemon: Daemon = request.app[DAEMON]
    limit = daemon.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit + (1 << 16):
        daemon.metrics.inc("agentir_jobs_rejected_total", reason="too_large")
        raise ApiError(413, f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes; downscale or recompress the image")
    try:
        with anyio.fail_after(daemon.config.body_timeout):
            data, policy, options_text = await _read_job_body(request, daemon)
    except TimeoutError:
        daemon.metrics.inc("agentir_jobs_rejected_total", reason="body_timeout")
        raise ApiError(
            408, f"the request body did not arrive within body_timeout ({daemon.config.body_timeout:g} s); send it faster or raise body_timeout"
        ) from None
    options = _parse_options(options_text)
    idem_key = request.headers.get("Idempotency-Key")
    record, created = await daemon.accept(data, client=daemon.client_of(request), policy=policy, options=options, idem_key=idem_key)
    headers = {"Location": f"/v1/jobs/{record.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response({"id": record.id, "state": record.state}, status=202, headers=headers)


async def _read_job_body(request: web.Request, daemon: Daemon) -> tuple[bytes, str | None, str | None]:
    """The image bytes, policy and options text of a POST /v1/jobs (raw body or multipart)."""
    limit = daemon.config.max_body_bytes
    ctype = request.content_type
    policy: str | None = request.query.get("policy")
    options_text: str | None = request.query.get("options")
    if ctype.startswith("multipart/"):
        reader = await request.multipart()
        data: bytes | None = None
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "nested multipart bodies are not accepted; send fields 'image', 'policy' and 'options'")
            name = part.name or ""
            read = functools.partial(part.read_chunk, 1 << 16)
            if name in ("image", "file"):
                data = await _read_limited(read, limit)
            elif name == "policy":
                policy = (await _read_limited(read, 256)).decode("utf-8", "replace").strip()
            elif name == "options":
                options_text = (await _read_limited(read, 1 << 16)).decode("utf-8", "replace")
            else:
                raise ApiError(400, f"unknown multipart field {name!r}; send 'image', 'policy' and 'options'")
        if data is None:
            raise ApiError(400, "multipart body has no 'image' field; send the image file as field 'image'")
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data = await _read_limited(functools.partial(request.content.read, 1 << 16), limit)
    else:
        daemon.metrics.inc("agentir_jobs_rejected_total", reason="content_type")
        raise ApiError(
            415, f"Content-Type {ctype or '(none)'!r} is not accepted; send the image as the body with an image/* type, or as multipart/form-data field 'image'"
        )
    return data, policy, options_text


async def get_job(request: web.Request) -> web.Response:
    daemon: Daemon = request.app[DAEMON]
    record = await daemon.store.get(request.match_info["id"])
    return web.json_response(await daemon.view(record))


async def get_result(request: web.Request) -> web.StreamResponse:
    daemon: Daemon = request.app[DAEMON]
    job = request.match_info["id"]
    record = await daemon.store.get(job)
    if record.state != DONE:
        raise ResultNotReady(job, record.state, record.error)
    path = daemon.store.result_path(job)  # the id was checked: 32 hex digits, server-generated
    try:
        body = await anyio.to_thread.run_sync(path.read_bytes)
    except FileNotFoundError:
        raise ApiError(404, f"the result of job {job} was deleted by retention; resubmit the image") from None
    return web.Response(body=body, content_type="image/png", headers={"Content-Disposition": f'inline; filename="{job}.png"'})


async def delete_job(request: web.Request) -> web.Response:
    daemon: Daemon = request.app[DAEMON]
    job = request.match_info["id"]
    await daemon.cancel(job)
    return web.json_response({"id": job, "state": "cancelled"})


async def list_jobs(request: web.Request) -> web.Response:
    daemon: Daemon = request.app[DAEMON]
    q = request.query
    try:
        limit = int(q.get("limit", "50"))
        before = int(q["before"]) if q.get("before") else None
    except ValueError:
        raise ApiError(400, "limit and before must be integers (before is the 'next' value of the previous page)") from None
    if not 1 <= limit <= 500:
        raise ApiError(400, "limit must be between 1 and 500")
    if before is not None and not 1 <= before <= 2**63 - 1:  # SQLite integers are 64-bit
        raise ApiError(400, "before must be a positive 64-bit integer (the 'next' value of the previous page)")
    state = q.get("state") or None
    if state is not None and state not in STATES:
        raise ApiError(400, f"unknown state {state!r}; use one of {', '.join(STATES)}")
    records = await daemon.store.list_jobs(limit=limit, before=before, state=state)
    jobs = [await daemon.view(r, with_trace=False) for r in records]
    nxt = str(records[-1].seq) if len(records) == limit else None
    return web.json_response({"jobs": jobs, "next": nxt})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _not_ready(reason: str, retry_after: int) -> web.Response:
    reason = " ".join(reason.split())  # a problem-details body with the probe's own members too
    return _error_response(503, reason, instance="/readyz", retry_after=retry_after, ready=False, reason=reason)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 with a reason while POST /v1/jobs would be refused for a daemon-wide cause."""
    daemon: Daemon = request.app[DAEMON]
    if daemon.draining:
        return _not_ready("the daemon is shutting down", daemon.config.retry_after)
    if not daemon.ready:
        return _not_ready("the daemon is starting", 1)
    full = await anyio.to_thread.run_sync(daemon.store.space_problem)
    if full is not None:
        why = f"data disk has {full.free} bytes free, below min_free_bytes {full.needed}; new jobs get 507 until space is freed"
        return _not_ready(why, daemon.config.retry_after)
    return web.json_response({"status": "ready", "ready": True, "running": daemon.worker.running})


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (public, like the probes)."""
    from agentir.daemon.openapi import document

    return web.json_response(document())


async def api_docs(request: web.Request) -> web.Response:
    """The API reference as one self-contained HTML page (no scripts, no external resources)."""
    from agentir.daemon.openapi import DOCS_CSP, render_html

    headers = {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"}
    return web.Response(text=render_html(), content_type="text/html", charset="utf-8", headers=headers)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus exposition (text format 0.0.4, or OpenMetrics when the scraper asks for it)."""
    daemon: Daemon = request.app[DAEMON]
    await daemon.refresh_gauges()
    body, content_type = daemon.metrics.render(request.headers.get("Accept"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type  # with its version parameter, as scrapers expect
    return response


def build_app(daemon: Daemon) -> web.Application:
    """The aiohttp application for ``daemon`` (routes and middleware; no socket yet)."""
    from agentir.daemon.stream_ws import stream_route
    from agentir.daemon.web import ConsoleRoutes
    from agentir.daemon.ws import websocket_route

    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=daemon.config.max_body_bytes + (1 << 16))
    app[DAEMON] = daemon
    app.router.add_post("/v1/jobs", post_job)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{id}", get_job)
    app.router.add_get("/v1/jobs/{id}/result", get_result)
    app.router.add_delete("/v1/jobs/{id}", delete_job)
    app.router.add_get("/v1/ws", websocket_route(daemon))
    app.router.add_get("/v1/stream", stream_route(daemon))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", api_docs)
    console = ConsoleRoutes(daemon)  # the web console (agentir.daemon.web)
    app.router.add_get("/", console.index)
    app.router.add_get("/console/{name}", console.asset)
    app.router.add_get("/v1/info", console.info)
    app.router.add_get("/v1/jobs/{id}/previews", console.previews)
    app.router.add_get("/v1/jobs/{id}/previews/{name}", console.preview)
    app.router.add_get("/v1/streams", console.streams)
    app.router.add_get("/v1/streams/{id}/preview.jpg", console.stream_preview)
    return app  # every route here has an entry in agentir.daemon.openapi.OPERATIONS (a test checks)


# ----------------------------------------------------------------------------- slow clients
class TimedRequestHandler(RequestHandler):
    """aiohttp's connection handler plus a deadline for the request headers (aiohttp has none).

    The deadline starts when the connection is made, and again with the first byte of each later
    request; it ends when the headers are parsed. Past it, a connection that sent part of a request
    gets a 408 and is closed; one that sent nothing is closed. Bodies are bounded by the route
    (``body_timeout``); a 408 response always closes the connection. WebSockets are never timed.
    """

    #: aiohttp internals this handler reads; if an aiohttp release renames them, the deadline is
    #: switched off (logged once) instead of breaking every connection.
    _INTERNALS = ("_upgraded", "_payload_parser", "_request_in_progress", "_messages", "_request_count", "_force_close")
    _warned = False

    def __init__(self, manager: Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        if not all(hasattr(self, name) for name in self._INTERNALS):
            if not TimedRequestHandler._warned:
                TimedRequestHandler._warned = True
                log.warning("daemon.header_timeout_unavailable", reason="this aiohttp version lacks the internals it needs", aiohttp=aiohttp_version)
            header_timeout = 0.0  # 0 turns the deadline off (see _arm_header_deadline)
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = False  # bytes of a not yet complete request arrived
        self._last_payload: Any = None  # the body stream of the last request handled

    def _between_requests(self) -> bool:
        return (
            not self._upgraded
            and self._payload_parser is None
            and not self._request_in_progress
            and not self._messages
            and (self._last_payload is None or self._last_payload.is_eof())
        )

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None and self._header_timeout > 0:
            self._header_deadline = self._loop.call_later(self._header_timeout, self._on_header_timeout)

    def _disarm_header_deadline(self) -> None:
        self._header_bytes = False
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._header_timeout <= 0:
            super().data_received(data)
            return
        if data and self._between_requests():
            self._header_bytes = True
            self._arm_header_deadline()
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a request's headers are complete
            self._disarm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _on_header_timeout(self) -> None:
        self._header_deadline = None
        transport = self.transport
        if transport is None or self._force_close or not self._between_requests():
            return
        peer = self.peername
        if self._header_bytes:
            message = f"the request headers did not arrive within header_timeout ({self._header_timeout:g} s); the connection is closed"
            body = json.dumps(problem(408, message)).encode()  # no instance: the request line may be incomplete
            head = f"HTTP/1.1 408 Request Timeout\r\nContent-Type: {PROBLEM_CONTENT_TYPE}; charset=utf-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            transport.write(head.encode("ascii") + body)  # flushed by the close below
        log.info("http.header_timeout", peer=str(peer), partial=self._header_bytes, timeout=self._header_timeout)
        self.force_close()

    async def _handle_request(
        self, request: BaseRequest, start_time: float | None, request_handler: Callable[[BaseRequest], Awaitable[StreamResponse]]
    ) -> tuple[StreamResponse, bool]:
        self._disarm_header_deadline()
        self._last_payload = request.content
        resp, reset = await super()._handle_request(request, start_time, request_handler)
        if resp.status == 408:  # the body was too slow: do not wait for the rest of it
            self.force_close()
        return resp, reset


class _TimedServer(Server):
    def __call__(self) -> RequestHandler:
        return TimedRequestHandler(self, loop=self._loop, **self._kwargs)


class _DaemonRunner(web.AppRunner):
    """An :class:`~aiohttp.web.AppRunner` whose connections are :class:`TimedRequestHandler`s."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()  # runs the app's startup hooks; kwargs reach __call__
        server.__class__ = _TimedServer
        return server


class ListenError(Exception):
    """The daemon cannot listen on its host and port (in use, not permitted, no such address)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        self.host, self.port, self.errno = host, port, exc.errno
        if exc.errno == errno.EADDRINUSE:
            why, hint = "address already in use", "choose another --port or stop the other process"
        elif exc.errno == errno.EACCES:
            why, hint = "permission denied", "choose a --port above 1023 or run with the needed privilege"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why, hint = "address not available on this machine", "check --host"
        else:
            why, hint = (exc.strerror or str(exc)).lower(), "check --host and --port"
        super().__init__(f"cannot listen on {host}:{port} ({why}); {hint}")


# ----------------------------------------------------------------------------- running
async def _retention(daemon: Daemon) -> None:
    while True:
        try:
            await daemon.store.cleanup(time.time() - daemon.config.retention_seconds)
        except Exception as exc:
            log.error("store.cleanup_failed", error=f"{type(exc).__name__}: {exc}")
        await anyio.sleep(daemon.config.cleanup_interval)


@asynccontextmanager
async def run_daemon(config: DaemonConfig, settings: Settings | None = None) -> AsyncIterator[Daemon]:
    """Open the store, start the Restorer, the worker and the HTTP server; yield the :class:`Daemon`.

    ``settings`` configure the policies and plug-ins (default :meth:`Settings.from_env`); the
    experience planner always learns into ``DATA/experience.json`` (frozen with
    ``config.freeze_experience``).

    On exit (graceful shutdown): new jobs are refused (503), running jobs get
    ``config.shutdown_grace`` seconds to finish and are re-queued otherwise, then the server stops.
    """
    store = JobStore(config.data, max_attempts=config.max_attempts, min_free_bytes=config.min_free_bytes)
    recovered = await store.open()
    # Learning while serving: judged steps update DATA/experience.json (see the experience planner).
    base = settings if settings is not None else Settings.from_env()
    settings = base.with_experience(Path(config.data) / "experience.json", learn=not config.freeze_experience)
    metrics = Metrics()
    try:
        async with Restorer(
            policy=config.policy,
            settings=settings,
            perception=config.perception,
            blobs=MemoryBlobStore(max_bytes=config.blob_bytes),
            max_inflight=config.concurrency,
            job_timeout=config.job_timeout,
            executor_options={"memory_cap": int(config.memory_cap_gb * 2**30)} if config.memory_cap_gb else None,
        ) as restorer:
            previews = Previews(store, metrics)
            worker = Worker(
                store, restorer, metrics, concurrency=config.concurrency, max_attempts=config.max_attempts,
                max_pixels=config.max_pixels, disk_backoff=config.disk_backoff, previews=previews,
            )  # fmt: skip
            daemon = Daemon(config, store, worker, metrics, restorer)
            async with anyio.create_task_group() as tg:
                await tg.start(previews.run, restorer.bus, restorer.blobs)  # the console's thumbnails
                await tg.start(worker.run)
                tg.start_soon(_retention, daemon)
                runner = _DaemonRunner(build_app(daemon), handle_signals=False, access_log=None, shutdown_timeout=5.0, header_timeout=config.header_timeout)
                await runner.setup()
                try:
                    site = web.TCPSite(runner, config.host, config.port)
                    try:
                        await site.start()
                    except OSError as exc:
                        raise ListenError(config.host, config.port, exc) from exc
                    server = getattr(site, "_server", None)
                    sockets = getattr(server, "sockets", None) or []
                    daemon.port = int(sockets[0].getsockname()[1]) if sockets else int(config.port)
                    daemon.ready = True
                    if config.port_file is not None:
                        write_text_atomic(config.port_file, f"{daemon.port}\n")
                    log.info("daemon.listening", url=daemon.url, data=str(config.data), concurrency=config.concurrency, **recovered)
                    try:
                        yield daemon
                    finally:
                        daemon.draining = True
                        with anyio.CancelScope(shield=True):
                            requeued = await worker.drain(config.shutdown_grace)
                            log.info("daemon.stopping", requeued=requeued)
                finally:
                    with anyio.CancelScope(shield=True):
                        await runner.cleanup()
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
        log.info("daemon.stopped")


async def serve_forever(config: DaemonConfig, settings: Settings | None = None) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    import signal

    async with run_daemon(config, settings):
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                break


__all__ = [
    "DAEMON",
    "PUBLIC_PATHS",
    "ApiError",
    "Daemon",
    "ListenError",
    "TimedRequestHandler",
    "build_app",
    "run_daemon",
    "serve_forever",
    "sniff_format",
    "validate_job",
]
