"""The one thing every feed produces: a Signal from a device.

Drivers only know devices by the id the site gives them; what a signal means for an
incident is the gateway's business, so this module has no gateway imports.
"""

from __future__ import annotations

from dataclasses import dataclass

STATES = ("alarm", "clear", "fault", "test")


class PayloadError(ValueError):
    """A payload or frame that cannot be turned into a Signal; the message says why."""


@dataclass(frozen=True, slots=True)
class Signal:
    device: str
    state: str  # one of STATES
    kind: str | None = None
    value: float | None = None
    ts: float | None = None  # device's own clock, unix seconds, if it sent one
    bearing_deg: float | None = None  # camera: direction towards what it sees
    # what a feed knows beyond the contract's fields (a camera's box and score), kept in
    # the audit record: (key, text or number) pairs, so the Signal stays hashable
    meta: tuple[tuple[str, object], ...] = ()

    @property
    def is_alarm(self) -> bool:
        return self.state == "alarm"
