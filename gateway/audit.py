"""``firegrid audit``: the 10·30·60 report, read back from InfluxDB with InfluxQL.

The figures come from the audit trail alone (CONTRACT §4), never from the gateway's
memory, so an auditor gets the same numbers from any machine that can reach the
database: locate = first ``located``, confirm = first ``confirmed`` or ``escalated``
(an escalation meets the target but is shown apart as unverified), in place = first
``on_scene``.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from gateway.false_alarms import Outcome, assess, automatic_detectors
from gateway.influx import InfluxClient, InfluxQueryError, InfluxTarget, InfluxUnreachable
from gateway.maintenance import coverage
from gateway.model import NS
from gateway.mqtt_link import Unreachable

_SINCE = re.compile(r"^\d+(s|m|h|d|w)$")
SLAS = ("locate", "confirm", "in_place")


@dataclass
class IncidentReport:
    site: str
    incident: str
    zone: str | None
    t0: float
    locate_s: float | None = None
    confirm_s: float | None = None
    in_place_s: float | None = None
    centre_s: float | None = None  # first report confirmed by the monitoring centre
    unverified: bool = False  # confirmed by escalation
    dismissed: bool = False
    closed: bool = False
    breaches: list[str] = field(default_factory=list)
    met: dict[str, bool | None] = field(default_factory=dict)
    segments: dict[str, float] = field(default_factory=dict)  # seconds per stage of the path
    device: str | None = None  # whose alarm opened it (first ``detected``)
    cause: str | None = None  # given with the dismissal or the close (alerting.causes)

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.t0, self.device, self.dismissed, self.closed, self.cause)

    @property
    def lost_in(self) -> str | None:
        """For an incident that missed a target: the segment that took longest."""
        if self.compliant or not self.segments:
            return None
        return max(self.segments.items(), key=lambda kv: kv[1])[0]

    @property
    def compliant(self) -> bool:
        return not self.breaches and all(v is not False for v in self.met.values())


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


_ABS = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?Z?)?$")


def time_bound(value: str, flag: str) -> str:
    """``24h`` → ``now() - 24h``; ``2026-11-01`` or ``2026-11-01T08:00:00Z`` → a literal."""
    if _SINCE.match(value):
        return f"now() - {value}"
    if _ABS.match(value):
        if "T" not in value:
            value += "T00:00:00Z"
        elif not value.endswith("Z"):
            value += "Z"
        if value.count(":") == 1:
            value = value[:-1] + ":00Z"
        return f"'{value}'"
    raise ValueError(f"{flag} must look like 30m, 24h, 7d or 2026-11-01[T08:00:00Z], "
                     f"not {value!r}")


_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def span_s(since: str, until: str | None, now: float) -> float:
    """Seconds between ``--since`` and ``--until`` (now when not given)."""
    def ago(value: str) -> float:
        if _SINCE.match(value):
            return int(value[:-1]) * _UNIT_S[value[-1]]
        return now - datetime.fromisoformat(time_bound(value, "--since").strip("'")).timestamp()
    return max(0.0, ago(since) - (ago(until) if until else 0.0))


def window(since: str, until: str | None, site: str | None) -> str:
    where = f"time >= {time_bound(since, '--since')}"
    if until:
        where += f" AND time <= {time_bound(until, '--until')}"
    if site:
        if not re.fullmatch(r"[a-z0-9-]+", site):
            raise ValueError(f"--site must match [a-z0-9-]+, not {site!r}")
        where += f" AND \"site\" = '{site}'"
    return where


async def fetch(client: InfluxClient, *, where: str) -> list[IncidentReport]:
    """First time of every stage per incident, as one grouped InfluxQL query."""
    series = await client.query(
        f'SELECT min("elapsed_s") AS "e" FROM "incident_step" WHERE {where} '
        'GROUP BY "site", "incident", "stage", "zone"'
    )
    first: dict[tuple[str, str], dict[str, tuple[float, int, str | None]]] = {}
    for s in series:
        tags = s["tags"]
        key = (tags.get("site", ""), tags.get("incident", ""))
        stage, zone = tags.get("stage", ""), tags.get("zone") or None
        for t_ns, e in s["values"]:
            if e is None:
                continue
            prev = first.setdefault(key, {}).get(stage)
            if prev is None or e < prev[0]:
                first[key][stage] = (float(e), int(t_ns), zone)
    reports = []
    for (site_name, incident), stages in first.items():
        if "detected" not in stages:
            continue  # began before the window
        e_det, t_det, zone = stages["detected"]
        located = stages.get("located")
        rep = IncidentReport(site=site_name, incident=incident,
                             zone=located[2] if located else zone,
                             t0=(t_det - round(e_det * NS)) / NS)
        rep.locate_s = located[0] if located else None
        decided = [stages[s] for s in ("confirmed", "escalated") if s in stages]
        if decided:
            best = min(decided)
            rep.confirm_s = best[0]
            rep.unverified = "escalated" in stages and (
                "confirmed" not in stages or stages["escalated"][0] < stages["confirmed"][0])
        rep.in_place_s = stages["on_scene"][0] if "on_scene" in stages else None
        rep.centre_s = stages["forwarded"][0] if "forwarded" in stages else None
        rep.dismissed = "dismissed" in stages
        rep.closed = "closed" in stages
        rep.segments = segments({k: v[0] for k, v in stages.items()})
        reports.append(rep)
    reports.sort(key=lambda r: (r.site, r.t0))
    return reports


# Where the seconds went: the path from T0 cut at the first time of each stage.
SEGMENTS = (
    ("locate", None, "located"),
    ("decide", "located", ("confirmed", "escalated", "dismissed")),
    ("page", ("confirmed", "escalated"), "paged"),
    ("acknowledge", "paged", "acked"),
    ("arrive", "acked", "on_scene"),
)


def segments(first: dict[str, float]) -> dict[str, float]:
    """Seconds spent in each segment that both ends of which happened."""
    def at(names: str | tuple[str, ...] | None) -> float | None:
        if names is None:
            return 0.0
        names = (names,) if isinstance(names, str) else names
        times = [first[n] for n in names if n in first]
        return min(times) if times else None

    out: dict[str, float] = {}
    for name, start, end in SEGMENTS:
        a, b = at(start), at(end)
        if a is not None and b is not None:
            out[name] = round(max(0.0, b - a), 3)
    return out


async def fetch_breaches(client: InfluxClient, reports: list[IncidentReport], *,
                         where: str) -> None:
    series = await client.query(
        f'SELECT "sla" FROM "incident_step" WHERE {where} '
        "AND \"stage\" = 'breach' GROUP BY \"site\", \"incident\"")
    by_key = {(r.site, r.incident): r for r in reports}
    for s in series:
        rep = by_key.get((s["tags"].get("site", ""), s["tags"].get("incident", "")))
        if rep is not None:
            rep.breaches = sorted({v[1] for v in s["values"] if v[1]})


async def fetch_outcomes(client: InfluxClient, reports: list[IncidentReport], *,
                         where: str) -> None:
    """Each incident's first device and the cause given when it was dismissed or closed."""
    by_key = {(r.site, r.incident): r for r in reports}
    first: dict[tuple[str, str], float] = {}
    for s in await client.query(
            f'SELECT min("elapsed_s") FROM "incident_step" WHERE {where} '
            "AND \"stage\" = 'detected' GROUP BY \"site\", \"incident\", \"device\""):
        key = (s["tags"].get("site", ""), s["tags"].get("incident", ""))
        rep = by_key.get(key)
        for _, e in s["values"]:
            if rep is not None and e is not None and e < first.get(key, math.inf):
                first[key] = e
                rep.device = s["tags"].get("device") or None
    for s in await client.query(
            f'SELECT "cause" FROM "incident_step" WHERE {where} '
            "AND (\"stage\" = 'dismissed' OR \"stage\" = 'closed') "
            'GROUP BY "site", "incident"'):
        rep = by_key.get((s["tags"].get("site", ""), s["tags"].get("incident", "")))
        causes = [v[1] for v in s["values"] if isinstance(v[1], str) and v[1]]
        if rep is not None and causes:
            rep.cause = causes[-1]


async def fetch_operated(client: InfluxClient, *, where: str) -> dict[str, dict[str, float]]:
    """Per site, each device's last ``test`` or ``alarm`` signal (unix seconds)."""
    out: dict[str, dict[str, float]] = {}
    for s in await client.query(
            f'SELECT last("n") FROM "signal" WHERE {where} '
            "AND (\"state\" = 'test' OR \"state\" = 'alarm') GROUP BY \"site\", \"device\""):
        for t_ns, _ in s["values"]:
            out.setdefault(s["tags"].get("site", ""), {})[s["tags"].get("device", "")] = \
                int(t_ns) / NS
    return out


def judge(rep: IncidentReport, targets: tuple[float, float, float], now: float) -> None:
    """Met (True), missed (False) or not applicable / still running (None) for each target.

    A recorded ``breach`` step always counts as missed, whatever the targets given here.
    """
    loc_t, conf_t, place_t = targets
    age = now - rep.t0

    def verdict(value: float | None, target: float, sla: str) -> bool | None:
        if sla in rep.breaches:
            return False
        if value is not None:
            return value <= target
        return None if age < target else False

    rep.met["locate"] = verdict(rep.locate_s, loc_t, "locate")
    if rep.dismissed:  # not a fire: nothing to confirm, nobody to send
        rep.met["confirm"] = rep.met["in_place"] = None
        return
    # an escalation meets the target (CONTRACT §4); it is reported apart as unverified
    rep.met["confirm"] = True if rep.unverified and rep.confirm_s is not None else verdict(
        rep.confirm_s, conf_t, "confirm")
    if rep.in_place_s is None and rep.closed and "in_place" not in rep.breaches:
        rep.met["in_place"] = None  # closed by a person before anyone had to arrive
    else:
        rep.met["in_place"] = verdict(rep.in_place_s, place_t, "in_place")


def summarise(reports: list[IncidentReport]) -> dict[str, Any]:
    sites: dict[str, Any] = {}
    for name in sorted({r.site for r in reports}):
        mine = [r for r in reports if r.site == name]
        entry: dict[str, Any] = {
            "incidents": len(mine),
            "dismissed": sum(r.dismissed for r in mine),
            "unverified": sum(r.unverified for r in mine),
            "compliant": sum(r.compliant for r in mine),
        }
        for sla in SLAS:
            vals = [getattr(r, f"{sla}_s") for r in mine if getattr(r, f"{sla}_s") is not None]
            entry[sla] = {"n": len(vals), "p50": percentile(vals, 50),
                          "p95": percentile(vals, 95), "max": max(vals) if vals else None,
                          "missed": sum(r.met.get(sla) is False for r in mine)}
        sites[name] = entry
    return sites


async def run_audit(influx_url: str, *, site: str | None, since: str, fmt: str,
                    targets: tuple[float, float, float], out: Any = None,
                    until: str | None = None, zone: str | None = None,
                    fail_on_breach: bool = False,
                    devices: dict[str, Sequence[Any]] | None = None) -> int:
    """Print the report; returns 1 with ``fail_on_breach`` when any incident missed.

    ``devices``, site to the devices of its site file (``--config``), adds the false
    alarm rate per 100 detectors, BS 5839-1's site-wide rule (false_alarms.py) and the
    detectors and call points that did not operate in the window (maintenance.py).
    """
    devices = devices or {}
    out = out or sys.stdout
    target = InfluxTarget.parse(influx_url)
    where = window(since, until, site)
    async with InfluxClient(target) as client:
        try:
            reports = await fetch(client, where=where)
            await fetch_breaches(client, reports, where=where)
            await fetch_outcomes(client, reports, where=where)
            operated = await fetch_operated(client, where=where) if devices else {}
        except InfluxUnreachable as exc:
            raise Unreachable(str(exc)) from None
        except InfluxQueryError as exc:
            if "database not found" in str(exc):
                reports, operated = [], {}
            else:
                raise Unreachable(f"InfluxDB query failed: {exc}") from None
    if zone:
        reports = [r for r in reports if r.zone == zone]
    now = time.time()
    for rep in reports:
        judge(rep, targets, now)
    doc = {
        "since": since, "until": until, "site": site, "zone": zone,
        "targets": dict(zip(("locate_s", "confirm_s", "in_place_s"), targets, strict=True)),
        "incidents": [asdict(r) | {"compliant": r.compliant, "lost_in": r.lost_in,
                                   "false_alarm": r.outcome.false_alarm}
                      for r in reports],
        "breaches": [{"site": r.site, "incident": r.incident, "zone": r.zone,
                      "missed": [k for k, v in r.met.items() if v is False],
                      "lost_in": r.lost_in, "segments": r.segments}
                     for r in reports if not r.compliant],
        "sites": summarise(reports),
        "false_alarms": {
            name: assess([r.outcome for r in reports if r.site == name],
                         detectors=automatic_detectors(devices[name])
                         if name in devices else None,
                         window_s=span_s(since, until, now))
            for name in sorted({r.site for r in reports})},
        "tested": {name: coverage(devs, operated.get(name, {}))
                   for name, devs in sorted(devices.items())},
    }
    if fmt == "json":
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "csv":
        write_csv(doc, out)
    else:
        render_table(doc, out)
    return 1 if fail_on_breach and doc["breaches"] else 0


CSV_COLUMNS = ("site", "incident", "zone", "t0", "locate_s", "confirm_s", "in_place_s",
               "centre_s", "unverified", "dismissed", "closed", "compliant", "breaches",
               "lost_in", "device", "cause", "false_alarm")
CENTRE_LIMIT_S = 10.0  # GB/T 26875.1: a fire alarm at the monitoring centre within 10 s


def write_csv(doc: dict[str, Any], out: Any) -> None:
    import csv

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in doc["incidents"]:
        writer.writerow(["" if r[c] is None else (";".join(r[c]) if isinstance(r[c], list)
                                                 else r[c]) for c in CSV_COLUMNS])


def _sec(v: float | None, met: bool | None) -> str:
    if v is None:
        return "—" if met is None else "[red]never[/red]"
    text = f"{v:.2f}"
    return text if met is not False else f"[red]{text}[/red]"


def render_table(doc: dict[str, Any], out: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, width=120)
    t = doc["targets"]
    table = Table(title=f"10·30·60 report, last {doc['since']} "
                  f"(targets {t['locate_s']:g} / {t['confirm_s']:g} / {t['in_place_s']:g} s)")
    centre = any(r["centre_s"] is not None for r in doc["incidents"])
    cols = ["site", "incident", "zone", "locate s", "confirm s", "in place s"]
    cols += ["centre s"] if centre else []  # only where a monitoring centre is reported to
    for col in [*cols, "notes"]:
        table.add_column(col, justify="right" if col.endswith(" s") else "left")
    for r in doc["incidents"]:
        notes = []
        if r["dismissed"]:
            notes.append("dismissed")
        if r["unverified"]:
            notes.append("escalated (unverified)")
        if r["breaches"]:
            notes.append("breach: " + ",".join(r["breaches"]))
        notes.append("ok" if r["compliant"] else "[red]MISSED[/red]"
                     + (f" (most time: {r['lost_in']})" if r["lost_in"] else ""))
        met = r["met"]
        row = [r["site"], r["incident"], r["zone"] or "?",
               _sec(r["locate_s"], met.get("locate")),
               _sec(r["confirm_s"], met.get("confirm")),
               _sec(r["in_place_s"], met.get("in_place"))]
        if centre:  # a confirmed fire later than GB/T 26875.1's 10 s shows red; none: —
            c = r["centre_s"]
            row.append(_sec(c, None if c is None else c <= CENTRE_LIMIT_S))
        table.add_row(*row, "; ".join(notes))
    console.print(table)
    summary = Table(title="per site")
    for col in ("site", "incidents", "compliant", "dismissed", "unverified",
                "locate p50/p95", "confirm p50/p95", "in place p50/p95"):
        summary.add_column(col)
    for name, s in doc["sites"].items():
        def pp(sla: str, s: dict[str, Any] = s) -> str:
            a, b = s[sla]["p50"], s[sla]["p95"]
            return "—" if a is None else f"{a:.2f} / {b:.2f}"
        summary.add_row(name, str(s["incidents"]), str(s["compliant"]), str(s["dismissed"]),
                        str(s["unverified"]), pp("locate"), pp("confirm"), pp("in_place"))
    console.print(summary)
    render_false_alarms(doc, console)
    render_tested(doc, console)
    if not doc["incidents"]:
        console.print("no incidents in this window")


def render_false_alarms(doc: dict[str, Any], console: Any) -> None:
    """Per site: false alarms, their causes, their sources, and what to investigate."""
    from rich.table import Table

    rows = {k: v for k, v in doc["false_alarms"].items() if v["false_alarms"]
            or v["closed_without_cause"]}
    if not rows:
        return
    table = Table(title="false alarms (BS 5839-1)")
    for col in ("site", "false alarms", "by cause", "closed, no cause", "per 100 detectors",
                "per 100 / year", "most from"):
        table.add_column(col)
    for name, f in rows.items():
        top = f["sources"][0] if f["sources"] else None
        table.add_row(
            name, str(f["false_alarms"]),
            ", ".join(f"{k} {v}" for k, v in f["by_cause"].items()) or "—",
            str(f["closed_without_cause"]),
            "—" if f["per_100_detectors"] is None
            else f"{f['per_100_detectors']:g} ({f['detectors']} detectors)",
            "—" if f["per_100_detectors_per_year"] is None
            else f"{f['per_100_detectors_per_year']:g}",
            f"{top['device']} ({top['false_alarms']})" if top else "—")
    console.print(table)
    for name, f in rows.items():
        for reason in f["investigate"]:
            console.print(f"[red]investigate[/red] {name}: {reason}")


def render_tested(doc: dict[str, Any], console: Any) -> None:
    """Per site (with ``--config``): detectors and call points that never operated."""
    for name, t in doc["tested"].items():
        missing = t["not_operated"]
        since = doc["since"]
        span = f"in the last {since}" if _SINCE.match(since) else f"since {since}"
        if doc.get("until"):
            span += f" up to {doc['until']}" + (" ago" if _SINCE.match(doc["until"]) else "")
        line = (f"{name}: {t['operated']} of {t['devices']} detectors and call points "
                f"operated (test or alarm) {span}")
        if missing:
            shown = ", ".join(missing[:12]) + (f" and {len(missing) - 12} more"
                                               if len(missing) > 12 else "")
            line += f"; not: {shown}"
        console.print(line)
