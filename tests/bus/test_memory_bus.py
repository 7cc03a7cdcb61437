"""The in-memory bus: delivery, queue groups, backpressure, request/reply, acknowledgements."""

from __future__ import annotations

import anyio
import pytest
from structlog.testing import capture_logs

from bus.blobs import BlobRef
from bus.errors import BusClosed, BusFull, NoResponders, RemoteError, RequestTimeout
from bus.memory import InMemoryBus
from bus.messages import ErrorReply, JobProgress, Perceived, PerceiveRequest

REF = BlobRef(sha256="cd" * 32, shape=(2, 2, 3), dtype="uint8")


def progress(i: int) -> JobProgress:
    return JobProgress(job=f"j{i}", stage="planned")


async def take(sub, n: int) -> list:
    out = []
    with anyio.fail_after(2):
        async for d in sub:
            out.append(d)
            await d.ack()
            if len(out) == n:
                break
    return out


async def test_every_plain_subscriber_gets_a_decoded_copy():
    """Without a group, each subscriber receives every message, as an independent decoded object."""
    async with InMemoryBus() as bus:
        a, b = await bus.subscribe("s"), await bus.subscribe("s")
        await bus.publish("s", progress(1), correlation_id="c")
        (da,), (db,) = await take(a, 1), await take(b, 1)
        assert da.message == db.message == progress(1)
        assert da.message is not db.message
        assert da.envelope.correlation_id == "c"


async def test_queue_group_members_share_the_work():
    """Members of one group split the messages between them; each message goes to exactly one."""
    async with InMemoryBus() as bus:
        m1 = await bus.subscribe("s", group="g", max_pending=16)
        m2 = await bus.subscribe("s", group="g", max_pending=16)
        for i in range(10):
            await bus.publish("s", progress(i))
        got1 = m1.receive.statistics().current_buffer_used
        got2 = m2.receive.statistics().current_buffer_used
        assert got1 + got2 == 10 and got1 > 0 and got2 > 0


async def test_publish_waits_for_a_full_mailbox_then_raises_busy():
    """A full bounded mailbox blocks the publisher, which gives up with BusFull after the timeout."""
    async with InMemoryBus(publish_timeout=0.05) as bus:
        sub = await bus.subscribe("s", max_pending=2)
        await bus.publish("s", progress(1))
        await bus.publish("s", progress(2))
        with pytest.raises(BusFull) as info:
            await bus.publish("s", progress(3))
        assert info.value.subject == "s"
        got = await take(sub, 2)
        assert [d.message.job for d in got] == ["j1", "j2"]


async def test_backpressure_releases_when_the_consumer_catches_up():
    """A blocked publisher proceeds as soon as the subscriber drains its mailbox."""
    async with InMemoryBus(publish_timeout=5) as bus:
        sub = await bus.subscribe("s", max_pending=1)
        received = []

        async def consume():
            received.extend(await take(sub, 5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for i in range(5):
                await bus.publish("s", progress(i))
        assert [d.message.job for d in received] == [f"j{i}" for i in range(5)]


async def test_request_reply_and_remote_errors():
    """request() returns the reply; an ErrorReply becomes RemoteError with the responder's detail."""
    async with InMemoryBus() as bus:
        sub = await bus.subscribe("svc")

        async def serve():
            async for d in sub:
                if d.message.image.shape == (2, 2, 3):
                    await d.reply(Perceived(job="", image=d.message.image, levels={}, scores={}))
                else:
                    await d.reply(ErrorReply(error_type="ValueError", detail="bad image"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            with anyio.fail_after(2):
                reply = await bus.request("svc", PerceiveRequest(image=REF), timeout=1)
            assert isinstance(reply.message, Perceived) and reply.correlation_id
            with pytest.raises(RemoteError, match="bad image"):
                await bus.request("svc", PerceiveRequest(image=BlobRef(sha256="0" * 64, shape=(1,), dtype="uint8")), timeout=1)
            tg.cancel_scope.cancel()


async def test_request_timeout_and_no_responders():
    """A request nobody answers times out; one to an unserved subject fails at once."""
    async with InMemoryBus() as bus:
        with pytest.raises(NoResponders):
            await bus.request("nobody", PerceiveRequest(image=REF), timeout=1)
        await bus.subscribe("silent")
        with pytest.raises(RequestTimeout):
            await bus.request("silent", PerceiveRequest(image=REF), timeout=0.05)


async def test_closing_the_bus_fails_pending_requests():
    """A request in flight when the bus closes raises BusClosed instead of hanging."""
    bus = InMemoryBus()
    await bus.subscribe("silent")
    errors = []

    async def ask():
        try:
            await bus.request("silent", PerceiveRequest(image=REF), timeout=30)
        except BusClosed as exc:
            errors.append(exc)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            await bus.close()
    assert len(errors) == 1
    with pytest.raises(BusClosed):
        await bus.publish("s", progress(1))


async def test_nack_redelivers_until_dead_letter():
    """A nacked message comes back with a higher attempt count, then is dead-lettered."""
    async with InMemoryBus(max_deliveries=3) as bus:
        sub = await bus.subscribe("s", group="g")
        await bus.publish("s", progress(1))
        attempts = []
        with anyio.fail_after(2):
            async for d in sub:
                attempts.append(d.attempt)
                await d.nack()
                if d.attempt == 3:
                    break
        assert attempts == [1, 2, 3]
        assert bus.dead_letters == 1


async def test_group_member_closing_hands_buffered_work_to_peers():
    """Messages buffered in a group member that goes away are delivered to another member."""
    async with InMemoryBus() as bus:
        first = await bus.subscribe("s", group="g", max_pending=8)
        for i in range(3):
            await bus.publish("s", progress(i))
        second = await bus.subscribe("s", group="g", max_pending=8)
        await first.close()
        got = await take(second, 3)
        assert sorted(d.message.job for d in got) == ["j0", "j1", "j2"]


async def test_malformed_bytes_are_rejected_and_counted_not_fatal():
    """A subscriber skips undecodable bytes, counts and logs them, and keeps receiving."""
    async with InMemoryBus() as bus:
        sub = await bus.subscribe("s")
        with capture_logs() as logs:
            await bus.publish_raw("s", b"\x93\x01\x02")
            await bus.publish("s", progress(7))
            (d,) = await take(sub, 1)
        assert d.message.job == "j7"
        assert sub.rejected == 1
        assert any(e["event"] == "bus.rejected" for e in logs)
