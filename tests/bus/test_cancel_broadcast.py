"""A job's cancellation reaches every Executor, not only the one its queue group picked.

The execute subject is a queue group: of two workers' executors one gets a ``JobCancel``. It
passes the cancel on to ``CANCEL_BROADCAST``, which every executor reads, so steps of the job
queued on the other worker are dropped too. Run on both backends; on Redis the two executors sit
on two bus connections, as on two machines.
"""

from __future__ import annotations

import contextlib

import anyio

from agentir.actors.executor import CANCEL_BROADCAST, Executor
from agentir.bus.blobs import MemoryBlobStore
from agentir.bus.messages import JobCancel, Subjects


async def wait_cancelled(executor: Executor, job: str) -> None:
    while not executor.scheduler.is_cancelled(job):
        await anyio.sleep(0.01)


async def test_a_cancel_on_the_execute_group_reaches_every_executor(make_bus, backend):
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(make_bus())
        second = first  # in memory: two executors on one bus
        if backend == "redis":  # a second connection with the same prefix is a second worker
            from agentir.bus.redis import RedisBus

            second = await stack.enter_async_context(RedisBus(first.url, prefix=first.prefix, visibility_timeout=1.0))
        blobs = MemoryBlobStore()
        executors = [Executor(first, blobs), Executor(second, blobs)]
        broadcast = await first.subscribe(CANCEL_BROADCAST, max_pending=8)
        async with anyio.create_task_group() as tg:
            for executor in executors:
                await tg.start(executor.run)
            with anyio.fail_after(10):
                await first.publish(Subjects.EXECUTE, JobCancel(job="gone", reason="client gave up"), correlation_id="gone")
                for executor in executors:
                    await wait_cancelled(executor, "gone")
                passed = await anext(aiter(broadcast))
            assert isinstance(passed.message, JobCancel) and passed.message.job == "gone"
            assert passed.envelope.correlation_id == "gone"
            # Exactly one executor got the group's copy: one broadcast, no echo of the broadcast.
            with anyio.move_on_after(0.3):
                extra = await anext(aiter(broadcast))
                raise AssertionError(f"the cancel was broadcast twice: {extra.message}")
            for executor in executors:
                assert not executor.scheduler.is_cancelled("kept")
            tg.cancel_scope.cancel()
