"""Responders already sent are told when another cell goes into alarm (pure engine).

The engine cannot always tell smoke that leaked next door from a second fire there
(docs/locating.md), so both may stay one incident; whoever is on the way must then
learn of the other cell. Simulated time on the example site (configs/taibai-demo.yaml):
smk-301/302 in b3-2f-east, smk-311 in the canteen kitchen next door (b3-2f-kitchen).
"""

from __future__ import annotations

import re

import orjson
import pytest

from alerting.cap import validate_cap
from alerting.page import SCREEN, Page
from drivers.signal import Signal
from gateway.config import parse_site
from gateway.model import Decisions
from tests.test_engine import EXAMPLE_TEXT, Sim, _journal, at, one, payload, stages


def spreading(sim: Sim) -> tuple[str, Decisions]:
    """smk-301 at T0, smk-302 at 5 s (coincidence: guard-1 paged), smk-304 at 12 s."""
    inc = one(sim.signal("smk-301", t=0, received=0), "detected").incident
    d = sim.signal("smk-302", t=5, received=5)
    assert one(d, "paged").responder == "guard-1"
    sim.signal("smk-304", t=12, received=12)
    return inc, d


def test_a_new_cell_after_the_page_is_sent_to_the_responder_on_the_way() -> None:
    sim = Sim()
    inc, first = spreading(sim)
    sim.ack("guard-1", inc, "ack", t=15)
    deadline = sim.engine.next_deadline_ns()
    d = sim.signal("smk-311", t=40, received=40)
    assert stages(d) == ["detected", "located", "notified"]
    note = one(d, "notified")
    assert (note.incident, note.responder, note.tier) == (inc, "guard-1", 1)
    assert note.fields["cell"] == "b3-2f-kitchen" and note.fields["trigger"] == "smk-311"
    assert note.fields["channel"] == "mqtt" and note.elapsed_s == pytest.approx(40.0)
    (page,) = d.pages
    assert page.responder == "guard-1" and page.zone == "b3-2f-kitchen"
    assert page.text == note.fields["text"] and len(page.text) <= SCREEN
    assert page.text.startswith("ALSO IN ALARM b3 Bldg 3 2F canteen kitchen F2 (23,6)m T0+40s")
    body = orjson.loads(page.to_json())
    assert body["notice"] == "cell" and body["incident_zone"] == "b3-2f-east"
    assert body["cells"] == ["b3-2f-east", "b3-2f-kitchen"]
    # news, not a new dispatch: no timer, the incident stays where the fire is
    assert sim.engine.next_deadline_ns() == deadline
    assert payload(d, f"incident/{inc}")["zone"] == "b3-2f-east"
    assert one(first, "paged").fields["text"] != page.text


def test_the_same_cell_again_or_a_camera_tells_nobody() -> None:
    sim = Sim()
    inc, _ = spreading(sim)
    assert "notified" not in stages(sim.signal("cam-01", t=14, received=14))
    d = sim.signal("smk-311", t=40, received=40)
    assert [s.responder for s in d.steps if s.stage == "notified"] == ["guard-1"]
    d = sim.signal("heat-312", t=42, received=42)  # the kitchen again: already told
    assert one(d, "detected").incident == inc and "notified" not in stages(d)


def test_who_declined_is_not_told_and_the_next_tier_is() -> None:
    sim = Sim()
    inc, _ = spreading(sim)
    sim.ack("guard-1", inc, "decline", t=15)  # squad-3 paged at once
    d = sim.signal("smk-311", t=40, received=40)
    assert [(s.responder, s.tier) for s in d.steps if s.stage == "notified"] == [("squad-3", 2)]
    assert [p.responder for p in d.pages] == ["squad-3"]


def test_before_anyone_is_paged_the_page_itself_names_the_other_cells() -> None:
    sim = Sim()
    inc = one(sim.signal("smk-304", t=0, received=0), "detected").incident
    d = sim.signal("smk-311", t=10, received=10)  # kitchen: ask_human, no coincidence
    assert one(d, "detected").incident == inc
    assert "notified" not in stages(d) and not d.pages
    d = sim.tick(30)  # nobody confirmed: escalated, guard-1 paged
    page = one(d, "paged")
    # the names do not fit beside the site's long ones: how many, and the answer hint goes
    assert re.fullmatch(rf"FIRE b3 Bldg 3 2F east flats F2 \(\d+,\d+\)m \+1 cell T0\+30s {inc}",
                        page.fields["text"]), page.fields["text"]
    assert len(page.fields["text"]) <= SCREEN
    (sent,) = d.pages
    assert Page.from_json(sent.to_json()).extra["cells"] == ["b3-2f-east", "b3-2f-kitchen"]


def test_a_restarted_engine_does_not_tell_again() -> None:
    live = Sim()
    inc, _ = spreading(live)
    live.ack("guard-1", inc, "ack", t=15)
    live.signal("smk-311", t=40, received=40)
    fresh = Sim()
    fresh.now = live.now
    fresh.engine.restore(_journal(live.steps), live.engine.device_states.values())
    assert not fresh.engine.tick(at(41)).steps
    again = fresh.engine.signal(Signal("smk-311", "alarm"), at(42))
    assert not again.steps and not again.pages
    d = fresh.engine.signal(Signal("heat-312", "alarm"), at(43))
    assert [s.stage for s in d.steps if s.incident == inc][:1] == ["detected"]
    assert "notified" not in [s.stage for s in d.steps]


def test_short_cell_names_are_named_on_the_page() -> None:
    site = parse_site(EXAMPLE_TEXT.replace('name: "Bldg 3 2F east flats"', 'name: "E flats"')
                      .replace('name: "Bldg 3 2F canteen kitchen"', 'name: "Canteen"'),
                      "short-names.yaml")
    sim = Sim(site)
    inc = one(sim.signal("smk-304", t=0, received=0), "detected").incident
    sim.signal("smk-311", t=10, received=10)
    page = one(sim.tick(30), "paged")
    assert re.fullmatch(rf"FIRE b3 E flats F2 \(\d+,\d+\)m also Canteen T0\+30s {inc} reply ack",
                        page.fields["text"]), page.fields["text"]


def test_the_cap_update_shows_the_new_cell_as_another_area() -> None:
    framed = EXAMPLE_TEXT.replace("\nzones:\n", "\ncap: {lat: 35.4, lon: 116.6}\nzones:\n", 1)
    site = parse_site(framed, "with-cap.yaml")
    sim = Sim(site)
    inc, first = spreading(sim)
    (alert,) = [p for p in first.publishes if p.topic == f"cap/{inc}"]
    assert alert.payload.count(b"<area>") == 1
    d = sim.signal("smk-311", t=40, received=40)
    (update,) = [p for p in d.publishes if p.topic == f"cap/{inc}"]
    assert validate_cap(update.payload) == []
    assert b"<msgType>Update</msgType>" in update.payload
    assert update.payload.count(b"<area>") == 2
    assert b"<areaDesc>also in alarm: Bldg 3 2F canteen kitchen, floor 2</areaDesc>" \
        in update.payload and update.payload.count(b"<polygon>") == 1
