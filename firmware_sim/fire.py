"""A fire model with ground truth: what each detector of a site does when something burns.

Scenarios are generated from a seed, so a benchmark table can be reproduced exactly,
and each event carries the source that caused it, so a locator, a clusterer and a
verifier can be scored against the truth. Like the rest of ``firmware_sim`` this module
never imports ``gateway``: it reads the site file as plain YAML.

The physics is the textbook model of an early fire under a ceiling, with the scatter
real installations have added on top (every figure and its source: docs/locating.md):

- heat release of a t-squared fire, Q = alpha t^2, with the four NFPA 72 Annex B /
  NFPA 92 growth classes (slow, medium, fast, ultra-fast);
- Alpert's ceiling-jet temperature rise and velocity at radius r under a ceiling of
  height H, skewed by a random draught so the spread is not perfectly circular;
- a smoke detector as a temperature-rise detector (NFPA 72 Annex B): the rise at which
  the site's detectors respond to this fire's smoke varies from fire to fire over Annex
  B's 4-20 K (the fuel and the detector type), and from head to head only as much as
  EN 54-7's reproducibility test lets specimens of one type differ; a smoke entry lag of
  characteristic length L (Heskestad), one per detector type, dS/dt = (dT_jet - S) u / L;
- a heat detector with a response time index: dT/dt = sqrt(u) / RTI (dT_jet - T), alarm
  at 57 C, one RTI per type as for smoke; temperature and CO sensors that report analog
  values every few seconds;
- walls: a detector in another zone (cell) sees the jet only after a door delay and
  weakened, or not at all; the floor above sees it after a shaft delay, or not at all;
- each automatic detector fails to operate with probability 12 % (88 % of smoke alarms
  operate in fires large enough: anchors.md); sampling and network delays;
- cameras see a visible plume in their own zone, field of view and range, after the
  analytics' delay (Frigate reports 6-10 s MQTT delays: anchors.md), with bearing noise;
- nuisance sources (toast, steam) make a small local aerosol puff that alarms the
  nearest smoke detector and rarely a second, warms or adds a little CO nearby, and
  now and then fools a camera;
- people sometimes pull the nearest manual call point on the fire floor.

What the gateway's locator assumes (docs/locating.md) is a simpler model: the same
sqrt(r) law without lags, draught, per-head thresholds or leakage, so the benchmark
measures it against a world that does not follow its own assumptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

# ---- growth classes: alpha in kW/s^2 (1055 kW at 600/300/150/75 s), and how often
ALPHA = {"slow": 0.00293, "medium": 0.01172, "fast": 0.0469, "ultrafast": 0.1876}
GROWTH_P = {"slow": 0.25, "medium": 0.35, "fast": 0.30, "ultrafast": 0.10}

SMOKE_DT_MEDIAN_K, SMOKE_DT_SPREAD = 10.0, 0.35  # NFPA 72 B: 4-20 K equivalent rise
SMOKE_L_M = (2.0, 10.0)  # Heskestad's characteristic length, m
# One site's heads are one type: EN 54-7's reproducibility test lets specimens differ by
# max:mean <= 1.33 and mean:min <= 1.5; sd 0.1 puts 95 % of heads within x/÷1.22 of their
# type's threshold, the rest (dust, drift) beyond. "independent" draws every head from the
# whole Annex B range instead, the harsher world earlier benchmarks were run in.
SMOKE_HEAD_SPREAD = 0.10
HEADS = ("type", "independent")
HEAT_RATING_RISE_K = 37.0  # 57 C rated, 20 C room
HEAT_RTI = (50.0, 150.0)  # (m s)^0.5: quick to standard response
TEMP_RTI = (150.0, 300.0)  # a room temperature sensor is slower
CO_PPM_PER_K = (0.5, 6.0)  # flaming fires little CO, smouldering much (log-uniform)
CO_ALARM_PPM = 50.0
P_FAIL = 0.12  # anchors.md: 88 % of smoke alarms operate
SAMPLE_S = 4.0  # a head samples every few seconds
NET_DELAY_S = (0.05, 1.5)  # radio or panel to the gateway
DOOR_DELAY_S = (30.0, 150.0)
DOOR_FACTOR = (0.3, 0.7)
P_DOOR_CLOSED = 0.4
SHAFT_DELAY_S = (45.0, 300.0)
SHAFT_FACTOR = (0.2, 0.6)
P_SHAFT = 0.5
DRAUGHT_MAX = 0.25  # jet radius stretched by up to +/-25 % along a draught
CAMERA_RANGE_M = 30.0
CAMERA_P_DETECT = 0.85
CAMERA_Q_KW = (15.0, 60.0)  # a plume a camera's analytics call smoke
CAMERA_DELAY_S = (2.0, 10.0)
CAMERA_BEARING_SD_DEG = 2.0
CAMERA_P_NUISANCE = 0.10  # steam or toast in view called smoke (assumption, docs)
P_MANUAL = 0.2  # someone pulls the nearest call point on the fire floor
MANUAL_DELAY_S = (20.0, 120.0)
NUISANCE_REACH_M = {"toast": 2.5, "steam": 2.0}  # median reach of the puff (log-normal)
NUISANCE_REACH_SPREAD = 0.5
TELEMETRY_S = 10.0  # analog sensors report this often
# analog addressable smoke heads (``smoke="level"``): the panel polls each head's level
# and passes it on every few seconds as a percent of that head's alarm level (drift
# compensated: clean air is 0); below about a tenth of the alarm level it is noise
SMOKE_LEVEL_S = 5.0
SMOKE_LEVEL_MIN_PCT = 10.0
SMOKE_LEVEL_NOISE_PCT = 2.0
SMOKE = ("alarm", "level")
HORIZON_S = 120.0  # events up to this long after a source's first alarm
DT_S = 0.5  # integration step

KINDS = ("fire", "toast", "steam", "two_buildings", "second_fire", "two_floors")
MIX = {"fire": 0.40, "toast": 0.15, "steam": 0.15, "two_buildings": 0.08,
       "second_fire": 0.12, "two_floors": 0.10}


# ------------------------------------------------------------------ the site as the sim sees it


@dataclass(frozen=True, slots=True)
class SimZone:
    id: str
    building: str
    floor: int
    polygon: tuple[tuple[float, float], ...]
    nuisance_prone: bool  # ask_human, or a kitchen / bath by name: where toast and steam happen

    def contains(self, x: float, y: float) -> bool:
        inside = False
        pts = self.polygon
        for i in range(len(pts)):
            (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % len(pts)]
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    def bbox(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.polygon], [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True, slots=True)
class SimDevice:
    id: str
    kind: str
    floor: int
    x: float
    y: float
    zone: str
    building: str
    azimuth_deg: float | None = None
    fov_deg: float | None = None
    alarm_at: float | None = None


@dataclass(slots=True)
class SiteMap:
    site: str
    zones: list[SimZone]
    devices: list[SimDevice]

    @classmethod
    def from_yaml(cls, text: str) -> SiteMap:
        """The zones and devices of a site file, read as plain YAML (no gateway import)."""
        doc = yaml.safe_load(text)
        zones = []
        for z in doc["zones"]:
            name = f"{z['id']} {z.get('name') or ''}".lower()
            prone = bool(z.get("ask_human")) or any(w in name for w in ("kitchen", "bath"))
            zones.append(SimZone(z["id"], z.get("building") or f"zone:{z['id']}", z["floor"],
                                 tuple((float(a), float(b)) for a, b in z["polygon"]), prone))
        site = cls(doc["site"], zones, [])
        for d in doc.get("devices", []):
            zone = site.zone_at(d["floor"], d["x"], d["y"])
            if zone is None:
                continue
            site.devices.append(SimDevice(d["id"], d["kind"], d["floor"], float(d["x"]),
                                          float(d["y"]), zone.id, zone.building,
                                          d.get("azimuth_deg"), d.get("fov_deg"),
                                          d.get("alarm_at")))
        return site

    def zone_at(self, floor: int, x: float, y: float) -> SimZone | None:
        """The zone holding the point, else the nearest (by bounding box) on that floor."""
        best: tuple[float, SimZone] | None = None
        for z in self.zones:
            if z.floor != floor:
                continue
            if z.contains(x, y):
                return z
            x0, y0, x1, y1 = z.bbox()
            d = math.hypot(max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1))
            if best is None or d < best[0]:
                best = (d, z)
        return best[1] if best else None

    def zone(self, zone_id: str) -> SimZone:
        return next(z for z in self.zones if z.id == zone_id)


# ------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Source:
    """The ground truth of one thing that makes detectors alarm."""

    id: str
    kind: str  # fire, toast, steam
    building: str
    floor: int
    zone: str
    x: float
    y: float
    t_ignition: float  # seconds from the scenario's start
    growth: str = ""  # fires: slow, medium, fast, ultrafast


@dataclass(frozen=True, slots=True)
class Event:
    """What one device sends, and when the gateway receives it (seconds from the start)."""

    t: float
    device: str
    kind: str
    state: str
    value: float | None = None
    bearing_deg: float | None = None
    source: str | None = None  # the source that caused an alarm; None for telemetry


@dataclass(slots=True)
class FireScenario:
    seed: int
    kind: str
    sources: list[Source]
    events: list[Event] = field(default_factory=list)

    def alarms(self) -> list[Event]:
        return [e for e in self.events if e.state == "alarm"]

    def as_sim_events(self, t_offset: float = 0.0) -> list[dict[str, Any]]:
        """Events as firmware_sim scenario entries (``at`` from the first event)."""
        t0 = self.events[0].t if self.events else 0.0
        out = []
        for e in self.events:
            ev: dict[str, Any] = {"at": round(e.t - t0 + t_offset, 3), "device": e.device,
                                  "state": e.state, "kind": e.kind}
            if e.value is not None:
                ev["value"] = round(e.value, 3)
            if e.bearing_deg is not None:
                ev["bearing_deg"] = round(e.bearing_deg, 2)
            out.append(ev)
        return out


def generate(site: SiteMap, seed: int, kind: str | None = None,
             heads: str = "type", smoke: str = "alarm") -> FireScenario:
    """One scenario, entirely determined by ``(site, seed, kind, heads, smoke)``.

    ``kind`` None draws one from ``MIX``. A draw whose sources alarm nothing (every
    detector failed, or none is near) is drawn again from the same generator, so every
    scenario returned has at least one alarm. ``heads``: ``type`` (the site's smoke heads
    share one type's threshold, per fire, and entry lag; its heat detectors one RTI) or
    ``independent`` (each head drawn over the whole range, see ``SMOKE_HEAD_SPREAD``).
    ``smoke``: ``alarm`` (conventional heads: an alarm and nothing before it) or ``level``
    (analog addressable heads: their level every ``SMOKE_LEVEL_S`` as well). The levels
    draw from a generator of their own, so both worlds hold the same fires and alarms.
    """
    if heads not in HEADS:
        raise ValueError(f"heads must be one of {', '.join(HEADS)}, not {heads!r}")
    if smoke not in SMOKE:
        raise ValueError(f"smoke must be one of {', '.join(SMOKE)}, not {smoke!r}")
    rng = np.random.default_rng(seed)
    lrng = np.random.default_rng([seed, 1]) if smoke == "level" else None
    if kind is None:
        kind = str(rng.choice(list(MIX), p=list(MIX.values())))
    for _ in range(50):
        sources = _sources(site, rng, kind)
        if sources is None:
            break
        events = _simulate(site, rng, sources, heads, lrng)
        if any(e.state == "alarm" for e in events):
            return FireScenario(seed, kind, sources, events)
    # a site where this kind cannot happen (one building, no floor above): a single fire
    if kind != "fire":
        return generate(site, seed, "fire", heads, smoke)
    raise ValueError(f"site {site.site} has no detector a fire can reach")


def _buildings(site: SiteMap) -> dict[str, list[SimZone]]:
    out: dict[str, list[SimZone]] = {}
    for z in site.zones:
        out.setdefault(z.building, []).append(z)
    return out


def _point_in(zone: SimZone, rng: np.random.Generator, margin: float = 0.3) -> tuple[float, float]:
    x0, y0, x1, y1 = zone.bbox()
    for _ in range(200):
        x = float(rng.uniform(x0 + margin, x1 - margin))
        y = float(rng.uniform(y0 + margin, y1 - margin))
        if zone.contains(x, y):
            return x, y
    return (x0 + x1) / 2, (y0 + y1) / 2


def _area(z: SimZone) -> float:
    pts = z.polygon
    return abs(sum(pts[i][0] * pts[(i + 1) % len(pts)][1] - pts[(i + 1) % len(pts)][0]
                   * pts[i][1] for i in range(len(pts)))) / 2


def _fire(site: SiteMap, rng: np.random.Generator, sid: str, zones: list[SimZone],
          t: float) -> Source:
    """A fire somewhere in ``zones``, uniform over floor area (where detectors are)."""
    covered = [z for z in zones if any(d.zone == z.id for d in site.devices)] or zones
    w = np.array([_area(z) for z in covered])
    zone = covered[int(rng.choice(len(covered), p=w / w.sum()))]
    x, y = _point_in(zone, rng)
    growth = str(rng.choice(list(GROWTH_P), p=list(GROWTH_P.values())))
    return Source(sid, "fire", zone.building, zone.floor, zone.id, x, y, t, growth)


def _sources(site: SiteMap, rng: np.random.Generator, kind: str) -> list[Source] | None:
    by_building = _buildings(site)
    names = sorted(by_building)
    allz = site.zones
    if kind == "fire":
        return [_fire(site, rng, "s1", allz, 0.0)]
    if kind in ("toast", "steam"):
        smoky = {d.zone for d in site.devices if d.kind == "smoke"}
        cand = [z for z in allz if z.id in smoky]
        prone = [z for z in cand if z.nuisance_prone]
        # most unwanted alarms come from kitchens and bathrooms, some from anywhere
        pool = prone if prone and rng.random() < 0.6 else cand
        zone = pool[int(rng.integers(len(pool)))]
        x, y = _point_in(zone, rng)
        return [Source("s1", kind, zone.building, zone.floor, zone.id, x, y, 0.0)]
    if kind == "two_buildings":
        if len(names) < 2:
            return None
        a, b = rng.choice(len(names), 2, replace=False)
        return [_fire(site, rng, "s1", by_building[names[a]], 0.0),
                _fire(site, rng, "s2", by_building[names[b]], float(rng.uniform(0, 30)))]
    if kind == "second_fire":
        b = names[int(rng.integers(len(names)))]
        first = _fire(site, rng, "s1", by_building[b], 0.0)
        return [first, _fire(site, rng, "s2", by_building[b], float(rng.uniform(60, 240)))]
    if kind == "two_floors":
        multi = [n for n in names if len({z.floor for z in by_building[n]}) > 1]
        if not multi:
            return None
        b = multi[int(rng.integers(len(multi)))]
        floors = sorted({z.floor for z in by_building[b]})
        f1, f2 = rng.choice(floors, 2, replace=False)
        return [_fire(site, rng, "s1", [z for z in by_building[b] if z.floor == f1], 0.0),
                _fire(site, rng, "s2", [z for z in by_building[b] if z.floor == f2],
                      float(rng.uniform(0, 60)))]
    raise ValueError(f"unknown scenario kind {kind!r}; one of {', '.join(KINDS)}")


# -------------------------------------------------------------------------- physics


def _jet(q: np.ndarray, r: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Alpert: ceiling-jet temperature rise (K) and velocity (m/s) at radius r."""
    q = np.maximum(q, 0.0)
    near = r <= 0.18 * h
    rr = np.maximum(r, 0.18 * h)
    dt = np.where(near, 16.9 * q ** (2 / 3) / h ** (5 / 3), 5.38 * (q / rr) ** (2 / 3) / h)
    u = np.where(near, 0.946 * (q / h) ** (1 / 3), 0.197 * q ** (1 / 3) * h**0.5 / rr ** (5 / 6))
    return dt, u


@dataclass(slots=True)
class _Exposure:
    """How one source reaches every device: distance, delay and strength (0 = never)."""

    r: np.ndarray
    delay: np.ndarray
    factor: np.ndarray


def _exposure(site: SiteMap, rng: np.random.Generator, src: Source,
              devs: list[SimDevice]) -> _Exposure:
    n = len(devs)
    r = np.array([math.hypot(d.x - src.x, d.y - src.y) for d in devs])
    draught = float(rng.uniform(0, DRAUGHT_MAX))
    theta = float(rng.uniform(0, 2 * math.pi))
    ang = np.array([math.atan2(d.y - src.y, d.x - src.x) for d in devs])
    r = r * (1 - draught * np.cos(ang - theta))
    delay = np.zeros(n)
    factor = np.zeros(n)
    doors: dict[str, tuple[float, float]] = {}
    shaft = (float(rng.uniform(*SHAFT_DELAY_S)), float(rng.uniform(*SHAFT_FACTOR))) \
        if rng.random() < P_SHAFT else None
    for i, d in enumerate(devs):
        if d.building != src.building:
            continue
        if d.floor == src.floor:
            if d.zone == src.zone:
                factor[i] = 1.0
                continue
            if d.zone not in doors:
                closed = rng.random() < P_DOOR_CLOSED
                doors[d.zone] = (float(rng.uniform(*DOOR_DELAY_S)),
                                 0.0 if closed else float(rng.uniform(*DOOR_FACTOR)))
            delay[i], factor[i] = doors[d.zone]
        elif d.floor == src.floor + 1 and shaft is not None:
            delay[i], factor[i] = shaft
    return _Exposure(r, delay, factor)


def _simulate(site: SiteMap, rng: np.random.Generator, sources: list[Source],
              heads: str = "type", lrng: np.random.Generator | None = None) -> list[Event]:
    """Integrate every device's response to every source; alarms and telemetry, in order.

    ``lrng``: the smoke heads report their levels too, with noise from this generator."""
    devs = site.devices
    n = len(devs)
    kinds = np.array([d.kind for d in devs])
    h = float(rng.uniform(2.6, 3.2))
    # per-device properties, drawn once per scenario
    smoke_thr = SMOKE_DT_MEDIAN_K * np.exp(rng.normal(0, SMOKE_DT_SPREAD, n))
    smoke_l = rng.uniform(*SMOKE_L_M, n)
    rti = np.where(kinds == "temperature", rng.uniform(*TEMP_RTI, n), rng.uniform(*HEAT_RTI, n))
    co_per_k = np.exp(rng.uniform(math.log(CO_PPM_PER_K[0]), math.log(CO_PPM_PER_K[1]), n))
    fails = rng.random(n) < P_FAIL
    ambient = rng.uniform(18.0, 26.0, n)
    net = rng.uniform(*NET_DELAY_S, n)
    sample = rng.uniform(0, SAMPLE_S, n)
    if heads == "type":  # the draws above stay as they were: "independent" is unchanged
        # one type of smoke head: its entry length L; the threshold per fire is in _fires
        smoke_thr = SMOKE_DT_MEDIAN_K * np.exp(rng.normal(0, SMOKE_HEAD_SPREAD, n))
        smoke_l = float(rng.uniform(*SMOKE_L_M)) * np.exp(rng.normal(0, SMOKE_HEAD_SPREAD, n))
        # heat detectors and temperature sensors are one type each as well: one RTI
        type_rti = np.where(kinds == "temperature", float(rng.uniform(*TEMP_RTI)),
                            float(rng.uniform(*HEAT_RTI)))
        rti = type_rti * np.exp(rng.normal(0, SMOKE_HEAD_SPREAD, n))
    events: list[Event] = []
    first_alarm: dict[str, float] = {}
    alarm_at: dict[int, tuple[float, str]] = {}  # device index -> (t, source)
    heat_trace: dict[int, list[tuple[float, float]]] = {}  # analog: (t, value) over time
    levels: dict[int, list[tuple[float, float]]] | None = {} if lrng is not None else None

    fires = [s for s in sources if s.kind == "fire"]
    if fires:
        # how much smoke each fire makes per kelvin of rise, relative to the median (1 for
        # every fire in the independent model, whose heads already carry that spread)
        smoke_per_k = (np.exp(rng.normal(0, SMOKE_DT_SPREAD, len(fires))) if heads == "type"
                       else np.ones(len(fires)))
        _fires(site, rng, fires, devs, h, smoke_thr, smoke_l, rti, co_per_k, fails,
               ambient, alarm_at, heat_trace, smoke_per_k, levels, lrng)
    for src in sources:
        if src.kind != "fire":
            _nuisance(site, rng, src, devs, alarm_at, heat_trace, ambient)
    if levels is not None and lrng is not None:
        _nuisance_levels(site, lrng, [s for s in sources if s.kind != "fire"], devs,
                         alarm_at, fails, levels)
    for i, (t, sid) in alarm_at.items():
        d = devs[i]
        if d.kind in ("temperature",) and d.alarm_at is None:
            continue  # a plain temperature sensor only reports values
        first_alarm[sid] = min(first_alarm.get(sid, math.inf), t)
    # horizon: each source's alarms up to HORIZON_S after its own first alarm
    for i, (t, sid) in sorted(alarm_at.items(), key=lambda kv: kv[1][0]):
        d = devs[i]
        if d.kind == "temperature" and d.alarm_at is None:
            continue
        if t > first_alarm.get(sid, math.inf) + HORIZON_S:
            continue
        value = None
        if d.kind in ("heat", "temperature", "co") and i in heat_trace:
            value = _value_at(heat_trace[i], t)
        bearing = None
        if d.kind == "camera":
            src = next(s for s in sources if s.id == sid)
            bearing = math.degrees(math.atan2(src.y - d.y, src.x - d.x)) + float(
                rng.normal(0, CAMERA_BEARING_SD_DEG))
            bearing = (bearing + 180.0) % 360.0 - 180.0
            events.append(Event(t, d.id, d.kind, "alarm", None, bearing, sid))
            continue
        extra = 0.0 if d.kind in ("manual", "camera") else float(sample[i] + net[i])
        events.append(Event(t + extra, d.id, d.kind, "alarm", value, bearing, sid))
    end = max(first_alarm.values(), default=0.0) + HORIZON_S
    for i, trace in heat_trace.items():  # analog telemetry of sensors that saw something
        d = devs[i]
        for t, v in trace:
            if t <= end and (i not in alarm_at or t < alarm_at[i][0]):
                events.append(Event(t + float(net[i]), d.id, d.kind, "clear", v))
    for i, trace in (levels or {}).items():  # analog smoke heads: levels before the alarm
        d = devs[i]
        for t, v in trace:
            if t <= end and (i not in alarm_at or t < alarm_at[i][0]):
                events.append(Event(t + float(net[i]), d.id, d.kind, "clear", v))
    events.sort(key=lambda e: (e.t, e.device))
    return events


def _value_at(trace: list[tuple[float, float]], t: float) -> float:
    best = trace[0][1]
    for tt, v in trace:
        if tt > t:
            break
        best = v
    return best


def _fires(site: SiteMap, rng: np.random.Generator, fires: list[Source], devs: list[SimDevice],
           h: float, smoke_thr: np.ndarray, smoke_l: np.ndarray, rti: np.ndarray,
           co_per_k: np.ndarray, fails: np.ndarray, ambient: np.ndarray,
           alarm_at: dict[int, tuple[float, str]],
           heat_trace: dict[int, list[tuple[float, float]]],
           smoke_per_k: np.ndarray,
           levels: dict[int, list[tuple[float, float]]] | None = None,
           lrng: np.random.Generator | None = None) -> None:
    """Time-step the devices under every fire at once (each device answers the strongest).

    ``levels``: analog smoke heads' readings, percent of their alarm level, are added here.
    """
    n = len(devs)
    kinds = np.array([d.kind for d in devs])
    exps = [_exposure(site, rng, f, devs) for f in fires]
    alphas = [ALPHA[f.growth] for f in fires]
    t_end = max(f.t_ignition for f in fires) + 900.0  # slow fires take minutes to alarm
    smoke = np.zeros(n)  # smoke inside the head, as a temperature-rise equivalent
    link = np.zeros(n)  # heat detector / sensor element temperature rise
    co = np.zeros(n)
    cam_q = rng.uniform(*CAMERA_Q_KW, n)
    cam_sees = rng.random(n) < CAMERA_P_DETECT
    cam_delay = rng.uniform(*CAMERA_DELAY_S, n)
    flame_delay = rng.uniform(2.0, 5.0, n)
    telemetry_next = np.full(n, -30.0)
    analog = np.isin(kinds, ("heat", "temperature", "co"))
    level_heads = (kinds == "smoke") & ~fails  # a failed head reports nothing useful
    level_next = (lrng.uniform(0, SMOKE_LEVEL_S, n) - 30.0 if lrng is not None
                  else np.full(n, np.inf))
    # devices that can see any fire at all (same building): others never change
    live = np.zeros(n, dtype=bool)
    for e in exps:
        live |= e.factor > 0
    src_of = np.full(n, -1)
    done = np.array([i in alarm_at for i in range(n)], dtype=bool)
    temp_limit = np.array([d.alarm_at if d.alarm_at is not None else np.inf for d in devs])
    first_seen = math.inf
    t = -30.0
    while t <= t_end:
        dt_jet = np.zeros(n)
        smoke_jet = np.zeros(n)  # the jet's smoke, in kelvin of a median fire's rise
        u_jet = np.zeros(n)
        for k, (f, e) in enumerate(zip(fires, exps, strict=True)):
            age = t - f.t_ignition - e.delay
            q = np.where(age > 0, alphas[k] * np.maximum(age, 0) ** 2, 0.0)
            d_t, u = _jet(q, e.r, h)
            d_t *= e.factor
            u *= np.sqrt(e.factor)
            stronger = d_t > dt_jet
            src_of = np.where(stronger & (d_t > 0.05), k, src_of)
            dt_jet = np.maximum(dt_jet, d_t)
            smoke_jet = np.maximum(smoke_jet, d_t * smoke_per_k[k])
            u_jet = np.maximum(u_jet, u)
        smoke += np.minimum(DT_S * u_jet / smoke_l, 1.0) * (smoke_jet - smoke)
        link += np.minimum(DT_S * np.sqrt(u_jet) / rti, 1.0) * (dt_jet - link)
        co += np.minimum(DT_S * u_jet / smoke_l, 1.0) * (dt_jet * co_per_k - co)
        hit = (((kinds == "smoke") & (smoke >= smoke_thr))
               | ((kinds == "heat") & (link >= HEAT_RATING_RISE_K))
               | ((kinds == "temperature") & (ambient + link >= temp_limit))
               | ((kinds == "co") & (co >= CO_ALARM_PPM))
               | ((kinds == "flame") & (dt_jet > 0)))
        for i in np.flatnonzero(hit & live & ~fails & ~done & (src_of >= 0)):
            fire = fires[int(src_of[i])]
            if kinds[i] == "flame":  # sees the flame itself: in its room, big enough, near
                if not (devs[i].zone == fire.zone and _fire_q(fire, t) >= 15.0
                        and math.hypot(devs[i].x - fire.x, devs[i].y - fire.y) <= 10.0):
                    continue
                alarm_at[i] = (t + float(flame_delay[i]), fire.id)
            else:
                alarm_at[i] = (t, fire.id)
            done[i] = True
            first_seen = min(first_seen, t)
        # telemetry of analog sensors that something reaches
        due = analog & (t >= telemetry_next) & live
        for i in np.flatnonzero(due):
            v = float(ambient[i] + link[i]) if kinds[i] != "co" else float(co[i])
            heat_trace.setdefault(i, []).append((t, v + float(rng.normal(0, 0.2))))
            telemetry_next[i] = t + TELEMETRY_S
        if levels is not None and lrng is not None:
            pct = 100.0 * smoke / smoke_thr
            for i in np.flatnonzero(level_heads & (t >= level_next) & live & ~done):
                level_next[i] = t + SMOKE_LEVEL_S
                v = round(float(pct[i] + lrng.normal(0, SMOKE_LEVEL_NOISE_PCT)))
                if v >= SMOKE_LEVEL_MIN_PCT:
                    levels.setdefault(int(i), []).append((t, float(min(v, 99))))
        t += DT_S
        if t > first_seen + HORIZON_S + 60 and t > max(f.t_ignition for f in fires) + 60:
            break
    _cameras_and_people(site, rng, fires, devs, alarm_at, cam_q, cam_sees, cam_delay)
    # keep traces only for sensors that saw a rise: the rest would only say "ambient"
    for i in list(heat_trace):
        vals = [v for _, v in heat_trace[i]]
        if max(vals) - min(vals) < 1.0:
            del heat_trace[i]


def _fire_q(fire: Source, t: float) -> float:
    age = t - fire.t_ignition
    return ALPHA[fire.growth] * age * age if age > 0 else 0.0


def _cameras_and_people(site: SiteMap, rng: np.random.Generator, fires: list[Source],
                        devs: list[SimDevice], alarm_at: dict[int, tuple[float, str]],
                        cam_q: np.ndarray, cam_sees: np.ndarray, cam_delay: np.ndarray) -> None:
    for fire in fires:
        for i, d in enumerate(devs):
            if d.kind != "camera" or i in alarm_at or not cam_sees[i]:
                continue
            if _in_view(d, fire.x, fire.y, fire.floor, fire.zone):
                t_see = fire.t_ignition + math.sqrt(cam_q[i] / ALPHA[fire.growth])
                alarm_at[i] = (t_see + float(cam_delay[i]), fire.id)
        first = [t for t, sid in alarm_at.values() if sid == fire.id]
        if first and rng.random() < P_MANUAL:
            mcps = [(math.hypot(d.x - fire.x, d.y - fire.y), i) for i, d in enumerate(devs)
                    if d.kind == "manual" and d.building == fire.building
                    and d.floor == fire.floor and i not in alarm_at]
            if mcps:
                _, i = min(mcps)
                alarm_at[i] = (min(first) + float(rng.uniform(*MANUAL_DELAY_S)), fire.id)


def _in_view(cam: SimDevice, x: float, y: float, floor: int, zone: str) -> bool:
    if cam.floor != floor or cam.zone != zone:
        return False
    dist = math.hypot(x - cam.x, y - cam.y)
    if dist > CAMERA_RANGE_M:
        return False
    if cam.azimuth_deg is None:
        return True
    ang = math.degrees(math.atan2(y - cam.y, x - cam.x))
    diff = (ang - cam.azimuth_deg + 180.0) % 360.0 - 180.0
    return abs(diff) <= (cam.fov_deg or 90.0) / 2


def _nuisance(site: SiteMap, rng: np.random.Generator, src: Source, devs: list[SimDevice],
              alarm_at: dict[int, tuple[float, str]],
              heat_trace: dict[int, list[tuple[float, float]]], ambient: np.ndarray) -> None:
    """A local puff: the nearest smoke detector alarms (that is what makes it an unwanted
    alarm), others only within the puff's reach; a little heat or CO nearby."""
    near = sorted((math.hypot(d.x - src.x, d.y - src.y), i) for i, d in enumerate(devs)
                  if d.kind == "smoke" and d.zone == src.zone and i not in alarm_at)
    if not near:
        return
    reach = NUISANCE_REACH_M[src.kind] * math.exp(rng.normal(0, NUISANCE_REACH_SPREAD))
    t1 = src.t_ignition + float(rng.uniform(10, 120))
    for rank, (dist, i) in enumerate(near):
        if rank == 0 or dist <= reach:
            alarm_at[i] = (t1 if rank == 0 else t1 + float(rng.uniform(5, 60)), src.id)
    for i, d in enumerate(devs):
        if d.building != src.building or d.floor != src.floor:
            continue
        dist = math.hypot(d.x - src.x, d.y - src.y)
        if d.kind == "camera" and i not in alarm_at and _in_view(d, src.x, src.y, src.floor,
                                                                   src.zone):
            if rng.random() < CAMERA_P_NUISANCE:
                alarm_at[i] = (t1 + float(rng.uniform(*CAMERA_DELAY_S)), src.id)
        elif d.kind in ("heat", "temperature", "co") and d.zone == src.zone and dist <= 4.0:
            if d.kind == "co":
                peak = float(rng.uniform(0, 15)) if src.kind == "toast" else 0.0
                base = 0.0
            else:
                peak = float(rng.uniform(1, 5)) if src.kind == "steam" else float(
                    rng.uniform(0, 2))
                base = float(ambient[i])
            peak *= max(0.0, 1 - dist / 4.0)
            trace = []
            for k in range(int((t1 + 120) // TELEMETRY_S) + 4):
                t = -30.0 + k * TELEMETRY_S
                rise = peak * min(1.0, max(0.0, (t - src.t_ignition) / 60.0))
                trace.append((t, base + rise + float(rng.normal(0, 0.2))))
            if peak >= 1.0:
                heat_trace[i] = trace


def _nuisance_levels(site: SiteMap, lrng: np.random.Generator, puffs: list[Source],
                     devs: list[SimDevice], alarm_at: dict[int, tuple[float, str]],
                     fails: np.ndarray, levels: dict[int, list[tuple[float, float]]]) -> None:
    """What analog heads read of a puff: the heads it alarms climb to their alarm level,
    the others in its cell to a level that falls off over the puff's own reach."""
    for src in puffs:
        alarmed = {i: t for i, (t, sid) in alarm_at.items()
                   if sid == src.id and devs[i].kind == "smoke"}
        if not alarmed:
            continue
        reach = max(math.hypot(devs[i].x - src.x, devs[i].y - src.y) for i in alarmed)
        t1 = min(alarmed.values())
        for i, d in enumerate(devs):
            if d.kind != "smoke" or d.zone != src.zone or fails[i]:
                continue
            if i in alarmed:
                top, t_end = 100.0, alarmed[i]
            elif i in alarm_at:
                continue  # alarmed by something else
            else:
                dist = math.hypot(d.x - src.x, d.y - src.y)
                top = 90.0 * math.exp(-max(dist - reach, 0.0) / max(reach, 1.0))
                t_end = t1 + HORIZON_S
                if top < SMOKE_LEVEL_MIN_PCT:
                    continue
            span = max(min(t_end, t1) - src.t_ignition, 1.0)
            t = src.t_ignition + float(lrng.uniform(0, SMOKE_LEVEL_S))
            trace: list[tuple[float, float]] = []
            while t < t_end:
                v = round(top * min((t - src.t_ignition) / span, 1.0)
                          + float(lrng.normal(0, SMOKE_LEVEL_NOISE_PCT)))
                if v >= SMOKE_LEVEL_MIN_PCT:
                    trace.append((t, float(min(v, 99))))
                t += SMOKE_LEVEL_S
            if trace:
                levels[i] = trace


# ----------------------------------------------------------------- a larger generated site


def generated_site(buildings: int = 4, floors: int = 3, flats_per_side: int = 4,
                   name: str = "generated-estate") -> str:
    """A residential estate as site YAML: every flat a cell with a detector per room.

    Per building and floor: a corridor (2.5 m wide) with smoke detectors every 8 m, a
    camera at each end looking along it and a call point at each stair; flats of
    10 x 8 m on both sides, each one zone (micro-grid cell) with a smoke detector in
    each of its four rooms (GB 50116 asks for one per room in homes), and in every
    other flat a temperature sensor reporting values. On the ground floor the first
    flat of each side is a shop with a kitchen: a canteen zone that asks a human, with a
    heat detector and a CO detector.
    """
    zones: list[str] = []
    devices: list[str] = []
    responders = []
    width = flats_per_side * 10.0
    for b in range(buildings):
        bx = b * (width + 30.0)
        worker = f"w-b{b + 1}"
        responders.append(f"  - {{id: {worker}, tier: 0}}")
        for f in range(1, floors + 1):
            tag = f"b{b + 1}-{f}f"
            cy0, cy1 = 8.0, 10.5
            zones.append(f"  - {{id: {tag}-corridor, building: b{b + 1}, floor: {f}, "
                         f"polygon: [[{bx},{cy0}],[{bx + width},{cy0}],[{bx + width},{cy1}],"
                         f"[{bx},{cy1}]], worker: {worker}}}")
            for k in range(int(width // 8)):
                devices.append(f"  - {{id: smk-{tag}-c{k + 1}, kind: smoke, floor: {f}, "
                               f"x: {bx + 4 + 8 * k}, y: 9.25}}")
            devices.append(f"  - {{id: cam-{tag}-w, kind: camera, floor: {f}, x: {bx + 0.2}, "
                           f"y: 9.25, azimuth_deg: 0, fov_deg: 60}}")
            devices.append(f"  - {{id: cam-{tag}-e, kind: camera, floor: {f}, "
                           f"x: {bx + width - 0.2}, y: 9.25, azimuth_deg: 180, fov_deg: 60}}")
            devices.append(f"  - {{id: mcp-{tag}-w, kind: manual, floor: {f}, x: {bx + 0.5}, "
                           f"y: 10.3}}")
            devices.append(f"  - {{id: mcp-{tag}-e, kind: manual, floor: {f}, "
                           f"x: {bx + width - 0.5}, y: 10.3}}")
            for side, (y0, y1) in (("s", (0.0, 8.0)), ("n", (10.5, 18.5))):
                for k in range(flats_per_side):
                    x0 = bx + 10.0 * k
                    zid = f"{tag}-{side}{k + 1}"
                    canteen = f == 1 and k == 0
                    extra = ", name: canteen kitchen, ask_human: true" if canteen else ""
                    zones.append(f"  - {{id: {zid}, building: b{b + 1}, floor: {f}, "
                                 f"polygon: [[{x0},{y0}],[{x0 + 10},{y0}],[{x0 + 10},{y1}],"
                                 f"[{x0},{y1}]], worker: {worker}{extra}}}")
                    for j, (dx, dy) in enumerate(((2.5, 2.0), (7.5, 2.0), (2.5, 6.0),
                                                  (7.5, 6.0))):
                        devices.append(f"  - {{id: smk-{zid}-{j + 1}, kind: smoke, floor: {f}, "
                                       f"x: {x0 + dx}, y: {y0 + dy}}}")
                    if canteen:
                        devices.append(f"  - {{id: heat-{zid}, kind: heat, floor: {f}, "
                                       f"x: {x0 + 5}, y: {y0 + 4}}}")
                        devices.append(f"  - {{id: co-{zid}, kind: co, floor: {f}, "
                                       f"x: {x0 + 5}, y: {y0 + 1}}}")
                    elif k % 2 == 1:
                        devices.append(f"  - {{id: tmp-{zid}, kind: temperature, floor: {f}, "
                                       f"x: {x0 + 5}, y: {y0 + 4}}}")
    return "\n".join([
        f"# Generated by firmware_sim.fire.generated_site({buildings}, {floors}, "
        f"{flats_per_side}): a benchmark estate.",
        f"site: {name}",
        "sla: {locate_s: 10, confirm_s: 30, in_place_s: 60}",
        "zones:", *zones,
        "devices:", *devices,
        "responders:", *responders,
        "  - {id: guard-1, tier: 1}",
        "  - {id: squad-1, tier: 2}",
        "  - {id: station-1, tier: 3}",
        "tiers:",
        "  - {tier: 1, ack_timeout_s: 15}",
        "  - {tier: 2, ack_timeout_s: 20}",
        "  - {tier: 3, ack_timeout_s: 30}",
        "",
    ])


# ------------------------------------------------------- for `firegrid sim`, by hand


def scenario_yaml(sc: FireScenario, site: str, before_s: float = 30.0) -> str:
    """A ``firegrid sim`` scenario file of ``sc``, its ground truth in the header comment.

    Events from ``before_s`` before the first alarm (analog sensors' ordinary readings, so
    the gateway has their baselines) to the last alarm; times from the first of those.
    Nobody answers (the gateway escalates): compare what it located, clustered and
    verified with the truth by hand. Played faster (``--time-scale``), the alarm times
    shrink with it and the locator reads a faster fire than the model made.
    """
    alarms = sc.alarms()
    lo = (alarms[0].t if alarms else 0.0) - before_s
    hi = alarms[-1].t if alarms else 0.0
    kept = FireScenario(sc.seed, sc.kind, sc.sources,
                        [e for e in sc.events if lo <= e.t <= hi])
    events = kept.as_sim_events()
    t0 = kept.events[0].t if kept.events else 0.0
    truth = "\n".join(
        f"#   {s.id}: {s.kind} in {s.zone} (building {s.building}, floor {s.floor}) at "
        f"x={s.x:.2f} y={s.y:.2f}, ignition {s.t_ignition - t0:.1f} s"
        + (f", {s.growth} growth" if s.growth else "") for s in sc.sources)
    doc = {"name": f"fire model seed {sc.seed} ({sc.kind})", "site": site,
           "description": "generated by firmware_sim.fire; times from the first event",
           "events": events, "duration_s": (events[-1]["at"] if events else 0) + 5.0}
    return (f"# Ground truth (seconds from the first event):\n{truth}\n"
            + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_sim.fire SITE.yaml --seed 3 [--kind fire] > fire.yaml``."""
    import argparse

    ap = argparse.ArgumentParser(description="Write a seeded fire-model scenario for "
                                 "`firegrid sim`, with its ground truth in a comment.")
    ap.add_argument("site", help="the site file the gateway runs with")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kind", choices=KINDS, default=None, help="default: drawn from the mix")
    ap.add_argument("--heads", choices=HEADS, default="type",
                    help="detectors of one type per site (default) or each over the whole range")
    ap.add_argument("--smoke", choices=SMOKE, default="alarm",
                    help="conventional smoke heads (default) or analog addressable heads that "
                         "send their level every 5 s as well")
    args = ap.parse_args(argv)
    with open(args.site, encoding="utf-8") as fh:
        site = SiteMap.from_yaml(fh.read())
    print(scenario_yaml(generate(site, args.seed, args.kind, args.heads, args.smoke),
                        site.site), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
