"""Issue #5 acceptance: responders paged over TAP and SNPP by ``firegrid run``.

Tier 1 carries a TAP pager served by the TAP terminal simulator (firmware_sim), tier 2
an SNPP pager served by Net::SNPP::Server (Debian's libnet-snpp-perl, not firegrid's
code), and tier 3 a two-way SNPP pager on firegrid's SNPP simulator, whose pager
answers 01 (acknowledge). Every step is then read back from InfluxDB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerting.cap import validate_cap
from firmware_sim.lab import InfluxDB, Mosquitto, free_port
from tests.harness import GatewayProc, Probe, influx_steps, wait_for

HERE = Path(__file__).resolve().parent

SITE = """
site: test-site
sla: {locate_s: 10, confirm_s: 30, in_place_s: 60}
zones:
  - {id: a-1f, name: "Block A lobby", building: a, floor: 1,
     polygon: [[0,0],[40,0],[40,20],[0,20]], worker: w-1}
  - {id: b-1f, building: b, floor: 1, polygon: [[100,0],[140,0],[140,20],[100,20]], worker: w-1}
  - {id: c-1f, building: c, floor: 1, polygon: [[200,0],[240,0],[240,20],[200,20]], worker: w-1}
devices:
  - {id: mcp-a, kind: manual, floor: 1, x: 2, y: 2}
  - {id: mcp-b, kind: manual, floor: 1, x: 102, y: 2}
  - {id: mcp-c, kind: manual, floor: 1, x: 202, y: 2}
responders:
  - {id: w-1, tier: 0}
  - {id: guard-1, tier: 1, pager: {type: tap, host: 127.0.0.1, port: TAPPORT,
     password: "000000", pager_id: "1234567"}}
  - {id: squad-3, tier: 2, pager: {type: snpp, host: 127.0.0.1, port: PERLPORT,
     pager_id: "5550003"}}
  - {id: station-1, tier: 3, pager: {type: snpp, host: 127.0.0.1, port: SIMPORT,
     pager_id: "5550004"}}
tiers:
  - {tier: 1, ack_timeout_s: 4}
  - {tier: 2, ack_timeout_s: 3}
  - {tier: 3, ack_timeout_s: 60}
"""


class Server:
    """A pager server in its own process; every JSON line it prints is a received page."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc: subprocess.Popen[str] | None = None
        self.pages: list[tuple[float, dict]] = []
        self.lock = threading.Lock()

    def start(self, ready: str | None = None) -> Server:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        if ready is not None:  # the server says on stderr when it listens
            assert self.proc.stderr is not None
            line = self.proc.stderr.readline()
            assert ready in line, line
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") in (None, "page"):
                with self.lock:
                    self.pages.append((time.time(), obj))

    def wait_page(self, after: float, timeout: float = 10.0) -> tuple[float, dict]:
        def found() -> tuple[float, dict] | None:
            with self.lock:
                return next(((t, p) for t, p in self.pages if t >= after), None)
        return wait_for(found, timeout, f"a page at {self.argv[:3]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def tap_terminal(port: int, *flags: str) -> Server:
    return Server([sys.executable, "-m", "firmware_sim.tap_terminal", "--tcp",
                   f"127.0.0.1:{port}", "--password", "000000", *flags]
                  ).start("listening")


class Lab:
    def __init__(self, folder: Path, broker: Mosquitto, influx: InfluxDB):
        self.tap_port, self.perl_port, self.sim_port = free_port(), free_port(), free_port()
        (folder / "site.yaml").write_text(
            SITE.replace("TAPPORT", str(self.tap_port)).replace("PERLPORT", str(self.perl_port))
            .replace("SIMPORT", str(self.sim_port)))
        self.influx = influx
        self.gateway = GatewayProc(folder / "site.yaml", broker.url, influx.url("pagers_e2e"),
                                   folder / "journal.sqlite", folder / "gateway.log")
        self.tap = tap_terminal(self.tap_port)
        self.perl = Server(["perl", str(HERE / "snpp_server.pl"), str(self.perl_port)]).start()
        wait_for(lambda: self.perl.proc is not None and self._listening(self.perl_port), 10,
                 "Net::SNPP::Server")
        self.two_way = Server([sys.executable, "-m", "firmware_sim.snpp_server", "--listen",
                               f"127.0.0.1:{self.sim_port}", "--auto-reply", "01",
                               "--after", "1"]).start()
        wait_for(lambda: self._listening(self.sim_port), 10, "SNPP simulator")
        self.probe = Probe(broker.port)

    @staticmethod
    def _listening(port: int) -> bool:
        import socket
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def steps(self, incident: str, timeout: float = 10.0, until: str | None = None) -> list:
        def got() -> list | None:
            rows = influx_steps(self.influx.base_url, "pagers_e2e", incident)
            return rows if until is None or any(r["stage"] == until for r in rows) else None
        return sorted(wait_for(got, timeout, f"{until} of {incident} in InfluxDB"),
                      key=lambda r: r["time"])

    def close(self, incident: str) -> None:
        self.probe.pub(f"incident/{incident}/close", {"by": "w-1", "reason": "test done"})


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("pagers")
    broker, influx = Mosquitto(), InfluxDB()
    broker.start(folder / "mosquitto")
    influx.start(folder / "influx")
    lab = None
    try:
        lab = Lab(folder, broker, influx)
        lab.gateway.start()
        yield lab
    finally:
        try:  # every server is stopped by its PID even when the gateway's stop fails
            rc = lab.gateway.stop() if lab else 0
        finally:
            if lab is not None:
                lab.probe.close()
                for server in (lab.tap, lab.perl, lab.two_way):
                    server.stop()
            influx.stop()
            broker.stop()
        assert rc == 0


def _by(rows: list, stage: str, responder: str | None = None) -> list:
    return [r for r in rows if r["stage"] == stage
            and (responder is None or r.get("responder") == responder)]


def test_tiers_reach_tap_and_snpp_in_turn_and_a_two_way_ack_is_recorded(lab: Lab) -> None:
    sent = lab.probe.signal("mcp-a")  # a manual call point: confirmed at once, tier 1 paged
    t_tap, page = lab.tap.wait_page(sent)
    assert t_tap - sent < 1.0, "the TAP terminal has the page within 1 s"
    assert page["pager_id"] == "1234567"
    assert page["text"].startswith("FIRE a Block A lobby F1") and len(page["text"]) <= 80
    inc = lab.probe.first_incident("mcp-a")
    # guard-1 never answers: tier 2 (Net::SNPP::Server) at ack_timeout_s = 4 s
    t_snpp, snpp_page = lab.perl.wait_page(sent, 15)
    assert snpp_page["pager"] == "5550003" and inc in snpp_page["message"]
    assert 4.0 - 0.3 < t_snpp - sent < 4.0 + 1.0, t_snpp - sent
    # squad-3's one-way pager cannot answer: tier 3, two-way, answers 01 after 1 s
    t_sim, _ = lab.two_way.wait_page(sent, 15)
    assert 7.0 - 0.3 < t_sim - sent < 7.0 + 1.0, t_sim - sent
    rows = lab.steps(inc, 20, until="acked")
    (ack,) = _by(rows, "acked", "station-1")
    assert ack["tier"] == "3"
    paged = {r["responder"]: r for r in _by(rows, "paged")}
    assert set(paged) == {"guard-1", "squad-3", "station-1"}
    assert json.loads(json.dumps(paged["guard-1"]))["channel"] == "tap"
    assert paged["squad-3"]["channel"] == paged["station-1"]["channel"] == "snpp"
    delivered = {r["responder"]: r for r in _by(rows, "delivered")}
    assert set(delivered) == {"guard-1", "squad-3", "station-1"}
    assert "one-way" in delivered["squad-3"]["detail"], "Net::SNPP::Server has no MSTA"
    unanswered = [r for r in _by(rows, "unanswered")]
    assert [r["tier"] for r in unanswered] == ["1", "2"]
    assert abs(unanswered[0]["elapsed_s"] - 4.0) < 1.0
    assert abs(unanswered[1]["elapsed_s"] - 7.0) < 1.0
    # the confirmed fire as a CAP 1.2 alert, retained; a Cancel once it is closed
    alert = lab.probe.wait(lambda m: m.topic == f"cap/{inc}" and bool(m.payload))
    assert validate_cap(alert.payload) == [] and b"<msgType>Alert</msgType>" in alert.payload
    assert b"<category>Fire</category>" in alert.payload and b"Block A lobby" in alert.payload
    closing = time.time()
    lab.close(inc)
    cancel = lab.probe.wait(lambda m: m.t >= closing and m.topic == f"cap/{inc}"
                            and bool(m.payload))
    assert validate_cap(cancel.payload) == [] and b"<msgType>Cancel</msgType>" in cancel.payload


def test_a_nak_is_resent_and_the_page_gets_through(lab: Lab) -> None:
    lab.tap.stop()
    lab.tap = tap_terminal(lab.tap_port, "--nak", "1")
    sent = lab.probe.signal("mcp-b")
    t_tap, page = lab.tap.wait_page(sent)
    assert t_tap - sent < 1.0
    inc = lab.probe.first_incident("mcp-b")
    rows = lab.steps(inc, until="delivered")
    (d,) = _by(rows, "delivered", "guard-1")
    assert "2 block sends" in d["detail"], d["detail"]
    with lab.tap.lock:
        assert [p for t, p in lab.tap.pages if t >= sent] == [page], "accepted once"
    lab.probe.pub("page/guard-1/ack", {"incident": inc, "status": "ack"})  # over MQTT
    rows = lab.steps(inc, until="acked")
    assert _by(rows, "acked", "guard-1")
    lab.close(inc)


def test_a_terminal_that_hangs_up_is_retried_then_passed_over(lab: Lab) -> None:
    lab.tap.stop()
    lab.tap = tap_terminal(lab.tap_port, "--hang-up", "block")
    sent = lab.probe.signal("mcp-c")
    inc = lab.probe.first_incident("mcp-c")
    t_snpp, _ = lab.perl.wait_page(sent, 15)
    assert t_snpp - sent < 4.0, "passed over before tier 1's ack timeout"
    rows = lab.steps(inc, until="page_failed")
    (failed,) = _by(rows, "page_failed", "guard-1")
    assert failed["final"] is True and failed["attempts"] == 3.0, failed
    assert [r["responder"] for r in _by(rows, "paged")][:2] == ["guard-1", "squad-3"]
    assert not [t for t, _ in lab.tap.pages if t >= sent], "the terminal accepted nothing"
    lab.close(inc)
