"""Zigbee2MQTT feed (drivers.zigbee2mqtt) and its twin (firmware_sim.zigbee_devices).

Zigbee2MQTT republishes a device's whole state on every change, so the codec must report
edges, not messages; latched detectors are cleared by time; and whatever arrives on a
topic is untrusted: it becomes Garbage naming the topic, never an exception. The last
test runs the simulated devices as a separate process against a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import aiomqtt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.feed import FeedEvent, Garbage, Reading, Seen, Trouble
from drivers.signal import Signal
from drivers.zigbee2mqtt import (
    MAX_PAYLOAD,
    Z2mOptions,
    Zigbee2Mqtt,
    availability_topic,
    encode_availability,
    encode_state,
    state_topic,
)
from firmware_sim.lab import Mosquitto

FAST = settings(max_examples=200, deadline=None)
ROOT = Path(__file__).resolve().parent.parent
BASE = "zigbee2mqtt"
SMOKE = f"{BASE}/kitchen_smoke"
AVAIL = f"{BASE}/kitchen_smoke/availability"


def codec(clear_after_s: float | None = None) -> Zigbee2Mqtt:
    return Zigbee2Mqtt(BASE, {"kitchen_smoke": Z2mOptions(clear_after_s),
                              "boiler_temp": Z2mOptions()})


def state(z: Zigbee2Mqtt, now: float = 0.0, topic: str = SMOKE, **attrs: object
          ) -> list[FeedEvent]:
    return z.receive(topic, orjson.dumps(attrs), now)


def signals(events: list[FeedEvent]) -> list[str]:
    return [e.state for e in events if isinstance(e, Signal)]


def garbage(events: list[FeedEvent]) -> list[Garbage]:
    return [e for e in events if isinstance(e, Garbage)]


# ------------------------------------------------------------------ topics, options


def test_topics_are_one_level_wildcards_and_exact_filters_for_names_with_slashes() -> None:
    z = Zigbee2Mqtt("zigbee2mqtt/", {"kitchen_smoke": Z2mOptions(),
                                     "b3/2f/hall": Z2mOptions()})
    assert z.topics() == ["zigbee2mqtt/+", "zigbee2mqtt/+/availability",
                          "zigbee2mqtt/b3/2f/hall", "zigbee2mqtt/b3/2f/hall/availability"]
    assert signals(state(z, topic="zigbee2mqtt/b3/2f/hall", smoke=True)) == ["alarm"]
    assert z.receive("zigbee2mqtt/b3/2f/hall/availability", b"offline", 0) == [
        Trouble("b3/2f/hall", "offline", True)]


@pytest.mark.parametrize("name", ["", "a/+", "#", "a//b", "/a", "a/"])
def test_names_that_would_subscribe_to_others_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        Zigbee2Mqtt(BASE, {name: Z2mOptions()})


@pytest.mark.parametrize("base", ["", "/", "z2m/+", "#", "a//b", "/a"])
def test_base_topics_that_would_subscribe_to_others_are_refused(base: str) -> None:
    with pytest.raises(ValueError):
        Zigbee2Mqtt(base, {})


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "5"])
def test_clear_after_must_be_a_positive_number(bad: object) -> None:
    with pytest.raises(ValueError):
        Z2mOptions(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ alarms: edges only


def test_smoke_alarms_on_the_edge_and_clears_after_true() -> None:
    z = codec()
    first = state(z, smoke=False, battery=97, tamper=False, battery_low=False)
    assert signals(first) == []  # false with nothing before it is not a clear
    assert first[-1] == Seen("kitchen_smoke", battery=97.0)
    assert state(z, smoke=True, battery=97)[0] == Signal("kitchen_smoke", "alarm")
    # the whole state again, because the battery changed: no second alarm
    assert state(z, smoke=True, battery=96) == [Seen("kitchen_smoke", battery=96.0)]
    assert state(z, smoke=False, battery=96) == [Signal("kitchen_smoke", "clear"),
                                                 Seen("kitchen_smoke", battery=96.0)]
    assert signals(state(z, smoke=False)) == []  # false after false


def test_first_message_already_true_alarms() -> None:
    assert signals(state(codec(), smoke=True)) == ["alarm"]


@pytest.mark.parametrize("key", ["gas", "carbon_monoxide"])
def test_gas_and_carbon_monoxide_alarm_like_smoke(key: str) -> None:
    z = codec()
    assert signals(state(z, **{key: True})) == ["alarm"]
    assert signals(state(z, **{key: True})) == []
    assert signals(state(z, **{key: False})) == ["clear"]


def test_water_leak_is_not_a_fire_signal() -> None:
    assert state(codec(), water_leak=True) == [Seen("kitchen_smoke")]


def test_a_second_hazard_alarms_again_and_the_clear_waits_for_both() -> None:
    z = codec()
    assert signals(state(z, smoke=True, carbon_monoxide=False)) == ["alarm"]
    assert signals(state(z, smoke=True, carbon_monoxide=True)) == ["alarm"]
    assert signals(state(z, smoke=False, carbon_monoxide=True)) == []
    assert signals(state(z, smoke=False, carbon_monoxide=False)) == ["clear"]


def test_null_means_not_known_yet_and_changes_nothing() -> None:
    z = codec()
    assert signals(state(z, smoke=True)) == ["alarm"]
    assert state(z, smoke=None, tamper=None, temperature=None, battery=None) == [
        Seen("kitchen_smoke")]
    assert signals(state(z, smoke=False)) == ["clear"]


# ------------------------------------------------------------------ stuck detectors


def test_stuck_detector_is_cleared_by_tick_and_alarms_only_on_a_new_edge() -> None:
    z = codec(clear_after_s=30)
    assert z.next_deadline() is None
    assert signals(state(z, 100.0, smoke=True)) == ["alarm"]
    assert z.next_deadline() == 130.0
    assert z.tick(129.9) == []
    assert z.tick(130.0) == [Signal("kitchen_smoke", "clear")]
    assert z.next_deadline() is None and z.tick(500) == []
    assert signals(state(z, 140.0, smoke=True, battery=50)) == []  # still latched: no edge
    assert signals(state(z, 150.0, smoke=False)) == []  # already cleared
    assert signals(state(z, 160.0, smoke=True)) == ["alarm"]  # a new edge
    assert z.next_deadline() == 190.0


def test_receive_after_the_deadline_clears_first_even_without_tick() -> None:
    z = codec(clear_after_s=10)
    state(z, 0.0, smoke=True)
    out = state(z, 25.0, smoke=True)
    assert out == [Signal("kitchen_smoke", "clear"), Seen("kitchen_smoke")]


def test_a_real_clear_before_the_deadline_cancels_it() -> None:
    z = codec(clear_after_s=10)
    state(z, 0.0, smoke=True)
    assert signals(state(z, 3.0, smoke=False)) == ["clear"]
    assert z.next_deadline() is None and z.tick(10.0) == []


def test_without_clear_after_there_is_never_a_deadline() -> None:
    z = codec()
    state(z, 0.0, smoke=True)
    assert z.next_deadline() is None and z.tick(1e9) == []


# ------------------------------------------------------------------ readings, troubles


def test_temperature_is_a_reading_on_every_message() -> None:
    z = codec()
    topic = f"{BASE}/boiler_temp"
    for t in (22.5, 22.5, 58):
        assert state(z, topic=topic, temperature=t, battery=88) == [
            Reading("boiler_temp", raw=float(t), unit="°C"), Seen("boiler_temp", battery=88.0)]


def test_battery_percent_is_carried_by_seen() -> None:
    assert state(codec(), battery=42)[-1] == Seen("kitchen_smoke", battery=42.0)


@pytest.mark.parametrize("trouble", ["tamper", "battery_low"])
def test_troubles_on_first_report_and_on_change(trouble: str) -> None:
    z = codec()
    assert state(z, **{trouble: False}) == [Trouble("kitchen_smoke", trouble, False),
                                            Seen("kitchen_smoke")]
    assert state(z, **{trouble: True})[0] == Trouble("kitchen_smoke", trouble, True)
    assert state(z, **{trouble: True}) == [Seen("kitchen_smoke")]
    assert state(z, **{trouble: False})[0] == Trouble("kitchen_smoke", trouble, False)


@pytest.mark.parametrize("form", ["json", "legacy"])
def test_availability_in_both_forms(form: str) -> None:
    z = codec()

    def avail(online: bool) -> bytes:
        return encode_availability(online, legacy=form == "legacy")

    assert z.receive(AVAIL, avail(False), 0) == [Trouble("kitchen_smoke", "offline", True)]
    assert z.receive(AVAIL, avail(False), 1) == []  # retained repeat: nothing new
    assert z.receive(AVAIL, avail(True), 2) == [Trouble("kitchen_smoke", "offline", False),
                                                Seen("kitchen_smoke")]
    assert z.receive(AVAIL, avail(True), 3) == [Seen("kitchen_smoke")]


def test_availability_literals() -> None:
    z = codec()
    assert z.receive(AVAIL, b'{"state":"offline"}', 0) == [
        Trouble("kitchen_smoke", "offline", True)]
    assert z.receive(AVAIL, b"online\n", 0)[0] == Trouble("kitchen_smoke", "offline", False)
    for bad in (b"ONLINE", b'{"state": 1}', b'{"state": "on"}', b"[1]", b"{oops", b"up"):
        [g] = z.receive(AVAIL, bad, 0)
        assert isinstance(g, Garbage) and AVAIL in g.reason and g.where == AVAIL


# ------------------------------------------------------------------ what is not a device


def test_unknown_friendly_names_are_garbage_naming_the_topic() -> None:
    z = codec()
    for topic in (f"{BASE}/living_room_plug", f"{BASE}/living_room_plug/availability"):
        [g] = z.receive(topic, b'{"state":"ON"}', 0)
        assert isinstance(g, Garbage) and topic in g.reason and g.where == topic
        assert "living_room_plug" in g.reason and g.nbytes == 14
    assert len(z._devices) == 2  # state stays bounded to the configured devices


def test_bridge_topics_and_emptied_retained_topics_are_ignored() -> None:
    z = codec()
    assert z.receive(f"{BASE}/bridge/state", b'{"state":"online"}', 0) == []
    assert z.receive(f"{BASE}/bridge/logging", b"x" * 10, 0) == []
    assert z.receive(AVAIL, b"", 0) == []
    assert z.receive(f"{BASE}/removed_device/availability", b"", 0) == []


def test_a_topic_outside_the_base_is_garbage() -> None:
    [g] = codec().receive("other/kitchen_smoke", b"{}", 0)
    assert isinstance(g, Garbage) and "other/kitchen_smoke" in g.reason


@pytest.mark.parametrize("payload, why", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[true]", "JSON object"),
    (b'"smoke"', "JSON object"),
    (b"[" * 5000 + b"]" * 5000, "over"),
    (b"[" * 2000 + b"]" * 2000, "not JSON"),  # deeper than orjson's limit
])
def test_bad_payloads_are_garbage_with_the_topic(payload: bytes, why: str) -> None:
    [g] = codec().receive(SMOKE, payload, 0)
    assert isinstance(g, Garbage) and SMOKE in g.reason and why in g.reason
    assert g.where == SMOKE and g.nbytes == len(payload)


def test_payload_size_limit() -> None:
    body = b'{"smoke":true}'
    at_limit = body[:-1] + b" " * (MAX_PAYLOAD - len(body)) + b"}"
    assert len(at_limit) == MAX_PAYLOAD
    assert signals(codec().receive(SMOKE, at_limit, 0)) == ["alarm"]
    [g] = codec().receive(SMOKE, at_limit + b" ", 0)
    assert isinstance(g, Garbage) and f"{MAX_PAYLOAD + 1} bytes" in g.reason


def test_not_bytes_is_garbage() -> None:
    [g] = codec().receive(SMOKE, '{"smoke": true}', 0)  # type: ignore[arg-type]
    assert isinstance(g, Garbage) and "str" in g.reason
    [g] = codec().receive(SMOKE, 5, 0)  # type: ignore[arg-type]
    assert isinstance(g, Garbage) and "int" in g.reason


@pytest.mark.parametrize("attrs, key", [
    ({"smoke": "true"}, "smoke"),
    ({"smoke": 1}, "smoke"),
    ({"tamper": "no"}, "tamper"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"temperature": 1e6}, "temperature"),
    ({"battery": 150}, "battery"),
    ({"battery": [1]}, "battery"),
])
def test_wrong_types_are_garbage_naming_the_field(attrs: dict[str, object], key: str) -> None:
    out = state(codec(), **attrs)
    [g] = garbage(out)
    assert SMOKE in g.reason and repr(key) in g.reason
    assert out[-2] == Seen("kitchen_smoke") and signals(out) == []


def test_a_bad_field_does_not_lose_the_alarm_beside_it() -> None:
    out = state(codec(), smoke=True, battery="low", temperature="?")
    assert out[0] == Signal("kitchen_smoke", "alarm")
    assert len(garbage(out)) == 2 and Seen("kitchen_smoke") in out


def test_long_topics_are_cut_in_garbage() -> None:
    topic = f"{BASE}/" + "x" * 10_000
    [g] = codec().receive(topic, b"{}", 0)
    assert isinstance(g, Garbage) and len(g.where) < 200 and len(g.reason) < 400


# ------------------------------------------------------------------ device side


def test_encoders_speak_what_the_codec_reads() -> None:
    z = codec()
    assert state_topic("zigbee2mqtt/", "kitchen_smoke") == SMOKE
    assert availability_topic(BASE, "kitchen_smoke") == AVAIL
    assert encode_availability(True) == b'{"state":"online"}'
    assert encode_availability(False, legacy=True) == b"offline"
    assert signals(z.receive(SMOKE, encode_state({"smoke": True, "battery": 90}), 0)) == [
        "alarm"]


# ------------------------------------------------------------------ properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(["smoke", "gas", "carbon_monoxide", "temperature", "tamper",
                         "battery_low", "battery", "water_leak", "state", "linkquality"])
_topics = st.sampled_from([SMOKE, AVAIL, f"{BASE}/boiler_temp", f"{BASE}/stranger",
                           f"{BASE}/bridge/state", "elsewhere", BASE, f"{BASE}/"])


def _all_feed_events(out: list[FeedEvent]) -> bool:
    return all(isinstance(e, Signal | Trouble | Seen | Reading | Garbage) for e in out)


@FAST
@given(topic=_topics, payload=st.binary(max_size=300), now=st.floats(0, 1e9))
def test_arbitrary_bytes_never_raise(topic: str, payload: bytes, now: float) -> None:
    assert _all_feed_events(codec(5.0).receive(topic, payload, now))


@FAST
@given(topic=_topics, obj=st.dictionaries(_keys, _json, max_size=6) | _json)
def test_arbitrary_json_never_raises(topic: str, obj: object) -> None:
    try:
        payload = orjson.dumps(obj)
    except (orjson.JSONEncodeError, TypeError):
        payload = b"{}"  # integers beyond 64 bits: orjson will not write them
    z = codec(5.0)
    for now in (0.0, 10.0):
        assert _all_feed_events(z.receive(topic, payload, now))


@FAST
@given(
    reports=st.lists(st.tuples(st.none() | st.booleans(), st.floats(0, 20), st.booleans()),
                     max_size=30),
    clear_after=st.none() | st.floats(0.5, 30),
)
def test_signals_alternate_and_alarms_come_only_from_edges(
    reports: list[tuple[bool | None, float, bool]], clear_after: float | None,
) -> None:
    z = codec(clear_after)
    now, out, last = 0.0, [], None
    for value, dt, tick_first in reports:
        now += dt
        if tick_first:
            out += signals(z.tick(now))
        got = signals(state(z, now, smoke=value))
        assert got.count("alarm") == (1 if value is True and last is not True else 0)
        out += got
        last = value if value is not None else last
    assert out[::2] == ["alarm"] * len(out[::2])
    assert out[1::2] == ["clear"] * len(out[1::2])


# ------------------------------------------------------------------ real broker

SENTINEL = "firegrid-test/done"


async def decode_from_broker(
    mq: Mosquitto, feed: object, module: str, args: list[str],
) -> list[tuple[str, FeedEvent]]:
    """Subscribe to the feed's topics, run a firmware_sim twin as its own process against
    the broker, and decode everything it published, in order, with receive times.

    The twin publishes at QoS 1 and exits once the broker has acknowledged it all; a
    sentinel sent after that arrives after its messages, which ends the collection.
    """
    loop = asyncio.get_running_loop()
    out: list[tuple[str, FeedEvent]] = []
    async with aiomqtt.Client(mq.host, mq.port,
                              identifier=f"test-feed-{uuid.uuid4().hex[:8]}") as client:
        for topic in [*feed.topics(), SENTINEL]:  # type: ignore[attr-defined]
            await client.subscribe(topic, qos=1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, "--mqtt", mq.url, "--quiet", *args, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        await client.publish(SENTINEL, b"done", qos=1)
        async with asyncio.timeout(10):
            async for msg in client.messages:
                topic = str(msg.topic)
                if topic == SENTINEL:
                    break
                assert isinstance(msg.payload, bytes)
                out += [(topic, e) for e in
                        feed.receive(topic, msg.payload, loop.time())]  # type: ignore[attr-defined]
    return out


async def test_simulated_devices_through_a_real_broker(mosquitto: Mosquitto) -> None:
    z = Zigbee2Mqtt(BASE, {"kitchen_smoke": Z2mOptions(), "hall_smoke": Z2mOptions(0.05),
                           "boiler_temp": Z2mOptions()})
    events = await decode_from_broker(mosquitto, z, "firmware_sim.zigbee_devices", [
        "--smoke", "kitchen_smoke", "--stuck", "hall_smoke", "--temperature", "boiler_temp",
        "--fault", "garbage", "--fault", "stranger", "--fault", "offline",
        "--time-scale", "0.1"])
    events += [("tick", e) for e in z.tick(asyncio.get_running_loop().time() + 1)]

    def of(ref: str) -> list[str]:
        return [e.state for _, e in events if isinstance(e, Signal) and e.device == ref]

    assert of("kitchen_smoke") == ["alarm", "clear"]
    assert of("hall_smoke") == ["alarm", "clear"]  # latched true: cleared by time, once
    assert [e.raw for _, e in events if isinstance(e, Reading)] == [22.5, 31.5, 58.0, 24.0]
    assert [(e.trouble, e.active) for _, e in events
            if isinstance(e, Trouble) and e.ref == "kitchen_smoke" and e.trouble == "offline"
            ] == [("offline", False), ("offline", True), ("offline", False)]
    assert Seen("kitchen_smoke", battery=96.0) in [e for _, e in events]
    bad = [e for _, e in events if isinstance(e, Garbage)]
    assert {g.where for g in bad} == {SMOKE, f"{BASE}/unknown_plug"}
