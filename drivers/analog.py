"""Thresholds for analog detectors: turn a stream of raw readings into alarm/clear edges.

Gas detectors (%LEL), CO sensors (ppm) and temperature probes on Modbus or GB/T 26875.3
report a number, not a state. The site says at what value the device is in alarm
(``alarm_at``) and at what value it is back to normal (``clear_at``); CONTRACT §2 fixes
the rule: alarm when value ≥ alarm_at, clear when it falls to ≤ clear_at.

Keeping ``clear_at`` below ``alarm_at`` is hysteresis: a reading that wobbles around
the alarm level (sensor noise, a slowly drifting gas concentration) must raise *one*
alarm, not a stream of alarm/clear pairs that would each page responders and flood
the audit trail. So this module only reports *edges*, and a value strictly between
the two levels never changes the state whatever it did before.

Pure on purpose (no I/O, no clock): the gateway keeps one ``Threshold`` per analog
device and feeds it every ``Reading``; tests drive it with arbitrary sequences.
"""

from __future__ import annotations

import math
from numbers import Real

ALARM = "alarm"
NORMAL = "normal"
CLEAR = "clear"


def _finite(name: str, x: float) -> float:
    """``x`` as a float, or a ValueError that names ``name`` and the bad value.

    NaN compares false with everything, so a NaN reading would silently freeze the
    state; infinities come from broken sensors or overflowing scale factors. Both are
    refused loudly instead of being compared.
    """
    if isinstance(x, bool) or not isinstance(x, Real):
        raise ValueError(f"{name} must be a number, got {x!r}")
    try:
        f = float(x)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{name} {x!r} is too large to be a measurement") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} is {f!r}: not a finite number (NaN and inf are rejected)")
    return f


class Threshold:
    """Alarm/clear state of one analog device, with hysteresis.

    ``scale`` converts the raw reading to the device's unit (value = raw × scale).
    ``alarm_at`` is the value at or above which the device alarms; ``clear_at`` the
    value at or below which an alarm clears, defaulting to ``alarm_at``. Without
    ``alarm_at`` the device only measures and never alarms.

    When a value satisfies both rules (possible only at ``value == alarm_at ==
    clear_at``) the alarm wins: the device stays in alarm, so a reading sitting exactly
    on a shared threshold cannot chatter, and a fire gateway errs towards the alarm.
    """

    __slots__ = ("_alarm_at", "_clear_at", "_scale", "_state")

    def __init__(
        self,
        scale: float = 1.0,
        alarm_at: float | None = None,
        clear_at: float | None = None,
    ) -> None:
        self._scale = _finite("scale", scale)
        if self._scale == 0:
            # raw × 0 is always 0: a device that can never alarm is a config mistake.
            raise ValueError("scale must not be 0 (every value would read 0)")
        if alarm_at is None:
            if clear_at is not None:
                raise ValueError("clear_at needs alarm_at: there is no alarm to clear")
            self._alarm_at: float | None = None
            self._clear_at: float | None = None
        else:
            self._alarm_at = _finite("alarm_at", alarm_at)
            self._clear_at = (
                self._alarm_at if clear_at is None else _finite("clear_at", clear_at)
            )
            if self._clear_at > self._alarm_at:
                # Inverted band: every alarm would clear on the next reading and re-alarm
                # on the one after, which is exactly the chattering hysteresis prevents.
                raise ValueError(
                    f"clear_at ({self._clear_at:g}) must not be above alarm_at "
                    f"({self._alarm_at:g})"
                )
        self._state = NORMAL

    @property
    def state(self) -> str:
        """``"alarm"`` or ``"normal"``; a new Threshold starts ``"normal"``."""
        return self._state

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def alarm_at(self) -> float | None:
        return self._alarm_at

    @property
    def clear_at(self) -> float | None:
        return self._clear_at

    def scaled(self, raw: float) -> float:
        """raw × scale, refusing NaN/inf in the input and in the product."""
        value = _finite("raw reading", raw) * self._scale
        if not math.isfinite(value):
            raise ValueError(f"raw reading {raw!r} × scale {self._scale!r} overflows to {value}")
        return value

    def update(self, raw: float) -> tuple[float, str | None]:
        """Feed one raw reading; return ``(value, edge)``.

        ``edge`` is ``"alarm"`` when this reading moved the device into alarm,
        ``"clear"`` when it moved it back to normal, and None otherwise (including every
        further reading on the same side). A rejected reading leaves the state as it was.
        """
        value = self.scaled(raw)
        if self._alarm_at is None or self._clear_at is None:
            return value, None
        if self._state == NORMAL:
            if value >= self._alarm_at:
                self._state = ALARM
                return value, ALARM
        elif value <= self._clear_at and value < self._alarm_at:
            self._state = NORMAL
            return value, CLEAR
        return value, None

    def __repr__(self) -> str:
        return (
            f"Threshold(scale={self._scale!r}, alarm_at={self._alarm_at!r}, "
            f"clear_at={self._clear_at!r}, state={self._state!r})"
        )
