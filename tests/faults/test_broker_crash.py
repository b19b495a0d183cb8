"""The broker killed (-9, a power cut) with alarms it had acknowledged but not saved.

Devices that keep their alarm until the gateway's receipt (docs/mqtt.md) lose none of
them, and an alarm sent again opens no second incident; the devices that send and forget
are only counted (Mosquitto loses what it acknowledged since its last autosave).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB
from tests.faults import explain, run_quick


@pytest.mark.timeout(120)
def test_broker_crash_loses_no_receipted_alarm(tmp_path: Path, influxdb: InfluxDB) -> None:
    result = run_quick("broker-crash", tmp_path, influxdb)
    assert result.status == "pass", explain(result)
    # the crash really did lose what was only acknowledged: the case tested something
    lost_plain = int(result.figures["send-and-forget devices: alarms lost"].split()[0])
    assert lost_plain > 0, explain(result)
