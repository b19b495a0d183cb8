"""Alarms published while the gateway is down (QoS 1, persistent session): none lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB
from tests.faults import explain, run_quick


@pytest.mark.timeout(90)
def test_alarms_sent_while_down_are_processed_after_restart(tmp_path: Path,
                                                            influxdb: InfluxDB) -> None:
    result = run_quick("offline-alarms", tmp_path, influxdb)
    assert result.status == "pass", explain(result)
