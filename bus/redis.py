"""Redis Streams backend of the :class:`~agentir.bus.base.Bus` protocol, for actors on several machines.

Mapping (every key under ``prefix``, default ``agentir``):

* A subject is a stream ``{prefix}:s:{subject}``; each entry holds one encoded envelope.
* A queue group is a consumer group of that stream (``XREADGROUP``); a subscriber without a
  group gets a consumer group of its own (``_sub.<id>``), created at ``$`` so it sees what is
  published after it subscribed, and destroyed when it closes (or, once its heartbeat stops, by
  the next publisher). Queue groups are created at ``0``: work published before the first worker
  joined is kept for it.
* ``ack`` is ``XACK`` (only while this consumer still owns the entry: a stalled consumer whose
  message was taken over cannot acknowledge it away from the new owner).
* Redelivery: a live consumer renews the idle time of every entry it holds every
  ``visibility_timeout / 3`` seconds; entries of a dead or stalled consumer go idle and, after
  ``visibility_timeout``, another member claims them (``XAUTOCLAIM``) with a higher ``attempt``.
  ``nack(requeue=True)`` and closing a member hand its unfinished entries to the group at once.
* Dead consumers: a queue group's consumer name that holds no entry and has not read for
  ``stale_consumer_after`` seconds (a worker killed with ``kill -9``) is deleted from the group by
  a live member (``XGROUP DELCONSUMER``), so ``XINFO CONSUMERS`` lists the living.
* Dead letters: an entry claimed for the ``max_deliveries + 1``-th time, one nacked at attempt
  ``max_deliveries``, and bytes that do not decode (garbage, a newer schema version; also counted
  in ``Subscription.rejected``) go to the stream ``{prefix}:dlq`` with the reason and are
  acknowledged; ``dead_letters`` counts them and ``on_dead_letter`` (if set) is awaited with a
  :class:`DeadLetter`, so the application can fail the job it belonged to.
* Backpressure: a group's mailbox is the sum of its live members' ``max_pending``. ``publish``
  checks and appends in one server-side script: while any group of the stream holds that many
  entries not yet acknowledged (undelivered plus in progress), the publisher waits, and raises
  :class:`~agentir.bus.errors.BusFull` after ``publish_timeout`` seconds. A queue group with no live
  member accepts up to ``idle_capacity`` entries (work queues up while workers restart).
* Bounded streams: entries acknowledged by every group are trimmed (``XTRIM MINID``) and every
  append caps the stream at about ``max_len`` entries (``MAXLEN ~``).
* Request/reply: replies go to a per-bus inbox stream ``{prefix}:inbox:{id}`` (expiring after
  ten minutes unused); ``request`` raises ``NoResponders`` when the subject has no live member.
* Broker outages (a restart, a failover): every command is retried with a backoff for up to
  ``reconnect_timeout`` seconds before :class:`~agentir.bus.errors.BrokerUnavailable` is raised; readers
  keep retrying. Consumer groups and pending entries live in Redis, so with append-only
  persistence nothing accepted is lost across a restart.

Guarantees: everything in :mod:`agentir.bus.base`, across processes and machines, with at-least-once
delivery (handlers must be idempotent). Order is per stream, not across redeliveries.

The backend is asyncio-only (it uses ``redis.asyncio``); use it as ``async with RedisBus(url) as
bus`` or ``bus = await RedisBus(url).connect()`` ... ``await bus.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
import redis.exceptions
import structlog

from agentir.bus.codec import MAX_MESSAGE_BYTES, Envelope, decode, encode, new_id
from agentir.bus.errors import BrokerUnavailable, BusClosed, BusError, BusFull, CodecError, NoResponders, RemoteError, RequestTimeout
from agentir.bus.messages import ErrorReply
from agentir.bus.schema import Message

log = structlog.get_logger(__name__)
T = TypeVar("T")

_INBOX = "_inbox."
#: Errors that mean "the broker is not there right now" (retried), as opposed to a wrong command.
_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, OSError)
_INBOX_TTL_S = 600
_DLQ_MAXLEN = 10_000

# KEYS: stream, members. ARGV: data, max_len, idle_capacity.
# Returns {1, id} when appended, {0, group} when that group's mailbox is full.
_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local caps = {}
local members = redis.call('HGETALL', KEYS[2])
for i = 1, #members, 2 do
  local field, value = members[i], members[i + 1]
  local sep = string.find(field, '|', 1, true)
  local cap, expires = string.match(value, '^(%d+):(%d+)$')
  if sep == nil or cap == nil or tonumber(expires) < now then
    redis.call('HDEL', KEYS[2], field)
  else
    local group = string.sub(field, 1, sep - 1)
    caps[group] = (caps[group] or 0) + tonumber(cap)
  end
end
local minid = nil
if redis.call('EXISTS', KEYS[1]) == 1 then
  local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
  for _, g in ipairs(groups) do
    local info = {}
    for j = 1, #g, 2 do info[g[j]] = g[j + 1] end
    local name = info['name']
    local cap = caps[name]
    local skip = false
    if cap == nil then
      if string.sub(name, 1, 5) == '_sub.' then
        redis.call('XGROUP', 'DESTROY', KEYS[1], name)
        skip = true
      else
        cap = tonumber(ARGV[3])
      end
    end
    if not skip then
      local lag = info['lag']
      if not lag then
        lag = #redis.call('XRANGE', KEYS[1], '(' .. info['last-delivered-id'], '+', 'COUNT', cap)
      end
      if lag + info['pending'] >= cap then
        return {0, name}
      end
      local low = info['last-delivered-id']
      if info['pending'] > 0 then
        low = redis.call('XPENDING', KEYS[1], name)[2]
      end
      if minid == nil then
        minid = low
      else
        local a1, a2 = string.match(low, '^(%d+)-(%d+)$')
        local b1, b2 = string.match(minid, '^(%d+)-(%d+)$')
        if tonumber(a1) < tonumber(b1) or (a1 == b1 and tonumber(a2) < tonumber(b2)) then minid = low end
      end
    end
  end
end
if minid ~= nil and minid ~= '0-0' then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', minid)
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
return {1, id}
"""

# KEYS: stream, members. ARGV: group, member field, max_pending, ttl_ms, create id ('0' or '$').
_JOIN = """
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[5], 'MKSTREAM')
if not ok and not string.find(tostring(err), 'BUSYGROUP', 1, true) then return redis.error_reply(tostring(err)) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. ':' .. tostring(now + tonumber(ARGV[4])))
return 1
"""

# KEYS: members. Returns how many live members the subject has.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
local members = redis.call('HGETALL', KEYS[1])
for i = 2, #members, 2 do
  local cap, expires = string.match(members[i], '^(%d+):(%d+)$')
  if cap ~= nil and tonumber(expires) >= now then n = n + 1 end
end
return n
"""

# KEYS: stream. ARGV: group, consumer, ids... Renews the entries this consumer still owns;
# returns the ids it no longer owns (taken over by another member, or acknowledged).
_RENEW = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# KEYS: stream. ARGV: group, consumer, id, mode ('ack' | 'release'), release idle ms.
# Acts only while the consumer owns the entry; returns 1 if it did.
_SETTLE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p ~= 1 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] == 'ack' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[5], 'JUSTID')
end
return 1
"""

# KEYS: stream, dlq. ARGV: group, consumer, id, subject, attempts, reason, data, dlq maxlen.
_DEAD_LETTER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p ~= 1 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'subject', ARGV[4], 'group', ARGV[1], 'id', ARGV[3],
  'attempts', ARGV[5], 'reason', ARGV[6], 'd', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS: stream. ARGV: group, consumer, min idle ms, count. Claims idle entries of other
# consumers; returns {id, data, times delivered} per claimed entry.
_CLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(r[2]) do
  local id = e[1]
  local data = ''
  local fields = e[2]
  if fields then
    for j = 1, #fields, 2 do if fields[j] == 'd' then data = fields[j + 1] end end
  end
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local n = 1
  if #p == 1 then n = p[1][4] end
  table.insert(out, {id, data, n})
end
return out
"""

# KEYS: stream. ARGV: group, this consumer, stale ms. Deletes the group's consumers that hold no
# entry and have not read for stale ms (dead workers' names; a live one reads every block_ms,
# and one that is deleted by mistake is re-created by its next read). Returns how many.
_REAP = """
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for j = 1, #c, 2 do info[c[j]] = c[j + 1] end
  local idle = tonumber(info['inactive'] or info['idle'])
  if info['name'] ~= ARGV[2] and tonumber(info['pending']) == 0 and idle ~= nil and idle > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    n = n + 1
  end
end
return n
"""


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    user = parts.username or ""
    return urllib.parse.urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """Validate a broker URL's form (``redis://HOST[:PORT][/DB]``, ``rediss://`` or ``unix://``).

    Raises:
        BrokerUnavailable: not such a URL (the message names it and the expected form).
    """
    if not isinstance(url, str) or not url:
        raise BrokerUnavailable(repr(url), "not a URL; expected redis://HOST:6379/0")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BrokerUnavailable(redact(url), f"not a valid URL: {exc}; expected redis://HOST:6379/0") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise BrokerUnavailable(redact(url), f"unsupported scheme {parts.scheme!r}; expected redis://HOST:6379/0")
    if parts.scheme != "unix" and not parts.hostname:
        raise BrokerUnavailable(redact(url), "no host; expected redis://HOST:6379/0")
    path = parts.path.strip("/")
    if parts.scheme != "unix" and path and not path.isdigit():
        raise BrokerUnavailable(redact(url), f"database {path!r} is not a number; expected redis://HOST:6379/0")
    return url


def ping_url(url: str, timeout: float = 5.0) -> None:
    """Check, synchronously, that a Redis server answers at ``url`` (entry points, before slow imports).

    Raises:
        BrokerUnavailable: a malformed URL, nothing listening, a refusal (authentication ...).
    """
    import redis as sync_redis

    check_url(url)
    client = sync_redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except sync_redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(redact(url), f"{type(exc).__name__}: {exc}") from None
    finally:
        client.close()


def client_from_url(url: str, **options: Any) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` (checked with :func:`check_url`), answering bytes."""
    check_url(url)
    options.setdefault("socket_connect_timeout", 5.0)
    options.setdefault("health_check_interval", 15)
    return aioredis.Redis.from_url(url, decode_responses=False, **options)


async def retrying(url: str, timeout: float, closed: Callable[[], bool], fn: Callable[[], Awaitable[T]]) -> T:
    """Await ``fn()``, retrying broker outages with a backoff for up to ``timeout`` seconds.

    Raises:
        BrokerUnavailable: the broker stayed unreachable, or it refused the command.
        BusClosed: ``closed()`` became true while retrying.
    """
    deadline: float | None = None
    delay = 0.05
    while True:
        if closed():
            raise BusClosed()
        try:
            return await fn()
        except redis.exceptions.AuthenticationError as exc:
            raise BrokerUnavailable(redact(url), f"authentication failed: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            if "NOSCRIPT" in str(exc):
                raise
            raise BrokerUnavailable(redact(url), f"the broker refused a command: {exc}") from None
        except _TRANSIENT as exc:
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
                log.warning("bus.broker_unreachable", url=redact(url), error=f"{type(exc).__name__}: {exc}", retry_for=timeout)
            if now >= deadline:
                raise BrokerUnavailable(redact(url), f"{type(exc).__name__}: {exc}") from None
            await anyio.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, 1.0)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry moved to the dead-letter stream: where it was, how often it was tried and why."""

    subject: str
    group: str
    entry: str
    attempts: int
    reason: str
    data: bytes


@dataclass(slots=True)
class _Item:
    entry: str
    data: bytes
    attempt: int


class _Signal:
    """A level-triggered wake-up: ``set`` before ``wait`` is not lost; several sets collapse."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> None:
        with anyio.move_on_after(timeout):
            await self._event.wait()
        if self._event.is_set():
            self._event = anyio.Event()


class RedisDelivery:
    """A delivery from :class:`RedisBus` (``attempt`` counts deliveries of the stream entry)."""

    __slots__ = ("_item", "_settled", "_sub", "attempt", "envelope", "subject")

    def __init__(self, sub: RedisSubscription, item: _Item, envelope: Envelope) -> None:
        self.subject = sub.subject
        self.envelope = envelope
        self.attempt = item.attempt
        self._sub = sub
        self._item = item
        self._settled = False

    @property
    def message(self) -> Message:
        return self.envelope.message

    @property
    def entry(self) -> str:
        """The stream entry id."""
        return self._item.entry

    @property
    def lost(self) -> bool:
        """True once another consumer took this entry over (this one stalled past the visibility timeout)."""
        return self._item.entry in self._sub._lost

    async def ack(self) -> None:
        if self._settled:
            return
        self._settled = True
        await self._sub._settle(self._item, "ack")

    async def nack(self, *, requeue: bool = True) -> None:
        if self._settled:
            return
        self._settled = True
        if not requeue:
            await self._sub._settle(self._item, "ack")
        elif self.attempt >= self._sub.bus.max_deliveries:
            await self._sub._dead_letter(self._item, f"nacked {self.attempt} times (max_deliveries={self._sub.bus.max_deliveries})")
        else:
            await self._sub._settle(self._item, "release")

    async def reply(self, message: Message) -> None:
        if self.envelope.reply_to:
            await self._sub.bus.publish(self.envelope.reply_to, message, correlation_id=self.envelope.id)


class RedisSubscription:
    """One consumer of a stream in a consumer group (see the module docstring)."""

    def __init__(self, bus: RedisBus, subject: str, group: str | None, max_pending: int) -> None:
        self.bus = bus
        self.subject = subject
        self.group = group
        self.max_pending = max_pending
        self.rejected = 0
        self.closed = False
        self._group = group if group is not None else f"_sub.{new_id()}"
        self._consumer = f"{bus.consumer_id}.{next(bus._counter)}"
        self._field = f"{self._group}|{self._consumer}"
        self._key = bus._stream(subject)
        self._members = bus._members(subject)
        self._ready: deque[_Item] = deque()
        self._inflight: dict[str, _Item] = {}  # entries this consumer holds (buffered or being handled)
        self._lost: set[str] = set()
        self._item_ready = _Signal()
        self._want = _Signal()
        self._claim_now = _Signal()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------------
    async def _join(self) -> None:
        create_at = "0" if self.group is not None else "$"
        await self.bus._script("join", [self._key, self._members], [self._group, self._field, self.max_pending, int(self.bus.member_ttl * 1000), create_at])

    async def _start(self) -> None:
        await self._join()
        self._tasks = [asyncio.create_task(self._reader()), asyncio.create_task(self._maintain())]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._item_ready.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.bus._forget(self)
        # Best effort, bounded: hand what this member holds to its group, leave the member list.
        with anyio.move_on_after(2.0), contextlib.suppress(Exception):
            r = self.bus._redis
            if self.group is None:
                await r.xgroup_destroy(self._key, self._group)
            else:
                for item in list(self._inflight.values()):
                    await self.bus._script("settle", [self._key], [self._group, self._consumer, item.entry, "release", self.bus._release_idle_ms])
            await r.hdel(self._members, self._field)
        self._inflight.clear()
        self._ready.clear()
        if self.group is not None:
            self.bus._wake_peers(self)

    # -- background loops --------------------------------------------------------------------------
    async def _reader(self) -> None:
        """Read new entries while fewer than ``prefetch`` wait for the consumer."""
        delay = 0.05
        while not self.closed:
            while len(self._ready) >= self.bus.prefetch and not self.closed:
                await self._want.wait()
            try:
                resp: Any = await self.bus._reader_redis.xreadgroup(
                    self._group, self._consumer, {self._key: ">"}, count=self.bus.prefetch, block=self.bus.block_ms
                )
                delay = 0.05
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the group is gone (destroyed while we stalled, or data lost)
                    await self._rejoin()
                    continue
                raise
            except _TRANSIENT as exc:
                log.warning("bus.read_retry", subject=self.subject, error=f"{type(exc).__name__}: {exc}")
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            for _stream, entries in resp or ():
                for entry_id, fields in entries:
                    self._accept(_Item(_text(entry_id), fields.get(b"d", b""), 1))

    async def _maintain(self) -> None:
        """Renew membership and held entries; claim entries that went idle elsewhere."""
        while not self.closed:
            await self._claim_now.wait(self.bus.heartbeat_interval)
            if self.closed:
                return
            try:
                await self._tick()
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._rejoin()
                else:
                    log.error("bus.maintenance_failed", subject=self.subject, error=str(exc))
            except (*_TRANSIENT, BusError) as exc:
                log.warning("bus.maintenance_retry", subject=self.subject, error=f"{type(exc).__name__}: {exc}")

    async def _tick(self) -> None:
        bus = self.bus
        await self._join()  # refresh the membership (and re-create the group after a data loss)
        if self._inflight:
            lost = await bus._raw_script("renew", [self._key], [self._group, self._consumer, *self._inflight])
            for entry in map(_text, lost or ()):
                item = self._inflight.pop(entry, None)
                if item is not None:
                    self._lost.add(entry)
                    log.warning("bus.delivery_taken_over", subject=self.subject, entry=entry)
                    with contextlib.suppress(ValueError):
                        self._ready.remove(item)
            while len(self._lost) > 4096:
                self._lost.pop()
        if self.group is not None:
            reaped = int(await bus._raw_script("reap", [self._key], [self._group, self._consumer, int(bus.stale_consumer_after * 1000)]) or 0)
            if reaped:
                bus.reaped_consumers += reaped
                log.info("bus.stale_consumers_deleted", subject=self.subject, group=self._group, count=reaped)
        room = bus.prefetch - len(self._ready)
        if room <= 0:
            return
        claimed = await bus._raw_script("claim", [self._key], [self._group, self._consumer, int(bus.visibility_timeout * 1000), room])
        for entry_id, data, delivered in claimed or ():
            item = _Item(_text(entry_id), bytes(data), int(delivered))
            if item.attempt > bus.max_deliveries:
                self._inflight[item.entry] = item
                await self._dead_letter(item, f"delivered {item.attempt - 1} times without being acknowledged (max_deliveries={bus.max_deliveries})")
                continue
            log.info("bus.redelivered", subject=self.subject, group=self._group, entry=item.entry, attempt=item.attempt)
            self._accept(item)

    async def _rejoin(self) -> None:
        try:
            await self._join()
        except (*_TRANSIENT, BusError) as exc:
            log.warning("bus.rejoin_retry", subject=self.subject, error=str(exc))
            await anyio.sleep(0.2)

    def _accept(self, item: _Item) -> None:
        self._inflight[item.entry] = item
        self._lost.discard(item.entry)
        self._ready.append(item)
        self._item_ready.set()

    # -- settling ---------------------------------------------------------------------------------
    async def _settle(self, item: _Item, mode: str) -> None:
        self._inflight.pop(item.entry, None)
        if item.entry in self._lost:
            log.info("bus.late_settle_ignored", subject=self.subject, entry=item.entry, mode=mode)
            return
        done = await self.bus._script("settle", [self._key], [self._group, self._consumer, item.entry, mode, self.bus._release_idle_ms])
        if mode == "release" and done:
            self.bus._wake_peers(self, include_self=True)

    async def _dead_letter(self, item: _Item, reason: str) -> None:
        self._inflight.pop(item.entry, None)
        bus = self.bus
        done = await bus._script(
            "dead_letter",
            [self._key, bus._dlq],
            [self._group, self._consumer, item.entry, self.subject, item.attempt, reason, item.data, _DLQ_MAXLEN],
        )
        if not done:
            return
        bus.dead_letters += 1
        log.warning("bus.dead_letter", subject=self.subject, group=self._group, entry=item.entry, attempts=item.attempt, reason=reason)
        if bus.on_dead_letter is not None:
            letter = DeadLetter(subject=self.subject, group=self._group, entry=item.entry, attempts=item.attempt, reason=reason, data=item.data)
            try:
                await bus.on_dead_letter(letter)
            except Exception as exc:
                log.error("bus.dead_letter_hook_failed", error=f"{type(exc).__name__}: {exc}")

    # -- iteration --------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[RedisDelivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RedisDelivery]:
        while True:
            while not self._ready:
                if self.closed or self.bus._closed:
                    return
                await self._item_ready.wait()
            item = self._ready.popleft()
            self._want.set()
            try:
                envelope = decode(item.data, max_bytes=self.bus.max_message_bytes)
            except CodecError as exc:
                self.rejected += 1
                log.warning("bus.rejected", subject=self.subject, error=str(exc))
                with contextlib.suppress(BusError):
                    await self._dead_letter(item, f"rejected: {exc}")
                continue
            yield RedisDelivery(self, item, envelope)


class _Pending:
    __slots__ = ("envelope", "error", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.envelope: Envelope | None = None
        self.error: Exception | None = None


class RedisBus:
    """The broker bus: Redis Streams with consumer groups (see the module docstring).

    Args:
        url: ``redis://HOST[:PORT][/DB]`` (``rediss://`` for TLS, ``unix://PATH``).
        prefix: namespace of every key (several deployments can share one Redis).
        source: written into every envelope (which process sent it).
        publish_timeout: seconds a publisher waits for room before :class:`~agentir.bus.errors.BusFull`.
        max_deliveries: deliveries of one entry before it is dead-lettered.
        visibility_timeout: seconds an entry of a silent consumer stays with it before another
            member takes it over.
        max_len: approximate cap on a stream's length (a safety net; acknowledged entries are
            trimmed long before).
        idle_capacity: entries a queue group with no live member may accumulate.
        reconnect_timeout: seconds a command retries while the broker is unreachable.
        on_dead_letter: awaited with each :class:`DeadLetter` this bus moved to the dead-letter stream.
        stale_consumer_after: seconds after which a consumer name that holds no entry and reads
            nothing (a worker that died) is deleted from its group (default: ten visibility
            timeouts, at least five minutes).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "agentir",
        source: str = "",
        publish_timeout: float = 30.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_deliveries: int = 5,
        visibility_timeout: float = 30.0,
        max_len: int = 10_000,
        idle_capacity: int = 1024,
        reconnect_timeout: float = 30.0,
        block_ms: int = 2000,
        prefetch: int = 1,
        on_dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
        stale_consumer_after: float | None = None,
    ) -> None:
        self.url = check_url(url)
        for name, value in (("publish_timeout", publish_timeout), ("visibility_timeout", visibility_timeout), ("reconnect_timeout", reconnect_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        for name, ivalue in (("max_deliveries", max_deliveries), ("max_len", max_len), ("idle_capacity", idle_capacity), ("prefetch", prefetch)):
            if ivalue < 1:
                raise ValueError(f"{name} must be at least 1, got {ivalue!r}")
        self.prefix = prefix
        self.source = source or f"{socket.gethostname()}:{os.getpid()}"
        self.publish_timeout = publish_timeout
        self.max_message_bytes = max_message_bytes
        self.max_deliveries = max_deliveries
        self.visibility_timeout = visibility_timeout
        self.heartbeat_interval = visibility_timeout / 3
        # How long a silent member still counts: long enough to ride out a broker restart (a
        # plain subscriber's own group is destroyed once its membership lapses).
        self.member_ttl = max(2 * visibility_timeout, 30.0)
        self.stale_consumer_after = stale_consumer_after if stale_consumer_after is not None else max(10 * visibility_timeout, 300.0)
        if not self.stale_consumer_after > 0:
            raise ValueError(f"stale_consumer_after must be positive, got {stale_consumer_after!r}")
        #: Dead consumers' names this bus deleted from consumer groups.
        self.reaped_consumers = 0
        self.max_len = max_len
        self.idle_capacity = idle_capacity
        self.reconnect_timeout = reconnect_timeout
        self.block_ms = block_ms
        self.prefetch = prefetch
        self.on_dead_letter = on_dead_letter
        self.dead_letters = 0
        self.consumer_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._release_idle_ms = int(visibility_timeout * 1000) * 1000  # far past any visibility timeout
        self._counter = iter(range(1, 1 << 62))
        self._redis = client_from_url(url)
        # Blocking reads hold a connection each: a separate pool keeps them from starving commands.
        self._reader_redis = client_from_url(url, socket_timeout=None)
        self._scripts = {
            name: self._redis.register_script(src)
            for name, src in (
                ("publish", _PUBLISH),
                ("join", _JOIN),
                ("live", _LIVE),
                ("renew", _RENEW),
                ("settle", _SETTLE),
                ("dead_letter", _DEAD_LETTER),
                ("claim", _CLAIM),
                ("reap", _REAP),
            )
        }
        self._subs: dict[tuple[str, str], list[RedisSubscription]] = {}
        self._pending: dict[str, _Pending] = {}
        self._inbox_id = uuid.uuid4().hex
        self._inbox_task: asyncio.Task[None] | None = None
        self._closed = False
        self._connected = False

    # -- keys ------------------------------------------------------------------------------------
    def _stream(self, subject: str) -> str:
        return f"{self.prefix}:s:{subject}"

    def _members(self, subject: str) -> str:
        return f"{self.prefix}:m:{subject}"

    @property
    def _dlq(self) -> str:
        return f"{self.prefix}:dlq"

    @property
    def dlq_key(self) -> str:
        """The dead-letter stream's key."""
        return self._dlq

    def _inbox_key(self, inbox: str) -> str:
        return f"{self.prefix}:inbox:{inbox}"

    # -- commands ----------------------------------------------------------------------------------
    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await retrying(self.url, self.reconnect_timeout, lambda: self._closed, fn)

    async def _raw_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        return await script(keys=keys, args=args)

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(lambda: self._raw_script(name, keys, args))

    # -- lifecycle -------------------------------------------------------------------------------
    async def connect(self) -> RedisBus:
        """Check that the broker answers; returns the bus.

        Raises:
            BrokerUnavailable: the broker cannot be reached within ``socket_connect_timeout``
                (5 s), or it refuses us (authentication, not a Redis server ...).
        """
        if self._connected:
            return self
        try:
            await self._redis.ping()
            info = await self._redis.info("server")
        except redis.exceptions.AuthenticationError as exc:
            await self._aclose_clients()
            raise BrokerUnavailable(redact(self.url), f"authentication failed: {exc}") from None
        except (*_TRANSIENT, redis.exceptions.RedisError) as exc:
            await self._aclose_clients()
            raise BrokerUnavailable(redact(self.url), f"{type(exc).__name__}: {exc}") from None
        version = str(info.get("redis_version", "0"))
        if int(version.split(".")[0] or 0) < 7:
            await self._aclose_clients()
            raise BrokerUnavailable(redact(self.url), f"Redis {version} is too old; the bus needs Redis 7 or newer (XAUTOCLAIM, consumer-group lag)")
        self._connected = True
        return self

    async def __aenter__(self) -> RedisBus:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every subscription (handing their entries to their groups) and fail pending requests."""
        if self._closed:
            return
        for pending in list(self._pending.values()):
            if not pending.event.is_set():
                pending.error = BusClosed()
                pending.event.set()
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.close()
        self._closed = True
        if self._inbox_task is not None:
            self._inbox_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._inbox_task
        with anyio.move_on_after(1.0), contextlib.suppress(Exception):
            await self._redis.delete(self._inbox_key(self._inbox_id))
        await self._aclose_clients()

    async def _aclose_clients(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._redis.aclose()
            await self._reader_redis.aclose()

    def _forget(self, sub: RedisSubscription) -> None:
        subs = self._subs.get((sub.subject, sub._group), [])
        if sub in subs:
            subs.remove(sub)

    def _wake_peers(self, sub: RedisSubscription, *, include_self: bool = False) -> None:
        for peer in self._subs.get((sub.subject, sub._group), ()):
            if include_self or peer is not sub:
                peer._claim_now.set()

    # -- publish ---------------------------------------------------------------------------------
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
        await self._append(subject, data)
        return msg_id

    async def publish_raw(self, subject: str, data: bytes) -> None:
        if self._closed:
            raise BusClosed()
        await self._append(subject, bytes(data))

    async def _append(self, subject: str, data: bytes) -> None:
        if subject.startswith(_INBOX):
            key = self._inbox_key(subject[len(_INBOX) :])

            async def reply() -> None:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xadd(key, {b"d": data}, maxlen=1000, approximate=True)
                    pipe.expire(key, _INBOX_TTL_S)
                    await pipe.execute()

            await self._call(reply)
            return
        keys = [self._stream(subject), self._members(subject)]
        args = [data, self.max_len, self.idle_capacity]
        deadline = time.monotonic() + self.publish_timeout
        delay = 0.002
        while True:
            ok, _what = await self._script("publish", keys, args)
            if int(ok) == 1:
                return
            now = time.monotonic()
            if now >= deadline:
                raise BusFull(subject, self.publish_timeout)
            await anyio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.05)

    # -- subscribe ---------------------------------------------------------------------------------
    async def subscribe(self, subject: str, *, group: str | None = None, max_pending: int = 64) -> RedisSubscription:
        if self._closed:
            raise BusClosed()
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        if not self._connected:
            await self.connect()
        sub = RedisSubscription(self, subject, group, max_pending)
        await sub._start()
        self._subs.setdefault((subject, sub._group), []).append(sub)
        return sub

    async def has_subscribers(self, subject: str) -> bool:
        """Whether ``subject`` has a live subscriber anywhere (its heartbeat is recent)."""
        return int(await self._script("live", [self._members(subject)], [])) > 0

    # -- request/reply ---------------------------------------------------------------------------
    async def _inbox_reader(self) -> None:
        key = self._inbox_key(self._inbox_id)
        last = "0-0"  # the inbox is new: reading from the start loses no early reply
        delay = 0.05
        while not self._closed:
            try:
                resp: Any = await self._reader_redis.xread({key: last}, count=64, block=self.block_ms)
                delay = 0.05
            except _TRANSIENT as exc:
                log.warning("bus.inbox_retry", error=f"{type(exc).__name__}: {exc}")
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            for _stream, entries in resp or ():
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    self._on_reply(fields.get(b"d", b""))

    def _on_reply(self, data: bytes) -> None:
        try:
            envelope = decode(data, max_bytes=self.max_message_bytes)
        except CodecError as exc:
            log.warning("bus.rejected", subject="_inbox", error=str(exc))
            return
        pending = self._pending.get(envelope.correlation_id or "")
        if pending is not None and not pending.event.is_set():
            pending.envelope = envelope
            pending.event.set()

    async def request(self, subject: str, message: Message, *, timeout: float) -> Envelope:
        if self._closed:
            raise BusClosed()
        if not await self.has_subscribers(subject):
            raise NoResponders(subject)
        if self._inbox_task is None:
            self._inbox_task = asyncio.create_task(self._inbox_reader())
        pending = _Pending()
        msg_id = new_id()
        self._pending[msg_id] = pending
        try:
            data = encode(message, id=msg_id, source=self.source, reply_to=_INBOX + self._inbox_id, max_bytes=self.max_message_bytes)
            await self._append(subject, data)
            with anyio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            self._pending.pop(msg_id, None)
        if pending.error is not None:
            raise pending.error
        if pending.envelope is None:
            raise RequestTimeout(subject, timeout)
        reply = pending.envelope.message
        if isinstance(reply, ErrorReply):
            raise RemoteError(subject, reply.error_type, reply.detail)
        return pending.envelope

    # -- inspection ------------------------------------------------------------------------------
    async def dead_lettered(self, count: int = 100) -> list[DeadLetter]:
        """The most recent entries of the dead-letter stream, oldest first (operators, tests)."""
        rows: Any = await self._call(lambda: self._redis.xrevrange(self._dlq, count=count))
        out = []
        for entry_id, f in reversed(rows):
            out.append(
                DeadLetter(
                    subject=_text(f.get(b"subject", b"")),
                    group=_text(f.get(b"group", b"")),
                    entry=_text(f.get(b"id", entry_id)),
                    attempts=int(f.get(b"attempts", b"0") or 0),
                    reason=_text(f.get(b"reason", b"")),
                    data=bytes(f.get(b"d", b"")),
                )
            )
        return out


# KEYS: state hash. ARGV: expected version, data, ttl ms. Compare-and-set; returns 1 on success.
_CAS = """
local cur = redis.call('HGET', KEYS[1], 'v')
if (cur or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[1]) + 1), 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisStateStore:
    """Versioned per-key state with compare-and-set, on the bus's broker (the Planner's job state).

    ``load`` returns ``(version, data)`` or None; ``save(key, version, data)`` stores ``data`` as
    version ``version + 1`` only if the stored version is still ``version`` (0: absent) and
    returns whether it did. Keys expire ``ttl`` seconds after their last save.
    """

    def __init__(self, bus: RedisBus, *, ttl: float = 6 * 3600.0) -> None:
        self.bus = bus
        self.ttl_ms = int(ttl * 1000)
        self._cas = bus._redis.register_script(_CAS)

    def _key(self, key: str) -> str:
        return f"{self.bus.prefix}:state:{key}"

    async def load(self, key: str) -> tuple[int, bytes] | None:
        reply: Any = await self.bus._call(lambda: self.bus._redis.hmget(self._key(key), ["v", "d"]))
        version, data = reply
        if version is None or data is None:
            return None
        return int(version), bytes(data)

    async def save(self, key: str, version: int, data: bytes) -> bool:
        done = await self.bus._call(lambda: self._cas(keys=[self._key(key)], args=[str(version), data, self.ttl_ms]))
        return bool(int(done))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


__all__ = ["DeadLetter", "RedisBus", "RedisDelivery", "RedisStateStore", "RedisSubscription", "check_url", "client_from_url", "ping_url", "redact", "retrying"]
