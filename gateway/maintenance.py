"""Which detectors and call points have shown that they work: a test, or an alarm.

Maintenance codes ask for every detector and call point to be operated in turn, over
the year (BS 5839-1's periodic inspection; GB 25201 for Chinese buildings), and a
detector whose battery and link are fine may still not see smoke: supervision cannot
tell. The audit trail already holds every ``test`` and ``alarm`` signal, so the audit
can list the devices that have not operated in a window (docs/audit.md, "Devices
tested"). Pure: ``gateway.audit`` reads the times, this decides what to show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.false_alarms import AUTOMATIC_KINDS

OPERABLE_KINDS = AUTOMATIC_KINDS | {"manual"}  # detectors and call points; not sensors


def operable(devices: Iterable[Any]) -> list[str]:
    """Ids of the site's detectors and call points, in site-file order."""
    return [d.id for d in devices if d.kind in OPERABLE_KINDS
            or (d.kind == "temperature" and getattr(d, "alarm_at", None) is not None)]


def coverage(devices: Iterable[Any], operated: Mapping[str, float]) -> dict[str, Any]:
    """How many of the site's detectors and call points operated, and which did not.

    ``operated`` maps a device id to the unix time of its last ``test`` or ``alarm``
    signal in the window; ids the site file does not name are ignored.
    """
    ids = operable(devices)
    done = {d: operated[d] for d in ids if d in operated}
    return {"devices": len(ids), "operated": len(done),
            "not_operated": [d for d in ids if d not in done],
            "last": dict(sorted(done.items()))}
