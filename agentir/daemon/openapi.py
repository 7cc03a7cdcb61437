"""The daemon's OpenAPI 3.1 document and its HTML rendering (``GET /openapi.json``, ``GET /docs``).

:data:`OPERATIONS` is the table of every route :func:`agentir.daemon.app.build_app` registers
(method, path, summary, parameters, request body, responses); ``tests/agentir/test_daemon_api.py``
fails when the two diverge. :func:`document` builds the OpenAPI document from it and
:func:`render_html` a self-contained page (no scripts, no styles, no external resources) that a
``Content-Security-Policy: default-src 'self'`` (:data:`DOCS_CSP`) does not block.
"""

from __future__ import annotations

import functools
import html
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from agentir import __version__
from agentir.daemon.errors import PROBLEM_CONTENT_TYPE
from agentir.daemon.store import STATES

__all__ = ["DOCS_CSP", "OPERATIONS", "Operation", "document", "render_html"]

#: The Content-Security-Policy header sent with ``GET /docs``.
DOCS_CSP = "default-src 'self'"

_PROBLEM = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


@dataclass(frozen=True)
class Operation:
    """One route of the HTTP API: ``responses`` maps a status code to its description (error codes
    get the problem-details body) or to ``(description, content)`` for success bodies."""

    method: str
    path: str
    operation_id: str
    summary: str
    responses: dict[int, str | tuple[str, dict[str, Any]]]
    description: str = ""
    parameters: tuple[dict[str, Any], ...] = ()
    request_body: dict[str, Any] | None = None
    public: bool = False  #: never needs the bearer token (see agentir.daemon.app.PUBLIC_PATHS)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)  #: status -> {header: description}


_JOB_ID = {"name": "id", "in": "path", "required": True, "description": "the job id (32 hex digits)", "schema": {"type": "string"}}
_RETRY = {"Retry-After": "seconds to wait before retrying"}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/jobs",
        "submitJob",
        "Submit an image for restoration",
        description="The body is the image (Content-Type image/* or application/octet-stream; policy and options as query "
        "parameters) or multipart/form-data with fields image, policy and options. The job is on disk before the 202.",
        parameters=(
            {"name": "policy", "in": "query", "required": False, "description": "planning policy (default: the daemon's)", "schema": {"type": "string"}},
            {
                "name": "options",
                "in": "query",
                "required": False,
                "description": 'job options as a JSON object, e.g. {"max_tool_calls": 16}',
                "schema": {"type": "string"},
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "at most 128 printable characters; a retry returns the same job",
                "schema": {"type": "string", "maxLength": 128},
            },
        ),
        request_body={
            "required": True,
            "content": {
                "image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}},
                "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "string", "contentMediaType": "application/octet-stream"},
                            "policy": {"type": "string"},
                            "options": {"type": "string", "contentMediaType": "application/json"},
                        },
                    }
                },
            },
        },
        responses={
            202: ("accepted and queued (Location: /v1/jobs/{id}; Idempotent-Replayed: true on a replay)", _json("Accepted")),
            400: "malformed request (multipart fields, Idempotency-Key)",
            408: "the body did not arrive within body_timeout",
            413: "body over max_body_bytes or image over max_pixels",
            415: "not an image type nor multipart, or bytes that are not a supported image",
            422: "corrupt image, unknown policy, bad or unknown option, Idempotency-Key reused for another request",
            429: "this client has max_per_client jobs queued or running",
            503: "max_queue jobs queued or running, or the daemon is shutting down",
            507: "the data disk is (nearly) full",
        },
        headers={202: {"Location": "the job's URL"}, 429: _RETRY, 503: _RETRY},
    ),
    Operation(
        "GET",
        "/v1/jobs",
        "listJobs",
        "List jobs, newest first",
        parameters=(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "page size",
                "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            },
            {"name": "before", "in": "query", "required": False, "description": "the 'next' value of the previous page", "schema": {"type": "string"}},
            {"name": "state", "in": "query", "required": False, "description": "only jobs in this state", "schema": {"type": "string", "enum": list(STATES)}},
        ),
        responses={200: ("a page of jobs (without traces)", _json("JobList")), 400: "bad limit, before or state"},
    ),
    Operation(
        "GET",
        "/v1/jobs/{id}",
        "getJob",
        "A job's state, progress and trace",
        parameters=(_JOB_ID,),
        responses={200: ("the job", _json("Job")), 404: "no such job (or deleted by retention)"},
    ),
    Operation(
        "GET",
        "/v1/jobs/{id}/result",
        "getJobResult",
        "The restored image",
        parameters=(_JOB_ID,),
        responses={
            200: ("the result PNG", {"image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}}),
            404: "no such job, or its result was deleted by retention",
            409: "the job is not done",
        },
    ),
    Operation(
        "DELETE",
        "/v1/jobs/{id}",
        "cancelJob",
        "Cancel a queued or running job",
        parameters=(_JOB_ID,),
        responses={200: ("cancelled", _json("Cancelled")), 404: "no such job", 409: "the job already ended"},
    ),
    Operation(
        "GET",
        "/v1/ws",
        "websocket",
        "WebSocket: msgpack envelopes (ws.submit, ws.watch, ws.cancel; see docs/PROTOCOL.md section 3)",
        responses={101: ("switching protocols", {}), 400: "not a WebSocket upgrade request"},
    ),
    Operation(
        "GET",
        "/v1/stream",
        "stream",
        "WebSocket: one video stream, msgpack envelopes (stream.start, stream.frame, stream.end; see docs/PROTOCOL.md, Streams)",
        responses={101: ("switching protocols", {}), 400: "not a WebSocket upgrade request", 503: "too many open streams, or shutting down"},
        headers={503: _RETRY},
    ),
    Operation("GET", "/healthz", "healthz", "Liveness", public=True, responses={200: ("alive", _json("Health"))}),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: 503 while POST /v1/jobs would be refused for a daemon-wide cause",
        public=True,
        responses={200: ("ready", _json("Ready")), 503: "starting, shutting down, or the data disk is below min_free_bytes"},
        headers={503: _RETRY},
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics (text format 0.0.4; OpenMetrics 1.0 when the Accept header asks for it)",
        responses={
            200: (
                "the metrics",
                {"text/plain; version=0.0.4": {"schema": {"type": "string"}}, "application/openmetrics-text; version=1.0.0": {"schema": {"type": "string"}}},
            )
        },
    ),
    Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "This OpenAPI 3.1 document",
        public=True,
        responses={200: ("the document", {"application/json": {"schema": {"type": "object"}}})},
    ),
    Operation(
        "GET",
        "/docs",
        "docs",
        "This API reference as a self-contained HTML page",
        public=True,
        responses={200: ("the page", {"text/html": {"schema": {"type": "string"}}})},
    ),
    Operation(
        "GET",
        "/",
        "console",
        "The web console (agentir.daemon.web; a strict Content-Security-Policy, asks for the token itself)",
        public=True,
        responses={200: ("the console page", {"text/html": {"schema": {"type": "string"}}}), 304: ("not modified (ETag)", {})},
    ),
    Operation(
        "GET",
        "/console/{name}",
        "consoleAsset",
        "One of the console's static files (JavaScript modules, CSS, icon)",
        public=True,
        parameters=({"name": "name", "in": "path", "required": True, "description": "a file name such as app.js", "schema": {"type": "string"}},),
        responses={
            200: ("the file", {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}),
            304: ("not modified (ETag)", {}),
            404: "not a console file",
        },
    ),
    Operation(
        "GET",
        "/v1/info",
        "getInfo",
        "What a job may choose on this daemon: planning policies, options (types, defaults, bounds), upload limits",
        responses={200: ("the choices and limits", _json("Info"))},
    ),
    Operation(
        "GET",
        "/v1/jobs/{id}/previews",
        "listJobPreviews",
        "The job's console previews: a JPEG copy of the input and a thumbnail per judged tool candidate",
        description="Written while the job runs (at most 64 thumbnails of 192 px and an input copy of 1280 px per job) "
        "and deleted with the job. Each candidate names its search node, subtask, tool and index within the node's subtask, "
        "matching the trace's steps in order.",
        parameters=(_JOB_ID,),
        responses={200: ("the preview index", _json("Previews")), 404: "no such job"},
    ),
    Operation(
        "GET",
        "/v1/jobs/{id}/previews/{name}",
        "getJobPreview",
        "One preview JPEG (input.jpg or c<k>.jpg)",
        parameters=(
            _JOB_ID,
            {"name": "name", "in": "path", "required": True, "description": "input.jpg or c<k>.jpg, from the index", "schema": {"type": "string"}},
        ),
        responses={200: ("the JPEG", {"image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}}), 404: "no such job or preview"},
    ),
    Operation(
        "GET",
        "/v1/streams",
        "listStreams",
        "The video streams open on /v1/stream now: counters, live fps, drops, latency, the tool chain",
        responses={200: ("the open streams, oldest first", _json("Streams"))},
    ),
    Operation(
        "GET",
        "/v1/streams/{id}/preview.jpg",
        "getStreamPreview",
        "The stream's latest restored frame as a small JPEG (at most 320 px on its longest side, refreshed up to 4 times a second)",
        parameters=({"name": "id", "in": "path", "required": True, "description": "the stream id (from GET /v1/streams)", "schema": {"type": "string"}},),
        responses={
            200: ("the JPEG", {"image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}}),
            404: "no such open stream, or no frame restored yet",
        },
    ),
)

_NULLABLE_TIME = {"type": ["number", "null"], "description": "unix seconds, null when unset"}
_NULLABLE_STAMP = {"type": ["string", "null"], "format": "date-time", "description": "RFC 3339 UTC, null when unset"}

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; 'error' repeats 'detail' for older clients",
        "required": ["type", "title", "status", "detail", "error"],
        "properties": {
            "type": {"type": "string", "format": "uri-reference", "const": "about:blank"},
            "title": {"type": "string", "description": "the HTTP reason phrase"},
            "status": {"type": "integer"},
            "detail": {"type": "string", "description": "one line saying what to do"},
            "instance": {"type": "string", "format": "uri-reference", "description": "the request path"},
            "error": {"type": "string", "description": "the same line as detail"},
            "ready": {"type": "boolean", "description": "GET /readyz only"},
            "reason": {"type": "string", "description": "GET /readyz only"},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["id", "state"],
        "properties": {"id": {"type": "string"}, "state": {"type": "string", "enum": list(STATES)}},
    },
    "Streams": {
        "type": "object",
        "required": ["streams"],
        "properties": {
            "streams": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "client", "mode", "opened", "opened_at", "frames_in", "frames_out", "dropped", "errors", "fps", "chain", "preview"],
                    "properties": {
                        "id": {"type": "string"},
                        "client": {"type": "string"},
                        "mode": {"type": "string", "enum": ["realtime", "every-frame"]},
                        "opened": {"type": "number", "description": "unix seconds"},
                        "opened_at": {"type": "string", "format": "date-time", "description": "RFC 3339 UTC"},
                        "frames_in": {"type": "integer"},
                        "frames_out": {"type": "integer"},
                        "dropped": {"type": "integer", "description": "frames dropped (realtime: newest wins; results a slow client did not read)"},
                        "errors": {"type": "integer", "description": "frames that could not be decoded or restored"},
                        "fps": {"type": "number", "description": "results per second over the last 2 s"},
                        "latency_ms_p50": {"type": ["number", "null"], "description": "median latency of the last 32 frames"},
                        "chain": {"type": "array", "items": {"type": "string"}, "description": "the tools run on the last frame"},
                        "width": {"type": ["integer", "null"]},
                        "height": {"type": ["integer", "null"]},
                        "preview": {"type": ["string", "null"], "description": "URL of the latest frame's preview JPEG; null before the first"},
                        "preview_seq": {"type": "integer", "description": "changes when the preview does"},
                    },
                },
            }
        },
    },
    "Cancelled": {
        "type": "object",
        "required": ["id", "state"],
        "properties": {"id": {"type": "string"}, "state": {"type": "string", "const": "cancelled"}},
    },
    "Job": {
        "type": "object",
        "required": ["id", "state", "policy", "options", "width", "height", "created", "created_at", "attempts", "progress"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES)},
            "policy": {"type": "string"},
            "options": {"type": "object"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "created": {"type": "number", "description": "unix seconds"},
            "started": _NULLABLE_TIME,
            "finished": _NULLABLE_TIME,
            "created_at": {"type": "string", "format": "date-time", "description": "RFC 3339 UTC"},
            "started_at": _NULLABLE_STAMP,
            "finished_at": _NULLABLE_STAMP,
            "attempts": {"type": "integer"},
            "progress": {
                "type": "object",
                "properties": {"stage": {"type": "string"}, "detail": {"type": "string"}, "tool_calls": {"type": "integer"}},
            },
            "trace": {"type": ["object", "null"], "description": "once finished; absent in lists"},
            "error": {"type": "string"},
            "result": {"type": "string", "description": "the result URL, once done"},
            "recorded": {"type": "boolean"},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next"],
        "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}, "next": {"type": ["string", "null"]}},
    },
    "Health": {"type": "object", "properties": {"status": {"type": "string", "const": "ok"}}},
    "Info": {
        "type": "object",
        "required": ["version", "policies", "default_policy", "options", "limits", "auth"],
        "properties": {
            "version": {"type": "string"},
            "policies": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "usable": {"type": "boolean"}, "note": {"type": "string"}, "default": {"type": "boolean"}},
                },
            },
            "default_policy": {"type": "string"},
            "options": {"type": "array", "items": {"type": "object", "description": "name, type (JSON Schema), default, bounds, enum, help"}},
            "limits": {
                "type": "object",
                "properties": {
                    "max_body_bytes": {"type": "integer"},
                    "max_pixels": {"type": "integer"},
                    "formats": {"type": "array", "items": {"type": "string"}},
                },
            },
            "auth": {"type": "boolean", "description": "whether the daemon requires the bearer token"},
        },
    },
    "Previews": {
        "type": "object",
        "required": ["id", "state", "input", "candidates"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES)},
            "input": {"type": ["object", "null"], "description": "file, url, width, height of the input copy"},
            "candidates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "node": {"type": "integer"},
                        "subtask": {"type": "string"},
                        "index": {"type": "integer", "description": "position among the node's candidates for this subtask"},
                        "tool": {"type": "string"},
                        "url": {"type": ["string", "null"], "description": "null when the tool failed or the preview was dropped"},
                        "width": {"type": "integer"},
                        "height": {"type": "integer"},
                    },
                },
            },
        },
    },
    "Ready": {
        "type": "object",
        "properties": {"status": {"type": "string", "const": "ready"}, "ready": {"type": "boolean"}, "running": {"type": "integer"}},
    },
}


def _response(op: Operation, code: int, spec: str | tuple[str, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(spec, tuple):
        out: dict[str, Any] = {"description": spec[0]}
        if spec[1]:
            out["content"] = spec[1]
    else:
        out = {"description": spec, "content": _PROBLEM}
    extra = op.headers.get(code, {})
    if extra:
        out["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in extra.items()}
    return out


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {str(code): _response(op, code, spec) for code, spec in sorted(op.responses.items())}
    if not op.public:
        responses.setdefault("401", _response(op, 401, "a token is configured and the bearer token is missing or wrong"))
    responses["405"] = {
        "description": "method not allowed on this path",
        "headers": {"Allow": {"description": "the allowed methods", "schema": {"type": "string"}}},
        "content": _PROBLEM,
    }
    responses["default"] = {"description": "any other error (500: a bug, logged by the daemon)", "content": _PROBLEM}
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = [dict(p) for p in op.parameters]
    if op.request_body is not None:
        out["requestBody"] = op.request_body
    if op.public:
        out["security"] = []
    out["responses"] = responses
    return out


@functools.cache
def _document_text() -> str:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "agentir daemon",
            "version": __version__,
            "description": "Image restoration jobs over HTTP (docs/PROTOCOL.md is the full reference). "
            "Errors are RFC 9457 problem details (application/problem+json).",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "only when the daemon has a token configured"}},
        },
        "security": [{"bearer": []}],
    }
    return json.dumps(doc, sort_keys=False)


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy; built once from :data:`OPERATIONS`)."""
    value: dict[str, Any] = json.loads(_document_text())
    return value


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = schema.get("type", "")
    text = " | ".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in schema:
        text += " (" + ", ".join(map(str, schema["enum"])) + ")"
    return text


@functools.cache
def render_html() -> str:
    """The API reference page: every path, its parameters and responses, and the schemas."""
    doc = document()
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(doc['info']['title'])} {e(doc['info']['version'])} API</title></head><body>",
        f"<h1>{e(doc['info']['title'])} API {e(doc['info']['version'])}</h1>",
        f'<p>{e(doc["info"]["description"])} Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI {e(doc["openapi"])}).</p>',
        "<h2>Routes</h2>",
        '<table border="1" cellpadding="4"><thead><tr><th>method</th><th>path</th><th>summary</th><th>auth</th></tr></thead><tbody>',
    ]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            anchor = e(op["operationId"])
            auth = "public" if op.get("security") == [] else "bearer token (when configured)"
            out.append(
                f'<tr><td>{e(method.upper())}</td><td><a href="#{anchor}"><code>{e(path)}</code></a></td><td>{e(op["summary"])}</td><td>{auth}</td></tr>'
            )
    out.append("</tbody></table>")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            out.append(f'<h2 id="{e(op["operationId"])}">{e(method.upper())} <code>{e(path)}</code></h2>')
            out.append(f"<p>{e(op['summary'])}</p>")
            if op.get("description"):
                out.append(f"<p>{e(op['description'])}</p>")
            if op.get("parameters"):
                out.append(
                    '<table border="1" cellpadding="4"><caption>Parameters</caption><thead><tr><th>name</th><th>in</th><th>required</th><th>type</th><th>description</th></tr></thead><tbody>'
                )
                for p in op["parameters"]:
                    out.append(
                        f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td><td>{'yes' if p.get('required') else 'no'}</td>"
                        f"<td>{e(_schema_text(p.get('schema', {})))}</td><td>{e(p.get('description', ''))}</td></tr>"
                    )
                out.append("</tbody></table>")
            if op.get("requestBody"):
                types = ", ".join(op["requestBody"]["content"])
                out.append(f"<p>Request body: <code>{e(types)}</code></p>")
            out.append(
                '<table border="1" cellpadding="4"><caption>Responses</caption><thead><tr><th>status</th><th>media type</th><th>description</th></tr></thead><tbody>'
            )
            for code, resp in op["responses"].items():
                phrase = ""
                if code.isdigit():
                    try:
                        phrase = " " + HTTPStatus(int(code)).phrase
                    except ValueError:
                        phrase = ""
                content = resp.get("content", {})
                media = ", ".join(f"{mt} ({_schema_text(c.get('schema', {}))})" if c.get("schema") else mt for mt, c in content.items())
                hdrs = resp.get("headers", {})
                desc = resp["description"] + ("; headers: " + ", ".join(hdrs) if hdrs else "")
                out.append(f"<tr><td>{e(code + phrase)}</td><td>{e(media)}</td><td>{e(desc)}</td></tr>")
            out.append("</tbody></table>")
    out.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        out.append(f'<h3 id="schema-{e(name)}">{e(name)}</h3>')
        if schema.get("description"):
            out.append(f"<p>{e(schema['description'])}</p>")
        required = set(schema.get("required", []))
        out.append('<table border="1" cellpadding="4"><thead><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr></thead><tbody>')
        for prop, sub in schema.get("properties", {}).items():
            out.append(
                f"<tr><td><code>{e(prop)}</code></td><td>{e(_schema_text(sub))}</td><td>{'yes' if prop in required else 'no'}</td>"
                f"<td>{e(sub.get('description', ''))}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
