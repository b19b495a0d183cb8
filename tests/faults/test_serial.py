"""The panel printer's cable pulled and put back twice, then 5 s of garbage on the line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB
from tests.faults import explain, run_quick


@pytest.mark.timeout(120)
def test_cable_pulled_twice_and_garbage_lose_no_alarm(tmp_path: Path,
                                                     influxdb: InfluxDB) -> None:
    assert shutil.which("socat"), "setup.sh installs socat: the pty pair needs it"
    result = run_quick("serial", tmp_path, influxdb)
    checks = {c.name: c for c in result.checks}
    assert result.status == "pass", explain(result)
    # the criteria the quick case must meet, named so a renamed check cannot pass silently
    for name in ("alarms lost with the port open", "alarms lost after plug-in",
                 "alarms lost during garbage",
                 "gateway restarts", "pulls done and reported",
                 "recovery: plug -> port reopened", "every alarm during garbage handled",
                 "incidents with no alarm sent", "clean stop at the end"):
        assert checks[name].ok, explain(result)
    assert checks["pulls done and reported"].value.startswith("2 / 2"), explain(result)
    assert result.figures["gateway restarts"].startswith("0;"), explain(result)
