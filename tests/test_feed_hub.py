"""gateway.feeds.FeedHub.events: a feed's events in the gateway's terms (unit tests).

The transports and codecs are tested against real ports and brokers elsewhere; here the
translation alone: ref to device id, scaling and thresholds, signed registers, resets,
troubles, and what is counted when a ref is unknown.
"""

from __future__ import annotations

from typing import Any

from drivers.feed import Garbage, Reading, Reset, Seen, Trouble
from drivers.signal import Signal
from gateway.config import parse_site
from gateway.feeds import FeedHub
from gateway.metrics import Metrics

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
