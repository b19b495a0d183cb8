"""Fault suite, quick versions: the gateway killed, its broker restarted, its disk filled.

The cases live in bench/faults.py (``python bench/faults.py`` runs all of them, the long
ones too, and prints the table); these tests run the short versions of four of them
against real servers and fail on any criterion the table would mark FAIL (the centre
case too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_sim.lab import InfluxDB


def run_quick(case: str, tmp_path: Path, influxdb: InfluxDB, **kw: Any) -> Any:
    """Run one case of bench/faults.py in its quick form; returns its Result."""
    from bench import faults

    ctx = faults.Ctx(tmp_path, quick=True, seed=kw.pop("seed", 1), influx=influxdb, **kw)
    result = faults.run_case(case, ctx)
    print(f"\n{case}: {result.status} in {result.duration_s:.0f} s")
    for key, value in result.figures.items():
        print(f"  {key}: {value}")
    for check in result.checks:
        print(f"  {check.text()}")
    for note in result.notes:
        print(f"  note: {note}")
    return result


def explain(result: Any) -> str:
    lines = [c.text() for c in result.failed]
    lines += [f"{k}: {v}" for k, v in result.figures.items()]
    lines += result.notes[:20]
    return "\n".join(lines)
