"""A small async client for the agentir daemon (HTTP and WebSocket).

HTTP, one image::

    from agentir.client import AgentirClient

    async with AgentirClient("http://127.0.0.1:8080", token=None) as client:
        job = await client.submit("photo.jpg", policy="rules", options={"max_tool_calls": 16})
        info = await client.wait(job, timeout=120)          # {"state": "done", "trace": {...}, ...}
        png = await client.result(job)                      # PNG bytes
        # or all three at once, retrying politely on 429/503:
        png, trace = await client.restore("photo.jpg")

WebSocket (msgpack bus envelopes; progress events as they happen)::

    async with AgentirClient("http://127.0.0.1:8080") as client:
        png, trace = await client.ws_restore("photo.jpg", on_progress=lambda p: print(p.stage, p.detail))

Images may be given as a path, encoded bytes (PNG, JPEG, ...) or a uint8 H x W x 3 RGB array.
Every refusal raises :class:`DaemonError` with the daemon's status code and one-line message;
:class:`DaemonBusy` (429 / 503) carries ``retry_after``. Run it with ``anyio.run(main)`` or
``asyncio.run(main())``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio

__all__ = ["AgentirClient", "DaemonBusy", "DaemonError", "JobFailedError"]


class DaemonError(Exception):
    """The daemon refused a request: ``status`` (HTTP code) and its one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class DaemonBusy(DaemonError):
    """429 (too many jobs for this client) or 503 (queue full, shutting down); retry after ``retry_after`` s."""

    def __init__(self, status: int, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(status, message)


class JobFailedError(Exception):
    """A job ended ``failed`` or ``cancelled``; ``info`` is its last status."""

    def __init__(self, job: str, state: str, error: str, info: dict[str, Any] | None = None) -> None:
        self.job = job
        self.state = state
        self.error = error
        self.info = info or {}
        super().__init__(f"job {job} {state}: {error or 'no detail'}")


def _image_bytes(image: Any) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    else:
        if isinstance(image, np.ndarray):
            from agentir.imageio import encode_png

            return encode_png(image)
    raise TypeError(f"image must be a path, encoded bytes or a uint8 H x W x 3 array, got {type(image).__name__}")


class AgentirClient:
    """Async client; use as ``async with AgentirClient(url, token=...) as client``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8080``.
        token: bearer token when the daemon was started with one.
        timeout: seconds per HTTP request.
        client_id: sent as ``X-Client-Id`` (honoured only by daemons behind a trusted proxy).
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 60.0, client_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        if client_id:
            self.headers["X-Client-Id"] = client_id
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentirClient:
        self._session = aiohttp.ClientSession(headers=self.headers, timeout=self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client as 'async with AgentirClient(...) as client'")
        return self._session

    # -- HTTP --------------------------------------------------------------------------------
    @staticmethod
    async def _check(resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        try:
            message = (await resp.json()).get("error", "")
        except (aiohttp.ContentTypeError, json.JSONDecodeError, AttributeError):
            message = (await resp.text())[:200]
        if resp.status in (429, 503):
            raise DaemonBusy(resp.status, message, float(resp.headers.get("Retry-After", "1") or 1))
        raise DaemonError(resp.status, message)

    async def submit(
        self,
        image: Any,
        *,
        policy: str | None = None,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue one image; returns the job id. Raises DaemonError / DaemonBusy."""
        data = _image_bytes(image)
        params: dict[str, str] = {}
        if policy:
            params["policy"] = policy
        if options:
            params["options"] = json.dumps(options)
        headers = {"Content-Type": "application/octet-stream"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        async with self.session.post(f"{self.base_url}/v1/jobs", data=data, params=params, headers=headers) as resp:
            await self._check(resp)
            return str((await resp.json())["id"])

    async def status(self, job: str) -> dict[str, Any]:
        """The job's state, progress and trace."""
        async with self.session.get(f"{self.base_url}/v1/jobs/{job}") as resp:
            await self._check(resp)
            return dict(await resp.json())

    async def result(self, job: str) -> bytes:
        """The result PNG of a done job (DaemonError 409 before that)."""
        async with self.session.get(f"{self.base_url}/v1/jobs/{job}/result") as resp:
            await self._check(resp)
            return await resp.read()

    async def cancel(self, job: str) -> dict[str, Any]:
        """Cancel a queued or running job (DaemonError 409 if it already ended)."""
        async with self.session.delete(f"{self.base_url}/v1/jobs/{job}") as resp:
            await self._check(resp)
            return dict(await resp.json())

    async def jobs(self, *, limit: int = 50, before: str | None = None, state: str | None = None) -> dict[str, Any]:
        """One page of jobs, newest first: ``{"jobs": [...], "next": cursor or None}``."""
        params: dict[str, str] = {"limit": str(limit)}
        if before:
            params["before"] = before
        if state:
            params["state"] = state
        async with self.session.get(f"{self.base_url}/v1/jobs", params=params) as resp:
            await self._check(resp)
            return dict(await resp.json())

    async def wait(self, job: str, *, timeout: float = 600.0, poll: float = 0.2) -> dict[str, Any]:
        """Poll until the job ends; returns its status (any terminal state). Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.status(job)
            if info["state"] in ("done", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still {info['state']} after {timeout:g} s")
            await anyio.sleep(poll)

    async def restore(
        self, image: Any, *, policy: str | None = None, options: dict[str, Any] | None = None, timeout: float = 600.0, busy_retries: int = 20
    ) -> tuple[bytes, dict[str, Any]]:
        """Submit (retrying on 429/503 after Retry-After, with one idempotency key), wait, fetch.

        Returns ``(png_bytes, trace)``. Raises JobFailedError when the job failed or was cancelled.
        """
        key = os.urandom(12).hex()
        for attempt in range(busy_retries + 1):
            try:
                job = await self.submit(image, policy=policy, options=options, idempotency_key=key)
                break
            except DaemonBusy as exc:
                if attempt == busy_retries:
                    raise
                await anyio.sleep(min(exc.retry_after, 30.0))
        info = await self.wait(job, timeout=timeout)
        if info["state"] != "done":
            raise JobFailedError(job, info["state"], info.get("error", ""), info)
        return await self.result(job), dict(info.get("trace") or {})

    async def health(self) -> bool:
        """Whether ``/readyz`` says the daemon accepts jobs."""
        async with self.session.get(f"{self.base_url}/readyz") as resp:
            return resp.status == 200

    async def metrics(self) -> str:
        """The Prometheus text of ``/metrics``."""
        async with self.session.get(f"{self.base_url}/metrics") as resp:
            await self._check(resp)
            return await resp.text()

    # -- WebSocket -------------------------------------------------------------------------------
    async def ws_restore(
        self,
        image: Any,
        *,
        policy: str = "",
        options: dict[str, Any] | None = None,
        idempotency_key: str = "",
        on_progress: Callable[[Any], None] | None = None,
        timeout: float = 600.0,
    ) -> tuple[bytes, dict[str, Any]]:
        """Submit over ``/v1/ws`` and follow the job to its end; returns ``(png_bytes, trace)``.

        ``on_progress`` receives each :class:`agentir.bus.messages.JobProgress`. Raises DaemonError /
        DaemonBusy (a ``ws.error`` answer), JobFailedError, TimeoutError.
        """
        from agentir.bus.codec import decode, encode
        from agentir.bus.messages import JobProgress
        from agentir.daemon.messages import WsAck, WsError, WsResult, WsSubmit

        data = _image_bytes(image)
        ws_url = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/ws"
        submit = WsSubmit(image=data, policy=policy, options=dict(options or {}), idempotency_key=idempotency_key)
        with anyio.fail_after(timeout):
            async with self.session.ws_connect(ws_url, max_msg_size=0) as ws:
                await ws.send_bytes(encode(submit, max_bytes=len(data) + (1 << 20)))
                job = ""
                async for frame in ws:
                    if frame.type != aiohttp.WSMsgType.BINARY:
                        continue
                    msg = decode(frame.data, max_bytes=1 << 30).message
                    match msg:
                        case WsAck(job=accepted):
                            job = accepted
                        case JobProgress() if on_progress is not None:
                            on_progress(msg)
                        case WsResult(state="done"):
                            return msg.png, dict(msg.trace)
                        case WsResult():
                            raise JobFailedError(msg.job, msg.state, msg.error)
                        case WsError(status=status, error=error, retry_after=retry) if status in (429, 503):
                            raise DaemonBusy(status, error, retry)
                        case WsError(status=status, error=error):
                            raise DaemonError(status, error)
                raise DaemonError(0, f"the daemon closed the WebSocket before job {job or '(unsubmitted)'} ended; retry")
