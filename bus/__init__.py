"""The message bus: schemas, msgpack codec, the Bus protocol, backends and the blob store.

Imports no torch. See :mod:`bus.base` for the delivery guarantees and :mod:`bus.messages` for
every message kind.
"""

from bus.base import Bus, Delivery, Subscription
from bus.blobs import BlobRef, BlobStore, DirectoryBlobStore, MemoryBlobStore
from bus.codec import MAX_MESSAGE_BYTES, Envelope, decode, encode
from bus.errors import (
    BlobNotFound,
    BusClosed,
    BusError,
    BusFull,
    CodecError,
    MalformedMessage,
    MessageTooLarge,
    NoResponders,
    RemoteError,
    RequestTimeout,
    UnknownMessageKind,
    UnsupportedVersion,
)
from bus.memory import InMemoryBus
from bus.schema import Message

__all__ = [
    "MAX_MESSAGE_BYTES",
    "BlobNotFound",
    "BlobRef",
    "BlobStore",
    "Bus",
    "BusClosed",
    "BusError",
    "BusFull",
    "CodecError",
    "Delivery",
    "DirectoryBlobStore",
    "Envelope",
    "InMemoryBus",
    "MalformedMessage",
    "MemoryBlobStore",
    "Message",
    "MessageTooLarge",
    "NoResponders",
    "RemoteError",
    "RequestTimeout",
    "Subscription",
    "UnknownMessageKind",
    "UnsupportedVersion",
    "decode",
    "encode",
]
