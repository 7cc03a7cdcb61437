"""The content-addressed blob stores (memory and directory)."""

from __future__ import annotations

import numpy as np
import pytest

from bus.blobs import DirectoryBlobStore, MemoryBlobStore
from bus.errors import BlobNotFound


@pytest.fixture(params=["memory", "directory"])
def store(request, tmp_path):
    return MemoryBlobStore() if request.param == "memory" else DirectoryBlobStore(tmp_path / "blobs")


def test_put_get_round_trip_and_content_addressing(store):
    """Equal arrays get equal references; the bytes come back unchanged and read-only."""
    a = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    ref = store.put(a)
    assert ref == store.put(a.copy())
    assert ref.shape == (4, 5, 3) and ref.dtype == "uint8" and len(ref.sha256) == 64
    out = store.get(ref)
    np.testing.assert_array_equal(out, a)
    assert not out.flags.writeable


def test_same_bytes_different_shape_get_different_refs(store):
    """Shape and dtype are part of the address."""
    a = np.zeros((2, 6), np.uint8)
    assert store.put(a).sha256 != store.put(a.reshape(3, 4)).sha256


def test_missing_and_discarded_blobs_raise_not_found(store):
    """A discarded blob is gone; asking for it raises BlobNotFound."""
    ref = store.put(np.ones((2, 2, 3), np.float32))
    assert store.contains(ref)
    store.discard(ref)
    assert not store.contains(ref)
    with pytest.raises(BlobNotFound):
        store.get(ref)


def test_memory_store_evicts_least_recently_used():
    """The memory store stays under its byte budget, evicting the oldest unused blob first."""
    store = MemoryBlobStore(max_bytes=250)
    refs = [store.put(np.full(100, i, np.uint8)) for i in range(2)]
    store.get(refs[0])  # refresh the first
    third = store.put(np.full(100, 9, np.uint8))
    assert store.contains(refs[0]) and store.contains(third) and not store.contains(refs[1])
    assert store.nbytes <= 250


def test_directory_store_refuses_path_like_hashes(tmp_path):
    """A reference whose hash is not hex never becomes a file path."""
    from bus.blobs import BlobRef

    store = DirectoryBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        store.get(BlobRef(sha256="../" * 21 + "a", shape=(1,), dtype="uint8"))


def test_directory_store_survives_a_new_instance(tmp_path):
    """Blobs written by one store instance are readable by another on the same folder."""
    ref = DirectoryBlobStore(tmp_path).put(np.eye(3, dtype=np.float64))
    np.testing.assert_array_equal(DirectoryBlobStore(tmp_path).get(ref), np.eye(3))
    assert not list(tmp_path.rglob(".tmp-*"))
