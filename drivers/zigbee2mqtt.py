"""Codec for Zigbee2MQTT: device state JSON on ``<base>/<friendly name>`` into feed events.

Zigbee2MQTT republishes a device's *whole* state on every attribute change (a battery
report carries ``"smoke": true`` again while the alarm lasts), so this codec keeps the
last value of each attribute per configured device and reports edges only: an alarm when
``smoke``, ``gas`` or ``carbon_monoxide`` turns true, a clear when none is true any more,
a trouble when ``tamper`` or ``battery_low`` changes. Temperature is analog and goes to
the gateway as a ``Reading`` on every message, because thresholds are the gateway's.

Some detectors latch ``smoke: true`` long after their sounder stopped. For those a
device takes ``clear_after_s``: the device is cleared that long after its last alarm
edge even if it still says true, and only a new false→true edge alarms again. Those
timed clears are why the codec has ``tick``/``next_deadline``: the transport calls
``tick`` when the deadline passes, and the codec stays free of clocks and I/O.

Sans-IO: ``receive(topic, payload, now_s)`` in, a list of ``FeedEvent`` out. Nothing
that arrives can raise: bad JSON, wrong types, oversize payloads and unknown friendly
names become ``Garbage`` naming the topic, which the gateway counts. A bad attribute
spoils only itself: ``"battery": "low"`` beside ``"smoke": true`` still alarms, because
an alarm must not be lost to an unrelated field. State is kept only for the configured
devices, so a flood of strange names costs nothing.

``encode_state`` and ``encode_availability`` are the device side of the same vocabulary,
used by ``firmware_sim.zigbee_devices``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from drivers.feed import FeedEvent, Garbage, Reading, Seen, Trouble
from drivers.native import _show
from drivers.signal import Signal

MAX_PAYLOAD = 4096  # a Zigbee2MQTT state message is a few hundred bytes
MAX_WHERE = 160  # characters of a topic kept in a Garbage event

ALARM_KEYS = ("smoke", "gas", "carbon_monoxide")
"""Boolean attributes that mean fire or a fire precursor. ``water_leak`` is not one."""

TROUBLE_KEYS = ("tamper", "battery_low")
"""Boolean attributes reported as a device trouble of the same name (CONTRACT §3)."""

TEMPERATURE_RANGE = (-273.15, 2000.0)  # °C; anything outside is a broken sensor or a lie
AVAILABILITY = "availability"
ONLINE, OFFLINE = "online", "offline"

_BRIDGE = "bridge"


@dataclass(frozen=True, slots=True)
class Z2mOptions:
    """Per-device options of a Zigbee2MQTT feed.

    ``clear_after_s``: for detectors that keep reporting ``smoke: true`` after the sound
    stops. The device is cleared that many seconds after its last false→true edge; it
    alarms again only on a new edge (a false, then a true). None: clear when it says so.
    """

    clear_after_s: float | None = None

    def __post_init__(self) -> None:
        c = self.clear_after_s
        if c is not None and (isinstance(c, bool) or not isinstance(c, int | float)
                              or not math.isfinite(c) or c <= 0):
            raise ValueError(f"clear_after_s must be a positive number of seconds, got {c!r}")


@dataclass(slots=True)
class _Device:
    """What the codec remembers of one configured device: just enough to see edges."""

    ref: str
    options: Z2mOptions
    reported: dict[str, bool] = field(default_factory=dict)  # alarm key -> last value
    troubles: dict[str, bool] = field(default_factory=dict)  # trouble -> last value sent
    alarmed: bool = False  # an alarm was signalled and not yet cleared
    edge_at: float = 0.0  # time of the last false→true edge

    def deadline(self) -> float | None:
        """When a latched alarm is cleared by time, or None if nothing is due."""
        after = self.options.clear_after_s
        return self.edge_at + after if self.alarmed and after is not None else None

    def trouble(self, name: str, active: bool) -> list[FeedEvent]:
        """A Trouble for the first report and for every change, nothing for a repeat.

        The first report is passed on, even ``False``: after a gateway restart it is what
        resolves a trouble the gateway still holds from before.
        """
        if self.troubles.get(name) is active:
            return []
        self.troubles[name] = active
        return [Trouble(self.ref, name, active)]


def _where(topic: str) -> str:
    """The topic, cut to a length a log line and a counter label can carry."""
    return topic if len(topic) <= MAX_WHERE else topic[:MAX_WHERE] + "…"


def _garbage(topic: str, why: str, nbytes: int) -> Garbage:
    where = _where(topic)
    return Garbage(f"{where}: {why}", where, nbytes)


def _check_name(what: str, name: str) -> None:
    """Names become topic filters: wildcards or empty levels would subscribe to others."""
    if not isinstance(name, str) or not name or "+" in name or "#" in name or "\0" in name:
        raise ValueError(f"{what} {name!r}: must be a non-empty topic without + or #")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise ValueError(f"{what} {name!r}: must not have empty topic levels")


class Zigbee2Mqtt:
    """One Zigbee2MQTT instance (one ``base_topic``) and the devices the site uses on it.

    ``devices`` maps each friendly name (the device's ``ref`` in the site file) to its
    options. Everything else Zigbee2MQTT publishes is either ignored (``bridge/...``) or
    counted as Garbage (other friendly names, groups included).
    """

    def __init__(self, base_topic: str, devices: Mapping[str, Z2mOptions]) -> None:
        base = base_topic.rstrip("/") if isinstance(base_topic, str) else base_topic
        _check_name("base_topic", base)
        for name in devices:
            _check_name("friendly name", name)
        self.base_topic = base
        self._prefix = base + "/"
        self._devices = {name: _Device(name, opts) for name, opts in devices.items()}

    # ------------------------------------------------------------- subscriptions

    def topics(self) -> list[str]:
        """MQTT filters to subscribe: every device state and availability topic.

        The single-level wildcards also deliver unknown friendly names, so they can be
        counted. A friendly name with ``/`` in it (Zigbee2MQTT allows that for grouping)
        is more than one level and gets exact filters of its own.
        """
        out = [f"{self._prefix}+", f"{self._prefix}+/{AVAILABILITY}"]
        for name in self._devices:
            if "/" in name:
                out += [self._prefix + name, f"{self._prefix}{name}/{AVAILABILITY}"]
        return out

    # ------------------------------------------------------------- input

    def receive(self, topic: str, payload: bytes, now_s: float) -> list[FeedEvent]:
        """Turn one MQTT message into feed events; never raises on what arrives.

        Latched alarms whose ``clear_after_s`` has passed are cleared first, so the
        result does not depend on whether ``tick`` ran just before.
        """
        out: list[FeedEvent] = self.tick(now_s)
        if not isinstance(topic, str):
            return [*out, Garbage(f"topic is a {type(topic).__name__}, not text")]
        if not isinstance(payload, bytes | bytearray | memoryview):
            return [*out, _garbage(topic, f"payload is a {type(payload).__name__}", 0)]
        data = bytes(payload)
        if not topic.startswith(self._prefix):
            return [*out, _garbage(topic, f"not under {self.base_topic}/", len(data))]
        rest = topic[len(self._prefix):]
        if rest == _BRIDGE or rest.startswith(_BRIDGE + "/"):
            return out  # the bridge's own state, logs and responses: not a device
        name, is_availability = rest, False
        if rest.endswith("/" + AVAILABILITY) and rest not in self._devices:
            name, is_availability = rest[: -len(AVAILABILITY) - 1], True
        if not data:
            # Zigbee2MQTT clears a retained topic with an empty payload when a device is
            # removed or renamed: nothing to say about any device.
            return out
        device = self._devices.get(name)
        if device is None:
            return [*out, _garbage(topic, f"unknown friendly name {_show(name)}", len(data))]
        if len(data) > MAX_PAYLOAD:
            return [*out, _garbage(topic, f"payload of {len(data)} bytes is over {MAX_PAYLOAD}",
                                   len(data))]
        if is_availability:
            return out + self._availability(device, topic, data)
        return out + self._state(device, topic, data, now_s)

    def _availability(self, device: _Device, topic: str, data: bytes) -> list[FeedEvent]:
        """``{"state": "online"}`` (current form) or plain ``online`` (legacy form)."""
        text = data.strip()
        state: object = None
        if text.startswith(b"{"):
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                return [_garbage(topic, f"not JSON: {exc}", len(data))]
            state = obj.get("state") if isinstance(obj, dict) else None
        elif text in (ONLINE.encode(), OFFLINE.encode()):
            state = text.decode()
        if state == OFFLINE:
            return device.trouble("offline", True)  # not Seen: offline is not a sign of life
        if state == ONLINE:
            return [*device.trouble("offline", False), Seen(device.ref)]
        return [_garbage(topic, f"availability must be online or offline, got "
                                f"{_show(data[:80])}", len(data))]

    def _state(self, device: _Device, topic: str, data: bytes, now_s: float) -> list[FeedEvent]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return [_garbage(topic, f"not JSON: {exc}", len(data))]
        if not isinstance(obj, dict):
            return [_garbage(topic, f"expected a JSON object, got {type(obj).__name__}",
                             len(data))]
        signals: list[FeedEvent] = []
        troubles: list[FeedEvent] = []
        rest: list[FeedEvent] = []
        bad: list[FeedEvent] = []

        def flag(key: str) -> bool | None:
            # null is what Zigbee2MQTT sends for an attribute it has not heard yet
            v = obj.get(key)
            if v is None or isinstance(v, bool):
                return v
            bad.append(_garbage(topic, f"{key!r} must be true or false, got {_show(v)}",
                                len(data)))
            return None

        def number(key: str, lo: float, hi: float) -> float | None:
            v = obj.get(key)
            if v is None:
                return None
            if (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                    or not lo <= v <= hi):
                bad.append(_garbage(topic, f"{key!r} must be a number in [{lo}, {hi}], got "
                                           f"{_show(v)}", len(data)))
                return None
            return float(v)

        edge = False
        for key in ALARM_KEYS:
            v = flag(key)
            if v is None:
                continue
            edge |= v and device.reported.get(key) is not True
            device.reported[key] = v
        if edge:
            device.alarmed, device.edge_at = True, now_s
            signals.append(Signal(device.ref, "alarm"))
        elif device.alarmed and not any(device.reported.values()):
            device.alarmed = False
            signals.append(Signal(device.ref, "clear"))

        for key in TROUBLE_KEYS:
            v = flag(key)
            if v is not None:
                troubles += device.trouble(key, v)
        temperature = number("temperature", *TEMPERATURE_RANGE)
        if temperature is not None:
            rest.append(Reading(device.ref, raw=temperature, unit="°C"))
        rest.append(Seen(device.ref, battery=number("battery", 0.0, 100.0)))
        return signals + troubles + rest + bad

    # ------------------------------------------------------------- time

    def tick(self, now_s: float) -> list[FeedEvent]:
        """Clear every latched alarm whose ``clear_after_s`` has run out by ``now_s``."""
        out: list[FeedEvent] = []
        for device in self._devices.values():
            due = device.deadline()
            if due is not None and due <= now_s:
                device.alarmed = False
                out.append(Signal(device.ref, "clear"))
        return out

    def next_deadline(self) -> float | None:
        """The earliest time ``tick`` has something to do, or None."""
        dues = [d for d in (dev.deadline() for dev in self._devices.values()) if d is not None]
        return min(dues) if dues else None


# ----------------------------------------------------------------- device side


def state_topic(base_topic: str, friendly_name: str) -> str:
    """Where Zigbee2MQTT publishes a device's state."""
    return f"{base_topic.rstrip('/')}/{friendly_name}"


def availability_topic(base_topic: str, friendly_name: str) -> str:
    """Where Zigbee2MQTT publishes whether a device is reachable."""
    return f"{state_topic(base_topic, friendly_name)}/{AVAILABILITY}"


def encode_state(state: Mapping[str, Any]) -> bytes:
    """A device's whole state as Zigbee2MQTT publishes it (``output: json``)."""
    return orjson.dumps(dict(state))


def encode_availability(online: bool, *, legacy: bool = False) -> bytes:
    """``{"state":"online"}``, or the legacy plain ``online`` of older installations."""
    word = ONLINE if online else OFFLINE
    return word.encode() if legacy else orjson.dumps({"state": word})
