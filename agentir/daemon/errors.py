"""The daemon's error answer, shared by the HTTP routes and the WebSocket handler."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """An answer other than success: ``status``, a one-line ``message``, optional ``retry_after``."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        self.status = status
        self.message = " ".join(message.split())
        self.retry_after = retry_after
        super().__init__(self.message)
