"""Site configuration (CONTRACT §2) and ``firegrid check-config`` (CONTRACT §1).

A duty room edits these files by hand: every problem must come back with its place in
the file (``devices[3].x: field required (line N)``), and a misspelt key is an error.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_site, parse_site

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "taibai-demo.yaml"
TEXT = EXAMPLE.read_text(encoding="utf-8")
SMK_302 = "{id: smk-302, kind: smoke, floor: 2, x: 12.0, y: 8.0}"  # devices[4]


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in the text")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_site(text, "site.yaml")
    lines = exc.value.lines()
    assert lines and all(line.startswith("site.yaml: ") for line in lines)
    assert all("\n" not in line for line in lines)
    assert len(lines) == len(exc.value.problems)
    return lines


def edit(old: str, new: str, text: str = TEXT) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def at_place(lines: list[str], place: str, message: str, line: int) -> str:
    """The one problem reported at ``place`` with ``message`` and ``(line N)``."""
    rx = re.compile(re.escape(place) + r"(?![\w\[.]).*" + re.escape(message))
    found = [x for x in lines if rx.search(x)]
    assert len(found) == 1, (place, message, lines)
    assert f"line {line}" in found[0], (line, found[0])
    return found[0]


# ---------------------------------------------------------------- the example


def test_example_site_is_valid() -> None:
    site = load_site(EXAMPLE)
    assert site.site == "taibai-demo"
    assert (site.sla.locate_s, site.sla.confirm_s, site.sla.in_place_s) == (10, 30, 60)
    assert {z.id for z in site.zones} >= {"b3-2f-east", "b3-2f-kitchen"}
    assert site.zone("b3-2f-kitchen").ask_human is True
    assert site.zone("b3-2f-east").ask_human is False
    assert site.device("cam-01").azimuth_deg == 45
    assert site.responder("w-07").tier == 0
    assert [t.ack_timeout_s for t in site.tiers] == [15, 20, 30]
    assert site.device("smk-999") is None


CONTRACT_SITE = """\
site: taibai-demo                 # [a-z0-9-]+
sla: {locate_s: 10, confirm_s: 30, in_place_s: 60}   # seconds from T0
zones:                            # micro-grid cells
  - {id: b3-2f-east, building: b3, floor: 2, polygon: [[0,0],[20,0],[20,12],[0,12]], worker: w-07}
  - {id: b3-2f-kitchen, building: b3, floor: 2, polygon: [[20,0],[26,0],[26,12],[20,12]],
     worker: w-07, ask_human: true}
  - {id: b3-1f, floor: 1, polygon: [[0,0],[26,0],[26,12],[0,12]]}
devices:
  - {id: smk-301, kind: smoke, floor: 2, x: 3.0, y: 4.5}      # metres, site frame
  - {id: mcp-302, kind: manual, floor: 2, x: 18.0, y: 1.0}   # manual call point
  - {id: cam-01, kind: camera, floor: 2, x: 0.0, y: 0.0, azimuth_deg: 45, fov_deg: 90}
  - {id: cam-02, kind: camera, floor: 2, x: 26.0, y: 12.0}
  - {id: smk-101, kind: smoke, floor: 1, x: 2.0, y: 3.0, feed: z2m, ref: kitchen_smoke}
  - {id: cam-03, kind: camera, floor: 1, x: 0.0, y: 12.0, feed: nvr, ref: front_door}
  - {id: zone-004, kind: smoke, floor: 1, x: 4.0, y: 4.0, feed: panel-a, ref: "004-004"}
  - {id: uitd-1, kind: heat, floor: 1, x: 5.0, y: 5.0, feed: uitd, ref: "1/1/131082"}
  - {id: gas-1, kind: gas, floor: 1, x: 6.0, y: 6.0, feed: rs485, ref: "1:0",
     scale: 0.1, alarm_at: 25, clear_at: 10}
  - {id: tmp-1, kind: temperature, floor: 1, x: 7.0, y: 6.0, feed: uitd, ref: "1/1/131083",
     alarm_at: 57, clear_at: 50}
  - {id: co-1, kind: co, floor: 1, x: 8.0, y: 6.0, feed: rs485-in, ref: "2:7", scale: 1}
  - {id: flame-1, kind: flame, floor: 2, x: 9.0, y: 6.0}
  - {id: heat-1, kind: heat, floor: 2, x: 10.0, y: 6.0}
feeds:
  - {name: z2m, type: zigbee2mqtt, base_topic: zigbee2mqtt}        # ref: friendly name
  - {name: nvr, type: frigate, base_topic: frigate}                # ref: camera name
  - {name: panel-a, type: panel-printer, port: /dev/ttyUSB0, baud: 9600, dialect: gst}
  - {name: uitd, type: gb26875, listen: "127.0.0.1:9000"}
  - {name: rs485, type: modbus, port: /dev/ttyUSB1, baud: 9600, poll_s: 1}
  - {name: rs485-in, type: modbus, port: /dev/pts/7, registers: input}
responders:
  - {id: w-07, name: "Grid worker 7", tier: 0}                # confirms for zone
  - {id: guard-1, tier: 1, pager: {type: tap, port: /dev/ttyUSB2, baud: 9600,
     password: "000000", pager_id: "1234567"}}
  - {id: guard-2, tier: 1, pager: {type: tap, host: 127.0.0.1, port: 10001, pager_id: "1234568"}}
  - {id: squad-3, tier: 2, pager: {type: snpp, host: 127.0.0.1, port: 444, pager_id: "5550003"}}
  - {id: station-1, tier: 3}
tiers:
  - {tier: 1, ack_timeout_s: 15}
  - {tier: 2, ack_timeout_s: 20}
  - {tier: 3, ack_timeout_s: 30}
"""


def test_contract_shape_with_feeds_and_pagers_is_accepted() -> None:
    site = parse_site(CONTRACT_SITE, "contract.yaml")
    assert {f.name: f.type for f in site.feeds} == {
        "z2m": "zigbee2mqtt", "nvr": "frigate", "panel-a": "panel-printer",
        "uitd": "gb26875", "rs485": "modbus", "rs485-in": "modbus"}
    assert site.device("smk-101").feed == "z2m" and site.device("smk-101").ref == "kitchen_smoke"
    gas = site.device("gas-1")
    assert (gas.scale, gas.alarm_at, gas.clear_at) == (0.1, 25, 10)
    assert site.device("smk-301").scale == 1  # default
    assert site.device("cam-02").azimuth_deg is None and site.device("cam-02").fov_deg is None
    assert site.responder("guard-1").pager.type == "tap"
    assert site.responder("guard-1").pager.pager_id == "1234567"
    assert site.responder("guard-2").pager.host == "127.0.0.1"
    assert site.responder("squad-3").pager.type == "snpp"
    assert site.responder("station-1").pager is None and site.responder("station-1").name is None
    assert site.zone("b3-1f").building is None and site.zone("b3-1f").ask_human is False
    assert {d.kind for d in site.devices} >= {
        "smoke", "heat", "co", "gas", "flame", "manual", "camera", "temperature"}


def test_equal_thresholds_and_clear_below_alarm_are_accepted() -> None:
    parse_site(edit(SMK_302, SMK_302[:-1] + ", alarm_at: 5, clear_at: 5}"))
    parse_site(edit(SMK_302, SMK_302[:-1] + ", alarm_at: 5, clear_at: 2}"))


# --------------------------------------------------------------- each problem


def test_contract_place_format_device_field_required() -> None:
    """CONTRACT §1 prints ``devices[3].x: field required``; the line number goes after it."""
    lines = problems(edit(SMK_302, "{id: smk-302, kind: smoke, floor: 2, y: 8.0}"))
    line = line_of(TEXT, "id: smk-302")
    assert lines == [f"site.yaml: devices[4].x: field required (line {line})"]


def test_missing_field_reported_with_place_and_line() -> None:
    lines = problems(edit(SMK_302, "{id: smk-302, kind: smoke, floor: 2, y: 8.0}"))
    at_place(lines, "devices[4].x", "field required", line_of(TEXT, "id: smk-302"))


def test_wrong_type_and_bad_kind_reported_with_place() -> None:
    text = edit(SMK_302, "{id: smk-302, kind: smok, floor: two, x: 12.0, y: 8.0}")
    lines = problems(text)
    n = line_of(TEXT, "id: smk-302")
    at_place(lines, "devices[4].kind", "smoke", n)
    at_place(lines, "devices[4].floor", "integer", n)


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = edit(SMK_302, "{id: smk-302, kind: smoke, floor: 2}")
    text = edit("{id: guard-1, name: \"Property guard, gate 1\", tier: 1}",
                "{id: guard-1, name: \"Property guard, gate 1\"}", text)
    lines = problems(text)
    at_place(lines, "devices[4].x", "field required", line_of(TEXT, "id: smk-302"))
    at_place(lines, "devices[4].y", "field required", line_of(TEXT, "id: smk-302"))
    at_place(lines, "responders[2].tier", "field required", line_of(TEXT, "id: guard-1"))


@pytest.mark.parametrize(("old", "new", "place", "needle"), [
    (SMK_302, "{id: smk-302, colour: red, kind: smoke, floor: 2, x: 12.0, y: 8.0}",
     "devices[4].colour", "id: smk-302"),
    ("{tier: 2, ack_timeout_s: 20}", "{tier: 2, ack_timeout_s: 20, ack_timout_s: 5}",
     "tiers[1].ack_timout_s", "tier: 2, ack_timeout_s"),
    ("site: taibai-demo\n", "site: taibai-demo\nsite_name: demo\n", "site_name", "site_name"),
    ("sla: {locate_s: 10,", "sla: {locate: 10, locate_s: 10,", "sla.locate", "sla:"),
    ("worker: w-03}\n  - {id: b1-2f", "worker: w-03, askhuman: true}\n  - {id: b1-2f",
     "zones[3].askhuman", "id: b1-1f-lobby"),
])
def test_unknown_keys_are_errors(old: str, new: str, place: str, needle: str) -> None:
    text = edit(old, new)
    at_place(problems(text), place, "unknown key", line_of(text, needle))


def test_unknown_keys_in_feeds_and_pagers_are_errors() -> None:
    text = edit("{type: tap, port: /dev/ttyUSB2, baud: 9600,",
                "{type: tap, port: /dev/ttyUSB2, baud: 9600, bauds: 1,", CONTRACT_SITE)
    text = edit("{name: nvr, type: frigate, base_topic: frigate}",
                "{name: nvr, type: frigate, base_topic: frigate, topic: x}", text)
    lines = problems(text)
    at_place(lines, "responders[1].pager.bauds", "unknown key", line_of(text, "id: guard-1"))
    at_place(lines, "feeds[1].topic", "unknown key", line_of(text, "name: nvr"))


def test_tap_pager_keys_for_nonstandard_terminals() -> None:
    text = edit("{type: tap, port: /dev/ttyUSB2, baud: 9600,",
                "{type: tap, port: /dev/ttyUSB2, baud: 9600, framing: 8N1, max_chars: 120, "
                "answer_s: 30, calls: 2,", CONTRACT_SITE)
    pager = parse_site(text).responder("guard-1").pager
    assert (pager.framing, pager.max_chars, pager.answer_s, pager.calls) == ("8N1", 120,
                                                                           30.0, 2)
    assert (pager.probe_s, pager.probes, pager.deadline_s) == (2.0, 3, 30.0)  # the spec's


@pytest.mark.parametrize(("extra", "place", "needle"), [
    ("framing: 9N1,", "responders[1].pager.framing", "7E1"),
    ("max_chars: 300,", "responders[1].pager.max_chars", "250"),
    ("max_chars: 5,", "responders[1].pager.max_chars", "20"),
    ("calls: 0,", "responders[1].pager.calls", "1"),
    ("answer_s: -1,", "responders[1].pager.answer_s", "0"),
])
def test_tap_pager_keys_out_of_range(extra: str, place: str, needle: str) -> None:
    text = edit("{type: tap, port: /dev/ttyUSB2, baud: 9600,",
                "{type: tap, port: /dev/ttyUSB2, baud: 9600, " + extra, CONTRACT_SITE)
    at_place(problems(text), place, needle, line_of(text, "id: guard-1"))


def test_tap_framing_over_tcp_is_an_error() -> None:
    text = edit('port: 10001, pager_id: "1234568"}',
                'port: 10001, pager_id: "1234568", framing: 8N1}', CONTRACT_SITE)
    lines = problems(text)
    assert any("responders[2].pager" in ln and "framing is for a serial line" in ln
               for ln in lines), lines


def test_unknown_feed_type_is_an_error() -> None:
    text = CONTRACT_SITE.replace("type: frigate", "type: frigat")
    lines = problems(text)
    at_place(lines, "feeds[1]", "frigate", line_of(text, "name: nvr"))


@pytest.mark.parametrize(("old", "new", "place", "needle"), [
    ("id: smk-302,", "id: smk-301,", "devices[4].id", "kind: smoke, floor: 2, x: 12.0"),
    ("{id: b1-2f-flats,", "{id: b1-1f-lobby,", "zones[4].id", "Bldg 1 2F flats"),
    ("{id: squad-3,", "{id: guard-1,", "responders[3].id", "Volunteer squad"),
    ("{tier: 3, ack_timeout_s: 30}", "{tier: 2, ack_timeout_s: 30}", "tiers[2].tier",
     "ack_timeout_s: 30"),
])
def test_duplicate_ids(old: str, new: str, place: str, needle: str) -> None:
    text = edit(old, new)
    at_place(problems(text), place, "duplicate", line_of(text, needle))


def test_zone_worker_must_be_a_responder() -> None:
    text = edit("worker: w-03}\n  - {id: b1-2f", "worker: w-99}\n  - {id: b1-2f")
    line = at_place(problems(text), "zones[3].worker", "w-99", line_of(text, "w-99"))
    assert "responder" in line


def test_device_feed_must_exist() -> None:
    text = edit(SMK_302, SMK_302[:-1] + ", feed: z2m, ref: hall}")
    line = at_place(problems(text), "devices[4].feed", "z2m", line_of(text, "id: smk-302"))
    assert "feed" in line


def test_device_on_a_feed_needs_a_ref_and_only_then() -> None:
    text = CONTRACT_SITE.replace("feed: z2m, ref: kitchen_smoke", "feed: z2m")
    at_place(problems(text), "devices[4].ref", "required", line_of(text, "id: smk-101"))
    text = edit(SMK_302, SMK_302[:-1] + ", ref: hall}")
    at_place(problems(text), "devices[4].ref", "feed", line_of(text, "id: smk-302"))


def test_responder_tier_needs_a_tiers_entry() -> None:
    text = edit('{id: station-1, name: "Micro fire station 1", tier: 3}',
                '{id: station-1, name: "Micro fire station 1", tier: 4}')
    lines = problems(text)
    at_place(lines, "responders[4].tier", "tier 4", line_of(text, "id: station-1"))


def test_device_on_a_floor_with_no_zone() -> None:
    text = edit(SMK_302, "{id: smk-302, kind: smoke, floor: 7, x: 12.0, y: 8.0}")
    at_place(problems(text), "devices[4].floor", "floor 7", line_of(text, "id: smk-302"))


def test_clear_above_alarm_is_rejected() -> None:
    text = edit(SMK_302, SMK_302[:-1] + ", alarm_at: 5, clear_at: 10}")
    line = at_place(problems(text), "devices[4]", "clear_at", line_of(text, "id: smk-302"))
    assert "alarm_at" in line


@pytest.mark.parametrize(("old", "new", "place"), [
    ("site: taibai-demo", "site: Taibai_Demo", "site"),
    ("{tier: 1, ack_timeout_s: 15}", "{tier: 1, ack_timeout_s: 0}", "tiers[0].ack_timeout_s"),
    ("sla: {locate_s: 10,", "sla: {locate_s: -1,", "sla.locate_s"),
    ("{id: smk-101,", "{id: smk/101,", "devices[0].id"),
    ("azimuth_deg: 45, fov_deg: 90}", "azimuth_deg: 45, fov_deg: 400}", "devices[8].fov_deg"),
])
def test_out_of_range_values_are_reported_with_their_place(old: str, new: str,
                                                           place: str) -> None:
    text = edit(old, new)
    lines = problems(text)
    assert any(re.search(re.escape(place) + r"(?![\w\[.])", x) for x in lines), lines


def test_bad_yaml_names_its_line() -> None:
    text = edit("zones:\n", "zones: [unclosed\n")
    (line,) = problems(text)
    assert "not valid YAML" in line
    m = re.search(r"line (\d+)", line)
    assert m, line
    # the parser notices one line after the unclosed bracket
    assert line_of(text, "[unclosed") <= int(m.group(1)) <= line_of(text, "[unclosed") + 1


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "", "42\n", "# nothing\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    (line,) = problems(text)
    assert "mapping" in line


def test_missing_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        load_site(ROOT / "configs" / "no-such-site.yaml")
    (line,) = exc.value.lines()
    assert "no-such-site.yaml" in line


# ------------------------------------------------------------------- the CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)


def test_check_config_ok() -> None:
    r = run_cli("check-config", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()
    assert len(out) == 1 and "ok" in out[0] and "taibai-demo" in out[0]
    assert "Traceback" not in r.stderr


def test_check_config_bad_file_lists_each_problem(tmp_path: Path) -> None:
    text = edit(SMK_302, "{id: smk-302, colour: red, kind: smoke, floor: 2, y: 8.0}")
    text = edit("worker: w-03}\n  - {id: b1-2f", "worker: w-99}\n  - {id: b1-2f", text)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    lines = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
    n = line_of(text, "id: smk-302")
    at_place(lines, "devices[4].x", "field required", n)
    at_place(lines, "devices[4].colour", "unknown key", n)
    # cross-references are checked once the fields are right
    text = edit("worker: w-03}\n  - {id: b1-2f", "worker: w-99}\n  - {id: b1-2f")
    text = edit(SMK_302, SMK_302[:-1] + ", feed: nope, ref: a}", text)
    bad.write_text(text)
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    lines = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
    assert len(lines) == 2, lines
    at_place(lines, "zones[3].worker", "w-99", line_of(text, "w-99"))
    at_place(lines, "devices[4].feed", "nope", line_of(text, "feed: nope"))


def test_check_config_missing_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    r = run_cli("check-config", str(missing))
    assert r.returncode == 2
    out = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
    assert len(out) == 1, out
    assert "nowhere.yaml" in out[0]
    assert "Traceback" not in r.stderr


def test_check_config_bad_yaml_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("site: [oops\n")
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    out = [x for x in (r.stdout + r.stderr).splitlines() if x.strip()]
    assert len(out) == 1 and "broken.yaml" in out[0] and "line" in out[0]


# ---------------------------------------------------------------- feeds (issue #3)


@pytest.mark.parametrize(("old", "new", "needle"), [
    ('ref: "1:0"', 'ref: "1-0"', "<unit>:<register>"),
    ('ref: "1:0"', 'ref: "0:0"', "unit must be 1-247"),
    ('ref: "1:0"', 'ref: "1:70000"', "register 0-65535"),
    ('ref: "1/1/131082"', 'ref: "1.1.131082"', "<sys type>/<sys addr>"),
])
def test_feed_refs_have_their_feeds_address_shape(old: str, new: str, needle: str) -> None:
    text = CONTRACT_SITE.replace(old, new)
    (line,) = [x for x in problems(text) if ".ref" in x]
    assert needle in line and "(line " in line


def test_a_ref_is_unique_on_its_feed() -> None:
    text = CONTRACT_SITE.replace('ref: "1/1/131083"', 'ref: "1/1/131082"')
    line = at_place(problems(text), "devices[9].ref", "already devices[7]",
                    line_of(text, "id: tmp-1"))
    assert "uitd" in line


def test_a_device_may_not_take_a_feeds_name() -> None:
    text = CONTRACT_SITE.replace("{id: flame-1,", "{id: z2m,")
    at_place(problems(text), "devices[11].id", "names a feed", line_of(text, "{id: z2m,"))


def test_clear_after_s_only_for_zigbee2mqtt_devices() -> None:
    ok = CONTRACT_SITE.replace("ref: kitchen_smoke}", "ref: kitchen_smoke, clear_after_s: 60}")
    assert parse_site(ok).device("smk-101").clear_after_s == 60
    bad = CONTRACT_SITE.replace('ref: "004-004"}', 'ref: "004-004", clear_after_s: 60}')
    at_place(problems(bad), "devices[6].clear_after_s", "Zigbee2MQTT", line_of(bad, "004-004"))


def test_serial_settings_and_supervision_keys() -> None:
    text = CONTRACT_SITE.replace(
        "port: /dev/ttyUSB0, baud: 9600, dialect: gst}",
        "port: /dev/ttyUSB0, baud: 9600, dialect: gst, parity: E, bytesize: 7, heartbeat_s: 90}")
    text = text.replace("{id: flame-1, kind: flame, floor: 2, x: 9.0, y: 6.0}",
                        "{id: flame-1, kind: flame, floor: 2, x: 9.0, y: 6.0, heartbeat_s: 300}")
    site = parse_site(text)
    panel = site.feed("panel-a")
    assert (panel.parity, panel.bytesize, panel.stopbits, panel.heartbeat_s) == ("E", 7, 1, 90)
    assert site.device("flame-1").heartbeat_s == 300
    bad = text.replace("parity: E", "parity: X")
    assert any("feeds[2].parity" in x for x in problems(bad))


@pytest.mark.parametrize(("extra", "needle"), [
    (", clear_at: 10}", "clear_at needs alarm_at"),
    (", scale: 0, alarm_at: 5}", "scale must not be 0"),
    (", alarm_at: .nan}", "finite"),
])
def test_analog_settings_that_could_never_work_are_refused(extra: str, needle: str) -> None:
    text = edit(SMK_302, SMK_302[:-1] + extra)
    assert any(needle in line and "devices[4]" in line for line in problems(text))


def test_modbus_ref_takes_ascii_digits_only() -> None:
    text = CONTRACT_SITE.replace('ref: "1:0"', 'ref: "１:0"')
    assert any("devices[8].ref" in line for line in problems(text))


def test_signed_only_for_modbus_registers() -> None:
    ok = CONTRACT_SITE.replace('ref: "2:7", scale: 1}', 'ref: "2:7", scale: 1, signed: true}')
    assert parse_site(ok).device("co-1").signed is True
    bad = CONTRACT_SITE.replace('ref: "004-004"}', 'ref: "004-004", signed: true}')
    at_place(problems(bad), "devices[6].signed", "Modbus", line_of(bad, "004-004"))


# ------------------------------------------- Modbus value types, GB/T 26875.3 centre keys

GAS_1 = 'ref: "1:0",\n     scale: 0.1, alarm_at: 25, clear_at: 10}'  # devices[8] on rs485


def test_modbus_data_type_and_word_order() -> None:
    text = CONTRACT_SITE.replace(GAS_1, 'ref: "1:0", data_type: float32, word_order: little,\n'
                                        '     alarm_at: 25, clear_at: 10}')
    gas = parse_site(text).device("gas-1")
    assert (gas.modbus_type, gas.modbus_word_order, gas.modbus_width) == ("float32", "little", 2)
    co = parse_site(CONTRACT_SITE).device("co-1")
    assert (co.modbus_type, co.modbus_word_order, co.modbus_width) == ("uint16", "big", 1)
    signed = parse_site(CONTRACT_SITE.replace('ref: "2:7", scale: 1}',
                                              'ref: "2:7", scale: 1, signed: true}'))
    assert signed.device("co-1").modbus_type == "int16"  # signed: true keeps meaning int16
    both = parse_site(CONTRACT_SITE.replace('ref: "2:7", scale: 1}',
                                            'ref: "2:7", signed: true, data_type: int16}'))
    assert both.device("co-1").modbus_type == "int16"


@pytest.mark.parametrize(("extra", "place", "needle"), [
    ("signed: true, data_type: float32", "devices[10].signed",
     "contradicts data_type: float32"),
    ("signed: true, data_type: uint32", "devices[10].signed", "contradicts data_type: uint32"),
    ("word_order: little", "devices[10].word_order", "a uint16 register has no word order"),
    ("data_type: int16, word_order: big", "devices[10].word_order", "only for 32-bit"),
    ("data_type: int64", "devices[10].data_type", "input should be"),
    ("data_type: float32, word_order: middle", "devices[10].word_order", "input should be"),
    ("wordorder: little", "devices[10].wordorder", "unknown key"),
])
def test_contradictory_or_unknown_modbus_value_keys(extra: str, place: str,
                                                     needle: str) -> None:
    text = CONTRACT_SITE.replace('ref: "2:7", scale: 1}', f'ref: "2:7", {extra}}}')
    at_place(problems(text), place, needle, line_of(text, '"2:7"'))


def test_modbus_value_keys_only_on_modbus_devices() -> None:
    bad = CONTRACT_SITE.replace('ref: "004-004"}', 'ref: "004-004", data_type: float32}')
    at_place(problems(bad), "devices[6].data_type", "modbus feed", line_of(bad, "004-004"))
    bad = edit(SMK_302, SMK_302[:-1] + ", word_order: big}", CONTRACT_SITE.replace(
        "{id: flame-1, kind: flame, floor: 2, x: 9.0, y: 6.0}", SMK_302))
    assert any("word_order: only for devices on a modbus feed" in x for x in problems(bad))


def test_a_32_bit_value_owns_its_second_register() -> None:
    extra = ('  - {id: gas-2, kind: gas, floor: 1, x: 6.0, y: 7.0, feed: rs485, ref: "1:1"}\n'
             'feeds:\n')
    text = CONTRACT_SITE.replace(GAS_1, 'ref: "1:0", data_type: uint32}').replace(
        "feeds:\n", extra, 1)
    at_place(problems(text), "devices[13].ref",
             "register 1 of unit 1 on feed 'rs485' is already read by devices[8] (gas-1, "
             "uint32 at registers 0..1)", line_of(text, "gas-2"))
    # the next register after the pair is free, and another unit's register 1 too
    ok = text.replace('ref: "1:1"}', 'ref: "1:2"}')
    assert parse_site(ok).device("gas-2").ref == "1:2"
    ok = text.replace('ref: "1:1"}', 'ref: "3:1"}')
    assert parse_site(ok).device("gas-2").ref == "3:1"
    # a 32-bit value cannot start at the last register
    last = CONTRACT_SITE.replace(GAS_1, 'ref: "1:65535", data_type: float32}')
    at_place(problems(last), "devices[8].ref", "takes registers 65535 and 65536",
             line_of(last, "gas-1"))


@pytest.mark.parametrize("address", ["88888", '"38 5B 01 00 00 00"', '"38 5b 01 00 00 00"'])
def test_gb26875_centre_address_as_number_or_wire_bytes(address: str) -> None:
    text = CONTRACT_SITE.replace('listen: "127.0.0.1:9000"}',
                                 f'listen: "127.0.0.1:9000", centre_address: {address}}}')
    feed = parse_site(text).feed("uitd")
    assert feed is not None and feed.centre_address_int == 0x015B38 == 88888


def test_gb26875_defaults_and_utc_offset() -> None:
    site = parse_site(CONTRACT_SITE)
    feed = site.feed("uitd")
    assert feed.centre_address_int == 0 and feed.utc_offset is None  # the site's: +08:00
    assert site.utc_offset == "+08:00"
    text = CONTRACT_SITE.replace('listen: "127.0.0.1:9000"}',
                                 'listen: "127.0.0.1:9000", utc_offset: "+00:00"}')
    assert parse_site(text).feed("uitd").utc_offset == "+00:00"


@pytest.mark.parametrize(("value", "place", "needle"), [
    ("centre_address: 281474976710656", "centre_address", "outside 0..281474976710655"),
    ("centre_address: -1", "centre_address", "outside 0.."),
    ('centre_address: "385B01000000"', "centre_address", "six hex bytes"),
    ('centre_address: "38 5B 01 00 00"', "centre_address", "six hex bytes"),
    ("centre_address: true", "centre_address", "integer or six hex bytes"),
    ('utc_offset: "8"', "utc_offset", "should match pattern"),
    ("utc_offset: 8", "utc_offset", "valid string"),
    ("centre_addr: 1", "centre_addr", "unknown key"),
])
def test_gb26875_bad_centre_keys(value: str, place: str, needle: str) -> None:
    text = CONTRACT_SITE.replace('listen: "127.0.0.1:9000"}',
                                 f'listen: "127.0.0.1:9000", {value}}}')
    at_place(problems(text), f"feeds[3].{place}", needle, line_of(text, "127.0.0.1:9000"))
