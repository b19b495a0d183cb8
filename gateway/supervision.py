"""Device and feed supervision: troubles, heartbeats, link state. Pure, like the engine.

A trouble (a device gone silent, a low battery, a tamper switch, a unit that does not
answer its poll, a feed whose cable is pulled) is not a fire: it opens no incident. But a
detector that cannot report is a hole in the site's cover, so the duty room must see it
at once (``trouble/<device>``, retained) and an auditor later (``device_health``).

Precedence of a device's public state (CONTRACT §3 ``device/<device>``): disabled, alarm,
fault (from the device's own signals), then offline (silent past its heartbeat, reported
offline, not answering), then trouble (battery, tamper), then normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from gateway.model import NS, Publish

# order of severity: the first present is the ``trouble`` of the retained message
TROUBLE_ORDER = ("offline", "no_response", "fault", "tamper", "battery_low")
OFFLINE_TROUBLES = frozenset({"offline", "no_response"})
SIGNAL_STATES = frozenset({"disabled", "alarm", "fault"})


def public_state(signal_state: str, troubles: frozenset[str] | set[str]) -> str:
    """The one word ``device/<id>`` shows for a signal state plus a set of troubles."""
    if signal_state in SIGNAL_STATES:
        return signal_state
    if troubles & OFFLINE_TROUBLES:
        return "offline"
    if troubles:
        return "trouble"
    return "normal"


def signal_state_of(state: str) -> str:
    """Recover the signal-driven state from a stored public state."""
    return state if state in SIGNAL_STATES else "normal"


def ordered(troubles: frozenset[str] | set[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t for t in TROUBLE_ORDER if t in troubles)


def trouble_publish(device: str, troubles: tuple[str, ...], since_ns: int,
                    detail: str = "") -> Publish:
    """The retained ``trouble/<device>``; an empty payload when it has none left."""
    if not troubles:
        return Publish(f"trouble/{device}", b"", retain=True, durable=True)
    body: dict[str, object] = {"device": device, "trouble": troubles[0],
                               "troubles": list(troubles), "since": since_ns / NS}
    if detail:
        body["detail"] = detail[:200]
    return Publish(f"trouble/{device}", orjson.dumps(body), retain=True)


@dataclass(slots=True)
class FeedLink:
    """One feed's far end: a serial port, a TCP peer, the MQTT bridge it listens to."""

    name: str
    up: bool | None = None  # None until the transport first says
    since_ns: int = 0
    detail: str = ""

    def payload(self) -> bytes:
        return orjson.dumps({"feed": self.name, "state": "up" if self.up else "down",
                             "since": self.since_ns / NS, "detail": self.detail[:200]})


@dataclass(slots=True)
class Heartbeats:
    """Last time each supervised device (or feed) was heard, and how long it may be silent.

    Not journaled: after a restart every timer starts again from the first tick, so a
    device silent across the restart is reported one heartbeat after the gateway is back.
    """

    limits_ns: dict[str, int]
    last_ns: dict[str, int] = field(default_factory=dict)
    started: bool = False

    def start(self, now_ns: int) -> None:
        if not self.started:
            self.started = True
            for key in self.limits_ns:
                self.last_ns.setdefault(key, now_ns)

    def heard(self, key: str, now_ns: int) -> None:
        if key in self.limits_ns:
            self.last_ns[key] = now_ns

    def expired(self, now_ns: int) -> list[tuple[str, int]]:
        """(key, seconds of silence in ns) for every key past its limit."""
        if not self.started:
            return []
        return [(k, now_ns - self.last_ns[k]) for k, limit in self.limits_ns.items()
                if now_ns - self.last_ns[k] > limit]

    def next_ns(self, silent: set[str]) -> int | None:
        """When the next key not already reported silent runs out."""
        if not self.started:
            return None
        times = [self.last_ns[k] + limit + 1 for k, limit in self.limits_ns.items()
                 if k not in silent]
        return min(times) if times else None
