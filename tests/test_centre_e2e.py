"""``firegrid run`` reporting confirmed fires to a monitoring centre over GB/T 26875.3.

The centre is ``python -m firmware_sim.centre``, its own process on a loopback port,
stopped by its PID; the gateway, Mosquitto and InfluxDB are the real ones.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from firmware_sim.lab import InfluxDB, Mosquitto, free_port
from tests.harness import TEST_SITE, GatewayProc, Probe, influx_steps, wait_for, write_site

LINE = re.compile(r"FIRE (?P<ref>\S+) type (?P<type>\d+) '(?P<desc>[^']*)' at (?P<at>\S+) "
                  r"\(serial (?P<serial>\d+), from (?P<src>\d+)\)")


class Centre:
    """The simulated centre as a program: what it printed, line by line."""

    def __init__(self, port: int):
        self.port = port
        self.lines: list[tuple[float, str]] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Centre:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_sim.centre", "--listen", f"127.0.0.1:{self.port}",
             "--address", "88888"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_for(lambda: any("listening" in ln for _, ln in self.lines), 10, "centre up")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append((time.time(), line.strip()))

    def fires(self) -> list[tuple[float, re.Match[str]]]:
        return [(t, m) for t, ln in self.lines if (m := LINE.search(ln))]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # by its PID
            self.proc.wait(5)


def test_confirmed_fires_reach_the_centre_and_an_outage_delays_them_without_loss(
        tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB) -> None:
    port = free_port()
    site = write_site(tmp_path, TEST_SITE + (
        f"monitoring_centre: {{host: 127.0.0.1, port: {port}, address: 888, "
        "centre_address: 88888, timeout_s: 1, retries: 1, heartbeat_s: 1}\n"))
    db = "e2e_centre"
    gw = GatewayProc(site, mosquitto.url, influxdb.url(db), tmp_path / "journal.sqlite3",
                     tmp_path / "gateway.log")
    centre = Centre(port).start()
    probe = Probe(mosquitto.port)
    try:
        gw.start()
        probe.wait(lambda m: m.topic == "feed/monitoring-centre" and m.json()["state"] == "up")
        # a call point: confirmed at once, so reported at once
        sent = probe.signal("mcp-a", kind="manual")
        inc = probe.first_incident("mcp-a")
        t, m = wait_for(lambda: centre.fires(), 10, "a fire report at the centre")[0]
        assert t - sent < 1.0, "GB/T 26875.1 allows 10 s; the gateway takes well under 1"
        index = [ln.split(",")[0] for ln in TEST_SITE.splitlines() if "{id: " in ln
                 and "kind:" in ln].index("  - {id: mcp-a") + 1
        assert m["ref"] == f"1/1/{index}" and m["type"] == "23" and m["src"] == "888"
        assert m["desc"].startswith("mcp-a ")
        rows = wait_for(lambda: [r for r in influx_steps(influxdb.base_url, db, inc)
                                 if r["stage"] == "forwarded"], 10, "forwarded in InfluxDB")
        assert rows[0]["device"] == "mcp-a" and rows[0]["elapsed_s"] < 1.0
        assert rows[0]["status"] == "fire"
        # closed by the worker: the centre hears the call point is back to normal
        probe.pub(f"incident/{inc}/close", {"by": "w-1", "reason": "drill"})
        wait_for(lambda: [ln for _, ln in centre.lines if "status 0x0001" in ln
                          and "'mcp-a " in ln], 10, "the call point back to normal")
        # a smoke alarm the worker dismisses is never reported
        probe.signal("smk-b1", kind="smoke")
        false = probe.first_incident("smk-b1")
        probe.pub(f"confirm/{false}/reply", {"decision": "dismiss", "by": "w-2"})
        wait_for(lambda: probe.incident_state(false).get("state") == "dismissed", 5, "dismissed")

        # the centre goes away: a trouble, and a fire meanwhile waits for it
        centre.stop()
        probe.wait(lambda m: m.topic == "trouble/monitoring-centre" and m.payload
                   and m.json().get("trouble") == "offline", timeout=15)
        probe.signal("mcp-b", kind="manual")
        inc2 = probe.first_incident("mcp-b")
        wait_for(lambda: [r for r in influx_steps(influxdb.base_url, db, inc2)
                          if r["stage"] == "forward_failed"], 15, "forward_failed recorded")
        assert len(centre.fires()) == 1
        back = Centre(port).start()
        t_back = time.time()
        t2, m2 = wait_for(lambda: back.fires(), 15, "the held report after the outage")[0]
        assert "mcp-b" in m2["desc"] and t2 - t_back < 6.0  # backoff at most 10 s, retry 2 s
        probe.wait(lambda m: m.topic == "trouble/monitoring-centre" and not m.payload,
                   timeout=15)
        wait_for(lambda: [r for r in influx_steps(influxdb.base_url, db, inc2)
                          if r["stage"] == "forwarded"], 10, "forwarded after the outage")
        assert not [m for _, m in back.fires() if "smk-b1" in m["desc"]]
        back.stop()
    finally:
        probe.close()
        assert gw.stop() == 0
        centre.stop()


def test_a_report_held_for_a_dead_centre_survives_a_gateway_crash(
        tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB) -> None:
    """The report is in the journal's outbox from the moment the incident is confirmed:
    kill -9 while the centre is unreachable, restart, and it still gets there."""
    port = free_port()
    site = write_site(tmp_path, TEST_SITE + (
        f"monitoring_centre: {{host: 127.0.0.1, port: {port}, address: 888, "
        "timeout_s: 1, retries: 0}\n"))
    db = "e2e_centre_crash"
    journal = tmp_path / "journal.sqlite3"
    gw = GatewayProc(site, mosquitto.url, influxdb.url(db), journal, tmp_path / "gateway.log")
    probe = Probe(mosquitto.port)
    centre = Centre(port)
    try:
        gw.start()  # no centre yet
        probe.signal("mcp-a", kind="manual")
        inc = probe.first_incident("mcp-a")
        gw.wait_log("stage='forward_failed'")
        gw.kill9()
        centre.start()
        gw.start()
        _, m = wait_for(lambda: centre.fires(), 15, "the report after the restart")[0]
        assert m["desc"].startswith("mcp-a ")
        wait_for(lambda: [r for r in influx_steps(influxdb.base_url, db, inc)
                          if r["stage"] == "forwarded"], 10, "forwarded after the restart")
        time.sleep(1.0)
        assert len(centre.fires()) == 1, "sent once the centre was there, not twice"
    finally:
        probe.close()
        assert gw.stop() == 0
        centre.stop()
