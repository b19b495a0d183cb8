"""Broker security on a real Mosquitto with the shipped deploy/mosquitto/firegrid-secure.conf.

The broker runs the deployment's own config file (paths and ports rewritten for a temporary
directory), with certificates made by deploy/mosquitto/make-certs.sh and users and ACLs made
by gateway.brokerconf from the test site. The tests show what an attacker on the community
network meets: no login without a password, no plain text on the TLS port, and publishes a
client is not entitled to (a spoofed device id, a forged acknowledgement or confirmation, a
fake incident or status) dropped by the broker, while `firegrid run` over TLS handles the
real alarm and keeps its password out of `ps` and its log.

A dropped publish is invisible to the publisher on MQTT 3.1.1 (the broker acknowledges it
and throws it away), so absence is shown with a barrier: forbidden messages are published
and acknowledged by the broker first, then one allowed message; a subscriber that has the
allowed message would already have had the forbidden ones, had the broker passed them on.
"""

from __future__ import annotations

import os
import re
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from firmware_sim.lab import InfluxDB, Mosquitto, _port_open, free_port
from gateway.brokerconf import broker_users, read_credentials
from gateway.brokerconf import main as brokerconf_main
from gateway.config import parse_site
from gateway.mqtt_link import MqttLink, MqttTarget, Unreachable
from tests.harness import TEST_SITE, GatewayProc, Msg, Probe, wait_for, write_site

ROOT = Path(__file__).resolve().parent.parent
SECURE_CONF = ROOT / "deploy" / "mosquitto" / "firegrid-secure.conf"
MAKE_CERTS = ROOT / "deploy" / "mosquitto" / "make-certs.sh"
P = "firegrid/test-site/"


# --- the broker under test -----------------------------------------------------------

class SecureMosquitto(Mosquitto):
    """Mosquitto started with the shipped secure config, rewritten for ``workdir``.

    Only paths and ports change: the TLS listener moves from 8883 to ``port`` and the
    gateway's loopback listener from 1883 to ``plain_port``; passwd, acl and certificates
    come from ``authdir`` and ``certdir`` instead of /etc/mosquitto/firegrid/.
    """

    def start_secure(self, workdir: Path, authdir: Path, certdir: Path) -> None:
        self.plain_port = free_port()
        wd, port = self._resolve(workdir, None)
        conf = SECURE_CONF.read_text()
        for line, new in ((r"^listener 8883$", f"listener {port} 127.0.0.1"),
                          (r"^listener 1883 127\.0\.0\.1$",
                           f"listener {self.plain_port} 127.0.0.1")):
            conf, n = re.subn(line, new, conf, flags=re.M)
            assert n == 1, f"{SECURE_CONF.name} has no {line!r}"
        conf = conf.replace("/etc/mosquitto/firegrid/certs/", f"{certdir}/")
        conf = conf.replace("/etc/mosquitto/firegrid/", f"{authdir}/")
        settings = [ln for ln in conf.splitlines() if ln and not ln.startswith("#")]
        assert not [ln for ln in settings if "/etc/" in ln], "a path was not rewritten"
        conf += "\n".join([
            "", "# added by tests/test_security.py",
            f"persistence_location {wd}/", "persistence_file mosquitto.db",
            f"log_dest file {wd / 'mosquitto.log'}", "log_type all", "connection_messages true",
            *(["user root"] if os.geteuid() == 0 else []),
        ]) + "\n"
        self.conf_path.write_text(conf)
        self._spawn(["/usr/sbin/mosquitto", "-c", str(self.conf_path)])
        self._wait_ready(lambda: _port_open(port) and _port_open(self.plain_port), 10)


class Lab:
    def __init__(self, root: Path, broker: SecureMosquitto, creds: dict[str, str]):
        self.root = root
        self.broker = broker
        self.creds = creds
        self.ca = root / "certs" / "ca.crt"
        self.site = root / "site.yaml"
        self.auth = root / "auth"

    @property
    def port(self) -> int:
        return self.broker.port


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("secure")
    write_site(root)
    made = subprocess.run(["sh", str(MAKE_CERTS), "--site", "test-site", str(root / "certs"),
                           "localhost", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert brokerconf_main([str(root / "site.yaml"), str(root / "auth")]) == 0
    broker = SecureMosquitto()
    broker.start_secure(root / "broker", root / "auth", root / "certs")
    try:
        yield Lab(root, broker, read_credentials(root / "auth" / "credentials"))
    finally:
        broker.stop()


# --- small MQTT clients with a login and TLS -----------------------------------------

def tls_context(ca: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca) if ca else None)


def connect(lab: Lab, user: str | None, password: str | None = None, *, tls: bool = True,
            ca: bool = True, v5: bool = False, port: int | None = None,
            client_id: str | None = None) -> tuple[mqtt.Client, Any]:
    """Connect and wait for CONNACK; returns the client and the CONNACK reason code."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=client_id or f"t-{user}-{time.monotonic_ns()}",
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    if user is not None:
        client.username_pw_set(user, lab.creds[user] if password is None else password)
    if tls:
        client.tls_set_context(tls_context(lab.ca if ca else None))  # else: system CAs
    done = threading.Event()
    result: list[Any] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port or lab.port)
    end = time.monotonic() + 5
    while not done.is_set() and time.monotonic() < end:  # no thread until logged in
        client.loop(0.05)
    assert done.is_set(), f"no CONNACK for {user}"
    if not result[0].is_failure:
        client.loop_start()
    return client, result[0]


def client_as(lab: Lab, user: str, **kw: Any) -> mqtt.Client:
    client, rc = connect(lab, user, **kw)
    assert not rc.is_failure, f"{user}: {rc}"
    return client


def publish(client: mqtt.Client, topic: str, payload: Any) -> Any:
    """QoS 1 publish under the site prefix, waiting for the broker's PUBACK."""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    info = client.publish(P + topic, data, qos=1)
    info.wait_for_publish(5)
    assert info.is_published()
    return info


def close(*clients: mqtt.Client) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


class SecureProbe(Probe):
    """harness.Probe (record everything under the prefix) logged in as ``user`` over TLS."""

    def __init__(self, lab: Lab, user: str, topic: str = P + "#", **kw: Any):
        self.prefix = P
        self.messages: list[Msg] = []
        self.lock = threading.Lock()
        self.client = client_as(lab, user, **kw)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(5)

    def topics(self) -> list[str]:
        return [m.topic for m in self.find(lambda m: True)]


# --- generated files -----------------------------------------------------------------

def test_brokerconf_writes_explicit_acls_and_secret_credentials(lab: Lab,
                                                                tmp_path: Path) -> None:
    acl = (lab.auth / "acl").read_text()
    block = acl.split("user smk-a1\n", 1)[1].split("\n\n", 1)[0]
    assert block.strip().splitlines() == [f"topic write {P}signal/smk-a1",
                                          f"topic read {P}device/smk-a1"]  # its receipts
    guard = acl.split("user guard-1\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert f"topic write {P}page/guard-1/ack" in guard
    assert not [ln for ln in guard if "confirm" in ln], "only grid workers answer confirms"
    worker = acl.split("user w-1\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert f"topic write {P}confirm/+/reply" in worker
    assert f"topic readwrite {P}#" in acl.split("user firegrid-gateway\n", 1)[1].split("\n\n")[0]
    # the gateway's bulk lane reads signals with the gateway's password and writes nothing
    bulk = acl.split("user firegrid-gateway-bulk\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert bulk == [f"topic read {P}signal/#", "topic read $SYS/broker/publish/messages/dropped"]
    assert lab.creds["firegrid-gateway-bulk"] == lab.creds["firegrid-gateway"]
    assert "%u" not in acl and "pattern" not in acl
    assert acl.index("user ") < acl.index("topic "), "nothing for anonymous clients"

    for name in ("credentials", "passwd", "firegrid-gateway.password"):
        assert stat.S_IMODE((lab.auth / name).stat().st_mode) == 0o600, name
    users = {u.name for u in broker_users(parse_site(TEST_SITE))}
    assert set(lab.creds) == users and "dutyroom" in users and "firegrid-gateway" in users
    passwd = (lab.auth / "passwd").read_text()
    assert all(pw not in passwd for pw in lab.creds.values()), "passwd must hold hashes only"
    assert (lab.auth / "firegrid-gateway.password").read_text().strip() == \
        lab.creds["firegrid-gateway"]

    # a second run keeps everybody's password; --rotate makes new ones
    out = tmp_path / "auth"
    assert brokerconf_main([str(lab.site), str(out), "--viewer", "wall-1"]) == 0
    first = read_credentials(out / "credentials")
    assert "wall-1" in first
    assert brokerconf_main([str(lab.site), str(out), "--viewer", "wall-1"]) == 0
    assert read_credentials(out / "credentials") == first
    assert brokerconf_main([str(lab.site), str(out), "--rotate"]) == 0
    rotated = read_credentials(out / "credentials")
    assert set(rotated) == set(first) - {"wall-1"}
    assert all(rotated[u] != first[u] for u in rotated)
    # one name for two things is refused: it would be one login with both rights
    clash = tmp_path / "clash.yaml"
    clash.write_text(TEST_SITE.replace("{id: guard-1,", "{id: smk-a1,"))
    assert brokerconf_main([str(clash), str(tmp_path / "x")]) == 2

    # a Zigbee2MQTT bridge gets one login for its base topic; devices behind it get none
    bridged = parse_site(TEST_SITE.replace(
        "devices:\n", "feeds:\n  - {name: z2m, type: zigbee2mqtt, base_topic: zb}\ndevices:\n"
        "  - {id: smk-z1, kind: smoke, floor: 1, x: 2, y: 2, feed: z2m, ref: kitchen}\n"))
    by_name = {u.name: u for u in broker_users(bridged)}
    assert "smk-z1" not in by_name
    assert by_name["z2m"].acl_lines() == ["user z2m", "topic readwrite zb/#"]
    assert "topic readwrite zb/#" in by_name["firegrid-gateway"].acl_lines()


def test_make_certs_is_idempotent_with_private_keys(lab: Lab) -> None:
    certs = lab.root / "certs"
    before = {p.name: p.read_bytes() for p in certs.iterdir() if p.is_file()}
    again = subprocess.run(["sh", str(MAKE_CERTS), "--site", "test-site", str(certs),
                            "localhost", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
    assert {p.name: p.read_bytes() for p in certs.iterdir() if p.is_file()} == before
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    text = subprocess.run(["openssl", "x509", "-in", str(certs / "server.crt"), "-noout",
                           "-ext", "subjectAltName"], capture_output=True, text=True).stdout
    assert "DNS:localhost" in text and "127.0.0.1" in text


# --- the broker: logins --------------------------------------------------------------

def test_anonymous_wrong_password_plain_text_and_unknown_ca_are_refused(lab: Lab) -> None:
    client, rc = connect(lab, None)
    assert rc.is_failure and rc.getName() == "Not authorized"
    close(client)
    client, rc = connect(lab, "smk-a1", "not-the-password")
    assert rc.is_failure and rc.getName() == "Not authorized"
    close(client)
    client, rc = connect(lab, "smk-a1", lab.creds["smk-b1"])  # another device's password
    assert rc.is_failure
    close(client)
    # no TLS on the TLS port: the broker hangs up before any MQTT is spoken
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-plain")
    plain.username_pw_set("smk-a1", lab.creds["smk-a1"])
    connacks: list[Any] = []
    plain.on_connect = lambda *a: connacks.append(a)
    plain.connect("127.0.0.1", lab.port)
    plain.loop_start()
    time.sleep(0.5)
    plain.loop_stop()
    assert connacks == []
    # a client that does not trust the site CA will not talk to the broker
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(lab, "smk-a1", ca=False)
    # the gateway's loopback listener wants a login too
    client, rc = connect(lab, None, tls=False, port=lab.broker.plain_port)
    assert rc.is_failure
    close(client)


# --- the broker: what each login may publish and read --------------------------------

def test_acls_drop_spoofed_signals_forged_acks_replies_and_gateway_topics(lab: Lab) -> None:
    gateway = SecureProbe(lab, "firegrid-gateway")  # reads the whole site tree
    smk = client_as(lab, "smk-a1")
    squad = client_as(lab, "squad-1")
    guard = client_as(lab, "guard-1")
    worker = client_as(lab, "w-1")
    duty = client_as(lab, "dutyroom")
    bulk = client_as(lab, "firegrid-gateway-bulk")  # the gateway's second session
    try:
        alarm = {"kind": "smoke", "state": "alarm"}
        # a device speaks only for itself, and never as the gateway or a person
        for topic in ("signal/smk-a2", "signal/mcp-b", "incident/inc-1", "incident/inc-1/close",
                      "status", "device/smk-a2", "trouble/smk-a2", "cap/inc-1", "page/guard-1",
                      "page/guard-1/ack", "confirm/inc-1", "confirm/inc-1/reply", "other"):
            publish(smk, topic, alarm)
        # a responder acknowledges only its own pages; only grid workers answer confirms
        publish(squad, "page/guard-1/ack", {"incident": "inc-1", "status": "on_scene"})
        publish(squad, "confirm/inc-1/reply", {"decision": "dismiss", "by": "w-1"})
        publish(guard, "confirm/inc-1/reply", {"decision": "dismiss", "by": "w-1"})
        publish(worker, "page/guard-1/ack", {"incident": "inc-1", "status": "ack"})
        for who in (squad, guard, worker, bulk):
            publish(who, "incident/inc-1", {"id": "inc-1", "state": "closed"})
            publish(who, "status", b"offline")
            publish(who, "signal/smk-a1", alarm)
        publish(duty, "signal/smk-a1", alarm)  # the duty room only reads
        publish(duty, "incident/inc-1/close", {"by": "w-1", "reason": "x"})

        # what each is entitled to, in this order, is delivered
        publish(smk, "signal/smk-a1", alarm)
        publish(guard, "page/guard-1/ack", {"incident": "inc-1", "status": "ack"})
        publish(worker, "confirm/inc-1/reply", {"decision": "confirm", "by": "w-1"})
        publish(squad, "incident/inc-1/close", {"by": "squad-1", "reason": "drill"})
        gateway.wait(lambda m: m.topic == "incident/inc-1/close")
        assert gateway.topics() == ["signal/smk-a1", "page/guard-1/ack", "confirm/inc-1/reply",
                                    "incident/inc-1/close"]
        got = gateway.find(lambda m: True)
        assert got[1].json()["status"] == "ack" and got[2].json()["by"] == "w-1"
    finally:
        gateway.close()
        close(smk, squad, guard, worker, duty, bulk)


def test_mqtt5_publisher_is_told_not_authorized(lab: Lab) -> None:
    client = client_as(lab, "smk-a1", v5=True)
    try:
        codes: dict[int, Any] = {}
        client.on_publish = lambda _c, _u, mid, rc, _p: codes.__setitem__(mid, rc)
        spoof = publish(client, "signal/smk-a2", {"kind": "smoke", "state": "alarm"})
        own = publish(client, "signal/smk-a1", {"kind": "smoke", "state": "alarm"})
        wait_for(lambda: len(codes) == 2, 5, "two PUBACKs")
        assert codes[spoof.mid].getName() == "Not authorized"
        assert not codes[own.mid].is_failure
    finally:
        close(client)


def test_reads_are_limited_to_what_each_login_needs(lab: Lab) -> None:
    gateway = client_as(lab, "firegrid-gateway")
    device = SecureProbe(lab, "smk-a1")
    guard = SecureProbe(lab, "guard-1")
    worker = SecureProbe(lab, "w-1")
    duty = SecureProbe(lab, "dutyroom")
    try:
        for topic in ("signal/smk-a2", "page/squad-1", "confirm/inc-2", "incident/inc-2",
                      "page/guard-1", "device/smk-a2", "device/smk-a1"):
            publish(gateway, topic, {"incident": "inc-2"})
        duty.wait(lambda m: m.topic == "device/smk-a1")
        guard.wait(lambda m: m.topic == "page/guard-1")
        worker.wait(lambda m: m.topic == "incident/inc-2")
        device.wait(lambda m: m.topic == "device/smk-a1")
        time.sleep(0.2)
        assert device.topics() == ["device/smk-a1"]  # its own receipts, nothing else
        assert guard.topics() == ["incident/inc-2", "page/guard-1"]
        assert worker.topics() == ["confirm/inc-2", "incident/inc-2"]
        assert duty.topics() == ["signal/smk-a2", "page/squad-1", "confirm/inc-2",
                                 "incident/inc-2", "page/guard-1", "device/smk-a2",
                                 "device/smk-a1"]
    finally:
        for p in (device, guard, worker, duty):
            p.close()
        close(gateway)


def test_a_login_cannot_take_over_the_gateways_session(lab: Lab) -> None:
    """use_username_as_clientid: another login with the gateway's client id is not it."""
    gateway_id = "firegrid-gateway-test-site"  # what MqttLink asks for
    gateway = SecureProbe(lab, "firegrid-gateway", client_id=gateway_id)
    dropped: list[Any] = []
    gateway.client.on_disconnect = lambda *a: dropped.append(a)
    intruder = client_as(lab, "smk-a1", client_id=gateway_id)
    device = client_as(lab, "smk-a2")
    try:
        publish(device, "signal/smk-a2", {"kind": "smoke", "state": "alarm"})
        gateway.wait(lambda m: m.topic == "signal/smk-a2", 5)
        assert dropped == [], "the gateway was thrown off"
    finally:
        close(intruder, device)
        gateway.close()


# --- the gateway's client ------------------------------------------------------------

def test_mqtt_target_urls_passwords_and_redaction(lab: Lab, tmp_path: Path) -> None:
    env = {"FIREGRID_MQTT_PASSWORD": "s3cret", "FIREGRID_MQTT_CA": str(lab.ca)}
    t = MqttTarget.parse("mqtts://firegrid-gateway@gw.lan", env)
    assert (t.tls, t.port, t.username, t.password, t.ca_file) == \
        (True, 8883, "firegrid-gateway", "s3cret", str(lab.ca))
    assert "s3cret" not in t.redacted() + repr(t) and t.redacted().startswith("mqtts://")
    assert MqttTarget.parse("mqtt://u:pw@h", env).port == 1883
    assert MqttTarget.parse("mqtt://u:pw@h", env).password == "pw"  # the URL wins
    assert MqttTarget.parse("mqtt://u@h", env).ca_file is None  # TLS settings: mqtts only
    assert MqttTarget.parse("mqtt://h", env).password is None  # no user, no password
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    t = MqttTarget.parse(f"mqtts://u@h:1?ca={lab.ca}", {"FIREGRID_MQTT_PASSWORD_FILE": str(pw)})
    assert (t.password, t.port, t.ca_file) == ("from-file", 1, str(lab.ca))
    bad = [("mqtts://u:s3cret@h?ca=/nonexistent", "/nonexistent"),
           ("mqtts://u:s3cret@h?cafile=x", "unknown option"),
           ("mqtt://u:s3cret@h?ca=x", "only with mqtts"),
           ("ws://u:s3cret@h", "mqtts://"),
           ("mqtts://u:s3cret@h?key=/k", "needs a client certificate")]
    for url, why in bad:
        with pytest.raises(ValueError, match=re.escape(why)) as info:
            MqttTarget.parse(url, {})
        assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError, match="FIREGRID_MQTT_PASSWORD_FILE"):
        MqttTarget.parse("mqtt://u@h", {"FIREGRID_MQTT_PASSWORD_FILE": str(tmp_path / "no")})


async def test_gateway_link_check_names_the_problem(lab: Lab) -> None:
    def link(url: str, **env: str) -> MqttLink:
        target = MqttTarget.parse(url, {"FIREGRID_MQTT_CA": str(lab.ca), **env})
        return MqttLink(target, "test-site", lambda *a: None, _nothing, time.time_ns)

    good = lab.creds["firegrid-gateway"]
    await link(f"mqtts://firegrid-gateway@127.0.0.1:{lab.port}",
               FIREGRID_MQTT_PASSWORD=good).check()
    await link(f"mqtt://firegrid-gateway@127.0.0.1:{lab.broker.plain_port}",
               FIREGRID_MQTT_PASSWORD=good).check()
    # a client certificate from the site CA is accepted alongside the password
    made = subprocess.run(["sh", str(MAKE_CERTS), "--client", "firegrid-gateway",
                           str(lab.root / "certs"), "localhost", "127.0.0.1"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    crt = lab.root / "certs" / "clients" / "firegrid-gateway.crt"
    await link(f"mqtts://firegrid-gateway@127.0.0.1:{lab.port}", FIREGRID_MQTT_PASSWORD=good,
               FIREGRID_MQTT_CERT=str(crt), FIREGRID_MQTT_KEY=str(crt.with_suffix(".key"))
               ).check()
    for url, env, why in [
        (f"mqtts://firegrid-gateway:wrong@127.0.0.1:{lab.port}", {}, "not authorised"),
        (f"mqtts://127.0.0.1:{lab.port}", {}, "not authorised"),
        (f"mqtts://firegrid-gateway:{good}@127.0.0.1:{lab.port}",
         {"FIREGRID_MQTT_CA": str(crt)}, "TLS handshake failed"),  # not the CA
        (f"mqtts://firegrid-gateway:{good}@127.0.0.1:{lab.broker.plain_port}", {},
         "TLS handshake failed"),
        (f"mqtts://firegrid-gateway:{good}@127.0.0.1:{free_port()}", {}, "unreachable"),
    ]:
        with pytest.raises(Unreachable, match=why) as info:
            await link(url, **env).check()
        assert good not in str(info.value) and "\n" not in str(info.value)


async def _nothing() -> None:
    return None


# --- the gateway end to end ----------------------------------------------------------

def test_firegrid_run_over_tls_handles_real_alarms_and_refuses_forgeries(
        lab: Lab, influxdb: InfluxDB, tmp_path: Path) -> None:
    password = lab.creds["firegrid-gateway"]
    url = f"mqtts://firegrid-gateway@127.0.0.1:{lab.port}"
    env = {"FIREGRID_MQTT_PASSWORD": password, "FIREGRID_MQTT_CA": str(lab.ca)}
    gw = GatewayProc(lab.site, url, influxdb.url("security_e2e"), tmp_path / "j.sqlite3",
                     tmp_path / "gw.log", extra_env=env)
    duty = SecureProbe(lab, "dutyroom")
    clients = {u: client_as(lab, u) for u in ("smk-a1", "smk-b1", "mcp-a", "w-2", "guard-1",
                                             "squad-1")}
    try:
        gw.start()
        duty.wait(lambda m: m.topic == "status" and m.payload == b"online")
        # the password is neither on the command line (ps) nor in the log
        assert gw.proc is not None
        cmdline = Path(f"/proc/{gw.proc.pid}/cmdline").read_bytes()
        assert b"firegrid-gateway@127.0.0.1" in cmdline and password.encode() not in cmdline

        # smk-a1 claims to be the manual call point in building b: dropped by the broker.
        # Had it passed, mcp-b would have opened (and confirmed) b's incident first.
        publish(clients["smk-a1"], "signal/mcp-b", {"kind": "manual", "state": "alarm"})
        publish(clients["smk-b1"], "signal/smk-b1", {"kind": "smoke", "state": "alarm"})
        inc = duty.first_incident("smk-b1")
        state = duty.incident_state(inc)
        assert state["devices"] == ["smk-b1"] and state["confirmed_by"] is None
        duty.wait(lambda m: m.topic == f"confirm/{inc}" and m.payload)

        # a guard dismissing in the grid worker's name: dropped; the worker confirms
        publish(clients["guard-1"], f"confirm/{inc}/reply", {"decision": "dismiss", "by": "w-2"})
        publish(clients["w-2"], f"confirm/{inc}/reply", {"decision": "confirm", "by": "w-2"})
        wait_for(lambda: duty.incident_state(inc).get("state") == "confirmed", 5, "confirmed")
        assert duty.incident_state(inc)["confirmed_by"] == "w-2"
        duty.wait(lambda m: m.topic == "page/guard-1" and m.json()["incident"] == inc)

        # the squad says guard-1 is on scene, a detector closes the incident: both dropped
        publish(clients["squad-1"], "page/guard-1/ack", {"incident": inc, "status": "on_scene"})
        publish(clients["smk-a1"], f"incident/{inc}/close", {"by": "w-2", "reason": "fake"})
        publish(clients["guard-1"], "page/guard-1/ack", {"incident": inc, "status": "ack"})
        wait_for(lambda: duty.incident_state(inc).get("acked") == ["guard-1"], 5, "acked")
        state = duty.incident_state(inc)
        assert state["on_scene"] == [] and state["state"] == "confirmed"
        assert duty.find(lambda m: m.topic == "device/mcp-b") == []
        # the duty room's board needs nothing but its read-only login over TLS. One login
        # is one session on this broker (use_username_as_clientid): the board takes the
        # probe's place while it runs, as a second screen would take the first one's.
        duty.close()
        board = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "watch", "--config", str(lab.site), "--once",
             "--mqtt", f"mqtts://dutyroom@127.0.0.1:{lab.port}"], capture_output=True,
            text=True, timeout=30, env={**os.environ, "FIREGRID_MQTT_CA": str(lab.ca),
                                        "FIREGRID_MQTT_PASSWORD": lab.creds["dutyroom"]})
        assert board.returncode == 0, board.stderr + board.stdout
        row = next(ln for ln in board.stdout.splitlines() if inc in ln)
        assert "confirmed" in row and "by w-2" in row and "guard-1 acked" in row
        duty = SecureProbe(lab, "dutyroom")

        # an alarm while the gateway is down waits in its persistent session, and the
        # gateway (password from a file this time) picks it up after its start-up check
        assert gw.stop() == 0
        pwfile = tmp_path / "gw.password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        publish(clients["mcp-a"], "signal/mcp-a", {"kind": "manual", "state": "alarm"})
        gw.env.pop("FIREGRID_MQTT_PASSWORD")
        gw.env["FIREGRID_MQTT_PASSWORD_FILE"] = str(pwfile)
        gw.start()
        inc_a = duty.first_incident("mcp-a")
        wait_for(lambda: duty.incident_state(inc_a).get("state") == "confirmed", 5, "mcp-a")
        assert password.encode() not in Path(f"/proc/{gw.proc.pid}/cmdline").read_bytes()
        assert gw.stop() == 0
        assert password not in gw.log_text() and "mqtts://firegrid-gateway" in gw.log_text()
    finally:
        gw.stop()
        duty.close()
        close(*clients.values())


def test_firegrid_run_exits_3_with_one_line_on_bad_login_or_tls(lab: Lab, tmp_path: Path) -> None:
    password = lab.creds["firegrid-gateway"]

    def run(url: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(lab.site),
             "--mqtt", url, "--influx", "http://127.0.0.1:1/x", "--journal",
             str(tmp_path / "j.sqlite3")],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "FIREGRID_MQTT_CA": str(lab.ca), **env})

    r = run(f"mqtts://firegrid-gateway@127.0.0.1:{lab.port}", FIREGRID_MQTT_PASSWORD="wrong")
    assert r.returncode == 3 and "not authorised" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    r = run(f"mqtts://firegrid-gateway:{password}@127.0.0.1:{lab.port}",
            FIREGRID_MQTT_CA="")  # the system's CAs do not know the site CA
    assert r.returncode == 3 and "TLS handshake failed" in r.stderr, r.stderr
    assert password not in r.stderr and r.stderr.strip().count("\n") == 0
    r = run(f"mqtts://firegrid-gateway@127.0.0.1:{lab.port}",
            FIREGRID_MQTT_CA=str(tmp_path / "missing.crt"))
    assert r.returncode == 2 and "missing.crt" in r.stderr, r.stderr
