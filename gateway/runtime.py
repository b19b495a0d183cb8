"""The running gateway: MQTT in, the pure engine, the journal, then MQTT and InfluxDB out.

One asyncio task processes inputs in batches: each batch goes through the engine,
its steps (with the pages and requests they cause) are committed to the journal in
one transaction, and only then does anything leave the gateway. Alarms, replies and
acknowledgements wait in their own queue and always go first; telemetry waits in a
bounded one and is shed, counted, when the gateway cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from alerting.causes import CAUSES, FALSE_ALARM_CAUSES
from alerting.page import AckError, decode_mqtt_ack
from drivers import native
from drivers.signal import PayloadError, Signal
from gateway.centre import CentreDispatch
from gateway.config import Site
from gateway.coverage import notes as coverage_notes
from gateway.engine import OPEN, Engine
from gateway.feeds import FeedHub
from gateway.flood_guard import FloodGuard
from gateway.forwarder import Forwarder
from gateway.influx import InfluxClient, InfluxError, InfluxTarget, format_point
from gateway.journal import Journal, OutboxItem
from gateway.metrics import Metrics
from gateway.model import NS, Decisions, DeviceState, Refused, Step
from gateway.mqtt_link import (
    BROKER_DROPPED,
    BULK_SUFFIX,
    PEOPLE,
    AckToken,
    MqttLink,
    MqttTarget,
    Unreachable,
)
from gateway.paging import PagerDispatch
from gateway.systemd import Systemd

log = structlog.get_logger("firegrid.gateway")

BATCH = 512  # inputs per journal transaction at most
HEALTH_S = 60.0  # health log line, gateway_health record, journal size check
JOURNAL_TROUBLE = 0.8  # of journal_max_mb: raise trouble/gateway
JOURNAL_FULL = 0.95  # of journal_max_mb: stop recording signals and health (never steps)
MAX_ANSWER = 4096  # bytes of a confirm reply or a close: a few dozen are enough
TELEMETRY_QUEUE = 20_000  # non-alarm signals waiting; beyond this they are shed
# telemetry processed per batch at most this long, so the socket is read again (and an
# alarm behind the telemetry reaches the engine) within a few milliseconds under a flood
BATCH_BUDGET_S = 0.002
FLOOD_TICK_S = 0.5  # how often flooding devices are looked for
FLOOD_GRACE_S = 30.0  # no judging within this long of an MQTT session (re)connecting
BACKLOG_TRICKLE = 2  # inputs in 0.1 s that still count as live traffic, not a backlog
BROKER_QUIET_S = 300.0  # trouble/broker clears this long after the broker's last drop
# finished incidents rebuilt at start, so an answer redelivered after a restart is refused
# as late (late_ack, late_close), not as unknown; a few dozen happen in an hour
RESTORE_FINISHED = 200
PUBLISH_WAIT_S = 5.0  # an outbox publish without its PUBACK this long is kept in flight
STOP_GRACE_S = 5.0  # a task still running this long after its cancel is named and left


@dataclass(slots=True)
class Inbound:
    kind: str  # signal, reply, ack, close; from feeds also seen, trouble, reset, link, feed_seen
    received_ns: int
    data: Any
    token: AckToken | None = None  # PUBACK once journaled


class Gateway:
    def __init__(self, site: Site, mqtt: MqttTarget, influx: InfluxTarget,
                 journal_path: str | Path, *, clock: Callable[[], int] = time.time_ns,
                 client_id: str | None = None):
        self.site = site
        self.clock = clock
        self.metrics = Metrics()
        self.journal = Journal(journal_path)
        self.engine = Engine(site)
        self.engine.restore(self.journal.open_steps(finished=RESTORE_FINISHED),
                            self.journal.devices(),
                            self.journal.counter())
        self.influx_target = influx
        self.feeds = FeedHub(site, self._submit, self.metrics, clock)
        self.paging = PagerDispatch(site, self._submit, self.metrics, self._pages_done, clock,
                                    still_waiting=self._answer_wanted,
                                    remember=self._remember_poll, answered=self._answered)
        self.centre = (CentreDispatch(site, self._submit, self.metrics, self._pages_done, clock)
                       if site.monitoring_centre is not None else None)
        self._unjournaled_page = 0  # negative ids for pages sent while the journal fails
        self._sends: set[asyncio.Task[None]] = set()  # publishes in flight (see _background)
        self._sent_not_cleared: set[int] = set()  # outbox rows sent, not yet deleted
        # outbox rows whose publish outlasted PUBLISH_WAIT_S: (connection, its task)
        self._handed: dict[int, tuple[int, asyncio.Task[None]]] = {}
        self._closing = False  # stopping: a kept publish that ends starts no flush
        self._dropped_seen: int | None = None  # the broker's drop counter at our last look
        self._dropping_since: int | None = None  # trouble/broker raised at (ns)
        self._dropping_last: int = 0  # last increase (ns)
        # the alarm lane: native detectors and call points on the gateway's own session,
        # everything else on signal/# (telemetry, unknown ids) on a bulk session, so an
        # alarm never queues in the broker behind a flood it cannot skip (docs/mqtt.md)
        self.lane_devices = alarm_lane(site)
        lane_topics = [f"signal/{d}" for d in sorted(self.lane_devices)]
        self.mqtt = MqttLink(mqtt, site.site, self._on_lane, self._on_connect, clock,
                             client_id, extra=self.feeds.subscriptions(),
                             external=self._on_external,
                             **({"subscriptions": [*PEOPLE, *lane_topics],
                                 "unsubscribe": ["signal/#"], "broker_drops": False}
                                if self.lane_devices else {}))
        # a device removed from the site file since the last run stays subscribed on the
        # session (MQTT has no "list my subscriptions"): the journal remembers the topics
        self._lane_key = f"lane:{self.mqtt.client_id}"
        self.lane_topics = lane_topics
        self.mqtt.unsubscribe += sorted(set(self._last_lane()) - set(lane_topics))
        self.bulk: MqttLink | None = None
        if self.lane_devices:
            self.bulk = MqttLink(mqtt.bulk(), site.site, self._on_bulk, _nothing, clock,
                                 self.mqtt.client_id + BULK_SUFFIX, external=self._on_external,
                                 subscriptions=["signal/#"], lane=1, announce=False,
                                 peer=self.mqtt)
            self.mqtt.peer = self.bulk
        self.flood = FloodGuard()  # devices sending hundreds of messages a second
        self.urgent: deque[Inbound] = deque()
        # an alarm read in a burst is processed before the rest of the burst is read
        for link in (self.mqtt, self.bulk):
            if link is not None:
                link.burst_stop = self.urgent.__len__
        self.normal: deque[Inbound] = deque()
        self._wake = asyncio.Event()
        self.forwarder: Forwarder | None = None
        self.started = asyncio.Event()
        self._outbox_lock = asyncio.Lock()
        self.journal_level = 0.0  # used / journal_max_mb
        self.timers_released = asyncio.Event()  # set once the restart backlog is read
        # batches (steps, device states) the journal could not take (disk full), in order
        self.unjournaled: deque[tuple[list[Step], list[DeviceState]]] = deque()
        self.journal_failing = ""  # the error, while commits fail
        self.journal_trouble_shown = False
        self.systemd = Systemd()
        self.loop_turns = 0  # the engine loop's heartbeat, watched by the watchdog
        self.observers: list[Callable[[Step], None]] = []  # e.g. the demo's live display
        self.device_observers: list[Callable[[DeviceState], None]] = []  # troubles, too

    # ------------------------------------------------------------------ run

    async def check(self) -> None:
        """Both servers reachable at start, or Unreachable with one line saying which."""
        await self.mqtt.check()
        if self.bulk is not None:
            await self.bulk.check()
        async with InfluxClient(self.influx_target) as client:
            try:
                await client.ping()
                await client.ensure_database()
            except InfluxError as exc:  # refused (401/403), not there: one line, exit 3
                raise Unreachable(f"InfluxDB {self.influx_target.redacted()}: {exc}") from None

    async def run(self, stop: asyncio.Event) -> None:
        await self.check()
        restored = self.engine.open_incidents()
        if restored:
            log.info("resumed open incidents from the journal",
                     incidents=[i.id for i in restored])
        _freeze_startup_objects()
        async with InfluxClient(self.influx_target) as client:
            self.forwarder = Forwarder(self.journal, client, self.site.site, self.metrics)
            tasks = [
                asyncio.create_task(self.mqtt.run(), name="mqtt"),
                asyncio.create_task(self._process_loop(), name="engine"),
                asyncio.create_task(self.forwarder.run(), name="influx"),
                asyncio.create_task(self._health_loop(), name="health"),
                asyncio.create_task(self._flood_loop(), name="flood"),
            ]
            feed_tasks = [asyncio.create_task(run(), name="feed")
                          for run in self.feeds.tasks()]
            if self.bulk is not None:
                feed_tasks.append(asyncio.create_task(self.bulk.run(), name="mqtt-bulk"))
            if self.systemd.watchdog_s:
                tasks.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
            if self.centre is not None:
                tasks.append(asyncio.create_task(self.centre.run(), name="centre"))
            self.started.set()
            self.systemd.ready(f"serving {self.site.site}: "
                               f"{len(self.engine.open_incidents())} open incidents")
            log.info("gateway running", site=self.site.site, broker=self.mqtt.target.redacted(),
                     influx=self.influx_target.redacted(), journal=str(self.journal.path))
            for note in coverage_notes(self.site):  # docs/configuration.md: advice, once
                log.warning("detector coverage", note=note)
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            self.systemd.stopping()
            # stop the engine loop first, then drain what is already in hand here, so a
            # clean stop loses nothing and no two batches ever run at once
            engine_task = tasks[1]
            engine_task.cancel()
            await asyncio.gather(engine_task, return_exceptions=True)
            drain_until = self.clock() + 5 * NS  # under a flood, do not drain forever
            while (self.urgent or self.normal) and self.clock() < drain_until:
                await self._process_batch()
            await self._process_batch()
            self._closing = True
            kept = [t for _, t in self._handed.values()]
            if self._sends or kept:  # what the last batches handed to the broker, briefly
                await asyncio.wait([*self._sends, *kept], timeout=2.0)
            self._forget_kept()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await self.forwarder.flush()
            await self.mqtt.say_offline()
            await self.paging.close()
            await _cancel_all([*tasks, *feed_tasks])
            stopper.cancel()
        self.journal.close()
        log.info("gateway stopped", **self.metrics.snapshot())

    # -------------------------------------------------------------- inbound

    def _on_message(self, topic: str, payload: bytes, received_ns: int,
                    token: AckToken | None = None) -> None:
        """Parse at once (cheap) so alarms can jump the queue; bad input is counted here.

        Alarms, faults, replies, acks and closes are acknowledged to the broker only after
        their batch is journaled, so a crash in between makes the broker send them again.
        Telemetry is acknowledged at once: holding it would fill the broker's in-flight
        window and make alarms wait behind it.
        """
        if topic.startswith("signal/"):
            device = topic[7:]
            self.flood.seen(device)
            if not self.flood.admit_routine(device) and _routine(payload):
                # a device sending hundreds a second: its routine messages are dropped
                # before they cost a full parse (gateway/flood_guard.py)
                self.mqtt.ack(token)
                self.metrics.drop("flooding")
                return
        if len(self.normal) >= TELEMETRY_QUEUE and topic.startswith("signal/") \
                and _routine(payload):
            # overloaded: shed a routine clear before paying for the full parse, so the
            # gateway keeps reading (and finds the alarms) at twice what it can process
            self.mqtt.ack(token)
            self.metrics.drop("shed_overload")
            return
        try:
            item = self._parse(topic, payload, received_ns)
        except (PayloadError, AckError) as exc:
            self.metrics.drop("bad_payload")
            log.warning("dropped message", topic=topic, reason=str(exc), size=len(payload))
            item = None
        except Exception as exc:  # a decoder bug must cost one message, never the MQTT link
            self.metrics.drop("internal_error")
            log.error("dropped message: decoder failed", topic=topic, size=len(payload),
                      error=f"{type(exc).__name__}: {str(exc)[:200]}")
            item = None
        if item is None:
            self.mqtt.ack(token)
            return
        urgent = item.kind != "signal" or item.data.state in ("alarm", "fault")
        if urgent:
            item.token = token
            self.urgent.append(item)
        else:
            self.mqtt.ack(token)
            if len(self.normal) >= TELEMETRY_QUEUE:
                self.metrics.drop("shed_overload")
                return
            self.normal.append(item)
        self._wake.set()

    def _on_lane(self, topic: str, payload: bytes, received_ns: int,
                 token: AckToken | None = None) -> None:
        """The alarm lane: its devices' topics and people's answers.

        A ``signal/<id>`` for a device not on the lane is a subscription the broker's
        session kept from an older site file that the journal no longer names (a new
        journal file): it is unsubscribed now, and once both lanes are up the bulk
        lane's copy is the one handled, so the message counts once (docs/mqtt.md).
        """
        if (self.bulk is not None and topic.startswith("signal/")
                and topic[7:] not in self.lane_devices):
            self.mqtt.forget(topic)
            if self.mqtt.connected.is_set() and self.bulk.connected.is_set():
                self.mqtt.ack(token)
                return
        self._on_message(topic, payload, received_ns, token)

    def _on_bulk(self, topic: str, payload: bytes, received_ns: int,
                 token: AckToken | None = None) -> None:
        """The bulk lane: ``signal/#``, less what the alarm lane already brings."""
        if topic.startswith("signal/") and topic[7:] in self.lane_devices:
            self.mqtt.ack(token)  # the alarm lane's copy is the one handled
            return
        self._on_message(topic, payload, received_ns, token)

    def _on_external(self, topic: str, payload: bytes, received_ns: int,
                     token: AckToken | None = None) -> None:
        """A message on a feed's own topics (Zigbee2MQTT, Frigate), outside our prefix.

        Its PUBACK waits for the journal when it brought an alarm or trouble, as for ours.
        """
        if topic == BROKER_DROPPED:
            self._broker_dropped(payload, received_ns)
            return
        before = len(self.urgent)
        try:
            handled = self.feeds.on_mqtt(topic, payload, received_ns)
        except Exception as exc:
            self.metrics.drop("internal_error")
            log.error("dropped message: feed failed", topic=topic,
                      error=f"{type(exc).__name__}: {str(exc)[:200]}")
            handled = True
        if not handled:
            self.metrics.drop("unknown_topic")
        if len(self.urgent) > before and token is not None:
            self.urgent[-1].token = token
        else:
            self.mqtt.ack(token)

    def _broker_dropped(self, payload: bytes, now_ns: int) -> None:
        """Mosquitto's count of the messages it dropped (a client's queue full).

        It counts for every client, but the gateway's session is the one with the most to
        lose: any increase raises ``trouble/broker`` (cleared after BROKER_QUIET_S without
        one) and is counted as ``dropped.broker``, so no loss at the broker is silent.
        """
        try:
            value = int(payload.decode().strip())
        except (UnicodeDecodeError, ValueError):
            return
        last, self._dropped_seen = self._dropped_seen, value
        if last is None or value < last:  # first look, or the broker restarted
            return
        if value > last:
            self.metrics.drop("broker", value - last)
            self._dropping_last = now_ns
            log.error("the broker dropped messages (a client's queue was full)",
                      dropped=value - last, total=value)
            if self._dropping_since is None:
                self._dropping_since = now_ns
            self._background(self.mqtt.publish("trouble/broker", orjson.dumps({
                "device": "broker", "trouble": "dropping", "since": self._dropping_since / NS,
                "dropped": value, "detail": "the broker dropped messages: a client's queue "
                "was full (max_queued_messages); alarms may be among them"}), retain=True))
        elif (self._dropping_since is not None
              and now_ns - self._dropping_last > BROKER_QUIET_S * NS):
            self._dropping_since = None
            log.info("the broker has stopped dropping messages", total=value)
            self._background(self.mqtt.publish("trouble/broker", b"", retain=True))

    async def _flood_loop(self) -> None:
        """Twice a second: devices that started or stopped flooding, as a fault trouble."""
        grace_ns = round(float(os.environ.get("FIREGRID_FLOOD_GRACE_S", FLOOD_GRACE_S)) * NS)
        while True:
            await asyncio.sleep(FLOOD_TICK_S)
            now = self.clock()
            links = [self.mqtt] + ([self.bulk] if self.bulk is not None else [])
            if any(lk.connected_ns is None or now - lk.connected_ns < grace_ns
                   for lk in links):
                # right after a (re)connect the broker hands over what it queued for us,
                # every device at once: a backlog, not a flood
                self.flood.restart_window(now)
                continue
            for ch in self.flood.tick(now):
                known = self.site.device(ch.device) is not None
                if ch.flooding:
                    log.warning("device flooding", device=ch.device[:64],
                                rate=round(ch.rate), known=known)
                else:
                    log.info("device no longer flooding", device=ch.device[:64])
                if known:
                    detail = f"flooding: {ch.rate:.0f} messages/s" if ch.flooding else ""
                    self._submit("trouble", self.clock(),
                                 (ch.device, "fault", ch.flooding, detail), True)

    def _submit(self, kind: str, received_ns: int, data: Any, urgent: bool) -> None:
        """An input from a feed: alarms, troubles and link changes go first."""
        item = Inbound(kind, received_ns, data)
        if urgent:
            self.urgent.append(item)
        elif len(self.normal) >= TELEMETRY_QUEUE:
            self.metrics.drop("shed_overload")
            return
        else:
            self.normal.append(item)
        self._wake.set()

    def _parse(self, topic: str, payload: bytes, received_ns: int) -> Inbound | None:
        parts = topic.split("/")
        if len(parts) == 2 and parts[0] == "signal":
            return Inbound("signal", received_ns, native.decode(parts[1], payload))
        if len(parts) == 3 and parts[0] == "confirm" and parts[2] == "reply":
            if len(payload) > MAX_ANSWER:
                raise PayloadError(f"reply of {len(payload)} bytes is over {MAX_ANSWER}")
            obj = _json_object(payload)
            decision, by = obj.get("decision"), obj.get("by")
            if decision not in ("confirm", "dismiss") or not isinstance(by, str):
                raise PayloadError("reply needs decision confirm|dismiss and by: <responder>")
            cause = _cause(obj, FALSE_ALARM_CAUSES if decision == "dismiss" else ())
            return Inbound("reply", received_ns, (parts[1], decision, by, cause))
        if len(parts) == 3 and parts[0] == "page" and parts[2] == "ack":
            return Inbound("ack", received_ns, decode_mqtt_ack(parts[1], payload))
        if len(parts) == 3 and parts[0] == "incident" and parts[2] == "close":
            if len(payload) > MAX_ANSWER:
                raise PayloadError(f"close of {len(payload)} bytes is over {MAX_ANSWER}")
            obj = _json_object(payload)
            by, reason = obj.get("by"), obj.get("reason", "")
            if not isinstance(by, str) or not isinstance(reason, str):
                raise PayloadError("close needs by: <responder> and reason: <text>")
            return Inbound("close", received_ns, (parts[1], by, reason, _cause(obj, CAUSES)))
        self.metrics.drop("unknown_topic")
        log.warning("dropped message", topic=topic, reason="unknown topic")
        return None

    # ----------------------------------------------------------- processing

    async def _process_loop(self) -> None:
        release = asyncio.create_task(self._release_timers())
        try:
            await self._loop()
        finally:
            release.cancel()

    async def _loop(self) -> None:
        while True:
            self.loop_turns += 1
            if not self.urgent and not self.normal:
                deadline = self.engine.next_deadline_ns()
                timeout = None if deadline is None else max(0.0, (deadline - self.clock()) / NS)
                if self.unjournaled:  # held steps: retry the journal every second
                    timeout = 1.0 if timeout is None else min(timeout, 1.0)
                if not self.timers_released.is_set():
                    timeout = 0.05 if timeout is None else min(timeout, 0.05)
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that lands as the event is set, so a busy gateway would not stop on SIGTERM
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            await self._process_batch()
            # let the MQTT reader and the feeds run between batches: without this a backlog
            # is processed to the end before the socket is read again, alarms included
            await asyncio.sleep(0)

    async def _release_timers(self) -> None:
        """After a restart, let timers fire only once the broker's backlog has been read.

        Answers sent while the gateway was down (a worker's confirm before its deadline, a
        guard's ack) must be applied before the overdue deadlines they would have stopped;
        otherwise a restart escalates and pages for nothing. Inputs, alarms above all, are
        processed at once meanwhile; only ``tick`` waits: for the connection (5 s at most),
        then until the broker's burst is over: a 0.1 s stretch with the inbox empty and at
        most BACKLOG_TRICKLE inputs handled (2 s at most). A site whose people and devices
        keep talking never falls quiet, but the backlog comes in a burst far above that.
        """
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.mqtt.connected.wait()
            end = self.clock() + 2 * NS
            seen: int | None = None
            while self.clock() < end:
                handled = self.metrics.counts["inputs"]
                if (seen is not None and handled - seen <= BACKLOG_TRICKLE
                        and not self.urgent and not self.normal):
                    break
                seen = handled
                await asyncio.sleep(0.1)
        finally:
            self.timers_released.set()
            self._wake.set()

    async def _process_batch(self) -> None:
        out = Decisions()
        records: list[str] = []
        n = 0
        tokens: list[AckToken] = []
        started = time.perf_counter()
        while n < BATCH and (self.urgent or self.normal):
            if not self.urgent and n and time.perf_counter() - started > BATCH_BUDGET_S:
                break  # the rest of the telemetry waits for the next batch
            item = self.urgent.popleft() if self.urgent else self.normal.popleft()
            n += 1
            if item.token is not None:
                tokens.append(item.token)
            try:
                decided = self._handle(item)
                out.extend(decided)
                if item.kind == "signal":
                    self._record_signal(item, decided, records)
            except Refused as exc:
                self.metrics.drop(exc.kind)
                log.warning("refused", input=item.kind, reason=exc.reason)
                if exc.decisions is not None:
                    out.extend(exc.decisions)
            except Exception:  # a bug on one input must not stop the gateway for the next
                self.metrics.drop("internal_error")
                log.exception("internal error on input", input=item.kind, data=repr(item.data))
        if self.timers_released.is_set():
            out.extend(self.engine.tick(self.clock()))
        if n:
            self.metrics.inc("inputs", n)
        self._record_devices(out, records)
        if out or records or self.unjournaled:
            await self._commit_and_send(out, records)
        for token in tokens:  # journaled (or refused): the broker may forget them now
            self.mqtt.ack(token)

    def _handle(self, item: Inbound) -> Decisions:
        now = self.clock()
        if item.kind == "signal":
            sig: Signal = item.data
            return self.engine.signal(sig, now, item.received_ns)
        if item.kind == "reply":
            incident, decision, by, cause = item.data
            return self.engine.reply(incident, decision, by, now, cause)
        if item.kind == "ack":
            ack = item.data
            return self.engine.ack(ack.responder, ack.incident, ack.status, now)
        if item.kind == "close":
            incident, by, reason, cause = item.data
            return self.engine.close(incident, by, reason, now, cause)
        if item.kind == "seen":
            return self.engine.seen(item.data, item.received_ns)
        if item.kind == "trouble":
            device, trouble, active, detail = item.data
            return self.engine.trouble(device, trouble, active, item.received_ns, detail)
        if item.kind == "reset":
            feed, prefix = item.data
            return self.engine.reset(feed, prefix, item.received_ns)
        if item.kind == "link":
            feed, up, detail = item.data
            return self.engine.link(feed, up, item.received_ns, detail)
        if item.kind == "feed_seen":
            return self.engine.feed_seen(item.data, item.received_ns)
        if item.kind == "delivery":
            return self.engine.delivery(item.data, now)
        if item.kind == "forwarded":
            report, ok, attempts, detail = item.data
            return self.engine.forwarded(report, ok, now, attempts=attempts, detail=detail)
        raise ValueError(f"unknown input kind {item.kind!r}")

    def _record_signal(self, item: Inbound, decided: Decisions, records: list[str]) -> None:
        """Signals worth auditing: alarm, fault, test, and any that changed a device's state.

        Routine telemetry that changes nothing (a sensor's periodic ``clear``) is counted,
        not recorded, so a chatty sensor cannot crowd the journal.
        """
        sig: Signal = item.data
        if sig.state == "clear" and not decided.devices:
            return
        if self.journal_level >= JOURNAL_FULL:
            self.metrics.drop("journal_full")
            return
        device = self.site.device(sig.device)
        kind = device.kind if device else (sig.kind or "")
        # an alarm sent again for want of its receipt is kept, marked, and not counted
        repeat = sig.device in decided.repeated
        fields: dict[str, float | str] = {"n": 0.0 if repeat else 1.0}
        if repeat:
            fields["repeat"] = 1.0
        if sig.ts is not None:  # the device's own clock, for comparison: never T0
            fields["device_ts"] = float(sig.ts)
        if sig.value is not None:
            fields["value"] = sig.value
        for key, value in sig.meta:  # a camera's box, score and zones
            if isinstance(value, int | float) and not isinstance(value, bool):
                fields[key] = float(value)
            else:
                fields[key] = str(value)[:200]
        tags = {"site": self.site.site, "device": sig.device, "kind": kind, "state": sig.state}
        if device is not None and device.feed:
            tags["feed"] = device.feed
        records.append(format_point("signal", tags, fields, item.received_ns))

    def _record_devices(self, out: Decisions, records: list[str]) -> None:
        """Every change of a device's (or feed's) state or troubles: ``device_health``."""
        if self.journal_level >= JOURNAL_FULL:
            return
        for ds in out.devices:
            records.append(format_point(
                "device_health", {"site": self.site.site, "device": ds.device,
                                  "kind": ds.kind or ""},
                {"state": ds.state, "trouble": ds.troubles[0] if ds.troubles else "",
                 "troubles": ",".join(ds.troubles), "detail": ds.detail[:200]},
                ds.since_ns))

    async def _commit_and_send(self, out: Decisions, records: list[str] | None = None) -> None:
        outbox: list[tuple[str, str, bytes, bool]] = []
        plain = []
        durable_topics = {p.topic for p in out.publishes if p.durable}
        for p in out.publishes:
            if p.durable:
                outbox.append(("publish", p.topic, p.payload, p.retain))
            elif p.topic not in durable_topics:  # the durable one is the later, final state
                plain.append(p)
        for r in out.reports:  # to the monitoring centre, cleared once it confirms
            outbox.append(("centre", f"centre/{r.incident}/{r.device}", r.to_json(), False))
        for page in out.pages:
            if page.extra.get("channel", "mqtt") == "mqtt":
                outbox.append(("page", f"page/{page.responder}", page.to_json(), False))
            else:  # TAP or SNPP: sent by self.paging, cleared when its outcome is known
                outbox.append(("pager", f"pager/{page.responder}", page.to_json(), False))
        durable = self._commit(out, outbox, records or [])
        self.metrics.inc("steps", len(out.steps))
        for step in out.steps:
            log.info("step", incident=step.incident, stage=step.stage,
                     elapsed_s=round(step.elapsed_s, 3), zone=step.zone,
                     responder=step.responder, tier=step.tier, device=step.device)
        _notify(self.observers, out.steps)
        _notify(self.device_observers, out.devices)
        for ds in out.devices:
            if ds.troubles and ds.state != "alarm":
                log.info("trouble", device=ds.device, state=ds.state,
                            troubles=",".join(ds.troubles), detail=ds.detail)
        if self.forwarder is not None and out.steps:
            self.forwarder.wake.set()
        # pages and confirm requests first, then the retained state (latest per topic);
        # both in the background: a publish caught by a link going down waits up to its
        # timeout, and the engine must meanwhile go on with the next alarm
        if durable and outbox:
            self._background(self._flush_outbox())
        elif outbox:  # the journal cannot take them: an alarm is paged all the same
            for kind, topic, payload, retain in outbox:
                if kind == "pager":
                    self._unjournaled_page -= 1
                    self.paging.send(self._unjournaled_page, payload)
                    self.metrics.inc("pages.unjournaled")
                elif kind == "centre":
                    if self.centre is not None:
                        self._unjournaled_page -= 1
                        self.centre.send(self._unjournaled_page, payload)
                elif await self.mqtt.publish(topic, payload, retain=retain):
                    self.metrics.inc("pages.unjournaled")
        await self._journal_trouble()
        latest: dict[str, Any] = {}
        for p in plain:
            latest.pop(p.topic, None)
            latest[p.topic] = p
        if self.mqtt.client is not None and latest:
            self._background(self._publish_all(list(latest.values())))

    async def _publish_all(self, publishes: list[Any]) -> None:
        await asyncio.gather(*(self.mqtt.publish(p.topic, p.payload, retain=p.retain)
                               for p in publishes))

    def _background(self, coro: Any) -> None:
        """Run a send without holding up the engine loop; started in call order, so the
        broker sees the states of successive batches in order."""
        task = asyncio.get_running_loop().create_task(coro)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _commit(self, out: Decisions, outbox: list[tuple[str, str, bytes, bool]],
                records: list[str]) -> bool:
        """Journal a batch; on a failing disk keep its steps in memory and report False.

        Steps held back are retried, in order, before every later batch, so they reach
        the journal (and InfluxDB) with their own timestamps once the disk has room;
        only a crash while the disk is full loses them. Records are shed, counted.
        """
        try:
            while self.unjournaled:
                steps, devices = self.unjournaled[0]
                self.journal.commit(steps, (), devices)
                self.unjournaled.popleft()
            self.journal.commit(out.steps, outbox, out.devices, records)
        except (sqlite3.Error, OSError) as exc:
            for step in out.steps:
                step.seq = None
            if out.steps or out.devices:
                self.unjournaled.append((out.steps, out.devices))
            self.metrics.inc("journal.failed")
            if records:
                self.metrics.drop("journal_failed_records")
            if not self.journal_failing:
                log.error("journal write failed; alarms are still paged, steps wait in memory",
                          error=str(exc), held=sum(len(s) for s, _ in self.unjournaled))
            self.journal_failing = str(exc)
            return False
        if self.journal_failing:
            log.info("journal writable again; held steps are journaled")
            self.journal_failing = ""
        return True

    async def _journal_trouble(self) -> None:
        """Publish or clear ``trouble/gateway`` (journal_failed) when the state changed."""
        failing = bool(self.journal_failing)
        if failing == self.journal_trouble_shown:
            return
        body = orjson.dumps({"device": "gateway", "trouble": "journal_failed",
                             "since": self.clock() / NS, "error": self.journal_failing,
                             "held_steps": sum(len(s) for s, _ in self.unjournaled)}
                            ) if failing else b""
        if await self.mqtt.publish("trouble/gateway", body, retain=True):
            self.journal_trouble_shown = failing

    async def _flush_outbox(self) -> None:
        """Send every journaled page and request not yet handed to the broker, oldest first.

        Each row is cleared as soon as the broker has it, so a crash re-sends at most the
        one in flight (a duplicate page per crash, never a missed one).
        """
        async with self._outbox_lock:
            sent: list[int] = []
            link_down = False
            if self._sent_not_cleared:  # the disk had no room to forget them: try again
                self._clear_outbox(list(self._sent_not_cleared))
            pending = self.journal.pending_outbox()
            # first the rows that leave on their own lines, before any await: a row that
            # pager or centre finish while a publish below waits would otherwise be
            # handed to them again from this list, and sent twice
            for item in pending:
                if item.kind == "pager":  # leaves on its own line, broker or not
                    self.paging.send(item.id, item.payload)
                elif item.kind == "centre":  # so does a report to the monitoring centre
                    if self.centre is not None:
                        self.centre.send(item.id, item.payload)
                    else:  # the site file no longer names a centre: nobody to send it to
                        log.warning("centre report dropped: no monitoring_centre configured",
                                    topic=item.topic)
                        sent.append(item.id)
                elif item.kind == "poll":  # an SNPP reply still awaited (after a restart)
                    self.paging.resume(item.id, item.payload)
            for item in pending:
                if item.kind in ("pager", "centre", "poll"):
                    continue
                if item.id in self._sent_not_cleared:
                    continue  # the broker has it; only the journal does not know yet
                if link_down or self.mqtt.client is None:
                    link_down = True
                    continue  # stays in the outbox for the next connect
                if item.payload and item.topic.startswith("confirm/"):
                    inc = self.engine.incidents.get(item.topic.split("/")[1])
                    if inc is None or inc.state != OPEN:
                        sent.append(item.id)  # decided meanwhile: a stale request must not linger
                        continue
                if not await self._publish_row(item):
                    link_down = True  # the rest stays in the outbox for the next connect
                    continue
                sent.append(item.id)
                if item.kind == "page":
                    self.metrics.inc("pages")
                    self._clear_outbox(sent)
            self._clear_outbox(sent)

    def _forget_kept(self) -> None:
        """At a stop: clear the rows whose kept publish the broker took; the rest go out
        again at the next start (at least once)."""
        delivered = []
        for row, (_, task) in list(self._handed.items()):
            if task.done() and not task.cancelled() and task.exception() is None:
                delivered.append(row)
            else:
                task.cancel()
        self._handed.clear()
        self._clear_outbox(delivered)

    def _kept_done(self, _task: asyncio.Task[None]) -> None:
        if not self._closing:  # its row is cleared (or sent again) by a flush
            self._background(self._flush_outbox())

    async def _publish_row(self, item: OutboxItem) -> bool:
        """Publish one outbox row; True once the broker has it.

        A publish that gets no PUBACK within ``PUBLISH_WAIT_S`` on a live connection (a
        broker too busy) is not given up: paho still sends it. Its task is kept, and until
        it ends the row is not published again on that connection (a second copy was a
        duplicate page). It ends with the PUBACK (the row is then cleared, by the flush its
        end starts) or with the connection (the row goes out again on the next one).
        """
        kept = self._handed.get(item.id)
        if kept is not None:
            generation, task = kept
            if not task.done():
                if generation == self.mqtt.generation:
                    return False  # still in flight on this connection
                task.cancel()  # its connection is gone, and the copy with it
            del self._handed[item.id]
            if task.done() and not task.cancelled() and task.exception() is None:
                return True  # the broker took it late
        generation = self.mqtt.generation
        task = self.mqtt.start_publish(item.topic, item.payload, retain=item.retain)
        if task is None:
            return False
        done, _ = await asyncio.wait({task}, timeout=PUBLISH_WAIT_S)
        if not done:
            log.warning("mqtt publish slow; kept in flight", topic=item.topic)
            self._handed[item.id] = (generation, task)
            task.add_done_callback(self._kept_done)
            return False
        if task.exception() is not None:
            log.warning("mqtt publish failed", topic=item.topic, error=str(task.exception()))
            return False
        return True

    def _clear_outbox(self, ids: list[int]) -> None:
        if not ids:
            return
        try:
            self.journal.sent(ids)
        except (sqlite3.Error, OSError) as exc:
            # a full disk cannot even delete: remember them, so they are not sent twice
            # while the gateway runs (after a crash they are sent again: at least once)
            self._sent_not_cleared.update(ids)
            log.warning("outbox rows not cleared", error=str(exc), rows=len(ids))
        else:
            self._sent_not_cleared.difference_update(ids)
        ids.clear()

    def _pages_done(self, ids: list[int]) -> None:
        """The pager channel has an outcome for these outbox rows: forget them."""
        try:
            self.journal.sent([i for i in ids if i > 0])
        except (sqlite3.Error, OSError) as exc:  # sent again later: at least once
            log.warning("outbox rows not cleared", error=str(exc))

    def _remember_poll(self, topic: str, payload: bytes) -> int | None:
        """Journal a pending SNPP poll; None when the disk cannot take it (poll anyway)."""
        try:
            (item,) = self.journal.commit((), [("poll", topic, payload, False)])
        except (sqlite3.Error, OSError) as exc:
            log.warning("snpp poll not journaled; it ends with this run", error=str(exc))
            return None
        return item.id

    def _answered(self, incident: str, responder: str) -> str | None:
        inc = self.engine.incidents.get(incident)
        return "ack" if inc is not None and responder in inc.acked else None

    def _answer_wanted(self, incident: str, responder: str) -> bool:
        inc = self.engine.incidents.get(incident)
        return (inc is not None and inc.active and responder not in inc.on_scene
                and responder not in inc.declined)

    def _last_lane(self) -> list[str]:
        try:
            raw = self.journal.note(self._lane_key)
            topics = orjson.loads(raw) if raw else []
        except (sqlite3.Error, orjson.JSONDecodeError):
            return []
        return [t for t in topics if isinstance(t, str) and t.startswith("signal/")]

    async def _on_connect(self) -> None:
        """After every (re)connect: pending pages first, then all retained state again."""
        if self._last_lane() != self.lane_topics:
            try:  # subscribed as the site says now: remember it for the next start
                self.journal.set_note(self._lane_key, orjson.dumps(self.lane_topics).decode())
            except sqlite3.Error as exc:  # a full disk: the next start unsubscribes less
                log.warning("could not note the alarm lane's topics", error=str(exc)[:200])
        await self._flush_outbox()
        await asyncio.gather(*(self.mqtt.publish(p.topic, p.payload, retain=p.retain)
                               for p in self.engine.retained()))

    async def _watchdog_loop(self) -> None:
        """Ping systemd only while the engine loop still turns: wake it, see it move."""
        assert self.systemd.watchdog_s is not None
        while True:
            before = self.loop_turns
            self._wake.set()
            await asyncio.sleep(self.systemd.watchdog_s)
            if self.loop_turns != before:
                self.systemd.ping()
            else:
                log.error("engine loop stalled; withholding the watchdog ping")

    async def _health_loop(self) -> None:
        """Every HEALTH_S: a log line, a gateway_health record, journal size and pruning."""
        started = self.clock()
        every = float(os.environ.get("FIREGRID_HEALTH_S", HEALTH_S))
        while True:
            try:
                await self._health(started)
            except Exception:  # health reporting must never take the gateway down
                log.exception("health check failed")
            await asyncio.sleep(every)

    async def _health(self, started_ns: int) -> None:
        keep_ns = round(self.site.journal_keep_days * 86400 * NS)
        pruned = self.journal.prune(self.clock() - keep_ns)
        used = self.journal.used_bytes()
        max_bytes = self.site.journal_max_mb * 1024 * 1024
        await self._journal_level(used / max_bytes, used)
        lag = self.forwarder.lag() if self.forwarder else 0
        snap = self.metrics.snapshot()
        fields = {
            "open_incidents": float(len(self.engine.open_incidents())),
            "influx_lag": float(lag + self.journal.pending_records()),
            "journal_used_mb": round(used / 1024 / 1024, 3),
            "queued": float(len(self.urgent) + len(self.normal)),
            "dropped": float(snap.get("dropped", 0)), "inputs": float(snap.get("inputs", 0)),
            "steps": float(snap.get("steps", 0)), "pages": float(snap.get("pages", 0)),
            "reconnects": float(self.mqtt.reconnects),
            "bulk_reconnects": float(self.bulk.reconnects if self.bulk is not None else 0),
            "uptime_s": round((self.clock() - started_ns) / NS, 1),
        }
        self.systemd.status(f"{int(fields['open_incidents'])} open incidents, "
                            f"InfluxDB lag {int(fields['influx_lag'])}, "
                            f"journal {fields['journal_used_mb']:.1f} MB")
        log.info("health", pruned=pruned, **fields, **{k: v for k, v in snap.items()
                                                       if k.startswith("dropped.")})
        if self.journal_level < JOURNAL_FULL:
            self.journal.commit((), records=[format_point(
                "gateway_health", {"site": self.site.site}, fields, self.clock())])
            if self.forwarder is not None:
                self.forwarder.wake.set()

    async def _journal_level(self, level: float, used: int) -> None:
        """Raise a trouble well before the journal fills; past JOURNAL_FULL, shed records."""
        was = self.journal_level
        self.journal_level = level
        if level >= JOURNAL_TROUBLE and was < JOURNAL_TROUBLE:
            log.error("journal filling; InfluxDB must take the backlog or the disk grow",
                      used_mb=round(used / 1048576, 1), max_mb=self.site.journal_max_mb)
            body = orjson.dumps({"device": "gateway", "trouble": "journal_filling",
                                 "since": self.clock() / NS,
                                 "used_mb": round(used / 1048576, 1),
                                 "max_mb": self.site.journal_max_mb})
            self.journal.commit((), [("publish", "trouble/gateway", body, True)])
            await self._flush_outbox()
        elif level < JOURNAL_TROUBLE * 0.85 and was >= JOURNAL_TROUBLE:
            log.info("journal back below its trouble level", used_mb=round(used / 1048576, 1))
            self.journal.commit((), [("publish", "trouble/gateway", b"", True)])
            await self._flush_outbox()


def _notify(observers: list[Any], items: list[Any]) -> None:
    """Hand each step or device state to each observer; one that fails costs only itself."""
    for observer in observers:
        for item in items:
            try:
                observer(item)
            except Exception:
                log.exception("observer failed", item=repr(item)[:120])


def alarm_lane(site: Site) -> frozenset[str]:
    """Devices whose ``signal/<id>`` the gateway reads on its own session, not the bulk one.

    Every native MQTT device but the temperature sensors that only measure: the detectors
    and call points whose alarms must not wait behind telemetry, and the temperature
    sensors given an ``alarm_at`` (they alarm as well). Devices on other feeds never
    publish ``signal/`` topics.
    """
    return frozenset(d.id for d in site.devices if d.feed is None
                     and (d.kind != "temperature" or d.alarm_at is not None))


def _freeze_startup_objects() -> None:
    """Take what exists after start-up out of the garbage collector's full passes.

    The libraries, the site and the rebuilt engine are a few hundred thousand objects
    that live as long as the process. A full (oldest-generation) collection walks every
    one of them: 50-90 ms measured under the overload flood, every few seconds, with the
    engine stopped, alarms included. Frozen, they are never walked again; a full pass
    then walks only what the running gateway made (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()


async def _nothing() -> None:
    """The bulk lane has nothing to republish when it connects."""


def _routine(payload: bytes) -> bool:
    """A plain ``clear`` (telemetry, a heartbeat): the one kind of signal that may be shed.

    Anything else, unreadable input included, takes the full path and is judged there.
    """
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("state") == "clear"


def _cause(obj: dict[str, Any], allowed: tuple[str, ...]) -> str | None:
    """The optional ``cause`` of a dismissal or a close (gateway/false_alarms.py)."""
    cause = obj.get("cause")
    if cause is None:
        return None
    if not isinstance(cause, str) or cause not in allowed:
        # a value, never its repr: a JSON array nested a thousand deep has none
        got = repr(cause[:40]) if isinstance(cause, str) else f"a JSON {type(cause).__name__}"
        raise PayloadError(f"cause must be one of {', '.join(allowed)}, not {got}"
                           if allowed else "cause goes with a dismissal or a close only")
    return cause


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise PayloadError("expected a JSON object")
    return obj


async def _cancel_all(tasks: list[asyncio.Task], grace_s: float = STOP_GRACE_S) -> None:
    """Cancel the gateway's tasks and wait for them, but never for ever.

    A task that swallows its cancellation (a library's ``wait_for`` on Python 3.11 can),
    or that meets it in a clean-up that itself waits (a client's DISCONNECT handshake on a
    link that is already dead), would otherwise hold a SIGTERM until systemd's kill. After
    ``grace_s`` the log names each task still running and where it waits, so the cause
    can be found; each is cancelled once more, given one more second, and the stop goes on.
    """
    for task in tasks:
        task.cancel()
    _done, pending = await asyncio.wait(tasks, timeout=grace_s) if tasks else (set(), set())
    for task in pending:
        log.error("task did not stop", task=task.get_name(), where=_awaiting(task))
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)


def log_tasks() -> None:
    """One log line per running task and what it awaits (``kill -USR1``): a stuck gateway
    can be asked where it is stuck without stopping it."""
    for task in asyncio.all_tasks():
        log.info("task", task=task.get_name(), where=_awaiting(task))


def _awaiting(task: asyncio.Task) -> str:
    """Where a suspended task waits: its chain of awaits, outermost first."""
    out = []
    coro: Any = task.get_coro()
    while coro is not None and len(out) < 12:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:"
                       f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(out) or "?"
