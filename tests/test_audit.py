"""`firegrid audit` against a real InfluxDB holding several sites' audit trails.

The trails are written exactly as the forwarder writes them (``step_line``), with
known times, so every figure in the report can be checked by hand.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest

from firmware_sim.lab import InfluxDB
from gateway.audit import percentile, segments, span_s, time_bound
from gateway.false_alarms import Outcome, assess, most_in_a_year
from gateway.forwarder import step_line
from gateway.influx import InfluxClient, InfluxTarget, format_point
from gateway.model import NS, Step
from tests.harness import write_site

T0 = (int(time.time()) - 3600) * NS  # an hour ago: inside --since 24h, outside --until 2h


def trail(site: str, inc: str, zone: str, stages: list[tuple[str, float, dict]]) -> list[str]:
    lines = []
    for stage, at_s, extra in stages:
        fields = dict(extra.pop("fields", {}))
        step = Step(incident=inc, stage=stage, t_ns=T0 + round(at_s * NS), t0_ns=T0,
                    zone=zone, fields=fields, **extra)
        lines.append(step_line(site, step))
    return lines


GOOD = [("detected", 0, {"device": "smk-1"}), ("located", 0.01, {}),
        ("queued", 0.02, {"responder": "w-1", "tier": 0}),
        ("confirmed", 6.5, {"responder": "w-1", "tier": 0, "fields": {"by": "w-1"}}),
        ("paged", 6.6, {"responder": "g-1", "tier": 1}),
        ("forwarded", 6.55, {"device": "smk-1", "fields": {"attempts": 1, "status": "fire"}}),
        ("acked", 9.0, {"responder": "g-1", "tier": 1}),
        ("on_scene", 41.0, {"responder": "g-1", "tier": 1}),
        ("closed", 300.0, {"responder": "w-1", "tier": 0})]
LATE = [("detected", 0, {"device": "smk-9"}), ("located", 0.01, {}),
        ("escalated", 30.0, {}),
        ("paged", 30.0, {"responder": "g-1", "tier": 1}),
        ("unanswered", 45.0, {"tier": 1}),
        ("paged", 45.0, {"responder": "s-1", "tier": 2}),
        ("acked", 50.0, {"responder": "s-1", "tier": 2}),
        ("forwarded", 52.0, {"device": "smk-9"}),  # the centre was down: later than 10 s
        ("breach", 60.0, {"fields": {"sla": "in_place", "target_s": 60.0}}),
        ("on_scene", 95.0, {"responder": "s-1", "tier": 2})]
NUISANCE = [("detected", 0, {"device": "smk-5"}), ("located", 0.01, {}),
            ("queued", 0.02, {"responder": "w-2", "tier": 0}),
            ("dismissed", 12.0, {"responder": "w-2", "tier": 0, "fields": {"by": "w-2"}})]


@pytest.fixture(scope="module")
def audit_db(influxdb: InfluxDB) -> str:
    url = influxdb.url("audit_multi")
    lines = (trail("north", "inc-a", "n-1", [tuple(x) for x in _copy(GOOD)])
             + trail("north", "inc-b", "n-2", _copy(LATE))
             + trail("south", "inc-c", "s-1", _copy(NUISANCE))
             + trail("south", "inc-d", "s-1", _copy(GOOD)))

    return _written(url, lines)


def _written(url: str, lines: list[str]) -> str:
    """``lines`` written to the database at ``url`` (created); returns ``url``."""
    async def write() -> None:
        async with InfluxClient(InfluxTarget.parse(url)) as client:
            await client.ensure_database()
            await client.write_lines(lines)
    asyncio.run(write())
    return url


def _copy(stages: list) -> list:
    return [(s, t, {k: (dict(v) if isinstance(v, dict) else v) for k, v in e.items()})
            for s, t, e in stages]


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "audit", *args],
                          capture_output=True, text=True, timeout=60)


def test_report_figures_per_incident_and_site(audit_db: str) -> None:
    r = audit("--influx", audit_db, "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    rows = {i["incident"]: i for i in doc["incidents"]}
    assert set(rows) == {"inc-a", "inc-b", "inc-c", "inc-d"}
    a, b, c = rows["inc-a"], rows["inc-b"], rows["inc-c"]
    assert (a["site"], a["zone"]) == ("north", "n-1")
    assert a["locate_s"] == pytest.approx(0.01) and a["confirm_s"] == pytest.approx(6.5)
    assert a["in_place_s"] == pytest.approx(41.0) and a["compliant"] is True
    assert b["unverified"] is True and b["met"]["confirm"] is True
    assert b["met"]["in_place"] is False and b["breaches"] == ["in_place"]
    assert b["lost_in"] == "arrive"  # 45 s from ack to on scene
    assert b["segments"] == {"locate": 0.01, "decide": 29.99, "page": 0.0,
                             "acknowledge": 20.0, "arrive": 45.0}
    assert c["dismissed"] is True and c["confirm_s"] is None and c["compliant"] is True
    # when the monitoring centre had it (GB/T 26875.1: 10 s); never for a dismissal
    assert a["centre_s"] == pytest.approx(6.55) and b["centre_s"] == pytest.approx(52.0)
    assert c["centre_s"] is None
    north = doc["sites"]["north"]
    assert north["incidents"] == 2 and north["compliant"] == 1 and north["unverified"] == 1
    assert north["in_place"]["p50"] == pytest.approx(41.0)
    assert north["in_place"]["max"] == pytest.approx(95.0)
    assert [x["incident"] for x in doc["breaches"]] == ["inc-b"]


def test_filters_formats_and_fail_on_breach(audit_db: str) -> None:
    r = audit("--influx", audit_db, "--format", "json", "--site", "south")
    assert {i["incident"] for i in orjson.loads(r.stdout)["incidents"]} == {"inc-c", "inc-d"}
    r = audit("--influx", audit_db, "--format", "json", "--zone", "n-2")
    assert [i["incident"] for i in orjson.loads(r.stdout)["incidents"]] == ["inc-b"]
    r = audit("--influx", audit_db, "--format", "json", "--until", "2h")
    assert orjson.loads(r.stdout)["incidents"] == []
    r = audit("--influx", audit_db, "--format", "csv", "--site", "north")
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("site,incident,zone,t0,locate_s,confirm_s,in_place_s,centre_s")
    assert len(lines) == 3 and "in_place" in lines[2]
    assert lines[0].endswith(",lost_in,device,cause,false_alarm")
    assert lines[2].endswith(",arrive,smk-9,,False")
    assert audit("--influx", audit_db, "--fail-on-breach").returncode == 1
    ok = audit("--influx", audit_db, "--fail-on-breach", "--site", "south")
    assert ok.returncode == 0 and "inc-d" in ok.stdout
    table = audit("--influx", audit_db)
    assert table.returncode == 0 and "MISSED" in table.stdout and "arrive" in table.stdout
    assert "centre s" in table.stdout and "52.00" in table.stdout and "6.55" in table.stdout
    bad = audit("--influx", audit_db, "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_time_bounds_and_helpers() -> None:
    assert time_bound("24h", "--since") == "now() - 24h"
    assert time_bound("2026-11-01", "--since") == "'2026-11-01T00:00:00Z'"
    assert time_bound("2026-11-01T08:30", "--since") == "'2026-11-01T08:30:00Z'"
    with pytest.raises(ValueError, match="--until"):
        time_bound("1 day'; DROP", "--until")
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 95) == 5.0
    assert percentile([], 50) is None
    assert segments({"detected": 0, "located": 0.5, "confirmed": 3.0, "paged": 3.0,
                     "acked": 10.0}) == {"locate": 0.5, "decide": 2.5, "page": 0.0,
                                         "acknowledge": 7.0}


# false alarms at test-site (4 automatic detectors): three from smk-a1, one from a call
# point, a fire, and a close that says nothing about the cause
def _ended(stage: str, at_s: float, cause: str | None, who: str = "w-1") -> tuple:
    fields = {"by": who} | ({"cause": cause} if cause else {})
    return (stage, at_s, {"responder": who, "tier": 0, "fields": fields})


FALSE_ALARMS = {
    "inc-f1": ("smk-a1", [_ended("dismissed", 10, "unwanted")]),
    "inc-f2": ("smk-a1", [("detected", 5, {"device": "smk-a2"}), _ended("dismissed", 12, None)]),
    "inc-f3": ("smk-a1", [("escalated", 3, {}), _ended("closed", 200, "unwanted")]),
    "inc-f4": ("mcp-a", [("confirmed", 0.1, {"fields": {"by": "rule"}}),
                         _ended("closed", 90, "malicious")]),
    "inc-f5": ("smk-b1", [("confirmed", 2, {"fields": {"by": "w-1"}}),
                          _ended("closed", 900, "fire")]),
    "inc-f6": ("smk-k1", [("confirmed", 2, {"fields": {"by": "w-1"}}),
                          _ended("closed", 600, None)]),
}


@pytest.fixture(scope="module")
def false_alarm_db(influxdb: InfluxDB) -> str:
    url = influxdb.url("audit_false_alarms")
    lines = []
    for inc, (first, rest) in FALSE_ALARMS.items():
        lines += trail("test-site", inc, "a-1f", [("detected", 0, {"device": first}),
                                                  ("located", 0.01, {}), *_copy(rest)])
    # signals: a test of smk-a1, the call point's alarm; a clear proves nothing, and a
    # device the site file does not name is left out
    for i, (device, state) in enumerate((("smk-a1", "test"), ("mcp-a", "alarm"),
                                         ("smk-b1", "clear"), ("smk-zz", "test"))):
        lines.append(format_point("signal", {"site": "test-site", "device": device,
                                             "kind": "smoke", "state": state},
                                  {"n": 1.0}, T0 + i * NS))

    return _written(url, lines)


def test_false_alarms_by_cause_and_source_with_bs5839_flags(
        false_alarm_db: str, tmp_path) -> None:
    """A dismissal is a false alarm, and so is a close whose cause is not ``fire``; each is
    put on the device that opened the incident. One device behind three in twelve months,
    or three at a site of up to 40 detectors, is to be investigated (BS 5839-1)."""
    r = audit("--influx", false_alarm_db, "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    rows = {i["incident"]: i for i in doc["incidents"]}
    assert {k: (v["device"], v["cause"], v["false_alarm"]) for k, v in rows.items()} == {
        "inc-f1": ("smk-a1", "unwanted", True), "inc-f2": ("smk-a1", None, True),
        "inc-f3": ("smk-a1", "unwanted", True), "inc-f4": ("mcp-a", "malicious", True),
        "inc-f5": ("smk-b1", "fire", False), "inc-f6": ("smk-k1", None, False)}
    f = doc["false_alarms"]["test-site"]
    assert f["false_alarms"] == 4 and f["closed_without_cause"] == 1
    assert f["by_cause"] == {"malicious": 1, "not_given": 1, "unwanted": 2}
    assert f["sources"] == [{"device": "smk-a1", "false_alarms": 3, "investigate": True},
                            {"device": "mcp-a", "false_alarms": 1, "investigate": False}]
    assert f["detectors"] is None and f["per_100_detectors"] is None  # no site file given
    assert len(f["investigate"]) == 1 and f["investigate"][0].startswith("smk-a1: 3 ")
    # with the site file: its 4 automatic detectors (call points and a plain temperature
    # sensor do not count), so 100 per 100; over 30 days, per year as well
    site = write_site(tmp_path)
    r = audit("--influx", false_alarm_db, "--format", "json", "--config", str(site),
              "--since", "30d")
    f = orjson.loads(r.stdout)["false_alarms"]["test-site"]
    assert f["detectors"] == 4 and f["per_100_detectors"] == 100.0
    assert f["per_100_detectors_per_year"] == pytest.approx(100.0 * 365 / 30, abs=0.01)
    assert any("from 4 detectors" in x for x in f["investigate"]), f["investigate"]
    table = audit("--influx", false_alarm_db, "--config", str(site))
    assert table.returncode == 0, table.stderr
    assert "false alarms (BS 5839-1)" in table.stdout and "smk-a1 (3)" in table.stdout
    assert "investigate" in table.stdout and "100 (4 detectors)" in table.stdout


def test_detectors_and_call_points_that_never_operated(false_alarm_db: str, tmp_path) -> None:
    """With the site file: which detectors and call points sent no test and no alarm in
    the window, so a maintenance round can be checked against the trail."""
    site = write_site(tmp_path)
    r = audit("--influx", false_alarm_db, "--format", "json", "--config", str(site))
    tested = orjson.loads(r.stdout)["tested"]["test-site"]
    assert tested["devices"] == 6 and tested["operated"] == 2  # 4 detectors, 2 call points
    assert tested["not_operated"] == ["smk-a2", "smk-k1", "smk-b1", "mcp-b"]
    assert set(tested["last"]) == {"smk-a1", "mcp-a"}
    assert tested["last"]["mcp-a"] == pytest.approx(T0 / NS + 1, abs=0.01)
    table = audit("--influx", false_alarm_db, "--config", str(site), "--since", "2h")
    assert ("test-site: 2 of 6 detectors and call points operated (test or alarm) in the "
            "last 2h; not: smk-a2, smk-k1, smk-b1, mcp-b") in " ".join(table.stdout.split())
    # before the trail began: none did
    early = audit("--influx", false_alarm_db, "--format", "json", "--config", str(site),
                  "--until", "2h")
    assert orjson.loads(early.stdout)["tested"]["test-site"]["operated"] == 0
    # without the site file there is no list to check against
    assert orjson.loads(audit("--influx", false_alarm_db, "--format", "json").stdout)[
        "tested"] == {}


def test_false_alarm_rules() -> None:
    year = 365 * 86400.0
    assert most_in_a_year([]) == 0
    assert most_in_a_year([0, 10, year - 1, year, 2 * year]) == 3  # [0, year) holds three
    assert most_in_a_year([0, year, 2 * year]) == 1

    def out(t: float, device: str = "smk-1", cause: str | None = "unwanted") -> Outcome:
        return Outcome(t, device, dismissed=False, closed=True, cause=cause)
    # three from one device, but never three within twelve months: nothing to investigate
    spread = assess([out(0), out(0.6 * year), out(1.2 * year)], detectors=100,
                    window_s=2 * year)
    assert spread["false_alarms"] == 3 and spread["investigate"] == []
    assert spread["per_100_detectors_per_year"] == 1.5
    # over 40 detectors the site-wide rule is one per 20 detectors: 5 of 100
    many = [out(i * 1000.0, f"smk-{i}") for i in range(5)]
    assert assess(many[:4], detectors=100, window_s=year)["investigate"] == []
    assert assess(many, detectors=100, window_s=year)["investigate"] == [
        "5 false alarms in twelve months from 100 detectors (BS 5839-1: investigate from 5)"]
    # a week is too short to be scaled to a year; a fire is no false alarm
    short = assess([out(0), out(1, cause="fire")], detectors=10, window_s=7 * 86400.0)
    assert short["false_alarms"] == 1 and short["per_100_detectors_per_year"] is None
    assert span_s("7d", None, 0.0) == 7 * 86400 and span_s("3h", "1h", 0.0) == 7200
    assert span_s("2026-11-01", "2026-11-02", 0.0) == 86400
