"""Content-addressed blob store: images travel on the bus as :class:`BlobRef`, never inline.

A blob is an array's raw bytes; its address is the SHA-256 of its dtype, shape and bytes, so the
same pixels stored twice cost once and a reference can be checked against the bytes it names.
Stores are thread-safe (tools run in worker threads). Imports no torch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from agentir.bus.errors import BlobNotFound, BusError

_DTYPES = frozenset({"uint8", "uint16", "float16", "float32", "float64", "int32", "int64"})


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRef:
    """Address of an array in a blob store: content hash, shape and dtype."""

    sha256: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _digest(array: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}|{'x'.join(map(str, array.shape))}|".encode())
    h.update(np.ascontiguousarray(array).data.cast("B"))
    return h.hexdigest()


def _check_array(array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"blob stores hold numpy arrays, not {type(array).__name__}")
    if array.dtype.name not in _DTYPES:
        raise TypeError(f"unsupported blob dtype {array.dtype}; use one of {', '.join(sorted(_DTYPES))}")
    return np.ascontiguousarray(array)


class BlobStore(Protocol):
    """Where image bytes live. ``put`` is idempotent; ``get`` raises :class:`BlobNotFound`."""

    def put(self, array: np.ndarray) -> BlobRef: ...

    def get(self, ref: BlobRef) -> np.ndarray: ...

    def contains(self, ref: BlobRef) -> bool: ...

    def discard(self, ref: BlobRef) -> None: ...


class MemoryBlobStore:
    """In-process store bounded by ``max_bytes``: least recently used blobs are evicted first.

    Arrays handed out are read-only views; callers copy before modifying.
    """

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, array: np.ndarray) -> BlobRef:
        array = _check_array(array)
        ref = BlobRef(sha256=_digest(array), shape=tuple(int(s) for s in array.shape), dtype=array.dtype.name)
        if ref.nbytes > self.max_bytes:
            raise BusError(f"blob of {ref.nbytes} bytes exceeds the store's capacity of {self.max_bytes} bytes")
        with self._lock:
            if ref.sha256 in self._blobs:
                self._blobs.move_to_end(ref.sha256)
                return ref
            stored = array.copy()
            stored.setflags(write=False)
            self._blobs[ref.sha256] = stored
            self._bytes += stored.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._blobs.popitem(last=False)
                self._bytes -= old.nbytes
        return ref

    def get(self, ref: BlobRef) -> np.ndarray:
        with self._lock:
            try:
                array = self._blobs[ref.sha256]
            except KeyError:
                raise BlobNotFound(ref.sha256) from None
            self._blobs.move_to_end(ref.sha256)
            return array

    def contains(self, ref: BlobRef) -> bool:
        with self._lock:
            return ref.sha256 in self._blobs

    def discard(self, ref: BlobRef) -> None:
        with self._lock:
            array = self._blobs.pop(ref.sha256, None)
            if array is not None:
                self._bytes -= array.nbytes

    def __len__(self) -> int:
        return len(self._blobs)

    @property
    def nbytes(self) -> int:
        return self._bytes


class DirectoryBlobStore:
    """Blobs as ``.npy`` files under ``root/<first two hex>/<sha256>.npy``, written atomically.

    Survives restarts and can be shared by processes on one machine. ``get`` verifies shape and
    dtype against the reference.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BlobNotFound(sha256)  # never build a path from an unchecked string
        return self.root / sha256[:2] / f"{sha256}.npy"

    def put(self, array: np.ndarray) -> BlobRef:
        array = _check_array(array)
        ref = BlobRef(sha256=_digest(array), shape=tuple(int(s) for s in array.shape), dtype=array.dtype.name)
        path = self._path(ref.sha256)
        if path.exists():
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: BlobRef) -> np.ndarray:
        path = self._path(ref.sha256)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise BlobNotFound(ref.sha256) from None
        if tuple(array.shape) != tuple(ref.shape) or array.dtype.name != ref.dtype:
            raise BusError(f"blob {ref.sha256[:12]}... holds {array.dtype}{array.shape}, the reference says {ref.dtype}{ref.shape}")
        array.setflags(write=False)
        return array

    def contains(self, ref: BlobRef) -> bool:
        return self._path(ref.sha256).exists()

    def discard(self, ref: BlobRef) -> None:
        self._path(ref.sha256).unlink(missing_ok=True)
