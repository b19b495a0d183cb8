"""The alarm lane: an alarm never waits in the broker behind a backlog of telemetry.

The gateway reads detectors, call points and people's answers on its own persistent
session and ``signal/#`` (telemetry, unknown ids) on a second, bulk one
(docs/mqtt.md, two sessions). The broker keeps one queue per session, so an alarm
published after tens of thousands of telemetry messages is handled before them; with a
single session it came after every one of them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from firmware_sim.flood import PubFlood
from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.config import parse_site
from gateway.runtime import alarm_lane
from tests.harness import TEST_SITE, GatewayProc, Probe, write_site

SENSORS = ("tmp-b", "tmp-c", "tmp-d", "tmp-e")
SITE = TEST_SITE.replace("devices:\n", "devices:\n" + "".join(
    f"  - {{id: {s}, kind: temperature, floor: 1, x: {110 + i}, y: 8}}\n"
    for i, s in enumerate(SENSORS[1:])) + "  - {id: tmp-m, kind: temperature, floor: 1, x: 115, "
    "y: 2}\n  - {id: tmp-h, kind: temperature, floor: 1, x: 116, y: 2, alarm_at: 60}\n")
BACKLOG = 60_000  # telemetry queued for the bulk lane while the gateway is down


def test_lane_membership_follows_the_site() -> None:
    lane = alarm_lane(parse_site(SITE))
    assert {"smk-a1", "mcp-a", "smk-b1"} <= lane
    assert not lane & {"tmp-b", "tmp-m"}, "temperature sensors are telemetry: the bulk lane"
    assert "tmp-h" in lane, "a temperature sensor that alarms (alarm_at) is a detector"
    only_telemetry = parse_site(TEST_SITE.split("devices:\n")[0] + "devices:\n"
                                "  - {id: tmp-b, kind: temperature, floor: 1, x: 110, y: 9}\n"
                                + "responders:\n" + TEST_SITE.split("responders:\n")[1])
    assert alarm_lane(only_telemetry) == frozenset()  # one session, as before


def test_an_alarm_overtakes_a_telemetry_backlog(tmp_path: Path, influxdb: InfluxDB) -> None:
    broker = Mosquitto()
    broker.start(tmp_path / "mosquitto", extra=["max_queued_messages 200000",
                                                 "max_inflight_messages 1000"])
    gw = GatewayProc(write_site(tmp_path, SITE), broker.url, influxdb.url("alarm_lane"),
                     tmp_path / "journal.sqlite3", tmp_path / "gateway.log")
    probe = None
    try:
        gw.start()
        gw.wait_log("mqtt bulk connected")  # both sessions exist on the broker now
        assert gw.stop() == 0
        # while the gateway is down: a backlog of telemetry, a marker behind it, an alarm
        msgs = [(f"firegrid/test-site/signal/{s}", b'{"state":"clear","value":21.5}')
                for s in SENSORS]
        flood = PubFlood("127.0.0.1", broker.port, msgs, rate=BACKLOG / 2, seconds=2.0,
                         tag="lane", procs=len(SENSORS))
        try:
            flood.start()
            result = flood.result(timeout=60)
        finally:
            flood.stop()
        assert result["acked"] == result["sent"] == BACKLOG, result
        probe = Probe(broker.port)
        probe.signal("tmp-m", "fault")  # after every telemetry message; never shed
        alarm_t = probe.signal("mcp-a")  # after the marker
        gw.start()
        incident = probe.wait(lambda m: m.topic.startswith("incident/") and m.payload
                              and "mcp-a" in m.json().get("devices", []), timeout=20)
        marker = probe.wait(lambda m: m.topic == "device/tmp-m"
                            and m.json()["state"] == "fault", timeout=60)
        # the alarm, published last, is handled before the gateway has read the backlog
        # ahead of it; on one session it came after every message published before it,
        # the marker included (a fault jumps the gateway's own queue as an alarm does,
        # so the two are handled in the order they were read)
        assert incident.t < marker.t, (incident.t - alarm_t, marker.t - alarm_t)
        # and the backlog is read to the end, nothing lost: each message processed or
        # shed and counted
        assert gw.stop() == 0
    finally:
        gw.stop()
        if probe is not None:
            probe.close()
        broker.stop()
    stop_line = gw.log_text().strip().splitlines()[-1]
    inputs = int(re.search(r"\binputs=(\d+)", stop_line).group(1))  # type: ignore[union-attr]
    shed = re.search(r"dropped\.shed_overload=(\d+)", stop_line)
    assert inputs + (int(shed.group(1)) if shed else 0) >= BACKLOG + 2, stop_line


def test_the_bulk_lane_takes_unknown_devices_and_skips_the_alarm_lanes_copies(
        tmp_path: Path, influxdb: InfluxDB) -> None:
    broker = Mosquitto()  # its own: no other test's session queues
    broker.start(tmp_path / "mosquitto")
    gw = GatewayProc(write_site(tmp_path, SITE), broker.url, influxdb.url("alarm_lane2"),
                     tmp_path / "journal.sqlite3", tmp_path / "gateway.log")
    probe = None
    try:
        gw.start()
        gw.wait_log("mqtt bulk connected")
        probe = Probe(broker.port)
        probe.signal("nobody-here")  # unknown: only the bulk lane subscribes signal/#
        probe.signal("smk-a1")  # comes on both lanes; handled once
        probe.first_incident("smk-a1")
        time.sleep(0.5)
    finally:
        code = gw.stop()
        if probe is not None:
            probe.close()
        broker.stop()
    assert code == 0
    stop_line = gw.log_text().strip().splitlines()[-1]
    assert "dropped.unknown_device=1" in stop_line, stop_line
    # the unknown id and smk-a1, once: the bulk lane's copy of smk-a1 is not handled
    assert re.search(r"\binputs=2\b", stop_line), stop_line


def removed_then_alarm(port: int, alarm: str, times: int = 1) -> None:
    """smk-b1 (removed from the site) ``times``, then ``alarm`` behind it on both lanes:
    once the alarm's incident is out, smk-b1's messages are in too."""
    probe = Probe(port)
    try:
        for _ in range(times):
            probe.signal("smk-b1")
        probe.signal(alarm)
        probe.first_incident(alarm)
        time.sleep(0.5)
    finally:
        probe.close()


def test_a_device_removed_from_the_site_is_unsubscribed_at_the_next_start(
        tmp_path: Path, influxdb: InfluxDB) -> None:
    """The session keeps its subscriptions across restarts; the journal remembers which
    topics the alarm lane subscribed, so a removed device's topic is dropped and its
    messages come once (on the bulk lane, as an unknown device), not twice."""
    broker = Mosquitto()
    broker.start(tmp_path / "mosquitto")
    journal = tmp_path / "journal.sqlite3"
    before = write_site(tmp_path, SITE)
    (tmp_path / "after").mkdir()
    lines = SITE.splitlines(keepends=True)
    after = write_site(tmp_path / "after", "".join(
        ln for ln in lines if "id: smk-b1," not in ln))
    assert after.read_text() != before.read_text()
    started: list[GatewayProc] = []  # stopped in the end whatever fails
    try:
        gw = GatewayProc(before, broker.url, influxdb.url("alarm_lane3"), journal,
                         tmp_path / "gateway1.log").start()
        started.append(gw)
        gw.wait_log("mqtt bulk connected")
        assert gw.stop() == 0
        gw = GatewayProc(after, broker.url, influxdb.url("alarm_lane3"), journal,
                         tmp_path / "gateway2.log").start()
        started.append(gw)
        gw.wait_log("mqtt bulk connected")
        removed_then_alarm(broker.port, "smk-a1")
        assert gw.stop() == 0
    finally:
        for proc in started:
            proc.stop()
        broker.stop()
    stop_line = gw.log_text().strip().splitlines()[-1]
    assert "dropped.unknown_device=1" in stop_line, stop_line


def test_a_removed_device_left_subscribed_by_a_lost_journal_counts_once(
        tmp_path: Path, influxdb: InfluxDB) -> None:
    """With a new journal file the gateway no longer knows what its session subscribed.

    The broker still sends the removed device's topic to the alarm lane as well as to the
    bulk lane's ``signal/#``: the alarm lane drops its copy and unsubscribes the topic, so
    each message is counted once (as an unknown device), and the next start no longer
    receives it there.
    """
    broker = Mosquitto()
    broker.start(tmp_path / "mosquitto")
    before = write_site(tmp_path, SITE)
    (tmp_path / "after").mkdir()
    after = write_site(tmp_path / "after", "".join(
        ln for ln in SITE.splitlines(keepends=True) if "id: smk-b1," not in ln))
    started: list[GatewayProc] = []
    try:
        gw = GatewayProc(before, broker.url, influxdb.url("alarm_lane4"),
                         tmp_path / "journal-1.sqlite3", tmp_path / "gateway1.log").start()
        started.append(gw)
        gw.wait_log("mqtt bulk connected")
        assert gw.stop() == 0
        # a new journal file: nothing remembers that smk-b1 was subscribed
        gw = GatewayProc(after, broker.url, influxdb.url("alarm_lane4"),
                         tmp_path / "journal-2.sqlite3", tmp_path / "gateway2.log").start()
        started.append(gw)
        gw.wait_log("mqtt bulk connected")
        # three: the first finds the stale topic; none is counted twice
        removed_then_alarm(broker.port, "smk-a1", times=3)
        gw.wait_log("unsubscribed a topic left from an older setup")
        assert gw.stop() == 0
        first = gw.log_text()
        # the next start with the same journal: the session no longer holds the topic
        gw = GatewayProc(after, broker.url, influxdb.url("alarm_lane4"),
                         tmp_path / "journal-2.sqlite3", tmp_path / "gateway3.log").start()
        started.append(gw)
        gw.wait_log("mqtt bulk connected")
        removed_then_alarm(broker.port, "mcp-a")
        assert gw.stop() == 0
    finally:
        for proc in started:
            proc.stop()
        broker.stop()
    stop_line = first.strip().splitlines()[-1]
    assert "dropped.unknown_device=3" in stop_line, stop_line
    assert "smk-b1" in first.split("unsubscribed a topic left from an older setup")[1] \
        .splitlines()[0]
    later = gw.log_text()
    assert "dropped.unknown_device=1" in later.strip().splitlines()[-1], later[-2000:]
    assert "unsubscribed a topic" not in later, "the stale topic came to the alarm lane again"
