"""The GB/T 26875.3 uplink to a monitoring centre: the sans-IO session
(alerting.centre_report), its TCP link (alerting.centre_link) and the simulated centre
(firmware_sim.centre), over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.centre_link import CentreLink
from alerting.centre_report import FIRE, Outcome, UplinkSession, fire_report
from drivers.gb26875 import (
    CMD_CONFIRM,
    CMD_CONTROL,
    CMD_DENY,
    CMD_REQUEST,
    CMD_SEND,
    CentreSession,
    ComponentStatus,
    Deframer,
    Frame,
    decode_frame,
    encode_frame,
    label_to_unix,
    parse_adu,
)
from firmware_sim.centre import SimCentre
from gateway.config import ConfigError, parse_site
from gateway.engine import CENTRE_LINK
from gateway.model import CentreReport
from tests.test_engine import EXAMPLE, Sim, start

ME, CENTRE = 0x000379, 0x015B38  # the fact sheet's example device and centre
BEIJING = 8 * 3600
T = 1_800_000_000.0


def _report(part_addr: int = 7, at: float = T) -> ComponentStatus:
    return fire_report(sys_addr=1, part_type=40, part_addr=part_addr,
                       description="smk-1201 楼1 2F", at_s=at, utc_offset_s=BEIJING)


def _answer(session: CentreSession, data: bytes, now: float) -> bytes:
    return session.receive(data, now)[1]


def test_a_report_is_a_send_frame_the_centre_reads_as_a_fire_and_confirms() -> None:
    s = UplinkSession(ME, CENTRE, utc_offset_s=BEIJING)
    serial, frame = s.report([_report()], T)
    f = decode_frame(frame)
    assert (f.command, f.src, f.dst, f.serial) == (CMD_SEND, ME, CENTRE, serial)
    (obj,) = parse_adu(f.adu)
    assert isinstance(obj, ComponentStatus)
    assert obj.status == FIRE and obj.part_type == 40 and obj.ref == "1/1/7"
    assert obj.description == "smk-1201 楼1 2F"
    assert label_to_unix(obj.time, BEIJING) == T
    # firegrid's own centre end (the one its UITDs talk to) takes it as a fire alarm
    centre = CentreSession(CENTRE, utc_offset_s=BEIJING)
    events, reply = centre.receive(frame, T)
    assert any(getattr(e, "state", None) == "alarm" and e.device == "1/1/7" for e in events)
    outcomes, back = s.receive(reply, T + 0.1)
    assert [(o.serial, o.ok, o.attempts) for o in outcomes] == [(serial, True, 1)]
    assert back == b"" and s.waiting == 0 and s.next_deadline() is None


def test_no_confirm_resends_the_same_frame_then_gives_up_after_the_retries() -> None:
    s = UplinkSession(ME, CENTRE, timeout_s=10.0, retries=3)
    serial, frame = s.report([_report()], T)
    assert s.next_deadline() == T + 10.0
    assert s.tick(T + 9.9) == ([], b"")
    for k in range(3):  # three resends, same bytes, same serial, 10 s apart
        outcomes, again = s.tick(T + 10.0 * (k + 1))
        assert outcomes == [] and again == frame
    outcomes, again = s.tick(T + 40.0)
    assert again == b""
    assert [(o.serial, o.ok, o.attempts) for o in outcomes] == [(serial, False, 4)]
    assert "given up after 4" in outcomes[0].detail


def test_a_deny_resends_at_once_and_a_later_confirm_settles_it() -> None:
    s = UplinkSession(ME, CENTRE)
    serial, frame = s.report([_report()], T)
    deny = encode_frame(Frame(serial=serial, time=(0, 0, 0, 1, 1, 26), src=CENTRE, dst=ME,
                              command=CMD_DENY))
    outcomes, again = s.receive(deny, T + 0.2)
    assert outcomes == [] and again == frame
    ok = encode_frame(Frame(serial=serial, time=(0, 0, 0, 1, 1, 26), src=CENTRE, dst=ME,
                            command=CMD_CONFIRM))
    outcomes, _ = s.receive(ok[:11], T + 0.3)  # split across reads: nothing yet
    assert outcomes == []
    outcomes, _ = s.receive(ok[11:], T + 0.3)
    assert [(o.ok, o.attempts) for o in outcomes] == [(True, 2)]


def test_the_centre_s_commands_are_answered_and_garbage_harms_nothing() -> None:
    s = UplinkSession(ME, CENTRE)
    serial, _ = s.report([_report()], T)
    control = encode_frame(Frame(serial=500, time=(0, 0, 0, 1, 1, 26), src=CENTRE, dst=ME,
                                 command=CMD_CONTROL, adu=b"\x5a\x01"))
    query = encode_frame(Frame(serial=501, time=(0, 0, 0, 1, 1, 26), src=CENTRE, dst=ME,
                               command=CMD_REQUEST, adu=b"\x51\x01"))
    bad = bytearray(control)
    bad[-3] ^= 0xFF  # checksum
    outcomes, back = s.receive(b"junk" + control + query + bytes(bad), T + 1)
    assert outcomes == []
    replies = [f for f in Deframer().feed(back) if isinstance(f, Frame)]
    assert [(f.serial, f.command) for f in replies] == [
        (500, CMD_CONFIRM), (501, CMD_DENY), (500, CMD_DENY)]
    assert s.waiting == 1 and serial == 1  # the report still waits for its own answer


def test_serials_run_1_to_65535_and_round_again() -> None:
    s = UplinkSession(ME, CENTRE)
    s._serial = 65534
    assert [s.heartbeat(T)[0] for _ in range(3)] == [65535, 1, 2]


def test_a_lost_connection_fails_what_is_open() -> None:
    s = UplinkSession(ME, CENTRE)
    a, _ = s.report([_report(1)], T)
    b, _ = s.heartbeat(T)
    lost = s.lost()
    assert {(o.serial, o.ok) for o in lost} == {(a, False), (b, False)}
    assert s.waiting == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_property_any_bytes_from_the_centre_never_raise(data: bytes) -> None:
    s = UplinkSession(ME, CENTRE)
    s.report([_report()], T)
    outcomes, back = s.receive(data, T + 1)
    assert all(not o.ok for o in outcomes) or len(outcomes) <= 1
    assert isinstance(back, bytes)
    s.tick(T + 100)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="address"):
        UplinkSession(1 << 48)
    with pytest.raises(ValueError, match="timeout_s"):
        UplinkSession(ME, timeout_s=0)


# ---------------------------------------------------------------- over TCP


async def _link(centre: SimCentre, **kw: object) -> tuple[CentreLink, asyncio.Task[None],
                                                          list[tuple[bool, str]]]:
    changes: list[tuple[bool, str]] = []
    link = CentreLink(centre.host, centre.port,
                      lambda: UplinkSession(ME, CENTRE, timeout_s=0.5, retries=2),
                      on_link=lambda up, detail: changes.append((up, detail)), **kw)
    return link, asyncio.create_task(link.run()), changes


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_reports_reach_a_centre_over_tcp_and_come_back_confirmed() -> None:
    centre = await SimCentre(address=CENTRE).start()
    link, task, changes = await _link(centre)
    try:
        outcome = await asyncio.wait_for(link.send([_report(3)]), 5)
        assert outcome.ok and outcome.attempts == 1
        (got,) = centre.alarms()
        assert got.report.ref == "1/1/3" and got.src == ME
        assert changes[0][0] is True
    finally:
        await _stop(task)
        await centre.stop()


async def test_a_silent_centre_fails_the_report_and_a_dead_one_is_reported_down() -> None:
    centre = await SimCentre(address=CENTRE, mode="silent").start()
    link, task, changes = await _link(centre)
    try:
        outcome = await asyncio.wait_for(link.send([_report()]), 5)
        assert not outcome.ok and outcome.attempts == 3  # 1 + 2 retries, 0.5 s apart
        assert centre.frames == 3
    finally:
        await _stop(task)
        await centre.stop()
    port = centre.port  # nobody listens there now
    dead = SimCentre(port=port)
    link, task, changes = await _link(dead)
    try:
        outcome = await asyncio.wait_for(link.send([_report()], wait_s=0.5), 5)
        assert not outcome.ok and "not connected" in outcome.detail
        assert changes and changes[-1][0] is False and "connect" in changes[-1][1]
    finally:
        await _stop(task)


async def test_heartbeats_keep_the_line_and_a_dropped_line_is_dialled_again() -> None:
    centre = await SimCentre(address=CENTRE).start()
    link, task, changes = await _link(centre, heartbeat_s=0.3)
    try:
        async with asyncio.timeout(5):
            while centre.heartbeats < 2:
                await asyncio.sleep(0.05)
        centre.drop_all()
        async with asyncio.timeout(5):
            while centre.connections < 2 or not link.up:
                await asyncio.sleep(0.05)
        outcome = await asyncio.wait_for(link.send([_report(9)]), 5)
        assert outcome.ok
        assert [up for up, _ in changes][:3] == [True, False, True]
    finally:
        await _stop(task)
        await centre.stop()


# ---------------------------------------------------------------- the engine


CENTRE_YAML = ("monitoring_centre: {host: 127.0.0.1, port: 9100, address: '79 03 00 00 00 00',"
               " centre_address: 88888, system_address: 2}\n")
CSITE = parse_site(EXAMPLE.read_text() + CENTRE_YAML, "centre.yaml")


def _reports(sim_decisions) -> list[tuple[str, str]]:
    return [(r.incident, r.device) for r in sim_decisions.reports]


def test_a_confirmed_incident_reports_each_detector_and_each_that_joins_later() -> None:
    sim = Sim(CSITE)
    d = sim.signal("smk-301", t=0, received=0)
    inc = d.steps[0].incident
    assert d.reports == [], "not before it is confirmed"
    d = sim.reply(inc, "confirm", "w-07", t=5)
    (r,) = d.reports
    assert (r.incident, r.device, r.t_ns, r.t0_ns) == (inc, "smk-301", sim.of(inc)[0].t_ns,
                                                        sim.of(inc)[0].t0_ns)
    assert r.part_type == 40 and r.sys_addr == 2
    assert r.part_addr == [d.id for d in CSITE.devices].index("smk-301") + 1
    assert r.description.startswith("smk-301 ") and "Bldg 3" in r.description
    d = sim.signal("smk-302", t=8, received=8)
    assert _reports(d) == [(inc, "smk-302")]
    d = sim.signal("mcp-302", t=9, received=9)
    assert [(x.device, x.part_type) for x in d.reports] == [("mcp-302", 23)]


def test_a_call_point_and_an_escalation_report_and_a_dismissal_never_does() -> None:
    sim = Sim(CSITE)
    d = sim.signal("mcp-103", t=0, received=0)  # confirmed at once
    assert [x.device for x in d.reports] == ["mcp-103"]
    late = Sim(CSITE)
    inc = start(late, "smk-1201")
    d = late.tick(30.5)  # nobody answered: escalated, treated as confirmed
    assert "escalated" in [s.stage for s in d.steps]
    assert _reports(d) == [(inc, "smk-1201")]
    no = Sim(CSITE)
    inc = start(no, "smk-1201")
    d = no.reply(inc, "dismiss", "w-03", t=3)
    assert d.reports == []
    assert no.signal("smk-1202", t=4, received=4).reports == []


def test_closing_a_reported_incident_reports_its_detectors_back_to_normal() -> None:
    sim = Sim(CSITE)
    inc = start(sim, "smk-1201")
    sim.reply(inc, "confirm", "w-03", t=4)
    sim.signal("smk-1202", t=6, received=6)
    d = sim.close(inc, "w-03", "out, reset", t=60)
    assert [(r.device, r.status, r.t_ns) for r in d.reports] == [
        ("smk-1201", "normal", sim.now), ("smk-1202", "normal", sim.now)]
    round_trip = CentreReport.from_json(d.reports[0].to_json())
    assert round_trip == d.reports[0]
    # one the worker closed while still asked to confirm was never reported: nothing to clear
    quiet = Sim(CSITE)
    inc = start(quiet, "smk-1201")
    assert quiet.close(inc, "w-03", "steam", t=5).reports == []


def test_the_centre_s_answer_is_a_step_even_after_the_incident_closed() -> None:
    sim = Sim(CSITE)
    d = sim.signal("mcp-103", t=0, received=0)
    (r,) = d.reports
    inc = r.incident
    d = sim.engine.forwarded(r, False, sim.now + 2 * 10**9, attempts=4,
                             detail="no 确认 within 10 s, given up after 4 send(s)")
    (s,) = d.steps
    assert (s.stage, s.device, s.incident) == ("forward_failed", "mcp-103", inc)
    assert s.fields["attempts"] == 4
    sim.close(inc, "w-07", t=5)
    gone = CentreReport.from_json(r.to_json())  # as the outbox gives it back
    fresh = Sim(CSITE).engine  # a restarted gateway that never heard of the incident
    d = fresh.forwarded(gone, True, sim.now + 60 * 10**9, attempts=1, detail="确认")
    (s,) = d.steps
    assert (s.stage, s.incident, s.device) == ("forwarded", inc, "mcp-103")
    assert abs(s.elapsed_s - 65.0) < 0.01


def test_without_a_centre_nothing_is_reported_and_its_link_is_not_a_feed() -> None:
    sim = Sim()
    assert sim.signal("mcp-103", t=0, received=0).reports == []
    assert CENTRE_LINK not in sim.engine.links
    assert CENTRE_LINK in Sim(CSITE).engine.links
    d = Sim(CSITE).engine.link(CENTRE_LINK, False, 10**9, "connect refused")
    assert any(p.topic == f"trouble/{CENTRE_LINK}" for p in d.publishes)


def test_the_centre_settings_are_checked_with_their_place() -> None:
    base = EXAMPLE.read_text()
    for block, where, what in (
        ("monitoring_centre: {host: h, port: 1, address: 1, timeout_s: 20}\n",
         "monitoring_centre.timeout_s", "10"),
        ("monitoring_centre: {host: h, port: 1, address: 'zz'}\n",
         "monitoring_centre.address", "hex"),
        ("monitoring_centre: {host: h, port: 1, address: 1, retries: 4}\n",
         "monitoring_centre.retries", "3"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_site(base + block, "c.yaml")
        text = "\n".join(err.value.lines())
        assert where in text and what in text, text
    clash = base.replace("devices:\n", "feeds:\n  - {name: monitoring-centre, type: frigate}\n"
                         "devices:\n", 1) + CENTRE_YAML
    with pytest.raises(ConfigError, match=r"feeds\[0\]\.name"):
        parse_site(clash, "c.yaml")


# ---------------------------------------------------------------- the dispatcher


class _Line:
    """A stand-in for CentreLink in a unit test of the dispatcher's queue alone: the sends
    numbered in ``fail`` (0-based) get no 确认, with the line staying up (a centre that
    denies) or going down."""

    def __init__(self, fail: set[int], down: bool):
        self.fail, self.down, self.up = fail, down, True
        self.sent: list[tuple[int, int, bool]] = []  # (part_addr, status, confirmed)

    async def send(self, objects: list[ComponentStatus]) -> Outcome:
        k = len(self.sent)
        ok = k not in self.fail
        self.sent.append((objects[0].part_addr, objects[0].status, ok))
        self.up = ok or not self.down
        return Outcome(k + 1, ok, 1 if ok else 4, "确认" if ok else "否认, given up")


async def _dispatch(line: _Line, monkeypatch: pytest.MonkeyPatch
                    ) -> tuple[list[int], list[tuple[str, object]]]:
    from gateway import centre as centre_mod
    from gateway.metrics import Metrics

    monkeypatch.setattr(centre_mod, "RETRY_S", 0.01)
    inputs: list[tuple[str, object]] = []
    cleared: list[int] = []
    d = centre_mod.CentreDispatch(CSITE, lambda kind, _t, data, _u: inputs.append((kind, data)),
                                  Metrics(), cleared.extend)
    d.link = line  # type: ignore[assignment]
    for i, (addr, status) in enumerate(((1, "fire"), (2, "fire"), (1, "normal"),
                                        (2, "normal")), 1):
        r = CentreReport("inc-1", 0, f"dev-{addr}", i, 40, addr, 1, "x", status)
        d.send(i, r.to_json())
        d.send(i, r.to_json())  # the outbox flushed again: queued once
    task = asyncio.create_task(d._sender())
    try:
        async with asyncio.timeout(5):
            while len(cleared) < 4:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return cleared, inputs


@pytest.mark.parametrize("down", [False, True])
async def test_a_device_back_to_normal_never_overtakes_its_fire(
        down: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device 1's fire report is not confirmed the first time; device 2 goes on, but
    device 1's "normal" waits until its fire is through, whether the centre denied it
    (line up) or the line dropped."""
    line = _Line({0}, down)
    cleared, inputs = await _dispatch(line, monkeypatch)
    assert sorted(cleared) == [1, 2, 3, 4]
    for addr in (1, 2):
        mine = [(status, ok) for a, status, ok in line.sent if a == addr]
        fire_ok = mine.index((FIRE, True))
        assert all(status == FIRE for status, _ in mine[:fire_ok + 1]), mine
    assert len(line.sent) == 5  # one failure, sent again once
    failed = [data for kind, data in inputs if kind == "forwarded" and not data[1]]
    assert len(failed) == 1, "the first failure of a report is a step"
    assert sum(1 for kind, data in inputs if kind == "forwarded" and data[1]) == 4
