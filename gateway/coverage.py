"""Does each cell have as many detectors as the national code asks? (check-config notes)

A cell with too few detectors is found late and placed badly: the locator cannot do
better than the spacing it is given (docs/locating.md measures 5 m with two detectors in
a 300 m² cell, 2.0-2.3 m at the code's minimum, 1.3 m with one per room). GB 50116-2013
§6.2.2 sets how much floor one point detector protects, by room area, under a ceiling up
to 6 m (a zone's ``ceiling_m`` picks the 6-12 m row, or says point detectors do not work
there at all, §5.2.1; without it, up to 6 m: homes and shops are lower):

- smoke: 80 m² in a room of at most 80 m², else 60 m²;
- heat: 30 m² in a room of at most 30 m², else 20 m²;
- a corridor under 3 m wide (§6.2.4): smoke detectors at most 15 m apart, heat 10 m;
- and every point of the floor within one detector's protection radius (§6.2.2 and its
  table: smoke 6.7 m in a room of at most 80 m², else 5.8 m; heat 4.4 m in a room of at
  most 30 m², else 3.6 m; in a corridor, half the spacing along it): enough detectors
  bunched in one corner still leave the far end unwatched.

These are notes, not errors: the site may be a demonstration, or the detectors may be
the panel's and only some are wired to firegrid. ``firegrid check-config`` prints them
after its summary and ``firegrid run`` logs them once, once it is
running (a start that fails still says one thing only).
"""

from __future__ import annotations

import math

import numpy as np

from gateway.config import Site, Zone
from gateway.geometry import contains

CORRIDOR_W_M = 3.0
# (area of a small room, what one protects there, what one protects in a larger room,
#  spacing along a corridor)
RULES = {"smoke": (80.0, 80.0, 60.0, 15.0), "heat": (30.0, 30.0, 20.0, 10.0)}
# protection radius R (m): in a small room, in a larger one (table 6.2.2, h <= 6 m)
RADIUS = {"smoke": (6.7, 5.8), "heat": (4.4, 3.6)}
# the highest ceiling a point detector of the kind works under (§5.2.1: smoke 12 m; heat
# 8 m for the most sensitive classes A1/A2, the site file does not say which class)
MAX_CEILING_M = {"smoke": 12.0, "heat": 8.0}
LOW_CEILING_M = 6.0  # table 6.2.2: above this a smoke detector protects 80 m², 6.7 m
GRID_M = 0.25  # the floor is checked point by point at this pitch


def usable(zone: Zone, kind: str) -> bool:
    """Does a point ``kind`` detector work under this zone's ceiling at all (§5.2.1)?"""
    return zone.ceiling_m is None or zone.ceiling_m <= MAX_CEILING_M[kind]


def _high(zone: Zone, kind: str) -> bool:
    return kind == "smoke" and zone.ceiling_m is not None and zone.ceiling_m > LOW_CEILING_M


def ceiling_text(zone: Zone) -> str:
    return f"ceiling {zone.ceiling_m:g} m" if zone.ceiling_m is not None else "ceiling up to 6 m"


def area(polygon: list[tuple[float, float]]) -> float:
    """Shoelace area, m²."""
    n = len(polygon)
    return abs(sum(polygon[i][0] * polygon[(i + 1) % n][1]
                   - polygon[(i + 1) % n][0] * polygon[i][1] for i in range(n))) / 2.0


def needed(zone: Zone, kind: str) -> int:
    """How many ``kind`` detectors alone would cover ``zone`` under GB 50116."""
    small, per_small, per_large, spacing = RULES[kind]
    if _high(zone, kind):  # 6-12 m: one protects 80 m² whatever the room's size
        per_large = per_small
    s = area(zone.polygon)
    xs, ys = [p[0] for p in zone.polygon], [p[1] for p in zone.polygon]
    width, length = sorted((max(xs) - min(xs), max(ys) - min(ys)))
    if width < CORRIDOR_W_M:
        return max(1, math.ceil(length / spacing))
    return max(1, math.ceil(s / (per_small if s <= small else per_large)))


def radius(zone: Zone, kind: str) -> float:
    """How far from one ``kind`` detector a point of ``zone`` may be (GB 50116 §6.2.2/§6.2.4)."""
    small, _per_small, _per_large, spacing = RULES[kind]
    xs, ys = [p[0] for p in zone.polygon], [p[1] for p in zone.polygon]
    width = min(max(xs) - min(xs), max(ys) - min(ys))
    if width < CORRIDOR_W_M:  # along the corridor: half the spacing, centred across it
        return math.hypot(spacing / 2, width / 2)
    r_small, r_large = RADIUS[kind]
    return r_small if area(zone.polygon) <= small or _high(zone, kind) else r_large


def farthest(zone: Zone, detectors: list[tuple[str, float, float]]
             ) -> tuple[float, float, float, float] | None:
    """The point of ``zone`` worst covered by ``detectors`` (kind, x, y).

    Returns (x, y, distance to the nearest detector, that detector's radius) for the point
    where distance / radius is largest, or None when no point is found or no detector is
    given. A point counts as covered by whichever detector covers it best.
    """
    if not detectors:
        return None
    poly = np.asarray(zone.polygon, dtype=float)
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    gx, gy = np.meshgrid(np.arange(x0 + GRID_M / 2, x1, GRID_M),
                         np.arange(y0 + GRID_M / 2, y1, GRID_M))
    px, py = gx.ravel(), gy.ravel()
    inside = _inside(poly, px, py)
    px, py = px[inside], py[inside]
    if px.size == 0:
        return None
    dx = np.array([d[1] for d in detectors])[:, None] - px[None, :]
    dy = np.array([d[2] for d in detectors])[:, None] - py[None, :]
    dist = np.hypot(dx, dy)
    radii = np.array([radius(zone, d[0]) for d in detectors])[:, None]
    ratio = dist / radii
    best = ratio.argmin(axis=0)  # the detector that covers each point best
    cols = np.arange(px.size)
    worst = int(ratio[best, cols].argmax())
    k = int(best[worst])
    return float(px[worst]), float(py[worst]), float(dist[k, worst]), float(radii[k, 0])


def _inside(poly: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd ray test for many points at once (grid points never lie on an edge)."""
    inside = np.zeros(px.size, dtype=bool)
    n = len(poly)
    for i in range(n):
        xa, ya = poly[i]
        xb, yb = poly[(i + 1) % n]
        crosses = (ya > py) != (yb > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (px < xi)
    return inside


def notes(site: Site) -> list[str]:
    """One line per cell whose smoke and heat detectors cover less than the code asks.

    A smoke detector counts as 1 / needed(smoke) of the cell, a heat detector as
    1 / needed(heat), so a kitchen may mix them. A device counts in the cell that holds
    it (the first, if it stands on a shared edge).
    """
    home: dict[str, str] = {}  # device -> the first cell that holds it
    for d in site.devices:
        for z in site.zones:
            if z.floor == d.floor and contains(z.polygon, d.x, d.y):
                home[d.id] = z.id
                break
    out = []
    for i, zone in enumerate(site.zones):
        have = {"smoke": 0, "heat": 0}
        for d in site.devices:
            if d.kind in have and home.get(d.id) == zone.id:
                have[d.kind] += 1
        ceiling = ceiling_text(zone)
        kinds = [k for k in have if usable(zone, k)]
        for k in have:
            if not usable(zone, k) and have[k]:
                out.append(f"zones[{i}] ({zone.id}): {ceiling}: a point {k} detector works "
                           f"under at most {MAX_CEILING_M[k]:g} m (GB 50116-2013 §5.2.1), so "
                           f"its {have[k]} {k} are not counted; beam or aspirating smoke "
                           "detection is needed there")
        if not kinds:
            continue
        need = {k: needed(zone, k) for k in kinds}
        covered = sum(have[k] / need[k] for k in kinds)
        if covered < 1.0 - 1e-9:
            got = ", ".join(f"{have[k]} {k}" for k in kinds if have[k]) or \
                f"no {' or '.join(kinds)} detector"
            asks = " or ".join(f"{need[k]} {k}" for k in kinds)
            out.append(f"zones[{i}] ({zone.id}): {area(zone.polygon):.0f} m² with {got}; "
                       f"GB 50116-2013 asks for {asks} detectors (§6.2.2, {ceiling}): alarms "
                       "here are found later and placed less precisely")
        far = farthest(zone, [(d.kind, d.x, d.y) for d in site.devices
                              if d.kind in kinds and home.get(d.id) == zone.id])
        if far is not None and far[2] > far[3] + 0.05:
            x, y, dist, r = far
            out.append(f"zones[{i}] ({zone.id}): the point ({x:.1f}, {y:.1f}) is {dist:.1f} m "
                       f"from the nearest detector, beyond the {r:.1f} m GB 50116-2013 lets "
                       f"one protect (§6.2.2, {ceiling}): a fire there is found late")
    return out
