"""The HTTP side of OpenAI-compatible chat-completions endpoints, shared by the ``vlm`` perception
and the ``llm`` planner: one POST with timeout, error classification for retries, and reading
the first choice's text out of the reply. Standard library only (:mod:`urllib`), synchronous.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.error
import urllib.request

__all__ = ["AnswerError", "HTTPFailure", "endpoint", "message_content", "post_json"]


class HTTPFailure(Exception):
    """One failed request; ``retry`` says whether trying again can help (timeouts, 429, 5xx)."""

    def __init__(self, reason: str, retry: bool, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after
        super().__init__(reason)


class AnswerError(ValueError):
    """A reply that is not a usable answer. ``answer`` holds (the start of) what came back."""

    what = "answer"

    def __init__(self, reason: str, answer: str = "") -> None:
        self.reason = reason
        self.answer = answer[:200]
        super().__init__(f"invalid {self.what}: {reason}; got {self.answer!r}")


def endpoint(url: str) -> str:
    """A base URL (``http://host:8000/v1``) gets ``/chat/completions`` appended; a full one is kept."""
    u = url.rstrip("/")
    return u if u.endswith("/chat/completions") else u + "/chat/completions"


def post_json(url: str, payload: bytes, *, key: str | None, timeout: float) -> bytes:
    """POST ``payload`` (JSON bytes) and return the body; raises :class:`HTTPFailure`."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        retry_after = None
        ra = exc.headers.get("Retry-After") if exc.headers else None
        if ra is not None:
            with contextlib.suppress(ValueError):
                retry_after = float(ra)
        retry = exc.code == 429 or exc.code >= 500
        raise HTTPFailure(f"HTTP {exc.code} from {url}", retry, retry_after) from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, torn replies
        reason = getattr(exc, "reason", exc)
        raise HTTPFailure(f"cannot reach {url} ({reason!s} [{type(exc).__name__}])", True) from None
    except ValueError as exc:  # a URL urllib cannot use
        raise HTTPFailure(f"unusable endpoint URL {url} ({exc})", False) from None


def message_content(body: bytes, error: type[AnswerError] = AnswerError) -> str:
    """The first choice's message text of a chat-completions response; raises ``error``."""
    try:
        obj = json.loads(body.decode("utf-8"))
        content = obj["choices"][0]["message"]["content"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError):
        raise error("not a chat-completions response", body.decode("utf-8", "replace")) from None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        raise error("empty message content", str(content))
    return content
