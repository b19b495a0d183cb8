"""``firegrid watch``: the duty room's board from the broker's retained topics.

The board model (gateway/board.py) is tested alone; the command is tested as a duty room
runs it, against a real Mosquitto that a running gateway fills.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.board import Board
from gateway.watch import as_json, render
from tests.harness import GatewayProc, Probe, coincidence, wait_for, write_site

ROOT = Path(__file__).resolve().parents[1]
P = "firegrid/s/"


def inc(ident: str, state: str, t0: float, **extra: object) -> bytes:
    return orjson.dumps({"id": ident, "state": state, "zone": "z1", "floor": 2, "x": 3.2,
                         "y": 4.6, "error_m": 2.4, "t0": t0, **extra})


def test_open_incidents_first_oldest_first_then_recent_finished() -> None:
    b = Board("s", {"z1": "East flats", "z2": "Kitchen"})
    b.apply(P + "incident/c", inc("c", "closed", 50.0))
    b.apply(P + "incident/b", inc("b", "confirmed", 90.0, tier=1, paged=["guard-1", "g2"],
                                  acked=["guard-1"], cells=[{"zone": "z1"}, {"zone": "z2"}]))
    b.apply(P + "incident/a", inc("a", "confirming", 80.0))
    b.apply(P + "confirm/a", orjson.dumps({"incident": "a", "deadline": 110.0, "to": "w-07"}))
    rows = b.rows(now=100.0)
    assert [r.incident for r in rows] == ["a", "b", "c"]
    a, bb, _ = rows
    assert a.where == "East flats F2 (3,5) ±2 m" and a.confirm == "w-07: 10 s left"
    assert bb.cells == ["Kitchen"]
    assert bb.responders == "tier 1: guard-1 acked, g2 paged; in place: 50 s left"
    assert a.responders == "in place: 40 s left"
    assert b.rows(now=115.0)[0].confirm == "w-07: overdue 5 s"
    assert b.open_count() == 2
    b.apply(P + "incident/b", inc("b", "confirmed", 90.0, tier=1, paged=["guard-1"],
                                  on_scene=["guard-1"], acked=["guard-1"]))
    assert b.rows(now=100.0)[1].responders == "tier 1: guard-1 on scene"  # target met
    assert b.rows(now=151.0)[0].responders == ""  # a's 60 s have passed: the breach says it
    assert [r.incident for r in b.rows(now=100.0, finished=0)] == ["a", "b"]


def test_an_empty_retained_message_clears_and_bad_ones_are_counted_not_fatal() -> None:
    b = Board("s")
    b.apply(P + "incident/a", inc("a", "confirming", 1.0))
    b.apply(P + "trouble/smk-1", orjson.dumps({"device": "smk-1", "trouble": "offline",
                                               "troubles": ["offline"], "since": 5.0}))
    b.apply(P + "feed/panel", orjson.dumps({"feed": "panel", "state": "down", "since": 3.0}))
    b.apply(P + "incident/x", b"{not json")
    b.apply(P + "device/y", b"[1, 2]")
    b.apply(P + "signal/smk-1", b"garbage is traffic, not state")
    b.apply("firegrid/other/incident/z", inc("z", "confirming", 1.0))
    assert b.bad_count == 2
    assert b.bad[0].startswith("incident/x: not JSON") and b.bad[1] == \
        "device/y: a JSON list, not an object"
    assert list(b.incidents) == ["a"]
    assert b.trouble_rows() == [("feed panel", "down", 3.0, ""), ("smk-1", "offline", 5.0, "")]
    b.apply(P + "trouble/smk-1", b"")
    b.apply(P + "incident/a", b"")
    assert b.trouble_rows() == [("feed panel", "down", 3.0, "")] and not b.incidents


def watch(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "watch", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_the_duty_room_board_from_a_running_gateway(tmp_path: Path, mosquitto: Mosquitto,
                                                    influxdb: InfluxDB) -> None:
    site = write_site(tmp_path)
    gw = GatewayProc(site, mosquitto.url, influxdb.url("watch"), tmp_path / "journal.sqlite3",
                     tmp_path / "gateway.log")
    probe = Probe(mosquitto.port)
    try:
        gw.start()
        page = coincidence(probe)  # confirmed, guard-1 paged
        first = page["incident"]
        probe.signal("smk-k1", kind="smoke")  # the kitchen next door joins
        probe.signal("smk-b1", kind="smoke")  # building b: a second incident, queued to w-2
        probe.signal("tmp-b", "fault", kind="temperature")
        wait_for(lambda: probe.find(lambda m: m.topic == "trouble/tmp-b" and m.payload),
                 10, "trouble/tmp-b")
        second = probe.first_incident("smk-b1")

        r = watch("--config", str(site), "--mqtt", mosquitto.url, "--once")
        assert r.returncode == 0, r.stderr + r.stdout
        (tmp_path / "board.txt").write_text(r.stdout)
        out = r.stdout
        assert "firegrid test-site" in out and "gateway online" in out
        assert "2 open incidents" in out and "1 in trouble" in out
        lines = out.splitlines()
        row1 = next(ln for ln in lines if first in ln)
        assert "confirmed" in row1 and "a-1f-kitchen" in row1 and "guard-1 paged" in row1
        assert "auto: coincidence" in row1
        row2 = next(ln for ln in lines if second in ln)
        assert "confirming" in row2 and "w-2:" in row2 and "s left" in row2
        assert any("tmp-b" in ln and "fault" in ln for ln in lines)

        j = watch("--config", str(site), "--mqtt", mosquitto.url, "--once", "--format", "json")
        assert j.returncode == 0, j.stderr
        board = orjson.loads(j.stdout)
        assert board["gateway"] == "online" and board["open"] == 2
        by_id = {i["incident"]: i for i in board["incidents"]}
        assert by_id[first]["also_in_alarm"] == ["a-1f-kitchen"]
        assert by_id[first]["state"] == "confirmed" and by_id[second]["state"] == "confirming"
        assert [t["device"] for t in board["trouble"]] == ["tmp-b"]
        assert board["unreadable"] == 0

        assert gw.stop() == 0  # a clean stop says offline: the check fails, exit 1
        r = watch("--site", "test-site", "--mqtt", mosquitto.url, "--once")
        assert r.returncode == 1 and "gateway offline" in r.stdout
    finally:
        probe.close()
        gw.stop()


def test_no_broker_and_no_site_are_one_line_each(tmp_path: Path) -> None:
    r = watch("--site", "x", "--mqtt", "mqtt://127.0.0.1:1", "--once")
    assert r.returncode == 3 and "unreachable" in r.stderr and "Traceback" not in r.stderr
    r = watch("--mqtt", "mqtt://127.0.0.1:1", "--once")
    assert r.returncode == 2 and "--config" in r.stderr


def test_a_wrong_format_is_a_config_error() -> None:
    r = watch("--site", "x", "--mqtt", "mqtt://127.0.0.1:1", "--once", "--format", "xml")
    assert r.returncode == 2 and "--format" in r.stderr


def test_the_live_board_follows_changes_and_survives_a_broker_restart(
        mosquitto: Mosquitto) -> None:
    """Run as on the duty-room screen until Ctrl-C; its last frame is what it knew then."""
    probe = Probe(mosquitto.port, prefix="firegrid/s/")
    probe.pub("status", b"online", retain=True)
    probe.pub("incident/inc-1", inc("inc-1", "confirming", time.time()), retain=True)
    probe.pub("trouble/smk-9", orjson.dumps({"device": "smk-9", "trouble": "tamper",
                                             "since": time.time()}), retain=True)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "watch", "--site", "s",
                             "--mqtt", mosquitto.url], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        probe.close()
        mosquitto.stop()  # the broker goes away under the board, and comes back
        time.sleep(1.0)
        mosquitto.start()
        probe = Probe(mosquitto.port, prefix="firegrid/s/")
        # cleared while the board was away: no message says so after it reconnects
        probe.pub("trouble/smk-9", b"", retain=True)
        probe.pub("incident/inc-1", inc("inc-1", "closed", time.time() - 5), retain=True)
        probe.pub("incident/inc-2", inc("inc-2", "confirmed", time.time()), retain=True)
        time.sleep(4.0)  # reconnect (2 s) and a redraw (1 s)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(2)  # Ctrl-C
        out, err = proc.communicate(timeout=10)
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    frame = out[out.rfind("firegrid s "):]  # the last frame drawn
    assert "1 open incident " in frame
    assert "inc-2" in frame and "inc-1" in frame
    row1 = next(ln for ln in frame.splitlines() if "inc-1" in ln)
    assert "closed" in row1
    assert "smk-9" not in frame and "0 in trouble" in frame


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
                    | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    k: JSON | st.just("[bold]x[/nope] [1]") for k in (
        "id", "state", "zone", "floor", "x", "y", "error_m", "t0", "cells", "paged", "acked",
        "on_scene", "breaches", "tier", "unverified", "confirmed_by", "confirm_rule",
        "deadline", "to", "troubles", "trouble", "since", "detail")})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["incident", "confirm", "trouble", "feed", "device",
                                           "status"]),
                          st.text(min_size=1, max_size=6).filter(lambda t: "/" not in t),
                          FIELDS | st.binary(max_size=40)), max_size=8),
       st.floats(min_value=0, max_value=4e9))
def test_any_retained_payload_leaves_a_board_that_draws(messages: list, now: float) -> None:
    """Garbled or hostile retained state: counted or shown, never an exception."""
    b = Board("s", {"z": "Store [B]"})
    for kind, ident, body in messages:
        payload = body if isinstance(body, bytes) else orjson.dumps(
            body, option=orjson.OPT_NON_STR_KEYS) if body else b"{}"
        b.apply(P + ("status" if kind == "status" else f"{kind}/{ident}"), payload)
    console = Console(file=io.StringIO(), width=160)
    console.print(render(b, now))
    orjson.loads(as_json(b, now))
