"""``firegrid demo``: the whole 10·30·60 path on one machine, with nothing to configure.

Starts its own Mosquitto and InfluxDB on free loopback ports in a temporary folder
(unless given), runs the gateway on the example Taibai Lake site, and plays the demo
scenario from firmware_sim: a kitchen fire confirmed by its grid worker, a nuisance
alarm dismissed, and a manual call point whose guard never answers so the volunteer
squad is paged. Unless the site names one, it also starts a simulated monitoring centre
(``firmware_sim.centre``) and reports the confirmed fires to it over GB/T 26875.3. It ends
with what the centre received and the SLA table read back from InfluxDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from firmware_sim.centre import SimCentre
from firmware_sim.lab import InfluxDB, Mosquitto
from firmware_sim.runner import SimEvent, run_scenario
from firmware_sim.scenario import bundled_scenario, load_scenario
from gateway.audit import run_audit
from gateway.config import load_site, parse_site
from gateway.influx import InfluxTarget
from gateway.logs import setup_logging
from gateway.model import DeviceState, Step
from gateway.mqtt_link import MqttTarget
from gateway.runtime import Gateway

ROOT = Path(__file__).resolve().parent.parent
DEMO_SITE = ROOT / "configs" / "taibai-demo.yaml"

STAGE_STYLE = {"breach": "bold red", "escalated": "yellow", "dismissed": "cyan",
               "confirmed": "green", "on_scene": "bold green", "closed": "dim",
               "unanswered": "yellow", "paged": "magenta"}


async def run_demo(*, mqtt: str | None = None, influx: str | None = None,
                   time_scale: float = 1.0, site_path: Path = DEMO_SITE,
                   scenario_path: Path | None = None) -> int:
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    setup_logging("warning")  # the live view below replaces the gateway's log lines
    site = load_site(site_path)
    scenario = load_scenario(scenario_path or bundled_scenario("demo"))
    centre: SimCentre | None = None
    if site.monitoring_centre is None:  # show the uplink too, against a simulated centre
        centre = await SimCentre(address=88888, utc_offset_s=8 * 3600).start()
        site = parse_site(site_path.read_text() + (
            f"\nmonitoring_centre: {{host: 127.0.0.1, port: {centre.port}, "
            "address: 888, centre_address: 88888}\n"), str(site_path))
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="firegrid-demo-")))
        if mqtt is None:
            broker = stack.enter_context(Mosquitto())
            broker.start(work / "mosquitto")
            mqtt = broker.url
            console.print(f"started mosquitto on {mqtt} (pid {broker.pid})")
        if influx is None:
            db = stack.enter_context(InfluxDB())
            db.start(work / "influxdb")
            influx = db.url("firegrid")
            console.print(f"started influxd on {db.base_url} (pid {db.pid})")
        gw = Gateway(site, MqttTarget.parse(mqtt), InfluxTarget.parse(influx),
                     work / "journal.sqlite3", client_id=f"firegrid-demo-{int(time.time())}")
        start = time.time()

        def show_step(step: Step) -> None:
            who = step.responder or step.device or ""
            extra = ""
            if step.stage == "located":
                f = step.fields
                extra = f"({f['x']:.1f}, {f['y']:.1f}) floor {f['floor']} ±{f['error_m']:.1f} m"
            elif step.stage in ("confirmed", "dismissed", "breach"):
                extra = str(step.fields.get("rule") or step.fields.get("by")
                            or step.fields.get("sla") or "")
            style = STAGE_STYLE.get(step.stage, "default")
            console.print(f"[dim]{time.time() - start:6.1f}s[/dim]  gateway  "
                          f"{step.incident}  [{style}]{step.stage:<10}[/{style}] "
                          f"+{step.elapsed_s:6.2f}s  {step.zone or ''} {who} {extra}".rstrip())

        def show_event(ev: SimEvent) -> None:
            if ev.kind in ("signal", "reply", "ack", "close"):
                d = ev.detail
                what = " ".join(str(d[k]) for k in ("device", "state", "incident", "decision",
                                                     "responder", "status", "by") if d.get(k))
                console.print(f"[dim]{ev.t:6.1f}s[/dim]  [blue]field[/blue]    {ev.kind:<8} {what}")

        in_trouble: set[str] = set()

        def show_device(ds: DeviceState) -> None:
            if not ds.troubles and ds.device not in in_trouble:
                return
            if ds.troubles:
                in_trouble.add(ds.device)
                what = ds.state if ds.troubles == (ds.state,) else \
                    f"{ds.state} ({', '.join(ds.troubles)})"
            else:
                in_trouble.discard(ds.device)
                what = f"resolved, {ds.state}"
            detail = f"  {ds.detail}" if ds.detail else ""
            console.print(f"[dim]{time.time() - start:6.1f}s[/dim]  gateway  "
                          f"[yellow]trouble[/yellow]    {ds.device} {what}{detail}")

        gw.observers.append(show_step)
        gw.device_observers.append(show_device)
        stop = asyncio.Event()
        console.rule(f"firegrid demo: site {site.site}, scenario {scenario.name}")
        gateway_task = asyncio.create_task(gw.run(stop))
        started = asyncio.create_task(gw.started.wait())
        await asyncio.wait([gateway_task, started], return_when=asyncio.FIRST_COMPLETED)
        if gateway_task.done():
            gateway_task.result()  # raises Unreachable with its one line
        await gw.mqtt.connected.wait()
        report = await run_scenario(scenario, mqtt, on_event=show_event, time_scale=time_scale)
        # let the audit trail reach InfluxDB, and the reports the centre, before reading back
        for _ in range(100):
            if (gw.forwarder is not None and gw.forwarder.lag() == 0
                    and (gw.centre is None or not gw.centre.known)):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await gateway_task
        if centre is not None:
            console.rule(f"the monitoring centre (simulated, GB/T 26875.3 on port {centre.port})"
                         " received")
            for r in centre.received:
                rep = r.report
                what = "FIRE  " if rep.status & 0x0002 else "normal"
                console.print(f"[dim]{r.at - start:6.1f}s[/dim]  centre   {what} "
                              f"component {rep.ref} type {rep.part_type}  {rep.description}")
            if not centre.received:
                console.print("nothing (no incident was confirmed)")
            await centre.stop()
        console.rule(f"scenario finished after {report.elapsed_s:.1f}s ({report.stopped_by}); "
                     "SLA report from InfluxDB")
        await run_audit(influx, site=site.site, since="1h", fmt="table",
                        targets=(site.sla.locate_s, site.sla.confirm_s, site.sla.in_place_s),
                        out=console.file,
                        devices={site.site: site.devices})
        console.print(f"audit trail in {InfluxTarget.parse(influx).redacted()}; "
                      "servers the demo started stop now")
    return 0
