"""The msgpack codec: one envelope around every message, strict on the way in.

Wire format (a msgpack map)::

    {"k": kind, "v": version, "id": str, "cid": correlation id | nil, "cause": str | nil,
     "src": source, "ts": unix seconds, "rt": reply subject | nil, "b": body map}

``decode`` rejects, with a :class:`~agentir.bus.errors.CodecError` subclass and never another exception:
oversized input, bytes that are not msgpack, a map missing envelope fields, an unknown kind, a
version newer than this process reads (older ones are upgraded), and a body that does not fit the
schema.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack

from agentir.bus import messages as _messages  # noqa: F401 - registers the message kinds
from agentir.bus.errors import MalformedMessage, MessageTooLarge, UnknownMessageKind, UnsupportedVersion
from agentir.bus.schema import REGISTRY, UPGRADES, Message, from_wire, to_wire

#: Default limit on one encoded message. Images are blobs, so control messages stay small.
MAX_MESSAGE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A decoded message with its routing metadata."""

    message: Message
    id: str
    correlation_id: str | None = None
    cause: str | None = None
    source: str = ""
    timestamp: float = 0.0
    reply_to: str | None = None

    @property
    def kind(self) -> str:
        return self.message.KIND


def new_id() -> str:
    return uuid.uuid4().hex


def encode(
    message: Message,
    *,
    id: str | None = None,
    correlation_id: str | None = None,
    cause: str | None = None,
    source: str = "",
    reply_to: str | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> bytes:
    """Encode ``message`` in an envelope.

    Raises:
        TypeError: ``message`` is not a registered message kind.
        MessageTooLarge: the encoded size exceeds ``max_bytes``.
    """
    kind = getattr(message, "KIND", None)
    if kind is None or REGISTRY.get(kind) is not type(message):
        raise TypeError(f"{type(message).__name__} is not a registered message kind")
    envelope = {
        "k": kind,
        "v": message.VERSION,
        "id": id or new_id(),
        "cid": correlation_id,
        "cause": cause,
        "src": source,
        "ts": time.time(),
        "rt": reply_to,
        "b": to_wire(message),
    }
    data = msgpack.packb(envelope, use_bin_type=True)
    if len(data) > max_bytes:
        raise MessageTooLarge(len(data), max_bytes)
    return data


def _field(env: dict[str, Any], key: str, types: tuple[type, ...], optional: bool = False) -> Any:
    if key not in env:
        if optional:
            return None
        raise MalformedMessage(f"envelope field {key!r} is missing")
    value = env[key]
    if value is None and optional:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise MalformedMessage(f"envelope field {key!r} has type {type(value).__name__}")
    return value


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope:
    """Decode bytes produced by :func:`encode` (see the module docstring for what is rejected)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise MessageTooLarge(len(data), max_bytes)
    try:
        env = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise MalformedMessage(f"not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(env, dict):
        raise MalformedMessage(f"envelope must be a map, got {type(env).__name__}")
    kind = _field(env, "k", (str,))
    version = _field(env, "v", (int,))
    body = _field(env, "b", (dict,))
    cls = REGISTRY.get(kind)
    if cls is None:
        raise UnknownMessageKind(kind)
    if version > cls.VERSION or version < 1:
        raise UnsupportedVersion(kind, version, cls.VERSION)
    while version < cls.VERSION:
        step = UPGRADES.get((kind, version))
        if step is None:
            raise UnsupportedVersion(kind, version, cls.VERSION)
        body = step(dict(body))
        version += 1
    message = from_wire(cls, body)
    return Envelope(
        message=message,
        id=_field(env, "id", (str,)),
        correlation_id=_field(env, "cid", (str,), optional=True),
        cause=_field(env, "cause", (str,), optional=True),
        source=_field(env, "src", (str,), optional=True) or "",
        timestamp=float(_field(env, "ts", (int, float), optional=True) or 0.0),
        reply_to=_field(env, "rt", (str,), optional=True),
    )
