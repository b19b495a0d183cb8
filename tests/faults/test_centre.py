"""Reports to a monitoring centre across centre and gateway crashes: none lost, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB
from tests.faults import explain, run_quick


@pytest.mark.timeout(120)
def test_centre_and_gateway_killed_twice_each_lose_no_report(tmp_path: Path,
                                                              influxdb: InfluxDB) -> None:
    result = run_quick("centre", tmp_path, influxdb)
    assert result.status == "pass", explain(result)
    assert result.figures["reports due / at the centre / lost"] == "40 / 40 / 0"
