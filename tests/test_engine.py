"""The incident engine in simulated time: what a duty room and an auditor would check.

The clock is an integer of nanoseconds that each test advances itself; nothing sleeps
and nothing touches the network. The example site (configs/taibai-demo.yaml) is the
floor plan: building 3 at x 0-26 (east flats and a canteen kitchen that asks a human on
floor 2), building 1 at x 40-70; grid workers w-07 / w-03 (tier 0), then guard-1 (tier 1,
15 s), squad-3 (tier 2, 20 s), station-1 (tier 3, 30 s).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivers.signal import STATES, Signal
from gateway.config import Site, load_site, parse_site
from gateway.engine import Engine
from gateway.model import NS, Decisions, Refused, Step

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "taibai-demo.yaml"
EXAMPLE_TEXT = EXAMPLE.read_text()
SITE = load_site(EXAMPLE)
# The same site with a second property guard in tier 1 (a tier of two members).
TWO_GUARDS = parse_site(
    EXAMPLE_TEXT.replace(
        '  - {id: squad-3,', '  - {id: guard-2, name: "Property guard, gate 2", tier: 1}\n'
        '  - {id: squad-3,', 1),
    "two-guards.yaml",
)
assert TWO_GUARDS.responder("guard-2") is not None

T = 1_700_000_000 * NS  # 2023-11-14T22:13:20Z: the receive time of the first signal (T0)


def at(seconds: float) -> int:
    """T0 + seconds, in ns."""
    return T + round(seconds * NS)


class Sim:
    """An engine plus everything it decided, so a test reads like a duty-room log."""

    def __init__(self, site=SITE):
        self.site = site
        self.engine = Engine(site)
        self.steps: list[Step] = []
        self.now = T

    def _keep(self, d: Decisions) -> Decisions:
        self.steps.extend(d.steps)
        return d

    def _clock(self, t: float | None) -> int:
        if t is not None:
            now = at(t)
            assert now >= self.now, "tests move time forwards only"
            self.now = now
        return self.now

    def signal(self, device: str, state: str = "alarm", t: float | None = None,
               received: float | None = None, kind: str | None = None) -> Decisions:
        now = self._clock(t)
        rec = at(received) if received is not None else None
        return self._keep(self.engine.signal(Signal(device, state, kind=kind), now, rec))

    def reply(self, incident: str, decision: str, by: str, t: float | None = None) -> Decisions:
        return self._keep(self.engine.reply(incident, decision, by, self._clock(t)))

    def ack(self, responder: str, incident: str, status: str = "ack",
            t: float | None = None) -> Decisions:
        return self._keep(self.engine.ack(responder, incident, status, self._clock(t)))

    def close(self, incident: str, by: str, reason: str = "false alarm, reset",
              t: float | None = None) -> Decisions:
        return self._keep(self.engine.close(incident, by, reason, self._clock(t)))

    def tick(self, t: float) -> Decisions:
        return self._keep(self.engine.tick(self._clock(t)))

    def tick_ns(self, now_ns: int) -> Decisions:
        assert now_ns >= self.now
        self.now = now_ns
        return self._keep(self.engine.tick(now_ns))

    def of(self, incident: str) -> list[Step]:
        return [s for s in self.steps if s.incident == incident]


def stages(d: Decisions) -> list[str]:
    return [s.stage for s in d.steps]


def one(d: Decisions, stage: str) -> Step:
    found = [s for s in d.steps if s.stage == stage]
    assert len(found) == 1, f"expected one {stage}, got {stages(d)}"
    return found[0]


def publishes(d: Decisions, topic: str) -> list:
    return [p for p in d.publishes if p.topic == topic]


def payload(d: Decisions, topic: str) -> dict:
    found = publishes(d, topic)
    assert found, f"nothing published on {topic}: {[p.topic for p in d.publishes]}"
    return orjson.loads(found[-1].payload)


def start(sim: Sim, device: str = "smk-301", t: float = 0.0) -> str:
    """An alarm received at T0 + t; returns the new incident's id."""
    d = sim.signal(device, t=t, received=t)
    return one(d, "detected").incident


def escalated_and_paged(sim: Sim) -> tuple[str, Step]:
    """smk-301 at T0, nobody answers the confirm request: escalated, tier 1 paged."""
    inc = start(sim)
    d = sim.tick(30)
    return inc, one(d, "paged")


# ----------------------------------------------------------- detect, locate, queue


def test_first_signal_sets_t0_and_is_detected_then_located_at_once() -> None:
    sim = Sim()
    # received at T0, processed 4 ms later: T0 is the receive time
    d = sim.signal("smk-301", t=0.004, received=0.0)
    assert stages(d) == ["detected", "located", "queued"]
    det, loc = d.steps[0], d.steps[1]
    inc = det.incident
    assert inc.startswith("inc-") and not set(inc) & set("/+# ")  # a safe MQTT topic level
    assert all(s.t0_ns == T for s in d.steps)
    assert det.t_ns == T and det.elapsed_s == 0.0
    assert det.device == "smk-301" and det.tags()["device"] == "smk-301"
    assert det.zone == "b3-2f-east"
    assert loc.tags()["zone"] == "b3-2f-east"
    assert loc.fields["x"] == 3.0 and loc.fields["y"] == 4.5 and loc.fields["floor"] == 2
    assert loc.fields["error_m"] > 0
    assert 0 <= loc.elapsed_s <= 0.005  # located at once, far inside 10 s
    assert loc.elapsed_s <= SITE.sla.locate_s
    # the incident's retained state for everyone
    (pub,) = publishes(d, f"incident/{inc}")
    assert pub.retain
    state = orjson.loads(pub.payload)
    assert state["id"] == inc and state["state"] == "confirming"
    assert state["zone"] == "b3-2f-east" and state["floor"] == 2
    assert (state["x"], state["y"]) == (3.0, 4.5)
    assert state["t0"] == T / NS


def test_no_received_time_means_t0_is_processing_time() -> None:
    sim = Sim()
    d = sim.signal("smk-301", t=1.5)
    assert one(d, "detected").t0_ns == at(1.5) == one(d, "detected").t_ns


def test_confirm_request_goes_to_the_zone_worker_with_the_deadline() -> None:
    sim = Sim()
    d = sim.signal("smk-301", t=0.002, received=0.0)
    inc = one(d, "detected").incident
    queued = one(d, "queued")
    assert queued.responder == "w-07" and queued.tier == 0
    assert queued.fields["to"] == "w-07"
    assert queued.fields["deadline"] == (T + 30 * NS) / NS
    (req,) = publishes(d, f"confirm/{inc}")
    assert req.retain and req.payload
    body = orjson.loads(req.payload)
    assert body["incident"] == inc
    assert body["zone"] == "b3-2f-east"
    assert (body["x"], body["y"], body["floor"]) == (3.0, 4.5, 2)
    assert body["deadline"] == (T + 30 * NS) / NS  # T0 + confirm_s, unix seconds
    assert body["reply_topic"] == f"firegrid/taibai-demo/confirm/{inc}/reply"
    assert not d.pages  # nobody paged before a decision
    # the pending request is among the retained messages to republish after a reconnect
    assert any(p.topic == f"confirm/{inc}" and p.payload for p in sim.engine.retained())


def test_worker_in_building_1_gets_building_1_requests() -> None:
    sim = Sim()
    d = sim.signal("smk-1101", t=0)
    assert one(d, "queued").responder == "w-03"


# ------------------------------------------------------------------- confirm paths


def test_grid_worker_confirms_then_tier_1_is_paged() -> None:
    sim = Sim()
    inc = start(sim)
    d = sim.reply(inc, "confirm", "w-07", t=12)
    assert stages(d) == ["confirmed", "paged"]
    conf, paged = d.steps
    assert conf.fields["by"] == "w-07" and conf.responder == "w-07"
    assert conf.t_ns == at(12) and conf.elapsed_s == 12.0
    assert paged.responder == "guard-1" and paged.tier == 1 and paged.zone == "b3-2f-east"
    assert paged.tags()["responder"] == "guard-1" and paged.tags()["tier"] == "1"
    assert paged.tags()["zone"] == "b3-2f-east"
    assert paged.t_ns > conf.t_ns
    (page,) = d.pages
    assert page.responder == "guard-1" and page.incident == inc and page.tier == 1
    assert len(page.text) <= 80
    assert "Bldg 3 2F east flats" in page.text or "b3-2f-east" in page.text
    body = orjson.loads(page.to_json())
    assert body["incident"] == inc and body["tier"] == 1
    assert body["zone"] == "b3-2f-east" and body["text"] == page.text
    assert body["ack_topic"] == "firegrid/taibai-demo/page/guard-1/ack"
    # the confirm request is withdrawn: an empty retained message
    (cleared,) = publishes(d, f"confirm/{inc}")
    assert cleared.payload == b"" and cleared.retain
    assert payload(d, f"incident/{inc}")["state"] == "confirmed"
    assert "breach" not in stages(d)
    # nothing left to escalate at T0+30
    assert "escalated" not in stages(sim.tick(30))


@pytest.mark.parametrize("device", [d.id for d in SITE.devices])
def test_page_text_fits_a_pager_screen_and_names_the_zone(device: str) -> None:
    sim = Sim()
    inc = start(sim, device)
    d = sim.tick(99_999)  # a very late escalation: the longest T0+secs
    pages = [p for p in d.pages if p.incident == inc]
    assert pages
    zone = SITE.zone(one(d, "paged").zone)
    for page in pages:
        assert len(page.text) <= 80, page.text
        assert (zone.name or zone.id) in page.text or zone.id in page.text, page.text
        assert inc in page.text


def test_dismiss_pages_nobody_and_later_replies_are_refused() -> None:
    sim = Sim()
    inc = start(sim)
    d = sim.reply(inc, "dismiss", "w-07", t=9)
    assert stages(d) == ["dismissed"]
    assert d.steps[0].fields["by"] == "w-07" and d.steps[0].elapsed_s == 9.0
    assert not d.pages
    (cleared,) = publishes(d, f"confirm/{inc}")
    assert cleared.payload == b""
    assert payload(d, f"incident/{inc}")["state"] == "dismissed"
    with pytest.raises(Refused) as late:
        sim.reply(inc, "confirm", "w-07", t=10)
    assert late.value.kind == "late_reply"
    with pytest.raises(Refused):
        sim.ack("guard-1", inc, "ack", t=11)
    assert sim.engine.next_deadline_ns() is None
    assert not sim.tick(30) and not sim.tick(60)  # no escalation, no breach
    assert inc not in {i.id for i in sim.engine.open_incidents()}


def test_a_dismissal_or_a_close_records_its_cause() -> None:
    """gateway/false_alarms.py: BS 5839-1's categories, given by the person who ends it;
    ``firegrid audit`` counts false alarms by them. A cause never decides anything."""
    sim = Sim()
    inc = start(sim)
    with pytest.raises(Refused) as bad:  # a confirmation is no false alarm
        sim._keep(sim.engine.reply(inc, "confirm", "w-07", sim._clock(2), "unwanted"))
    assert bad.value.kind == "bad_payload"
    with pytest.raises(Refused):  # nor is a dismissal a fire
        sim._keep(sim.engine.reply(inc, "dismiss", "w-07", sim._clock(3), "fire"))
    assert [i.id for i in sim.engine.open_incidents()] == [inc]  # nothing happened
    d = sim._keep(sim.engine.reply(inc, "dismiss", "w-07", sim._clock(4), "unwanted"))
    assert d.steps[0].fields == {"by": "w-07", "cause": "unwanted"}
    assert payload(d, f"incident/{inc}")["cause"] == "unwanted"
    second = start(sim, "smk-301", t=10)
    sim.tick(40)  # escalated: nobody looked
    with pytest.raises(Refused):
        sim._keep(sim.engine.close(second, "w-07", "x", sim._clock(50), "toast"))
    d = sim._keep(sim.engine.close(second, "w-07", "card in the call point", sim._clock(60),
                                   "malicious"))
    assert d.steps[0].fields["cause"] == "malicious"
    again = Engine(sim.engine.site)  # from the journal, as after a restart
    again.restore(sim.steps)
    assert again.finished[second].cause == "malicious" and again.finished[inc].cause == "unwanted"


def test_manual_call_point_confirms_at_once_without_a_queue() -> None:
    sim = Sim()
    d = sim.signal("mcp-302", t=0.001, received=0.0)
    assert stages(d) == ["detected", "located", "confirmed", "paged"]
    inc = d.steps[0].incident
    conf = one(d, "confirmed")
    assert conf.fields["by"] == "auto" and conf.fields["rule"] == "manual_call_point"
    assert conf.elapsed_s < 0.01
    assert not publishes(d, f"confirm/{inc}")  # no confirm request at all
    assert [p.responder for p in d.pages] == ["guard-1"]
    assert payload(d, f"incident/{inc}")["state"] == "confirmed"


def test_two_detectors_in_one_zone_confirm_by_coincidence() -> None:
    sim = Sim()
    inc = start(sim, "smk-301")
    d = sim.signal("smk-302", t=5, received=5)
    assert stages(d) == ["detected", "located", "confirmed", "paged"]
    assert all(s.incident == inc for s in d.steps)  # 9.7 m apart: the same fire
    det = one(d, "detected")
    assert det.device == "smk-302" and det.elapsed_s == 5.0
    loc = one(d, "located")
    # refined from the alarm times (docs/locating.md): 5 s apart at a medium fire's
    # spread is nearly equidistant from smk-301 (3, 4.5) and smk-302 (12, 8), away from
    # the silent smk-303 (4, 9.5) and smk-304 (16.5, 3), inside the cell
    x, y = loc.fields["x"], loc.fields["y"]
    assert 3.0 < x < 12.0 and 3.0 < y < 8.0
    assert abs(math.hypot(x - 3.0, y - 4.5) - math.hypot(x - 12.0, y - 8.0)) < 2.0
    assert math.hypot(x - 4.0, y - 9.5) > 4.0 and math.hypot(x - 16.5, y - 3.0) > 4.0
    assert loc.fields["method"] == "lsq" and loc.fields["detectors"] == 2
    conf = one(d, "confirmed")
    assert conf.fields["rule"] == "coincidence" and conf.fields["by"] == "auto"
    assert conf.elapsed_s == pytest.approx(5.0)
    (cleared,) = publishes(d, f"confirm/{inc}")
    assert cleared.payload == b""
    assert len(sim.engine.open_incidents()) == 1


def test_incident_state_lists_the_cells_in_alarm_in_order() -> None:
    """The duty room sees where smoke has been detected, cell by cell, first alarm first."""
    sim = Sim()
    inc = start(sim, "smk-301")
    sim.signal("smk-302", t=5, received=5)
    sim.signal("cam-01", t=8, received=8)  # a camera sees into other cells: not counted
    sim.signal("smk-304", t=12, received=12)
    d = sim.signal("smk-311", t=70, received=70)  # the canteen kitchen next door
    det = one(d, "detected")
    assert det.incident == inc
    # the audit record says where the detector was, the zone tag where the fire is
    assert det.fields["cell"] == "b3-2f-kitchen" and det.zone == "b3-2f-east"
    state = payload(d, f"incident/{inc}")
    t0 = state["t0"]
    assert [(c["zone"], c["floor"], c["devices"], round(c["first"] - t0, 3))
            for c in state["cells"]] == [("b3-2f-east", 2, 3, 0.0), ("b3-2f-kitchen", 2, 1, 70.0)]
    assert state["zone"] == "b3-2f-east"  # the position stays with the fire's cell
    retained = [p for p in sim.engine.retained() if p.topic == f"incident/{inc}"]
    assert orjson.loads(retained[0].payload)["cells"] == state["cells"]


def test_the_same_detector_twice_is_not_coincidence() -> None:
    sim = Sim()
    inc = start(sim, "smk-301")
    sim.signal("smk-301", "clear", t=2)
    d = sim.signal("smk-301", t=4, received=4)
    assert not d.steps  # already counted in this incident
    assert sim.engine.incidents[inc].state == "confirming"


def test_kitchen_asks_a_human_even_for_two_detectors_but_not_for_a_call_point() -> None:
    sim = Sim()
    inc = start(sim, "smk-311")  # canteen kitchen, ask_human: true
    d = sim.signal("heat-312", t=3, received=3)
    assert stages(d) == ["detected", "located"]
    assert one(d, "detected").incident == inc
    assert sim.engine.incidents[inc].state == "confirming"
    assert not d.pages
    d = sim.signal("mcp-302", t=6, received=6)  # somebody pulls the call point next door
    assert one(d, "confirmed").fields["rule"] == "manual_call_point"
    assert one(d, "confirmed").incident == inc
    assert [p.responder for p in d.pages] == ["guard-1"]


# ------------------------------------------------------------------ escalation


def test_silence_escalates_exactly_at_the_confirm_deadline() -> None:
    sim = Sim()
    inc = start(sim)
    assert sim.engine.next_deadline_ns() == at(30)
    assert not sim.tick(29.999)
    assert not sim.tick_ns(at(30) - 1)
    d = sim.tick(30)
    assert stages(d) == ["escalated", "paged"]
    esc = d.steps[0]
    assert esc.t_ns == at(30) and esc.elapsed_s == 30.0
    assert esc.responder is None
    assert one(d, "paged").responder == "guard-1"
    assert "breach" not in stages(d)  # an escalation meets the confirm target
    (cleared,) = publishes(d, f"confirm/{inc}")
    assert cleared.payload == b""
    state = payload(d, f"incident/{inc}")
    assert state["state"] == "confirmed" and state["unverified"] is True
    assert not sim.tick(30)  # nothing twice


def test_late_reply_after_escalation_is_refused() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    with pytest.raises(Refused) as exc:
        sim.reply(inc, "dismiss", "w-07", t=31)
    assert exc.value.kind == "late_reply"


def test_silent_tier_is_unanswered_and_the_next_tier_is_paged() -> None:
    sim = Sim()
    inc, paged1 = escalated_and_paged(sim)
    deadline = paged1.t_ns + 15 * NS  # tier 1 ack_timeout_s
    assert sim.engine.next_deadline_ns() == deadline
    assert not sim.tick_ns(deadline - 1)
    d = sim.tick_ns(deadline)
    assert stages(d) == ["unanswered", "paged"]
    un, paged2 = d.steps
    assert un.tier == 1 and un.t_ns == deadline
    assert un.fields["responders"] == "guard-1"
    assert paged2.responder == "squad-3" and paged2.tier == 2
    assert [(p.responder, p.tier) for p in d.pages] == [("squad-3", 2)]
    assert sim.engine.next_deadline_ns() == at(60)  # in place comes first now
    sim.tick(60)
    d = sim.tick_ns(paged2.t_ns + 20 * NS)  # tier 2 ack_timeout_s
    assert stages(d) == ["unanswered", "paged"]
    assert (d.steps[1].responder, d.steps[1].tier) == ("station-1", 3)
    assert all(s.incident == inc for s in d.steps)


def test_top_tier_unanswered_is_paged_again_never_dropped() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    repeats = []
    for _ in range(12):
        nxt = sim.engine.next_deadline_ns()
        assert nxt is not None, "an unanswered fire alarm is never dropped"
        d = sim.tick_ns(nxt)
        repeats += [s for s in d.steps if s.stage == "paged"]
    tiers = [s.tier for s in repeats]
    assert tiers[:2] == [2, 3]
    assert set(tiers[2:]) == {3} and len(tiers) >= 5
    again = [s for s in repeats if s.tier == 3][1:]
    assert [s.fields["repeat"] for s in again] == list(range(1, len(again) + 1))
    assert all(s.responder == "station-1" for s in again)
    # each repeat waits the top tier's ack timeout again (plus the 1 ns that orders the
    # `paged` step after its `unanswered` step)
    gaps = [b.t_ns - a.t_ns for a, b in pairwise(again)]
    assert all(30 * NS <= g < 30 * NS + 1000 for g in gaps), gaps
    # and the station can still answer
    d = sim.ack("station-1", inc, "ack")
    assert stages(d) == ["acked"]


def test_ack_stops_the_escalation() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    d = sim.ack("guard-1", inc, "ack", t=35)
    assert stages(d) == ["acked"]
    acked = d.steps[0]
    assert acked.responder == "guard-1" and acked.tier == 1 and acked.elapsed_s == 35.0
    assert acked.fields["status"] == "ack"
    assert payload(d, f"incident/{inc}")["acked"] == ["guard-1"]
    assert sim.engine.next_deadline_ns() == at(60)  # only the in-place target remains
    for t in (45, 46, 50, 59):
        assert not {"unanswered", "paged"} & set(stages(sim.tick(t)))


def test_decline_by_the_only_member_pages_the_next_tier_at_once() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    d = sim.ack("guard-1", inc, "decline", t=33)
    assert stages(d) == ["declined", "paged"]
    assert d.steps[0].responder == "guard-1" and d.steps[0].tier == 1
    assert (d.steps[1].responder, d.steps[1].tier) == ("squad-3", 2)
    assert d.steps[1].t_ns - at(33) < 1000  # at once, not at the tier 1 timeout
    assert sim.engine.next_deadline_ns() == d.steps[1].t_ns + 20 * NS


def test_decline_by_all_of_a_tier_pages_the_next_tier() -> None:
    sim = Sim(TWO_GUARDS)
    inc = start(sim)
    d = sim.tick(30)
    assert sorted(p.responder for p in d.pages) == ["guard-1", "guard-2"]
    d = sim.ack("guard-1", inc, "decline", t=32)
    assert stages(d) == ["declined"]  # guard-2 may still come
    d = sim.ack("guard-2", inc, "decline", t=34)
    assert stages(d) == ["declined", "paged"]
    assert (d.steps[1].responder, d.steps[1].tier) == ("squad-3", 2)


def test_on_scene_without_ack_records_an_ack_first() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    d = sim.ack("guard-1", inc, "on_scene", t=50)
    assert stages(d) == ["acked", "on_scene"]
    acked, there = d.steps
    assert acked.fields["status"] == "on_scene"
    assert there.responder == "guard-1" and there.tier == 1
    assert there.elapsed_s == pytest.approx(50.0)
    assert there.t_ns > acked.t_ns
    assert payload(d, f"incident/{inc}")["on_scene"] == ["guard-1"]
    assert sim.engine.next_deadline_ns() is None  # in place met, nobody to wait on
    assert not sim.tick(60)  # no in-place breach
    assert not sim.tick(600)


def test_on_scene_after_ack_is_recorded_once() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    sim.ack("guard-1", inc, "ack", t=33)
    d = sim.ack("guard-1", inc, "on_scene", t=48)
    assert stages(d) == ["on_scene"]
    with pytest.raises(Refused) as dup:
        sim.ack("guard-1", inc, "on_scene", t=49)
    assert dup.value.kind == "duplicate"


def test_anyone_known_may_report_on_scene_even_unpaged() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    d = sim.ack("w-07", inc, "on_scene", t=40)  # the grid worker got there first
    assert stages(d) == ["acked", "on_scene"]
    assert d.steps[1].responder == "w-07" and d.steps[1].tier == 0


# ----------------------------------------------------------------- breaches, close


def test_in_place_breach_exactly_at_t0_plus_60_and_only_once() -> None:
    sim = Sim()
    inc = start(sim)
    sim.reply(inc, "confirm", "w-07", t=4)
    sim.ack("guard-1", inc, "ack", t=8)  # acked but never arrives
    assert sim.engine.next_deadline_ns() == at(60)
    assert not sim.tick_ns(at(60) - 1)
    d = sim.tick(60)
    assert stages(d) == ["breach"]
    br = d.steps[0]
    assert br.fields["sla"] == "in_place" and br.t_ns == at(60) and br.elapsed_s == 60.0
    assert br.zone == "b3-2f-east"
    assert payload(d, f"incident/{inc}")["breaches"] == ["in_place"]
    for t in (60.5, 61, 90, 3600):
        assert "breach" not in stages(sim.tick(t))
    d = sim.ack("guard-1", inc, "on_scene", t=3700)  # arrives late: recorded, no new breach
    assert stages(d) == ["on_scene"]
    assert [s.fields["sla"] for s in sim.of(inc) if s.stage == "breach"] == ["in_place"]


def test_late_reply_confirms_with_a_confirm_breach() -> None:
    """If the clock jumps past the deadline before the reply is read, the breach is recorded."""
    sim = Sim()
    inc = start(sim)
    d = sim.reply(inc, "confirm", "w-07", t=31)
    assert stages(d)[:2] == ["confirmed", "breach"]
    assert one(d, "breach").fields["sla"] == "confirm"


def test_a_signal_processed_after_the_locate_target_records_a_locate_breach() -> None:
    """Received at T0 but only processed 12 s later (a backlog): located at T0+12 > 10 s.

    The engine records a breach the moment a target passes unmet (as it does for a late
    confirmation); the locate target passed unmet here, so a `breach` (sla=locate) belongs
    in the audit trail next to the late `located`.
    """
    sim = Sim()
    d = sim.signal("smk-301", t=12, received=0)
    assert one(d, "detected").t_ns == T
    assert one(d, "located").elapsed_s == pytest.approx(12.0)
    breaches = [s.fields["sla"] for s in d.steps if s.stage == "breach"]
    assert breaches == ["locate"], stages(d)


def test_a_detector_joining_a_confirmed_incident_pages_nobody_again() -> None:
    sim = Sim()
    inc = start(sim, "mcp-302")
    d = sim.signal("smk-302", t=2, received=2)  # 9.2 m away
    assert stages(d) == ["detected", "located"]
    assert one(d, "detected").incident == inc
    assert not d.pages
    assert not publishes(d, f"confirm/{inc}")


def test_next_deadline_is_the_earliest_over_all_open_incidents() -> None:
    sim = Sim()
    a = start(sim, "smk-301")  # building 3, T0
    b = start(sim, "smk-1101", t=10)  # building 1, T0+10
    assert sim.engine.next_deadline_ns() == at(30)
    d = sim.tick(30)
    assert {s.incident for s in d.steps} == {a}
    assert sim.engine.next_deadline_ns() == at(40)  # b's confirm deadline before a's tier 1
    d = sim.tick(40)
    assert one(d, "escalated").incident == b
    assert one(d, "escalated").elapsed_s == 30.0


def test_close_records_closed_and_ends_everything() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    d = sim.close(inc, "w-07", "burnt toast, panel reset", t=40)
    assert stages(d) == ["closed"]
    closed = d.steps[0]
    assert closed.fields["by"] == "w-07" and closed.fields["reason"] == "burnt toast, panel reset"
    assert closed.responder == "w-07" and closed.elapsed_s == 40.0
    assert payload(d, f"incident/{inc}")["state"] == "closed"
    assert inc not in {i.id for i in sim.engine.open_incidents()}
    assert sim.engine.finished[inc].state == "closed"
    assert sim.engine.next_deadline_ns() is None
    assert not sim.tick(45) and not sim.tick(60)  # no unanswered, no in-place breach
    for status in ("ack", "on_scene", "decline"):
        with pytest.raises(Refused) as late:
            sim.ack("guard-1", inc, status, t=61)
        assert late.value.kind == "late_ack"
    with pytest.raises(Refused):
        sim.close(inc, "w-07", t=62)
    assert sim.engine.open_incidents() == []


def test_an_alarm_after_close_opens_a_new_incident() -> None:
    sim = Sim()
    first = start(sim)
    sim.close(first, "w-07", t=5)
    second = start(sim, "smk-301", t=6)
    assert second != first


def test_the_receipt_names_the_alarm_and_a_resent_alarm_opens_nothing() -> None:
    """docs/mqtt.md, alarm receipts: device/<id> carries the alarm's own ts (alarm_ts);
    the same alarm sent again (a broker crash lost the receipt) is answered with the
    receipt and changes nothing, even once its incident is closed; a newer one opens."""
    sim = Sim()
    ts = 1_699_999_999.25  # the device's clock, a little behind the gateway's
    d = sim._keep(sim.engine.signal(Signal("smk-301", "alarm", ts=ts), at(0)))
    assert d.repeated == []
    inc = one(d, "detected").incident
    body = payload(d, "device/smk-301")
    assert body["state"] == "alarm" and body["alarm_ts"] == ts
    since = body["since"]
    sim.close(inc, "w-07", t=5)
    d = sim._keep(sim.engine.signal(Signal("smk-301", "alarm", ts=ts), at(6)))
    assert d.steps == [] and sim.engine.open_incidents() == []
    assert d.repeated == ["smk-301"]  # the audit marks it a repeat (docs/audit.md)
    again = payload(d, "device/smk-301")
    assert again["alarm_ts"] == ts and again["since"] == since  # the same state, re-sent
    d = sim._keep(sim.engine.signal(Signal("smk-301", "alarm", ts=ts + 10), at(10)))
    assert d.repeated == []
    assert one(d, "detected").incident != inc
    assert payload(d, "device/smk-301")["alarm_ts"] == ts + 10


def test_a_receipt_is_published_even_when_the_state_stays_alarm() -> None:
    """A second alarm from a device already in alarm (its clear was lost) still gets its
    receipt, or the device would send it forever."""
    sim = Sim()
    sim._keep(sim.engine.signal(Signal("smk-301", "alarm", ts=100.0), at(0)))
    d = sim._keep(sim.engine.signal(Signal("smk-301", "alarm", ts=200.0), at(3)))
    assert payload(d, "device/smk-301")["alarm_ts"] == 200.0
    assert [ds.state for ds in d.devices] == ["alarm"]
    d = sim._keep(sim.engine.signal(Signal("smk-301", "alarm"), at(4)))  # no ts: no receipt
    assert publishes(d, "device/smk-301") == []


# ------------------------------------------------------------------ refused inputs


def _refused(fn, *args) -> Refused:
    with pytest.raises(Refused) as exc:
        fn(*args)
    assert exc.value.reason
    return exc.value


def test_refused_inputs_name_their_kind_and_change_nothing() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    e = sim.engine
    before = (e.next_deadline_ns(), [p.payload for p in e.retained()], len(e.incidents))
    now = at(31)
    cases = [
        ("unknown_device", e.signal, Signal("smk-999", "alarm"), now),
        ("kind_mismatch", e.signal, Signal("smk-301", "alarm", kind="heat"), now),
        ("unknown_incident", e.reply, "inc-19990101-0001", "confirm", "w-07", now),
        ("unknown_incident", e.ack, "guard-1", "inc-19990101-0001", "ack", now),
        ("unknown_incident", e.close, "inc-19990101-0001", "w-07", "x", now),
        ("unknown_responder", e.ack, "stranger", inc, "ack", now),
        ("unknown_responder", e.close, inc, "stranger", "x", now),
        ("not_paged", e.ack, "squad-3", inc, "ack", now),
        ("not_paged", e.ack, "squad-3", inc, "decline", now),
        ("late_reply", e.reply, inc, "confirm", "w-07", now),
    ]
    for kind, fn, *args in cases:
        assert _refused(fn, *args).kind == kind, (kind, args)
    assert (e.next_deadline_ns(), [p.payload for p in e.retained()], len(e.incidents)) == before


def test_refused_reply_inputs() -> None:
    sim = Sim()
    inc = start(sim)
    e = sim.engine
    assert _refused(e.reply, inc, "confirm", "stranger", at(1)).kind == "unknown_responder"
    assert _refused(e.reply, inc, "maybe", "w-07", at(1)).kind == "bad_payload"
    assert e.incidents[inc].state == "confirming"


def test_duplicate_answers_are_refused() -> None:
    sim = Sim()
    inc, _ = escalated_and_paged(sim)
    sim.ack("guard-1", inc, "ack", t=31)
    e = sim.engine
    assert _refused(e.ack, "guard-1", inc, "ack", at(32)).kind == "duplicate"
    assert _refused(e.ack, "guard-1", inc, "decline", at(32)).kind == "duplicate"
    sim2 = Sim()
    inc2, _ = escalated_and_paged(sim2)
    sim2.ack("guard-1", inc2, "decline", t=31)
    assert _refused(sim2.engine.ack, "guard-1", inc2, "decline", at(32)).kind == "duplicate"


def test_test_signals_change_nothing() -> None:
    sim = Sim()
    assert not sim.signal("smk-301", "test", t=0)
    assert sim.engine.incidents == {}


# ---------------------------------------------------------------- device states


def test_device_states_are_published_retained() -> None:
    sim = Sim()
    d = sim.signal("smk-301", t=1)
    (pub,) = publishes(d, "device/smk-301")
    assert pub.retain
    body = orjson.loads(pub.payload)
    assert body["state"] == "alarm" and body["since"] == at(1) / NS
    assert [(s.device, s.state) for s in d.devices] == [("smk-301", "alarm")]
    # the same state again publishes nothing new
    assert not publishes(sim.signal("smk-301", t=2), "device/smk-301")
    d = sim.signal("smk-301", "clear", t=3)
    assert payload(d, "device/smk-301")["state"] == "normal"
    assert payload(d, "device/smk-301")["since"] == at(3) / NS
    assert not publishes(d, "trouble/smk-301")  # it was never in trouble


def test_a_clear_never_closes_the_incident() -> None:
    sim = Sim()
    inc = start(sim)
    d = sim.signal("smk-301", "clear", t=5)
    assert not d.steps
    assert sim.engine.incidents[inc].state == "confirming"
    assert stages(sim.tick(30))[0] == "escalated"  # the fire is still treated as one
    assert sim.engine.incidents[inc].active


def test_fault_raises_trouble_and_normal_resolves_it() -> None:
    sim = Sim()
    d = sim.signal("smk-102", "fault", t=1)
    assert not d.steps  # a fault is not a fire
    assert payload(d, "device/smk-102")["state"] == "fault"
    (trouble,) = publishes(d, "trouble/smk-102")
    assert trouble.retain
    body = orjson.loads(trouble.payload)
    assert body == {"device": "smk-102", "trouble": "fault", "troubles": ["fault"],
                    "since": at(1) / NS}
    d = sim.signal("smk-102", "clear", t=9)
    assert payload(d, "device/smk-102")["state"] == "normal"
    (resolved,) = publishes(d, "trouble/smk-102")
    assert resolved.payload == b"" and resolved.retain


def test_retained_covers_device_states_and_open_trouble() -> None:
    """After a reconnect the gateway republishes what it owns, trouble included."""
    sim = Sim()
    sim.signal("smk-102", "fault", t=1)
    sim.signal("smk-301", t=2)
    topics = {p.topic: p for p in sim.engine.retained()}
    assert orjson.loads(topics["device/smk-102"].payload)["state"] == "fault"
    assert orjson.loads(topics["device/smk-301"].payload)["state"] == "alarm"
    assert all(p.retain for p in topics.values())
    assert "trouble/smk-102" in topics, "an open trouble is a retained message the gateway owns"


# ------------------------------------------------------------------- clustering


def test_fires_in_different_buildings_are_different_incidents() -> None:
    sim = Sim()
    a = start(sim, "smk-301")  # building 3
    d = sim.signal("smk-1201", t=1, received=1)  # building 1
    b = one(d, "detected").incident
    assert a != b
    assert one(d, "detected").fields["counter"] == 2
    assert {a, b} == {i.id for i in sim.engine.open_incidents()}
    assert sim.engine.incidents[b].zone == "b1-2f-flats"


def test_alarms_within_20_m_on_one_floor_join_and_farther_do_not() -> None:
    sim = Sim()
    a = start(sim, "smk-1201")  # (48, 6), floor 2
    d = sim.signal("smk-1202", t=2, received=2)  # (62, 6): 14 m
    assert one(d, "detected").incident == a
    assert one(d, "detected").device == "smk-1202"
    # mcp-1203 at (69, 1) is 7.1 m from smk-1202: it joins through its nearest neighbour
    d = sim.signal("mcp-1203", t=3, received=3)
    assert one(d, "detected").incident == a
    assert [s.device for s in sim.of(a) if s.stage == "detected"] == [
        "smk-1201", "smk-1202", "mcp-1203"]
    assert len(sim.engine.open_incidents()) == 1


def test_alarm_more_than_20_m_away_is_a_new_incident() -> None:
    sim = Sim()
    a = start(sim, "smk-1201")  # (48, 6)
    b = start(sim, "mcp-1203", t=1)  # (69, 1): 21.6 m away on the same floor
    assert a != b and len(sim.engine.open_incidents()) == 2


def test_steps_of_an_incident_have_strictly_increasing_times() -> None:
    sim = Sim()
    # everything at the same instant: the audit must still keep one point per step
    inc = start(sim, "smk-301")
    sim.signal("smk-302", t=0, received=0)
    sim.ack("guard-1", inc, "decline", t=0)
    sim.ack("squad-3", inc, "on_scene", t=0)
    sim.close(inc, "w-07", t=0)
    times = [s.t_ns for s in sim.of(inc)]
    assert len(times) >= 8
    assert all(b > a for a, b in pairwise(times))
    assert all(s.elapsed_s >= 0 for s in sim.of(inc))


# ---------------------------------------------------------------------- restore


def _journal(steps: list[Step]) -> list[Step]:
    """Steps as they come back from the journal: through JSON, with sequence numbers."""
    return [Step.from_json(s.to_json(), seq=i) for i, s in enumerate(steps, 1)]


def _dump(d: Decisions) -> tuple:
    return ([s.to_json() for s in d.steps], [(p.topic, p.payload, p.retain) for p in d.publishes],
            [p.to_json() for p in d.pages], d.devices)


def test_restore_continues_a_half_finished_incident_identically() -> None:
    live = Sim()
    a, _ = escalated_and_paged(live)  # escalated at 30, guard-1 paged
    b = start(live, "smk-1101", t=31)  # a second, queued incident in building 1
    live.ack("guard-1", a, "decline", t=33)  # squad-3 paged at once
    # ---- the gateway dies here; a new process replays the journal
    fresh = Sim()
    fresh.now = live.now
    fresh.engine.restore(_journal(live.steps), live.engine.device_states.values())
    assert fresh.engine.next_deadline_ns() == live.engine.next_deadline_ns()
    assert {i.id for i in fresh.engine.open_incidents()} == {a, b}
    assert sorted((p.topic, p.payload) for p in fresh.engine.retained()) == sorted(
        (p.topic, p.payload) for p in live.engine.retained())
    # nothing is repeated: no second escalation, page or request at the restart instant
    assert not fresh.engine.tick(live.now)
    assert not fresh.engine.signal(Signal("smk-301", "alarm"), at(34)).steps
    live.signal("smk-301", t=34)
    # ---- both continue with the same inputs and decide the same things
    script = [
        ("tick", 40.0), ("tick", 53.0),  # squad-3 silent at 53.000000001
        ("tick_next",), ("tick_next",), ("tick", 60.0),
        # the grid worker answers before the second detector: once smk-1201 joins, the two
        # detectors of b (two floors) confirm it by coincidence (EN 54-2 type C)
        ("reply", b, "confirm", "w-03", 60.5),
        ("signal", "smk-1201", 61.0),  # floor above smk-1101: joins b
        ("signal", "mcp-1203", 62.0),  # 21.6 m from everything: a new incident
        ("ack", "station-1", a, "on_scene", 70.0), ("tick_next",), ("tick", 200.0),
        ("close", a, "w-07", 300.0),
    ]
    before = list(live.steps)
    for sim in (live, fresh):
        sim.steps.clear()
    for step in script:
        outs = []
        for sim in (live, fresh):
            op = step[0]
            if op == "tick":
                d = sim.tick(step[1])
            elif op == "tick_next":
                nxt = sim.engine.next_deadline_ns()
                assert nxt is not None
                d = sim.tick_ns(max(nxt, sim.now))
            elif op == "signal":
                d = sim.signal(step[1], t=step[2], received=step[2])
            elif op == "reply":
                d = sim.reply(step[1], step[2], step[3], t=step[4])
            elif op == "ack":
                d = sim.ack(step[1], step[2], step[3], t=step[4])
            else:
                d = sim.close(step[1], step[2], t=step[3])
            outs.append(_dump(d))
            assert sim.engine.next_deadline_ns() == live.engine.next_deadline_ns()
        assert outs[0] == outs[1], step
    # the escalation went on where it stopped: squad-3 unanswered, then station-1
    assert ("unanswered", 2) in [(s.stage, s.tier) for s in fresh.steps]
    assert ("paged", "station-1") in [(s.stage, s.responder) for s in fresh.steps]
    # new incidents continue the counter: ids stay unique
    joined = [s for s in fresh.steps if s.stage == "detected" and s.device == "smk-1201"]
    assert [s.incident for s in joined] == [b]
    new = [s for s in fresh.steps if s.stage == "detected" and s.incident not in (a, b)]
    assert [(s.device, s.fields["counter"]) for s in new] == [("mcp-1203", 3)]
    # no step was recorded twice across the restart
    seen = [(s.incident, s.stage, s.responder, s.tier, s.device, s.t_ns)
            for s in [*before, *fresh.steps]]
    assert len(seen) == len(set(seen))


def test_restore_does_not_repeat_steps_and_keeps_breaches_once() -> None:
    live = Sim()
    a, _ = escalated_and_paged(live)
    live.ack("guard-1", a, "ack", t=31)
    live.tick(60)  # in-place breach
    fresh = Engine(SITE)
    fresh.restore(_journal(live.steps))
    assert fresh.next_deadline_ns() is None
    assert live.engine.next_deadline_ns() is None
    assert not fresh.tick(at(61)) and not fresh.tick(at(600))
    d = fresh.ack("guard-1", a, "on_scene", at(620))
    assert stages(d) == ["on_scene"]  # acked already before the restart
    with pytest.raises(Refused):
        fresh.ack("guard-1", a, "ack", at(621))


def test_restore_continues_the_incident_counter() -> None:
    live = Sim()
    a = start(live)
    b = start(live, "smk-1101", t=1)
    live.close(a, "w-07", t=2)
    live.close(b, "w-03", t=2)
    # closed incidents pruned from the journal: only the counter survives
    fresh = Engine(SITE)
    fresh.restore([], counter=live.engine.counter)
    d = fresh.signal(Signal("smk-301", "alarm"), at(3))
    assert one(d, "detected").fields["counter"] == 3
    assert fresh.counter == 3
    # and with the steps: the counter comes from them
    fresh2 = Engine(SITE)
    fresh2.restore(_journal(live.steps))
    d = fresh2.signal(Signal("smk-301", "alarm"), at(3))
    assert one(d, "detected").incident not in (a, b)
    assert one(d, "detected").fields["counter"] == 3


# ----------------------------------------------- deadlines are consumed by tick


def test_deadline_is_consumed_when_someone_is_on_scene_before_the_page() -> None:
    """The grid worker arrives, then confirms: tier 1 is paged; its timeout must not stick.

    After tick(t) the next deadline must be later than t, or the runtime (which waits
    ``next_deadline_ns() - now``) spins with a zero timeout, republishing the incident.
    """
    sim = Sim()
    inc = start(sim)
    assert stages(sim.ack("w-07", inc, "on_scene", t=5)) == ["acked", "on_scene"]
    d = sim.reply(inc, "confirm", "w-07", t=8)
    paged = one(d, "paged")
    deadline = paged.t_ns + 15 * NS
    sim.tick_ns(deadline)
    nxt = sim.engine.next_deadline_ns()
    assert nxt is None or nxt > deadline, "tier deadline still pending after it was ticked"
    d = sim.tick_ns(deadline + NS)
    assert not d, f"a tick with nothing due decided {[p.topic for p in d.publishes]}"


# -------------------------------------------------------------------- properties

RESPONDERS = [r.id for r in TWO_GUARDS.responders] + ["stranger"]
DEVICES = [d.id for d in SITE.devices] + ["smk-999"]
# mostly seconds apart (several inputs inside one confirm window), sometimes long silences
GAPS = st.one_of(st.integers(0, 4 * NS), st.integers(0, 40 * NS),
                 st.sampled_from([0, 1, NS, 15 * NS, 30 * NS]))
SIGNALS = st.tuples(st.just("signal"), st.sampled_from(DEVICES),
                    st.sampled_from(["alarm", "alarm", *STATES]),
                    st.sampled_from([None, None, None, "smoke"]), st.integers(0, 50_000_000))
ACTIONS = st.one_of(
    SIGNALS, SIGNALS,
    st.tuples(st.just("reply"), st.integers(0, 6),
              st.sampled_from(["confirm", "dismiss", "confirm", "maybe"]),
              st.sampled_from(RESPONDERS)),
    st.tuples(st.just("ack"), st.sampled_from(RESPONDERS), st.integers(0, 6),
              st.sampled_from(["ack", "on_scene", "decline"])),
    st.tuples(st.just("close"), st.integers(0, 6), st.sampled_from(RESPONDERS)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("tick_next")),
)
FIRST_ALARM = st.tuples(st.just(0), st.tuples(
    st.just("signal"), st.sampled_from(DEVICES[:-1]), st.just("alarm"), st.none(), st.just(0)))
SCRIPTS = st.builds(lambda first, rest: [first, *rest], FIRST_ALARM,
                    st.lists(st.tuples(GAPS, ACTIONS), max_size=40))
SITES = {"example": SITE, "two-guards": TWO_GUARDS}


def _play(site: Site, script, on_tick=None) -> tuple[Engine, list[Step], int]:
    e = Engine(site)
    steps: list[Step] = []
    ids: list[str] = []
    now = T
    for gap, act in script:
        now += gap
        op = act[0]

        def pick(i: int) -> str:
            return ids[i % (len(ids) + 1)] if i % (len(ids) + 1) < len(ids) else "inc-none"

        try:
            if op == "signal":
                _, dev, state, kind, lag = act
                d = e.signal(Signal(dev, state, kind=kind), now, now - min(lag, gap))
            elif op == "reply":
                d = e.reply(pick(act[1]), act[2], act[3], now)
            elif op == "ack":
                d = e.ack(act[1], pick(act[2]), act[3], now)
            elif op == "close":
                d = e.close(pick(act[1]), act[2], "done", now)
            else:
                if op == "tick_next":
                    nxt = e.next_deadline_ns()
                    now = max(now, nxt) if nxt is not None else now
                d = e.tick(now)
                if on_tick is not None:
                    on_tick(e, now)
        except Refused:
            continue
        for s in d.steps:
            if s.stage == "detected" and s.incident not in ids:
                ids.append(s.incident)
        steps.extend(d.steps)
    return e, steps, now


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(site_name=st.sampled_from(sorted(SITES)), script=SCRIPTS)
def test_property_engine_invariants_and_restore(site_name: str, script) -> None:
    site = SITES[site_name]
    e, steps, now = _play(site, script)  # anything but Refused propagates and fails
    per: dict[str, list[Step]] = defaultdict(list)
    for s in steps:
        per[s.incident].append(s)
    assert set(per) == set(e.incidents) | set(e.finished)
    for inc, ss in per.items():
        assert ss[0].stage == "detected", (inc, [s.stage for s in ss])
        assert all(s.elapsed_s >= 0 for s in ss)
        assert all(s.t0_ns == ss[0].t0_ns for s in ss)
        assert all(b.t_ns > a.t_ns for a, b in pairwise(ss))
        assert [s.stage for s in ss].count("escalated") + [
            s.stage for s in ss].count("confirmed") <= 1
        assert [s.fields.get("sla") for s in ss if s.stage == "breach"].count("in_place") <= 1
        if inc in e.incidents and e.incidents[inc].state == "confirmed":
            assert any(s.stage == "paged" for s in ss), "a confirmed fire pages someone"
    fresh = Engine(site)
    fresh.restore(_journal(steps), e.device_states.values())
    assert fresh.next_deadline_ns() == e.next_deadline_ns()
    assert {i.id for i in fresh.open_incidents()} == {i.id for i in e.open_incidents()}
    assert {i: x.public(site.site) for i, x in fresh.incidents.items()} == {
        i: x.public(site.site) for i, x in e.incidents.items()}
    assert fresh.counter == e.counter
    later = now + 100 * NS
    assert _dump(fresh.tick(later)) == _dump(e.tick(later))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(site_name=st.sampled_from(sorted(SITES)), script=SCRIPTS)
@example(site_name="example", script=[  # on scene before the confirmation, then tier 1 is paged
    (0, ("signal", "smk-301", "alarm", None, 0)),
    (5 * NS, ("ack", "w-07", 0, "on_scene")),
    (3 * NS, ("reply", 0, "confirm", "w-07")),
    (0, ("tick_next",)),
])
def test_property_tick_consumes_every_due_deadline(site_name: str, script) -> None:
    site = SITES[site_name]

    def check(e: Engine, now: int) -> None:
        nxt = e.next_deadline_ns()
        assert nxt is None or nxt > now, f"deadline {nxt - now} ns in the past after tick"

    _play(site, script, on_tick=check)


def test_forged_and_misdirected_answers_are_refused_and_recorded() -> None:
    """Only the zone's grid worker decides, only a paged responder acks; the rest is evidence."""
    e = Engine(SITE)
    d = e.signal(Signal("smk-301", "alarm"), at(0))  # zone b3-2f-east, worker w-07
    inc = d.steps[0].incident
    forged = _refused(e.reply, inc, "dismiss", "w-03", at(1))  # another cell's worker
    assert forged.kind == "not_confirmer"
    (step,) = forged.decisions.steps
    assert step.stage == "refused" and step.responder == "w-03" and step.tier == 0
    assert step.fields == {"reason": "not_confirmer", "input": "reply:dismiss", "from": "w-03"}
    assert e.incidents[inc].state == "confirming", "a refused dismissal changes nothing"
    stranger = _refused(e.ack, "mallory", inc, "ack", at(2))
    (step,) = stranger.decisions.steps
    assert step.responder is None and step.fields["from"] == "mallory"
    assert step.fields["reason"] == "unknown_responder"
    not_paged = _refused(e.ack, "squad-3", inc, "ack", at(3))
    assert not_paged.kind == "not_paged" and not_paged.decisions.steps[0].tier == 2
    e.reply(inc, "confirm", "w-07", at(4))
    late = _refused(e.reply, inc, "dismiss", "w-07", at(5))
    assert late.kind == "late_reply" and late.decisions.steps[0].stage == "refused"
    e.ack("guard-1", inc, "ack", at(6))
    duplicate = _refused(e.ack, "guard-1", inc, "ack", at(7))
    assert duplicate.decisions is None, "a plain repeat is not evidence of anything"


def test_a_refused_cause_is_named_without_its_repr() -> None:
    """A cause nested a thousand lists deep has no repr (RecursionError): the refusal
    names its type, and the engine is unchanged (found by bench/fuzz.py)."""
    sim = Sim()
    inc = start(sim)
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(Refused, match="a list") as bad:
        sim.engine.close(inc, "w-07", "x", sim._clock(5), deep)  # type: ignore[arg-type]
    assert bad.value.kind == "bad_payload"
    assert [i.id for i in sim.engine.open_incidents()] == [inc]
