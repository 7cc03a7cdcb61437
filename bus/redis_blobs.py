"""Content-addressed blob store in Redis: the image a front end received, readable by every worker.

A blob is one Redis string ``{prefix}:blob:{sha256}`` holding the array's raw bytes (shape and
dtype travel in the :class:`~agentir.bus.blobs.BlobRef`). Lifetime: every ``put`` and ``get`` sets the
key to expire ``ttl`` seconds later, so a blob lives as long as some job keeps using it, plus
``ttl`` (choose it above the job timeout); Redis' own ``maxmemory`` policy bounds the total. A
single blob over ``max_blob_bytes`` is refused. ``get`` checks the bytes against the reference's
hash, so a corrupted or mismatched blob is an error, never a wrong image.

Thread-safe (tools run in worker threads): the client keeps a connection pool. Broker outages are
retried for ``reconnect_timeout`` seconds, then :class:`~agentir.bus.errors.BrokerUnavailable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import redis
import redis.exceptions
import structlog

from agentir.bus.blobs import BlobRef, _check_array, _digest
from agentir.bus.errors import BlobNotFound, BrokerUnavailable, BusError
from agentir.bus.redis import check_url, redact

log = structlog.get_logger(__name__)
T = TypeVar("T")

_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, OSError)


class RedisBlobStore:
    """Blobs in Redis (see the module docstring).

    Args:
        url: the broker, ``redis://HOST[:PORT][/DB]``.
        prefix: key namespace (the bus's).
        ttl: seconds a blob lives after its last ``put`` or ``get``.
        max_blob_bytes: the largest blob accepted (Redis strings stop at 512 MiB).
        verify: check the hash of every blob read.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "agentir",
        ttl: float = 3600.0,
        max_blob_bytes: int = 256 << 20,
        reconnect_timeout: float = 30.0,
        verify: bool = True,
    ) -> None:
        self.url = check_url(url)
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        if not 0 < max_blob_bytes <= 512 << 20:
            raise ValueError(f"max_blob_bytes must be in 1..{512 << 20} (a Redis string's limit), got {max_blob_bytes!r}")
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)
        self.max_blob_bytes = max_blob_bytes
        self.reconnect_timeout = reconnect_timeout
        self.verify = verify
        self._redis = redis.Redis.from_url(url, decode_responses=False, socket_connect_timeout=5.0, health_check_interval=15)

    def _key(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BlobNotFound(sha256)  # never build a key from an unchecked string
        return f"{self.prefix}:blob:{sha256}"

    def _call(self, fn: Callable[[], T]) -> T:
        deadline: float | None = None
        delay = 0.05
        while True:
            try:
                return fn()
            except redis.exceptions.AuthenticationError as exc:
                raise BrokerUnavailable(redact(self.url), f"authentication failed: {exc}") from None
            except redis.exceptions.ResponseError as exc:
                raise BrokerUnavailable(redact(self.url), f"the broker refused a command: {exc}") from None
            except _TRANSIENT as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.reconnect_timeout
                    log.warning("blobs.broker_unreachable", url=redact(self.url), error=f"{type(exc).__name__}: {exc}")
                if now >= deadline:
                    raise BrokerUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def ping(self) -> None:
        """Check the broker answers (raises :class:`~agentir.bus.errors.BrokerUnavailable`)."""
        try:
            self._redis.ping()
        except (*_TRANSIENT, redis.exceptions.RedisError) as exc:
            raise BrokerUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}") from None

    def put(self, array: np.ndarray) -> BlobRef:
        array = _check_array(array)
        ref = BlobRef(sha256=_digest(array), shape=tuple(int(s) for s in array.shape), dtype=array.dtype.name)
        if ref.nbytes > self.max_blob_bytes:
            raise BusError(f"blob of {ref.nbytes} bytes exceeds the broker blob store's limit of {self.max_blob_bytes} bytes; send a smaller image")
        key = self._key(ref.sha256)
        # Content-addressed: an existing key holds these very bytes, only its expiry is renewed.
        if not self._call(lambda: self._redis.pexpire(key, self.ttl_ms)):
            data = array.data.cast("B")
            self._call(lambda: self._redis.set(key, data, px=self.ttl_ms))
        return ref

    def get(self, ref: BlobRef) -> np.ndarray:
        key = self._key(ref.sha256)
        data: Any = self._call(lambda: self._redis.getex(key, px=self.ttl_ms))
        if data is None:
            raise BlobNotFound(ref.sha256)
        if len(data) != ref.nbytes:
            raise BusError(f"blob {ref.sha256[:12]}... holds {len(data)} bytes, the reference says {ref.dtype}{ref.shape} ({ref.nbytes} bytes)")
        array = np.frombuffer(data, dtype=np.dtype(ref.dtype)).reshape(ref.shape)
        if self.verify and _digest(array) != ref.sha256:
            raise BusError(f"blob {ref.sha256[:12]}... does not match its hash (corrupted in the broker?); resubmit the job")
        return array  # read-only: frombuffer over immutable bytes

    def contains(self, ref: BlobRef) -> bool:
        return bool(self._call(lambda: self._redis.exists(self._key(ref.sha256))))

    def discard(self, ref: BlobRef) -> None:
        self._call(lambda: self._redis.delete(self._key(ref.sha256)))

    def close(self) -> None:
        self._redis.close()


__all__ = ["RedisBlobStore"]
