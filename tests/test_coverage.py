"""Detector coverage notes (gateway/coverage.py): GB 50116-2013 counts per cell.

An installer reads ``firegrid check-config``; a cell with too few detectors must be named
there, with its area and what the code asks, and must not stop the gateway.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import parse_site
from gateway.coverage import area, farthest, needed, notes, radius

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "taibai-demo.yaml"

SITE = """
site: cov
zones:
  - {id: hall, building: b, floor: 1, polygon: [[0,0],[20,0],[20,12],[0,12]]}
  - {id: flat, building: b, floor: 1, polygon: [[20,0],[28,0],[28,10],[20,10]]}
  - {id: corridor, building: b, floor: 1, polygon: [[0,12],[40,12],[40,14],[0,14]]}
  - {id: kitchen, building: b, floor: 1, polygon: [[28,0],[34,0],[34,6],[28,6]]}
devices:
%s
responders: [{id: w, tier: 0}]
"""


def site(*devices: str) -> str:
    return SITE % "\n".join(f"  - {d}" for d in devices)


def test_area_and_what_the_code_asks() -> None:
    s = parse_site(site("{id: s1, kind: smoke, floor: 1, x: 2, y: 2}"))
    hall, flat, corridor, kitchen = s.zones
    assert area(hall.polygon) == pytest.approx(240.0)
    assert needed(hall, "smoke") == 4 and needed(hall, "heat") == 12  # 60 / 20 m² each
    assert needed(flat, "smoke") == 1 and needed(flat, "heat") == 4  # 80 m²: 80 / 20
    assert needed(corridor, "smoke") == 3 and needed(corridor, "heat") == 4  # 40 m / 15, 10
    assert needed(kitchen, "heat") == 2  # 36 m²: over 30, so 20 m² each


def test_each_short_cell_is_named_with_its_area_and_count() -> None:
    s = parse_site(site(
        "{id: s1, kind: smoke, floor: 1, x: 3, y: 3}",
        "{id: s2, kind: smoke, floor: 1, x: 15, y: 9}",
        "{id: s3, kind: smoke, floor: 1, x: 24, y: 5}",
        "{id: s4, kind: smoke, floor: 1, x: 5, y: 13}",
        "{id: h1, kind: heat, floor: 1, x: 30, y: 3}",
        "{id: m1, kind: manual, floor: 1, x: 1, y: 1}"))
    got = [n for n in notes(s) if "asks for" in n]  # the counts (radius: below)
    assert len(got) == 3, got
    assert got[0].startswith("zones[0] (hall): 240 m² with 2 smoke;")
    assert "asks for 4 smoke" in got[0]
    assert got[1].startswith("zones[2] (corridor): 80 m² with 1 smoke;") and "3 smoke" in got[1]
    assert got[2].startswith("zones[3] (kitchen): 36 m² with 1 heat;")
    # the flat has its one detector; a call point is not a detector
    assert not any("flat" in n for n in got)


def test_smoke_and_heat_add_up_and_a_full_cell_has_no_note() -> None:
    # the hall: two rows 3 m from the walls, 6.5 m apart along them (5.8 m radius)
    devices = [f"{{id: s{i}{j}, kind: smoke, floor: 1, x: {x}, y: {y}}}"
               for i, x in enumerate((3.5, 10, 16.5)) for j, y in enumerate((3, 9))]
    devices += ["{id: s9, kind: smoke, floor: 1, x: 24, y: 5}",
                "{id: c1, kind: smoke, floor: 1, x: 5, y: 13}",
                "{id: c2, kind: smoke, floor: 1, x: 20, y: 13}",
                "{id: c3, kind: smoke, floor: 1, x: 35, y: 13}",
                # kitchen: one heat (half of 2) and one smoke (all of 1)
                "{id: h1, kind: heat, floor: 1, x: 30, y: 3}",
                "{id: k1, kind: smoke, floor: 1, x: 32, y: 4}"]
    assert notes(parse_site(site(*devices))) == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT)


def test_check_config_prints_notes_and_still_exits_0(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.yaml"
    sparse.write_text(site("{id: s1, kind: smoke, floor: 1, x: 3, y: 3}"), encoding="utf-8")
    r = run_cli("check-config", str(sparse))
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()
    assert "ok" in out[0]
    assert [ln.split(": note: ")[1].split(" ")[0] for ln in out[1:] if "asks for" in ln] == [
        "zones[0]", "zones[1]", "zones[2]", "zones[3]"]
    # and the hall's far corner, 19 m from the one detector
    assert next(ln for ln in out[1:] if "beyond" in ln).split(": note: ")[1].startswith(
        "zones[0] (hall): the point (19.9, 11.9) is 19.1 m from the nearest detector")
    assert "zones[1] (flat): 80 m² with no smoke or heat detector" in r.stdout


def test_the_example_site_meets_the_code() -> None:
    r = run_cli("check-config", str(EXAMPLE))
    assert r.returncode == 0 and "note" not in r.stdout, r.stdout


def test_radius_by_room_size_and_corridor() -> None:
    s = parse_site(site("{id: s1, kind: smoke, floor: 1, x: 2, y: 2}"))
    hall, flat, corridor, kitchen = s.zones
    assert radius(hall, "smoke") == 5.8 and radius(flat, "smoke") == 6.7  # 240 / 80 m²
    assert radius(kitchen, "heat") == 3.6 and radius(flat, "heat") == 3.6  # both over 30 m²
    assert radius(corridor, "smoke") == pytest.approx(7.566, abs=1e-3)  # 15 m / 2, 1 m across
    far = farthest(hall, [("smoke", 2.0, 2.0)])
    assert far is not None
    x, y, dist, r = far
    assert (x, y) == (pytest.approx(19.875), pytest.approx(11.875)) and r == 5.8
    assert dist == pytest.approx(((19.875 - 2) ** 2 + (11.875 - 2) ** 2) ** 0.5)
    assert farthest(hall, []) is None


def test_enough_detectors_bunched_in_one_end_leave_the_far_end_named() -> None:
    """The count is met (4 in 240 m²) but the east end is 13 m from the nearest one."""
    bunched = [f"{{id: s{i}, kind: smoke, floor: 1, x: {x}, y: {y}}}"
               for i, (x, y) in enumerate([(2, 3), (2, 9), (7, 3), (7, 9)])]
    got = [n for n in notes(parse_site(site(*bunched))) if n.startswith("zones[0]")]
    assert len(got) == 1, got
    assert got[0].startswith("zones[0] (hall): the point (19.9, 0.1) is 13.2 m from the "
                             "nearest detector, beyond the 5.8 m"), got[0]


def test_a_heat_detector_covers_only_its_own_smaller_radius() -> None:
    """The kitchen (36 m²) with one heat detector in a corner: 3.6 m does not reach across."""
    got = [n for n in notes(parse_site(site("{id: h1, kind: heat, floor: 1, x: 29, y: 1}")))
           if n.startswith("zones[3]")]
    assert any("beyond the 3.6 m" in n and "(33.9, 5.9)" in n for n in got), got
    near = [n for n in notes(parse_site(site("{id: h1, kind: heat, floor: 1, x: 29, y: 1}",
                                             "{id: k1, kind: smoke, floor: 1, x: 31, y: 3}")))
            if n.startswith("zones[3]") and "beyond" in n]
    assert near == []  # the smoke detector's 6.7 m covers the rest


def high(ceiling: float, *devices: str) -> list[str]:
    """The hall (240 m²) alone, under a given ceiling."""
    text = site(*devices).replace(
        "polygon: [[0,0],[20,0],[20,12],[0,12]]}",
        f"polygon: [[0,0],[20,0],[20,12],[0,12]], ceiling_m: {ceiling}}}")
    return [n for n in notes(parse_site(text)) if n.startswith("zones[0]")]


def test_a_ceiling_between_6_and_12_m_lets_a_smoke_detector_protect_80_m2() -> None:
    s = parse_site(site("{id: s1, kind: smoke, floor: 1, x: 2, y: 2}").replace(
        "[0,12]]}", "[0,12]], ceiling_m: 8}"))
    hall = s.zones[0]
    assert needed(hall, "smoke") == 3 and radius(hall, "smoke") == 6.7  # 240 / 80
    assert needed(hall, "heat") == 12  # a heat detector's row does not change up to 8 m
    # four in one row along the middle: 6.5 m from the corners, within 6.7 m at 8 m; at
    # the default (up to 6 m) the count is met but not the 5.8 m radius
    row = [f"{{id: s{i}, kind: smoke, floor: 1, x: {x}, y: 6}}" for i, x in
           enumerate((2.5, 7.5, 12.5, 17.5))]
    got = high(8, *row)
    assert got == [], got
    low = [n for n in notes(parse_site(site(*row))) if n.startswith("zones[0]")]
    assert len(low) == 1 and "beyond the 5.8 m" in low[0] and "ceiling up to 6 m" in low[0]


def test_above_12_m_point_detectors_do_not_count_and_the_note_says_why() -> None:
    got = high(14, "{id: s1, kind: smoke, floor: 1, x: 5, y: 6}",
               "{id: h1, kind: heat, floor: 1, x: 15, y: 6}")
    assert len(got) == 2, got
    assert got[0].startswith("zones[0] (hall): ceiling 14 m: a point smoke detector works "
                             "under at most 12 m (GB 50116-2013 §5.2.1), so its 1 smoke "
                             "are not counted")
    assert "point heat detector works under at most 8 m" in got[1]


def test_between_8_and_12_m_heat_detectors_do_not_count() -> None:
    got = high(10, "{id: h1, kind: heat, floor: 1, x: 5, y: 6}")
    assert any("a point heat detector works under at most 8 m" in n for n in got)
    assert any("with no smoke detector; GB 50116-2013 asks for 3 smoke detectors "
               "(§6.2.2, ceiling 10 m)" in n for n in got), got
