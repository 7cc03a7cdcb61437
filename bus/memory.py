"""In-memory bus backend on bounded anyio memory object streams.

Guarantees: everything in :mod:`agentir.bus.base`, within one process. Nothing survives a process
crash (use a broker backend for that). Unacknowledged messages still buffered in a closing
group member are handed to the group's remaining members.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agentir.bus.codec import MAX_MESSAGE_BYTES, Envelope, decode, encode, new_id
from agentir.bus.errors import BusClosed, BusFull, CodecError, NoResponders, RemoteError, RequestTimeout
from agentir.bus.messages import ErrorReply
from agentir.bus.schema import Message

log = structlog.get_logger(__name__)

_INBOX = "_inbox."


@dataclass(slots=True)
class _Item:
    subject: str
    data: bytes
    attempt: int = 1


class MemoryDelivery:
    """A delivery from :class:`InMemoryBus`."""

    __slots__ = ("_bus", "_data", "_group", "_settled", "attempt", "envelope", "subject")

    def __init__(self, bus: InMemoryBus, item: _Item, envelope: Envelope, group: str | None) -> None:
        self.subject = item.subject
        self.envelope = envelope
        self.attempt = item.attempt
        self._bus = bus
        self._data = item.data
        self._group = group
        self._settled = False

    @property
    def message(self) -> Message:
        return self.envelope.message

    async def ack(self) -> None:
        self._settled = True

    async def nack(self, *, requeue: bool = True) -> None:
        if self._settled:
            return
        self._settled = True
        if not requeue:
            return
        if self.attempt >= self._bus.max_deliveries:
            self._bus.dead_letters += 1
            log.warning("bus.dead_letter", subject=self.subject, kind=self.envelope.kind, attempts=self.attempt)
            return
        await self._bus._route(_Item(self.subject, self._data, self.attempt + 1), only_group=self._group)

    async def reply(self, message: Message) -> None:
        if self.envelope.reply_to:
            await self._bus.publish(self.envelope.reply_to, message, correlation_id=self.envelope.id)


@dataclass(eq=False)
class _MemorySubscription:
    bus: InMemoryBus
    subject: str
    group: str | None
    send: MemoryObjectSendStream[_Item]
    receive: MemoryObjectReceiveStream[_Item]
    rejected: int = 0
    closed: bool = False
    delivered: int = field(default=0)

    def __aiter__(self) -> AsyncIterator[MemoryDelivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MemoryDelivery]:
        while True:
            try:
                item = await self.receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            try:
                envelope = decode(item.data, max_bytes=self.bus.max_message_bytes)
            except CodecError as exc:
                self.rejected += 1
                log.warning("bus.rejected", subject=item.subject, error=str(exc))
                continue
            self.delivered += 1
            yield MemoryDelivery(self.bus, item, envelope, self.group)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.bus._remove(self)
        self.send.close()
        leftovers: list[_Item] = []
        while True:
            try:
                leftovers.append(self.receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self.receive.close()
        # Hand buffered work of a group member to its peers: it was never processed here.
        if self.group is not None:
            for item in leftovers:
                await self.bus._route(item, only_group=self.group)


class _Pending:
    __slots__ = ("envelope", "error", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.envelope: Envelope | None = None
        self.error: Exception | None = None


class InMemoryBus:
    """The default bus: one process, bounded mailboxes, msgpack on every hop."""

    def __init__(
        self,
        *,
        source: str = "local",
        publish_timeout: float = 30.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_deliveries: int = 5,
    ) -> None:
        self.source = source
        self.publish_timeout = publish_timeout
        self.max_message_bytes = max_message_bytes
        self.max_deliveries = max_deliveries
        self.dead_letters = 0
        self._subs: dict[str, list[_MemorySubscription]] = {}
        self._rr = itertools.count()
        self._pending: dict[str, _Pending] = {}
        self._closed = False

    # -- publish ---------------------------------------------------------------------------
    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        correlation_id: str | None = None,
        cause: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        if self._closed:
            raise BusClosed()
        msg_id = new_id()
        data = encode(
            message,
            id=msg_id,
            correlation_id=correlation_id,
            cause=cause,
            source=self.source,
            reply_to=reply_to,
            max_bytes=self.max_message_bytes,
        )
        await self._route(_Item(subject, data))
        return msg_id

    async def publish_raw(self, subject: str, data: bytes) -> None:
        if self._closed:
            raise BusClosed()
        await self._route(_Item(subject, bytes(data)))

    async def _route(self, item: _Item, *, only_group: str | None = None) -> int:
        """Deliver ``item`` to its subscribers; returns how many mailboxes received it."""
        if item.subject.startswith(_INBOX):
            pending = self._pending.get(item.subject)
            if pending is not None and not pending.event.is_set():
                try:
                    pending.envelope = decode(item.data, max_bytes=self.max_message_bytes)
                except CodecError as exc:
                    pending.error = exc
                pending.event.set()
                return 1
            return 0
        subs = [s for s in self._subs.get(item.subject, ()) if not s.closed]
        targets: list[_MemorySubscription] = []
        groups: dict[str, list[_MemorySubscription]] = {}
        for sub in subs:
            if sub.group is None:
                if only_group is None:
                    targets.append(sub)
            elif only_group is None or sub.group == only_group:
                groups.setdefault(sub.group, []).append(sub)
        for members in groups.values():
            # Prefer a member with room in its mailbox; rotate for fairness.
            start = next(self._rr) % len(members)
            ordered = members[start:] + members[:start]
            roomy = [m for m in ordered if m.send.statistics().current_buffer_used < m.send.statistics().max_buffer_size]
            targets.append((roomy or ordered)[0])
        for sub in targets:
            try:
                with anyio.fail_after(self.publish_timeout):
                    await sub.send.send(item)
            except TimeoutError:
                raise BusFull(item.subject, self.publish_timeout) from None
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                continue  # the subscriber went away meanwhile
        return len(targets)

    # -- subscribe ---------------------------------------------------------------------------
    async def subscribe(self, subject: str, *, group: str | None = None, max_pending: int = 64) -> _MemorySubscription:
        if self._closed:
            raise BusClosed()
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        send, receive = anyio.create_memory_object_stream[_Item](max_pending)
        sub = _MemorySubscription(self, subject, group, send, receive)
        self._subs.setdefault(subject, []).append(sub)
        return sub

    def _remove(self, sub: _MemorySubscription) -> None:
        subs = self._subs.get(sub.subject, [])
        if sub in subs:
            subs.remove(sub)

    def has_subscribers(self, subject: str) -> bool:
        return any(not s.closed for s in self._subs.get(subject, ()))

    # -- request/reply ---------------------------------------------------------------------------
    async def request(self, subject: str, message: Message, *, timeout: float) -> Envelope:
        if self._closed:
            raise BusClosed()
        if not self.has_subscribers(subject):
            raise NoResponders(subject)
        inbox = _INBOX + new_id()
        pending = _Pending()
        self._pending[inbox] = pending
        try:
            await self.publish(subject, message, reply_to=inbox)
            with anyio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            self._pending.pop(inbox, None)
        if pending.error is not None:
            raise pending.error
        if pending.envelope is None:
            raise RequestTimeout(subject, timeout)
        reply = pending.envelope.message
        if isinstance(reply, ErrorReply):
            raise RemoteError(subject, reply.error_type, reply.detail)
        return pending.envelope

    # -- lifecycle ---------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pending in list(self._pending.values()):
            if not pending.event.is_set():
                pending.error = BusClosed()
                pending.event.set()
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.closed = True
                sub.send.close()
                sub.receive.close()  # a consumer blocked in receive() ends its iteration
        self._subs.clear()

    async def __aenter__(self) -> InMemoryBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
