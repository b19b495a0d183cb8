"""A full disk under the journal: trouble raised, alarms still paged, nothing dropped.

Needs a tmpfs (root); skipped where one cannot be mounted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB
from tests.faults import explain, run_quick


def _can_mount_tmpfs(tmp: Path) -> bool:
    if os.geteuid() != 0:
        return False
    probe = tmp / "probe"
    probe.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                       capture_output=True, timeout=10)
    if r.returncode != 0:
        return False
    subprocess.run(["umount", str(probe)], capture_output=True, timeout=10)
    return True


@pytest.mark.timeout(120)
def test_full_disk_raises_trouble_pages_and_keeps_every_step(tmp_path: Path,
                                                             influxdb: InfluxDB) -> None:
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    result = run_quick("full-disk", tmp_path, influxdb)
    assert result.status == "pass", explain(result)
