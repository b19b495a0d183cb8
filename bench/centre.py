"""Benchmark: how soon a confirmed fire reaches the monitoring centre over GB/T 26875.3.

Run from the repository root (the project installed, e.g. editable)::

    python bench/centre.py [--paced 100] [--rate 10] [--burst 50]

It starts its own Mosquitto and InfluxDB (``firmware_sim.lab``) in a temporary
directory, a simulated monitoring centre (``firmware_sim.centre``) in this process, and
the gateway as its own process (``python -m gateway.cli run ...``) with a site of far-
apart buildings, one manual call point each, and a ``monitoring_centre`` pointing at
the simulated one. A call point is confirmed at once, so each alarm is one incident
reported to the centre at once. Two phases: ``--paced`` alarms at ``--rate`` per second,
then ``--burst`` alarms published together. Per alarm: publish → the centre has the
report (its receive time, same clock), and T0 → the ``forwarded`` step (the centre's
确认 back at the gateway; from the journal). GB/T 26875.1 allows 10 s from alarm to
centre.

This is a benchmark, not a test: it exits 0 whatever it measured (1 if it could not
run, 130 on Ctrl-C); every process it started is stopped by its PID on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho
from rich.console import Console
from rich.table import Table

from firmware_sim.centre import SimCentre
from firmware_sim.lab import InfluxDB, Mosquitto
from gateway.journal import Journal

console = Console()
SITE = "bench-centre"


def site_yaml(n: int, port: int) -> str:
    zones, devices = [], []
    for i in range(n):
        x = i * 100
        zones.append(f"  - {{id: z{i}, building: b{i}, floor: 1, "
                     f"polygon: [[{x},0],[{x + 10},0],[{x + 10},10],[{x},10]], worker: w-1}}")
        devices.append(f"  - {{id: mcp-{i}, kind: manual, floor: 1, x: {x + 1}, y: 1}}")
    return "\n".join([
        f"site: {SITE}", "sla: {locate_s: 10, confirm_s: 30, in_place_s: 600}",
        "zones:", *zones, "devices:", *devices,
        "responders:", "  - {id: w-1, tier: 0}", "  - {id: guard-1, tier: 1}",
        "tiers:", "  - {tier: 1, ack_timeout_s: 600}",
        f"monitoring_centre: {{host: 127.0.0.1, port: {port}, address: 888, "
        "centre_address: 88888}", ""])


class CentreThread:
    """The simulated centre on its own event loop in a thread: receive times are exact."""

    def __init__(self) -> None:
        self.centre = SimCentre(address=88888)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> int:
        self.thread.start()
        self.ready.wait(10)
        return self.centre.port

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.centre.start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.centre.stop(), self.loop)
        fut.result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def publish(client: paho.Client, devices: list[str], rate: float | None) -> dict[str, float]:
    sent: dict[str, float] = {}
    start = time.time()
    for k, dev in enumerate(devices):
        if rate:
            delay = start + k / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        sent[dev] = time.time()
        client.publish(f"firegrid/{SITE}/signal/{dev}",
                       orjson.dumps({"kind": "manual", "state": "alarm"}), qos=1)
    return sent


def _ms(xs: list[float]) -> str:
    if not xs:
        return "-"
    a = np.array(xs) * 1000
    return f"{np.percentile(a, 50):.1f} / {np.percentile(a, 99):.1f} / {a.max():.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paced", type=int, default=100, help="alarms in the paced phase")
    ap.add_argument("--rate", type=float, default=10.0, help="alarms per second, paced")
    ap.add_argument("--burst", type=int, default=50, help="alarms published at once")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="firegrid-bench-centre-", dir=args.workdir))
    broker, influx, centre = Mosquitto(), InfluxDB(), CentreThread()
    gw: subprocess.Popen[bytes] | None = None
    client: paho.Client | None = None
    try:
        broker.start(work / "mosquitto")
        influx.start(work / "influxdb")
        port = centre.start()
        n = args.paced + args.burst
        (work / "site.yaml").write_text(site_yaml(n, port))
        journal = work / "journal.sqlite3"
        log = (work / "gateway.log").open("wb")
        gw = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(work / "site.yaml"),
             "--mqtt", broker.url, "--influx", influx.url("bench"),
             "--journal", str(journal)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while centre.centre.connections == 0 and time.time() < deadline:
            time.sleep(0.05)
        if centre.centre.connections == 0:
            raise RuntimeError("the gateway never dialled the centre; see "
                               f"{work / 'gateway.log'}")
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        devs = [f"mcp-{i}" for i in range(n)]
        phases: list[tuple[str, dict[str, float]]] = []
        console.print(f"[dim]paced: {args.paced} alarms at {args.rate:g}/s ...[/dim]")
        phases.append((f"paced, {args.rate:g}/s", publish(client, devs[:args.paced], args.rate)))
        time.sleep(2.0)
        console.print(f"[dim]burst: {args.burst} alarms at once ...[/dim]")
        phases.append((f"burst of {args.burst}", publish(client, devs[args.paced:], None)))
        deadline = time.time() + 30
        while len(centre.centre.alarms()) < n and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        gw.terminate()
        gw.wait(20)
        got = {r.report.description.split(" ")[0]: r.at for r in centre.centre.alarms()}
        j = Journal(journal)
        fwd = {s.device: s.elapsed_s for s in j.all_steps() if s.stage == "forwarded"}
        j.close()
        table = Table(title="alarm → monitoring centre (GB/T 26875.3), this machine")
        for col in ("phase", "alarms", "at the centre", "publish → centre ms p50 / p99 / max",
                    "T0 → forwarded (确认 back) ms p50 / p99 / max"):
            table.add_column(col)
        for name, sent in phases:
            lat = [got[d] - t for d, t in sent.items() if d in got]
            back = [fwd[d] for d in sent if d in fwd]
            table.add_row(name, str(len(sent)), str(len(lat)), _ms(lat), _ms(back))
        console.print(table)
        info: dict[str, Any] = {
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "load": os.getloadavg(),
            "reports at the centre (resends counted once)": len(centre.centre.received),
            "frames the centre read (heartbeats and resends included)": centre.centre.frames,
        }
        for k, v in info.items():
            console.print(f"{k}: {v}")
        return 0
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        console.print(f"bench could not run: {exc}")
        return 1
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        if gw is not None and gw.poll() is None:
            gw.kill()  # by its PID
            gw.wait(5)
        centre.stop()
        influx.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
