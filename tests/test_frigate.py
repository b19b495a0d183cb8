"""Frigate feed (drivers.frigate) and its twin (firmware_sim.frigate_events).

A fire or smoke tracked object alarms once per Frigate event id, with a bearing from its
box; the end of the last one on a camera clears it; false positives and ordinary objects
never alarm; anything malformed is Garbage naming the topic, never an exception. The
last test runs the simulated Frigate as a separate process against a real Mosquitto.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.feed import FeedEvent, Garbage, Seen, Trouble
from drivers.frigate import MAX_ACTIVE, MAX_PAYLOAD, CameraView, Frigate, normalise
from drivers.signal import Signal
from firmware_sim.lab import Mosquitto
from tests.test_zigbee2mqtt import decode_from_broker

FAST = settings(max_examples=200, deadline=None)
EVENTS, AVAILABLE, AUDIO = "frigate/events", "frigate/available", "frigate/cam-01/audio/fire_alarm"


def codec() -> Frigate:
    return Frigate("frigate", {"cam-01": CameraView(45.0, 90.0, 1280),
                               "cam-blind": CameraView()})


def event(kind: str, event_id: str = "1700000000.5-abc", label: str = "fire",
          camera: str = "cam-01", **after: Any) -> bytes:
    body: dict[str, Any] = {
        "id": event_id, "camera": camera, "label": label, "sub_label": None,
        "top_score": 0.91, "score": 0.88, "false_positive": False,
        "start_time": 1700000000.5, "end_time": 1700000030.0 if kind == "end" else None,
        "box": [100, 200, 300, 400], "area": 40000, "region": [0, 100, 400, 500],
        "current_zones": ["kitchen", "hall"], "entered_zones": ["kitchen", "hall"],
    }
    body.update(after)
    return orjson.dumps({"type": kind, "before": body, "after": body})


def signals(events: list[FeedEvent]) -> list[Signal]:
    return [e for e in events if isinstance(e, Signal)]


def states(events: list[FeedEvent]) -> list[str]:
    return [e.state for e in signals(events)]


# ------------------------------------------------------------------ bearing maths


def test_bearing_of_the_centre_is_the_azimuth() -> None:
    view = CameraView(45.0, 90.0, 1280)
    assert view.bearing((600, 0, 680, 10)) == 45.0


def test_left_edge_is_counter_clockwise_of_the_axis() -> None:
    view = CameraView(45.0, 90.0, 1280)
    assert view.bearing((0, 0, 0, 10)) == 90.0  # azimuth + fov/2
    assert view.bearing((1280, 0, 1280, 10)) == 0.0  # azimuth - fov/2
    assert view.bearing((320, 0, 320, 10)) == 67.5  # a quarter in: fov/4 to the left


def test_bearing_wraps_around_north_both_ways() -> None:
    assert CameraView(350.0, 40.0, 1000).bearing((0, 0, 0, 1)) == pytest.approx(10.0)
    assert CameraView(5.0, 40.0, 1000).bearing((1000, 0, 1000, 1)) == pytest.approx(345.0)
    assert CameraView(-90.0, 60.0, 640).bearing((320, 0, 320, 1)) == 270.0
    assert CameraView(720.0, 60.0, 640).bearing((320, 0, 320, 1)) == 0.0


def test_normalise_never_returns_360() -> None:
    assert normalise(-1e-15) == 0.0 and normalise(360.0) == 0.0 and normalise(-10) == 350.0


def test_a_box_beyond_the_frame_stays_inside_the_field_of_view() -> None:
    view = CameraView(45.0, 90.0, 640)  # frame_width set too small for 1280-wide boxes
    assert view.bearing((1200, 0, 1280, 10)) == 0.0


def test_no_bearing_without_azimuth_or_field_of_view() -> None:
    assert CameraView().bearing((0, 0, 10, 10)) is None
    assert CameraView(azimuth_deg=10).bearing((0, 0, 10, 10)) is None
    assert CameraView(fov_deg=10).bearing((0, 0, 10, 10)) is None


@pytest.mark.parametrize("kwargs", [
    {"azimuth_deg": float("nan")}, {"fov_deg": 0}, {"fov_deg": 361}, {"fov_deg": True},
    {"frame_width": 0}, {"frame_width": 12.5}, {"azimuth_deg": "north"},
])
def test_camera_view_is_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CameraView(**kwargs)


@FAST
@given(az=st.floats(-1e4, 1e4), fov=st.floats(0.1, 360), width=st.integers(1, 8000),
       x1=st.floats(0, 9000), dx=st.floats(0, 9000))
def test_bearing_is_in_range_and_inside_the_field_of_view(
    az: float, fov: float, width: int, x1: float, dx: float,
) -> None:
    b = CameraView(az, fov, width).bearing((x1, 0, x1 + dx, 1))
    assert b is not None and 0.0 <= b < 360.0
    off = (b - az + 180.0) % 360.0 - 180.0  # signed angle from the axis
    assert abs(off) <= fov / 2 + 1e-6 or abs(abs(off) - 180.0) < 1e-6


# ------------------------------------------------------------------ events


def test_topics() -> None:
    assert Frigate("nvr/", {}).topics() == ["nvr/events", "nvr/available",
                                           "nvr/+/audio/fire_alarm"]


def test_fire_alarms_once_with_bearing_time_and_metadata_then_clears_at_the_end() -> None:
    f = codec()
    out = f.receive(EVENTS, event("new"), 0)
    # box centre x 200 of 1280: 45 + 90 * (0.5 - 200/1280) = 75.9375
    assert out == [Signal("cam-01", "alarm", ts=1700000000.5, bearing_deg=75.9375, meta=(
        ("box", "100,200,300,400"), ("top_score", 0.91), ("zones", "kitchen,hall"),
        ("label", "fire"), ("event", "1700000000.5-abc"))), Seen("cam-01")]
    assert f.receive(EVENTS, event("update", top_score=0.97, box=[0, 0, 50, 50]), 1) == [
        Seen("cam-01")]  # an update of a signalled event refreshes nothing
    assert f.receive(EVENTS, event("end"), 2) == [
        Signal("cam-01", "clear", ts=1700000030.0), Seen("cam-01")]


def test_smoke_label_alarms_too_and_the_first_message_may_be_an_update() -> None:
    f = codec()
    [sig] = signals(f.receive(EVENTS, event("update", label="smoke"), 0))
    assert sig.state == "alarm" and ("label", "smoke") in sig.meta
    assert signals(f.receive(EVENTS, event("update", label="smoke"), 1)) == []


def test_audio_fire_alarm_event_has_no_bearing() -> None:
    [sig] = signals(codec().receive(EVENTS, event("new", label="fire_alarm"), 0))
    assert sig.state == "alarm" and sig.bearing_deg is None
    assert ("label", "fire_alarm") in sig.meta


def test_clear_waits_for_the_last_fire_event_on_the_camera() -> None:
    f = codec()
    assert states(f.receive(EVENTS, event("new", "a"), 0)) == ["alarm"]
    assert states(f.receive(EVENTS, event("new", "b", label="smoke"), 1)) == ["alarm"]
    assert states(f.receive(EVENTS, event("end", "a"), 2)) == []
    assert states(f.receive(EVENTS, event("end", "b", label="smoke"), 3)) == ["clear"]


def test_other_cameras_events_do_not_hold_a_clear() -> None:
    f = codec()
    f.receive(EVENTS, event("new", "a"), 0)
    f.receive(EVENTS, event("new", "b", camera="cam-blind"), 0)
    assert states(f.receive(EVENTS, event("end", "a"), 1)) == ["clear"]


def test_a_camera_without_view_alarms_without_bearing() -> None:
    [sig] = signals(codec().receive(EVENTS, event("new", camera="cam-blind"), 0))
    assert sig.bearing_deg is None and sig.device == "cam-blind"


@pytest.mark.parametrize("label", ["person", "car", "dog"])
@pytest.mark.parametrize("kind", ["new", "update", "end"])
def test_other_labels_only_show_the_camera_is_alive(label: str, kind: str) -> None:
    assert codec().receive(EVENTS, event(kind, label=label), 0) == [Seen("cam-01")]


def test_false_positives_never_alarm() -> None:
    f = codec()
    for kind in ("new", "update", "end"):
        assert f.receive(EVENTS, event(kind, false_positive=True), 0) == [Seen("cam-01")]


def test_an_alarm_that_turns_false_positive_is_cleared() -> None:
    f = codec()
    assert states(f.receive(EVENTS, event("new"), 0)) == ["alarm"]
    assert states(f.receive(EVENTS, event("update", false_positive=True), 1)) == ["clear"]
    assert states(f.receive(EVENTS, event("end", false_positive=True), 2)) == []


def test_a_false_positive_does_not_clear_another_fire() -> None:
    f = codec()
    f.receive(EVENTS, event("new", "a"), 0)
    f.receive(EVENTS, event("new", "b"), 0)
    assert states(f.receive(EVENTS, event("update", "b", false_positive=True), 1)) == []
    assert states(f.receive(EVENTS, event("end", "a"), 2)) == ["clear"]


def test_open_events_per_camera_are_bounded_and_still_clear_at_the_end() -> None:
    f = codec()
    ids = [f"e{i}" for i in range(MAX_ACTIVE + 5)]
    alarms = [states(f.receive(EVENTS, event("new", i), 0)) for i in ids]
    assert alarms == [["alarm"]] * len(ids)  # an alarm is never dropped for space
    assert len(f._active["cam-01"]) == MAX_ACTIVE
    ends = [states(f.receive(EVENTS, event("end", i), 1)) for i in ids]
    assert ends == [[]] * (len(ids) - 1) + [["clear"]]


def test_fields_that_only_describe_are_dropped_alone() -> None:
    f = codec()
    out = f.receive(EVENTS, event("new", box=[1, 2, 3], top_score=1.5, start_time="now",
                                  current_zones="kitchen"), 0)
    [sig] = signals(out)
    assert sig.bearing_deg is None and sig.ts is None
    assert sig.meta == (("top_score", 0.88), ("label", "fire"), ("event", "1700000000.5-abc"))
    bad = [e for e in out if isinstance(e, Garbage)]
    assert {g.reason.split("'")[1] for g in bad} == {
        "after.box", "after.top_score", "after.start_time", "after.current_zones"}
    assert all(EVENTS in g.reason for g in bad)


def test_missing_descriptions_are_simply_absent() -> None:
    raw = {"type": "new", "after": {"id": "x", "camera": "cam-01", "label": "fire"}}
    out = codec().receive(EVENTS, orjson.dumps(raw), 0)
    assert out == [Signal("cam-01", "alarm", meta=(("label", "fire"), ("event", "x"))),
                   Seen("cam-01")]


# ------------------------------------------------------------------ garbage


@pytest.mark.parametrize("payload, why", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe garbage", "not JSON"),
    (b"[]", "JSON object"),
    (b'{"after": {}}', "'type'"),
    (b'{"type": "started", "after": {}}', "'type'"),
    (b'{"type": "new"}', "'after'"),
    (b'{"type": "new", "after": []}', "'after'"),
    (orjson.dumps({"type": "new", "after": {"id": "x", "camera": 7, "label": "fire"}}),
     "after.camera"),
    (orjson.dumps({"type": "new", "after": {"id": "x", "camera": "cam-01", "label": None}}),
     "after.label"),
    (orjson.dumps({"type": "new", "after": {"id": "", "camera": "cam-01", "label": "fire"}}),
     "after.id"),
    (event("new", "x" * 200), "after.id"),
    (event("new", false_positive="no"), "after.false_positive"),
    (event("new", camera="garage"), "unknown camera 'garage'"),
])
def test_bad_events_are_garbage_with_the_topic(payload: bytes, why: str) -> None:
    f = codec()
    [g] = f.receive(EVENTS, payload, 0)
    assert isinstance(g, Garbage) and EVENTS in g.reason and why in g.reason, g
    assert g.where == EVENTS and g.nbytes == len(payload)
    assert all(not active for active in f._active.values())


def test_payload_size_limit_and_types() -> None:
    big = event("new", attributes="x" * (MAX_PAYLOAD // 2 - 600))  # in before and after
    assert MAX_PAYLOAD - 1000 < len(big) <= MAX_PAYLOAD
    assert states(codec().receive(EVENTS, big, 0)) == ["alarm"]
    [g] = codec().receive(EVENTS, event("new", attributes="x" * MAX_PAYLOAD), 0)
    assert isinstance(g, Garbage) and "over" in g.reason
    [g] = codec().receive(EVENTS, "{}", 0)  # type: ignore[arg-type]
    assert isinstance(g, Garbage) and "str" in g.reason
    assert codec().receive(EVENTS, b"", 0) == []  # a retained topic cleared


def test_topics_this_feed_does_not_read_are_garbage() -> None:
    for topic in ("frigate/cam-01/audio/speech", "frigate/stats", "elsewhere/events"):
        [g] = codec().receive(topic, b"ON", 0)
        assert isinstance(g, Garbage) and topic in g.reason


# ------------------------------------------------------------------ audio, availability


def test_audio_fire_alarm_topic_is_an_edge() -> None:
    f = codec()
    assert f.receive(AUDIO, b"OFF", 0) == [Seen("cam-01")]  # OFF with nothing before
    assert f.receive(AUDIO, b"ON", 1) == [
        Signal("cam-01", "alarm", meta=(("label", "fire_alarm"), ("event", "audio"))),
        Seen("cam-01")]
    assert f.receive(AUDIO, b"ON", 2) == [Seen("cam-01")]
    assert f.receive(AUDIO, b"OFF", 3) == [Signal("cam-01", "clear"), Seen("cam-01")]


def test_audio_and_sight_clear_together() -> None:
    f = codec()
    f.receive(AUDIO, b"ON", 0)
    f.receive(EVENTS, event("new"), 0)
    assert states(f.receive(AUDIO, b"OFF", 1)) == []
    assert states(f.receive(EVENTS, event("end"), 2)) == ["clear"]


def test_audio_garbage() -> None:
    for topic, payload, why in ((AUDIO, b"maybe", "ON or OFF"),
                                ("frigate/garage/audio/fire_alarm", b"ON", "unknown camera")):
        [g] = codec().receive(topic, payload, 0)
        assert isinstance(g, Garbage) and topic in g.reason and why in g.reason


def test_frigate_availability_is_a_trouble_on_every_camera() -> None:
    f = codec()
    assert f.receive(AVAILABLE, b"online", 0) == [
        Trouble("cam-01", "offline", False), Trouble("cam-blind", "offline", False), Seen(None)]
    assert f.receive(AVAILABLE, b"online", 1) == [Seen(None)]
    assert f.receive(AVAILABLE, b"offline", 2) == [
        Trouble("cam-01", "offline", True), Trouble("cam-blind", "offline", True)]
    assert f.receive(AVAILABLE, b"offline", 3) == []
    [g] = f.receive(AVAILABLE, b'{"state": "online"}', 4)
    assert isinstance(g, Garbage) and AVAILABLE in g.reason


def test_events_open_when_frigate_restarts_are_cleared() -> None:
    f = codec()
    f.receive(AVAILABLE, b"online", 0)
    f.receive(EVENTS, event("new"), 1)
    f.receive(AVAILABLE, b"offline", 2)
    assert f.receive(AVAILABLE, b"online", 3)[0] == Signal("cam-01", "clear")
    assert states(f.receive(EVENTS, event("new", "after-restart"), 4)) == ["alarm"]


def test_no_timers() -> None:
    f = codec()
    f.receive(EVENTS, event("new"), 0)
    assert f.tick(1e9) == [] and f.next_deadline() is None


def test_constructor_checks_names() -> None:
    for base, cams in (("", {}), ("fr/+", {}), ("frigate", {"a/b": CameraView()}),
                       ("frigate", {"": CameraView()})):
        with pytest.raises(ValueError):
            Frigate(base, cams)


# ------------------------------------------------------------------ properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10,
)
_after = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(["a", "b"]) | _json,
    "camera": st.sampled_from(["cam-01", "cam-blind", "x"]) | _json,
    "label": st.sampled_from(["fire", "smoke", "fire_alarm", "person"]) | _json,
    "false_positive": st.booleans() | _json,
    "box": st.lists(st.floats(-10, 5000) | st.integers(0, 5000), min_size=4, max_size=4)
    | _json,
    "top_score": st.floats(-1, 2) | _json,
    "score": _json,
    "current_zones": st.lists(st.text(max_size=70), max_size=20) | _json,
    "start_time": st.floats(-1, 5e9) | _json,
    "end_time": _json,
})
_message = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["new", "update", "end"]) | _json,
    "after": _after | _json,
    "before": _json,
})


@FAST
@given(topic=st.sampled_from([EVENTS, AVAILABLE, AUDIO, "frigate/x/audio/fire_alarm"]),
       payload=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(topic: str, payload: bytes) -> None:
    out = codec().receive(topic, payload, 0)
    assert all(isinstance(e, Signal | Trouble | Seen | Garbage) for e in out)


@FAST
@given(messages=st.lists(_message, max_size=8))
def test_arbitrary_event_json_never_raises(messages: list[dict[str, Any]]) -> None:
    f = codec()
    for msg in messages:
        for e in f.receive(EVENTS, orjson.dumps(msg), 0):
            assert isinstance(e, Signal | Seen | Garbage)
            if isinstance(e, Signal) and e.bearing_deg is not None:
                assert math.isfinite(e.bearing_deg) and 0 <= e.bearing_deg < 360


@FAST
@given(steps=st.lists(st.tuples(st.sampled_from(["new", "update", "end"]),
                                st.sampled_from(["a", "b", "c"]),
                                st.sampled_from(["fire", "smoke", "person"]),
                                st.booleans()), max_size=25))
def test_ending_every_event_always_leaves_the_camera_clear(
    steps: list[tuple[str, str, str, bool]],
) -> None:
    f = codec()
    last = None
    for kind, eid, label, fp in steps:
        for s in signals(f.receive(EVENTS, event(kind, eid, label, false_positive=fp), 0)):
            last = s.state
    for eid in ("a", "b", "c"):
        for s in signals(f.receive(EVENTS, event("end", eid), 1)):
            last = s.state
    assert last in (None, "clear") and not f._active["cam-01"]


# ------------------------------------------------------------------ real broker


async def test_simulated_frigate_through_a_real_broker(mosquitto: Mosquitto) -> None:
    f = Frigate("frigate", {"cam-01": CameraView(45.0, 90.0, 1280)})
    events = [e for _, e in await decode_from_broker(
        mosquitto, f, "firmware_sim.frigate_events",
        ["--camera", "cam-01", "--sequence", "person", "--sequence", "fire",
         "--sequence", "false_positive", "--sequence", "audio", "--sequence", "offline",
         "--time-scale", "0.1"])]
    sigs = signals(events)
    assert [(s.state, dict(s.meta).get("label")) for s in sigs] == [
        ("alarm", "fire"), ("clear", None),  # fire: new, update (nothing), end
        ("alarm", "smoke"), ("clear", None),  # believed, then judged false positive
        ("alarm", "fire_alarm"), ("clear", None),  # heard on the audio topic
    ]
    fire = sigs[0]
    assert fire.bearing_deg == pytest.approx(67.5)  # box centred a quarter in from the left
    assert dict(fire.meta)["zones"] == "kitchen" and fire.ts is not None
    assert [(e.trouble, e.active) for e in events if isinstance(e, Trouble)] == [
        ("offline", False), ("offline", True), ("offline", False)]
    assert Seen(None) in events and not [e for e in events if isinstance(e, Garbage)]
