"""Issue #3 acceptance: each feed, configured as in CONTRACT §2, run by ``firegrid run``.

The devices here are not firegrid's own simulators: Zigbee2MQTT and Frigate messages
are published by Mosquitto's ``mosquitto_pub`` with payloads shaped as those projects
document them; the fire panel's bytes and the GB/T 26875.3 frames are the test vectors
of the protocol fact sheet, written by plain file and socket calls; the Modbus unit is
pymodbus's own server. Serial lines are real pseudo-terminals made by socat, and a
"pulled cable" is socat killed (by its PID) and started again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.lab import InfluxDB, Mosquitto, PtyPair, free_port, influx_rows
from tests.harness import GatewayProc, Probe, gb_exchange, influx_steps, wait_for

# ------------------------------------------------------------------ devices' bytes

GST_FIRE_004_004 = bytes.fromhex(  # fact sheet part 2, example 1: 首次火警, 004-004
    "1B 36 30 38 2F 31 32 2F 30 32 20 20 31 37 3A 32 34 0A 20 20 30 30 34 2D 30 30 34 0A"
    " 1B 39 CA D7 B4 CE BB F0 BE AF 0A C8 B9 C2 A5 D2 BB B2 E3 C9 CF BF D5 0A"
    " B8 D0 D1 CC CC BD B2 E2 C6 F7 0A 0A")
GST_RESET = bytes.fromhex(  # fact sheet part 2: 系统复位
    "1B 36 30 38 2F 31 32 2F 30 32 20 20 31 37 3A 32 35 0A 20 20 0A 1B 39"
    " CF B5 CD B3 B8 B4 CE BB 0A 0A")
GB_SMOKE_FIRE = bytes.fromhex(  # fact sheet §1.9: smoke detector fire, checksum 0x46
    "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 30 00 02"
    " 02 01 01 01 28 0A 00 02 00 02 00" + " 20" * 30 + " 00 02 3A 09 1A 09 0C 46 23 23")


def gb_frame(serial: int, command: int, adu: bytes) -> bytes:
    """A GB/T 26875.3 frame laid out by hand from the fact sheet's table (§1.4)."""
    body = (serial.to_bytes(2, "little") + b"\x01\x01" + bytes([0, 0, 12, 26, 11, 26])
            + (0x0379).to_bytes(6, "little") + (0x015B38).to_bytes(6, "little")
            + len(adu).to_bytes(2, "little") + bytes([command]) + adu)
    return b"@@" + body + bytes([sum(body) & 0xFF]) + b"##"


def gb_fire(serial: int, part: int = 131082, status: int = 0x0002) -> bytes:
    obj = (bytes([1, 1, 40]) + part.to_bytes(4, "little") + status.to_bytes(2, "little")
           + b" " * 30 + b"\x00" + bytes([0, 0, 12, 26, 11, 26]))
    return gb_frame(serial, 2, bytes([2, 1]) + obj)


def gb_reset(serial: int) -> bytes:  # type 1 system status, bit 13 复位
    return gb_frame(serial, 2, bytes([1, 1, 1, 1]) + (1 << 13).to_bytes(2, "little")
                    + bytes([0, 0, 12, 26, 11, 26]))


def z2m_state(smoke: bool) -> dict:
    """A Zigbee2MQTT smoke detector's state message, as its device pages show it."""
    return {"battery": 97, "battery_low": False, "linkquality": 116, "smoke": smoke,
            "tamper": False, "voltage": 3000}


def frigate_event(kind: str, event_id: str, label: str = "fire") -> dict:
    """A Frigate ``frigate/events`` message (new/update/end with before/after)."""
    now = time.time()
    after = {"id": event_id, "camera": "yard", "frame_time": now, "label": label,
             "sub_label": None, "top_score": 0.91, "score": 0.88, "false_positive": False,
             "start_time": now - 1, "end_time": now if kind == "end" else None,
             "box": [900, 300, 1100, 500], "area": 40000, "ratio": 1.0,
             "region": [800, 200, 1200, 600], "current_zones": ["yard_lawn"],
             "entered_zones": ["yard_lawn"], "stationary": False, "motionless_count": 0,
             "position_changes": 1, "has_clip": True, "has_snapshot": True}
    return {"type": kind, "before": {**after, "top_score": 0.8}, "after": after}


# ------------------------------------------------------------------ the lab

class Pty(PtyPair):
    """A serial line: ``gateway`` is the end the site file names, ``device`` the panel's
    or sensor's end; ``pull()`` is the cable pulled out, ``plug()`` put back."""

    def write(self, data: bytes) -> None:
        """Bytes from the panel's end."""
        fd = os.open(self.device, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


MODBUS_SERVER = r"""
import asyncio, sys
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

value = [int(sys.argv[2])]

async def before_reply(function_code, start_address, address, count, registers, set_values):
    if start_address <= 0 < start_address + len(registers):
        registers[0 - start_address] = value[0]  # holding register 0 is the gas reading

async def main(port):
    bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
    regs = [SimData(address=r, values=0, datatype=DataType.REGISTERS) for r in range(10)]
    unit = SimDevice(id=1, simdata=(bits, list(bits), regs,
                                    [SimData(address=0, datatype=DataType.INVALID)]),
                     action=before_reply)
    server = ModbusSerialServer([unit], framer=FramerType.RTU, port=port, baudrate=9600)
    loop = asyncio.get_running_loop()

    async def commands():  # one number per line on stdin: the new value of register 0
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            value[0] = int(line)

    loop.create_task(commands())
    await server.serve_forever()

asyncio.run(main(sys.argv[1]))
"""


class ModbusUnit:
    """pymodbus's own serial server (its simulator datastore) as unit 1, registers 0..9."""

    def __init__(self, port: Path):
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, value: int) -> None:
        self.stop()
        self.proc = subprocess.Popen([sys.executable, "-c", MODBUS_SERVER, str(self.port),
                                      str(value)], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def set(self, value: int) -> float:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{value}\n".encode())
        self.proc.stdin.flush()
        return time.time()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        self.proc = None


SITE = """
site: test-site
sla: {locate_s: 10, confirm_s: 30, in_place_s: 60}
zones:
  - {id: z-1f, building: z, floor: 1, polygon: [[0,0],[40,0],[40,20],[0,20]], worker: w-1}
  - {id: f-1f, building: f, floor: 1, polygon: [[100,0],[140,0],[140,20],[100,20]], worker: w-1}
  - {id: p-1f, building: p, floor: 1, polygon: [[200,0],[240,0],[240,20],[200,20]], worker: w-1}
  - {id: g-1f, building: g, floor: 1, polygon: [[300,0],[340,0],[340,20],[300,20]], worker: w-1}
  - {id: m-1f, building: m, floor: 1, polygon: [[400,0],[440,0],[440,20],[400,20]], worker: w-1}
feeds:
  - {name: z2m, type: zigbee2mqtt, base_topic: zigbee2mqtt}
  - {name: nvr, type: frigate, base_topic: frigate}
  - {name: panel, type: panel-printer, port: "PANEL", baud: 9600, dialect: gst}
  - {name: uitd, type: gb26875, listen: "127.0.0.1:GBPORT", heartbeat_s: 3}
  - {name: rs485, type: modbus, port: "MODBUS", baud: 9600, poll_s: 0.3, timeout_s: 0.3}
devices:
  - {id: smk-z, kind: smoke, floor: 1, x: 5, y: 5, feed: z2m, ref: kitchen_smoke,
     heartbeat_s: 2}
  - {id: cam-f, kind: camera, floor: 1, x: 100, y: 0, azimuth_deg: 45, fov_deg: 90,
     feed: nvr, ref: yard, heartbeat_s: 2}
  - {id: smk-p, kind: smoke, floor: 1, x: 205, y: 5, feed: panel, ref: "004-004"}
  - {id: smk-g, kind: smoke, floor: 1, x: 305, y: 5, feed: uitd, ref: "1/1/131082"}
  - {id: gas-m, kind: gas, floor: 1, x: 405, y: 5, feed: rs485, ref: "1:0",
     scale: 0.1, alarm_at: 25, clear_at: 10}
responders:
  - {id: w-1, tier: 0}
  - {id: guard-1, tier: 1}
tiers:
  - {tier: 1, ack_timeout_s: 30}
"""


class Lab:
    def __init__(self, folder: Path, broker: Mosquitto, influx: InfluxDB):
        self.folder = folder
        self.broker = broker
        self.panel = Pty(folder, "panel")
        self.rs485 = Pty(folder, "rs485")
        self.modbus = ModbusUnit(self.rs485.device)
        self.gb_port = free_port()
        site = (SITE.replace("PANEL", str(self.panel.gateway))
                .replace("MODBUS", str(self.rs485.gateway))
                .replace("GBPORT", str(self.gb_port)))
        (folder / "site.yaml").write_text(site)
        self.influx = influx
        self.gateway = GatewayProc(folder / "site.yaml", broker.url,
                                   influx.url("feeds_e2e"), folder / "journal.sqlite",
                                   folder / "gateway.log")
        self.probe: Probe | None = None

    def detected(self, incident: str, device: str, *need: str) -> dict:
        """The incident's ``detected`` step for ``device``, read back from InfluxDB, once
        the fields in ``need`` are there: InfluxDB 1.x stores each field of a point apart,
        and a query that lands during the write can see some of them and not others."""
        def rows() -> list[dict]:
            return [r for r in influx_steps(self.influx.base_url, "feeds_e2e", incident)
                    if r["stage"] == "detected" and r.get("device") == device
                    and all(r.get(k) is not None for k in ("elapsed_s", *need))]
        (row,) = wait_for(rows, 10, f"detected step of {device} in {incident}")
        return row

    def records(self, measurement: str, device: str, state: str) -> list[dict]:
        """The device's ``state`` records in InfluxDB, once there are any (10 s at most):
        they travel in their own write, which may come after the steps'."""
        def rows() -> list[dict]:
            return [r for r in influx_rows(
                self.influx.base_url, "feeds_e2e",
                f"SELECT * FROM {measurement} WHERE \"device\" = '{device}'")
                if r["state"] == state]
        return wait_for(rows, 10, f"{measurement} {state} record of {device}")

    def mosquitto_pub(self, topic: str, payload: dict | str | bytes) -> float:
        data = payload if isinstance(payload, str | bytes) else json.dumps(payload)
        sent = time.time()
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port),
                        "-q", "1", "-t", topic, "-m", data], check=True, timeout=10)
        return sent

    def incident_for(self, device: str, after: float, timeout: float = 5.0) -> tuple[str, float]:
        """The incident a device's alarm opened after ``after``; and how long it took."""
        assert self.probe is not None
        msg = self.probe.wait(lambda m: m.t >= after and m.topic.startswith("incident/")
                              and m.topic.count("/") == 1 and bool(m.payload)
                              and device in m.json().get("devices", [])
                              and m.json()["state"] != "closed", timeout)
        return msg.json()["id"], msg.t - after

    def close(self, incident: str) -> None:
        assert self.probe is not None
        self.probe.pub(f"incident/{incident}/close", {"by": "w-1", "reason": "test done"})
        self.probe.wait(lambda m: m.topic == f"incident/{incident}" and bool(m.payload)
                        and m.json()["state"] == "closed")

    def device_state(self, device: str, state: str, after: float, timeout: float = 5.0) -> float:
        assert self.probe is not None
        msg = self.probe.wait(lambda m: m.t >= after and m.topic == f"device/{device}"
                              and bool(m.payload) and m.json()["state"] == state, timeout)
        return msg.t - after

    def trouble(self, device: str, after: float, timeout: float = 10.0) -> tuple[dict, float]:
        assert self.probe is not None
        msg = self.probe.wait(lambda m: m.t >= after and m.topic == f"trouble/{device}"
                              and bool(m.payload), timeout)
        return msg.json(), msg.t - after

    def alive(self) -> None:
        assert self.gateway.proc is not None and self.gateway.proc.poll() is None, \
            self.gateway.log_text()[-3000:]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("feeds")
    broker, influx = Mosquitto(), InfluxDB()
    broker.start(folder / "mosquitto")
    influx.start(folder / "influx")
    lab = Lab(folder, broker, influx)
    lab.panel.plug()
    lab.rs485.plug()
    lab.modbus.start(0)
    try:
        lab.probe = Probe(broker.port)
        lab.gateway.start()
        yield lab
    finally:
        try:  # every process is stopped by its PID even when the gateway's stop fails
            rc = lab.gateway.stop()
        finally:
            if lab.probe is not None:
                lab.probe.close()
            lab.modbus.stop()
            lab.panel.pull()
            lab.rs485.pull()
            influx.stop()
            broker.stop()
        assert rc == 0, lab.gateway.log_text()[-3000:]


# ------------------------------------------------------------------ the feeds


def test_zigbee2mqtt_alarm_clear_garbage_and_silence(lab: Lab) -> None:
    sent = lab.mosquitto_pub("zigbee2mqtt/kitchen_smoke", z2m_state(True))
    inc, took = lab.incident_for("smk-z", sent)
    assert took < 1.0
    assert lab.detected(inc, "smk-z")["elapsed_s"] == 0.0
    sent = lab.mosquitto_pub("zigbee2mqtt/kitchen_smoke", z2m_state(False))
    lab.device_state("smk-z", "normal", sent)
    lab.close(inc)
    lab.mosquitto_pub("zigbee2mqtt/kitchen_smoke", "{not json")
    lab.mosquitto_pub("zigbee2mqtt/kitchen_smoke", {"smoke": "maybe"})
    lab.mosquitto_pub("zigbee2mqtt/no_such_device", z2m_state(True))
    sent = lab.mosquitto_pub("zigbee2mqtt/kitchen_smoke", z2m_state(True))
    inc2, took = lab.incident_for("smk-z", sent)
    assert inc2 != inc and took < 1.0
    lab.alive()
    # heartbeat_s 2: silent from its last message, it is trouble within 2 + 1 s
    body, took = lab.trouble("smk-z", sent)
    assert body["trouble"] == "offline" and took < 3.0, (body, took)
    lab.close(inc2)


def test_frigate_fire_event_with_its_box_and_bearing(lab: Lab) -> None:
    sent = lab.mosquitto_pub("frigate/events", frigate_event("new", "1700.1-abc"))
    inc, took = lab.incident_for("cam-f", sent)
    assert took < 1.0
    step = lab.detected(inc, "cam-f", "bearing_deg")
    # box centre x = 1000 of 1280 px: 45 + 90 * (0.5 - 1000/1280) = 19.7 degrees
    assert abs(step["bearing_deg"] - 19.6875) < 1e-6, step
    (signal,) = lab.records("signal", "cam-f", "alarm")
    assert signal["box"] == "900,300,1100,500" and signal["feed"] == "nvr"
    assert signal["zones"] == "yard_lawn" and abs(signal["top_score"] - 0.91) < 1e-9
    lab.mosquitto_pub("frigate/events", frigate_event("update", "1700.1-abc"))
    sent = lab.mosquitto_pub("frigate/events", frigate_event("end", "1700.1-abc"))
    lab.device_state("cam-f", "normal", sent)
    lab.close(inc)
    lab.mosquitto_pub("frigate/events", b"\xff\xfe garbage")
    person = lab.mosquitto_pub("frigate/events", frigate_event("new", "1700.2-p", "person"))
    sent = lab.mosquitto_pub("frigate/events", frigate_event("new", "1700.3-x", "smoke"))
    assert lab.probe is not None
    assert not lab.probe.find(lambda m: m.t >= person and m.t < sent
                              and m.topic.startswith("incident/")), "a person is no fire"
    inc2, took = lab.incident_for("cam-f", sent)
    assert inc2 != inc and took < 1.0
    lab.alive()
    lab.close(inc2)
    # heartbeat_s 2: a camera Frigate has said nothing about is a trouble within 2 + 1 s
    body, took = lab.trouble("cam-f", sent)
    assert body["trouble"] == "offline" and took < 3.0, (body, took)


def test_panel_printer_fire_reset_garbage_split_and_pulled_cable(lab: Lab) -> None:
    sent = time.time()
    lab.panel.write(GST_FIRE_004_004)
    inc, took = lab.incident_for("smk-p", sent)
    assert took < 1.0
    assert lab.detected(inc, "smk-p")["elapsed_s"] == 0.0
    sent = time.time()
    lab.panel.write(GST_RESET)
    lab.device_state("smk-p", "normal", sent)
    lab.close(inc)
    lab.panel.write(os.urandom(2000) + b"\x1b@\x1b1\x00\n")  # junk and another brand's ESCs
    half = len(GST_FIRE_004_004) // 2
    lab.panel.write(GST_FIRE_004_004[:half])
    time.sleep(0.3)
    sent = time.time()
    lab.panel.write(GST_FIRE_004_004[half:])
    inc2, took = lab.incident_for("smk-p", sent)
    assert inc2 != inc and took < 1.0
    lab.panel.write(GST_RESET)
    lab.close(inc2)
    # pull the cable: the feed is down (a trouble), then plug it back: it comes back by itself
    pulled = time.time()
    lab.panel.pull()
    body, _ = lab.trouble("panel", pulled)
    assert body["trouble"] == "offline"
    lab.panel.plug()
    assert lab.probe is not None
    lab.probe.wait(lambda m: m.t >= pulled and m.topic == "feed/panel" and bool(m.payload)
                   and m.json()["state"] == "up", 10)
    sent = time.time()
    lab.panel.write(GST_FIRE_004_004)
    inc3, took = lab.incident_for("smk-p", sent)
    assert took < 1.0
    lab.alive()
    lab.panel.write(GST_RESET)
    lab.close(inc3)


def test_gb26875_confirm_deny_fire_reset_and_silence(lab: Lab) -> None:
    conn = socket.create_connection(("127.0.0.1", lab.gb_port), timeout=5)
    try:
        sent = time.time()
        reply = gb_exchange(conn, GB_SMOKE_FIRE)
        assert reply[:2] == b"@@" and reply[-2:] == b"##" and len(reply) == 30
        assert reply[26] == 3, "确认"
        assert reply[2:4] == GB_SMOKE_FIRE[2:4], "the serial number is echoed"
        assert sum(reply[2:27]) & 0xFF == reply[27]
        inc, took = lab.incident_for("smk-g", sent)
        assert took < 1.0
        assert lab.detected(inc, "smk-g")["elapsed_s"] == 0.0
        bad = bytearray(gb_fire(7))
        bad[-3] ^= 0x55  # a bad checksum
        reply = gb_exchange(conn, bytes(bad))
        assert reply[26] == 6 and reply[2:4] == (7).to_bytes(2, "little"), "否认"
        sent = time.time()
        reply = gb_exchange(conn, gb_reset(8))
        assert reply[26] == 3
        lab.device_state("smk-g", "normal", sent)
        lab.close(inc)
        conn.sendall(b"garbage@@\x00\x01" + os.urandom(100))  # junk, then resync
        frame = gb_fire(9)
        conn.sendall(frame[:20])
        time.sleep(0.2)
        sent = time.time()
        reply = gb_exchange(conn, frame[20:])
        assert reply.endswith(gb_frame(9, 3, b"")[-3:][-2:]) and b"@@" in reply
        inc2, took = lab.incident_for("smk-g", sent)
        assert took < 1.0
        gb_exchange(conn, gb_reset(10))
        lab.close(inc2)
        # silent past the feed's heartbeat_s (3 s): the transmission device is a trouble
        quiet = time.time()
        body, took = lab.trouble("uitd", quiet, timeout=8)
        assert body["trouble"] == "offline" and took < 3.0 + 1.0 + 0.5, (body, took)
        # the line is cut in the middle of a frame; the device dials in again
        conn.sendall(gb_fire(11)[:40])
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    finally:
        conn.close()  # with SO_LINGER 0: a reset, as when a cable is pulled
    conn = socket.create_connection(("127.0.0.1", lab.gb_port), timeout=5)
    try:
        sent = time.time()
        reply = gb_exchange(conn, gb_fire(12))
        assert reply[26] == 3 and reply[2:4] == (12).to_bytes(2, "little")
        inc3, took = lab.incident_for("smk-g", sent)
        assert took < 1.0
        assert lab.probe is not None
        lab.probe.wait(lambda m: m.t >= sent and m.topic == "feed/uitd" and bool(m.payload)
                       and m.json()["state"] == "up", 5)
        gb_exchange(conn, gb_reset(13))
        lab.close(inc3)
    finally:
        conn.close()
    lab.alive()


def test_modbus_gas_alarm_clear_silent_unit_and_pulled_cable(lab: Lab) -> None:
    assert lab.probe is not None
    lab.device_state("gas-m", "normal", 0, timeout=10)  # polled: raw 0 = 0 %LEL
    sent = lab.modbus.set(300)  # 30.0 %LEL, over alarm_at 25
    inc, took = lab.incident_for("gas-m", sent)
    assert took < 0.3 + 1.0, "within a poll period and a second"
    assert lab.detected(inc, "gas-m", "value")["value"] == 30.0
    sent = lab.modbus.set(200)  # 20.0: between clear_at and alarm_at, still alarm
    time.sleep(1.0)
    assert not lab.probe.find(lambda m: m.t >= sent and m.topic == "device/gas-m")
    sent = lab.modbus.set(50)  # 5.0 %LEL, at or under clear_at 10
    lab.device_state("gas-m", "normal", sent)
    lab.close(inc)
    # noise on the RS-485 line (a second writer on the bus): replies with bad CRCs
    for _ in range(5):
        lab.rs485.write(os.urandom(64))
        time.sleep(0.1)
    sent = lab.modbus.set(350)
    inc_noise, took = lab.incident_for("gas-m", sent, timeout=5)
    assert took < 0.3 + 0.3 + 1.0, "the next alarm after the noise within a poll and a second"
    sent = lab.modbus.set(50)
    lab.device_state("gas-m", "normal", sent)
    lab.close(inc_noise)
    silent = time.time()
    lab.modbus.stop()
    body, took = lab.trouble("gas-m", silent)
    assert body["trouble"] == "no_response" and took < 0.3 + 0.3 + 1.0 + 0.5, (body, took)
    assert not lab.probe.find(lambda m: m.t >= silent and m.topic.startswith("incident/")
                              and m.topic.count("/") == 1 and bool(m.payload)
                              and "gas-m" in m.json().get("devices", [])
                              and m.json()["state"] != "closed"), "silence is not a fire"
    pulled = time.time()
    lab.rs485.pull()
    lab.trouble("rs485", pulled)
    lab.rs485.plug()
    lab.modbus.start(0)
    lab.device_state("gas-m", "normal", pulled, timeout=15)
    sent = lab.modbus.set(400)
    inc2, took = lab.incident_for("gas-m", sent)
    assert took < 0.3 + 1.0
    lab.alive()
    lab.close(inc2)


def test_mqtt_feeds_resume_after_the_broker_restarts(lab: Lab) -> None:
    """The Zigbee2MQTT and Frigate subscriptions live in the gateway's persistent session:
    after the broker's restart (its link pulled and put back) their next alarms count."""
    assert lab.probe is not None
    connects = lab.gateway.log_text().count("mqtt connected")
    lab.probe.close()
    lab.broker.stop()
    time.sleep(1.0)
    lab.broker.start()
    lab.gateway.wait_log("mqtt connected", timeout=15, count=connects + 1)
    lab.probe = Probe(lab.broker.port)
    lab.mosquitto_pub("zigbee2mqtt/kitchen_smoke", z2m_state(False))  # its last alarm ended
    sent = lab.mosquitto_pub("zigbee2mqtt/kitchen_smoke", z2m_state(True))
    inc, took = lab.incident_for("smk-z", sent)
    assert took < 1.0
    sent = lab.mosquitto_pub("frigate/events", frigate_event("new", "1700.9-r"))
    inc2, took = lab.incident_for("cam-f", sent)
    assert took < 1.0
    lab.alive()
    lab.close(inc)
    lab.close(inc2)
