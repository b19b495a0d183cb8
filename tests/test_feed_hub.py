"""gateway.feeds.FeedHub.events: a feed's events in the gateway's terms (unit tests).

The transports and codecs are tested against real ports and brokers elsewhere; here the
translation alone: ref to device id, scaling and thresholds, signed registers, resets,
troubles, and what is counted when a ref is unknown or a reading is NaN; and that each
transport is built with the feed's settings (Modbus value types, the GB/T 26875.3
centre address and clock offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from typing import Any

import pytest

from drivers.feed import Garbage, Reading, Reset, Seen, Trouble
from drivers.gb26875 import (
    CMD_CONFIRM,
    CMD_SEND,
    ComponentStatus,
    Frame,
    build_adu,
    decode_frame,
    encode_frame,
    label_to_unix,
    time_label,
)
from drivers.gb26875_server import Gb26875Server
from drivers.modbus import ModbusPoller, ValueType
from drivers.signal import Signal
from gateway.config import parse_site
from gateway.feeds import FeedHub
from gateway.metrics import Metrics
from tests.harness import gb_exchange

SITE = parse_site("""
site: hub
zones:
  - {id: a, floor: 1, polygon: [[0,0],[10,0],[10,10],[0,10]]}
feeds:
  - {name: rs485, type: modbus, port: /dev/null}
  - {name: uitd, type: gb26875, listen: "127.0.0.1:0"}
devices:
  - {id: tmp-out, kind: temperature, floor: 1, x: 1, y: 1, feed: rs485, ref: "1:0",
     scale: 0.1, alarm_at: 57, clear_at: 50, signed: true}
  - {id: gas-1, kind: gas, floor: 1, x: 2, y: 2, feed: rs485, ref: "1:1", scale: 0.1,
     alarm_at: 25, clear_at: 10}
  - {id: smk-1, kind: smoke, floor: 1, x: 3, y: 3, feed: uitd, ref: "1/1/131082"}
  - {id: gas-f, kind: gas, floor: 1, x: 4, y: 4, feed: rs485, ref: "1:2", data_type: float32,
     word_order: little, alarm_at: 25, clear_at: 10}
""")


def hub() -> tuple[FeedHub, list[tuple[str, Any, bool]], Metrics]:
    got: list[tuple[str, Any, bool]] = []
    metrics = Metrics()
    h = FeedHub(SITE, lambda kind, _t, data, urgent: got.append((kind, data, urgent)),
                metrics, clock=lambda: 1_700_000_000 * 10**9)
    return h, got, metrics


def test_a_signed_register_below_zero_reads_negative() -> None:
    h, got, _ = hub()
    h.events("rs485", [Reading("1:0", 65535)])  # 0xFFFF = -1 -> -0.1 degrees
    ((kind, sig, urgent),) = got
    assert kind == "signal" and sig.device == "tmp-out" and sig.state == "clear"
    assert abs(sig.value - (-0.1)) < 1e-9 and not urgent


def test_thresholds_with_hysteresis_and_only_the_edge_is_urgent() -> None:
    h, got, _ = hub()
    for raw in (100, 300, 200, 310, 90, 150):  # 10, 30, 20, 31, 9, 15 %LEL
        h.events("rs485", [Reading("1:1", raw)])
    states = [(sig.state, round(sig.value, 1), urgent) for _k, sig, urgent in got]
    assert states == [("clear", 10.0, False), ("alarm", 30.0, True), ("alarm", 20.0, False),
                      ("alarm", 31.0, False), ("clear", 9.0, False), ("clear", 15.0, False)]


def test_refs_become_device_ids_and_every_kind_of_event_is_routed() -> None:
    h, got, _ = hub()
    h.events("uitd", [Signal("1/1/131082", "alarm"), Trouble("1/1/131082", "fault"),
                      Seen("1/1/131082"), Seen(None), Reset("1/1")])
    assert [(k, u) for k, _d, u in got] == [("signal", True), ("trouble", True),
                                            ("seen", False), ("feed_seen", False),
                                            ("reset", True)]
    assert got[0][1].device == "smk-1" and got[1][1] == ("smk-1", "fault", True, "")
    assert got[4][1] == ("uitd", "1/1")


def test_unknown_refs_and_garbage_are_counted_and_dropped() -> None:
    h, got, metrics = hub()
    h.events("uitd", [Signal("9/9/9", "alarm"), Garbage("bad checksum", "offset 12", 30),
                      Seen("9/9/9"), Trouble("1/2", "fault", active=False)])
    assert got == []
    snap = metrics.snapshot()
    # an alarm from an address no device has is counted; news that something is fine is not
    assert snap["dropped.unknown_ref"] == 1 and snap["dropped.bad_frame"] == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_float_that_is_not_a_number_is_counted_never_an_alarm(bad: float) -> None:
    h, got, metrics = hub()
    h.events("rs485", [Reading("1:2", bad)])
    assert got == [("seen", "gas-f", False)]  # the unit answered: alive, but no value
    assert metrics.snapshot()["dropped.bad_payload"] == 1
    h.events("rs485", [Reading("1:2", 30.5), Reading("1:2", bad), Reading("1:2", 9.5)])
    states = [(k, d.state if k == "signal" else d, u) for k, d, u in got[1:]]
    # the NaN between an alarm and a clear changes nothing: no clear, no second alarm
    assert states == [("signal", "alarm", True), ("seen", "gas-f", False),
                      ("signal", "clear", False)]


def test_a_run_of_nan_readings_is_a_fault_trouble_until_a_number_comes_back() -> None:
    h, got, _ = hub()
    h.events("rs485", [Reading("1:2", math.nan)] * 2)
    assert [k for k, _d, _u in got] == ["seen", "seen"], "two glitches are not a fault"
    h.events("rs485", [Reading("1:2", math.nan)] * 3)  # the third in a row, and more
    troubles = [(d[:3], u) for k, d, u in got if k == "trouble"]
    assert troubles == [(("gas-f", "fault", True), True)], "raised once"
    h.events("rs485", [Reading("1:2", 9.5), Reading("1:2", 9.6)])
    troubles = [d[:3] for k, d, _u in got if k == "trouble"]
    assert troubles == [("gas-f", "fault", True), ("gas-f", "fault", False)]
    assert [k for k, _d, _u in got[-2:]] == ["signal", "signal"]


def test_a_nan_reading_is_logged_with_the_device_and_its_registers(
        capsys: pytest.CaptureFixture[str]) -> None:
    h, _got, _ = hub()
    h.events("rs485", [Reading("1:2", math.nan)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "gas-f" in text and "unit 1 registers 2..3 (float32, ref 1:2)" in text, text


def test_the_modbus_poller_reads_each_value_as_its_device_says() -> None:
    h, _got, _ = hub()
    poller = h.transport("rs485")
    assert isinstance(poller, ModbusPoller)
    # int16 at 0, uint16 at 1, float32 at 2..3: one request covers all four registers
    assert [(b.unit, b.start, b.count) for b in poller.plan] == [(1, 0, 4)]
    assert poller.types == {"1:0": ValueType("int16"),
                            "1:2": ValueType("float32", "little")}


def _gb_site(extra: str) -> Any:
    return parse_site(f"""
site: hub
zones:
  - {{id: a, floor: 1, polygon: [[0,0],[10,0],[10,10],[0,10]]}}
feeds:
  - {{name: uitd, type: gb26875, listen: "127.0.0.1:0"{extra}}}
devices:
  - {{id: smk-1, kind: smoke, floor: 1, x: 3, y: 3, feed: uitd, ref: "1/1/131082"}}
""")


def test_gb26875_server_gets_the_centre_address_and_the_clock_offset() -> None:
    server = FeedHub(_gb_site(""), lambda *a: None, Metrics()).transport("uitd")
    assert isinstance(server, Gb26875Server)
    assert (server.address, server.utc_offset_s) == (0, 8 * 3600)  # the site's +08:00
    site = _gb_site(', centre_address: "38 5B 01 00 00 00", utc_offset: "-03:30"')
    server = FeedHub(site, lambda *a: None, Metrics()).transport("uitd")
    assert isinstance(server, Gb26875Server)
    assert (server.address, server.utc_offset_s) == (0x015B38, -(3 * 3600 + 1800))


async def test_gb26875_reply_carries_the_configured_centre_address_and_beijing_time() -> None:
    """Through the hub's own transport: the 确认 comes from the configured address with
    a Beijing-time label, and the alarm's device time is read as Beijing time."""
    got: list[tuple[str, Any, bool]] = []
    site = _gb_site(', centre_address: "38 5B 01 00 00 00"')
    h = FeedHub(site, lambda kind, _t, data, urgent: got.append((kind, data, urgent)),
                Metrics())
    server = h.transport("uitd")
    assert isinstance(server, Gb26875Server)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.started.wait(), 5)
        sent = time.time()
        label = time_label(sent, 8 * 3600)  # the device's clock: Beijing time
        adu = build_adu([ComponentStatus(1, 1, 42, 131082, 0x0003, "", label)])
        data = encode_frame(Frame(serial=5, time=label, src=0x0379, dst=0x015B38,
                                  command=CMD_SEND, adu=adu))

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
                return gb_exchange(s, data, timeout=2)

        reply = await asyncio.to_thread(exchange)
        f = decode_frame(reply)
        assert (f.command, f.serial, f.src, f.dst) == (CMD_CONFIRM, 5, 0x015B38, 0x0379)
        assert reply[12:18] == bytes.fromhex("38 5B 01 00 00 00")
        stamped = label_to_unix(f.time, 8 * 3600)
        assert stamped is not None and abs(stamped - sent) < 3  # Beijing time, not UTC
        for _ in range(100):
            if any(k == "signal" for k, _d, _u in got):
                break
            await asyncio.sleep(0.01)
        [sig] = [d for k, d, _u in got if k == "signal"]
        assert sig.device == "smk-1" and sig.state == "alarm"
        assert sig.ts is not None and abs(sig.ts - sent) < 2  # not eight hours off
        assert dict(sig.meta)["device_time"].endswith("+08:00")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
