"""The Bus contract of ``agentir.bus.base``, run once per backend (in-memory and Redis Streams)."""

from __future__ import annotations

import anyio
import msgpack
import pytest
from structlog.testing import capture_logs

from agentir.bus.blobs import BlobRef
from agentir.bus.codec import encode
from agentir.bus.errors import BusClosed, BusFull, NoResponders, RemoteError, RequestTimeout
from agentir.bus.messages import ErrorReply, JobProgress, Perceived, PerceiveRequest

REF = BlobRef(sha256="cd" * 32, shape=(2, 2, 3), dtype="uint8")


def progress(i: int) -> JobProgress:
    return JobProgress(job=f"j{i}", stage="planned")


async def take(sub, n: int, *, timeout: float = 5) -> list:
    out = []
    with anyio.fail_after(timeout):
        async for d in sub:
            out.append(d)
            await d.ack()
            if len(out) == n:
                break
    return out


async def test_every_plain_subscriber_gets_a_decoded_copy(make_bus):
    """Without a group, each subscriber receives every message, as an independent decoded object."""
    async with make_bus() as bus:
        a, b = await bus.subscribe("s"), await bus.subscribe("s")
        await bus.publish("s", progress(1), correlation_id="c")
        (da,), (db,) = await take(a, 1), await take(b, 1)
        assert da.message == db.message == progress(1)
        assert da.message is not db.message
        assert da.envelope.correlation_id == "c"
        assert da.attempt == 1


async def test_queue_group_members_share_the_work_exactly_once(make_bus):
    """Members of one group split the messages: each goes to exactly one member, both get some."""
    async with make_bus() as bus:
        members = [await bus.subscribe("s", group="g", max_pending=16) for _ in range(2)]
        for i in range(10):
            await bus.publish("s", progress(i))
        got: list[list[str]] = [[], []]
        done = anyio.Event()

        async def consume(k: int) -> None:
            async for d in members[k]:
                got[k].append(d.message.job)
                await d.ack()
                await anyio.sleep(0.01)  # a member busy with its message leaves the next to its peer
                if sum(map(len, got)) == 10:
                    done.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, 0)
                tg.start_soon(consume, 1)
                await done.wait()
                tg.cancel_scope.cancel()
        assert sorted(got[0] + got[1]) == sorted(f"j{i}" for i in range(10))
        assert got[0] and got[1]


async def test_a_group_and_a_plain_subscriber_each_get_the_message(make_bus):
    """A queue group and a plain subscriber on one subject both receive every message."""
    async with make_bus() as bus:
        member = await bus.subscribe("s", group="g")
        plain = await bus.subscribe("s")
        await bus.publish("s", progress(3))
        (a,), (b,) = await take(member, 1), await take(plain, 1)
        assert a.message == b.message == progress(3)


async def test_publish_waits_for_a_full_mailbox_then_raises_busy(make_bus):
    """A full bounded mailbox blocks the publisher, which gives up with BusFull after the timeout."""
    async with make_bus(publish_timeout=0.05) as bus:
        sub = await bus.subscribe("s", max_pending=2)
        await bus.publish("s", progress(1))
        await bus.publish("s", progress(2))
        with pytest.raises(BusFull) as info:
            await bus.publish("s", progress(3))
        assert info.value.subject == "s" and "busy" in str(info.value)
        got = await take(sub, 2)
        assert [d.message.job for d in got] == ["j1", "j2"]


async def test_backpressure_releases_when_the_consumer_catches_up(make_bus):
    """A blocked publisher proceeds as soon as the subscriber drains its mailbox."""
    async with make_bus(publish_timeout=5) as bus:
        sub = await bus.subscribe("s", max_pending=1)
        received = []

        async def consume():
            received.extend(await take(sub, 5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for i in range(5):
                await bus.publish("s", progress(i))
        assert [d.message.job for d in received] == [f"j{i}" for i in range(5)]


async def test_request_reply_and_remote_errors(make_bus):
    """request() returns the reply; an ErrorReply becomes RemoteError with the responder's detail."""
    async with make_bus() as bus:
        sub = await bus.subscribe("svc")

        async def serve():
            async for d in sub:
                if d.message.image.shape == (2, 2, 3):
                    await d.reply(Perceived(job="", image=d.message.image, levels={}, scores={}))
                else:
                    await d.reply(ErrorReply(error_type="ValueError", detail="bad image"))
                await d.ack()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            with anyio.fail_after(5):
                reply = await bus.request("svc", PerceiveRequest(image=REF), timeout=3)
                assert isinstance(reply.message, Perceived) and reply.correlation_id
                with pytest.raises(RemoteError, match="bad image"):
                    await bus.request("svc", PerceiveRequest(image=BlobRef(sha256="0" * 64, shape=(1,), dtype="uint8")), timeout=3)
            tg.cancel_scope.cancel()


async def test_request_timeout_and_no_responders(make_bus):
    """A request nobody answers times out; one to an unserved subject fails at once."""
    async with make_bus() as bus:
        with pytest.raises(NoResponders):
            await bus.request("nobody", PerceiveRequest(image=REF), timeout=1)
        await bus.subscribe("silent")
        with pytest.raises(RequestTimeout):
            await bus.request("silent", PerceiveRequest(image=REF), timeout=0.05)


async def test_closing_the_bus_fails_pending_requests(make_bus):
    """A request in flight when the bus closes raises BusClosed instead of hanging; so does a later publish."""
    async with make_bus() as bus:
        await bus.subscribe("silent")
        errors = []
        asked = anyio.Event()

        async def ask():
            asked.set()
            try:
                await bus.request("silent", PerceiveRequest(image=REF), timeout=30)
            except BusClosed as exc:
                errors.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                await asked.wait()
                await anyio.wait_all_tasks_blocked()
                await bus.close()
        assert len(errors) == 1
        with pytest.raises(BusClosed):
            await bus.publish("s", progress(1))


async def test_nack_redelivers_until_dead_letter(make_bus):
    """A nacked message comes back with a higher attempt count, then is dead-lettered."""
    async with make_bus(max_deliveries=3) as bus:
        sub = await bus.subscribe("s", group="g")
        await bus.publish("s", progress(1))
        attempts = []
        with anyio.fail_after(5):
            async for d in sub:
                attempts.append(d.attempt)
                await d.nack()
                if d.attempt == 3:
                    break
        assert attempts == [1, 2, 3]
        assert bus.dead_letters == 1


async def test_nack_without_requeue_drops_the_message(make_bus):
    """nack(requeue=False) settles the message for good: the next delivery is the next message."""
    async with make_bus() as bus:
        sub = await bus.subscribe("s", group="g")
        await bus.publish("s", progress(1))
        await bus.publish("s", progress(2))
        with anyio.fail_after(5):
            async for d in sub:
                await d.nack(requeue=False)
                break
        (d,) = await take(sub, 1)
        assert d.message.job == "j2" and d.attempt == 1
        assert bus.dead_letters == 0


async def test_group_member_closing_hands_buffered_work_to_peers(make_bus):
    """Messages held by a group member that goes away are delivered to another member."""
    async with make_bus() as bus:
        first = await bus.subscribe("s", group="g", max_pending=8)
        for i in range(3):
            await bus.publish("s", progress(i))
        second = await bus.subscribe("s", group="g", max_pending=8)
        await first.close()
        got = await take(second, 3)
        assert sorted(d.message.job for d in got) == ["j0", "j1", "j2"]


async def test_malformed_bytes_are_rejected_and_counted_not_fatal(make_bus):
    """A subscriber skips undecodable bytes, counts and logs them, and keeps receiving."""
    async with make_bus() as bus:
        sub = await bus.subscribe("s")
        with capture_logs() as logs:
            await bus.publish_raw("s", b"\x93\x01\x02")
            await bus.publish("s", progress(7))
            (d,) = await take(sub, 1)
        assert d.message.job == "j7"
        assert sub.rejected == 1
        assert any(e["event"] == "bus.rejected" for e in logs)


async def test_a_newer_schema_version_is_rejected_not_fatal(make_bus):
    """A message of a known kind at a version newer than this process reads is rejected and counted."""
    envelope = msgpack.unpackb(encode(progress(1)))
    envelope["v"] = 99
    async with make_bus() as bus:
        sub = await bus.subscribe("s", group="g")
        with capture_logs() as logs:
            await bus.publish_raw("s", msgpack.packb(envelope))
            await bus.publish("s", progress(2))
            (d,) = await take(sub, 1)
        assert d.message.job == "j2"
        assert sub.rejected == 1
        assert any(e["event"] == "bus.rejected" and "version 99" in e["error"] for e in logs)


async def test_subscription_iteration_ends_when_the_bus_closes(make_bus):
    """A consumer waiting for messages finishes its loop when the bus closes (nothing hangs)."""
    async with make_bus() as bus:
        sub = await bus.subscribe("s", group="g")
        ended = anyio.Event()

        async def consume():
            async for _ in sub:
                pass
            ended.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await anyio.wait_all_tasks_blocked()
                await bus.close()
                await ended.wait()
