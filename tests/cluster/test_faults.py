"""Faults with real processes on loopback: a worker killed or stopped mid-step, Redis restarted,
a poisoned message, a missing blob. Every job ends exactly once, none is lost."""

from __future__ import annotations

import signal

import anyio
import pytest
from conftest import holder_of, quiet, small_image, wait_logged
from fault_tools import one_step

from agentir.bus.blobs import BlobRef
from agentir.bus.messages import JobSubmitted, Subjects
from agentir.bus.redis import RedisBus
from agentir.pipeline import RestoreError, Restorer


async def test_a_worker_killed_mid_step_loses_no_job(cluster, outcomes):
    """kill -9 of the worker running a step: another worker takes the step over and the job is done exactly once."""
    cluster.start_workers(2, sleep=3.0)
    async with Restorer(bus=cluster.url, options=one_step("test_sleepy"), job_timeout=90) as front:
        results = {}

        async def run() -> None:
            results["r"] = await front.restore(small_image(), job="kill-1")

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            pid, entry = await holder_of(cluster.url, Subjects.EXECUTE, "executor")
            cluster.signal(pid, signal.SIGKILL)
            cluster.workers[pid].wait(10)
        survivor = [p for p in cluster.workers if p != pid]
        taken = await wait_logged(cluster, "bus.redelivered", survivor)
        assert any(e["entry"] == entry and e["attempt"] == 2 for e in taken)
        assert results["r"].image.shape == small_image().shape
        await quiet(cluster.url)
    assert outcomes.finished["kill-1"] == 1 and outcomes.failed["kill-1"] == 0


async def test_a_stopped_worker_resumed_late_adds_no_duplicate(cluster, outcomes):
    """SIGSTOP past the visibility timeout, then SIGCONT: the step is redone elsewhere, the late copy is ignored."""
    cluster.start_workers(2, sleep=3.0)
    async with Restorer(bus=cluster.url, options=one_step("test_sleepy"), job_timeout=90) as front:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: front.restore(small_image(), job="stop-1"))
            pid, _entry = await holder_of(cluster.url, Subjects.EXECUTE, "executor")
            cluster.signal(pid, signal.SIGSTOP)
            survivor = [p for p in cluster.workers if p != pid]
            await wait_logged(cluster, "bus.redelivered", survivor)
            cluster.signal(pid, signal.SIGCONT)
        # The resumed worker finds its entry taken over and finishes its step anyway. Whichever of
        # the two results reaches a Planner second is ignored: as a duplicate of a decision made
        # (duplicate_ignored), or by losing the compare-and-set to the first (lost_race).
        await wait_logged(cluster, "bus.delivery_taken_over", [pid])
        ignored = await wait_logged(cluster, ("planner.duplicate_ignored", "planner.lost_race"))
        assert any(e["job"] == "stop-1" for e in ignored)
        await quiet(cluster.url)
    assert outcomes.finished["stop-1"] == 1 and outcomes.failed["stop-1"] == 0


async def test_jobs_accepted_before_a_redis_restart_still_finish(cluster, outcomes):
    """Redis restarted (append-only persistence) while jobs run: every accepted job finishes, once."""
    cluster.start_workers(1, sleep=1.0)
    jobs = [f"restart-{i}" for i in range(3)]
    async with Restorer(bus=cluster.url, options=one_step("test_sleepy"), job_timeout=90) as front:
        done: list[str] = []

        async def run(job: str) -> None:
            done.append((await front.restore(small_image(), job=job)).job)

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(run, job)
            await holder_of(cluster.url, Subjects.EXECUTE, "executor")
            await anyio.to_thread.run_sync(cluster.redis.restart)
        assert sorted(done) == jobs
        await quiet(cluster.url)
    assert all(outcomes.finished[j] == 1 for j in jobs), outcomes.finished


async def test_a_poisoned_message_is_dead_lettered_and_fails_only_its_job(cluster, outcomes):
    """A step that kills every worker taking it is dead-lettered after max_deliveries; its job fails saying so; the next job runs."""
    cluster.start_workers(2, "--max-deliveries", "1")
    async with Restorer(bus=cluster.url, job_timeout=90) as front:
        with pytest.raises(RestoreError) as info:
            await front.restore(small_image(), options=one_step("test_crash"), job="poison-1")
        assert "dead-lettered after 2 deliveries" in info.value.error and "step.execute" in info.value.error
        ok = await front.restore(small_image(), options=one_step("test_sleepy"), job="after-poison")
        assert ok.job == "after-poison"
        async with RedisBus(cluster.url) as bus:
            letters = await bus.dead_lettered()
        assert [(d.subject, d.attempts) for d in letters] == [(Subjects.EXECUTE, 2)]
        # A blob that is not in the store: the step fails with a clear error, nothing hangs.
        missing = BlobRef(sha256="ab" * 32, shape=(8, 8, 3), dtype="uint8")
        async with RedisBus(cluster.url) as bus:
            await bus.publish(Subjects.SUBMIT, JobSubmitted(job="no-blob", image=missing), correlation_id="no-blob")
            with anyio.fail_after(30):
                while not outcomes.failed["no-blob"]:
                    await anyio.sleep(0.05)
    assert outcomes.failed["poison-1"] == 1 and outcomes.finished["poison-1"] == 0
    assert outcomes.finished["after-poison"] == 1
