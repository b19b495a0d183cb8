"""A broker too busy to acknowledge a page in time: the page is sent once, not twice.

The outbox publishes each page and waits 5 s for the broker's PUBACK. Until 27 November
2026 a publish that waited longer was given up, and the next flush published the row
again, while paho still held the first copy on the same connection: the responder got
the page twice (seen once in the full-disk fault test under load). The publish is now
kept in flight; the row is sent again only after a reconnect. The broker is frozen with
SIGSTOP for 7 s over a page, so its PUBACK comes about 2 s late.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.journal import Journal
from tests.harness import GatewayProc, Probe, write_site


def test_a_page_the_broker_acknowledges_late_is_sent_once(tmp_path: Path,
                                                          influxdb: InfluxDB) -> None:
    broker = Mosquitto()  # its own: the test freezes it
    broker.start(tmp_path / "mosquitto")
    journal = tmp_path / "journal.sqlite3"
    gw = GatewayProc(write_site(tmp_path), broker.url, influxdb.url("slow_broker"), journal,
                     tmp_path / "gateway.log")
    probe = None
    frozen = False
    try:
        gw.start()
        probe = Probe(broker.port)
        probe.signal("smk-b1")
        inc = probe.first_incident("smk-b1")
        t0 = probe.incident_state(inc)["t0"]
        pid = broker.pid
        assert pid is not None
        # the test site escalates at T0 + 3 s (guard-1 paged), pages squad-1 at T0 + 5 s
        # and again every 2 s: the first squad-1 page's publish times out at T0 + 10 s,
        # and the flush after it finds the row still in the outbox
        probe.wait(lambda m: m.topic == "page/guard-1", timeout=8)
        time.sleep(max(0.0, t0 + 4.0 - time.time()))
        os.kill(pid, signal.SIGSTOP)
        frozen = True
        time.sleep(max(0.0, t0 + 11.0 - time.time()))
        os.kill(pid, signal.SIGCONT)
        frozen = False
        probe.wait(lambda m: m.topic == "page/squad-1", timeout=10)
        time.sleep(2.0)
        pages = probe.find(lambda m: m.topic.startswith(("page/guard-1", "page/squad-1"))
                           and not m.topic.endswith("/ack"))
    finally:
        if frozen and broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        code = gw.stop()
        if probe is not None:
            probe.close()
        broker.stop()
    assert code == 0
    j = Journal(journal)
    try:
        paged = [st for st in j.all_steps() if st.stage == "paged"]
        assert j.pending_outbox() == [], "a page the broker took is still in the outbox"
    finally:
        j.close()
    # the last tier is paged again every 2 s while nobody answers: each page is its own
    # message (its "sent" differs); a duplicate is the same message twice
    payloads = [m.payload for m in pages]
    twice = {p for p in payloads if payloads.count(p) > 1}
    assert not twice, f"{len(twice)} pages came twice: {sorted(twice)[0][:120]!r}"
    assert len(pages) == len(paged), (len(pages), len(paged))
    assert sum(m.topic == "page/guard-1" for m in pages) == 1
    assert "mqtt publish slow; kept in flight" in gw.log_text(), "the broker was not slow"
