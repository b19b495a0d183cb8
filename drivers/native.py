"""Codec for firegrid's native MQTT feed: ``firegrid/<site>/signal/<device>`` JSON (CONTRACT §3).

Sans-IO: bytes in, Signal out, PayloadError with a reason otherwise. The MQTT
transport lives in the gateway runtime; simulators use ``encode`` from the other side.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import orjson

from drivers.signal import STATES, PayloadError, Signal

MAX_PAYLOAD = 4096
_KEYS = {"kind", "state", "value", "ts", "bearing_deg"}

_REPR = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 40, 40, 6, 6


def _show(value: object) -> str:
    """A short, bounded repr for error messages: a hostile value may be huge or 1000 deep."""
    return _REPR.repr(value)


def _number(obj: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise PayloadError(f"{key!r} must be a finite number, got {_show(v)}")
    if not lo <= v <= hi:
        raise PayloadError(f"{key!r} out of range [{lo}, {hi}]: {v}")
    return float(v)


def decode(device: str, payload: bytes) -> Signal:
    """Parse one signal payload for ``device``; raise PayloadError naming what is wrong."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - _KEYS
    if unknown:
        raise PayloadError(f"unknown keys {_show(sorted(unknown))}")
    state = obj.get("state")
    if state not in STATES:
        raise PayloadError(f"'state' must be one of {', '.join(STATES)}; got {_show(state)}")
    kind = obj.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise PayloadError(f"'kind' must be a string, got {_show(kind)}")
    return Signal(
        device=device,
        state=state,
        kind=kind,
        value=_number(obj, "value", -1e12, 1e12),
        ts=_number(obj, "ts", 0, 4102444800),  # up to 2100-01-01
        bearing_deg=_number(obj, "bearing_deg", -360, 360),
    )


def encode(sig: Signal) -> bytes:
    """The payload a native device sends for ``sig`` (used by simulators)."""
    body: dict[str, Any] = {"state": sig.state}
    for key in ("kind", "value", "ts", "bearing_deg"):
        v = getattr(sig, key)
        if v is not None:
            body[key] = v
    return orjson.dumps(body)


# ------------------------------------------------------------ alarm receipts
#
# QoS 1 is hop by hop: the broker's PUBACK says the broker has the alarm, not that the
# gateway does. Mosquitto writes what it holds to disk every autosave_interval, so a
# power cut of the broker loses the alarms it acknowledged since. The receipt closes
# the loop end to end (docs/mqtt.md, "Alarm receipts"): the gateway puts the `ts` of
# the latest alarm it heard from a device in that device's retained `device/<id>`, and
# a device keeps its alarm, sending it again on every reconnect and every RESEND_S,
# until that receipt names it.

RESEND_S = 30.0  # a kept alarm goes out again this often while no receipt names it


def receipt_ts(payload: bytes) -> float | None:
    """The device's own ``ts`` of the latest alarm the gateway heard (``alarm_ts``).

    From a ``device/<device>`` payload; None when it carries none or does not parse
    (a device must not stop over a bad retained message: it simply keeps its alarm).
    """
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    ts = body.get("alarm_ts") if isinstance(body, dict) else None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return None
    return float(ts)


class KeptAlarm:
    """One device's side of the receipt: which alarm is still unconfirmed, and when to resend.

    Sans-IO, times passed in: ``raised`` when the device alarms (its payload must carry
    ``ts``), ``heard`` with every ``device/<id>`` payload, ``due`` to learn whether the
    kept alarm should go out again now (``reconnected``: the first call after a new
    connection, when it always should).
    """

    __slots__ = ("_next", "resend_s", "ts")

    def __init__(self, resend_s: float = RESEND_S) -> None:
        self.ts: float | None = None
        self.resend_s = resend_s
        self._next = math.inf

    def raised(self, ts: float, now: float) -> None:
        self.ts = ts
        self._next = now + self.resend_s

    def heard(self, payload: bytes) -> bool:
        """True if this payload is the receipt for the kept alarm (which is then let go)."""
        got = receipt_ts(payload)
        if self.ts is None or got is None or got < self.ts:
            return False
        self.ts, self._next = None, math.inf
        return True

    def due(self, now: float, reconnected: bool = False) -> float | None:
        """The kept alarm's ``ts`` if it should be sent again now, else None."""
        if self.ts is None or not (reconnected or now >= self._next):
            return None
        self._next = now + self.resend_s
        return self.ts
