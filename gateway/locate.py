"""Where the fire is: a grid posterior over one building floor, for the pure engine.

The model (docs/locating.md) is the standard one for a growing fire under a ceiling:
a t-squared fire, Q = alpha * t^2, and Alpert's ceiling-jet temperature rise,
dT = 5.38 (Q / r)^(2/3) / H beyond r = 0.18 H. A detector that responds at a fixed
rise therefore alarms at

    t_i = t_ign + K * sqrt(max(r_i, R0_M))

with one unknown K per fire (growth rate, ceiling height and detector sensitivity
together). For a candidate origin this is linear in (t_ign, K), so both are solved in
closed form for every candidate at once, and only the two position coordinates are
searched, on a grid of the floor plan. Further evidence adds terms to the same cost:

- a working smoke detector that has stayed silent, although the front must have passed
  it to reach a farther detector that did alarm, costs at most ``MISS_COST``
  (= -2 ln P(a detector fails to operate), 12 %: anchors.md); beyond the farthest alarm
  silence costs nothing, since a fire may stop growing;
- walls: a detector in another zone than the candidate origin may alarm later than the
  model says (smoke had to pass a door), never earlier, so its residual is one-sided;
- heat, CO and flame alarms (other thresholds, not in the time model) and manual call
  points say "near here", as a Gaussian of their coverage radius;
- a camera bearing is a ray: the angular residual over the bearing noise, in the cell
  the camera watches (outside it, the camera would have been mistaken: a fixed cost);
- an analog smoke head's level f (a fraction of its alarm level) at time t is a point on
  the alarm curve itself: the rise it answers to grows as (t - t_ign)^(4/3), so it
  reads f at t = t_ign + K sqrt(r) f^(3/4), fitted like an alarm;
- an analog heat reading dT at time t is a point on the same curve: under the model dT
  grows as (t - t_ign)^(4/3) r^(-2/3), so t = t_ign + K sqrt(r) (dT / dT_ref)^(3/4),
  with a looser sigma (a sensor lags the gas around it).

The estimate is the posterior mean over the grid (weights exp(-cost/2)) inside the
zone holding most of the posterior, so a cell is never chosen by a point on its edge;
``error_m`` is the posterior's RMS radius. ``cost`` (the minimum) is what clustering
compares to tell a second fire from spread.

Everything is numpy over (candidates x detectors) arrays: a few hundred to a few
thousand candidates, a handful to a few dozen detectors, well under a millisecond to a
few milliseconds per solve (measured in bench/locate.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

# ---- the model's constants, and why

R0_M = 0.5  # 0.18 x a 2.7 m ceiling: inside it the jet is the plume, rise independent of r
K_MIN, K_MAX = 5.0, 200.0  # s/sqrt(m): ultra-fast growth, low threshold .. slow, smouldering
K_PRIOR, K_SIGMA = 35.0, 50.0  # a weak pull towards a medium t-squared fire
SIGMA0_S = 4.0  # smoke entry lag L/u (Heskestad: L of 2-10 m), head sampling, radio (s)
REL_SIGMA = 0.25  # detector sensitivity spread: +/-30 % in threshold is ~ +/-22 % in time
ANALOG_REL_SIGMA = 0.4  # a sensor's thermal lag makes an analog reading a rougher clock
GRACE_S = 3.0  # a silent detector is evidence only this long after its predicted alarm
MISS_COST = -2.0 * math.log(0.12)  # 4.24: 88 % of smoke alarms operate (anchors.md)
BEARING_SIGMA_DEG = 3.0  # camera analytics: box centre to bearing, lens and mounting
DT_REF_K = 13.0  # NFPA 72 Annex B: a smoke detector as a ~13 K rise-of-temperature detector
MIN_ANALOG_RISE_K = 2.0  # below this a reading is noise
GRID_M = 1.0  # candidate spacing; the posterior mean interpolates between points
FINE_FACTOR = 2  # a second, finer grid (0.5 m) around the mean when the posterior is narrow
FINE_HALF_M = 4.0  # ... at most this far around it
MARGIN_M = 8.0  # candidates this far around the evidence (more than a detector's radius)
CAMERA_RANGE_M = 40.0  # a camera's analytics do not see smoke farther than this
MAX_POINTS = 40_000  # per floor: a coarser grid for a huge (or mistyped) floor plan
# bounds on one solve, so a floor where everything alarms still costs milliseconds: the
# earliest alarms say most about the origin, the nearest silent detectors the rest
MAX_CANDIDATES = 1_000
MAX_ALARMS = 24
MAX_SILENT = 32
MAX_LEVELS = 24


@dataclass(frozen=True, slots=True)
class FloorPlan:
    """The candidate origins of one building floor, and the zone each lies in."""

    zone_ids: tuple[str, ...]
    polygons: tuple[np.ndarray, ...]
    spacing: float
    px: np.ndarray
    py: np.ndarray
    zi: np.ndarray  # index into zone_ids

    @classmethod
    def build(cls, zones: Sequence[tuple[str, Sequence[tuple[float, float]]]],
              spacing: float = GRID_M) -> FloorPlan:
        """Grid points at cell centres (never on an edge), each in the first zone holding it."""
        polys = tuple(np.asarray(p, dtype=float).reshape(-1, 2) for _, p in zones)
        allp = np.concatenate(polys)
        if not np.isfinite(allp).all():
            empty = np.zeros(0)
            return cls(tuple(z for z, _ in zones), polys, spacing, empty, empty,
                       empty.astype(np.int64))
        (x0, y0), (x1, y1) = allp.min(0), allp.max(0)
        w, h = float(x1 - x0), float(y1 - y0)
        # never more than MAX_POINTS, even for a huge or a needle-thin (mistyped) outline
        spacing = max(spacing, math.sqrt(w * h / MAX_POINTS), w / MAX_POINTS, h / MAX_POINTS)
        xs = np.arange(x0 + spacing / 2, x1, spacing)
        ys = np.arange(y0 + spacing / 2, y1, spacing)
        gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
        zi = zone_index(polys, gx, gy)
        keep = zi >= 0
        return cls(tuple(z for z, _ in zones), polys, spacing, gx[keep], gy[keep], zi[keep])

    def zone_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return zone_index(self.polygons, x, y)


def zone_index(polys: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Index of the first polygon holding each point (even-odd rule), -1 outside all."""
    out = np.full(x.shape, -1, dtype=np.int64)
    if x.size == 0:
        return out
    qx0, qx1, qy0, qy1 = x.min(), x.max(), y.min(), y.max()
    for k, poly in enumerate(polys):
        if (poly[:, 0].max() < qx0 or poly[:, 0].min() > qx1 or poly[:, 1].max() < qy0
                or poly[:, 1].min() > qy1):
            continue  # nowhere near these points
        inside = np.zeros(x.shape, dtype=bool)
        n = len(poly)
        for i in range(n):
            a, b = poly[i]
            c, d = poly[(i + 1) % n]
            if b == d:
                continue  # a horizontal edge never crosses the ray
            crosses = (b > y) != (d > y)
            xc = a + (y - b) * (c - a) / (d - b)
            inside ^= crosses & (x < xc)
        out[(out < 0) & inside] = k
    return out


@dataclass(slots=True)
class Evidence:
    """What is known about one incident on its fire floor, times in seconds from T0."""

    now: float
    alarm_xy: list[tuple[float, float]] = field(default_factory=list)  # smoke alarms
    alarm_t: list[float] = field(default_factory=list)
    alarm_zone: list[int] = field(default_factory=list)  # FloorPlan zone index, -1 unknown
    near_xy: list[tuple[float, float]] = field(default_factory=list)  # heat/CO/flame/manual
    near_sigma: list[float] = field(default_factory=list)
    silent_xy: list[tuple[float, float]] = field(default_factory=list)  # working, quiet smoke
    silent_zone: list[int] = field(default_factory=list)
    cam_xy: list[tuple[float, float]] = field(default_factory=list)
    cam_bearing_deg: list[float] = field(default_factory=list)
    cam_sigma_deg: list[float] = field(default_factory=list)  # BEARING_SIGMA_DEG, or fov / 2
    cam_zone: list[int] = field(default_factory=list)  # a camera sees its own cell
    analog_xy: list[tuple[float, float]] = field(default_factory=list)
    analog_t: list[float] = field(default_factory=list)
    analog_rise: list[float] = field(default_factory=list)  # kelvin above the baseline
    analog_zone: list[int] = field(default_factory=list)
    # analog addressable smoke heads not (yet) in alarm: level as a fraction of the alarm
    level_xy: list[tuple[float, float]] = field(default_factory=list)
    level_t: list[float] = field(default_factory=list)
    level_frac: list[float] = field(default_factory=list)
    level_zone: list[int] = field(default_factory=list)

    @property
    def has_position_evidence(self) -> bool:
        return bool(self.alarm_xy or self.near_xy or self.cam_xy)


@dataclass(frozen=True, slots=True)
class Estimate:
    x: float
    y: float
    error_m: float
    zone: str
    cost: float  # minimum over the candidates: -2 log likelihood, up to a constant
    method: str  # lsq (alarm times), centroid (no smoke alarm times), bearing (cameras only)
    t_ignition: float | None = None  # seconds from T0 (negative: before the first alarm)
    k: float | None = None


def solve(plan: FloorPlan, ev: Evidence, fine: bool = True) -> Estimate | None:
    """The posterior over the floor plan; None when there is no evidence on this floor.

    ``fine=False`` skips the second, finer grid: enough to compare costs (clustering).
    """
    if not ev.has_position_evidence or plan.px.size == 0:
        return None
    ev = _bounded(ev)
    px, py, zi = _candidates(plan, ev)
    if px.size == 0:
        return None
    cost, t_ign, k = _cost(px, py, zi, ev)
    est = _posterior(plan, px, py, zi, cost, plan.spacing)
    if est is None:
        return None
    x, y, err, zone = est
    if fine and err < 3 * plan.spacing:  # narrow: look again on a finer grid around the mean
        h = plan.spacing / FINE_FACTOR
        half = min(max(2.5 * err, 2 * plan.spacing), FINE_HALF_M)
        xs = np.arange(x - half, x + half + h / 2, h)
        ys = np.arange(y - half, y + half + h / 2, h)
        fx, fy = (a.ravel() for a in np.meshgrid(xs, ys))
        fz = plan.zone_of(fx, fy)
        ok = fz >= 0
        if ok.sum() >= 4:
            fx, fy, fz = fx[ok], fy[ok], fz[ok]
            fcost, ft, fk = _cost(fx, fy, fz, ev)
            fine = _posterior(plan, fx, fy, fz, fcost, h)
            if fine is not None:
                x, y, _, zone = fine
                px, py, cost, t_ign, k = fx, fy, fcost, ft, fk
                err = max(err, h)
    best = int(np.argmin(cost))
    if ev.alarm_xy:
        method = "lsq"
    elif ev.near_xy:
        method = "centroid"
    else:
        method = "bearing"
    return Estimate(
        x=float(x), y=float(y), error_m=float(err), zone=zone, cost=float(cost[best]),
        method=method,
        t_ignition=float(t_ign[best]) if ev.alarm_xy else None,
        k=float(k[best]) if ev.alarm_xy else None,
    )


def _bounded(ev: Evidence) -> Evidence:
    """The same evidence with at most MAX_ALARMS alarms (earliest) and MAX_SILENT silent."""
    if len(ev.level_xy) > MAX_LEVELS:  # the highest levels: the nearest the front
        top = sorted(range(len(ev.level_xy)), key=lambda i: -ev.level_frac[i])[:MAX_LEVELS]
        ev = replace(ev, level_xy=[ev.level_xy[i] for i in top],
                     level_t=[ev.level_t[i] for i in top],
                     level_frac=[ev.level_frac[i] for i in top],
                     level_zone=[ev.level_zone[i] for i in top])
    if len(ev.alarm_xy) <= MAX_ALARMS and len(ev.silent_xy) <= MAX_SILENT:
        return ev
    keep = sorted(range(len(ev.alarm_t)), key=lambda i: ev.alarm_t[i])[:MAX_ALARMS]
    out = replace(ev, alarm_xy=[ev.alarm_xy[i] for i in keep],
                  alarm_t=[ev.alarm_t[i] for i in keep],
                  alarm_zone=[ev.alarm_zone[i] for i in keep])
    if out.alarm_xy and len(ev.silent_xy) > MAX_SILENT:
        cx = sum(x for x, _ in out.alarm_xy) / len(out.alarm_xy)
        cy = sum(y for _, y in out.alarm_xy) / len(out.alarm_xy)
        near = sorted(range(len(ev.silent_xy)), key=lambda i: math.hypot(
            ev.silent_xy[i][0] - cx, ev.silent_xy[i][1] - cy))[:MAX_SILENT]
        out.silent_xy = [ev.silent_xy[i] for i in near]
        out.silent_zone = [ev.silent_zone[i] for i in near]
    return out


def _candidates(plan: FloorPlan, ev: Evidence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid points near the evidence; for cameras alone, every point within their range."""
    pts = ev.alarm_xy + ev.near_xy
    if pts:
        a = np.asarray(pts, dtype=float)
        (x0, y0), (x1, y1) = a.min(0) - MARGIN_M, a.max(0) + MARGIN_M
        sel = (plan.px >= x0) & (plan.px <= x1) & (plan.py >= y0) & (plan.py <= y1)
    else:  # cameras alone: their lines of sight within range, in the cells they watch
        c = np.asarray(ev.cam_xy, dtype=float)
        d = np.hypot(plan.px[:, None] - c[None, :, 0], plan.py[:, None] - c[None, :, 1])
        sel = (d <= CAMERA_RANGE_M).any(1)
        seen = np.isin(plan.zi, np.asarray(ev.cam_zone))
        if (sel & seen).any():
            sel &= seen
    idx = np.flatnonzero(sel)
    if idx.size > MAX_CANDIDATES:  # a very large area: coarser, the fine pass refines
        idx = idx[:: math.ceil(idx.size / MAX_CANDIDATES)]
    return plan.px[idx], plan.py[idx], plan.zi[idx]


def _cost(px: np.ndarray, py: np.ndarray, zi: np.ndarray, ev: Evidence
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-2 log likelihood of every candidate origin, with its fitted t_ign and K."""
    g = px.size
    cost = np.zeros(g)
    t_ign = np.zeros(g)
    k = np.full(g, K_PRIOR)
    if ev.alarm_xy:
        t_ign, k, fit_cost, t_far = _fit_times(px, py, zi, ev)
        cost += fit_cost
        near = _within(ev.silent_xy, px, py)
        if near.size:
            silent = [ev.silent_xy[i] for i in near]
            silent_zone = np.asarray(ev.silent_zone)[near]
            s = _sqrt_dist(px, py, silent)
            pred = t_ign[:, None] + k[:, None] * s
            sigma = np.sqrt(SIGMA0_S**2 + (REL_SIGMA * (pred - t_ign[:, None])) ** 2)
            # the front reached the farthest alarmed detector at t_far: one nearer should
            # have alarmed before that. Beyond it the fire may simply have stopped growing.
            late = np.minimum((np.maximum(t_far[:, None] - GRACE_S - pred, 0.0) / sigma) ** 2,
                              MISS_COST)
            # only a detector in the candidate's own zone had no wall in the way; if the
            # smoke reached other zones' detectors but none of this zone's, each of this
            # zone's detectors must have failed
            same = zi[:, None] == silent_zone[None, :]
            smoked = np.asarray(ev.alarm_zone + ev.level_zone)
            own_alarm = (zi[:, None] == smoked[None, :]).any(1)
            late = np.where(own_alarm[:, None], late, MISS_COST)
            cost += np.where(same, late, 0.0).sum(1)
    if ev.near_xy:
        a = np.asarray(ev.near_xy, dtype=float)
        d2 = (px[:, None] - a[None, :, 0]) ** 2 + (py[:, None] - a[None, :, 1]) ** 2
        cost += (d2 / np.asarray(ev.near_sigma)[None, :] ** 2).sum(1)
    if ev.cam_xy:
        c = np.asarray(ev.cam_xy, dtype=float)
        ang = np.arctan2(py[:, None] - c[None, :, 1], px[:, None] - c[None, :, 0])
        diff = np.angle(np.exp(1j * (ang - np.radians(ev.cam_bearing_deg)[None, :])))
        sig = np.radians(np.asarray(ev.cam_sigma_deg, dtype=float))[None, :]
        # a camera sees its own cell: elsewhere it can only have been mistaken
        seen = zi[:, None] == np.asarray(ev.cam_zone)[None, :]
        cost += np.where(seen, (diff / sig) ** 2, 2 * MISS_COST).sum(1)
    return cost, t_ign, k


def _within(pts: list[tuple[float, float]], px: np.ndarray, py: np.ndarray,
            margin: float = 2.0) -> np.ndarray:
    """Indices of the points inside the candidates' box: farther ones cannot matter much."""
    if not pts:
        return np.zeros(0, dtype=np.int64)
    a = np.asarray(pts, dtype=float)
    ok = ((a[:, 0] >= px.min() - margin) & (a[:, 0] <= px.max() + margin)
          & (a[:, 1] >= py.min() - margin) & (a[:, 1] <= py.max() + margin))
    return np.flatnonzero(ok)


def _sqrt_dist(px: np.ndarray, py: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    a = np.asarray(pts, dtype=float)
    d = np.hypot(px[:, None] - a[None, :, 0], py[:, None] - a[None, :, 1])
    return np.sqrt(np.maximum(d, R0_M))


def _fit_times(px: np.ndarray, py: np.ndarray, zi: np.ndarray, ev: Evidence
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate: weighted least squares for (t_ign, K), the residual cost, and the
    alarm time of the farthest fitted detector (how far the front is known to have come).

    Rows are ``t = t_ign + K * s``: an alarm has s = sqrt(r); an analog reading dT taken
    at t has s = sqrt(r) (dT / dT_ref)^(3/4), since under the model dT grows as
    (t - t_ign)^(4/3) r^(-2/3). Only alarms in the candidate's zone are fitted (if it has
    any). Alarms behind a wall, and every analog reading (a sensor lags the gas, so its
    reading is a lower bound), only cost when they came earlier than the model allows.
    """
    s_parts, c_parts, z_parts, rel_parts = [], [], [], []
    g = px.size
    if ev.alarm_xy:
        n = len(ev.alarm_xy)
        s_parts.append(_sqrt_dist(px, py, ev.alarm_xy))
        c_parts.append(np.asarray(ev.alarm_t, dtype=float))
        z_parts.append(np.asarray(ev.alarm_zone))
        rel_parts.append(np.full(n, REL_SIGMA))
    if ev.level_xy:
        f = np.clip(np.asarray(ev.level_frac, dtype=float), 0.01, 1.0) ** 0.75
        s_parts.append(_sqrt_dist(px, py, ev.level_xy) * f[None, :])
        c_parts.append(np.asarray(ev.level_t, dtype=float))
        z_parts.append(np.asarray(ev.level_zone))
        rel_parts.append(np.full(f.size, REL_SIGMA))
    if ev.analog_xy:
        f = (np.asarray(ev.analog_rise, dtype=float) / DT_REF_K) ** 0.75
        s_parts.append(_sqrt_dist(px, py, ev.analog_xy) * f[None, :])
        c_parts.append(np.asarray(ev.analog_t, dtype=float))
        z_parts.append(np.asarray(ev.analog_zone))
        rel_parts.append(np.full(f.size, ANALOG_REL_SIGMA))
    s = np.concatenate(s_parts, axis=1)
    c = np.concatenate(c_parts)[None, :]
    rel = np.concatenate(rel_parts)[None, :]
    is_alarm = np.zeros(s.shape[1], dtype=bool)
    is_alarm[: len(ev.alarm_xy) + len(ev.level_xy)] = True  # levels are fitted like alarms
    same = (zi[:, None] == np.concatenate(z_parts)[None, :]) & is_alarm[None, :]
    # no alarm in the candidate's own zone: fit them all, the silent ones there pay in full
    fit = np.where(same.any(1)[:, None], same, is_alarm[None, :])
    fitf = fit.astype(float)
    c1 = c[0]
    wf = fitf / SIGMA0_S**2
    s2 = s * s
    t_ign = np.zeros(g)
    k = np.full(g, K_PRIOR)
    w = wf
    for _ in range(2):  # second pass: sigma grows with time since ignition
        ws = wf * s
        saa = wf.sum(1)
        sas = ws.sum(1)
        sss = (wf * s2).sum(1) + 1.0 / K_SIGMA**2
        ta = wf @ c1
        ts = ws @ c1 + K_PRIOR / K_SIGMA**2
        det = saa * sss - sas * sas
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(det > 1e-12, (saa * ts - sas * ta) / det, K_PRIOR)
            k = np.clip(k, K_MIN, K_MAX)
            t_ign = np.where(saa > 0, (ta - k * sas) / saa, 0.0)
        ks = k[:, None] * s  # K sqrt(r): the model's time since ignition at each row
        w = 1.0 / (SIGMA0_S**2 + (rel * ks) ** 2)
        wf = w * fitf
    resid = c - t_ign[:, None] - ks  # observed minus model, in seconds
    # behind a wall: only an alarm earlier than the open-floor model is evidence against
    r2 = np.where(fit, resid**2, np.minimum(resid, 0.0) ** 2)
    cost = (w * r2).sum(1) + ((k - K_PRIOR) / K_SIGMA) ** 2
    far = np.argmax(np.where(fit, s, -1.0), axis=1)
    return t_ign, k, cost, c1[far]


def _posterior(plan: FloorPlan, px: np.ndarray, py: np.ndarray, zi: np.ndarray,
               cost: np.ndarray, spacing: float) -> tuple[float, float, float, str] | None:
    """Mean inside the zone with most posterior mass; RMS radius over all candidates."""
    w = np.exp(-0.5 * (cost - cost.min()))
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return None
    mass = np.bincount(zi, weights=w, minlength=len(plan.zone_ids))
    best = int(np.argmax(mass))
    inz = zi == best
    wz = w[inz]
    x = float((wz * px[inz]).sum() / wz.sum())
    y = float((wz * py[inz]).sum() / wz.sum())
    mx, my = (w * px).sum() / total, (w * py).sum() / total
    var = float((w * ((px - mx) ** 2 + (py - my) ** 2)).sum() / total)
    err = math.sqrt(var + (x - mx) ** 2 + (y - my) ** 2 + spacing**2 / 6)
    return x, y, err, plan.zone_ids[best]
