"""The web console's routes: its static files, what it may choose, and the job previews.

* ``GET /`` and ``GET /console/{name}``: the console (``agentir/daemon/console/``: HTML, JavaScript
  modules, CSS; no build step) with a strict :data:`CONSOLE_CSP` (no inline scripts or styles,
  nothing from other origins). Public like ``/docs``: the files hold no jobs; the page asks for
  the token before it reads any.
* ``GET /v1/info``: the planning policies this daemon can run, the job options with their types,
  defaults and bounds, the reflection policies, and the upload limits (what the console's form
  offers; the API checks every value again).
* ``GET /v1/jobs/{id}/previews`` and ``GET /v1/jobs/{id}/previews/{name}``: the JPEG previews of
  :mod:`agentir.daemon.previews` (input copy, candidate thumbnails) and their index.
* ``GET /v1/streams`` and ``GET /v1/streams/{id}/preview.jpg``: the open ``/v1/stream`` video
  streams (fps, drops, latency, chain) and each one's latest restored frame, for the console's
  live view.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web

from agentir.daemon.errors import ApiError
from agentir.daemon.previews import preview_file, read_index

if TYPE_CHECKING:
    from agentir.daemon.app import Daemon

__all__ = ["CONSOLE_CSP", "CONSOLE_FILES", "ConsoleRoutes"]

#: The Content-Security-Policy of the console's pages: scripts and styles only from the daemon's
#: own files, images from it and from ``blob:`` URLs (images fetched with the token), fetch and
#: WebSocket only to the daemon itself.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

#: The files the console consists of (anything else under /console/ is a 404).
CONSOLE_FILES = ("index.html", "app.js", "api.js", "dom.js", "live.js", "msgpack.js", "views.js", "job.js", "tree.js", "streams.js", "style.css", "favicon.svg")


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def _asset(name: str) -> _Asset:
    data = resources.files("agentir.daemon").joinpath("console", name).read_bytes()
    suffix = name[name.rfind(".") :]
    return _Asset(data, _TYPES[suffix], '"' + hashlib.sha256(data).hexdigest()[:32] + '"')


def _serve(request: web.Request, name: str) -> web.Response:
    if name not in CONSOLE_FILES:
        raise ApiError(404, f"no console file {name!r}; open the console at /")
    asset = _asset(name)
    headers = {
        "Content-Security-Policy": CONSOLE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",  # revalidate (ETag): a daemon upgrade is seen at once
        "ETag": asset.etag,
    }
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    response = web.Response(body=asset.body, headers=headers)
    response.content_type = asset.content_type
    if asset.content_type.startswith("text/"):
        response.charset = "utf-8"
    return response


# ----------------------------------------------------------------------------- /v1/info
_OPTION_TABLE: tuple[dict[str, Any], ...] = (
    {"name": "max_tool_calls", "type": "integer", "minimum": 0, "maximum": 10_000, "help": "tool outputs the search may ask for in all"},
    {"name": "max_rollbacks", "type": "integer", "minimum": 0, "maximum": 1_000, "help": "rollbacks and re-plans the search may make"},
    {
        "name": "max_seconds",
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 7 * 24 * 3600,
        "help": "seconds before the search falls back to its best result",
    },
    {"name": "wave", "type": "integer", "minimum": 0, "maximum": 64, "help": "tools run per step before the judge looks (0: all at once)"},
    {"name": "rollback", "type": "boolean", "help": "roll back and re-plan a failed step"},
    {"name": "keep_improved", "type": "boolean", "help": "keep a failed step that still lowered its degradation's severity"},
    {"name": "reflection", "type": "string", "help": "the judge of each step's tool outputs"},
    {"name": "max_tool_cost", "type": "number", "minimum": 0, "help": "skip tools measured slower than this many seconds per megapixel (empty: no limit)"},
)


def _options() -> list[dict[str, Any]]:
    from agentir.agent_policies.options import JobOptions
    from agentir.agent_policies.registry import REFLECTION

    defaults = JobOptions()
    out = []
    for row in _OPTION_TABLE:
        item = dict(row)
        item["default"] = getattr(defaults, row["name"])
        if row["name"] == "reflection":
            item["enum"] = REFLECTION.names()
        out.append(item)
    return out


def _policies(daemon: Daemon) -> list[dict[str, Any]]:
    from agentir.agent_policies.registry import PLANNING

    out = []
    for name in PLANNING.names():
        try:
            daemon.restorer.validate(name, {})
            usable, note = True, ""
        except Exception as exc:  # e.g. llm without an endpoint: listed, not offered
            usable, note = False, " ".join(str(exc).split())
        out.append({"name": name, "usable": usable, "note": note, "default": name == daemon.config.policy})
    return out


class ConsoleRoutes:
    """The console's route handlers for one daemon (``build_app`` registers them)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def index(self, request: web.Request) -> web.Response:
        """``GET /``: the console page."""
        return _serve(request, "index.html")

    async def asset(self, request: web.Request) -> web.Response:
        """``GET /console/{name}``: one of the console's files."""
        return _serve(request, request.match_info["name"])

    async def info(self, request: web.Request) -> web.Response:
        """``GET /v1/info``: what a job may choose here, and the upload limits."""
        return await api_info(self.daemon)

    async def previews(self, request: web.Request) -> web.Response:
        """``GET /v1/jobs/{id}/previews``: the job's preview index with a URL per file."""
        return await job_previews(self.daemon, request.match_info["id"])

    async def preview(self, request: web.Request) -> web.Response:
        """``GET /v1/jobs/{id}/previews/{name}``: one preview JPEG."""
        return await job_preview(self.daemon, request.match_info["id"], request.match_info["name"])

    async def streams(self, request: web.Request) -> web.Response:
        """``GET /v1/streams``: the open video streams with live fps, drops and latency."""
        from agentir.daemon.stream_ws import streams_status

        return web.json_response({"streams": streams_status(self.daemon)})

    async def stream_preview(self, request: web.Request) -> web.Response:
        """``GET /v1/streams/{id}/preview.jpg``: the stream's latest restored frame, small."""
        from agentir.daemon.stream_ws import stream_preview

        body = stream_preview(self.daemon, request.match_info["id"])
        return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def api_info(daemon: Daemon) -> web.Response:
    from agentir import __version__

    info = daemon.console_info
    if info is None:
        info = {
            "version": __version__,
            # On the loop, not a thread: the Restorer's Policies cache is not thread-safe; building
            # the few policies not yet built is cheap and happens once.
            "policies": _policies(daemon),
            "default_policy": daemon.config.policy,
            "options": _options(),
            "limits": {
                "max_body_bytes": daemon.config.max_body_bytes,
                "max_pixels": daemon.config.max_pixels,
                "formats": ["PNG", "JPEG", "BMP", "TIFF", "WebP", "PPM/PGM", "GIF"],
            },
        }
        daemon.console_info = info  # the settings do not change while the daemon runs
    return web.json_response({**info, "auth": bool(daemon.config.token)})


# ----------------------------------------------------------------------------- previews
async def job_previews(daemon: Daemon, job: str) -> web.Response:
    record = await daemon.store.get(job)
    folder = daemon.store.previews_path(record.id)
    index = await anyio.to_thread.run_sync(read_index, folder)
    base = f"/v1/jobs/{record.id}/previews/"

    def with_url(entry: Any) -> Any:
        if not isinstance(entry, dict):
            return None
        out = dict(entry)
        out["url"] = base + entry["file"] if entry.get("file") else None
        return out

    candidates = [with_url(c) for c in index.get("candidates") or []]
    return web.json_response({"id": record.id, "state": record.state, "input": with_url(index.get("input")), "candidates": [c for c in candidates if c]})


async def job_preview(daemon: Daemon, job: str, name: str) -> web.Response:
    record = await daemon.store.get(job)
    path = preview_file(daemon.store.previews_path(record.id), name)
    if path is None:
        raise ApiError(404, f"no preview named {name!r}; GET /v1/jobs/{record.id}/previews lists them")
    try:
        body = await anyio.to_thread.run_sync(path.read_bytes)
    except FileNotFoundError:
        raise ApiError(
            404, f"job {record.id} has no preview {name!r} (not written, or deleted with the job); GET /v1/jobs/{record.id}/previews lists them"
        ) from None
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "private, no-cache"})
