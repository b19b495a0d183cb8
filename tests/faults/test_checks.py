"""The fault suite's own checks, on made-up journals: they must see what they claim to see.

A checker that cannot fail proves nothing, so each rule is shown catching a loss, a
duplicate or a late timer once, without servers.
"""

from __future__ import annotations

from typing import Any

import orjson

from bench.faults import (
    Input,
    Msg,
    SiteSpec,
    StepRow,
    audit_steps,
    check_pages,
    stale_retained,
)

NS = 1_000_000_000
SITE = SiteSpec("checks", buildings=3)  # confirm 3 s, in place 8 s, tiers 1 and 2 at 2 s
T0 = 1_800_000_000.0


class Journal:
    def __init__(self) -> None:
        self.rows: list[StepRow] = []

    def add(self, inc: str, stage: str, at: float, *, responder: str | None = None,
            tier: int | None = None, device: str | None = None, **fields: Any) -> StepRow:
        t_ns = round((T0 + at) * NS) + len(self.rows)  # strictly increasing, as the engine
        row = StepRow(len(self.rows) + 1, inc, stage, t_ns / NS, t_ns, T0, responder, tier,
                      device, fields)
        self.rows.append(row)
        return row


def manual_call_point(j: Journal, inc: str = "inc-1", b: int = 0) -> None:
    """mcp → confirmed at once → guard paged → ack → on scene → closed."""
    j.add(inc, "detected", 0.0, device=f"mcp-{b}", counter=1)
    j.add(inc, "located", 0.0)
    j.add(inc, "confirmed", 0.0, by="auto")
    j.add(inc, "paged", 0.0, responder="guard-1", tier=1, repeat=0)
    j.add(inc, "acked", 0.5, responder="guard-1", tier=1, status="ack")
    j.add(inc, "on_scene", 1.0, responder="guard-1", tier=1)
    j.add(inc, "closed", 1.5, responder="w-1", tier=0, by="w-1")


def inputs_for(inc: str = "inc-1", b: int = 0) -> list[Input]:
    return [
        Input(T0 - 0.01, f"signal/mcp-{b}", {"state": "alarm"}, 1),
        Input(T0 + 0.49, "page/guard-1/ack", {"incident": inc, "status": "ack"}, 2),
        Input(T0 + 0.99, "page/guard-1/ack", {"incident": inc, "status": "on_scene"}, 3),
        Input(T0 + 1.49, f"incident/{inc}/close", {"by": "w-1"}, 4),
    ]


def page(step: StepRow, at: float, dup: bool = False) -> tuple[Msg, dict[str, Any]]:
    body = {"incident": step.incident, "tier": step.tier, "sent": step.t_ns / NS}
    return Msg(at, f"page/{step.responder}", orjson.dumps(body), False, dup), body


def test_a_complete_incident_has_nothing_missing() -> None:
    j = Journal()
    manual_call_point(j)
    a = audit_steps(j.rows, inputs_for(), SITE, [], [(T0 - 10, T0 - 9)], T0 + 20)
    assert a.missing == [] and a.duplicate_steps == [] and a.alarms == 1
    pc = check_pages(j.rows, [page(j.rows[3], T0 + 0.01)], [])
    assert (pc.paged, pc.seen, pc.missed, pc.duplicates) == (1, 1, [], 0)


def test_a_lost_page_step_a_lost_alarm_and_a_lost_ack_are_missing() -> None:
    j = Journal()
    manual_call_point(j)
    del j.rows[3]  # the paged step
    extra = [Input(T0 + 2.0, "signal/mcp-1", {"state": "alarm"}, 9)]  # never detected
    a = audit_steps(j.rows, [*inputs_for(), *extra], SITE, [], [(T0 - 10, T0 - 9)], T0 + 20)
    assert any("paged guard-1 tier 1" in m for m in a.missing)
    assert a.alarms_lost == ["mcp-1"]
    j2 = Journal()
    manual_call_point(j2)
    del j2.rows[4]  # the acked step: the ack input left no trace
    a2 = audit_steps(j2.rows, inputs_for(), SITE, [], [(T0 - 10, T0 - 9)], T0 + 20)
    assert any("ack:ack by guard-1" in m for m in a2.missing)


def test_pages_missed_and_duplicated_per_crash() -> None:
    j = Journal()
    manual_call_point(j)
    paged = j.rows[3]
    crash = T0 + 0.2
    pages = [page(paged, T0 + 0.01), page(paged, T0 + 1.0), page(paged, T0 + 1.1),
             page(paged, T0 + 1.2, dup=True)]  # a broker redelivery is not the gateway's
    pc = check_pages(j.rows, pages, [crash])
    assert pc.duplicates == 2 and pc.dup_per_crash == {1: 2} and pc.redelivered == 1
    pc = check_pages(j.rows, [], [])
    assert pc.missed and pc.seen == 0


def test_an_escalation_that_never_came_while_up_is_missing() -> None:
    j = Journal()
    j.add("inc-2", "detected", 0.0, device="smk-1-1", counter=2)
    j.add("inc-2", "located", 0.0)
    j.add("inc-2", "queued", 0.0, responder="w-1", tier=0)
    # the worker's confirmation came 6 s after the 3 s deadline while the gateway ran
    j.add("inc-2", "confirmed", 9.0, responder="w-1", tier=0, by="w-1")
    a = audit_steps(j.rows, [], SITE, [], [(T0 - 10, T0 - 9)], T0 + 20)
    assert any("escalated at the deadline" in m for m in a.missing)
    # the same while the gateway was down from +1 s to +8.5 s: fine, it came at the restart
    a = audit_steps(j.rows, [], SITE, [(T0 + 1, T0 + 8.5)],
                    [(T0 - 10, T0 - 9), (T0 + 8.5, T0 + 8.9)], T0 + 20)
    assert not any("escalated" in m for m in a.missing)


def test_timer_lateness_is_measured_from_the_restart() -> None:
    j = Journal()
    j.add("inc-3", "detected", 0.0, device="smk-2-1", counter=3)
    j.add("inc-3", "located", 0.0)
    j.add("inc-3", "queued", 0.0, responder="w-1", tier=0)
    j.add("inc-3", "escalated", 6.2)  # due at +3 s; the gateway was down +1 s .. +6 s
    j.add("inc-3", "paged", 6.2, responder="guard-1", tier=1, repeat=0)
    j.add("inc-3", "unanswered", 8.3, tier=1, responders="guard-1")  # due +8.2 s, up
    for who in ("squad-1", "squad-2"):
        j.add("inc-3", "paged", 8.3, responder=who, tier=2, repeat=0)
    j.add("inc-3", "on_scene", 9.0, responder="squad-1", tier=2)
    j.add("inc-3", "acked", 9.0, responder="squad-1", tier=2)
    j.add("inc-3", "breach", 8.0 + 0.01, sla="in_place")
    j.add("inc-3", "closed", 9.5, responder="w-1", tier=0, by="w-1")
    inputs = [Input(T0 + 2.0, "confirm/inc-3/reply", {"decision": "confirm", "by": "w-1"}, 1)]
    a = audit_steps(j.rows, inputs, SITE, [(T0 + 1, T0 + 6)],
                    [(T0 - 10, T0 - 9), (T0 + 6, T0 + 6.1)], T0 + 20)
    esc = next(t for t in a.timers if t.what == "escalation")
    assert esc.affected and abs(esc.late_beyond_s - 0.2) < 0.01
    assert esc.answered_in_time and len(a.escalated_needlessly) == 1
    una = next(t for t in a.timers if t.what.startswith("tier 1"))
    assert not una.affected and abs(una.late_beyond_s - 0.1) < 0.01
    # the reply sent while down left no step at all: that is a loss
    assert any("reply:confirm by w-1" in m for m in a.missing)


def test_a_tier_timeout_that_never_fired_is_missing() -> None:
    j = Journal()
    j.add("inc-4", "detected", 0.0, device="mcp-2", counter=4)
    j.add("inc-4", "located", 0.0)
    j.add("inc-4", "confirmed", 0.0, by="auto")
    j.add("inc-4", "paged", 0.0, responder="guard-1", tier=1, repeat=0)
    j.add("inc-4", "closed", 5.0, responder="w-1", tier=0, by="w-1")  # no unanswered at +2 s
    a = audit_steps(j.rows, [], SITE, [], [(T0 - 10, T0 - 9)], T0 + 20)
    assert any("unanswered for tier 1" in m for m in a.missing)
    j.rows.insert(4, StepRow(99, "inc-4", "paged", T0 + 0.1, round((T0 + 0.1) * NS), T0,
                             "guard-1", 1, None, {"repeat": 0}))
    a = audit_steps(j.rows, [], SITE, [], [(T0 - 10, T0 - 9)], T0 + 20)
    assert any("('paged', 'guard-1', 1, 0) x2" in d for d in a.duplicate_steps)


def test_a_retained_state_the_journal_contradicts_is_stale() -> None:
    j = Journal()
    manual_call_point(j)  # closed
    j.add("inc-5", "detected", 0.0, device="smk-1-1", counter=5)
    j.add("inc-5", "queued", 0.0, responder="w-1", tier=0)
    j.add("inc-5", "dismissed", 1.0, responder="w-1", tier=0, by="w-1")
    retained = {
        "incident/inc-1": orjson.dumps({"state": "closed"}),
        "incident/inc-5": orjson.dumps({"state": "confirming"}),  # the kill came first
        "confirm/inc-5": b"{}",
    }
    stale = stale_retained(j.rows, retained)
    assert len(stale) == 2 and all("inc-5" in x for x in stale)
    retained["incident/inc-5"] = orjson.dumps({"state": "dismissed"})
    del retained["confirm/inc-5"]
    assert stale_retained(j.rows, retained) == []
