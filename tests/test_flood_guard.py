"""A device that floods: found from its rate, its routine messages dropped and counted,
reported as a fault, and forgiven once it has been quiet; the gateway keeps handling
alarms throughout (end to end with a real broker and ``firegrid run``)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from firmware_sim.flood import PubFlood
from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.flood_guard import FLOOD_RATE, QUIET_S, WINDOW_S, FloodGuard
from tests.harness import GatewayProc, Probe, write_site

NS = 1_000_000_000
T = 1_800_000_000 * NS


def feed(g: FloodGuard, device: str, per_s: float, seconds: float, start_s: float) -> None:
    """``per_s`` messages a second from ``device``, ticking every half second."""
    n = round(per_s * 0.5)
    t = start_s
    while t < start_s + seconds - 1e-9:
        for _ in range(n):
            g.seen(device)
        t += 0.5
        g.tick(T + round(t * NS))


def test_a_steady_talker_is_never_flooding() -> None:
    g = FloodGuard()
    g.tick(T)
    feed(g, "tmp-1", FLOOD_RATE / 4, 30, 0)
    assert not g.flooding
    assert g.admit_routine("tmp-1")


def test_a_flood_is_found_throttled_and_forgiven_after_quiet() -> None:
    g = FloodGuard()
    g.tick(T)
    for _ in range(round(FLOOD_RATE * 3 * WINDOW_S)):
        g.seen("hb-1")
    g.seen("smk-2")
    changes = g.tick(T + round(WINDOW_S * NS))
    assert [(c.device, c.flooding) for c in changes] == [("hb-1", True)]
    assert changes[0].rate == 3 * FLOOD_RATE
    # its routine messages are dropped; others are untouched
    assert not g.admit_routine("hb-1") and g.admit_routine("smk-2")
    # still above half the rate: still flooding; then quiet for QUIET_S: forgiven
    feed(g, "hb-1", FLOOD_RATE * 0.6, 6, WINDOW_S)
    assert "hb-1" in g.flooding
    g.tick(T + round((WINDOW_S + 6) * NS))
    quiet_from = WINDOW_S + 6
    t, changes = quiet_from, []
    while not changes and t < quiet_from + 3 * QUIET_S:
        t += 0.5
        changes = g.tick(T + round(t * NS))
    assert [(c.device, c.flooding) for c in changes] == [("hb-1", False)]
    assert QUIET_S <= t - quiet_from <= QUIET_S + 2 * WINDOW_S + 0.5
    assert g.admit_routine("hb-1") and not g.flooding


def test_a_backlog_counted_before_a_restart_of_the_window_is_forgotten() -> None:
    g = FloodGuard()
    g.tick(T)
    for _ in range(10_000):
        g.seen("tmp-1")  # what the broker queued while the gateway was away
    g.restart_window(T + NS)
    assert g.tick(T + round((1 + WINDOW_S) * NS)) == [] and not g.flooding


SITE_EXTRA = """
  - {id: tmp-c, kind: temperature, floor: 1, x: 111, y: 8}
"""


def test_a_flooding_sensor_is_reported_and_its_routine_messages_dropped_while_alarms_go_on(
        tmp_path: Path, influxdb: InfluxDB) -> None:
    from tests.harness import TEST_SITE
    broker = Mosquitto()
    broker.start(tmp_path / "mosquitto")
    site = write_site(tmp_path, TEST_SITE.replace("devices:\n", "devices:\n" + SITE_EXTRA[1:]))
    gw = GatewayProc(site, broker.url, influxdb.url("flood_guard"), tmp_path / "j.sqlite3",
                     tmp_path / "gateway.log", extra_env={"FIREGRID_FLOOD_GRACE_S": "0.5"})
    probe = None
    flood = None
    try:
        gw.start()
        gw.wait_log("mqtt bulk connected")
        probe = Probe(broker.port)
        time.sleep(1.0)  # past the grace after connecting
        msgs = [("firegrid/test-site/signal/tmp-b", b'{"state":"clear","value":21.0}')]
        flood = PubFlood("127.0.0.1", broker.port, msgs, rate=2000, seconds=5.0, tag="fg",
                         procs=1)
        flood.start()
        trouble = probe.wait(lambda m: m.topic == "trouble/tmp-b" and bool(m.payload), 10)
        body = trouble.json()
        assert body["trouble"] == "fault" and body["detail"].startswith("flooding: "), body
        rate = float(re.search(r"flooding: (\d+)", body["detail"]).group(1))  # type: ignore[union-attr]
        # the rate over the window that caught it, which the flood may have filled
        # only in part: above the threshold, never above what was sent
        assert FLOOD_RATE < rate <= 1.5 * 2000
        # meanwhile an alarm, and another sensor's reading, go on as ever
        probe.signal("mcp-a")
        probe.first_incident("mcp-a", timeout=5)
        probe.signal("tmp-c", "fault")
        probe.wait(lambda m: m.topic == "device/tmp-c" and m.json()["state"] == "fault", 5)
        result = flood.result(timeout=30)
        assert result["acked"] == result["sent"] == 10_000, result
        # quiet again: forgiven within QUIET_S and a window or two
        cleared = probe.wait(lambda m: m.topic == "trouble/tmp-b" and m.payload == b""
                             and m.t > trouble.t, QUIET_S + 4 * WINDOW_S + 5)
        assert probe.find(lambda m: m.topic == "device/tmp-b" and m.t >= cleared.t - 1
                          and m.json()["state"] == "normal")
        time.sleep(0.5)
    finally:
        if flood is not None:
            flood.stop()
        code = gw.stop()
        if probe is not None:
            probe.close()
        broker.stop()
    assert code == 0
    log = gw.log_text()
    assert "device flooding" in log and "device no longer flooding" in log
    stop_line = log.strip().splitlines()[-1]
    dropped = int(re.search(r"dropped\.flooding=(\d+)", stop_line).group(1))  # type: ignore[union-attr]
    inputs = int(re.search(r"\binputs=(\d+)", stop_line).group(1))  # type: ignore[union-attr]
    assert dropped >= 5_000, stop_line  # most of the flood never cost a parse
    # every message accounted for: read and handled, or dropped and counted
    assert inputs + dropped >= 10_000 + 2, stop_line
