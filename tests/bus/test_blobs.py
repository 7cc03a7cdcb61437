"""The content-addressed blob stores (memory, directory and Redis)."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from agentir.bus.blobs import DirectoryBlobStore, MemoryBlobStore
from agentir.bus.errors import BlobNotFound, BusError


@pytest.fixture(params=["memory", "directory", "redis"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryBlobStore()
    elif request.param == "directory":
        yield DirectoryBlobStore(tmp_path / "blobs")
    else:
        from agentir.bus.redis_blobs import RedisBlobStore

        redis_store = RedisBlobStore(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:10]}")
        yield redis_store
        redis_store.close()


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
    from agentir.bus.blobs import BlobRef

    store = DirectoryBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        store.get(BlobRef(sha256="../" * 21 + "a", shape=(1,), dtype="uint8"))


def test_directory_store_survives_a_new_instance(tmp_path):
    """Blobs written by one store instance are readable by another on the same folder."""
    ref = DirectoryBlobStore(tmp_path).put(np.eye(3, dtype=np.float64))
    np.testing.assert_array_equal(DirectoryBlobStore(tmp_path).get(ref), np.eye(3))
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.fixture
def redis_blobs(redis_url):
    from agentir.bus.redis_blobs import RedisBlobStore

    stores = []

    def make(**options):
        s = RedisBlobStore(redis_url, prefix=f"t{uuid.uuid4().hex[:10]}", **options)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()


def test_a_redis_blob_put_on_one_client_is_read_by_another(redis_blobs):
    """Blobs travel: what one process (front end) stores, another (a worker) reads by reference."""
    front = redis_blobs()
    worker = type(front)(front.url, prefix=front.prefix)
    try:
        a = np.random.default_rng(0).integers(0, 255, (7, 9, 3), dtype=np.uint8)
        np.testing.assert_array_equal(worker.get(front.put(a)), a)
    finally:
        worker.close()


def test_a_redis_blob_expires_after_its_ttl(redis_blobs):
    """A blob nobody touches for ttl seconds is gone (BlobNotFound), so the broker does not fill up."""
    store = redis_blobs(ttl=0.05)
    ref = store.put(np.ones((2, 2), np.uint8))
    key = store._key(ref.sha256)
    assert 0 < store._redis.pttl(key) <= 50
    deadline = time.monotonic() + 5
    while store.contains(ref) and time.monotonic() < deadline:  # Redis expires it on its own
        time.sleep(0.01)
    with pytest.raises(BlobNotFound):
        store.get(ref)


def test_a_redis_blob_over_the_cap_is_refused(redis_blobs):
    """A single blob larger than max_blob_bytes is refused with its size and the limit."""
    store = redis_blobs(max_blob_bytes=100)
    with pytest.raises(BusError, match=r"101 bytes exceeds .* limit of 100 bytes"):
        store.put(np.zeros(101, np.uint8))


def test_a_redis_blob_that_does_not_match_its_hash_is_an_error(redis_blobs):
    """Bytes altered in the broker never come back as an image: the hash check refuses them."""
    store = redis_blobs()
    ref = store.put(np.zeros((4, 4), np.uint8))
    store._redis.set(store._key(ref.sha256), b"\x01" * 16)
    with pytest.raises(BusError, match="does not match its hash"):
        store.get(ref)
