"""The journal on a real SQLite file: durability order, outbox, records, pruning."""

from __future__ import annotations

from pathlib import Path

from gateway.journal import Journal
from gateway.model import NS, DeviceState, Step

DAY = 86400 * NS


def step(inc: str, stage: str, t_ns: int, **fields: object) -> Step:
    return Step(incident=inc, stage=stage, t_ns=t_ns, t0_ns=t_ns, fields=dict(fields))


def test_commit_outbox_records_and_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    items = j.commit([step("i-1", "detected", 1 * NS, counter=1)],
                     [("page", "page/g-1", b"{}", False)], records=["m f=1 1"])
    assert [i.topic for i in items] == ["page/g-1"]
    j.close()
    j = Journal(tmp_path / "j.sqlite3")  # what a restart sees
    assert [s.stage for s in j.open_steps()] == ["detected"] and j.counter() == 1
    assert [i.topic for i in j.pending_outbox()] == ["page/g-1"]
    j.sent([items[0].id])
    assert j.pending_outbox() == []
    assert j.records_after(0) == [(1, "m f=1 1")]
    j.forget_records(1)
    assert j.pending_records() == 0


def test_device_states_keep_their_receipt_across_a_restart(tmp_path: Path) -> None:
    """A restarted gateway still knows which alarm it heard last from each device, so a
    device sending that alarm again (no receipt reached it) does not open a new incident."""
    j = Journal(tmp_path / "j.sqlite3")
    j.commit([], devices=[DeviceState("smk-1", "alarm", 5 * NS, "smoke", alarm_ts=1234.5),
                          DeviceState("co-1", "trouble", 6 * NS, "co", ("battery_low",), "low")])
    j.close()
    j = Journal(tmp_path / "j.sqlite3")
    got = {d.device: d for d in j.devices()}
    assert got["smk-1"].alarm_ts == 1234.5 and got["smk-1"].state == "alarm"
    assert got["co-1"].alarm_ts is None and got["co-1"].troubles == ("battery_low",)


def test_prune_keeps_open_and_unforwarded_steps(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    old = 10 * DAY
    j.commit([step("done", "detected", old, counter=1), step("done", "closed", old + NS),
              step("open", "detected", old + 2 * NS, counter=2),
              step("late", "detected", old + 3 * NS, counter=3),
              step("late", "closed", old + 4 * NS)])
    j.set_cursor(3)  # InfluxDB has the first three steps only
    assert j.prune(before_ns=old + DAY) == 2  # both steps of "done"
    left = {(s.incident, s.stage) for s in j.all_steps()}
    assert left == {("open", "detected"), ("late", "detected"), ("late", "closed")}
    assert [s.incident for s in j.open_steps()] == ["open"]
    # and the most recently finished ones on request, each whole, in journal order
    j.commit([step("newer", "detected", old + 5 * NS, counter=4),
              step("newer", "closed", old + 6 * NS)])
    assert [(s.incident, s.stage) for s in j.open_steps(finished=1)] == [
        ("open", "detected"), ("newer", "detected"), ("newer", "closed")]
    assert {s.incident for s in j.open_steps(finished=5)} == {"open", "late", "newer"}
    assert j.counter() == 4
    used = j.used_bytes()
    assert 0 < used < 1024 * 1024
