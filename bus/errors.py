"""Errors raised by the bus. All derive from :class:`BusError`; each writes its own message."""

from __future__ import annotations


class BusError(Exception):
    """Base class of every error the ``bus`` package raises."""


class CodecError(BusError):
    """A message could not be encoded or decoded."""


class MalformedMessage(CodecError):
    """Bytes that are not a valid envelope. ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"malformed message: {reason}")


class MessageTooLarge(CodecError):
    """An encoded message over the size limit (``size`` and ``limit`` in bytes)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes; put large data (images) in the blob store and send a BlobRef")


class UnknownMessageKind(CodecError):
    """A kind that no schema is registered for."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"unknown message kind {kind!r}; is the sender running a newer agentir?")


class UnsupportedVersion(CodecError):
    """A known kind at a version this process cannot read."""

    def __init__(self, kind: str, version: int, supported: int) -> None:
        self.kind = kind
        self.version = version
        self.supported = supported
        super().__init__(f"message {kind!r} has version {version}, this process reads up to version {supported}; upgrade agentir on this node")


class BusClosed(BusError):
    """The bus (or the subscription) was closed; pending requests fail with this."""

    def __init__(self, what: str = "bus") -> None:
        super().__init__(f"{what} is closed")


class BusFull(BusError):
    """A subscriber's bounded mailbox stayed full for longer than the publish timeout."""

    def __init__(self, subject: str, timeout: float) -> None:
        self.subject = subject
        self.timeout = timeout
        super().__init__(f"mailbox for {subject!r} stayed full for {timeout:g} s; the system is busy, retry later")


class NoResponders(BusError):
    """A request was published to a subject that nobody subscribes to."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no subscriber for {subject!r}; is the actor that serves it running?")


class RequestTimeout(BusError):
    """No reply within the request timeout."""

    def __init__(self, subject: str, timeout: float) -> None:
        self.subject = subject
        self.timeout = timeout
        super().__init__(f"no reply on {subject!r} within {timeout:g} s")


class RemoteError(BusError):
    """The responder answered a request with an error (``error_type`` and ``detail`` from its reply)."""

    def __init__(self, subject: str, error_type: str, detail: str) -> None:
        self.subject = subject
        self.error_type = error_type
        self.detail = detail
        super().__init__(f"{subject}: {error_type}: {detail}")


class BlobNotFound(BusError):
    """A BlobRef whose bytes are not in the store (expired, deleted, or from another store)."""

    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256
        super().__init__(f"blob {sha256[:12]}... is not in the blob store")


class BrokerUnavailable(BusError):
    """The message broker at ``url`` cannot be reached (or answered with an error); ``reason`` says why.

    ``url`` is shown with any password replaced by ``***``.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot use the Redis broker at {url} ({reason}); check the --bus URL and that redis-server is running and reachable")
