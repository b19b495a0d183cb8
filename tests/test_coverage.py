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
from gateway.coverage import area, needed, notes

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
    got = notes(s)
    assert len(got) == 3, got
    assert got[0].startswith("zones[0] (hall): 240 m² with 2 smoke;")
    assert "asks for 4 smoke" in got[0]
    assert got[1].startswith("zones[2] (corridor): 80 m² with 1 smoke;") and "3 smoke" in got[1]
    assert got[2].startswith("zones[3] (kitchen): 36 m² with 1 heat;")
    # the flat has its one detector; a call point is not a detector
    assert not any("flat" in n for n in got)


def test_smoke_and_heat_add_up_and_a_full_cell_has_no_note() -> None:
    devices = [f"{{id: s{i}, kind: smoke, floor: 1, x: {2 + 5 * i}, y: 6}}" for i in range(4)]
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
    assert [ln.split(": note: ")[1].split(" ")[0] for ln in out[1:]] == [
        "zones[0]", "zones[1]", "zones[2]", "zones[3]"]
    assert "zones[1] (flat): 80 m² with no smoke or heat detector" in r.stdout


def test_the_example_site_meets_the_code() -> None:
    r = run_cli("check-config", str(EXAMPLE))
    assert r.returncode == 0 and "note" not in r.stdout, r.stdout
