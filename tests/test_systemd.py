"""The appliance side: systemd's notify protocol and watchdog, and the unit file itself."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB, Mosquitto
from tests.harness import GatewayProc, write_site

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "firegrid.service"


def test_ready_status_watchdog_and_stopping(tmp_path: Path, mosquitto: Mosquitto,
                                            influxdb: InfluxDB) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    gw = GatewayProc(write_site(tmp_path), mosquitto.url, influxdb.url("systemd"),
                     tmp_path / "j.sqlite3", tmp_path / "gw.log",
                     extra_env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
    messages: list[tuple[float, str]] = []

    def collect(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            with contextlib.suppress(TimeoutError):
                messages.append((time.time(), sock.recv(4096).decode()))
    try:
        gw.start()
        collect(2.5)
        texts = [m for _, m in messages]
        ready = [m for m in texts if "READY=1" in m]
        assert ready and "STATUS=serving test-site" in ready[0]
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        assert len(pings) >= 3, f"watchdog pings every 0.5 s expected, got {texts}"
        assert any(m.startswith("STATUS=") and "open incidents" in m for m in texts)
        assert gw.stop() == 0
        collect(0.5)
        assert any("STOPPING=1" in m for _, m in messages)
    finally:
        gw.stop()
        sock.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's firegrid
    firegrid = Path(sys.executable).with_name("firegrid")
    unit = tmp_path / "firegrid.service"
    unit.write_text(UNIT.read_text().replace("/opt/firegrid/.venv/bin/firegrid", str(firegrid)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "firegrid.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_install_script_lays_out_the_appliance(tmp_path: Path) -> None:
    root = tmp_path / "root"
    site = Path(__file__).resolve().parent.parent / "configs" / "taibai-demo.yaml"
    script = UNIT.parent.parent / "install.sh"
    r = subprocess.run(["sh", str(script), "--root", str(root), str(site)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    unit = root / "etc/systemd/system/firegrid.service"
    assert unit.read_text() == UNIT.read_text()
    assert (root / "etc/mosquitto/conf.d/firegrid.conf").is_file()
    assert (root / "etc/systemd/journald.conf.d/firegrid.conf").is_file()
    env = root / "etc/firegrid/env"
    assert env.stat().st_mode & 0o777 == 0o640 and "FIREGRID_INFLUX=" in env.read_text()
    assert (root / "etc/firegrid/site.yaml").read_text() == site.read_text()
    assert (root / "opt/firegrid/gateway/engine.py").is_file()
    assert not (root / "opt/firegrid/.venv").exists()
    env.write_text("FIREGRID_MQTT=mqtt://u:kept@127.0.0.1:1883\n")
    subprocess.run(["sh", str(script), "--root", str(root), str(site)], check=True,
                   capture_output=True, timeout=120)
    assert "kept" in env.read_text(), "an existing env file (with secrets) is never replaced"
