"""In-memory bus specifics; the protocol itself is pinned per backend in test_conformance.py."""

from __future__ import annotations

from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import JobProgress


def progress(i: int) -> JobProgress:
    return JobProgress(job=f"j{i}", stage="planned")


async def test_queue_group_members_share_the_work_as_published():
    """Routing happens at publish time: a group's messages are spread over its members' mailboxes."""
    async with InMemoryBus() as bus:
        m1 = await bus.subscribe("s", group="g", max_pending=16)
        m2 = await bus.subscribe("s", group="g", max_pending=16)
        for i in range(10):
            await bus.publish("s", progress(i))
        got1 = m1.receive.statistics().current_buffer_used
        got2 = m2.receive.statistics().current_buffer_used
        assert got1 + got2 == 10 and got1 > 0 and got2 > 0


async def test_publishing_to_an_unserved_subject_delivers_nothing_later():
    """Nothing is kept for subscribers that do not exist yet: the in-memory bus has no durable queues."""
    async with InMemoryBus() as bus:
        await bus.publish("s", progress(1))
        sub = await bus.subscribe("s", group="g")
        assert not bus.has_subscribers("other") and bus.has_subscribers("s")
        assert sub.receive.statistics().current_buffer_used == 0
