"""False alarms kept the way BS 5839-1 asks a site's responsible person to keep them.

Most automatic fire alarms are not fires (anchors.md). The code of practice does not
ask for none; it asks that each one be recorded with its cause, and it names the
point at which a site must investigate: one detector or call point behind three false
alarms in twelve months, or a system with more than 40 detectors reaching one false
alarm per 20 detectors in twelve months (three in twelve months for a smaller one).
The duty room finds the toaster next to a smoke head this way, and an auditor sees
whether it was acted on. docs/audit.md, "False alarms", says what is counted.

Pure functions over what ``gateway.audit`` read back from InfluxDB; no I/O here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alerting.causes import CAUSES, FALSE_ALARM_CAUSES

__all__ = ["CAUSES", "FALSE_ALARM_CAUSES", "Outcome", "assess", "automatic_detectors",
           "most_in_a_year"]

NOT_GIVEN = "not_given"  # a dismissal without a cause: not a fire, reason not recorded
YEAR_S = 365 * 86400.0
SOURCE_LIMIT = 3  # false alarms from one device in twelve months: investigate
SMALL_SYSTEM = 40  # detectors; up to this many, three false alarms in twelve months
PER_DETECTORS = 20  # beyond it, one false alarm per this many detectors in twelve months
MIN_ANNUALISED_S = 28 * 86400.0  # shorter windows are not scaled up to a year
AUTOMATIC_KINDS = frozenset({"smoke", "heat", "flame", "co"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one incident ended, as far as false alarms go."""

    t0: float  # unix seconds
    device: str | None  # the device whose alarm opened the incident
    dismissed: bool
    closed: bool
    cause: str | None  # given with the dismissal or the close

    @property
    def false_alarm(self) -> bool:
        """Dismissed by the worker, or closed with a cause other than ``fire``."""
        return self.dismissed or (self.closed and self.cause is not None
                                  and self.cause != "fire")


def automatic_detectors(devices: Iterable[Any]) -> int:
    """The site's automatic fire detectors (not call points, cameras or plain sensors).

    A temperature sensor counts when the site file gives it an ``alarm_at``.
    """
    return sum(1 for d in devices if d.kind in AUTOMATIC_KINDS
               or (d.kind == "temperature" and getattr(d, "alarm_at", None) is not None))


def most_in_a_year(times: Sequence[float]) -> int:
    """The largest number of ``times`` (seconds) inside any 365-day span."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= YEAR_S:
            start += 1
        best = max(best, end - start + 1)
    return best


def assess(outcomes: Sequence[Outcome], *, detectors: int | None = None,
           window_s: float | None = None) -> dict[str, Any]:
    """One site's false alarms: how many, why, from where, and whether to investigate.

    ``detectors`` (from the site file) gives the rate per 100 detectors and the
    system-wide rule; ``window_s`` (the report's span) the rate per year, for spans of
    four weeks or more. The rules look at the busiest twelve months inside the window:
    a window shorter than a year can show that a site must investigate, never that it
    need not.
    """
    false = [o for o in outcomes if o.false_alarm]
    by_cause = Counter(o.cause or NOT_GIVEN for o in false)
    per_device: dict[str, list[float]] = {}
    for o in false:
        per_device.setdefault(o.device or "?", []).append(o.t0)
    sources = sorted(({"device": d, "false_alarms": len(ts),
                       "investigate": most_in_a_year(ts) >= SOURCE_LIMIT}
                      for d, ts in per_device.items()),
                     key=lambda s: (-s["false_alarms"], s["device"]))
    reasons = [f"{s['device']}: {most_in_a_year(per_device[s['device']])} false alarms "
               f"in twelve months (BS 5839-1: investigate from {SOURCE_LIMIT})"
               for s in sources if s["investigate"]]
    per_100 = per_year = None
    if detectors:
        per_100 = round(100.0 * len(false) / detectors, 2)
        if window_s is not None and window_s >= MIN_ANNUALISED_S:
            per_year = round(per_100 * YEAR_S / window_s, 2)
        busiest = most_in_a_year([o.t0 for o in false])
        limit = SOURCE_LIMIT if detectors <= SMALL_SYSTEM else detectors / PER_DETECTORS
        if false and busiest >= limit:
            reasons.append(f"{busiest} false alarms in twelve months from {detectors} "
                           f"detectors (BS 5839-1: investigate from {limit:g})")
    return {
        "false_alarms": len(false),
        "by_cause": dict(sorted(by_cause.items())),
        "closed_without_cause": sum(o.closed and not o.dismissed and o.cause is None
                                    for o in outcomes),
        "detectors": detectors,
        "per_100_detectors": per_100,
        "per_100_detectors_per_year": per_year,
        "sources": sources,
        "investigate": reasons,
    }
