"""Device and feed supervision in the pure engine, in simulated time (gateway.supervision)."""

from __future__ import annotations

import orjson
import pytest

from drivers.signal import Signal
from gateway.config import parse_site
from gateway.engine import Engine
from gateway.model import NS, Decisions, Refused

SITE = parse_site("""
site: sup
zones:
  - {id: a-1f, building: a, floor: 1, polygon: [[0,0],[20,0],[20,10],[0,10]], worker: w-1}
feeds:
  - {name: z2m, type: zigbee2mqtt}
  - {name: uitd, type: gb26875, listen: "127.0.0.1:9000", heartbeat_s: 30}
devices:
  - {id: smk-1, kind: smoke, floor: 1, x: 5, y: 5, feed: z2m, ref: kitchen, heartbeat_s: 60}
  - {id: smk-2, kind: smoke, floor: 1, x: 9, y: 5, feed: uitd, ref: 1/1/131082}
  - {id: smk-3, kind: smoke, floor: 1, x: 15, y: 5, feed: uitd, ref: 1/2/7}
  - {id: smk-n, kind: smoke, floor: 1, x: 2, y: 2, heartbeat_s: 10}
responders:
  - {id: w-1, tier: 0}
""")
T = 1_700_000_000 * NS


def at(s: float) -> int:
    return T + round(s * NS)


def body(d: Decisions, topic: str) -> dict | None:
    """The last payload published on ``topic`` (None for an empty, clearing message)."""
    found = [p for p in d.publishes if p.topic == topic]
    assert found, f"nothing on {topic}: {[p.topic for p in d.publishes]}"
    return orjson.loads(found[-1].payload) if found[-1].payload else None


def test_silent_device_is_offline_one_heartbeat_after_it_was_last_heard() -> None:
    eng = Engine(SITE)
    eng.tick(at(0))  # the gateway starts: every timer starts now
    eng.signal(Signal("smk-n", "clear"), at(5))
    assert eng.next_deadline_ns() is not None and eng.next_deadline_ns() <= at(15) + 1
    assert not eng.tick(at(14.9)).publishes
    d = eng.tick(at(15.1))
    trouble = body(d, "trouble/smk-n")
    assert trouble is not None and trouble["trouble"] == "offline"
    assert "silent for 10 s" in trouble["detail"]
    assert body(d, "device/smk-n")["state"] == "offline"
    assert [ds.state for ds in d.devices] == ["offline"]  # one device_health record
    again = [p.topic for p in eng.tick(at(40)).publishes if p.topic.endswith("smk-n")]
    assert not again, "reported once, not every tick"
    back = eng.signal(Signal("smk-n", "clear"), at(41))
    assert body(back, "trouble/smk-n") is None  # resolved: empty retained message
    assert body(back, "device/smk-n")["state"] == "normal"


def test_a_device_with_no_heartbeat_is_never_reported_silent() -> None:
    eng = Engine(SITE)
    eng.tick(at(0))
    d = eng.tick(at(100_000))
    assert not [p for p in d.publishes if p.topic.endswith(("smk-2", "smk-3"))]


def test_troubles_stack_and_the_most_severe_is_named() -> None:
    eng = Engine(SITE)
    d = eng.trouble("smk-1", "battery_low", True, at(1))
    assert body(d, "trouble/smk-1")["trouble"] == "battery_low"
    assert body(d, "device/smk-1")["state"] == "trouble"
    d = eng.trouble("smk-1", "offline", True, at(2), "availability offline")
    t = body(d, "trouble/smk-1")
    assert t["trouble"] == "offline" and t["troubles"] == ["offline", "battery_low"]
    assert body(d, "device/smk-1")["state"] == "offline"
    d = eng.seen("smk-1", at(3))  # it speaks again: no longer offline, battery still low
    assert body(d, "trouble/smk-1")["troubles"] == ["battery_low"]
    d = eng.trouble("smk-1", "battery_low", False, at(4))
    assert body(d, "trouble/smk-1") is None
    assert body(d, "device/smk-1")["state"] == "normal"


def test_a_fault_reported_by_a_feed_or_the_gateway_is_the_devices_state() -> None:
    """A sensor reading NaN, a device flooding: ``fault`` as a trouble sets device/ to
    fault with the reason, stays while the device goes on talking, and clears on request."""
    eng = Engine(SITE)
    d = eng.trouble("smk-n", "fault", True, at(1), "flooding: 900 messages/s")
    t = body(d, "trouble/smk-n")
    assert t["trouble"] == "fault" and t["detail"] == "flooding: 900 messages/s"
    assert body(d, "device/smk-n")["state"] == "fault"
    d = eng.trouble("smk-n", "battery_low", True, at(2))  # further troubles stack on it
    assert body(d, "trouble/smk-n")["troubles"] == ["fault", "battery_low"]
    d = eng.trouble("smk-n", "fault", False, at(3))
    assert body(d, "trouble/smk-n")["troubles"] == ["battery_low"]
    assert body(d, "device/smk-n")["state"] == "trouble"
    d = eng.trouble("smk-n", "fault", False, at(4))  # nothing to clear: nothing said
    assert not d.publishes


def test_the_end_of_a_gateway_fault_leaves_a_fault_the_device_sent() -> None:
    """A detector reports its own fault, then floods: when the flood fault ends, the
    device is still in fault until it says otherwise."""
    eng = Engine(SITE)
    eng.signal(Signal("smk-n", "fault"), at(1))
    eng.trouble("smk-n", "fault", True, at(2), "flooding: 900 messages/s")
    eng.trouble("smk-n", "fault", False, at(3))
    assert eng.device_states["smk-n"].state == "fault"
    d = eng.signal(Signal("smk-n", "clear"), at(4))
    assert body(d, "device/smk-n")["state"] == "normal"


def test_a_trouble_is_not_an_incident_and_an_alarm_outranks_it() -> None:
    eng = Engine(SITE)
    d = eng.trouble("smk-1", "tamper", True, at(1))
    assert not d.steps and not eng.incidents
    d = eng.signal(Signal("smk-1", "alarm"), at(2))
    assert body(d, "device/smk-1")["state"] == "alarm"
    assert body(d, "device/smk-1")["troubles"] == ["tamper"]
    assert [s.stage for s in d.steps][:2] == ["detected", "located"]


def test_panel_reset_clears_the_feeds_devices_but_not_the_incident() -> None:
    eng = Engine(SITE)
    eng.signal(Signal("smk-2", "alarm"), at(1))
    eng.signal(Signal("smk-3", "fault"), at(2))
    eng.signal(Signal("smk-1", "alarm"), at(3))  # another feed: a panel reset is not its
    d = eng.reset("uitd", None, at(5))
    assert body(d, "device/smk-2")["state"] == "normal"
    assert body(d, "device/smk-3")["state"] == "normal"
    assert body(d, "trouble/smk-3") is None
    assert eng.device_states["smk-1"].state == "alarm"
    assert not d.steps and [i for i in eng.incidents.values() if i.active]


def test_reset_of_one_system_leaves_the_others() -> None:
    eng = Engine(SITE)
    eng.signal(Signal("smk-2", "alarm"), at(1))
    eng.signal(Signal("smk-3", "alarm"), at(1))
    eng.reset("uitd", "1/1", at(2))
    assert eng.device_states["smk-2"].state == "normal"
    assert eng.device_states["smk-3"].state == "alarm"


def test_feed_link_down_and_up_and_silent_far_end() -> None:
    eng = Engine(SITE)
    eng.tick(at(0))
    d = eng.link("uitd", True, at(1), "127.0.0.1:50000")
    assert body(d, "feed/uitd")["state"] == "up"
    eng.feed_seen("uitd", at(10))
    d = eng.tick(at(40.5))  # heartbeat_s 30 after the last frame at 10 s
    assert body(d, "feed/uitd")["state"] == "down"
    assert body(d, "trouble/uitd")["trouble"] == "offline"
    assert "silent for 30 s" in body(d, "trouble/uitd")["detail"]
    assert [(ds.device, ds.state) for ds in d.devices if ds.kind == "feed"] == [
        ("uitd", "offline")]
    d = eng.feed_seen("uitd", at(50))
    assert body(d, "feed/uitd")["state"] == "up" and body(d, "trouble/uitd") is None
    d = eng.link("uitd", False, at(60), "connection reset")
    assert body(d, "trouble/uitd")["detail"] == "connection reset"
    retained = {p.topic for p in eng.retained()}
    assert {"feed/uitd", "trouble/uitd"} <= retained


def test_unknown_device_or_feed_is_refused() -> None:
    eng = Engine(SITE)
    with pytest.raises(Refused):
        eng.trouble("nope", "tamper", True, at(1))
    with pytest.raises(Refused):
        eng.link("nope", True, at(1))


def test_troubles_survive_a_restart_through_the_journal(tmp_path) -> None:
    from gateway.journal import Journal

    eng = Engine(SITE)
    d = eng.trouble("smk-1", "battery_low", True, at(1))
    j = Journal(tmp_path / "j.sqlite")
    j.commit([], (), d.devices)
    again = Engine(SITE)
    again.restore([], j.devices())
    topics = {p.topic: p for p in again.retained()}
    assert orjson.loads(topics["trouble/smk-1"].payload)["trouble"] == "battery_low"
    j.close()
