"""The gateway's MQTT link reads in bursts and hands over every message, in order, acked.

A backlog queued for the gateway's persistent session while it was down (Mosquitto's
own ``mosquitto_pub``, QoS 1) is read by ``MqttLink`` against a real broker: every
message arrives once, in the order published, in far fewer wake-ups than messages, and
once acknowledged the broker does not deliver it again.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

import gateway.mqtt_link as link_mod
from firmware_sim.lab import Mosquitto
from gateway.mqtt_link import AckToken, MqttLink, MqttTarget

N = 900  # below Mosquitto's default max_queued_messages (1000) of the lab broker
ROOT = Path(__file__).resolve().parents[1]


def test_the_override_matches_the_pinned_aiomqtt() -> None:
    """_BurstClient replaces a private aiomqtt method: it must exist with that signature."""
    pinned = re.search(r'"aiomqtt==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned and aiomqtt.__version__ == pinned.group(1), aiomqtt.__version__
    ours = inspect.signature(link_mod._BurstClient._on_socket_open)
    theirs = inspect.signature(aiomqtt.Client._on_socket_open)
    assert list(ours.parameters) == list(theirs.parameters)
    assert "loop_read" in inspect.getsource(aiomqtt.Client._on_socket_open)


async def _read(url: str, want: int, stop: Any = None) -> list[str]:
    got: list[str] = []
    done = asyncio.Event()
    link: MqttLink

    def handler(topic: str, payload: bytes, _ns: int, token: AckToken | None) -> None:
        got.append(payload.decode())
        link.ack(token)
        if len(got) >= want:
            done.set()

    async def nothing() -> None:
        return None

    link = MqttLink(MqttTarget.parse(url), "burst", handler, nothing, time.time_ns)
    link.burst_stop = stop
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(done.wait(), 30 if want else 1.5)
    except TimeoutError:
        if want:
            raise
    await asyncio.sleep(0.3)  # the PUBACKs leave
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return got


def test_a_backlog_is_read_in_bursts_in_order_once(tmp_path: Path, mosquitto: Mosquitto,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_more = link_mod._more

    def counting(sock: object, before: object = None) -> bool:
        counting.calls += 1  # type: ignore[attr-defined]
        more = real_more(sock, before)
        counting.ends += 0 if more else 1  # type: ignore[attr-defined]
        return more

    counting.calls = counting.ends = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(link_mod, "_more", counting)
    # the gateway's session exists (subscribed) and is then down
    asyncio.run(_read(mosquitto.url, 0))
    lines = "".join(f'{{"state":"clear","value":{i}}}\n' for i in range(N))
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                    "-l", "-t", "firegrid/burst/signal/tmp-1"], input=lines.encode(),
                   check=True, timeout=60)
    counting.calls = counting.ends = 0  # type: ignore[attr-defined]
    got = asyncio.run(_read(mosquitto.url, N))
    assert got == [f'{{"state":"clear","value":{i}}}' for i in range(N)], "all, in order"
    # asked once per packet read; each wake-up that found the socket empty ends a burst:
    # far fewer wake-ups than messages
    calls, ends = counting.calls, counting.ends  # type: ignore[attr-defined]
    assert calls >= N and ends < N / 4, (calls, ends, N)
    # acknowledged: the same session gets nothing again
    again = asyncio.run(_read(mosquitto.url, 0))
    assert again == []


def test_a_bulk_burst_gives_way_when_the_alarm_lane_has_bytes() -> None:
    """The bulk lane reads on while its socket has data, but not once the alarm lane's
    socket has some: the event loop then turns to the alarm lane (docs/faults.md)."""
    bulk_r, bulk_w = socket.socketpair()
    lane_r, lane_w = socket.socketpair()
    try:
        assert not link_mod._more(bulk_r, lane_r)  # nothing to read anywhere
        bulk_w.sendall(b"x" * 100)
        assert link_mod._more(bulk_r, lane_r) and link_mod._more(bulk_r)
        lane_w.sendall(b"\x30")  # an alarm lane packet arrives mid-burst
        assert not link_mod._more(bulk_r, lane_r), "the burst must end for the alarm lane"
        assert link_mod._more(bulk_r), "without a lane to give way to, it reads on"
        assert not link_mod._more(None, lane_r)
    finally:
        for s in (bulk_r, bulk_w, lane_r, lane_w):
            s.close()


def test_the_bulk_lane_watches_the_alarm_lanes_socket(mosquitto: Mosquitto) -> None:
    """Wired as the gateway runs them: the bulk lane's bursts ask about the alarm lane's
    live socket (after a reconnect too, since it is looked up each time); the alarm lane
    gives way to nobody."""

    async def run() -> None:
        target = MqttTarget.parse(mosquitto.url)
        connected = asyncio.Event()

        async def on_connect() -> None:
            connected.set()

        async def nothing() -> None:
            return None

        alarm = MqttLink(target, "lanes", lambda *a: None, on_connect, time.time_ns,
                         "lanes-gw", subscriptions=["signal/smk-1"])
        bulk = MqttLink(target, "lanes", lambda *a: None, nothing, time.time_ns,
                        "lanes-gw-bulk", subscriptions=["signal/#"], lane=1,
                        announce=False, peer=alarm)
        alarm.peer = bulk
        tasks = [asyncio.create_task(link.run()) for link in (alarm, bulk)]
        try:
            await asyncio.wait_for(connected.wait(), 10)
            for _ in range(100):
                if bulk.client is not None:
                    break
                await asyncio.sleep(0.05)
            assert bulk.client is not None and alarm.client is not None
            live = alarm.client._client.socket()
            assert live is not None and bulk.client.yield_to() is live
            assert alarm.client.yield_to is None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def test_urgent_input_ends_a_burst_and_nothing_is_lost(mosquitto: Mosquitto,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's burst_stop (urgent input waiting) ends each burst after the packet
    that brought it; the rest is read on the next wake-ups, all of it, in order."""
    asked: list[int] = []
    monkeypatch.setattr(link_mod, "_more", lambda *a: asked.append(1) or True)
    asyncio.run(_read(mosquitto.url, 0))  # the session exists, then is down
    n = 200
    lines = "".join(f'{{"state":"alarm","value":{i}}}\n' for i in range(n))
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
                    "-l", "-t", "firegrid/burst/signal/smk-1"], input=lines.encode(),
                   check=True, timeout=60)
    stops: list[int] = []
    asked.clear()
    got = asyncio.run(_read(mosquitto.url, n, stop=lambda: stops.append(1) or True))
    assert got == [f'{{"state":"alarm","value":{i}}}' for i in range(n)], "all, in order"
    assert len(stops) >= n and not asked, "each burst ended before asking for more"


def test_the_gateway_wires_both_lanes_to_its_urgent_queue(tmp_path: Path) -> None:
    """``firegrid run``'s Gateway: each lane's bursts end while urgent input waits, and
    the bulk lane watches the alarm lane (nothing connects here)."""
    from gateway.config import load_site
    from gateway.influx import InfluxTarget
    from gateway.runtime import Gateway

    site = load_site(ROOT / "configs" / "taibai-demo.yaml")
    gw = Gateway(site, MqttTarget.parse("mqtt://127.0.0.1:1"),
                 InfluxTarget.parse("http://127.0.0.1:1/firegrid"), tmp_path / "j.sqlite3")
    try:
        assert gw.bulk is not None and gw.bulk.peer is gw.mqtt
        for link in (gw.mqtt, gw.bulk):
            stop = link.burst_stop
            assert stop is not None and not stop()
            gw.urgent.append(object())  # type: ignore[arg-type]
            assert stop()
            gw.urgent.clear()
    finally:
        gw.journal.close()
