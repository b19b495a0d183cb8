"""A full disk under the journal: trouble raised, alarms still paged, nothing dropped silently.

The journal lives on a small tmpfs (mounted by the test, which needs root, as CI and the
setup script run); a filler file takes the rest of the space.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.journal import Journal
from tests.harness import GatewayProc, Probe, wait_for, write_site


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Fill the filesystem to its last byte. Unbuffered: a buffered file left the bytes of
    a partial write in its buffer, and closing it raised ENOSPC (seen once in CI)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_full_disk_pages_anyway_and_journals_later(small_disk: Path, tmp_path: Path,
                                                  mosquitto: Mosquitto,
                                                  influxdb: InfluxDB) -> None:
    journal = small_disk / "journal.sqlite3"
    gw = GatewayProc(write_site(tmp_path), mosquitto.url, influxdb.url("diskfull"), journal,
                     tmp_path / "gw.log").start()
    probe = Probe(mosquitto.port)
    filler = small_disk / "filler"
    try:
        fill(filler)
        probe.signal("mcp-a")  # confirmed at once: paged even though nothing can be written
        page = probe.wait(lambda m: m.topic == "page/guard-1", 10).json()
        inc = page["incident"]
        trouble = probe.wait(lambda m: m.topic == "trouble/gateway" and m.payload, 10).json()
        assert trouble["trouble"] == "journal_failed" and trouble["held_steps"] >= 4
        probe.pub("page/guard-1/ack", {"incident": inc, "status": "on_scene"})
        wait_for(lambda: probe.incident_state(inc).get("on_scene"), 5, "on scene")
        assert "journal write failed" in gw.log_text()

        filler.unlink()  # room again: the held steps go in, in order, and the trouble clears
        probe.signal("smk-b1")
        probe.first_incident("smk-b1")
        probe.wait(lambda m: m.topic == "trouble/gateway" and m.payload == b"", 10)
        assert gw.stop() == 0
        steps = Journal(journal).all_steps(inc)
        stages = [s.stage for s in steps]
        assert stages[:4] == ["detected", "located", "confirmed", "paged"]
        assert "acked" in stages and "on_scene" in stages
        assert [s.t_ns for s in steps] == sorted(s.t_ns for s in steps)
        assert "journal.failed=" in gw.log_text().splitlines()[-1]
    finally:
        probe.close()
        gw.stop()
