"""Floor-plan geometry: which micro-grid cell a point on a floor falls in.

Plain Python on purpose: polygons have a handful of corners and this runs once per
alarm, where the cost of building numpy arrays would dominate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.config import Site, Zone

Point = tuple[float, float]


def contains(polygon: Sequence[Point], x: float, y: float) -> bool:
    """Even-odd ray casting; points on an edge count as inside."""
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if _on_segment(x, y, x1, y1, x2, y2):
            return True
        if (y1 > y) != (y2 > y):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < xc:
                inside = not inside
    return inside


def _on_segment(x: float, y: float, x1: float, y1: float, x2: float, y2: float) -> bool:
    return _segment_distance(x, y, x1, y1, x2, y2) < 1e-9


def _segment_distance(x: float, y: float, x1: float, y1: float, x2: float, y2: float) -> float:
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / length2))
    return math.hypot(x - (x1 + t * dx), y - (y1 + t * dy))


def distance_to(polygon: Sequence[Point], x: float, y: float) -> float:
    """0 inside, else the distance to the nearest edge."""
    if contains(polygon, x, y):
        return 0.0
    n = len(polygon)
    return min(
        _segment_distance(x, y, *polygon[i], *polygon[(i + 1) % n]) for i in range(n)
    )


def zone_at(site: Site, floor: int, x: float, y: float) -> Zone | None:
    """The zone on ``floor`` holding (x, y), else the nearest zone on that floor."""
    best: tuple[float, Zone] | None = None
    for zone in site.zones:
        if zone.floor != floor:
            continue
        d = distance_to(zone.polygon, x, y)
        if d == 0.0:
            return zone
        if best is None or d < best[0]:
            best = (d, zone)
    return best[1] if best else None


def building_of(zone: Zone) -> str:
    """The building a zone belongs to; a zone without one stands alone."""
    return zone.building if zone.building is not None else f"zone:{zone.id}"
