"""Which devices are flooding the gateway, and how much of their routine traffic to keep.

A detector reports a change of state and a heartbeat now and then; a sensor a reading
every few seconds. One that sends hundreds of messages a second is broken (a babbling
radio, a firmware loop) or is someone publishing under its name, and on a shared MQTT
session every one of those messages costs the gateway a parse and the alarms behind it
time. So, per ``signal/<id>``: a device above ``FLOOD_RATE`` messages a second over a
whole ``WINDOW_S`` is *flooding*; while it is, its routine messages (a plain ``clear``)
are dropped and counted, and its alarms, faults and tests always go on. None of its
routine messages is let through: a ``clear`` would end the fault it is reported with,
and a reading at that rate says nothing. It stops flooding after ``QUIET_S`` below
half the rate. The runtime raises a ``fault`` trouble naming the rate for a site device,
and judges nothing for a while after an MQTT session (re)connects: the broker then hands
over everything it queued, every device at once, which is a backlog and not a flood.

Pure: the caller passes the time, as for the engine. Counting is a dict increment per
message, cheap enough for the gateway's read path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS = 1_000_000_000
FLOOD_RATE = 200.0  # messages/s: the gateway's capacity is ~23,000/s for a whole site
WINDOW_S = 2.0  # the rate is averaged over this long
QUIET_S = 10.0  # below half the rate this long: no longer flooding
MAX_TRACKED = 10_000  # distinct ids counted per window at most (unknown ids included)


@dataclass(frozen=True, slots=True)
class Change:
    """A device started or stopped flooding; ``rate`` is messages/s over the last window."""

    device: str
    flooding: bool
    rate: float


@dataclass(slots=True)
class _Flooder:
    since_ns: int
    rate: float
    quiet_from_ns: int | None = None


@dataclass(slots=True)
class FloodGuard:
    rate: float = FLOOD_RATE
    window_s: float = WINDOW_S
    quiet_s: float = QUIET_S
    counts: dict[str, int] = field(default_factory=dict)
    window_start_ns: int | None = None
    flooding: dict[str, _Flooder] = field(default_factory=dict)

    def seen(self, device: str) -> None:
        """One message on ``signal/<device>``, of any kind."""
        counts = self.counts
        if device in counts:
            counts[device] += 1
        elif len(counts) < MAX_TRACKED:
            counts[device] = 1

    def admit_routine(self, device: str) -> bool:
        """May this routine message go on? Unless the device is flooding."""
        return device not in self.flooding

    def restart_window(self, now_ns: int) -> None:
        """Forget what was counted (a backlog after a reconnect is not a flood)."""
        self.counts, self.window_start_ns = {}, now_ns

    def tick(self, now_ns: int) -> list[Change]:
        """Close the counting window once it is ``window_s`` long; what changed."""
        if self.window_start_ns is None:
            self.window_start_ns = now_ns
            return []
        span_s = (now_ns - self.window_start_ns) / NS
        if span_s < self.window_s:
            return []
        counts, self.counts, self.window_start_ns = self.counts, {}, now_ns
        changes = []
        for device, n in counts.items():
            rate = n / span_s
            f = self.flooding.get(device)
            if rate > self.rate:
                if f is None:
                    self.flooding[device] = _Flooder(now_ns, rate)
                    changes.append(Change(device, True, rate))
                else:
                    f.rate, f.quiet_from_ns = rate, None
            elif f is not None and rate >= self.rate / 2:
                f.rate, f.quiet_from_ns = rate, None
        for device, f in list(self.flooding.items()):
            rate = counts.get(device, 0) / span_s
            if rate < self.rate / 2:
                if f.quiet_from_ns is None:
                    f.quiet_from_ns = now_ns - round(span_s * NS)
                if (now_ns - f.quiet_from_ns) / NS >= self.quiet_s:
                    del self.flooding[device]
                    changes.append(Change(device, False, rate))
        return changes
