"""``firegrid`` command line (CONTRACT §1): run, check-config, audit, demo, sim, watch.

Operators see one line and an exit code for every failure they can fix themselves:
2 for a bad config or argument, 3 for a server that cannot be reached; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.config import ConfigError, Site, load_site
from gateway.coverage import notes as coverage_notes
from gateway.logs import setup_logging
from gateway.mqtt_link import MqttTarget, Unreachable, _redact

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="firegrid: community fire-alarm gateway under the 10·30·60 rule.")


class Fail(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _site(path: Path) -> Site:
    try:
        return load_site(path)
    except ConfigError as exc:
        raise Fail("\n".join(exc.lines()), EXIT_CONFIG) from None


def resolve_mqtt(site: Site | None, mqtt: str | None) -> str:
    """The broker URL: flag, then environment, then file (CONTRACT §1)."""
    mqtt_url = mqtt or os.environ.get("FIREGRID_MQTT") or (site.mqtt if site else None)
    if not mqtt_url:
        raise Fail("no MQTT broker: give --mqtt, FIREGRID_MQTT or mqtt: in the site file",
                   EXIT_CONFIG)
    return mqtt_url


def resolve_urls(site: Site, mqtt: str | None, influx: str | None) -> tuple[str, str]:
    """Flag, then environment, then file (CONTRACT §1)."""
    mqtt_url = resolve_mqtt(site, mqtt)
    influx_url = influx or os.environ.get("FIREGRID_INFLUX") or site.influx
    if not influx_url:
        raise Fail("no InfluxDB: give --influx, FIREGRID_INFLUX or influx: in the site file",
                   EXIT_CONFIG)
    return mqtt_url, influx_url


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="site YAML file")],
    mqtt: Annotated[str | None, typer.Option(help="mqtt[s]://user[:pass]@host[:port]")] = None,
    influx: Annotated[str | None, typer.Option(help="http://host:8086/<database>")] = None,
    journal: Annotated[Path | None, typer.Option(help="journal file (SQLite)")] = None,
) -> None:
    """Run the gateway in the foreground until SIGINT or SIGTERM."""
    from gateway.influx import InfluxTarget
    from gateway.runtime import Gateway, log_tasks

    site = _site(config)
    mqtt_url, influx_url = resolve_urls(site, mqtt, influx)
    try:
        mqtt_t = MqttTarget.parse(mqtt_url)
        influx_t = InfluxTarget.parse(influx_url)
    except ValueError as exc:
        raise Fail(str(exc), EXIT_CONFIG) from None
    journal_path = (journal or os.environ.get("FIREGRID_JOURNAL") or site.journal
                    or f"{site.site}.journal.sqlite3")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # kill -USR1: what every task is waiting for, in the log (docs/operations.md)
        loop.add_signal_handler(signal.SIGUSR1, log_tasks)
        try:
            gw = Gateway(site, mqtt_t, influx_t, journal_path)
        except Exception as exc:  # journal cannot be opened: a config-level problem
            raise Fail(f"journal {journal_path}: {exc}", EXIT_CONFIG) from None
        await gw.run(stop)

    try:
        asyncio.run(main())
    except Unreachable as exc:
        raise Fail(str(exc), EXIT_UNREACHABLE) from None


@app.command("check-config")
def check_config(file: Annotated[Path, typer.Argument(help="site YAML file")]) -> None:
    """Exit 0 if the site file is valid; else print each problem with its place, exit 2."""
    site = _site(file)
    typer.echo(f"{file}: ok: site {site.site}, {len(site.zones)} zones, "
               f"{len(site.devices)} devices, {len(site.responders)} responders, "
               f"{len(site.tiers)} tiers")
    for line in coverage_notes(site):
        typer.echo(f"{file}: note: {line}")


@app.command()
def audit(
    influx: Annotated[str | None, typer.Option(help="http://host:8086/<database>")] = None,
    site: Annotated[str | None, typer.Option(help="only this site")] = None,
    since: Annotated[str, typer.Option(help="from: 30m, 24h, 7d ago, or 2026-11-01")] = "24h",
    until: Annotated[str | None, typer.Option(help="to: 1h ago, or 2026-11-02")] = None,
    zone: Annotated[str | None, typer.Option(help="only incidents in this zone")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    fail_on_breach: Annotated[bool, typer.Option(help="exit 1 if any incident missed")] = False,
    config: Annotated[Path | None, typer.Option(
        help="targets, site and detector count from this file")] = None,
    locate_s: Annotated[float | None, typer.Option(help="target for locate [10]")] = None,
    confirm_s: Annotated[float | None, typer.Option(help="target for confirm [30]")] = None,
    in_place_s: Annotated[float | None, typer.Option(help="target for in place [60]")] = None,
) -> None:
    """The 10·30·60 report from InfluxDB: per incident, per site, then false alarms."""
    from gateway.audit import run_audit

    cfg = _site(config) if config else None
    sla = cfg.sla if cfg else None
    if cfg and site is None:
        site = cfg.site
    targets = (locate_s or (sla.locate_s if sla else 10.0),
               confirm_s or (sla.confirm_s if sla else 30.0),
               in_place_s or (sla.in_place_s if sla else 60.0))

    influx_url = influx or os.environ.get("FIREGRID_INFLUX")
    if not influx_url:
        raise Fail("no InfluxDB: give --influx or FIREGRID_INFLUX", EXIT_CONFIG)
    if fmt not in ("table", "json", "csv"):
        raise Fail(f"--format must be table, json or csv, not {fmt!r}", EXIT_CONFIG)
    try:
        code = asyncio.run(run_audit(influx_url, site=site, since=since, fmt=fmt,
                                     targets=targets, until=until, zone=zone,
                                     fail_on_breach=fail_on_breach,
                                     devices={cfg.site: cfg.devices} if cfg else None))
    except ValueError as exc:
        raise Fail(str(exc), EXIT_CONFIG) from None
    except Unreachable as exc:
        raise Fail(str(exc), EXIT_UNREACHABLE) from None
    raise typer.Exit(code)


@app.command()
def demo(
    mqtt: Annotated[str | None, typer.Option(help="use this broker, do not start one")] = None,
    influx: Annotated[str | None, typer.Option(help="use this InfluxDB instead")] = None,
    time_scale: Annotated[float, typer.Option(help="scale scripted times; 0.5 is faster")] = 1.0,
) -> None:
    """The whole system on one machine: broker, database, gateway, detectors and responders."""
    from gateway.demo import run_demo

    try:
        code = asyncio.run(run_demo(mqtt=mqtt, influx=influx, time_scale=time_scale))
    except Unreachable as exc:
        raise Fail(str(exc), EXIT_UNREACHABLE) from None
    raise typer.Exit(code)


@app.command()
def sim(
    scenario: Annotated[str, typer.Argument(help="scenario YAML, or a bundled name: demo")],
    mqtt: Annotated[str | None, typer.Option(help="mqtt[s]://user[:pass]@host[:port]")] = None,
    time_scale: Annotated[float, typer.Option(help="multiply scripted times by this")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Play a scenario's detectors and responders against a running gateway's broker."""
    import aiomqtt
    import orjson

    from firmware_sim.runner import SimEvent, run_scenario
    from firmware_sim.scenario import ScenarioError, bundled_scenario, load_scenario

    mqtt_url = mqtt or os.environ.get("FIREGRID_MQTT")
    if not mqtt_url:
        raise Fail("no MQTT broker: give --mqtt or FIREGRID_MQTT", EXIT_CONFIG)
    try:
        path = Path(scenario) if Path(scenario).exists() else bundled_scenario(scenario)
        script = load_scenario(path)
    except ScenarioError as exc:
        lines = [f"{exc.source}: {p}" for p in exc.problems] or [str(exc)]
        raise Fail("\n".join(lines), EXIT_CONFIG) from None

    def show(ev: SimEvent) -> None:
        if fmt == "text":
            typer.echo(f"{ev.t:7.2f}s {ev.kind:<15} "
                       + " ".join(f"{k}={v}" for k, v in ev.detail.items()
                                  if k not in ("payload", "request")))

    try:
        report = asyncio.run(run_scenario(script, mqtt_url, on_event=show,
                                          time_scale=time_scale))
    except ValueError as exc:
        raise Fail(str(exc), EXIT_CONFIG) from None
    except aiomqtt.MqttError as exc:
        raise Fail(f"MQTT broker {_redact(mqtt_url)} unreachable: {exc}",
                   EXIT_UNREACHABLE) from None
    if fmt == "json":
        typer.echo(orjson.dumps(report.to_dict(), default=str).decode())


@app.command()
def watch(
    config: Annotated[Path | None, typer.Option("--config", "-c",
                                                help="site YAML: its name and cell names")] = None,
    site: Annotated[str | None, typer.Option(help="site name, without --config")] = None,
    mqtt: Annotated[str | None, typer.Option(help="mqtt[s]://user[:pass]@host[:port]")] = None,
    once: Annotated[bool, typer.Option("--once", help="print the board once and exit")] = False,
    fmt: Annotated[str, typer.Option("--format", help="text or json (with --once)")] = "text",
    finished: Annotated[int, typer.Option(help="closed or dismissed incidents shown")] = 5,
) -> None:
    """The duty room's live board from the broker: open incidents, confirmations, troubles.

    Exit with --once: 0 gateway online, 1 offline or never seen, 3 broker unreachable.
    """
    import time

    from rich.console import Console

    from gateway.board import Board
    from gateway.watch import as_json, live, render, snapshot

    if config is None and site is None:
        raise Fail("give --config SITE.yaml or --site NAME", EXIT_CONFIG)
    loaded = _site(config) if config is not None else None
    board = Board.for_site(loaded) if loaded is not None else Board(str(site))
    if loaded is not None and site is not None and site != loaded.site:
        raise Fail(f"--site {site} is not the site of {config} ({loaded.site})", EXIT_CONFIG)
    if fmt not in ("text", "json"):
        raise Fail(f"--format must be text or json, not {fmt!r}", EXIT_CONFIG)
    try:
        target = MqttTarget.parse(resolve_mqtt(loaded, mqtt))
    except ValueError as exc:
        raise Fail(str(exc), EXIT_CONFIG) from None
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    try:
        if once:
            asyncio.run(snapshot(target, board))
            if fmt == "json":
                sys.stdout.write(as_json(board, time.time(), finished).decode() + "\n")
            else:
                console.print(render(board, time.time(), finished))
            raise typer.Exit(0 if board.status == "online" else 1)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(live(target, board, console, finished))
    except Unreachable as exc:
        raise Fail(str(exc), EXIT_UNREACHABLE) from None


@app.command("broker-config", context_settings={"allow_extra_args": True,
                                                "ignore_unknown_options": True})
def broker_config(ctx: typer.Context) -> None:
    """Mosquitto users, passwords and ACLs for a site: SITE.yaml OUTDIR [--rotate] ...

    See docs/security.md; ``python -m gateway.brokerconf --help`` lists the options.
    """
    from gateway.brokerconf import main as brokerconf_main

    raise typer.Exit(brokerconf_main(list(ctx.args)))


def main() -> None:
    setup_logging()
    try:
        app()  # click's own usage errors exit 2, like a bad config
    except Fail as exc:
        text = str(exc)
        print(text if "\n" in text else f"firegrid: {text}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
