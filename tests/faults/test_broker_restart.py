"""The broker stopped and restarted mid-scenario, with deploy/'s persistence settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB
from tests.faults import explain, run_quick


@pytest.mark.timeout(120)
def test_broker_restart_mid_scenario_loses_no_alarm(tmp_path: Path,
                                                    influxdb: InfluxDB) -> None:
    result = run_quick("broker-restart", tmp_path, influxdb)
    assert result.status == "pass", explain(result)
