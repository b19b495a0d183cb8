"""A stuck gateway says where: a bounded stop, and ``kill -USR1``.

``gateway.runtime._cancel_all`` alone; the whole stop on SIGTERM is tested end to end in
tests/test_e2e.py and tests/test_feeds_e2e.py. And ``kill -USR1`` against a running
gateway, which names what each task waits for without stopping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

from structlog.testing import capture_logs

from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.runtime import _cancel_all
from tests.harness import GatewayProc, Probe, write_site


async def _stubborn() -> None:
    """Swallows its first cancellation, as a library's ``wait_for`` on 3.11 can; the second
    one ends it."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    await asyncio.sleep(60)


async def _polite() -> None:
    await asyncio.sleep(60)


def test_a_task_that_swallows_its_cancel_is_named_and_cancelled_again() -> None:
    async def main() -> tuple[float, list[asyncio.Task], list[dict]]:
        tasks = [asyncio.create_task(_stubborn(), name="feed"),
                 asyncio.create_task(_polite(), name="influx")]
        await asyncio.sleep(0)
        start = time.monotonic()
        with capture_logs() as logs:
            await _cancel_all(tasks, grace_s=0.3)
        took = time.monotonic() - start
        # checked here: asyncio.run would cancel whatever is left on its way out
        assert tasks[0].cancelled(), "the second cancel ends it: nothing is left running"
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


def test_kill_usr1_logs_where_each_task_waits_and_the_gateway_goes_on(
        tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB) -> None:
    gw = GatewayProc(write_site(tmp_path), mosquitto.url, influxdb.url("usr1"),
                     tmp_path / "journal.sqlite3", tmp_path / "gateway.log")
    probe = Probe(mosquitto.port)
    try:
        gw.start()
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGUSR1)
        gw.wait_log("task='engine'")
        lines = [ln for ln in gw.log_text().splitlines() if "event='task' " in ln]
        names = {ln.split("task='")[1].split("'")[0] for ln in lines}
        assert {"mqtt", "engine", "influx", "health"} <= names, lines
        (engine,) = [ln for ln in lines if "task='engine'" in ln]
        assert "where='runtime.py:_process_loop:" in engine, engine
        probe.signal("mcp-b", kind="manual")  # still serving
        probe.wait(lambda m: m.topic == "page/guard-1", timeout=10)
        assert gw.stop() == 0
    finally:
        probe.close()
        gw.stop()
