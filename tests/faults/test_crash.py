"""kill -9 of the gateway at seeded random points across 50 incidents, restarted each time."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB
from tests.faults import explain, run_quick


@pytest.mark.timeout(150)
def test_kill9_three_times_across_fifty_incidents(tmp_path: Path, influxdb: InfluxDB) -> None:
    result = run_quick("crash", tmp_path, influxdb)
    assert result.figures["kills"] == 3
    assert result.status == "pass", explain(result)
