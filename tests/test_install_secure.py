"""``deploy/install.sh --secure``: the appliance's secure broker, laid out and working.

The script is run with ``--root`` (files only, under a temporary directory) for the test
site; the Mosquitto configuration it installed is then started as it stands, with only
its /etc paths and its two ports moved under the test's directory. Checked as a new
user would: an anonymous client is refused, a device posing as another is dropped, the
gateway logs in with the password file the script left it, and a real alarm gets through.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from firmware_sim.lab import InfluxDB, free_port
from gateway.brokerconf import read_credentials
from tests.harness import GatewayProc, write_site
from tests.test_security import (
    Lab,
    SecureMosquitto,
    SecureProbe,
    client_as,
    close,
    connect,
    publish,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "install.sh"


def _install(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), "--root", str(root), "--secure",
                           "localhost,127.0.0.1", str(site)], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "FIREGRID_PYTHON": sys.executable})


def test_install_secure_sets_up_a_broker_that_refuses_strangers(
        tmp_path: Path, influxdb: InfluxDB) -> None:
    site = write_site(tmp_path)
    root = tmp_path / "root"
    r = _install(root, site)
    assert r.returncode == 0, r.stderr + r.stdout
    etc = root / "etc"
    auth = etc / "mosquitto/firegrid"
    conf = etc / "mosquitto/conf.d/firegrid.conf"
    assert conf.read_text() == (ROOT / "deploy/mosquitto/firegrid-secure.conf").read_text()
    for path, mode in ((auth / "passwd", 0o640), (auth / "acl", 0o640),
                       (auth / "certs/server.key", 0o640), (auth / "certs/ca.crt", 0o644),
                       (etc / "firegrid/mqtt.password", 0o640), (etc / "firegrid/env", 0o640),
                       (etc / "firegrid/ca", 0o700), (etc / "firegrid/broker", 0o700)):
        assert path.exists() and path.stat().st_mode & 0o777 == mode, (path, oct(mode))
    env = dict(line.split("=", 1) for line in (etc / "firegrid/env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    assert env["FIREGRID_MQTT"] == "mqtt://firegrid-gateway@127.0.0.1:1883"
    assert env["FIREGRID_MQTT_PASSWORD_FILE"] == "/etc/firegrid/mqtt.password"
    creds = read_credentials(etc / "firegrid/broker/credentials")
    password = (etc / "firegrid/mqtt.password").read_text().strip()
    assert creds["firegrid-gateway"] == password and password not in r.stdout + r.stderr

    # the installed files, moved out of a path holding "/etc/" (the lab rewrites those)
    moved = tmp_path / "mosquitto-firegrid"
    shutil.copytree(auth, moved)
    broker = SecureMosquitto()
    broker.start_secure(tmp_path / "broker", moved, moved / "certs")
    lab = Lab(tmp_path, broker, creds)
    lab.ca = moved / "certs/ca.crt"
    url = re.sub(r":1883$", f":{broker.plain_port}", env["FIREGRID_MQTT"])
    gw = GatewayProc(site, url, influxdb.url("install_secure"), tmp_path / "j.sqlite3",
                     tmp_path / "gw.log", extra_env={
                         "FIREGRID_MQTT_PASSWORD_FILE": str(etc / "firegrid/mqtt.password")})
    duty = device = None
    try:
        _, rc = connect(lab, None)  # anonymous, over the TLS listener made for it
        assert rc.is_failure
        gw.start()
        duty = SecureProbe(lab, "dutyroom")
        device = client_as(lab, "smk-a1")
        publish(device, "signal/mcp-b", {"kind": "manual", "state": "alarm"})  # not its own
        publish(device, "signal/smk-a1", {"kind": "smoke", "state": "alarm"})
        inc = duty.first_incident("smk-a1")
        assert duty.incident_state(inc)["devices"] == ["smk-a1"]
        assert duty.find(lambda m: m.topic == "device/mcp-b") == []
        # a rerun keeps every password and the certificates
        key = (auth / "certs/server.key").read_bytes()
        assert _install(root, site).returncode == 0
        assert read_credentials(etc / "firegrid/broker/credentials") == creds
        assert (auth / "certs/server.key").read_bytes() == key
    finally:
        try:
            assert gw.stop() == 0
        finally:
            if duty is not None:
                duty.close()
            if device is not None:
                close(device)
            broker.stop()
    assert password not in gw.log_text()


def test_install_without_secure_keeps_the_open_broker(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    root = tmp_path / "root"
    subprocess.run(["sh", str(SCRIPT), "--root", str(root), str(site)], check=True,
                   capture_output=True, timeout=120)
    conf = (root / "etc/mosquitto/conf.d/firegrid.conf").read_text()
    assert conf == (ROOT / "deploy/mosquitto/firegrid.conf").read_text()
    assert not (root / "etc/mosquitto/firegrid").exists()
    assert "firegrid-gateway@" not in (root / "etc/firegrid/env").read_text()
    assert free_port()  # (the lab helpers import cleanly)
