"""Codecs at the edge: native MQTT signals (drivers.native) and MQTT pager acks (alerting.page).

Whatever arrives on a topic is untrusted: a good payload becomes a value, anything else
raises the codec's own error (PayloadError / AckError) with a message naming the problem,
and never anything else (CONTRACT §3: dropped with a counted, logged reason).
"""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.page import ACK_STATUSES, Ack, AckError, decode_mqtt_ack, encode_mqtt_ack
from drivers.native import MAX_PAYLOAD, KeptAlarm, decode, encode, receipt_ts
from drivers.signal import STATES, PayloadError, Signal
from gateway.config import DEVICE_KINDS

FAST = settings(max_examples=300, deadline=None)


# ------------------------------------------------------------------ native: good


def test_minimal_alarm() -> None:
    sig = decode("smk-301", b'{"kind": "smoke", "state": "alarm"}')
    assert sig == Signal(device="smk-301", state="alarm", kind="smoke")
    assert sig.is_alarm
    assert sig.value is None and sig.ts is None and sig.bearing_deg is None


@pytest.mark.parametrize("state", STATES)
def test_every_state_without_kind(state: str) -> None:
    sig = decode("dev-1", orjson.dumps({"state": state}))
    assert sig.state == state and sig.kind is None and sig.device == "dev-1"


def test_value_ts_and_bearing() -> None:
    sig = decode("cam-01", b'{"kind":"camera","state":"alarm","value":0.93,'
                           b'"ts":1700000000.25,"bearing_deg":-30.5}')
    assert sig.kind == "camera" and sig.state == "alarm"
    assert sig.value == 0.93 and sig.ts == 1700000000.25 and sig.bearing_deg == -30.5
    assert isinstance(sig.value, float) and isinstance(sig.ts, float)


def test_integers_and_nulls_and_bounds() -> None:
    sig = decode("gas-1", b'{"state":"clear","value":12,"ts":0,"bearing_deg":360}')
    assert (sig.value, sig.ts, sig.bearing_deg) == (12.0, 0.0, 360.0)
    sig = decode("gas-1", b'{"state":"alarm","value":null,"ts":4102444800,"bearing_deg":-360}')
    assert sig.value is None and sig.ts == 4102444800.0 and sig.bearing_deg == -360.0
    assert decode("d", b'{"state":"alarm","value":-1e12}').value == -1e12


def test_whitespace_and_a_payload_of_exactly_the_limit() -> None:
    body = b'{"state":"alarm"}'
    padded = body[:-1] + b" " * (MAX_PAYLOAD - len(body)) + b"}"
    assert len(padded) == MAX_PAYLOAD
    assert decode("d", padded).state == "alarm"
    assert decode("d", b'\n  {"state" : "test"}  \n').state == "test"


# ------------------------------------------------------------------- native: bad


def bad(payload: bytes, *words: str) -> str:
    with pytest.raises(PayloadError) as exc:
        decode("smk-301", payload)
    msg = str(exc.value)
    assert msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    assert len(msg) < 400  # a log line, not the payload echoed back
    return msg


@pytest.mark.parametrize(("payload", "words"), [
    (b"", ("not JSON",)),
    (b"alarm", ("not JSON",)),
    (b'{"state": "alarm"', ("not JSON",)),
    (b'{"state": "alarm"} trailing', ("not JSON",)),
    (b"\xff\xfe{}", ("not JSON",)),  # not UTF-8
    (b'{"state": "al\xe9rm"}', ("not JSON",)),  # Latin-1 inside a string
    (b'{"state":"alarm","value":NaN}', ("not JSON",)),
    (b'{"state":"alarm","value":Infinity}', ("not JSON",)),
    (b'{"state":"alarm","value":1e400}', ("not JSON",)),  # overflows to inf
    (b'["alarm"]', ("object", "list")),
    (b'"alarm"', ("object", "str")),
    (b"42", ("object", "int")),
    (b"null", ("object",)),
    (b"{}", ("state",)),
    (b'{"kind": "smoke"}', ("state",)),
    (b'{"state": "ALARM"}', ("state", "ALARM")),
    (b'{"state": "fire"}', ("state", "fire")),
    (b'{"state": 1}', ("state",)),
    (b'{"state": ["alarm"]}', ("state",)),
    (b'{"state": {"a": 1}}', ("state",)),
    (b'{"state": null}', ("state",)),
    (b'{"state": "alarm", "colour": "red"}', ("unknown", "colour")),
    (b'{"state": "alarm", "State": "alarm"}', ("unknown", "State")),
    (b'{"state": "alarm", "kind": 3}', ("kind",)),
    (b'{"state": "alarm", "kind": ["smoke"]}', ("kind",)),
    (b'{"state": "alarm", "value": true}', ("value", "number")),
    (b'{"state": "alarm", "value": false}', ("value", "number")),
    (b'{"state": "alarm", "value": "12"}', ("value", "number")),
    (b'{"state": "alarm", "value": [1]}', ("value", "number")),
    (b'{"state": "alarm", "value": 1e13}', ("value", "range")),
    (b'{"state": "alarm", "value": -1e300}', ("value", "range")),
    (b'{"state": "alarm", "value": 123456789012345678901234567890}', ("value", "range")),
    (b'{"state": "alarm", "ts": -1}', ("ts", "range")),
    (b'{"state": "alarm", "ts": 4102444801}', ("ts", "range")),
    (b'{"state": "alarm", "ts": 1700000000000}', ("ts", "range")),  # ms, not seconds
    (b'{"state": "alarm", "ts": 1.7e18}', ("ts", "range")),  # ns, not seconds
    (b'{"state": "alarm", "ts": true}', ("ts", "number")),
    (b'{"state": "alarm", "ts": "2024-01-01"}', ("ts", "number")),
    (b'{"state": "alarm", "bearing_deg": 361}', ("bearing_deg", "range")),
    (b'{"state": "alarm", "bearing_deg": -400.5}', ("bearing_deg", "range")),
    (b'{"state": "alarm", "bearing_deg": "north"}', ("bearing_deg", "number")),
])
def test_bad_payloads_name_the_problem(payload: bytes, words: tuple[str, ...]) -> None:
    bad(payload, *words)


def test_oversize_payload_is_refused_before_parsing() -> None:
    body = orjson.dumps({"state": "alarm", "kind": "x" * MAX_PAYLOAD})
    bad(body, str(len(body)), str(MAX_PAYLOAD))
    bad(b" " * (MAX_PAYLOAD + 1), "over")


def test_deep_nesting_is_a_payload_error() -> None:
    nested = b'{"state": "alarm", "value": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    assert len(nested) <= MAX_PAYLOAD
    bad(nested)
    bad(b"[" * 100_000, "over")


def test_a_long_bad_value_is_not_echoed_whole() -> None:
    msg = bad(orjson.dumps({"state": "s" * 3000}), "state")
    assert "s" * 100 not in msg


# ------------------------------------------------------------ native: alarm receipts


def test_a_kept_alarm_goes_out_again_until_its_receipt() -> None:
    k = KeptAlarm(resend_s=30)
    assert k.due(0.0, reconnected=True) is None  # nothing kept
    k.raised(1000.5, now=0.0)
    assert k.due(10.0) is None  # sent just now
    assert k.due(12.0, reconnected=True) == 1000.5  # a new connection: at once
    assert k.due(20.0) is None and k.due(42.5) == 1000.5  # then every 30 s
    assert not k.heard(b'{"device":"d","state":"alarm","since":5.0}')  # no alarm_ts
    assert not k.heard(b'{"state":"alarm","alarm_ts":999.0}')  # an older alarm's receipt
    assert not k.heard(b"not json") and not k.heard(b"[1]") and not k.heard(b"")
    assert k.due(80.0) == 1000.5
    assert k.heard(b'{"state":"normal","alarm_ts":1000.5}')
    assert k.ts is None and k.due(1e9, reconnected=True) is None


@FAST
@given(st.binary(max_size=200))
def test_receipt_ts_never_raises(payload: bytes) -> None:
    got = receipt_ts(payload)
    assert got is None or math.isfinite(got)


# --------------------------------------------------------------- native: properties


@FAST
@given(st.binary(max_size=MAX_PAYLOAD + 64))
def test_arbitrary_bytes_only_ever_raise_payload_error(payload: bytes) -> None:
    try:
        sig = decode("d", payload)
    except PayloadError:
        return
    assert sig.state in STATES


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(["kind", "state", "value", "ts", "bearing_deg", "extra"])


@FAST
@given(st.dictionaries(KEYS, JSONISH | st.sampled_from(STATES), max_size=6))
def test_arbitrary_json_objects_only_ever_raise_payload_error(obj: dict) -> None:
    payload = json.dumps(obj).encode()  # stdlib: integers of any size, as a device may send
    try:
        sig = decode("d", payload)
    except PayloadError as exc:
        assert str(exc)
        return
    assert sig.state == obj["state"] and sig.state in STATES
    for key in ("value", "ts", "bearing_deg"):
        v = getattr(sig, key)
        assert v is None or (isinstance(v, float) and math.isfinite(v))


SIGNALS = st.builds(
    Signal,
    device=st.just("dev-1"),
    state=st.sampled_from(STATES),
    kind=st.none() | st.sampled_from(DEVICE_KINDS) | st.text(
        st.characters(exclude_categories=["Cs"]), max_size=30),
    value=st.none() | st.floats(-1e12, 1e12) | st.integers(-10**12, 10**12),
    ts=st.none() | st.floats(0, 4102444800) | st.integers(0, 4102444800),
    bearing_deg=st.none() | st.floats(-360, 360),
)


@FAST
@given(SIGNALS)
def test_encode_decode_round_trip(sig: Signal) -> None:
    payload = encode(sig)
    assert len(payload) <= MAX_PAYLOAD
    back = decode(sig.device, payload)
    assert back == sig
    for key in ("value", "ts", "bearing_deg"):
        v = getattr(back, key)
        assert v is None or isinstance(v, float)
        if v is not None:
            assert math.copysign(1, v) == math.copysign(1, getattr(sig, key))


def test_encode_leaves_out_what_is_not_set() -> None:
    assert orjson.loads(encode(Signal("d", "fault"))) == {"state": "fault"}
    assert orjson.loads(encode(Signal("d", "alarm", kind="heat", value=61.5))) == {
        "state": "alarm", "kind": "heat", "value": 61.5}


# -------------------------------------------------------------------- pager acks


@pytest.mark.parametrize("status", ACK_STATUSES)
def test_ack_good(status: str) -> None:
    ack = decode_mqtt_ack("guard-1", orjson.dumps({"incident": "inc-1", "status": status}))
    assert ack == Ack(responder="guard-1", incident="inc-1", status=status)


def ack_bad(payload: bytes, *words: str) -> str:
    with pytest.raises(AckError) as exc:
        decode_mqtt_ack("guard-1", payload)
    msg = str(exc.value)
    assert msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    assert len(msg) < 400
    return msg


@pytest.mark.parametrize(("payload", "words"), [
    (b"", ("not JSON",)),
    (b"ack", ("not JSON",)),
    (b"\xff\xfe", ("not JSON",)),
    (b'{"incident": "inc-1", "status": "ack"', ("not JSON",)),
    (b'{"incident": "inc-1", "status": "ack", "n": NaN}', ("not JSON",)),
    (b'["inc-1", "ack"]', ("object",)),
    (b'"ack"', ("object",)),
    (b"null", ("object",)),
    (b'{"status": "ack"}', ("incident",)),
    (b'{"incident": "", "status": "ack"}', ("incident",)),
    (b'{"incident": 7, "status": "ack"}', ("incident",)),
    (b'{"incident": ["inc-1"], "status": "ack"}', ("incident",)),
    (b'{"incident": "inc-1"}', ("status",)),
    (b'{"incident": "inc-1", "status": "yes"}', ("status", "yes")),
    (b'{"incident": "inc-1", "status": "ACK"}', ("status",)),
    (b'{"incident": "inc-1", "status": true}', ("status",)),
    (b'{"incident": "inc-1", "status": ["ack"]}', ("status",)),
])
def test_ack_bad_payloads_name_the_problem(payload: bytes, words: tuple[str, ...]) -> None:
    ack_bad(payload, *words)


def test_ack_oversize_payload_is_refused() -> None:
    """Like a signal: a pager ack is a few dozen bytes; megabytes are hostile traffic."""
    huge = orjson.dumps({"incident": "inc-" + "9" * 100_000, "status": "ack"})
    ack_bad(huge)


@FAST
@given(st.binary(max_size=512))
def test_ack_arbitrary_bytes_only_ever_raise_ack_error(payload: bytes) -> None:
    try:
        ack = decode_mqtt_ack("guard-1", payload)
    except AckError:
        return
    assert ack.status in ACK_STATUSES and ack.incident


@FAST
@given(st.dictionaries(st.sampled_from(["incident", "status", "by"]),
                       JSONISH | st.sampled_from(ACK_STATUSES), max_size=3))
def test_ack_arbitrary_json_only_ever_raises_ack_error(obj: dict) -> None:
    try:
        ack = decode_mqtt_ack("guard-1", json.dumps(obj).encode())
    except AckError:
        return
    assert ack.status in ACK_STATUSES and isinstance(ack.incident, str) and ack.incident


@FAST
@given(st.builds(Ack, responder=st.just("squad-3"),
                 incident=st.text(st.characters(exclude_categories=["Cs"]), min_size=1,
                                  max_size=40),
                 status=st.sampled_from(ACK_STATUSES)))
def test_ack_round_trip(ack: Ack) -> None:
    assert decode_mqtt_ack(ack.responder, encode_mqtt_ack(ack)) == ack
