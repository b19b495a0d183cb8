"""InfluxDB stopped in the middle of many incidents: nothing lost, nothing doubled.

The outage lasts FIREGRID_OUTAGE_S seconds (20 by default, to keep the suite short;
`FIREGRID_OUTAGE_S=180 pytest tests/test_outage.py` is the minutes-long run). After
InfluxDB is back, every journaled step must be in InfluxDB exactly once with its
original timestamp within 30 s, and `firegrid audit --format json` must give the
same seconds as the journal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.journal import Journal
from tests.harness import GatewayProc, Probe, influx_steps, wait_for

BUILDINGS = 30
OUTAGE_S = float(os.environ.get("FIREGRID_OUTAGE_S", "20"))


def many_building_site(tmp: Path) -> Path:
    zones, devices = [], []
    for b in range(BUILDINGS):
        x = b * 100
        zones.append(f"  - {{id: z{b}, building: b{b}, floor: 1, "
                     f"polygon: [[{x},0],[{x + 20},0],[{x + 20},10],[{x},10]], worker: w-1}}")
        devices.append(f"  - {{id: mcp-{b}, kind: manual, floor: 1, x: {x + 1}, y: 1}}")
        devices.append(f"  - {{id: smk-{b}, kind: smoke, floor: 1, x: {x + 10}, y: 5}}")
    text = "\n".join([
        "site: outage-site", "sla: {locate_s: 10, confirm_s: 5, in_place_s: 60}",
        "zones:", *zones, "devices:", *devices,
        "responders:", "  - {id: w-1, tier: 0}", "  - {id: guard-1, tier: 1}",
        "  - {id: squad-1, tier: 2}",
        "tiers:", "  - {tier: 1, ack_timeout_s: 30}", "  - {tier: 2, ack_timeout_s: 30}", ""])
    path = tmp / "site.yaml"
    path.write_text(text)
    return path


@pytest.mark.timeout(OUTAGE_S + 120)
def test_influx_outage_mid_scenario_loses_and_doubles_nothing(tmp_path: Path,
                                                             mosquitto: Mosquitto) -> None:
    influx = InfluxDB()
    influx.start(tmp_path / "influx")
    site = many_building_site(tmp_path)
    journal_path = tmp_path / "journal.sqlite3"
    gw = GatewayProc(site, mosquitto.url, influx.url("outage"), journal_path,
                     tmp_path / "gw.log").start()
    probe = Probe(mosquitto.port, prefix="firegrid/outage-site/")
    try:
        incidents: list[str] = []
        for b in range(BUILDINGS):
            if b == BUILDINGS // 3:
                influx.stop()  # mid-scenario
            if b % 3 == 0:  # a third wait for the grid worker, who confirms
                probe.signal(f"smk-{b}")
                inc = probe.first_incident(f"smk-{b}")
                probe.pub(f"confirm/{inc}/reply", {"decision": "confirm", "by": "w-1"})
            else:  # the rest are manual call points
                probe.signal(f"mcp-{b}")
                inc = probe.first_incident(f"mcp-{b}")
            probe.pub("page/guard-1/ack", {"incident": inc, "status": "ack"})
            probe.pub("page/guard-1/ack", {"incident": inc, "status": "on_scene"})
            if b % 2 == 0:
                probe.pub(f"incident/{inc}/close", {"by": "w-1", "reason": "handled"})
            incidents.append(inc)
            time.sleep(0.1)
        wait_for(lambda: all(probe.incident_state(i).get("on_scene") for i in incidents), 15,
                 "every incident on scene")
        time.sleep(max(0.0, OUTAGE_S - 5))
        assert "influxdb down" in gw.log_text()

        influx.start()
        t_back = time.time()
        journal = Journal(journal_path)
        steps = journal.all_steps()
        journal.close()
        want = sorted((s.incident, s.stage, s.responder or "", s.device or "", s.t_ns)
                      for s in steps)
        assert len({s.incident for s in steps}) == BUILDINGS

        def drained() -> list[dict] | None:
            rows = influx_steps(influx.base_url, "outage")
            return rows if len(rows) >= len(want) else None
        rows = wait_for(drained, 30, "the backlog to drain into InfluxDB")
        drain_s = time.time() - t_back
        got = sorted((r["incident"], r["stage"], r["responder"] or "", r["device"] or "",
                      r["time"]) for r in rows)
        assert got == want, "every step exactly once, with its original timestamp"
        print(f"\n{len(want)} steps of {BUILDINGS} incidents drained {drain_s:.1f}s "
              f"after a {OUTAGE_S:.0f}s outage")

        r = subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "--influx",
                            influx.url("outage"), "--format", "json", "--config", str(site)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        report = {i["incident"]: i for i in orjson.loads(r.stdout)["incidents"]}
        assert set(report) == set(incidents)
        for inc in incidents:
            first: dict[str, float] = {}
            for s in steps:
                if s.incident == inc:
                    first.setdefault(s.stage, s.elapsed_s)
            row = report[inc]
            assert row["locate_s"] == pytest.approx(first["located"], abs=1e-6)
            assert row["confirm_s"] == pytest.approx(first["confirmed"], abs=1e-6)
            assert row["in_place_s"] == pytest.approx(first["on_scene"], abs=1e-6)
        probe.close()
        assert gw.stop() == 0
    finally:
        gw.stop()
        influx.stop()
