"""`firegrid demo`, the README's first command, end to end (about 50 s)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(180)
def test_demo_runs_the_story_and_prints_the_sla_table() -> None:
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "demo"], capture_output=True,
                       text=True, timeout=170)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    assert "started mosquitto" in out and "started influxd" in out
    # the three stories: confirmed kitchen fire, dismissed nuisance, tier-1 silence -> tier 2
    for needle in ("confirmed", "dismissed", "unanswered", "squad-3", "on_scene", "closed"):
        assert needle in out, needle
    # the confirmed fires went to the simulated monitoring centre, and back to normal on
    # close; the dismissed nuisance alarm never did
    centre = out[out.index("monitoring centre (simulated"):out.index("SLA report from InfluxDB")]
    assert centre.count("FIRE") == 3 and centre.count("normal") == 3, centre
    assert "smk-311" in centre and "mcp-1203" in centre and "b1-1f" not in centre
    table = out[out.index("SLA report from InfluxDB"):]
    assert "centre s" in table
    assert table.count("taibai-demo") >= 4  # three incidents and the per-site row
    assert "b3-2f-kitchen" in table and "b1-1f-lobby" in table and "b1-2f-flats" in table
    assert "MISSED" not in table and "dismissed; ok" in table
    # the lobby's burnt toast, dismissed as unwanted, is the site's one false alarm
    false = table[table.index("false alarms (BS 5839-1)"):]
    assert "unwanted 1" in false and "smk-1101 (1)" in false and "investigate" not in false
