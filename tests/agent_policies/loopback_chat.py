"""A real OpenAI-compatible chat-completions endpoint on an ephemeral loopback port (vlm and llm tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


@asynccontextmanager
async def chat_endpoint(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """Serve ``POST /v1/chat/completions`` with ``handle``; yields the base URL (``http://127.0.0.1:PORT/v1``)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]  # the one site's (host, port)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving(srv: Any) -> AsyncIterator[Any]:
    """Serve a test server's ``handle`` on loopback and set its ``url``; on exit set its
    ``release`` event so that no call it holds outlives the test."""
    async with chat_endpoint(srv.handle) as url:
        srv.url = url
        try:
            yield srv
        finally:
            srv.release.set()
