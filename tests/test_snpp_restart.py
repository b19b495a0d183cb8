"""A two-way SNPP pager's reply that comes while the gateway is down is not lost.

The gateway pages a responder on firegrid's two-way SNPP simulator, is killed (-9) right
after the page is delivered, and the pager answers 01 (acknowledge) while it is down.
The restarted gateway finds the journaled poll, asks the server again and records the
acknowledgement; the poll row is cleared once the incident no longer needs an answer.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from firmware_sim.lab import InfluxDB, Mosquitto, free_port
from tests.harness import GatewayProc, Probe, influx_steps, wait_for
from tests.test_pagers_e2e import Server

SITE = """
site: snpp-restart
sla: {locate_s: 10, confirm_s: 30, in_place_s: 120}
zones:
  - {id: a-1f, building: a, floor: 1, polygon: [[0,0],[40,0],[40,20],[0,20]], worker: w-1}
devices:
  - {id: mcp-a, kind: manual, floor: 1, x: 2, y: 2}
responders:
  - {id: w-1, tier: 0}
  - {id: station-1, tier: 1, pager: {type: snpp, host: 127.0.0.1, port: SIMPORT,
     pager_id: "5550004"}}
tiers:
  - {tier: 1, ack_timeout_s: 90}
"""


def _polls(journal: Path) -> int:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM outbox WHERE kind = 'poll'").fetchone()[0]
    finally:
        db.close()


def test_a_reply_sent_while_the_gateway_is_down_is_recorded_after_the_restart(
        tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB) -> None:
    port = free_port()
    (tmp_path / "site.yaml").write_text(SITE.replace("SIMPORT", str(port)))
    sim = Server([sys.executable, "-m", "firmware_sim.snpp_server", "--listen",
                  f"127.0.0.1:{port}", "--auto-reply", "01", "--after", "4"]).start()
    journal = tmp_path / "journal.sqlite"
    gw = GatewayProc(tmp_path / "site.yaml", mosquitto.url, influxdb.url("snpp_restart"),
                     journal, tmp_path / "gateway.log")
    probe = Probe(mosquitto.port, "firegrid/snpp-restart/")
    try:
        wait_for(lambda: sim.proc is not None and _listening(port), 10, "SNPP simulator")
        gw.start()
        sent = probe.signal("mcp-a")  # call point: confirmed at once, station-1 paged
        t_page, _ = sim.wait_page(sent)
        gw.wait_log("page delivery", timeout=10)
        wait_for(lambda: _polls(journal) == 1, 5, "the poll journaled")
        gw.kill9()  # before the pager's reply (4 s after the page)
        killed = time.time()
        assert killed - t_page < 3.5, "killed before the reply"
        time.sleep(max(0.0, t_page + 4.5 - time.time()))  # the pager answers meanwhile
        gw.start()
        inc = probe.first_incident("mcp-a")

        def acked() -> list | None:
            rows = influx_steps(influxdb.base_url, "snpp_restart", inc)
            got = [r for r in rows if r["stage"] == "acked"]
            return rows if got else None

        rows = wait_for(acked, 20, "acked after the restart")
        (ack,) = [r for r in rows if r["stage"] == "acked"]
        assert ack["responder"] == "station-1" and ack["tier"] == "1"
        assert ack["elapsed_s"] > killed - sent, "recorded by the restarted gateway"
        assert "snpp poll resumed" in gw.log_text()
        # the reply is reported once, not again at every poll or restart
        time.sleep(4.0)
        rows = influx_steps(influxdb.base_url, "snpp_restart", inc)
        assert [r["stage"] for r in rows].count("acked") == 1
        assert not [r for r in rows if r["stage"] == "refused"], rows
        # once the incident is closed nobody's answer is wanted: the poll is forgotten,
        # and the server is told to forget the page too (KTAG, answered 250)
        probe.pub(f"incident/{inc}/close", {"by": "w-1", "reason": "test done"})
        wait_for(lambda: _polls(journal) == 0, 10, "the poll row cleared")
        gw.wait_log("snpp page tag killed", timeout=5)
        assert "outcome='killed'" in gw.log_text()
    finally:
        try:
            assert gw.stop() == 0
        finally:
            probe.close()
            sim.stop()


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
