"""The message bus: schemas, msgpack codec, the Bus protocol, backends and the blob store.

Imports no torch. See :mod:`agentir.bus.base` for the delivery guarantees and :mod:`agentir.bus.messages` for
every message kind.
"""

from agentir.bus.base import Bus, Delivery, Subscription
from agentir.bus.blobs import BlobRef, BlobStore, DirectoryBlobStore, MemoryBlobStore
from agentir.bus.codec import MAX_MESSAGE_BYTES, Envelope, decode, encode
from agentir.bus.errors import (
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
from agentir.bus.memory import InMemoryBus
from agentir.bus.schema import Message

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
