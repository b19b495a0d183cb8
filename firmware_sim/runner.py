"""Run a scenario against a broker: devices fire, people answer, and a report says what happened.

One MQTT client carries everything: the simulator is one process standing in for a
building's detectors and its people, and one connection keeps their messages in one
order. The people subscribe before the first detector fires, so a confirm request or a
page that the gateway sends at once is never missed. The report is what the simulator
saw and did, with times, for the ``firegrid demo`` display and for end-to-end tests
that compare it against the gateway's audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

import aiomqtt

from firmware_sim.devices import play_events, stopwatch
from firmware_sim.responders import Responders
from firmware_sim.scenario import Scenario

EventKind = Literal["signal", "confirm_request", "reply", "page", "ack", "close", "incident"]

_POLL_S = 0.05  # how often `until_closed` looks whether everything is closed


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One thing the simulator did (signal, reply, ack, close) or saw (the others).

    ``t`` is real seconds since the scenario started (``SimReport.started_at`` + ``t`` is
    the unix time); ``detail`` holds the message's fields, e.g. ``incident``, ``zone``,
    ``responder``, ``status``, ``topic``.
    """

    t: float
    kind: EventKind
    detail: dict[str, Any]


@dataclass(slots=True)
class SimReport:
    """Everything the simulator saw and did in one run, in the order it happened."""

    scenario: str
    site: str
    started_at: float  # unix seconds at t = 0
    time_scale: float
    elapsed_s: float = 0.0  # real seconds the run took
    stopped_by: Literal["duration", "all_closed"] = "duration"
    events: list[SimEvent] = field(default_factory=list)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest state
    ignored: list[dict[str, Any]] = field(default_factory=list)  # unreadable messages

    def of(self, kind: EventKind) -> list[SimEvent]:
        """The events of one kind, in order."""
        return [e for e in self.events if e.kind == kind]

    @property
    def signals(self) -> list[SimEvent]:
        return self.of("signal")

    @property
    def confirm_requests(self) -> list[SimEvent]:
        return self.of("confirm_request")

    @property
    def replies(self) -> list[SimEvent]:
        return self.of("reply")

    @property
    def pages(self) -> list[SimEvent]:
        return self.of("page")

    @property
    def acks(self) -> list[SimEvent]:
        return self.of("ack")

    @property
    def closes(self) -> list[SimEvent]:
        return self.of("close")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output (``orjson.dumps(report.to_dict())``)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://user:pass@host:port`` (port 1883 by default); raise ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"expected mqtt://[user:pass@]host[:port], got {url!r}")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ValueError(f"bad port in MQTT URL {url!r}") from None
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerAddress(parts.hostname, port, user, password)


async def run_scenario(
    scenario: Scenario,
    mqtt_url: str,
    *,
    on_event: Callable[[SimEvent], None] | None = None,
    time_scale: float = 1.0,
) -> SimReport:
    """Play ``scenario`` against the broker at ``mqtt_url`` and report what happened.

    Every scripted time and delay is multiplied by ``time_scale`` (0.1 runs ten times
    faster; the gateway's own timeouts are not scaled). The run ends after
    ``duration_s`` or, with ``until_closed``, once all events are sent and every incident
    seen is closed or dismissed. ``on_event`` is called synchronously for each event, so
    it must be quick. Raises ValueError for a bad URL or scale and aiomqtt.MqttError if
    the broker cannot be reached or goes away.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
    broker = parse_mqtt_url(mqtt_url)
    report = SimReport(scenario.name, scenario.site, time.time(), time_scale)
    clock = stopwatch()

    def emit(kind: str, detail: dict[str, Any]) -> None:
        event = SimEvent(round(clock(), 3), cast(EventKind, kind), detail)
        report.events.append(event)
        if on_event is not None:
            on_event(event)

    async with aiomqtt.Client(
        broker.host, broker.port, username=broker.username, password=broker.password,
        identifier=f"firegrid-sim-{scenario.site}-{uuid.uuid4().hex[:10]}",
    ) as client:
        people = Responders(scenario, client, time_scale=time_scale, emit=emit)
        await people.subscribe()
        report.started_at, clock = time.time(), stopwatch()
        listener = asyncio.create_task(people.listen())
        player = asyncio.create_task(play_events(
            client, scenario.prefix, scenario.events, now=clock, time_scale=time_scale,
            emit=emit,
        ))
        try:
            report.stopped_by = await _until_done(scenario, people, listener, player, clock,
                                                  scenario.duration_s * time_scale)
        finally:
            for task in (player, listener):
                task.cancel()
            await people.aclose()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await asyncio.gather(player, listener)
    report.elapsed_s = round(clock(), 3)
    report.incidents = dict(people.incidents)
    report.ignored = list(people.ignored)
    return report


async def _until_done(
    scenario: Scenario,
    people: Responders,
    listener: asyncio.Task[None],
    player: asyncio.Task[None],
    clock: Callable[[], float],
    end_s: float,
) -> Literal["duration", "all_closed"]:
    """Wait for the end of the run; re-raise a failure of the devices or the people."""
    while (remaining := end_s - clock()) > 0:
        watch = {listener} if player.done() else {listener, player}
        timeout = min(remaining, _POLL_S) if scenario.until_closed else remaining
        done, _ = await asyncio.wait(watch, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # raises what ended it, e.g. MqttError
        if listener.done():
            raise aiomqtt.MqttError("message stream ended: disconnected from the broker")
        if people.errors:
            raise people.errors[0]
        if scenario.until_closed and player.done() and people.all_closed():
            return "all_closed"
    return "duration"
