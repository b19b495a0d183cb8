"""What a feed codec says about the devices behind it, besides plain Signals.

Every feed codec (Zigbee2MQTT, Frigate, panel printer, GB/T 26875.3, Modbus) turns
bytes or payloads into a list of these events. A codec only knows devices by their
``ref`` (the address on that feed: a friendly name, a loop-point, a register), so a
``Signal`` from a feed codec carries the ref in its ``device`` field; the gateway maps
``(feed, ref)`` to the site's device id. Bad input never raises out of a stream codec:
it becomes a ``Garbage`` event, which the gateway counts and logs, and parsing goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.signal import Signal

# Troubles a device can have (CONTRACT §3 ``trouble/<device>``); not incidents.
TROUBLES = ("offline", "battery_low", "tamper", "fault", "no_response")


@dataclass(frozen=True, slots=True)
class Trouble:
    """A device's trouble started (``active``) or ended."""

    ref: str
    trouble: str  # one of TROUBLES
    active: bool = True
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Seen:
    """The device (or, with ref None, the feed's far end) is alive; nothing else changed.

    Heartbeats, periodic state reports and availability ``online`` are Seen: they feed
    the supervision timers without touching incidents.
    """

    ref: str | None
    battery: float | None = None  # percent, where the device reports it


@dataclass(frozen=True, slots=True)
class Reading:
    """A raw analog value (Modbus register, GB/T 26875.3 type 3): the gateway scales it
    and applies the device's ``alarm_at``/``clear_at`` thresholds."""

    ref: str
    raw: float
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Reset:
    """The panel was reset: every device on the feed returns to normal (a person still
    closes the incident). ``ref`` narrows it to one system where the protocol says which."""

    ref: str | None = None


@dataclass(frozen=True, slots=True)
class Garbage:
    """Input the codec could not use, skipped: ``where`` names the place (offset, topic)."""

    reason: str
    where: str = ""
    nbytes: int = 0


FeedEvent = Signal | Trouble | Seen | Reading | Reset | Garbage
