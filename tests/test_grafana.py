"""deploy/grafana/firegrid.json against a real InfluxDB 1.6 holding two sites' records.

Every InfluxQL query of the dashboard (panel targets, template variables, annotations) is
interpolated the way Grafana's InfluxDB data source does it, then run through ``/query``
on a database filled with synthetic but realistic data for all four measurements
(``incident_step``, ``device_health``, ``gateway_health``, ``signal``). A query that
InfluxDB refuses, or a panel that would stay empty, fails the test.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from firmware_sim.lab import InfluxDB
from gateway.forwarder import step_line
from gateway.influx import format_point
from gateway.model import NS, Step

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "firegrid.json"
DB = "grafana_dash"
MIN = 60
HOUR = 3600
DAY = 86400

# --- synthetic audit trails (written exactly as the forwarder writes them) ---------------

W, G, S = "w-07", "guard-1", "squad-3"


def _good(worker: str, guard: str, devices: list[tuple[str, str]], building: str) -> list:
    """Two detectors, a worker confirms, the guard acks and is on scene in 41 s."""
    out: list = []
    for i, (dev, kind) in enumerate(devices):
        extra = {"kind": kind, "building": building} if i == 0 else {"kind": kind}
        out += [("detected", i * 2.0, {"device": dev, "fields": extra}),
                ("located", i * 2.0 + 0.01, {"fields": {"x": 23.0, "y": 6.0, "floor": 2.0,
                                                        "error_m": 1.5, "detectors": i + 1.0}})]
    return [
        *out,
        ("queued", 2.02, {"responder": worker, "tier": 0,
                          "fields": {"to": worker, "deadline": 30.0}}),
        ("confirmed", 6.5, {"responder": worker, "tier": 0, "fields": {"by": worker}}),
        ("paged", 6.6, {"responder": guard, "tier": 1,
                        "fields": {"channel": "mqtt", "text": "fire", "ack_timeout_s": 15.0,
                                   "repeat": 0.0}}),
        ("acked", 9.0, {"responder": guard, "tier": 1, "fields": {"status": "ack"}}),
        ("on_scene", 41.0, {"responder": guard, "tier": 1}),
        ("closed", 300.0, {"responder": worker, "tier": 0,
                           "fields": {"by": worker, "reason": "cooking smoke, no fire"}}),
    ]


def _page(at: float, who: str, tier: int, repeat: float = 0.0) -> tuple:
    return ("paged", at, {"responder": who, "tier": tier,
                          "fields": {"channel": "mqtt", "text": "fire", "ack_timeout_s": 15.0,
                                     "repeat": repeat}})


LATE = [  # nobody confirms, tier 1 does not answer, in-place target missed
    ("detected", 0.0, {"device": "smk-301", "fields": {"kind": "smoke", "building": "b3"}}),
    ("located", 0.01, {"fields": {"x": 3.0, "y": 4.5, "floor": 2.0, "error_m": 4.0,
                                  "detectors": 1.0}}),
    ("queued", 0.02, {"responder": W, "tier": 0, "fields": {"to": W, "deadline": 30.0}}),
    ("escalated", 30.0, {"fields": {"reason": "no decision in 30 s"}}),
    _page(30.0, G, 1),
    ("unanswered", 45.0, {"tier": 1, "fields": {"responders": G}}),
    _page(45.0, S, 2),
    ("acked", 50.0, {"responder": S, "tier": 2, "fields": {"status": "ack"}}),
    ("breach", 60.0, {"fields": {"sla": "in_place", "target_s": 60.0}}),
    ("on_scene", 95.0, {"responder": S, "tier": 2}),
    ("closed", 900.0, {"responder": S, "tier": 2, "fields": {"by": S, "reason": "extinguished"}}),
]
NUISANCE = [
    ("detected", 0.0, {"device": "smk-1101", "fields": {"kind": "smoke", "building": "b1"}}),
    ("located", 0.01, {"fields": {"x": 48.0, "y": 6.0, "floor": 1.0, "error_m": 4.0,
                                  "detectors": 1.0}}),
    ("queued", 0.02, {"responder": "w-03", "tier": 0, "fields": {"to": "w-03", "deadline": 30.0}}),
    ("dismissed", 12.0, {"responder": "w-03", "tier": 0, "fields": {"by": "w-03"}}),
]
LOCATE_LATE = [  # a backlog: located after 14 s; a volunteer declines, the squad comes
    ("detected", 0.0, {"device": "smk-102", "fields": {"kind": "smoke", "building": "b3",
                                                       "cell": "b3-1f-shops"}}),
    ("breach", 10.0, {"fields": {"sla": "locate", "target_s": 10.0}}),
    ("located", 14.0, {"fields": {"x": 18.0, "y": 6.0, "floor": 1.0, "error_m": 4.0,
                                  "detectors": 1.0}}),
    ("confirmed", 14.0, {"fields": {"by": "auto", "rule": "coincidence", "trigger": "smk-101"}}),
    _page(14.0, "guard-2", 1),
    ("declined", 16.0, {"responder": "guard-2", "tier": 1}),
    _page(16.0, S, 2),
    ("acked", 19.5, {"responder": S, "tier": 2, "fields": {"status": "on_scene"}}),
    ("on_scene", 19.5, {"responder": S, "tier": 2}),
    ("closed", 600.0, {"responder": S, "tier": 2, "fields": {"by": S, "reason": "drill"}}),
]
OPEN_MCP = [  # a call point: confirmed by rule, the guard acked, not on scene yet
    ("detected", 0.0, {"device": "mcp-302", "fields": {"kind": "manual", "building": "b3"}}),
    ("located", 0.01, {"fields": {"x": 18.0, "y": 1.0, "floor": 2.0, "error_m": 0.0,
                                  "detectors": 1.0}}),
    ("confirmed", 0.01, {"fields": {"by": "auto", "rule": "manual_call_point",
                                    "trigger": "mcp-302"}}),
    _page(0.02, G, 1),
    ("acked", 8.0, {"responder": G, "tier": 1, "fields": {"status": "ack"}}),
]
OPEN_UNANSWERED = [  # escalated, nobody answers the repeated top tier
    ("detected", 0.0, {"device": "smk-1202", "fields": {"kind": "smoke", "building": "b1"}}),
    ("located", 0.01, {"fields": {"x": 62.0, "y": 6.0, "floor": 2.0, "error_m": 4.0,
                                  "detectors": 1.0}}),
    ("escalated", 30.0, {"fields": {"reason": "no decision in 30 s"}}),
    _page(30.0, "station-1", 3),
    ("unanswered", 45.0, {"tier": 3, "fields": {"responders": "station-1"}}),
    _page(45.0, "station-1", 3, 1.0),
    ("breach", 60.0, {"fields": {"sla": "in_place", "target_s": 60.0}}),
]

CONFIRM_LATE = [  # the gateway was busy past the deadline: the worker's confirm came late
    ("detected", 0.0, {"device": "smk-1102", "fields": {"kind": "smoke", "building": "b1"}}),
    ("located", 0.01, {"fields": {"x": 62.0, "y": 6.0, "floor": 1.0, "error_m": 4.0,
                                  "detectors": 1.0}}),
    ("queued", 0.02, {"responder": "w-03", "tier": 0, "fields": {"to": "w-03", "deadline": 30.0}}),
    ("confirmed", 41.0, {"responder": "w-03", "tier": 0, "fields": {"by": "w-03"}}),
    ("breach", 41.0, {"fields": {"sla": "confirm", "target_s": 30.0}}),
    _page(41.0, G, 1),
    ("acked", 44.0, {"responder": G, "tier": 1, "fields": {"status": "ack"}}),
    ("on_scene", 58.0, {"responder": G, "tier": 1}),
    ("closed", 400.0, {"responder": G, "tier": 1, "fields": {"by": G, "reason": "toast"}}),
]

# site, incident, zone, T0 (seconds ago), stages
INCIDENTS: list[tuple[str, str, str, int, list]] = [
    ("taibai-demo", "inc-demo-0", "b1-1f-lobby", 6 * DAY - HOUR, CONFIRM_LATE),
    ("taibai-demo", "inc-demo-1", "b3-2f-kitchen", 3 * DAY,
     [*_good(W, G, [("smk-311", "smoke"), ("heat-312", "heat")], "b3"),
      ("forwarded", 6.55, {"device": "smk-311", "fields": {"attempts": 1.0,
                                                           "status": "fire"}})]),
    ("taibai-demo", "inc-demo-2", "b1-1f-lobby", 2 * DAY, NUISANCE),
    ("taibai-demo", "inc-demo-3", "b3-2f-east", DAY + 5 * HOUR, LATE),
    ("taibai-demo", "inc-demo-4", "b3-2f-east", 45, OPEN_MCP),
    ("taibai-drill", "inc-drill-1", "b3-1f-shops", 5 * DAY,
     _good("w-01", "guard-2", [("smk-101", "smoke")], "b3")),
    ("taibai-drill", "inc-drill-2", "b3-1f-shops", 4 * DAY, LOCATE_LATE),
    ("taibai-drill", "inc-drill-3", "b1-2f-flats", 2 * HOUR, OPEN_UNANSWERED),
]
SITES = ("taibai-demo", "taibai-drill")


def incident_lines(now_s: int) -> list[str]:
    lines = []
    for site, inc, zone, ago, stages in INCIDENTS:
        t0 = (now_s - ago) * NS
        for stage, at_s, extra in stages:
            kw = {k: v for k, v in extra.items() if k != "fields"}
            step = Step(incident=inc, stage=stage, t_ns=t0 + round(at_s * NS), t0_ns=t0,
                        zone=zone, fields=dict(extra.get("fields", {})), **kw)
            lines.append(step_line(site, step))
    return lines


# --- device_health and signal --------------------------------------------------------------

DEVICES = {  # site -> (device, kind)
    "taibai-demo": [("smk-311", "smoke"), ("heat-312", "heat"), ("smk-301", "smoke"),
                    ("smk-1101", "smoke"), ("smk-1102", "smoke"), ("mcp-302", "manual"),
                    ("tmp-1204", "temperature"), ("co-1103", "co")],
    "taibai-drill": [("smk-101", "smoke"), ("smk-102", "smoke"), ("smk-1202", "smoke"),
                     ("mcp-1203", "manual"), ("cam-01", "camera")],
}
# site, device, kind, seconds ago, device state, signal state or None, value
Change = tuple[str, str, str, int, str, str | None, float | None]


def _changes() -> list[Change]:
    """All devices normal 6 days ago; every detector alarms and clears; a few troubles."""
    out: list[Change] = [(site, dev, kind, 6 * DAY, "normal", "clear", None)
                         for site, devs in DEVICES.items() for dev, kind in devs]
    for site, _inc, _zone, ago, stages in INCIDENTS:
        for stage, at, extra in stages:
            if stage == "detected":
                dev, kind = extra["device"], extra["fields"]["kind"]
                out.append((site, dev, kind, ago - int(at), "alarm", "alarm", 4.2))
                if ago > HOUR:  # the open incidents' detectors are still in alarm
                    out.append((site, dev, kind, ago - 600, "normal", "clear", 0.3))
    return [*out,
            ("taibai-demo", "tmp-1204", "temperature", 4 * DAY, "fault", "fault", None),
            ("taibai-demo", "tmp-1204", "temperature", 4 * DAY - HOUR, "normal", "clear", 21.5),
            ("taibai-demo", "tmp-1204", "temperature", 3 * HOUR, "fault", "fault", None),
            ("taibai-demo", "co-1103", "co", 10 * HOUR, "trouble", None, None),
            ("taibai-demo", "smk-1101", "smoke", 6 * HOUR, "offline", None, None),
            ("taibai-drill", "cam-01", "camera", DAY, "fault", "fault", None),
            ("taibai-drill", "cam-01", "camera", DAY - 2 * HOUR, "normal", "clear", None),
            ("taibai-drill", "smk-102", "smoke", 12 * HOUR, "disabled", None, None)]


TESTS = [("taibai-demo", "smk-301", "smoke", 20 * HOUR, 2.5),  # monthly sensor tests
         ("taibai-drill", "smk-101", "smoke", 30 * HOUR, 2.7)]
TROUBLE = {"fault": "fault", "trouble": "battery low", "offline": "no heartbeat"}


def device_lines(now_s: int) -> list[str]:
    lines = []
    for site, dev, kind, ago, state, sig_state, value in _changes():
        t = (now_s - ago) * NS
        lines.append(format_point("device_health", {"site": site, "device": dev, "kind": kind},
                                  {"state": state, "trouble": TROUBLE.get(state, "")}, t))
        if sig_state is not None:
            fields: dict[str, Any] = {"n": 1.0}
            if value is not None:
                fields["value"] = value
            lines.append(format_point("signal", {"site": site, "device": dev, "kind": kind,
                                                 "state": sig_state}, fields, t - 1000))
    for site, dev, kind, ago, value in TESTS:
        lines.append(format_point("signal", {"site": site, "device": dev, "kind": kind,
                                             "state": "test"}, {"n": 1.0, "value": value},
                                  (now_s - ago) * NS))
    return lines


# --- gateway_health: one point a minute for 12 h up to now per gateway, an outage, a restart ---


def gateway_lines(now_s: int) -> list[str]:
    lines = []
    for s, site in enumerate(SITES):
        start = now_s - 12 * HOUR
        restart = now_s - 5 * HOUR if site == "taibai-drill" else None
        born = start - 7 * DAY
        inputs = steps = pages = dropped = reconnects = 0.0
        for m in range(12 * 60 + 1):
            t = start + m * MIN - s
            if restart is not None and t >= restart > t - MIN:
                born, inputs, steps, pages, dropped, reconnects = t, 0.0, 0.0, 0.0, 0.0, 0.0
            inputs += 20 + m % 7
            steps += 1 if m % 30 == 0 else 0
            pages += 1 if m % 90 == 0 else 0
            outage = site == "taibai-demo" and 300 <= m < 310  # InfluxDB away for 10 min
            lag = 40.0 * (m - 299) if outage else 0.0
            dropped += 2 if m == 305 else 0
            reconnects += 1 if m == 400 else 0
            open_now = sum(1 for st, _i, _z, ago, stages in INCIDENTS
                           if st == site and now_s - ago <= t < now_s - ago + _ends(stages))
            lines.append(format_point("gateway_health", {"site": site}, {
                "open_incidents": float(open_now), "influx_lag": lag,
                "journal_used_mb": round(3.5 + m * 0.002, 3), "queued": float(m % 3 == 0),
                "dropped": dropped, "inputs": inputs, "steps": steps, "pages": pages,
                "reconnects": reconnects, "uptime_s": float(t - born),
            }, t * NS))
    return lines


def _ends(stages: list) -> float:
    """Seconds from T0 to closed or dismissed; infinity while the incident is open."""
    return next((at for stage, at, _extra in stages if stage in ("closed", "dismissed")),
                float("inf"))


# --- InfluxDB over plain HTTP, as Grafana calls it -------------------------------------------


def _post(url: str, params: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    full = f"{url}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(full, data=body if body is not None else b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status), resp.read()


def influx_query(base: str, q: str) -> dict[str, Any]:
    """``/query`` the way Grafana's InfluxQL data source does (epoch ms); the parsed JSON."""
    try:
        _status, body = _post(f"{base}/query", {"db": DB, "q": q, "epoch": "ms"})
    except urllib.error.HTTPError as exc:  # 400 with an error body for a bad statement
        body = exc.read()
    return orjson.loads(body)


@pytest.fixture(scope="module")
def grafana_db(influxdb: InfluxDB) -> str:
    base = influxdb.base_url
    _post(f"{base}/query", {"q": f'DROP DATABASE "{DB}"'})
    _post(f"{base}/query", {"q": f'CREATE DATABASE "{DB}"'})
    now_s = int(time.time())  # at write time: the panels look back from now
    lines = incident_lines(now_s) + device_lines(now_s) + gateway_lines(now_s)
    status, _ = _post(f"{base}/write", {"db": DB, "precision": "ns"}, "\n".join(lines).encode())
    assert status == 204
    return base


# --- the dashboard, and Grafana's interpolation of its InfluxQL ------------------------------

ALL = "$__all"  # a variable set to "All"
TIME_FILTER = "time >= now() - 30d"  # what Grafana writes for "last 30 days"
INTERVAL = "1h"
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")  # what Grafana's escapeRegex escapes
_VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def load_dashboard() -> dict[str, Any]:
    return orjson.loads(DASHBOARD.read_bytes())


def data_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries, including those inside collapsed rows."""
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def variables(dash: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dash["templating"]["list"]}


def _panel_interval(panel: dict[str, Any]) -> str:
    """``$__interval``: 1h, raised to the panel's minimum interval when it has a larger one."""
    floor = panel.get("interval") or INTERVAL
    seconds = max(3600, int(floor[:-1]) * _SECONDS[floor[-1]])
    return f"{seconds // 3600}h" if seconds % 86400 else f"{seconds // 86400}d"


def interpolate(query: str, dash: dict[str, Any], values: dict[str, str],
                interval: str = INTERVAL, time_filter: str = TIME_FILTER) -> str:
    """Replace macros and template variables in an InfluxQL query the way Grafana does.

    A multi-value or include-All variable is regex-escaped (so it belongs in ``/^$v$/``);
    "All" becomes the variable's custom all value as is; a single-value variable is put in
    raw (so it belongs in ``'$v'``).
    """
    vars_ = variables(dash)
    secs = int(interval[:-1]) * _SECONDS[interval[-1]]
    macros = {"timeFilter": time_filter, "__timeFilter": time_filter, "__interval": interval,
              "interval": interval, "__interval_ms": str(secs * 1000)}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in macros:
            return macros[name]
        assert name in vars_, f"query uses ${name}, which the dashboard does not define"
        var, value = vars_[name], values[name]
        if value == ALL:
            assert var.get("allValue"), f"${name}: All needs a custom all value"
            return str(var["allValue"])
        if var.get("multi") or var.get("includeAll"):
            return _REGEX_SPECIAL.sub(lambda c: "\\" + c.group(0), value)
        return value

    return _VAR_RE.sub(repl, query)


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of every series of one statement, tags included."""
    out = []
    for series in result.get("series", []):
        for values in series["values"]:
            row = dict(series.get("tags") or {})
            row.update(zip(series["columns"], values, strict=True))
            out.append(row)
    return out


def statement(base: str, q: str) -> dict[str, Any]:
    doc = influx_query(base, q)
    assert "error" not in doc, f"{doc['error']}\n  in: {q}"
    (result,) = doc["results"]
    assert "error" not in result, f"{result['error']}\n  in: {q}"
    return result


# --- tests ------------------------------------------------------------------------------------


def test_dashboard_is_importable() -> None:
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 41 and dash["uid"] and dash["title"]
    ids = [p["id"] for p in dash["panels"]] + [p["id"] for r in dash["panels"]
                                               for p in r.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    vars_ = variables(dash)
    assert vars_["datasource"]["type"] == "datasource"
    assert vars_["datasource"]["query"] == "influxdb"
    assert vars_["site"]["query"] == 'SHOW TAG VALUES FROM "incident_step" WITH KEY = "site"'
    assert {"site", "zone"} <= set(vars_)
    panels = data_panels(dash)
    assert len(panels) >= 8
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"] == {"type": "influxdb", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t["rawQuery"] is True and t["query"].strip(), p["title"]
            assert t["resultFormat"] in ("time_series", "table"), p["title"]
            assert t["datasource"] == p["datasource"], p["title"]
            assert "$timeFilter" in t["query"] or "now()" in t["query"] or (
                '"device_health"' in t["query"]), f"{p['title']}: unbounded query"
    for q in all_queries(dash):
        for name, var in vars_.items():
            if var.get("multi") or var.get("includeAll"):  # regex-escaped: only in /^$v$/
                uses = re.findall(rf"(.{{0,2}})\$(?:{name}|\{{{name}\}})\b(.?.?)", q)
                assert all(u == ("/^", "$/") for u in uses), f"${name} outside /^$v$/ in {q}"
            elif var["type"] == "query":  # put in raw: only in '$v'
                uses = re.findall(rf"(.?)\$(?:{name}|\{{{name}\}})\b(.?)", q)
                assert all(u == ("'", "'") for u in uses), f"${name} outside '$v' in {q}"


def all_queries(dash: dict[str, Any]) -> list[str]:
    qs = [t["query"] for p in data_panels(dash) for t in p["targets"]]
    qs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    qs += [a["query"] for a in dash["annotations"]["list"] if "query" in a]
    return qs


def test_interpolation_follows_grafana() -> None:
    dash = load_dashboard()
    one = {"site": "taibai-demo", "zone": "b1-2f.x", "incident": "inc-1"}
    q = ("SELECT x FROM m WHERE \"site\" =~ /^$site$/ AND \"zone\" =~ /^${zone}$/ AND "
         "\"incident\" = '[[incident]]' AND $timeFilter GROUP BY time($__interval) "
         "-- $__interval_ms $interval")
    assert interpolate(q, dash, one) == (
        "SELECT x FROM m WHERE \"site\" =~ /^taibai-demo$/ AND \"zone\" =~ /^b1-2f\\.x$/ "
        "AND \"incident\" = 'inc-1' AND time >= now() - 30d GROUP BY time(1h) "
        "-- 3600000 1h")
    assert interpolate("/^$site$/ /^$zone$/", dash, {"site": ALL, "zone": ALL}) == "/^.*$/ /^.*$/"
    with pytest.raises(AssertionError, match="does not define"):
        interpolate("$nosuchvar", dash, one)


def test_template_variables(grafana_db: str) -> None:
    dash = load_dashboard()
    vars_ = variables(dash)

    def values(name: str, **chosen: str) -> list[str]:
        q = interpolate(vars_[name]["query"], dash, {"site": ALL, "zone": ALL, **chosen})
        return [r["value"] for r in rows(statement(grafana_db, q))]

    assert values("site") == list(SITES)
    demo_zones = sorted({z for s, _i, z, _a, _st in INCIDENTS if s == "taibai-demo"})
    assert values("zone", site="taibai-demo") == demo_zones
    assert values("incident", site="taibai-drill", zone="b3-1f-shops") == [
        "inc-drill-1", "inc-drill-2"]
    assert len(values("incident")) == len(INCIDENTS)


CASES = {
    "all-sites": {"site": ALL, "zone": ALL, "incident": "inc-drill-2"},
    "one-site": {"site": "taibai-demo", "zone": ALL, "incident": "inc-demo-3"},
    "one-zone": {"site": "taibai-demo", "zone": "b3-2f-east", "incident": "inc-demo-4"},
}


def run_dashboard(base: str, values: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every panel query, interpolated, through /query: ``(panel title, refId) -> result``."""
    dash = load_dashboard()
    out = {}
    for p in data_panels(dash):
        for t in p["targets"]:
            q = interpolate(t["query"], dash, values, _panel_interval(p))
            out[p["title"], t["refId"]] = statement(base, q)
    for a in dash["annotations"]["list"]:
        if "query" in a:
            out["annotation " + a["name"], "A"] = statement(
                base, interpolate(a["query"], dash, values))
    return out


@pytest.mark.parametrize("case", CASES)
def test_every_panel_shows_data(grafana_db: str, case: str) -> None:
    results = run_dashboard(grafana_db, CASES[case])
    by_panel: dict[str, list[dict[str, Any]]] = {}
    for (title, _ref), result in results.items():
        by_panel.setdefault(title, []).extend(rows(result))
    empty = sorted(title for title, r in by_panel.items() if not r)
    assert not empty, f"panels with no data for {case}: {empty}"
    if case == "all-sites":  # with everything selected, every single query has data
        none = sorted(k for k, r in results.items() if not r.get("series"))
        assert not none, f"queries with no series: {none}"


def test_figures(grafana_db: str) -> None:
    """The numbers the panels show match the synthetic data (all sites, all zones)."""
    r = {k: rows(v) for k, v in run_dashboard(grafana_db, CASES["all-sites"]).items()}
    breached = {inc for _s, inc, _z, _a, stages in INCIDENTS
                if any(st == "breach" for st, _t, _e in stages)}
    (stat,) = r["Compliance in range", "A"]
    assert (stat["incidents"], stat["with breach"]) == (len(INCIDENTS), len(breached))
    assert stat["compliant"] == pytest.approx(100 * (1 - len(breached) / len(INCIDENTS)))
    per_day = r["Incidents and breaches per day", "A"]
    assert sum(x["incidents"] for x in per_day) == len(INCIDENTS)
    assert sum(x["with breach"] for x in per_day) == len(breached)
    assert {x["incident"] for x in r["Breaches", "A"]} == breached
    by_target = {sla: row[sla] for (title, _ref), found in r.items()
                 if title == "Breaches by target" for row in found
                 for sla in ("locate", "confirm", "in_place") if sla in row}
    assert by_target == {"locate": 1, "confirm": 1, "in_place": 2}

    stages = {(x["incident"], x["stage"]): x["s"]
              for x in r["Seconds from T0 to each stage, per incident", "A"]}
    assert stages["inc-drill-2", "located"] == 14.0
    assert stages["inc-demo-3", "escalated"] == 30.0
    assert stages["inc-demo-1", "on_scene"] == 41.0
    assert stages["inc-demo-1", "forwarded"] == 6.55  # the "centre s" column
    timeline = {x["stage"]: x["elapsed_s"] for x in r["Stage timeline: $incident", "A"]}
    assert timeline == {"detected": 0.0, "breach": 10.0, "located": 14.0, "confirmed": 14.0,
                        "paged": 14.0, "declined": 16.0, "acked": 19.5, "on_scene": 19.5,
                        "closed": 600.0}
    # the detector's own cell beside the incident's zone (docs/audit.md)
    (det,) = [x for x in r["Steps of $incident", "A"] if x["stage"] == "detected"]
    assert (det["device"], det["cell"]) == ("smk-102", "b3-1f-shops")

    open_now = {x["incident"]: x["last_stage"] for x in r["Open incidents (latest step)", "A"]}
    assert open_now == {"inc-demo-4": "acked", "inc-drill-3": "breach"}
    gateway_open = {x["site"]: x["open"] for x in r["Open incidents (gateway count)", "A"]
                    if x["open"] is not None and x["time"] >= (time.time() - HOUR) * 1000}
    assert gateway_open == {"taibai-demo": 1.0, "taibai-drill": 1.0}

    p2a = {x["responder"]: (x["acks"], x["mean s"])
           for x in r["Page to acknowledgement per responder and tier", "A"]}
    assert p2a["squad-3"] == (2, pytest.approx(4.25))  # (50 - 45 + 19.5 - 16) / 2
    assert "station-1" not in p2a  # paged twice, never answered
    acks = {x["responder"]: x["acks"]
            for x in r["Acknowledgements per responder and tier (seconds from T0)", "A"]}
    assert acks == {"guard-1": 3, "guard-2": 1, "squad-3": 2}

    latest = {(x["site"], x["device"]): (x["state"], x["trouble"])
              for x in r["Latest device state", "A"]}
    assert latest["taibai-demo", "tmp-1204"] == ("fault", "fault")
    assert latest["taibai-demo", "mcp-302"] == ("alarm", "")
    assert latest["taibai-drill", "cam-01"] == ("normal", "")
    not_normal = sum(1 for state, _t in latest.values() if state != "normal")
    assert r["Devices not normal", "A"][0]["devices"] == not_normal == 5
    troubles = {x["device"]: x["troubles"] for x in r["Troubles per device", "A"]}
    assert troubles == {"tmp-1204": 2, "co-1103": 1, "smk-1101": 1, "cam-01": 1}
    reports = {x["site"]: x["reports"] for x in r["Gateway reports in the last 5 min", "A"]}
    assert set(reports) == set(SITES) and min(reports.values()) >= 4
    dropped = sum(x["dropped"] or 0 for x in r["Dropped inputs and reconnects", "A"])
    assert dropped == 4  # 2 per gateway; the drill gateway's restart is not a negative drop


def test_compliance_for_every_site_and_zone(grafana_db: str) -> None:
    dash = load_dashboard()
    (panel,) = [p for p in data_panels(dash) if p["title"] == "Compliance in range"]
    zones = sorted({z for _s, _i, z, _a, _st in INCIDENTS})
    for site in (*SITES, ALL):
        for zone in (*zones, ALL):
            mine = [any(st == "breach" for st, _t, _e in stages)
                    for s, _inc, z, _a, stages in INCIDENTS
                    if site in (s, ALL) and zone in (z, ALL)]
            q = interpolate(panel["targets"][0]["query"], dash,
                            {"site": site, "zone": zone, "incident": ""})
            found = rows(statement(grafana_db, q))
            got = [(x["incidents"], x["with breach"], x["compliant"]) for x in found]
            share = 100 * (1 - sum(mine) / len(mine)) if mine else None
            assert got == ([(len(mine), sum(mine), pytest.approx(share))] if mine else []), (
                site, zone)


def test_compliance_leaves_out_incidents_detected_before_the_range(grafana_db: str) -> None:
    """A range starting 30 s after inc-demo-3's detection holds its breach, not the incident."""
    dash = load_dashboard()
    (panel,) = [p for p in data_panels(dash) if p["title"] == "Compliance in range"]
    ago = next(a for _s, inc, _z, a, _st in INCIDENTS if inc == "inc-demo-3")
    q = interpolate(panel["targets"][0]["query"], dash, CASES["all-sites"],
                    time_filter=f"time >= now() - {ago - 30}s")
    (stat,) = rows(statement(grafana_db, q))
    assert (stat["incidents"], stat["with breach"]) == (2, 1)  # inc-demo-4, inc-drill-3
