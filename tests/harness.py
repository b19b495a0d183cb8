"""End-to-end test harness: `firegrid run` as its own process, and an MQTT probe.

The gateway runs exactly as an operator starts it (``python -m gateway.cli run``),
so these tests see what a new user sees: exit codes, stderr lines, MQTT traffic and
InfluxDB rows. The probe is a plain paho client on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from firmware_sim.lab import influx_rows

TEST_SITE = """
site: test-site
sla: {locate_s: 10, confirm_s: 3, in_place_s: 8}
zones:
  - {id: a-1f, building: a, floor: 1, polygon: [[0,0],[20,0],[20,10],[0,10]], worker: w-1}
  - {id: a-1f-kitchen, building: a, floor: 1, polygon: [[20,0],[30,0],[30,10],[20,10]],
     worker: w-1, ask_human: true}
  - {id: b-1f, building: b, floor: 1, polygon: [[100,0],[120,0],[120,10],[100,10]], worker: w-2}
devices:
  - {id: smk-a1, kind: smoke, floor: 1, x: 5, y: 5}
  - {id: smk-a2, kind: smoke, floor: 1, x: 12, y: 5}
  - {id: smk-k1, kind: smoke, floor: 1, x: 25, y: 5}
  - {id: mcp-a, kind: manual, floor: 1, x: 1, y: 1}
  - {id: smk-b1, kind: smoke, floor: 1, x: 105, y: 5}
  - {id: mcp-b, kind: manual, floor: 1, x: 119, y: 1}
  - {id: tmp-b, kind: temperature, floor: 1, x: 110, y: 9}
responders:
  - {id: w-1, tier: 0}
  - {id: w-2, tier: 0}
  - {id: guard-1, tier: 1}
  - {id: squad-1, tier: 2}
tiers:
  - {tier: 1, ack_timeout_s: 2}
  - {tier: 2, ack_timeout_s: 2}
"""


def write_site(tmp: Path, text: str = TEST_SITE) -> Path:
    path = tmp / "site.yaml"
    path.write_text(text)
    return path


@dataclass
class Msg:
    t: float
    topic: str
    payload: bytes

    def json(self) -> Any:
        return orjson.loads(self.payload)


class Probe:
    """Records every message under a prefix; publishes as devices and people would."""

    def __init__(self, port: int, prefix: str = "firegrid/test-site/"):
        self.prefix = prefix
        self.messages: list[Msg] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"probe-{os.getpid()}-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(prefix + "#", qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(Msg(time.time(), msg.topic[len(self.prefix):], msg.payload))

    def pub(self, topic: str, payload: Any, *, retain: bool = False) -> float:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        info = self.client.publish(self.prefix + topic, data, qos=1, retain=retain)
        info.wait_for_publish(5)
        return time.time()

    def signal(self, device: str, state: str = "alarm", **extra: Any) -> float:
        return self.pub(f"signal/{device}", {"state": state, **extra})

    def find(self, pred: Callable[[Msg], bool]) -> list[Msg]:
        with self.lock:
            return [m for m in self.messages if pred(m)]

    def wait(self, pred: Callable[[Msg], bool], timeout: float = 10.0) -> Msg:
        end = time.time() + timeout
        while time.time() < end:
            found = self.find(pred)
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no matching message within {timeout}s; "
                             f"saw {[m.topic for m in self.messages][-30:]}")

    def incident_state(self, incident: str) -> dict[str, Any]:
        msgs = self.find(lambda m: m.topic == f"incident/{incident}" and m.payload)
        return msgs[-1].json() if msgs else {}

    def first_incident(self, device: str, timeout: float = 10.0) -> str:
        m = self.wait(lambda m: m.topic.startswith("incident/") and m.topic.count("/") == 1
                      and m.payload and device in m.json().get("devices", []), timeout)
        return m.json()["id"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class GatewayProc:
    """``firegrid run`` in a subprocess; stderr captured to a file for assertions."""

    def __init__(self, config: Path, mqtt_url: str, influx_url: str, journal: Path,
                 log: Path, extra_env: dict[str, str] | None = None):
        self.args = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
                     "--mqtt", mqtt_url, "--influx", influx_url, "--journal", str(journal)]
        self.log = log
        self.env = {**os.environ, **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> GatewayProc:
        with self.log.open("ab") as fh:
            fh.write(b"--- start\n")
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        fh.close()
        if wait:
            self.wait_log("mqtt connected", count=self.log_text().count("mqtt connected") + 1)
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, needle: str, timeout: float = 15.0, count: int = 1) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.log_text().count(needle) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in gateway log:\n{self.log_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the gateway logs where each task waits
            time.sleep(1.0)
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("gateway did not stop on SIGTERM within 15 s; its log:\n"
                                 + self.log_text()[-6000:]) from None


def coincidence(probe: Probe) -> dict[str, Any]:
    """smk-a1 then smk-a2 in cell a-1f of TEST_SITE: confirmed by coincidence, guard-1
    paged; returns that page."""
    probe.signal("smk-a1", kind="smoke")
    time.sleep(0.5)
    probe.signal("smk-a2", kind="smoke")
    return probe.wait(lambda m: m.topic == "page/guard-1").json()


def influx_steps(influx_base: str, db: str, incident: str | None = None) -> list[dict[str, Any]]:
    """Every incident_step point as a dict (time in ns), straight from InfluxDB's /query.

    InfluxDB 1.x stores each field of a point apart, so a query that lands while a point
    is written can see some of its fields and not others (a flaky None). The answer is
    taken once two reads in a row agree (at most five tries).
    """
    q = "SELECT * FROM incident_step"
    if incident:
        q += f" WHERE \"incident\" = '{incident}'"
    rows = influx_rows(influx_base, db, q, timeout=10)
    for _ in range(4):
        again = influx_rows(influx_base, db, q, timeout=10)
        if again == rows:
            break
        rows = again
    return rows


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.asynccontextmanager
async def running(runner: Any, *, must_be_cancelled: bool = False
                  ) -> AsyncIterator[asyncio.Task[None]]:
    """``runner.run()`` (a feed or poller that runs until cancelled) as a task for a test."""
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:  # a swallowed cancellation: say so now, not at the suite's timeout
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
            raise AssertionError("run() went on after it was cancelled (a library's wait_for "
                                 "swallowed the cancellation?)")
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if must_be_cancelled:
            assert task.cancelled(), "run() ends only by cancellation"


def gb_exchange(conn: socket.socket, frame: bytes, timeout: float = 1.0) -> bytes:
    """Send a GB/T 26875.3 frame and read the centre's 30-byte 确认 or 否认 (or less on EOF)."""
    conn.sendall(frame)
    conn.settimeout(timeout)
    reply = b""
    while len(reply) < 30:
        chunk = conn.recv(64)
        if not chunk:
            break
        reply += chunk
    return reply
