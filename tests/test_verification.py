"""Alarm verification in simulated time: which evidence may skip the confirm queue.

Verification only decides whether the grid worker is asked; it never delays anything, so
every test also checks that the decision comes in the same call as the alarm (or the
reading) that completed the evidence. Rules (docs/locating.md): a manual call point;
two detectors in coincidence (EN 54-2 type C); smoke with heat or CO (multi-criteria,
from an alarm or a rising analog value); a camera with a detector. A cell's
``auto_confirm`` list (``ask_human: true`` = none) limits the rules there, and a
detector in such a cell never counts. Disablement windows: signals recorded, nothing
opened or confirmed, each start and end a ``rule`` step.
"""

from __future__ import annotations

import pytest

from drivers.signal import Signal
from gateway.config import parse_site
from gateway.engine import CO_RISE_PPM, HEAT_RISE_K, Engine
from gateway.model import NS, Decisions, Step
from tests.test_engine import EXAMPLE_TEXT, SITE, Sim, T, at, one, stages

# the example site plus analog sensors near the east flats' smoke detectors, a camera in
# the shops, and a cell whose only automatic rule is multi-criteria
EXTRA = """
  - {id: tmp-303, kind: temperature, floor: 2, x: 4.0, y: 6.0}
  - {id: co-304, kind: co, floor: 2, x: 5.0, y: 3.0}
  - {id: tmp-305, kind: temperature, floor: 2, x: 18.0, y: 11.0}
  - {id: cam-02, kind: camera, floor: 1, x: 26.0, y: 0.0, azimuth_deg: 135, fov_deg: 90}
"""
TEXT = EXAMPLE_TEXT
VERIFY = parse_site(
    TEXT.replace("devices:\n", "devices:\n" + EXTRA.lstrip("\n"), 1)
    .replace("polygon: [[0,0],[26,0],[26,12],[0,12]], worker: w-07}",
             "polygon: [[0,0],[26,0],[26,12],[0,12]], worker: w-07, "
             "auto_confirm: [multi_criteria]}", 1),
    "verify.yaml")


def confirmed(d: Decisions) -> Step | None:
    found = [s for s in d.steps if s.stage == "confirmed"]
    return found[0] if found else None


def early(site=VERIFY) -> Sim:
    """A Sim whose clock starts two minutes before T0, for a sensor's ordinary readings."""
    sim = Sim(site)
    sim.now = at(-120)
    return sim


def value(sim: Sim, device: str, v: float, t: float, state: str = "clear") -> Decisions:
    now = sim._clock(t)
    return sim._keep(sim.engine.signal(Signal(device, state, value=v), now, now))


# ----------------------------------------------------------------- the four rules


def test_manual_call_point_confirms_at_once_even_in_a_kitchen_cell() -> None:
    sim = Sim()
    start = sim.signal("smk-311", t=0, received=0)  # canteen kitchen: ask_human
    assert "queued" in stages(start)
    d = sim.signal("mcp-302", t=4, received=4)
    conf = one(d, "confirmed")
    assert conf.fields == {"by": "auto", "rule": "manual_call_point", "trigger": "mcp-302"}
    assert stages(d)[:3] == ["detected", "located", "confirmed"]


def test_two_detectors_in_different_cells_are_type_c_coincidence() -> None:
    """EN 54-2 type C: two points, not necessarily in one zone (here floor 1 and floor 2)."""
    sim = Sim()
    inc = one(sim.signal("smk-1101", t=0, received=0), "detected").incident
    d = sim.signal("smk-1201", t=40, received=40)  # the floor above, 40 s later
    assert one(d, "detected").incident == inc
    assert one(d, "confirmed").fields["rule"] == "coincidence"
    # ... decided in the call that brought the second detector, before anything else
    assert stages(d)[:3] == ["detected", "located", "confirmed"]


def test_one_detector_alone_goes_to_the_grid_worker() -> None:
    sim = Sim()
    d = sim.signal("smk-1201", t=0, received=0)
    assert stages(d) == ["detected", "located", "queued"]
    assert one(d, "queued").responder == "w-03"


def test_a_cell_that_allows_only_multi_criteria_asks_for_two_smokes_and_a_camera() -> None:
    sim = Sim(VERIFY)
    sim.signal("smk-101", t=0, received=0)  # shops: only multi_criteria allowed
    d = sim.signal("smk-102", t=3, received=3)
    assert confirmed(d) is None, "two smoke detectors: coincidence is not allowed here"
    d = sim.signal("cam-02", t=4, received=4)
    assert confirmed(d) is None, "camera with detector is not allowed here either"


def test_smoke_and_heat_detectors_confirm_as_multi_criteria() -> None:
    sim = Sim()
    # east flats and the floor's heat detector are in different cells; the kitchen one
    # (heat-312) would not count, so use the building 1 CO detector on floor 1
    inc = one(sim.signal("smk-1101", t=0, received=0), "detected").incident
    d = sim.signal("co-1103", t=6, received=6)
    assert one(d, "detected").incident == inc
    assert one(d, "confirmed").fields["rule"] == "multi_criteria"


def test_a_rising_temperature_after_the_smoke_alarm_confirms_when_it_arrives() -> None:
    sim = early()
    for t in (-60, -50, -40, -30, -20, -10):  # the sensor's ordinary readings: a baseline
        assert not value(sim, "tmp-303", 22.0, t).steps
    inc = one(sim.signal("smk-301", t=0, received=0), "detected").incident
    assert sim.engine.incidents[inc].state == "confirming"
    assert not value(sim, "tmp-303", 22.0 + HEAT_RISE_K - 1, 10).steps  # not yet
    d = value(sim, "tmp-303", 22.0 + HEAT_RISE_K + 0.5, 20)
    conf = one(d, "confirmed")
    assert conf.incident == inc
    assert conf.fields["rule"] == "multi_criteria" and conf.fields["trigger"] == "tmp-303"
    assert conf.fields["rise"] == pytest.approx(HEAT_RISE_K + 0.5, abs=0.3)
    assert "paged" in stages(d)


def test_a_heat_rise_before_the_smoke_alarm_counts_when_the_smoke_comes() -> None:
    sim = early()
    for t, v in ((-60, 21.0), (-50, 21.0), (-40, 21.2), (-20, 26.0), (-5, 31.0)):
        value(sim, "tmp-303", v, t)
    d = sim.signal("smk-301", t=0, received=0)
    assert one(d, "confirmed").fields["rule"] == "multi_criteria"


def test_steam_warms_a_little_and_confirms_nothing() -> None:
    sim = early()
    for t in (-60, -50, -40):
        value(sim, "tmp-303", 24.0, t)
    inc = one(sim.signal("smk-301", t=0, received=0), "detected").incident
    for t, v in ((10, 26.0), (20, 27.5), (29, 28.0)):  # +4 K: a shower, not a fire
        assert not value(sim, "tmp-303", v, t).steps
    assert sim.engine.incidents[inc].state == "confirming"


def test_carbon_monoxide_rise_confirms_but_not_a_distant_one() -> None:
    sim = early()
    value(sim, "co-304", 0.0, -30)
    value(sim, "tmp-305", 20.0, -30)
    inc = one(sim.signal("smk-301", t=0, received=0), "detected").incident
    # tmp-305 is 15 m away from the incident: its rise is somebody else's business
    assert not value(sim, "tmp-305", 20.0 + 3 * HEAT_RISE_K, 5).steps
    d = value(sim, "co-304", CO_RISE_PPM + 5, 8)
    conf = one(d, "confirmed")
    assert (conf.incident, conf.fields["trigger"]) == (inc, "co-304")


def test_camera_with_a_detector_confirms_and_a_camera_alone_does_not() -> None:
    sim = Sim()
    cam = sim.engine.signal(Signal("cam-01", "alarm", bearing_deg=30.0), at(0), at(0))
    sim.steps += cam.steps
    assert "queued" in stages(cam) and confirmed(cam) is None
    inc = one(cam, "detected").incident
    d = sim.signal("smk-302", t=8, received=8)  # (12, 8): on the camera's line of sight
    assert one(d, "detected").incident == inc
    assert one(d, "confirmed").fields["rule"] == "camera_detector"


def test_kitchen_detectors_never_count_even_when_the_fire_is_next_door() -> None:
    sim = Sim()
    inc = one(sim.signal("smk-311", t=0, received=0), "detected").incident  # kitchen
    d = sim.signal("smk-302", t=5, received=5)  # east flats, 11 m away: joins
    assert one(d, "detected").incident == inc
    assert confirmed(d) is None, "one countable detector is not a coincidence"
    assert sim.engine.incidents[inc].state == "confirming"


def test_ask_human_cell_keeps_asking_for_smoke_and_heat() -> None:
    sim = Sim()
    sim.signal("smk-311", t=0, received=0)
    d = sim.signal("heat-312", t=2, received=2)
    assert confirmed(d) is None and not d.pages


def test_auto_confirm_list_of_a_cell_is_checked() -> None:
    site = VERIFY
    assert site.zone("b3-1f-shops").allows("multi_criteria")
    assert not site.zone("b3-1f-shops").allows("coincidence")
    assert site.zone("b3-1f-shops").allows("manual_call_point")
    assert not SITE.zone("b3-2f-kitchen").allows("multi_criteria")
    assert SITE.zone("b3-2f-east").allows("camera_detector")


# ---------------------------------------------------------- disablement windows

WINDOWS = parse_site(
    TEXT.replace(
        "worker: w-07, ask_human: true}",
        "worker: w-07, ask_human: true, disabled: [{from: '2023-11-14T22:13:30Z', "
        "until: '2023-11-14T22:23:20Z', reason: hot work in the kitchen}]}", 1)
    .replace("{id: smk-302, kind: smoke, floor: 2, x: 12.0, y: 8.0}",
             "{id: smk-302, kind: smoke, floor: 2, x: 12.0, y: 8.0, disabled: "
             "[{from: '2023-11-14T22:13:20Z', until: '2023-11-14T22:13:40Z'}]}", 1),
    "windows.yaml")
START_302, END_302 = T, T + 20 * NS  # the device window: T0 .. T0+20 s
START_K, END_K = T + 10 * NS, T + 600 * NS  # the kitchen's window: T0+10 s .. T0+600 s


def test_window_start_and_end_are_rule_steps_at_their_own_times() -> None:
    e = Engine(WINDOWS)
    assert e.next_deadline_ns() == START_302
    d = e.tick(T + 5 * NS)
    (rule,) = d.steps
    assert rule.stage == "rule" and rule.t_ns == START_302
    assert rule.incident == "rule-device-smk-302" and rule.device == "smk-302"
    assert rule.zone == "b3-2f-east"
    assert rule.fields["change"] == "start" and rule.fields["rule"] == "disabled"
    assert rule.fields["scope"] == "device" and rule.fields["target"] == "smk-302"
    assert [(ds.device, ds.state) for ds in d.devices] == [("smk-302", "disabled")]
    assert e.next_deadline_ns() == START_K
    d = e.tick(START_K)
    (rule,) = d.steps
    assert (rule.incident, rule.zone, rule.device) == ("rule-zone-b3-2f-kitchen",
                                                       "b3-2f-kitchen", None)
    assert rule.fields["reason"] == "hot work in the kitchen"
    assert sorted(ds.device for ds in d.devices) == ["heat-312", "smk-311"]
    assert all(ds.state == "disabled" for ds in d.devices)
    d = e.tick(END_302 + 5 * NS)
    assert [(s.fields["change"], s.t_ns) for s in d.steps] == [("end", END_302)]
    assert [(ds.device, ds.state) for ds in d.devices] == [("smk-302", "normal")]
    assert not e.tick(END_302 + 6 * NS)  # each change once
    assert e.next_deadline_ns() == END_K


def test_a_disabled_device_opens_nothing_and_confirms_nothing() -> None:
    sim = Sim(WINDOWS)
    sim.tick(0)
    assert sim.engine.device_states["smk-302"].state == "disabled"  # since the window began
    d = sim.signal("smk-302", t=1, received=1)
    assert not d.steps and not sim.engine.incidents
    assert not d.devices, "still disabled: the alarm changes nothing (the runtime records it)"
    inc = one(sim.signal("smk-301", t=2, received=2), "detected").incident
    # smk-302 again, still disabled: no coincidence, no detected step
    assert not sim.signal("smk-302", "clear", t=3).steps
    assert not sim.signal("smk-302", t=4, received=4).steps
    assert sim.engine.incidents[inc].state == "confirming"
    assert sorted(sim.engine.incidents[inc].devices) == ["smk-301"]
    # after the window the same detector counts again
    sim.tick(21)
    d = sim.signal("smk-302", t=22, received=22)
    assert one(d, "detected").incident == inc
    assert one(d, "confirmed").fields["rule"] == "coincidence"


def test_a_disabled_zone_silences_its_detectors_during_the_window_only() -> None:
    sim = Sim(WINDOWS)
    sim.tick(11)
    assert not sim.signal("smk-311", t=12, received=12).steps
    assert not sim.signal("heat-312", t=13, received=13).steps
    assert not sim.engine.incidents
    # one second after the window, before any tick recorded its end: the window is over
    d = sim.engine.signal(Signal("smk-311", "alarm"), END_K + NS, END_K + NS)
    assert [s.stage for s in d.steps][:1] == ["detected"]


def test_rule_steps_are_not_repeated_after_a_restart() -> None:
    live = Engine(WINDOWS)
    steps = live.tick(START_K).steps
    assert [s.stage for s in steps] == ["rule", "rule"]
    fresh = Engine(WINDOWS)
    fresh.restore(steps)
    assert not fresh.tick(START_K).steps
    assert fresh.next_deadline_ns() == END_302


def test_window_times_need_an_offset_and_an_order() -> None:
    from gateway.config import ConfigError
    bad = TEXT.replace("worker: w-07, ask_human: true}",
                       "worker: w-07, ask_human: true, disabled: [{from: 2026-01-05T08:00:00, "
                       "until: 2026-01-05T09:00:00+08:00}]}", 1)
    with pytest.raises(ConfigError) as exc:
        parse_site(bad, "bad.yaml")
    assert "zones[2].disabled[0]" in exc.value.lines()[0] and "UTC offset" in exc.value.lines()[0]
    bad = TEXT.replace("worker: w-07, ask_human: true}",
                       "worker: w-07, ask_human: true, disabled: [{from: 2026-01-05T09:00:00Z, "
                       "until: 2026-01-05T08:00:00Z}]}", 1)
    with pytest.raises(ConfigError) as exc:
        parse_site(bad, "bad.yaml")
    assert "until must be after from" in exc.value.lines()[0]
    bad = TEXT.replace("worker: w-07, ask_human: true}",
                       "worker: w-07, auto_confirm: [coincidence, maybe]}", 1)
    with pytest.raises(ConfigError) as exc:
        parse_site(bad, "bad.yaml")
    assert "zones[2].auto_confirm[1]" in exc.value.lines()[0]
