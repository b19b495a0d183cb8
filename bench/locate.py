"""Benchmark: locating, clustering and verification against fire-model ground truth.

Run from the repository root (the project installed, e.g. editable)::

    python bench/locate.py [--seed 1] [--scenarios 500] [--site example|generated|both]

For each site (the example ``configs/taibai-demo.yaml`` and a larger estate from
``firmware_sim.fire.generated_site``) it generates ``--scenarios`` scenarios from the
seed (``firmware_sim.fire``: single fires, toast, steam, fires in two buildings, a second
fire later in the same building, fires on two floors) and plays each through a fresh
pure ``Engine`` in simulated time: every event is a ``signal`` at its receive time, and
the engine's deadlines are ticked in between, with nobody answering a confirm request.
It then scores what the engine recorded (its steps) against the scenario's truth and
prints one table per site, then the engine's own processing time per alarm.

Everything but the processing times is a pure function of ``--seed``: the same seed
prints the same accuracy table. This is a benchmark, not a test; it exits 0 whatever it
measured. See docs/locating.md for what each figure means and the targets.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from drivers.signal import Signal
from firmware_sim.fire import HEADS, SMOKE, FireScenario, SiteMap, generate, generated_site
from gateway.config import Site, load_site, parse_site
from gateway.engine import FIRE_KINDS, Engine
from gateway.geometry import zone_at
from gateway.model import NS, Refused, Step

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "taibai-demo.yaml"
T_BASE = 1_800_000_000 * NS  # 2027-01-15: any fixed instant; only differences matter
AFTER_S = 60.0  # ticked this long past the last event, so every deadline has passed


@dataclass
class Played:
    """One scenario through the engine: its steps, and the engine's cost per signal."""

    scenario: FireScenario
    steps: list[Step]
    alarm_ns: list[int] = field(default_factory=list)  # wall time of each alarm signal()
    first_ns: list[int] = field(default_factory=list)  # ... of those that opened an incident


def play(base: Engine, sc: FireScenario) -> Played:
    eng = base.fresh()
    out = Played(sc, [])
    last = T_BASE
    for ev in sc.events:
        now = T_BASE + round(ev.t * NS)
        while (nxt := eng.next_deadline_ns()) is not None and nxt <= now:
            out.steps += eng.tick(max(nxt, last)).steps
            last = max(nxt, last)
        sig = Signal(ev.device, ev.state, kind=ev.kind, value=ev.value,
                     bearing_deg=ev.bearing_deg)
        t = time.perf_counter_ns()
        try:
            d = eng.signal(sig, now, now)
        except Refused:
            continue
        cost = time.perf_counter_ns() - t
        last = now
        if ev.state == "alarm":
            out.alarm_ns.append(cost)
            if any(s.stage == "detected" and "counter" in s.fields for s in d.steps):
                out.first_ns.append(cost)
        out.steps += d.steps
    end = last + round(AFTER_S * NS)
    while (nxt := eng.next_deadline_ns()) is not None and nxt <= end:
        out.steps += eng.tick(max(nxt, last)).steps
        last = max(nxt, last)
    return out


@dataclass
class Tally:
    """Everything scored over one site's scenarios."""

    scenarios: int = 0
    kinds: Counter = field(default_factory=Counter)
    err_first: list[float] = field(default_factory=list)
    err_3: list[float] = field(default_factory=list)  # first fix with >= 3 detectors
    err_final: list[float] = field(default_factory=list)
    err_final_3: list[float] = field(default_factory=list)  # final, where >= 3 alarmed
    err_by_n: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cell_first: list[bool] = field(default_factory=list)
    cell_final: list[bool] = field(default_factory=list)
    # wrong cell, but the incident's ``cells`` (incident/<id>) lists the source's cell
    cell_listed: list[bool] = field(default_factory=list)
    # ... and a responder was told of it (a notice, or a page sent after it joined), how soon
    cell_told: list[bool] = field(default_factory=list)
    cell_told_s: list[float] = field(default_factory=list)
    # the same, for scenarios with one fire and nothing else (no second source to confuse)
    single_err_3: list[float] = field(default_factory=list)
    single_cell_final: list[bool] = field(default_factory=list)
    floor_final: list[bool] = field(default_factory=list)
    t_first: list[float] = field(default_factory=list)  # simulated s from T0 to first fix
    t_final: list[float] = field(default_factory=list)
    fires: int = 0
    incidents: int = 0
    false_merges: int = 0
    cross_building: int = 0
    false_splits: int = 0
    merge_kinds: Counter = field(default_factory=Counter)
    split_kinds: Counter = field(default_factory=Counter)
    nuisance: int = 0
    nuisance_auto: int = 0
    nuisance_rules: Counter = field(default_factory=Counter)
    # fires where automatic rules are allowed (not an ask_human cell)
    fire2: int = 0  # >= 2 automatic detectors in the incident before its confirm deadline
    fire2_auto: int = 0
    fire2_late: int = 0  # >= 2 in the end, the 2nd only after the deadline (escalated)
    fire2_late_auto: int = 0
    fire1: int = 0  # one detector before the deadline
    fire1_auto: int = 0
    kitchen: int = 0  # fires in ask_human cells
    kitchen_auto: int = 0
    fire_rules: Counter = field(default_factory=Counter)
    methods: Counter = field(default_factory=Counter)
    alarm_ns: list[int] = field(default_factory=list)
    first_ns: list[int] = field(default_factory=list)


def score(site: Site, p: Played, t: Tally) -> None:
    sc = p.scenario
    t.scenarios += 1
    t.kinds[sc.kind] += 1
    by_inc: dict[str, list[Step]] = defaultdict(list)
    for s in p.steps:
        by_inc[s.incident].append(s)
    inc_of_dev: dict[str, str] = {}
    for s in p.steps:
        if s.stage == "detected" and s.device:
            inc_of_dev.setdefault(s.device, s.incident)
    # first alarm of each device, and which source caused it
    src_of_dev: dict[str, str] = {}
    first_t: dict[str, float] = {}
    for e in sc.alarms():
        if e.device not in src_of_dev:
            src_of_dev[e.device] = e.source or ""
            first_t[e.device] = e.t
    incidents = [i for i in by_inc if not i.startswith("rule-")]
    t.incidents += len(incidents)
    for inc in incidents:
        devs = [s.device for s in by_inc[inc] if s.stage == "detected" and s.device]
        sources = {src_of_dev.get(d) for d in devs} - {None}
        if len(sources) > 1:
            t.false_merges += 1
            t.merge_kinds[sc.kind] += 1
        buildings = set()
        for d in devs:
            dev = site.device(d)
            if dev is not None:
                z = zone_at(site, dev.floor, dev.x, dev.y)
                buildings.add(z.building if z is not None else None)
        if len(buildings) > 1:
            t.cross_building += 1
    for src in sc.sources:
        devs = [d for d, s in src_of_dev.items() if s == src.id]
        if not devs:
            continue
        incs = {inc_of_dev[d] for d in devs if d in inc_of_dev}
        if len(incs) > 1:
            t.false_splits += 1
            t.split_kinds[sc.kind] += 1
        first_dev = min(devs, key=lambda d: first_t[d])
        primary = inc_of_dev.get(first_dev)
        if primary is None:
            continue
        steps = by_inc[primary]
        confirmed = [s for s in steps if s.stage in ("confirmed", "escalated")]
        auto = bool(confirmed) and confirmed[0].stage == "confirmed" \
            and confirmed[0].fields.get("by") == "auto"
        rule = confirmed[0].fields.get("rule") if auto else None
        if src.kind != "fire":
            t.nuisance += 1
            t.nuisance_auto += auto
            if rule:
                t.nuisance_rules[rule] += 1
            continue
        t.fires += 1
        if not site.zone(src.zone).allows("coincidence"):
            t.kitchen += 1
            t.kitchen_auto += auto
        else:
            deadline = steps[0].t0_ns + round(site.sla.confirm_s * NS)
            autos = [s.t_ns for s in steps if s.stage == "detected" and s.device
                     and site.device(s.device).kind in FIRE_KINDS]
            in_time = sum(1 for x in autos if x < deadline)
            if in_time >= 2:
                t.fire2 += 1
                t.fire2_auto += auto
            elif len(autos) >= 2:
                t.fire2_late += 1
                t.fire2_late_auto += auto
            else:
                t.fire1 += 1
                t.fire1_auto += auto
        if rule:
            t.fire_rules[rule] += 1
        _score_location(site, src, steps, t, single=sc.kind == "fire")
    t.alarm_ns += p.alarm_ns
    t.first_ns += p.first_ns


def _told_after(site: Site, zone: str, steps: list[Step]) -> float | None:
    """Seconds from the first alarm in ``zone`` to a responder hearing of that cell.

    Either a ``notified`` step naming it, or a page (``paged``, ``pre_alerted``) sent once
    the cell was in the incident: every page lists the incident's cells. None: never.
    """
    first = None
    for s in steps:
        dev = site.device(s.device) if s.stage == "detected" and s.device else None
        if first is None and dev is not None and dev.kind != "camera":
            z = zone_at(site, dev.floor, dev.x, dev.y)
            if z is not None and z.id == zone:
                first = s.t_ns
        if first is not None and (s.stage in ("paged", "pre_alerted") or (
                s.stage == "notified" and s.fields.get("cell") == zone)):
            return (s.t_ns - first) / 1e9
    return None


def _score_location(site: Site, src: Any, steps: list[Step], t: Tally, single: bool) -> None:
    located = [s for s in steps if s.stage == "located"]
    if not located:
        return
    kinds: dict[str, str] = {}
    n_at: list[int] = []  # automatic detectors in alarm when each located was made
    for s in steps:
        if s.stage == "detected" and s.device:
            dev = site.device(s.device)
            kinds[s.device] = dev.kind if dev else ""
        if s.stage == "located":
            n_at.append(sum(1 for k in kinds.values() if k in FIRE_KINDS))

    def err(s: Step) -> float:
        return math.hypot(s.fields["x"] - src.x, s.fields["y"] - src.y)

    first, final = located[0], located[-1]
    t.err_first.append(err(first))
    t.err_final.append(err(final))
    t.cell_first.append(first.zone == src.zone)
    t.cell_final.append(final.zone == src.zone)
    if final.zone != src.zone:  # what the duty room still sees: the cells in alarm
        cells = set()
        for s in steps:
            dev = site.device(s.device) if s.stage == "detected" and s.device else None
            if dev is not None and dev.kind != "camera":
                z = zone_at(site, dev.floor, dev.x, dev.y)
                cells.add(z.id if z is not None else None)
        t.cell_listed.append(src.zone in cells)
        told = _told_after(site, src.zone, steps)
        t.cell_told.append(told is not None)
        if told is not None:
            t.cell_told_s.append(told)
    if single:
        t.single_cell_final.append(final.zone == src.zone)
    t.floor_final.append(final.fields["floor"] == src.floor)
    t.t_first.append(first.elapsed_s)
    t.t_final.append(final.elapsed_s)
    t.methods[final.fields.get("method", "")] += 1
    three = [s for s, n in zip(located, n_at, strict=True) if n >= 3]
    if three:
        t.err_3.append(err(three[0]))
        if single:
            t.single_err_3.append(err(three[0]))
        t.err_final_3.append(err(final))
    for s, n in zip(located, n_at, strict=True):
        t.err_by_n["1" if n <= 1 else "2" if n == 2 else "3-4" if n <= 4 else "5+"].append(
            err(s))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else math.nan


def _rate(k: int, n: int) -> str:
    return f"{100 * k / n:5.1f} % ({k}/{n})" if n else "  n/a"


def report(name: str, t: Tally) -> list[tuple[str, str, str, str]]:
    """Rows of (figure, value, target, verdict)."""
    def m(xs: list[float]) -> str:
        return f"{_pct(xs, 50):5.2f} / {_pct(xs, 95):5.2f} m  (n={len(xs)})" if xs else "n/a"

    def ok(cond: bool | None) -> str:
        return "—" if cond is None else ("met" if cond else "MISSED")

    med3 = _pct(t.err_3, 50) if t.err_3 else None
    cell = sum(t.cell_final) / len(t.cell_final) if t.cell_final else None
    nuis = t.nuisance_auto / t.nuisance if t.nuisance else None
    fire2 = t.fire2_auto / t.fire2 if t.fire2 else None
    rows = [
        ("scenarios", f"{t.scenarios}  " + ", ".join(f"{k} {v}" for k, v in
                                                    sorted(t.kinds.items())), "", ""),
        ("fires / nuisance sources scored", f"{t.fires} / {t.nuisance}", "", ""),
        ("error p50 / p95, first fix", m(t.err_first), "", ""),
        ("error p50 / p95, once >= 3 detectors", m(t.err_3), "p50 <= 1.5 m",
         ok(None if med3 is None else med3 <= 1.5)),
        ("  ... single-fire scenarios only", m(t.single_err_3), "", ""),
        ("error p50 / p95, final (those >= 3)", m(t.err_final_3), "", ""),
        ("error p50 / p95, final (all fires)", m(t.err_final), "", ""),
        *((f"  error p50 / p95 with {k} detectors", m(v), "", "")
          for k, v in sorted(t.err_by_n.items())),
        ("correct cell, first fix", _rate(sum(t.cell_first), len(t.cell_first)), "", ""),
        ("correct cell, final", _rate(sum(t.cell_final), len(t.cell_final)), ">= 98 %",
         ok(None if cell is None else cell >= 0.98)),
        ("  ... single-fire scenarios only", _rate(sum(t.single_cell_final),
                                                   len(t.single_cell_final)), "", ""),
        ("  wrong cell, but in the incident's cells", _rate(sum(t.cell_listed),
                                                            len(t.cell_listed)), "", ""),
        ("  wrong cell, responders told of the source's cell",
         _rate(sum(t.cell_told), len(t.cell_told)), "", ""),
        ("  ... seconds from its first alarm to telling them",
         f"p50 {_pct(t.cell_told_s, 50):.1f}  max {max(t.cell_told_s, default=math.nan):.1f}",
         "", ""),
        ("correct floor, final", _rate(sum(t.floor_final), len(t.floor_final)), "", ""),
        ("final method", ", ".join(f"{k} {v}" for k, v in sorted(t.methods.items())), "", ""),
        ("T0 to first position (simulated s)",
         f"p50 {_pct(t.t_first, 50):.3f}  max {max(t.t_first, default=math.nan):.3f}", "", ""),
        ("T0 to final position (simulated s)",
         f"p50 {_pct(t.t_final, 50):.1f}  p95 {_pct(t.t_final, 95):.1f}", "", ""),
        ("incidents", str(t.incidents), "", ""),
        ("false merges (incidents of 2+ sources)",
         f"{t.false_merges}  " + ", ".join(f"{k} {v}" for k, v in
                                           sorted(t.merge_kinds.items())), "", ""),
        ("merged across buildings", str(t.cross_building), "0", ok(t.cross_building == 0)),
        ("false splits (sources in 2+ incidents)",
         f"{t.false_splits}  " + ", ".join(f"{k} {v}" for k, v in
                                           sorted(t.split_kinds.items())), "", ""),
        ("nuisance auto-confirmed", _rate(t.nuisance_auto, t.nuisance), "< 5 %",
         ok(None if nuis is None else nuis < 0.05)),
        ("  by rule", ", ".join(f"{k} {v}" for k, v in sorted(t.nuisance_rules.items()))
         or "-", "", ""),
        ("fires, 2+ detectors by the deadline, auto-confirmed", _rate(t.fire2_auto, t.fire2),
         "> 90 %", ok(None if fire2 is None else fire2 > 0.9)),
        ("fires, 2nd detector after the deadline, auto", _rate(t.fire2_late_auto,
                                                             t.fire2_late), "", ""),
        ("fires, 1 detector by the deadline, auto", _rate(t.fire1_auto, t.fire1), "", ""),
        ("fires in ask_human cells, auto (call point)", _rate(t.kitchen_auto, t.kitchen),
         "", ""),
        ("  by rule", ", ".join(f"{k} {v}" for k, v in sorted(t.fire_rules.items())) or "-",
         "", ""),
    ]
    return rows


def timing_rows(t: Tally, big: list[int] | None = None) -> list[tuple[str, str, str, str]]:
    a = [x / 1e6 for x in t.alarm_ns]
    f = [x / 1e6 for x in t.first_ns]
    s = [x / 1e6 for x in big or []]
    extra = [("engine ms per alarm, one incident of 200 detectors",
              f"{_pct(s, 50):.3f} / {_pct(s, 95):.3f} / {max(s):.3f}  (n={len(s)})", "", "")
             ] if s else []
    return [*extra,
        ("engine ms per alarm signal() p50 / p95 / max",
         f"{_pct(a, 50):.3f} / {_pct(a, 95):.3f} / {max(a, default=math.nan):.3f}  (n={len(a)})",
         "", ""),
        ("engine ms to first position (new incident)",
         f"{_pct(f, 50):.3f} / {_pct(f, 95):.3f} / {max(f, default=math.nan):.3f}  (n={len(f)})",
         "<= 100 ms", "met" if f and max(f) <= 100 else "MISSED"),
    ]


def stress(detectors_x: int = 20, detectors_y: int = 10) -> list[int]:
    """One incident in which every detector of a 120 x 60 m open floor alarms, nearest
    first: the engine's cost per alarm when an incident grows large (ns per signal)."""
    zones = "\n".join(
        f"  - {{id: z{i}, building: b, floor: 1, polygon: [[{i * 30},0],[{i * 30 + 30},0],"
        f"[{i * 30 + 30},60],[{i * 30},60]], worker: w}}" for i in range(4))
    devs = "\n".join(f"  - {{id: s{i}-{j}, kind: smoke, floor: 1, x: {3 + 6 * i}, "
                      f"y: {3 + 6 * j}}}" for i in range(detectors_x) for j in range(detectors_y))
    site = parse_site(f"site: stress\nzones:\n{zones}\ndevices:\n{devs}\n"
                      "responders:\n  - {id: w, tier: 0}\n", "stress.yaml")
    eng = Engine(site)
    origin = (60.0, 30.0)
    order = sorted(site.devices, key=lambda d: math.hypot(d.x - origin[0], d.y - origin[1]))
    out = []
    for d in order:
        now = T_BASE + round(40 * math.sqrt(max(0.5, math.hypot(d.x - origin[0],
                                                                d.y - origin[1]))) * NS)
        t = time.perf_counter_ns()
        eng.signal(Signal(d.id, "alarm"), now, now)
        out.append(time.perf_counter_ns() - t)
    return out


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "+" + "+".join("-" * (x + 2) for x in w) + "+"
    print(f"\n{title}")
    print(line)
    for r in rows:
        print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
    print(line)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}, numpy {np.__version__}")


def run_site(name: str, site: Site, simmap: SiteMap, n: int, seed: int,
             index: int, heads: str = "type", smoke: str = "alarm") -> Tally:
    base = Engine(site)
    tally = Tally()
    for i in range(n):
        sseed = int(np.random.SeedSequence([seed, index, i]).generate_state(1)[0])
        sc = generate(simmap, sseed, heads=heads, smoke=smoke)
        score(site, play(base, sc), tally)
    return tally


def _keyed(rows: list) -> dict[str, Any]:
    """Rows by their label; a "... " row is keyed under the row above it, so two rows
    labelled "... single-fire scenarios only" stay two entries."""
    out: dict[str, Any] = {}
    parent = ""
    for row in rows:
        label = row[0].strip()
        if label.startswith("..."):
            label = f"{parent} {label}"
        else:
            parent = label
        out[label] = row[1]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenarios", type=int, default=500, help="per site")
    ap.add_argument("--site", choices=("example", "generated", "both"), default="both")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--heads", choices=HEADS, default="type",
                    help="detectors of one type per site (default) or each over the whole range")
    ap.add_argument("--smoke", choices=SMOKE, default="alarm",
                    help="conventional smoke heads (alarm only, default) or analog addressable "
                         "heads that report their level every 5 s as well")
    args = ap.parse_args(argv)
    print(f"bench/locate.py --seed {args.seed} --scenarios {args.scenarios} "
          f"--site {args.site} --heads {args.heads} --smoke {args.smoke}")
    print(f"machine: {machine()}")
    sites: list[tuple[str, str]] = []
    if args.site in ("example", "both"):
        sites.append(("example (configs/taibai-demo.yaml)", EXAMPLE.read_text()))
    if args.site in ("generated", "both"):
        sites.append(("generated estate (4 buildings x 3 floors, 96 flats)", generated_site()))
    results: dict[str, Any] = {}
    everything = Tally()
    started = time.perf_counter()
    for index, (name, text) in enumerate(sites):
        site = load_site(EXAMPLE) if text == EXAMPLE.read_text() else parse_site(text, name)
        t0 = time.perf_counter()
        tally = run_site(name, site, SiteMap.from_yaml(text), args.scenarios, args.seed, index,
                         args.heads, args.smoke)
        print_table(f"{name}: {args.scenarios} scenarios, seed {args.seed} "
                    f"({time.perf_counter() - t0:.0f} s)", report(name, tally))
        results[name] = _keyed(report(name, tally))
        everything.alarm_ns += tally.alarm_ns
        everything.first_ns += tally.first_ns
    big = stress()
    print_table("processing time (this machine; varies run to run)",
                timing_rows(everything, big))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        results["timing"] = {r[0]: r[1] for r in timing_rows(everything, big)}
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
