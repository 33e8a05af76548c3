"""TaskGroup: background tasks are held, their failures logged, all cancelled on close."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from petcd.server.tasks import TaskGroup

log = logging.getLogger("test.tasks")


def test_a_spawned_task_is_held_until_it_ends() -> None:
    async def main() -> list[int]:
        group = TaskGroup("bg", log)
        gate = asyncio.Event()
        out: list[int] = []

        async def job() -> None:
            await gate.wait()
            out.append(1)

        group.spawn(job(), "job")  # the caller keeps no reference
        gc.collect()
        assert len(group) == 1
        gate.set()
        await group.wait()
        assert len(group) == 0
        return out

    assert asyncio.run(main()) == [1]


def test_a_failed_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        group = TaskGroup("bg", log)

        async def boom() -> None:
            raise RuntimeError("kaput")

        group.spawn(boom(), "boom")
        await group.wait()

    with caplog.at_level(logging.ERROR, logger="test.tasks"):
        asyncio.run(main())
    assert any("'boom' failed" in r.getMessage() and "kaput" in r.getMessage() for r in caplog.records)


def test_close_cancels_everything_and_later_spawns(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[bool, bool]:
        group = TaskGroup("bg", log)
        t = group.spawn(asyncio.sleep(3600), "sleeper")
        await asyncio.sleep(0)
        await group.close()
        late = group.spawn(asyncio.sleep(3600), "late")
        await asyncio.sleep(0)
        return t.cancelled(), late.cancelled()

    with caplog.at_level(logging.ERROR, logger="test.tasks"):
        assert asyncio.run(main()) == (True, True)
    assert not caplog.records  # a cancellation is not a failure


def test_wait_waits_only_for_its_own_tasks() -> None:
    async def main() -> float:
        jobs, others = TaskGroup("compaction", log), TaskGroup("bg", log)
        others.spawn(asyncio.sleep(3600), "slow-other")
        jobs.spawn(asyncio.sleep(0.01), "quick-job")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(jobs.wait(), 30)
        took = loop.time() - t0
        await others.close()
        return took

    assert asyncio.run(main()) < 30
