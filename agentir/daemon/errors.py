"""The daemon's error answer, shared by the HTTP routes and the WebSocket handler.

Over HTTP every error is an RFC 9457 problem-details object (:func:`problem`), served as
``application/problem+json``; it keeps the older ``"error"`` member as an extension member so
clients that read only ``error`` keep working.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

__all__ = ["PROBLEM_CONTENT_TYPE", "ApiError", "problem"]

#: The media type of an RFC 9457 problem-details body.
PROBLEM_CONTENT_TYPE = "application/problem+json"


class ApiError(Exception):
    """An answer other than success: ``status``, a one-line ``message``, optional ``retry_after``."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        self.status = status
        self.message = " ".join(message.split())
        self.retry_after = retry_after
        super().__init__(self.message)


def problem(status: int, detail: str, *, instance: str | None = None, **extensions: Any) -> dict[str, Any]:
    """An RFC 9457 problem-details body: ``type`` (``about:blank``), ``title`` (the status's reason
    phrase), ``status``, ``detail`` (one line), ``instance`` (the request path, when known), the
    ``error`` extension member (the same line as ``detail``) and any further ``extensions``."""
    detail = " ".join(detail.split())
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body["error"] = detail
    body.update(extensions)
    return body
