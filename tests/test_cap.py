"""CAP 1.2 output (alerting/cap.py): what an outside alerting system would check.

Each incident dict below has the shape of ``gateway.engine.Incident.public()``; the site is
the example one (configs/taibai-demo.yaml) placed at 35.4 N, 116.6 E. Nothing here touches
the network or the clock.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting.cap import (
    CAP_NS,
    CERTAINTY,
    MAX_CAP_BYTES,
    RESPONSE_TYPE,
    CapError,
    SiteFrame,
    cap_alert,
    cap_datetime,
    cap_identifier,
    next_references,
    validate_cap,
)

NS = {"c": CAP_NS}
SENDER = "firegrid@taibai-demo"
FRAME = SiteFrame(35.4, 116.6)
CST = timezone(timedelta(hours=8))  # China Standard Time, the demo site's zone
T0 = datetime(2026, 11, 26, 20, 29, 48, tzinfo=UTC)
SENT = datetime(2026, 11, 26, 20, 30, 0, 250_000, tzinfo=UTC)
CAP_DT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d")


def incident(**changes: object) -> dict:
    base = {
        "id": "inc-261126-202948-1", "site": "taibai-demo", "state": "confirmed",
        "zone": "b3-2f-east", "building": "b3", "floor": 2, "x": 12.3, "y": 4.5,
        "error_m": 2.1, "method": "tdoa", "t0": T0.timestamp(), "unverified": False,
        "confirmed_by": "w-07", "devices": ["smk-301", "smk-302"], "tier": 1,
        "paged": ["guard-1"], "acked": [], "on_scene": [], "breaches": [],
    }
    base.update(changes)
    return base


def alert(inc: dict | None = None, **kw: object) -> bytes:
    args: dict = {"sender": SENDER, "frame": FRAME, "msg_type": "Alert", "sent": SENT,
                  "zone_name": "Bldg 3 2F east flats"}
    args.update(kw)
    return cap_alert(incident() if inc is None else inc, **args)


def root_of(xml: bytes) -> ET.Element:
    return ET.fromstring(xml)


def text(root: ET.Element, path: str) -> str:
    el = root.find(path, NS)
    assert el is not None, path
    return el.text or ""


def texts(root: ET.Element, path: str) -> list[str]:
    return [el.text or "" for el in root.findall(path, NS)]


def params(root: ET.Element) -> dict[str, str]:
    return {text(p, "c:valueName"): text(p, "c:value")
            for p in root.findall("c:info/c:parameter", NS)}


def circle(root: ET.Element) -> tuple[float, float, float]:
    point, radius = text(root, "c:info/c:area/c:circle").split(" ")
    lat, lon = point.split(",")
    return float(lat), float(lon), float(radius)


def chain(*states: tuple[str, dict]) -> list[bytes]:
    """Messages about one incident in order, each referencing all before it."""
    out: list[bytes] = []
    for i, (msg_type, inc) in enumerate(states):
        refs = next_references(out[-1]) if out else []
        out.append(alert(inc, msg_type=msg_type, references=refs,
                         sent=SENT + timedelta(seconds=30 * i)))
    return out


# ------------------------------------------------------------- the three messages


def test_alert_has_every_required_element_with_firegrid_values() -> None:
    xml = alert()
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert validate_cap(xml) == []
    r = root_of(xml)
    assert r.tag == f"{{{CAP_NS}}}alert"
    assert text(r, "c:identifier") == "taibai-demo.inc-261126-202948-1.1"
    assert text(r, "c:sender") == SENDER
    assert text(r, "c:sent") == "2026-11-26T20:30:00-00:00"  # UTC as -00:00, no fraction
    assert (text(r, "c:status"), text(r, "c:msgType"), text(r, "c:scope")) == (
        "Actual", "Alert", "Public")
    assert r.find("c:references", NS) is None and r.find("c:restriction", NS) is None
    assert text(r, "c:incidents") == "inc-261126-202948-1"
    assert len(r.findall("c:info", NS)) == 1
    assert text(r, "c:info/c:language") == "en-US"
    assert texts(r, "c:info/c:category") == ["Fire"]
    assert text(r, "c:info/c:event") == "Confirmed fire"
    assert texts(r, "c:info/c:responseType") == ["Evacuate"]
    assert text(r, "c:info/c:urgency") == "Immediate"
    assert text(r, "c:info/c:severity") == "Severe"
    assert text(r, "c:info/c:certainty") == "Observed"  # a grid worker saw it
    assert text(r, "c:info/c:onset") == "2026-11-26T20:29:48-00:00"  # T0
    assert text(r, "c:info/c:headline").startswith("Confirmed fire: Bldg 3 2F east flats")
    description = text(r, "c:info/c:description")
    for part in ("zone b3-2f-east", "building b3", "floor 2", "x 12.3 m", "y 4.5 m",
                 "2.1 m", "12 s before", "w-07"):
        assert part in description, part
    assert "stairs" in text(r, "c:info/c:instruction")
    assert params(r) == {
        "firegrid.incident": "inc-261126-202948-1", "firegrid.state": "confirmed",
        "firegrid.zone": "b3-2f-east", "firegrid.building": "b3", "firegrid.floor": "2",
        "firegrid.x": "12.3", "firegrid.y": "4.5", "firegrid.error_m": "2.1",
        "firegrid.confirmed_by": "w-07",
    }
    assert text(r, "c:info/c:area/c:areaDesc") == (
        "Bldg 3 2F east flats (zone b3-2f-east), building b3, floor 2")
    lat, lon, radius_km = circle(r)
    assert 35.4 < lat < 35.4001 and 116.6 < lon < 116.6002
    assert radius_km == 0.005  # error 2.1 m is below the 5 m floor


def test_update_and_cancel_reference_every_earlier_message() -> None:
    first, update, cancel = chain(
        ("Alert", incident(state="confirming", confirmed_by=None)),
        ("Update", incident()),
        ("Cancel", incident(state="closed")),
    )
    ids = []
    for xml in (first, update, cancel):
        assert validate_cap(xml) == []
        ids.append(text(root_of(xml), "c:identifier"))
    assert ids == [f"taibai-demo.inc-261126-202948-1.{n}" for n in (1, 2, 3)]

    u = root_of(update)
    assert text(u, "c:msgType") == "Update"
    assert text(u, "c:references") == (
        f"{SENDER},taibai-demo.inc-261126-202948-1.1,2026-11-26T20:30:00-00:00")

    c = root_of(cancel)
    assert text(c, "c:msgType") == "Cancel"
    refs = text(c, "c:references").split(" ")
    assert refs == [
        f"{SENDER},taibai-demo.inc-261126-202948-1.1,2026-11-26T20:30:00-00:00",
        f"{SENDER},taibai-demo.inc-261126-202948-1.2,2026-11-26T20:30:30-00:00",
    ]
    assert texts(c, "c:info/c:responseType") == ["AllClear"]
    assert (text(c, "c:info/c:urgency"), text(c, "c:info/c:severity")) == ("Past", "Minor")
    assert text(c, "c:info/c:certainty") == "Observed"
    assert text(c, "c:info/c:headline").startswith("All clear: ")
    assert text(c, "c:note") == "Incident inc-261126-202948-1 closed."
    assert "being asked" not in text(c, "c:info/c:description")
    assert "closed on site" in text(c, "c:info/c:description")


def test_cancel_after_dismissal_says_false_alarm_and_unlikely() -> None:
    _, cancel = chain(("Alert", incident(state="confirming", confirmed_by=None)),
                      ("Cancel", incident(state="dismissed", confirmed_by=None)))
    assert validate_cap(cancel) == []
    c = root_of(cancel)
    assert text(c, "c:info/c:certainty") == "Unlikely"
    assert text(c, "c:info/c:event") == "Fire alarm"
    assert text(c, "c:info/c:headline").startswith("False alarm: ")
    assert "dismissed" in text(c, "c:note")
    assert "being asked" not in text(c, "c:info/c:description")


def test_cancel_of_an_incident_still_open_is_a_withdrawal() -> None:
    _, cancel = chain(("Alert", incident()), ("Cancel", incident()))
    assert validate_cap(cancel) == []
    assert text(root_of(cancel), "c:info/c:headline").startswith("Withdrawn: ")


def test_next_references_round_trips_times_in_any_offset() -> None:
    first = alert(sent=datetime(2026, 11, 27, 4, 30, 0, 999_999, tzinfo=CST))
    (ref,) = next_references(first)
    assert ref[:2] == (SENDER, "taibai-demo.inc-261126-202948-1.1")
    assert cap_datetime(ref[2]) == "2026-11-27T04:30:00+08:00"
    second = alert(msg_type="Update", references=[ref], sent=SENT + timedelta(minutes=1))
    assert text(root_of(second), "c:references").endswith(",2026-11-27T04:30:00+08:00")
    assert [r[1] for r in next_references(second)] == [
        "taibai-demo.inc-261126-202948-1.1", "taibai-demo.inc-261126-202948-1.2"]


def test_identifiers_differ_per_message_and_per_incident() -> None:
    a1, a2, a3 = chain(("Alert", incident()), ("Update", incident()), ("Update", incident()))
    other = alert(incident(id="inc-261126-202948-2"))
    ids = {text(root_of(x), "c:identifier") for x in (a1, a2, a3, other)}
    assert len(ids) == 4
    assert text(root_of(alert(seq=7)), "c:identifier").endswith(".7")
    with pytest.raises(CapError):
        cap_identifier("s", "i", 0)


@pytest.mark.parametrize("msg_type", ["Update", "Cancel"])
def test_update_and_cancel_need_references(msg_type: str) -> None:
    with pytest.raises(CapError, match="reference"):
        alert(msg_type=msg_type)


@pytest.mark.parametrize("msg_type", ["Ack", "Error", "alert", ""])
def test_only_alert_update_cancel_are_sent(msg_type: str) -> None:
    with pytest.raises(CapError):
        alert(msg_type=msg_type, references=[(SENDER, "x.1", SENT)])


# ------------------------------------------------------------------- certainty


@pytest.mark.parametrize(("changes", "certainty", "event", "response"), [
    ({"confirmed_by": "w-07"}, "Observed", "Confirmed fire", "Evacuate"),
    ({"confirmed_by": "auto", "confirm_rule": "manual_call_point"}, "Observed",
     "Confirmed fire", "Evacuate"),
    ({"confirmed_by": "auto", "confirm_rule": "multi_criteria"}, "Likely", "Confirmed fire",
     "Evacuate"),
    ({"confirmed_by": "auto"}, "Likely", "Confirmed fire", "Evacuate"),
    ({"confirmed_by": "escalation", "unverified": True}, "Likely", "Fire alarm", "Evacuate"),
    ({"confirmed_by": None, "unverified": True}, "Likely", "Fire alarm", "Evacuate"),
    ({"confirmed_by": None, "state": "confirming"}, "Possible", "Fire alarm", "Prepare"),
])
def test_certainty_follows_who_confirmed(changes: dict, certainty: str, event: str,
                                         response: str) -> None:
    xml = alert(incident(**changes))
    assert validate_cap(xml) == []
    r = root_of(xml)
    assert text(r, "c:info/c:certainty") == certainty
    assert text(r, "c:info/c:event") == event
    assert texts(r, "c:info/c:responseType") == [response]


def test_escalation_says_nobody_checked() -> None:
    r = root_of(alert(incident(confirmed_by="escalation", unverified=True)))
    assert "Not checked by anyone" in text(r, "c:info/c:description")


# ------------------------------------------------------------------------ times


@pytest.mark.parametrize(("dt", "expected"), [
    (datetime(2026, 11, 26, 20, 30, 0, 999_999, tzinfo=UTC), "2026-11-26T20:30:00-00:00"),
    (datetime(2026, 11, 27, 4, 30, tzinfo=CST), "2026-11-27T04:30:00+08:00"),
    (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
     "2026-01-02T03:04:05-05:30"),
    (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(minutes=45))),
     "2026-01-02T03:04:05+00:45"),
    (datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(seconds=3601))),
     "2026-01-02T02:04:04-00:00"),  # an offset with seconds is written in UTC
])
def test_cap_datetime(dt: datetime, expected: str) -> None:
    assert cap_datetime(dt) == expected
    assert CAP_DT.fullmatch(expected)


def test_naive_times_are_refused() -> None:
    with pytest.raises(CapError, match="timezone"):
        cap_datetime(datetime(2026, 1, 1))
    with pytest.raises(CapError):
        alert(sent=datetime(2026, 1, 1))


def test_expires_is_written_when_given() -> None:
    r = root_of(alert(expires=SENT + timedelta(hours=2)))
    assert text(r, "c:info/c:expires") == "2026-11-26T22:30:00-00:00"


# ------------------------------------------------------------------- geometry


def test_a_kilometre_north_is_about_0_008993_degrees() -> None:
    lat, lon = SiteFrame(0.0, 0.0).to_wgs84(0.0, 1000.0)
    assert lon == 0.0
    assert lat == pytest.approx(0.008993, rel=0.01)  # sphere of 6371 km; ellipsoid ~0.5% off


def test_ellipsoid_degree_lengths_at_45_degrees() -> None:
    # Lengths of one degree on WGS84 at 45°: 111 132.95 m of latitude, 78 846.8 m of longitude.
    frame = SiteFrame(45.0, 7.0)
    lat, lon = frame.to_wgs84(0.0, 1000.0)
    assert lat - 45.0 == pytest.approx(1000 / 111_132.95, abs=1e-7)
    lat, lon = frame.to_wgs84(1000.0, 0.0)
    assert lon - 7.0 == pytest.approx(1000 / 78_846.8, abs=1e-7)
    assert lat == 45.0


def test_rotation_turns_the_site_axes_counter_clockwise_from_east() -> None:
    north = SiteFrame(35.4, 116.6).to_wgs84(0.0, 1000.0)
    turned = SiteFrame(35.4, 116.6, rotation_deg=90.0).to_wgs84(1000.0, 0.0)  # +x is north
    assert turned == pytest.approx(north, abs=1e-9)
    west = SiteFrame(35.4, 116.6, rotation_deg=90.0).to_wgs84(0.0, 1000.0)  # +y is west
    assert west[1] < 116.6 and west[0] == pytest.approx(35.4, abs=1e-9)


def test_longitude_wraps_at_the_antimeridian() -> None:
    _, lon = SiteFrame(0.0, 180.0).to_wgs84(1000.0, 0.0)
    assert -180.0 <= lon < -179.99


@pytest.mark.parametrize("bad", [(91.0, 0.0), (0.0, 181.0), (math.nan, 0.0), (0.0, math.inf),
                                 (89.5, 0.0)])
def test_site_frame_refuses_bad_origins(bad: tuple[float, float]) -> None:
    with pytest.raises(CapError):
        SiteFrame(*bad)


@pytest.mark.parametrize(("error_m", "radius_km"), [
    (0.0, 0.005), (4.99, 0.005), (12.0, 0.012), (12.01, 0.013), (37.5, 0.038),
    (2500.0, 2.5)])
def test_circle_radius_is_the_locate_error_in_km_rounded_up_at_least_5_m(error_m: float,
                                                                radius_km: float) -> None:
    assert circle(root_of(alert(incident(error_m=error_m))))[2] == radius_km


def test_circle_centre_is_the_position() -> None:
    xml = alert(incident(x=0.0, y=1000.0), frame=SiteFrame(35.4, 116.6))
    lat, lon, _ = circle(root_of(xml))
    expected = SiteFrame(35.4, 116.6).to_wgs84(0.0, 1000.0)
    assert (lat, lon) == pytest.approx(expected, abs=1e-6)


def test_no_frame_or_no_position_means_no_circle_but_an_area() -> None:
    for xml in (alert(frame=None), alert(incident(x=None, y=None)),
                alert(incident(x=math.nan)), alert(incident(x=1e12)),
                alert(incident(y=-60_000.0))):
        r = root_of(xml)
        assert r.find("c:info/c:area/c:circle", NS) is None
        assert text(r, "c:info/c:area/c:areaDesc")
        assert validate_cap(xml) == []


def test_other_cells_in_alarm_are_more_areas_with_their_outlines() -> None:
    kitchen = [(20.0, 0.0), (26.0, 0.0), (26.0, 12.0), (20.0, 12.0)]
    xml = alert(also=[("Bldg 3 2F canteen kitchen, floor 2", kitchen)])
    assert validate_cap(xml) == []
    areas = root_of(xml).findall("c:info/c:area", NS)
    assert len(areas) == 2
    assert text(areas[0], "c:areaDesc").startswith("Bldg 3 2F east flats")
    assert text(areas[1], "c:areaDesc") == "also in alarm: Bldg 3 2F canteen kitchen, floor 2"
    pairs = text(areas[1], "c:polygon").split(" ")
    assert len(pairs) == 5 and pairs[0] == pairs[-1]  # CAP's rings are closed
    corners = [tuple(float(v) for v in p.split(",")) for p in pairs[:4]]
    for got, (x, y) in zip(corners, kitchen, strict=True):
        assert got == pytest.approx(FRAME.to_wgs84(x, y), abs=1e-6)
    # no frame: the words alone; a corner far outside any site: the words alone
    for kw in ({"frame": None}, {"also": [("far", [(0.0, 0.0), (9e6, 0.0), (0.0, 1.0)])]}):
        xml = alert(**{"also": [("Bldg 3 2F canteen kitchen, floor 2", kitchen)], **kw})
        assert validate_cap(xml) == []
        more = root_of(xml).findall("c:info/c:area", NS)[1]
        assert more.find("c:polygon", NS) is None and text(more, "c:areaDesc")


# ----------------------------------------------------------------- hostile text


HOSTILE = [
    "<script>alert(1)</script>",
    "fish & chips &amp; &lt;b&gt;",
    "\"double\" and 'single' quotes",
    "厨房 🔥 Küche",
    "]]> <![CDATA[x]]>",
    "nul\x00 esc\x1b bell\x07 del\x7f",
    "lone surrogate \ud800 here",
    "x" * 5000,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_zone_names_are_escaped_not_injected(name: str) -> None:
    xml = alert(incident(zone=name, building=name, confirmed_by=name), zone_name=name)
    assert validate_cap(xml) == []
    assert b"<script>" not in xml
    r = root_of(xml)
    assert r.find(".//c:script", NS) is None and r.find(".//script") is None
    shown = text(r, "c:info/c:area/c:areaDesc")
    safe = name.replace("\x00", "\ufffd").replace("\x1b", "\ufffd").replace(
        "\x07", "\ufffd").replace("\ud800", "\ufffd")
    assert safe[:100] in shown  # the text survives, only unrepresentable characters change
    assert len(shown) < 1100  # and it is bounded


def test_hostile_incident_ids_still_make_valid_identifiers() -> None:
    ids = ["a b", "a,b", "a<b&c", "a.b", "a%2Eb", "事件", "a\x00b"]
    seen = set()
    for i in ids:
        r = root_of(alert(incident(id=i)))
        ident = text(r, "c:identifier")
        assert not re.search(r"[\s,<&]", ident), ident
        assert ident.count(".") == 2  # site, incident, number: the dots only join
        seen.add(ident)
        assert text(r, "c:incidents") == ident.split(".")[1]
    assert len(seen) == len(ids)  # percent-encoding keeps different ids different


@pytest.mark.parametrize("sender", ["", "fire grid", "a,b", "a<b", "a&b", "tab\there"])
def test_bad_senders_are_refused(sender: str) -> None:
    with pytest.raises(CapError, match="sender"):
        alert(sender=sender)


def test_bad_references_are_refused() -> None:
    with pytest.raises(CapError):
        alert(msg_type="Update", references=[("a b", "x.1", SENT)])
    with pytest.raises(CapError):
        alert(msg_type="Update", references=[(SENDER, "x,1", SENT)])


# ----------------------------------------------------------- options and scope


def test_chinese_wording() -> None:
    xml = alert(language="zh-CN", zone_name="3号楼2层东")
    assert validate_cap(xml) == []
    r = root_of(xml)
    assert text(r, "c:info/c:language") == "zh-CN"
    assert text(r, "c:info/c:event") == "确认火灾"
    assert "119" in text(r, "c:info/c:instruction")
    assert text(r, "c:info/c:area/c:areaDesc").startswith("3号楼2层东")
    assert " " not in text(r, "c:info/c:description").split("。")[1][:2]


@pytest.mark.parametrize("language", ["fr-FR", "en_US", "", "zh CN"])
def test_languages_without_wording_are_refused(language: str) -> None:
    with pytest.raises(CapError, match="language"):
        alert(language=language)


def test_scopes_status_and_web() -> None:
    xml = alert(scope="Restricted", restriction="Property management & fire station only",
                status="Exercise", web="https://example.org/fire?a=1&b=2")
    assert validate_cap(xml) == []
    r = root_of(xml)
    assert text(r, "c:restriction") == "Property management & fire station only"
    assert text(r, "c:status") == "Exercise"
    assert text(r, "c:info/c:web") == "https://example.org/fire?a=1&b=2"
    xml = alert(scope="Private", addresses="station-1 guard-1")
    assert validate_cap(xml) == [] and text(root_of(xml), "c:addresses") == "station-1 guard-1"
    for bad in ({"scope": "Restricted"}, {"scope": "Private"}, {"scope": "public"},
                {"status": "Real"}):
        with pytest.raises(CapError):
            alert(**bad)


def test_missing_id_or_site_is_refused() -> None:
    for key in ("id", "site"):
        inc = incident()
        del inc[key]
        with pytest.raises(CapError, match=key):
            alert(inc)


# -------------------------------------------------------------- the checker


REQUIRED = [
    ("", "identifier"), ("", "sender"), ("", "sent"), ("", "status"), ("", "msgType"),
    ("", "scope"), ("c:info", "category"), ("c:info", "event"), ("c:info", "urgency"),
    ("c:info", "severity"), ("c:info", "certainty"), ("c:info/c:area", "areaDesc"),
    ("c:info/c:parameter", "valueName"), ("c:info/c:parameter", "value"),
]


def serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NS)


@pytest.mark.parametrize(("parent", "name"), REQUIRED)
def test_each_required_element_removed_is_reported(parent: str, name: str) -> None:
    r = root_of(alert())
    holder = r.find(parent, NS) if parent else r
    assert holder is not None
    child = holder.find(f"c:{name}", NS)
    assert child is not None
    holder.remove(child)
    problems = validate_cap(serialize(r))
    assert any(f"missing required element {name}" in p for p in problems), problems


@pytest.mark.parametrize(("parent", "name"), REQUIRED)
def test_each_required_element_emptied_is_reported(parent: str, name: str) -> None:
    r = root_of(alert())
    holder = r.find(parent, NS) if parent else r
    child = holder.find(f"c:{name}", NS)  # type: ignore[union-attr]
    child.text = ""  # type: ignore[union-attr]
    assert validate_cap(serialize(r)), name


def test_conditional_elements_are_required_when_their_condition_holds() -> None:
    update = alert(msg_type="Update", references=next_references(alert()))
    r = root_of(update)
    r.remove(r.find("c:references", NS))  # type: ignore[arg-type]
    assert "alert: msgType Update needs references to earlier messages" in validate_cap(
        serialize(r))
    r = root_of(alert(scope="Restricted", restriction="staff"))
    r.remove(r.find("c:restriction", NS))  # type: ignore[arg-type]
    assert "alert: scope Restricted needs a restriction" in validate_cap(serialize(r))


def test_wrong_element_order_is_reported() -> None:
    r = root_of(alert())
    ident, sender = r[0], r[1]
    r.remove(ident)
    r.insert(1, ident)
    assert sender.tag.endswith("sender")
    problems = validate_cap(serialize(r))
    assert any("alert/identifier: out of order" in p for p in problems), problems
    r = root_of(alert())
    info = r.find("c:info", NS)
    area = info.find("c:area", NS)  # type: ignore[union-attr]
    info.remove(area)  # type: ignore[union-attr, arg-type]
    info.insert(0, area)  # type: ignore[union-attr, arg-type]
    assert any("out of order" in p for p in validate_cap(serialize(r)))


def replace_text(xml: bytes, element: str, value: str) -> bytes:
    out, n = re.subn(rf"<{element}>[^<]*</{element}>".encode(),
                     f"<{element}>{value}</{element}>".encode(), xml, count=1)
    assert n == 1, element
    return out


@pytest.mark.parametrize(("element", "value", "expected"), [
    ("status", "Real", "not one of"),
    ("msgType", "Warning", "not one of"),
    ("scope", "public", "not one of"),
    ("category", "Fires", "not one of"),
    ("responseType", "Run", "not one of"),
    ("urgency", "Now", "not one of"),
    ("severity", "High", "not one of"),
    ("certainty", "Sure", "not one of"),
    ("sent", "2026-11-26T20:30:00Z", "no 'Z'"),
    ("sent", "2026-11-26T20:30:00.5-00:00", "fractional"),
    ("sent", "2026-11-26 20:30:00-00:00", "not YYYY"),
    ("sent", "2026-13-26T20:30:00-00:00", "not a real date"),
    ("sent", "2026-11-26T20:30:00+00:00", "UTC as -00:00"),
    ("onset", "yesterday", "not YYYY"),
    ("identifier", "a,b", "comma"),
    ("identifier", "a b", "space"),
    ("identifier", "a&amp;b", "'&'"),
    ("sender", "a&lt;b", "'<'"),
    ("language", "en US", "language tag"),
    ("circle", "91.0,116.6 0.005", "latitude 91.0"),
    ("circle", "35.4,-181 0.005", "longitude -181.0"),
    ("circle", "35.4,116.6 -1", "radius"),
    ("circle", "35.4 116.6 1", "not 'latitude"),
    ("circle", "116.6;35.4 1", "not a latitude,longitude"),
])
def test_bad_values_are_reported(element: str, value: str, expected: str) -> None:
    problems = validate_cap(replace_text(alert(), element, value))
    assert any(expected in p for p in problems), problems


def test_bad_references_and_polygons_are_reported() -> None:
    update = alert(msg_type="Update", references=next_references(alert()))
    for bad, expected in (("a,b", "not sender,identifier,sent"),
                          ("a,b,2026-11-26T20:30:00Z", "no 'Z'"),
                          ("a,b,c,d", "not sender")):
        problems = validate_cap(replace_text(update, "references", bad))
        assert any(expected in p for p in problems), problems
    with_polygon = alert().replace(
        b"<circle>", b"<polygon>35.4,116.6 35.5,116.6 35.5,116.7</polygon><circle>")
    problems = validate_cap(with_polygon)
    assert any("at least 4" in p for p in problems)
    assert any("first and last" in p for p in problems)
    closed = alert().replace(
        b"<circle>", b"<polygon>35.4,116.6 35.5,116.6 35.5,116.7 35.4,116.6</polygon><circle>")
    assert validate_cap(closed) == []


def test_cardinality_and_unknown_elements_are_reported() -> None:
    doubled = alert().replace(b"<status>Actual</status>",
                              b"<status>Actual</status><status>Actual</status>")
    assert any("status: appears more than 1" in p for p in validate_cap(doubled))
    unknown = alert().replace(b"<scope>Public</scope>", b"<scope>Public</scope><colour/>")
    assert any("unexpected element" in p for p in validate_cap(unknown))
    nested = alert().replace(b"<event>Confirmed fire</event>", b"<event><b>x</b></event>")
    assert any("must hold text" in p for p in validate_cap(nested))
    foreign = re.sub(rb'xmlns="[^"]+"', b'xmlns="urn:oasis:names:tc:emergency:cap:1.1"',
                     alert())
    assert validate_cap(foreign) == [
        "root element is '{urn:oasis:names:tc:emergency:cap:1.1}alert', not alert in "
        f"namespace {CAP_NS}"]


def test_an_xml_signature_may_end_the_alert() -> None:
    signed = alert().replace(
        b"</alert>", b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/></alert>')
    assert validate_cap(signed) == []


@pytest.mark.parametrize("doc", [
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
    b'"&lol;&lol;&lol;">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&lol2;</alert>',
    b'<!DOCTYPE alert SYSTEM "file:///etc/passwd"><alert/>',
    b'<!doctype alert><alert/>',
])
def test_dtds_and_entities_are_refused_before_parsing(doc: bytes) -> None:
    problems = validate_cap(doc)
    assert len(problems) == 1 and "DTD" in problems[0], problems
    with pytest.raises(CapError):
        next_references(doc)


def test_oversized_non_utf8_and_malformed_documents_are_refused() -> None:
    assert "at most" in validate_cap(b" " * (MAX_CAP_BYTES + 1))[0]
    utf16 = alert().decode().replace("utf-8", "utf-16").encode("utf-16")
    assert validate_cap(utf16)  # UTF-16 hides '<!DOCTYPE' from a byte search: refused
    latin = b"<?xml version='1.0' encoding='iso-8859-1'?><alert/>"
    assert "UTF-8" in validate_cap(latin)[0]
    assert "not UTF-8" in validate_cap(b"<alert>\xff</alert>")[0]
    assert "not well-formed" in validate_cap(b"<alert><identifier></alert>")[0]
    assert "not well-formed" in validate_cap(b"")[0]


def test_checker_accepts_the_oasis_style_example_shape() -> None:
    # Written here in the shape of the specification's examples: no declaration, other
    # offsets, several categories, geocode and resource blocks.
    doc = f"""<alert xmlns="{CAP_NS}">
      <identifier>KST01055887203</identifier><sender>KSTO@NWS.NOAA.GOV</sender>
      <sent>2003-06-17T14:57:00-07:00</sent><status>Actual</status><msgType>Alert</msgType>
      <scope>Public</scope>
      <info><category>Met</category><category>Safety</category><event>Storm</event>
        <urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty>
        <eventCode><valueName>SAME</valueName><value>SVR</value></eventCode>
        <expires>2003-06-17T16:00:00-07:00</expires>
        <resource><resourceDesc>map</resourceDesc><mimeType>image/png</mimeType>
          <size>1024</size></resource>
        <area><areaDesc>somewhere</areaDesc>
          <polygon>38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.47,-120.14</polygon>
          <geocode><valueName>SAME</valueName><value>006109</value></geocode>
          <altitude>100</altitude><ceiling>3000</ceiling></area>
      </info></alert>""".encode()
    assert validate_cap(doc) == []


# --------------------------------------------------------------- hypothesis

TEXT = st.text(max_size=60) | st.sampled_from(HOSTILE)
FINITE = st.floats(-5000, 5000, allow_nan=False)
ODD_NUMBER = st.sampled_from([math.nan, math.inf, -math.inf, 10**400, "12", True, None])
ZONES = [UTC, CST, timezone(timedelta(hours=-5, minutes=-30)), timezone(timedelta(hours=14))]

incidents = st.fixed_dictionaries(
    {
        "id": TEXT,
        "site": st.from_regex(r"[a-z0-9-]{1,24}", fullmatch=True),
        "state": st.sampled_from(["confirming", "confirmed", "dismissed", "closed", "odd"]),
        "zone": st.none() | TEXT,
        "building": st.none() | TEXT,
        "floor": st.none() | st.integers(-5, 300) | st.sampled_from(["2", 2.5, True]),
        "x": FINITE | ODD_NUMBER,
        "y": FINITE | ODD_NUMBER,
        "error_m": st.floats(0, 10_000) | st.floats(-5, 0) | ODD_NUMBER,
        "t0": st.none() | st.floats(0, 4e9) | ODD_NUMBER,
        "unverified": st.booleans(),
        "confirmed_by": st.none() | st.sampled_from(["auto", "escalation", "w-07"]) | TEXT,
    },
    optional={"confirm_rule": st.sampled_from(
        ["manual_call_point", "coincidence", "multi_criteria", "camera_detector"]) | TEXT,
        "method": TEXT, "devices": st.lists(TEXT, max_size=3)},
)
frames = st.none() | st.builds(SiteFrame, st.floats(-89, 89), st.floats(-180, 180),
                               st.floats(-720, 720))
times = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.sampled_from(ZONES))
tokens = st.from_regex(r"[A-Za-z0-9@._:-]{1,30}", fullmatch=True)
references = st.lists(st.tuples(tokens, tokens, times), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inc=incidents, frame=frames, sent=times, refs=references,
       msg_type=st.sampled_from(["Alert", "Update", "Cancel"]),
       language=st.sampled_from(["en-US", "zh-CN", "en", "zh-Hans-CN"]),
       zone_name=st.none() | TEXT, status=st.sampled_from(["Actual", "Exercise", "Test"]),
       scope=st.sampled_from(["Public", "Restricted", "Private"]), note=st.none() | TEXT)
def test_any_incident_makes_a_valid_alert(inc: dict, frame: SiteFrame | None, sent: datetime,
                                          refs: list, msg_type: str, language: str,
                                          zone_name: str | None, status: str, scope: str,
                                          note: str | None) -> None:
    xml = cap_alert(inc, sender="firegrid@" + inc["site"], frame=frame, msg_type=msg_type,
                    sent=sent, references=refs if msg_type != "Alert" else (),
                    status=status, scope=scope, zone_name=zone_name, language=language,
                    restriction="staff only", addresses="guard-1", note=note)
    assert validate_cap(xml) == []
    r = root_of(xml)
    assert text(r, "c:info/c:certainty") in CERTAINTY
    assert texts(r, "c:info/c:responseType")[0] in RESPONSE_TYPE
    chained = next_references(xml)
    assert len(chained) == (len(refs) + 1 if msg_type != "Alert" else 1)
    assert chained[-1][1] == text(r, "c:identifier")
