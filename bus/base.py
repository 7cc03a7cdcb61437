"""The Bus protocol: publish/subscribe, queue groups, request/reply, acknowledgements.

Delivery guarantees (every backend documents which it gives):

* Messages are msgpack-encoded on publish and decoded by each subscriber, in-process too, so
  actors never share mutable objects and the same code runs over a broker.
* A subject without a group delivers a copy to every subscriber; subscribers that share a
  ``group`` name on a subject share its messages (each goes to one member).
* ``ack`` marks a delivery done. ``nack(requeue=True)`` hands it back for redelivery (to the same
  group), up to ``max_deliveries`` attempts, after which it is dead-lettered (counted, logged).
  A backend that can lose a worker redelivers that worker's unacknowledged messages; handlers
  must therefore be idempotent (keyed by job and node ids).
* Mailboxes are bounded: ``publish`` waits while a target mailbox is full and raises
  :class:`~agentir.bus.errors.BusFull` after ``publish_timeout`` seconds. Nothing grows without bound.
* ``request`` waits for exactly one reply and raises :class:`~agentir.bus.errors.RequestTimeout`,
  :class:`~agentir.bus.errors.NoResponders`, :class:`~agentir.bus.errors.RemoteError` (the responder answered
  with an :class:`~agentir.bus.messages.ErrorReply`) or :class:`~agentir.bus.errors.BusClosed` (the bus closed
  while waiting; pending requests never hang).
* A subscriber that receives bytes it cannot decode logs ``bus.rejected``, counts it in
  ``Subscription.rejected`` and carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from agentir.bus.codec import Envelope
from agentir.bus.schema import Message


@runtime_checkable
class Delivery(Protocol):
    """One message received by one subscriber."""

    subject: str
    envelope: Envelope
    attempt: int

    @property
    def message(self) -> Message: ...

    async def ack(self) -> None: ...

    async def nack(self, *, requeue: bool = True) -> None: ...

    async def reply(self, message: Message) -> None:
        """Answer a request (no-op when the message was not a request)."""


class Subscription(Protocol):
    """An async iterator of deliveries; iteration ends when the subscription or bus closes."""

    subject: str
    group: str | None
    rejected: int

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def close(self) -> None: ...


class Bus(Protocol):
    """What actors and clients need from a message bus (see the module docstring)."""

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        correlation_id: str | None = None,
        cause: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Publish ``message``; returns its id. Raises ``BusFull``, ``BusClosed``, ``CodecError``."""

    async def publish_raw(self, subject: str, data: bytes) -> None:
        """Publish already-encoded bytes (bridges, tests of malformed input)."""

    async def subscribe(self, subject: str, *, group: str | None = None, max_pending: int = 64) -> Subscription:
        """Subscribe to ``subject`` with a mailbox of ``max_pending`` messages."""

    async def request(self, subject: str, message: Message, *, timeout: float) -> Envelope:
        """Publish and wait for one reply (see the module docstring for the errors)."""

    async def close(self) -> None:
        """Close every subscription and fail pending requests with ``BusClosed``."""
