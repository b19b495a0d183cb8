"""A gateway stop is bounded: a task that ignores its cancellation is named, not waited for.

Unit test of ``gateway.runtime._cancel_all`` alone; the whole stop on SIGTERM is tested
end to end in tests/test_e2e.py and tests/test_feeds_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from structlog.testing import capture_logs

from gateway.runtime import _cancel_all


async def _stubborn() -> None:
    """Swallows its first cancellation, as a library's ``wait_for`` on 3.11 can."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    await asyncio.sleep(60)


async def _polite() -> None:
    await asyncio.sleep(60)


def test_a_task_that_swallows_its_cancel_is_named_and_the_stop_goes_on() -> None:
    async def main() -> tuple[float, list[asyncio.Task], list[dict]]:
        tasks = [asyncio.create_task(_stubborn(), name="feed"),
                 asyncio.create_task(_polite(), name="influx")]
        await asyncio.sleep(0)
        start = time.monotonic()
        with capture_logs() as logs:
            await _cancel_all(tasks, grace_s=0.3)
        took = time.monotonic() - start
        tasks[0].cancel()  # the second cancel lands: leave nothing behind
        await asyncio.gather(*tasks, return_exceptions=True)
        return took, tasks, logs

    took, tasks, logs = asyncio.run(main())
    assert 0.25 <= took < 2.0
    stuck = [e for e in logs if e["event"] == "task did not stop"]
    assert [e["task"] for e in stuck] == ["feed"]
    assert "_stubborn" in stuck[0]["where"] and "test_stop_bounded.py" in stuck[0]["where"]
    assert tasks[1].cancelled()


def test_tasks_that_stop_return_at_once_and_log_nothing() -> None:
    async def main() -> tuple[float, list[dict]]:
        tasks = [asyncio.create_task(_polite(), name=f"t{i}") for i in range(3)]
        await asyncio.sleep(0)
        start = time.monotonic()
        with capture_logs() as logs:
            await _cancel_all(tasks, grace_s=5.0)
        return time.monotonic() - start, logs

    took, logs = asyncio.run(main())
    assert took < 1.0
    assert not [e for e in logs if e["event"] == "task did not stop"]
