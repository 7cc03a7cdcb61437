"""Redis Streams specifics: takeover after the visibility timeout, dead letters, trimming, outages.

Each test talks to a real redis-server on a loopback port (skipped when none is installed).
"""

from __future__ import annotations

import uuid

import anyio
import pytest
from structlog.testing import capture_logs

from agentir.bus.errors import BrokerUnavailable, BusFull
from agentir.bus.messages import JobProgress
from agentir.bus.redis import DeadLetter, RedisBus, redact
from agentir.cluster.server import RedisServer, free_port


def progress(i: int) -> JobProgress:
    return JobProgress(job=f"j{i}", stage="planned")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def first(sub, timeout: float = 5):
    with anyio.fail_after(timeout):
        async for d in sub:
            return d


def stall(sub) -> None:
    """Stop a subscription's heartbeats and reads, as SIGSTOP would (the entries it holds go idle)."""
    for task in sub._tasks:
        task.cancel()


async def test_a_stalled_consumers_message_goes_to_another_member_and_its_late_ack_is_ignored(redis_url, prefix):
    """After the visibility timeout a peer takes the entry (attempt 2); the stalled one cannot ack it away."""
    async with RedisBus(redis_url, prefix=prefix, visibility_timeout=0.6) as a, RedisBus(redis_url, prefix=prefix, visibility_timeout=0.6) as b:
        sa = await a.subscribe("s", group="g")
        await a.publish("s", progress(1))
        stale = await first(sa)
        stall(sa)
        sb = await b.subscribe("s", group="g")
        fresh = await first(sb)
        assert fresh.message == progress(1) and fresh.attempt == 2
        await stale.ack()  # the late consumer: ignored, the entry stays with its new owner
        pending = await b._redis.xpending_range(b._stream("s"), "g", min="-", max="+", count=10)
        assert [p["consumer"].decode() for p in pending] == [sb._consumer]
        await fresh.ack()
        assert await b._redis.xpending_range(b._stream("s"), "g", min="-", max="+", count=10) == []


async def test_a_live_consumer_keeps_a_long_running_message(redis_url, prefix):
    """Heartbeats renew held entries: a message handled for longer than the visibility timeout is not redelivered."""
    async with RedisBus(redis_url, prefix=prefix, visibility_timeout=0.3) as a, RedisBus(redis_url, prefix=prefix, visibility_timeout=0.3) as b:
        sa = await a.subscribe("s", group="g")
        sb = await b.subscribe("s", group="g")
        await a.publish("s", progress(1))
        got = []

        async def watch(sub):
            async for d in sub:
                got.append(d)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, sa)
            tg.start_soon(watch, sb)
            with anyio.fail_after(5):
                while not got:
                    await anyio.sleep(0.05)
            await anyio.sleep(1.2)  # four visibility timeouts: a takeover would have happened by now
            assert len(got) == 1 and got[0].attempt == 1
            await got[0].ack()
            tg.cancel_scope.cancel()


async def consumers(bus: RedisBus, subject: str, group: str) -> dict[str, int]:
    """The group's consumer names in Redis and the entries each holds."""
    rows = await bus._redis.xinfo_consumers(bus._stream(subject), group)
    return {(r["name"].decode() if isinstance(r["name"], bytes) else r["name"]): int(r["pending"]) for r in rows}


async def test_a_dead_workers_consumer_name_is_deleted_once_it_holds_nothing(redis_url, prefix):
    """A member that vanished (no close) leaves its consumer name; a live member deletes it after
    stale_consumer_after once its entries were taken over; the live member's own name stays."""
    opts = {"prefix": prefix, "visibility_timeout": 0.5, "stale_consumer_after": 1.0}
    async with RedisBus(redis_url, **opts) as a, RedisBus(redis_url, **opts) as b:
        sa = await a.subscribe("s", group="g")
        await a.publish("s", progress(1))
        await first(sa)  # held by a, never acknowledged
        stall(sa)  # a dies as with kill -9: no close, no more reads
        dead = sa._consumer
        sb = await b.subscribe("s", group="g")
        taken = await first(sb)  # after the visibility timeout b takes the entry over
        assert taken.attempt == 2
        await taken.ack()
        assert dead in await consumers(b, "s", "g")
        with anyio.fail_after(10):
            while dead in await consumers(b, "s", "g"):
                await anyio.sleep(0.1)
        left = await consumers(b, "s", "g")
        assert sb._consumer in left and dead not in left
        assert b.reaped_consumers >= 1


async def test_a_consumer_still_holding_an_entry_is_never_deleted(redis_url, prefix):
    """A long handler holds its entry past stale_consumer_after: its name (and the entry) stay."""
    # The visibility timeout is long (no takeover of the held entry even on a busy machine); its
    # maintenance passes run every second, each past the short stale age.
    opts = {"prefix": prefix, "visibility_timeout": 3.0, "stale_consumer_after": 0.3}
    async with RedisBus(redis_url, **opts) as a:
        sa = await a.subscribe("s", group="g")
        sb = await a.subscribe("s", group="g")
        await a.publish("s", progress(1))
        held = await first(sa)
        await anyio.sleep(2.5)  # two or more maintenance passes of sb
        assert (await consumers(a, "s", "g")).get(sa._consumer) == 1
        await held.ack()
        await sb.close()


async def test_an_entry_delivered_too_often_is_dead_lettered_with_its_reason(redis_url, prefix):
    """A message whose consumers keep dying goes to the dead-letter stream once it exceeds max_deliveries."""
    letters: list[DeadLetter] = []

    async def hook(letter: DeadLetter) -> None:
        letters.append(letter)

    opts = dict(prefix=prefix, visibility_timeout=0.4, max_deliveries=1)
    async with RedisBus(redis_url, **opts) as a, RedisBus(redis_url, on_dead_letter=hook, **opts) as b:
        sa = await a.subscribe("s", group="g")
        await a.publish("s", progress(5), correlation_id="job-5")
        await first(sa)
        stall(sa)
        await b.subscribe("s", group="g")
        with anyio.fail_after(5):
            while not letters:
                await anyio.sleep(0.05)
        (letter,) = letters
        assert letter.subject == "s" and letter.attempts == 2 and "max_deliveries=1" in letter.reason
        assert b.dead_letters == 1
        (stored,) = await b.dead_lettered()
        assert stored.reason == letter.reason and stored.data == letter.data


async def test_garbage_is_dead_lettered_as_rejected(redis_url, prefix):
    """Undecodable bytes on a stream end in the dead-letter stream, with why they were rejected."""
    async with RedisBus(redis_url, prefix=prefix) as bus:
        sub = await bus.subscribe("s", group="g")
        await bus.publish_raw("s", b"not msgpack \xc1")
        await bus.publish("s", progress(1))
        d = await first(sub)
        await d.ack()
        assert sub.rejected == 1
        (letter,) = await bus.dead_lettered()
        assert letter.reason.startswith("rejected: malformed message") and letter.data == b"not msgpack \xc1"


async def test_acknowledged_entries_are_trimmed(redis_url, prefix):
    """A stream whose entries every group acknowledged does not keep growing."""
    async with RedisBus(redis_url, prefix=prefix) as bus:
        sub = await bus.subscribe("s", group="g", max_pending=4)
        n = 400
        async with anyio.create_task_group() as tg:

            async def consume():
                seen = 0
                async for d in sub:
                    await d.ack()
                    seen += 1
                    if seen == n:
                        return

            tg.start_soon(consume)
            for i in range(n):
                await bus.publish("s", progress(i))
        await bus.publish("s", progress(n))  # the publisher trims what the group has acknowledged
        assert await bus._redis.xlen(bus._stream("s")) < n // 2


async def test_a_queue_group_without_live_members_queues_up_to_its_idle_capacity(redis_url, prefix):
    """Work for a group whose workers are all gone is kept (bounded): publishers then get BusFull."""
    async with RedisBus(redis_url, prefix=prefix, idle_capacity=3, publish_timeout=0.1) as bus:
        sub = await bus.subscribe("s", group="g")
        await sub.close()
        for i in range(3):
            await bus.publish("s", progress(i))
        with pytest.raises(BusFull):
            await bus.publish("s", progress(3))
        late = await bus.subscribe("s", group="g", max_pending=8)  # a worker joins: it gets the queued work
        jobs = []
        for _ in range(3):
            d = await first(late)
            jobs.append(d.message.job)
            await d.ack()
        assert jobs == ["j0", "j1", "j2"]


async def test_an_unreachable_broker_is_one_clear_error_naming_it():
    """Connecting to a port where no Redis listens fails at once with the URL and what to check."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(BrokerUnavailable) as info:
        await RedisBus(url).connect()
    assert url in str(info.value) and "redis-server is running" in str(info.value)


@pytest.mark.parametrize(
    ("url", "why"),
    [("http://127.0.0.1:6379/0", "unsupported scheme"), ("redis://127.0.0.1:port/0", "not a valid URL"), ("redis://127.0.0.1:6379/x", "database 'x'")],
)
def test_a_malformed_broker_url_is_refused_before_connecting(url, why):
    """A URL that cannot name a Redis server is refused with the expected form."""
    with pytest.raises(BrokerUnavailable, match=why) as info:
        RedisBus(url)
    assert "redis://HOST:6379/0" in str(info.value)


def test_passwords_never_appear_in_messages():
    """A URL's password is replaced by *** wherever the bus names the broker."""
    assert redact("redis://user:s3cret@h:6379/0") == "redis://user:***@h:6379/0"
    with pytest.raises(BrokerUnavailable) as info:
        RedisBus("redis://:s3cret@h:6379/x")
    assert "s3cret" not in str(info.value)


async def test_a_broker_restart_with_append_only_persistence_loses_nothing(tmp_path, prefix):
    """Messages published, and one held unacknowledged, before a Redis restart are delivered after it."""
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        async with RedisBus(server.url, prefix=prefix, visibility_timeout=0.6, reconnect_timeout=20) as bus:
            sub = await bus.subscribe("s", group="g")
            await bus.publish("s", progress(1))
            await bus.publish("s", progress(2))
            held = await first(sub)
            assert held.message.job == "j1"
            with capture_logs():
                await anyio.to_thread.run_sync(server.restart)
                await held.ack()  # retried until the broker is back
                await bus.publish("s", progress(3))
                jobs = []
                for _ in range(2):
                    d = await first(sub, timeout=20)
                    jobs.append(d.message.job)
                    await d.ack()
            assert jobs == ["j2", "j3"]
