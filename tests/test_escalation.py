"""The escalation policy in the pure engine, in simulated time (issue #5).

Tiers page all at once or in turn, repeat pages until answered, pre-alert at
``located``, follow on-duty rosters with a fallback, and move on when a page cannot be
delivered on any of a responder's channels. Every page, failure, retry, ack and decline
is a step, and a restored engine resumes exactly where the crashed one was.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alerting.channel import Delivery
from drivers.signal import Signal
from gateway.config import parse_site
from gateway.engine import Engine
from gateway.escalation import on_duty, site_zone, tier_roster
from gateway.model import NS, Decisions

BASE = """
site: esc
sla: {locate_s: 10, confirm_s: 30, in_place_s: 60}
zones:
  - {id: a-1f, name: "Block A lobby", building: a, floor: 1,
     polygon: [[0,0],[20,0],[20,10],[0,10]], worker: w-1}
devices:
  - {id: smk-1, kind: smoke, floor: 1, x: 5, y: 5}
  - {id: mcp-1, kind: manual, floor: 1, x: 1, y: 1}
responders:
  - {id: w-1, tier: 0}
  - {id: g-1, tier: 1}
  - {id: g-2, tier: 1}
  - {id: s-1, tier: 2}
tiers:
  - {tier: 1, ack_timeout_s: 10}
  - {tier: 2, ack_timeout_s: 20}
"""
# 2026-11-26 was a Thursday; 12:00 at +08:00
NOON_THU = int(datetime(2026, 11, 26, 4, 0, tzinfo=UTC).timestamp()) * NS


def site(text: str = BASE, **replace: str):
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_site(text)


def at(s: float) -> int:
    return NOON_THU + round(s * NS)


def near(t_ns: int | None, seconds: float) -> bool:
    """Step times are made strictly increasing per incident, a few ns apart."""
    return t_ns is not None and abs(t_ns - at(seconds)) < 1000


def steps(d: Decisions) -> list[tuple[str, str | None, int | None]]:
    return [(s.stage, s.responder, s.tier) for s in d.steps]


def fire(eng: Engine, t: float = 0) -> tuple[str, Decisions]:
    d = eng.signal(Signal("mcp-1", "alarm"), at(t))  # a call point confirms at once
    return d.steps[0].incident, d


def test_all_at_once_is_the_default() -> None:
    eng = Engine(site())
    _, d = fire(eng)
    assert ("paged", "g-1", 1) in steps(d) and ("paged", "g-2", 1) in steps(d)
    assert {p.responder for p in d.pages} == {"g-1", "g-2"}


def test_in_turn_pages_one_member_then_the_next_at_its_timeout() -> None:
    eng = Engine(site(**{"{tier: 1, ack_timeout_s: 10}":
                         "{tier: 1, ack_timeout_s: 10, order: in_turn}"}))
    inc, d = fire(eng)
    assert [p.responder for p in d.pages] == ["g-1"]
    assert near(eng.next_deadline_ns(), 10)
    d = eng.tick(at(10.001))
    assert steps(d)[:2] == [("unanswered", "g-1", 1), ("paged", "g-2", 1)]
    d = eng.tick(at(20.01))
    assert steps(d)[:2] == [("unanswered", None, 1), ("paged", "s-1", 2)]
    late = eng.ack("g-1", inc, "ack", at(21))  # a late answer still counts
    assert steps(late)[0] == ("acked", "g-1", 1)


def test_in_turn_decline_passes_to_the_next_member_at_once() -> None:
    eng = Engine(site(**{"{tier: 1, ack_timeout_s: 10}":
                         "{tier: 1, ack_timeout_s: 10, order: in_turn}"}))
    inc, _ = fire(eng)
    d = eng.ack("g-1", inc, "decline", at(2))
    assert steps(d)[:2] == [("declined", "g-1", 1), ("paged", "g-2", 1)]
    assert near(eng.next_deadline_ns(), 12), "the next member gets a full ack_timeout_s"
    d = eng.ack("g-2", inc, "decline", at(3))
    assert ("paged", "s-1", 2) in steps(d)


def test_repeat_pages_until_answered_without_moving_the_tier_deadline() -> None:
    eng = Engine(site(**{"{tier: 1, ack_timeout_s: 10}":
                         "{tier: 1, ack_timeout_s: 10, repeat_s: 4}"}))
    inc, _ = fire(eng)
    d = eng.tick(at(4.001))
    assert steps(d) == [("paged", "g-1", 1), ("paged", "g-2", 1)]
    assert all(s.fields["again"] == 1 for s in d.steps)
    d = eng.ack("g-2", inc, "decline", at(5))
    d = eng.tick(at(8.002))
    assert steps(d) == [("paged", "g-1", 1)], "a member who declined is not asked again"
    assert d.steps[0].fields["again"] == 2
    d = eng.tick(at(10.001))
    assert ("unanswered", None, 1) in steps(d) and ("paged", "s-1", 2) in steps(d)
    eng.ack("s-1", inc, "ack", at(11))
    assert not eng.tick(at(40)).pages, "answered: no more repeats"


def test_pre_alert_at_located_then_the_real_page_on_confirmation() -> None:
    eng = Engine(site(**{"{tier: 1, ack_timeout_s: 10}":
                         "{tier: 1, ack_timeout_s: 10, pre_alert: true}"}))
    d = eng.signal(Signal("smk-1", "alarm"), at(0))  # goes to the grid worker first
    inc = d.steps[0].incident
    got = steps(d)
    assert got[:2] == [("detected", None, None), ("located", None, None)]
    assert ("pre_alerted", "g-1", 1) in got and ("pre_alerted", "g-2", 1) in got
    assert all(p.extra.get("pre_alert") for p in d.pages)
    assert all(p.text.startswith("PRE-ALERT") for p in d.pages)
    d = eng.ack("g-1", inc, "ack", at(3))  # a pre-alerted guard may already answer
    assert steps(d)[0] == ("acked", "g-1", 1)
    d = eng.reply(inc, "confirm", "w-1", at(5))
    assert ("paged", "g-2", 1) in steps(d)
    assert eng.incidents[inc].tier_deadline_ns is None, "already in hand: no tier timer"


def test_roster_skips_members_off_duty_and_falls_back() -> None:
    text = BASE.replace("{id: g-1, tier: 1}",
                        '{id: g-1, tier: 1, on_duty: [{days: [mon, tue, wed, thu, fri], '
                        'from: "08:00", until: "20:00"}]}')
    text = text.replace("{id: g-2, tier: 1}",
                        '{id: g-2, tier: 1, on_duty: [{days: [sat, sun]}]}')
    s = site(text)
    eng = Engine(s)
    _, d = fire(eng)  # Thursday noon: g-1 only
    assert [p.responder for p in d.pages] == ["g-1"]
    night = at(10 * 3600)  # Thursday 22:00: nobody on duty, no fallback: every member
    members, note = tier_roster(s, 1, night)
    assert {m.id for m in members} == {"g-1", "g-2"} and "every member" in note
    with_fb = site(text, **{"{tier: 1, ack_timeout_s: 10}":
                            "{tier: 1, ack_timeout_s: 10, fallback: [s-1]}"})
    members, note = tier_roster(with_fb, 1, night)
    assert [m.id for m in members] == ["s-1"] and "fallback" in note
    eng = Engine(with_fb)
    d = eng.signal(Signal("mcp-1", "alarm"), night)
    paged = [st for st in d.steps if st.stage == "paged"]
    assert [st.responder for st in paged] == ["s-1"] and paged[0].fields["roster"]


def test_overnight_shift_covers_the_next_morning() -> None:
    s = site(BASE.replace("{id: g-1, tier: 1}",
                          '{id: g-1, tier: 1, on_duty: [{days: [thu], from: "22:00", '
                          'until: "06:00"}]}'))
    g1, tz = s.responder("g-1"), site_zone(s)
    assert not on_duty(g1, at(0), tz)  # Thursday 12:00
    assert on_duty(g1, at(11 * 3600), tz)  # Thursday 23:00
    assert on_duty(g1, at(17 * 3600), tz)  # Friday 05:00
    assert not on_duty(g1, at(19 * 3600), tz)  # Friday 07:00


def test_failed_delivery_tries_the_next_channel_then_moves_on() -> None:
    s = site(BASE.replace(
        "{id: g-1, tier: 1}",
        '{id: g-1, tier: 1, pagers: [{type: tap, host: 127.0.0.1, port: 1, pager_id: "1"},'
        ' {type: snpp, host: 127.0.0.1, port: 2, pager_id: "2"}]}').replace(
        "  - {id: g-2, tier: 1}\n", ""))
    eng = Engine(s)
    inc, d = fire(eng)
    (page,) = d.pages
    assert page.extra["channel"] == "tap" and page.extra["channel_index"] == 0
    d = eng.delivery(Delivery("g-1", inc, "tap", False, "terminal hung up", 3), at(2))
    assert steps(d) == [("page_failed", "g-1", 1), ("paged", "g-1", 1)]
    assert d.steps[0].fields["next_channel"] == "snpp"
    assert d.pages[0].extra["channel"] == "snpp" and "01" in d.pages[0].text
    assert near(eng.next_deadline_ns(), 10), "a fallback channel keeps the tier deadline"
    d = eng.delivery(Delivery("g-1", inc, "snpp", False, "550 bad pager id"), at(3))
    assert steps(d)[:2] == [("page_failed", "g-1", 1), ("paged", "s-1", 2)]
    assert d.steps[0].fields["final"] is True


def test_successful_delivery_is_a_step() -> None:
    s = site(BASE.replace("{id: g-1, tier: 1}",
                          '{id: g-1, tier: 1, pager: {type: snpp, host: h, pager_id: "7"}}'))
    eng = Engine(s)
    inc, _ = fire(eng)
    d = eng.delivery(Delivery("g-1", inc, "snpp", True, "860 tag", 1, ("00321", "1234")),
                     at(0.4))
    assert steps(d) == [("delivered", "g-1", 1)]
    assert d.steps[0].fields == {"channel": "snpp", "detail": "860 tag", "attempts": 1}


def test_page_text_fits_a_screen_and_says_where_and_how() -> None:
    eng = Engine(site())
    _, d = fire(eng, 0)
    for p in d.pages:
        assert len(p.text) <= 80
        for part in ("FIRE", "a ", "Block A lobby", "F1", "T0+0s", "ack"):
            assert part in p.text, (part, p.text)


def test_restore_resumes_in_turn_repeat_and_fallback_state() -> None:
    text = BASE.replace("{tier: 1, ack_timeout_s: 10}",
                        "{tier: 1, ack_timeout_s: 10, order: in_turn, repeat_s: 3}")
    text = text.replace("{id: g-1, tier: 1}",
                        '{id: g-1, tier: 1, pagers: [{type: tap, host: h, port: 1, '
                        'pager_id: "1"}, {type: mqtt}]}')
    s = site(text)
    eng = Engine(s)
    inc, d = fire(eng)
    log = list(d.steps)
    for out in (eng.delivery(Delivery("g-1", inc, "tap", False, "NAK x3"), at(1)),
                eng.tick(at(3.001)), eng.tick(at(10.001))):
        log.extend(out.steps)
    fresh = Engine(s)
    fresh.restore(log)
    a, b = eng.incidents[inc], fresh.incidents[inc]
    assert (a.current, a.queue, a.passed, a.again, a.channel) == (
        b.current, b.queue, b.passed, b.again, b.channel)
    assert fresh.next_deadline_ns() == eng.next_deadline_ns()
    assert steps(fresh.tick(at(25))) == steps(eng.tick(at(25)))


# ----------------------------------------------------------------- CAP 1.2 (issue #5)

def cap_of(d: Decisions, incident: str) -> bytes | None:
    found = [p for p in d.publishes if p.topic == f"cap/{incident}"]
    assert len(found) <= 1
    if found:
        assert found[0].retain
    return found[0].payload if found else None


def test_cap_alert_on_confirmation_update_on_a_better_position_cancel_on_close() -> None:
    import xml.etree.ElementTree as ET

    from alerting.cap import validate_cap

    ns = {"c": "urn:oasis:names:tc:emergency:cap:1.2"}
    s = site(BASE.replace("tiers:", "cap: {lat: 35.4, lon: 116.6}\ntiers:"))
    eng = Engine(s)
    d = eng.signal(Signal("smk-1", "alarm"), at(0))
    inc = d.steps[0].incident
    assert cap_of(d, inc) is None, "no public alert while the grid worker checks"
    d = eng.reply(inc, "confirm", "w-1", at(5))
    alert = cap_of(d, inc)
    assert alert is not None and validate_cap(alert) == []
    root = ET.fromstring(alert)
    assert root.findtext("c:msgType", namespaces=ns) == "Alert"
    assert root.findtext("c:identifier", namespaces=ns) == f"esc.{inc}.1"
    assert root.findtext("c:sender", namespaces=ns) == "firegrid@esc"
    assert root.findtext("c:sent", namespaces=ns).endswith("+08:00")
    info = root.find("c:info", ns)
    assert info.findtext("c:category", namespaces=ns) == "Fire"
    assert info.findtext("c:certainty", namespaces=ns) == "Observed"  # a person looked
    assert "Block A lobby" in info.find("c:area", ns).findtext("c:areaDesc", namespaces=ns)
    assert info.find("c:area", ns).findtext("c:circle", namespaces=ns).startswith("35.4")
    d = eng.signal(Signal("mcp-1", "alarm"), at(7))  # joins and refines: an Update
    update = cap_of(d, inc)
    assert update is not None and validate_cap(update) == []
    root = ET.fromstring(update)
    assert root.findtext("c:msgType", namespaces=ns) == "Update"
    assert root.findtext("c:references", namespaces=ns).startswith(f"firegrid@esc,esc.{inc}.1,")
    d = eng.close(inc, "w-1", "out", at(30))
    cancel = cap_of(d, inc)
    assert cancel is not None and validate_cap(cancel) == []
    root = ET.fromstring(cancel)
    assert root.findtext("c:msgType", namespaces=ns) == "Cancel"
    assert len(root.findtext("c:references", namespaces=ns).split()) == 2


def test_no_cap_for_an_alarm_dismissed_by_its_grid_worker() -> None:
    eng = Engine(site())
    d = eng.signal(Signal("smk-1", "alarm"), at(0))
    inc = d.steps[0].incident
    d = eng.reply(inc, "dismiss", "w-1", at(3))
    assert cap_of(d, inc) is None
    assert not [p for p in eng.retained() if p.topic.startswith("cap/")]


def test_cap_is_republished_and_identical_after_a_restore() -> None:
    eng = Engine(site())
    inc, d = fire(eng)
    log = list(d.steps)
    fresh = Engine(site())
    fresh.restore(log)
    a = {p.topic: p.payload for p in eng.retained() if p.topic.startswith("cap/")}
    b = {p.topic: p.payload for p in fresh.retained() if p.topic.startswith("cap/")}
    assert a == b and f"cap/{inc}" in a
