"""The site's feeds (CONTRACT §2 ``feeds:``) run around the engine: codecs in, Inbound out.

Each feed's codec and transport live in ``drivers/`` and know devices only by ``ref``;
here every event is turned into the gateway's terms: the device id the site gives that
``(feed, ref)``, a raw analog value scaled and held against the device's thresholds,
and an ``Inbound`` for the engine's queues. A feed that fails (a port that will not
open, a codec bug) is logged, reported as its link going down, and started again; it
never stops the other feeds or the engine.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from drivers.analog import Threshold
from drivers.feed import FeedEvent, Garbage, Reading, Reset, Seen, Trouble
from drivers.frigate import CameraView, Frigate
from drivers.gb26875 import parse_utc_offset
from drivers.gb26875_server import Gb26875Server
from drivers.modbus import ModbusPoller, ValueType
from drivers.panel_printer import PrinterParser
from drivers.serial_link import SerialFeed
from drivers.signal import Signal
from drivers.zigbee2mqtt import Z2mOptions, Zigbee2Mqtt
from gateway.config import Device, Site
from gateway.metrics import Metrics

log = structlog.get_logger("firegrid.feeds")

Submit = Callable[[str, int, Any, bool], None]  # kind, received_ns, data, urgent
RESTART_MAX_S = 5.0
GARBAGE_LOG_EVERY_S = 5.0  # a panel spewing junk is counted in full, logged now and then
# readings in a row that are not a number before the sensor is in trouble (fault): one
# NaN is a glitch, a run of them a broken probe (many modules report a failed sensor so)
INVALID_FAULT_AFTER = 3


def _where(device: Device, ref: str) -> str:
    """Where a bad reading came from: a Modbus unit and its register(s), or the ref."""
    unit, sep, register = ref.partition(":")
    if sep and unit.isdigit() and register.isdigit():
        first = int(register)
        regs = (f"registers {first}..{first + 1}" if device.modbus_width == 2
                else f"register {first}")
        return f"unit {int(unit)} {regs} ({device.modbus_type}, ref {ref})"
    return f"ref {ref}"


class FeedHub:
    """All feeds of one site: MQTT-borne ones share the gateway's broker link."""

    def __init__(self, site: Site, submit: Submit, metrics: Metrics,
                 clock: Callable[[], int] = time.time_ns):
        self.site = site
        self.submit = submit
        self.metrics = metrics
        self.clock = clock
        self.refs: dict[tuple[str, str], Device] = {
            (d.feed, d.ref): d for d in site.devices if d.feed is not None and d.ref is not None}
        self.thresholds: dict[str, Threshold] = {}
        self.invalid_run: dict[str, int] = {}  # device -> non-finite readings in a row
        self.mqtt_codecs: list[tuple[str, Zigbee2Mqtt | Frigate, str]] = []  # name, codec, base
        self._garbage_logged: dict[str, float] = {}
        for feed in site.feeds:
            devices = site.feed_devices(feed.name)
            if feed.type == "zigbee2mqtt":
                codec: Zigbee2Mqtt | Frigate = Zigbee2Mqtt(feed.base_topic, {
                    d.ref: Z2mOptions(clear_after_s=d.clear_after_s) for d in devices if d.ref})
                self.mqtt_codecs.append((feed.name, codec, feed.base_topic))
            elif feed.type == "frigate":
                codec = Frigate(feed.base_topic, {
                    d.ref: CameraView(d.azimuth_deg, d.fov_deg, d.frame_width)
                    for d in devices if d.ref})
                self.mqtt_codecs.append((feed.name, codec, feed.base_topic))

    # ----------------------------------------------------------- MQTT feeds

    def subscriptions(self) -> list[str]:
        subs: list[str] = []
        for _name, codec, base in self.mqtt_codecs:
            subs.extend(codec.topics())
            if isinstance(codec, Zigbee2Mqtt):
                subs.append(f"{base}/bridge/state")
        return subs

    def on_mqtt(self, topic: str, payload: bytes, received_ns: int) -> bool:
        """Hand a message outside ``firegrid/<site>/`` to the feed whose topics it is under."""
        for name, codec, base in self.mqtt_codecs:
            if not topic.startswith(base + "/"):
                continue
            if isinstance(codec, Zigbee2Mqtt) and topic == f"{base}/bridge/state":
                self._bridge_state(name, payload, received_ns)
                return True
            try:
                events = codec.receive(topic, payload, received_ns / 1e9)
            except Exception as exc:  # a codec bug costs one message, never the link
                self.metrics.drop("internal_error")
                log.error("feed decoder failed", feed=name, topic=topic,
                          error=f"{type(exc).__name__}: {str(exc)[:200]}")
                return True
            self.events(name, events, received_ns)
            return True
        return False

    def _bridge_state(self, feed: str, payload: bytes, received_ns: int) -> None:
        """Zigbee2MQTT's own ``bridge/state``: the Zigbee network's link, up or down."""
        text = payload.decode("utf-8", "replace").strip().lower()
        if "online" in text:
            self.submit("link", received_ns, (feed, True, "bridge online"), True)
        elif "offline" in text:
            self.submit("link", received_ns, (feed, False, "bridge offline"), True)

    # -------------------------------------------------------- translation

    def events(self, feed: str, events: list[FeedEvent], received_ns: int | None = None) -> None:
        """Turn one feed's events into inputs for the engine, in order."""
        now = received_ns if received_ns is not None else self.clock()
        for ev in events:
            if isinstance(ev, Garbage):
                self._garbage(feed, ev)
                continue
            if isinstance(ev, Reset):
                self.submit("reset", now, (feed, ev.ref), True)
                continue
            if isinstance(ev, Seen) and ev.ref is None:
                self.submit("feed_seen", now, feed, False)
                continue
            ref = ev.device if isinstance(ev, Signal) else ev.ref
            device = self.refs.get((feed, ref or ""))
            if device is None:
                # a panel's system-level status or a bridge's other devices: only news
                # about one of ours, or an alarm from an address we do not know, counts
                if not isinstance(ev, Seen) and not (isinstance(ev, Trouble) and not ev.active):
                    self.metrics.drop("unknown_ref")
                    self._log_garbage(feed, f"no device with ref {(ref or '')[:64]!r} here")
                continue
            if isinstance(ev, Signal):
                sig = Signal(device.id, ev.state, None, ev.value, ev.ts, ev.bearing_deg, ev.meta)
                self.submit("signal", now, sig, ev.state in ("alarm", "fault"))
            elif isinstance(ev, Reading):
                self._reading(device, ev, now)
            elif isinstance(ev, Trouble):
                self.submit("trouble", now, (device.id, ev.trouble, ev.active, ev.detail), True)
            elif isinstance(ev, Seen):
                self.submit("seen", now, device.id, False)

    def _reading(self, device: Device, ev: Reading, now: int) -> None:
        try:
            th = self.thresholds.get(device.id)
            if th is None:
                th = self.thresholds[device.id] = Threshold(device.scale, device.alarm_at,
                                                            device.clear_at)
            raw = ev.raw
            if device.modbus_type == "int16" and 32768 <= raw <= 65535:
                raw -= 65536  # a bare int16 word (the poller decodes; a codec may not)
            if isinstance(raw, float) and not math.isfinite(raw):
                # a float32 register holding NaN or inf: a sensor's "no value", never
                # compared with a threshold; the unit did answer, so it is alive
                self.metrics.drop("bad_payload")
                self._log_garbage(device.feed or "", f"{device.id}: reading {raw!r} is not "
                                  "a finite number; ignored", where=_where(device, ev.ref))
                self.submit("seen", now, device.id, False)
                run = self.invalid_run[device.id] = self.invalid_run.get(device.id, 0) + 1
                if run == INVALID_FAULT_AFTER:
                    self.submit("trouble", now, (device.id, "fault", True,
                                                 f"{run} readings in a row not a number "
                                                 f"({raw!r}): sensor fault?"), True)
                return
            if self.invalid_run.pop(device.id, 0) >= INVALID_FAULT_AFTER:
                self.submit("trouble", now, (device.id, "fault", False,
                                             "readings are numbers again"), True)
            value, edge = th.update(raw)
        except ValueError as exc:
            self.metrics.drop("bad_payload")
            self._log_garbage(device.feed or "", f"{device.id}: {exc}",
                              where=_where(device, ev.ref))
            return
        state = "alarm" if th.state == "alarm" else "clear"
        self.submit("signal", now, Signal(device.id, state, None, value), edge == "alarm")

    def _garbage(self, feed: str, ev: Garbage) -> None:
        self.metrics.drop("bad_frame")
        self._log_garbage(feed, ev.reason, ev.where, ev.nbytes)

    def _log_garbage(self, feed: str, reason: str, where: str = "", nbytes: int = 0) -> None:
        now = time.monotonic()
        if now - self._garbage_logged.get(feed, -1e9) < GARBAGE_LOG_EVERY_S:
            return
        self._garbage_logged[feed] = now
        log.warning("feed input dropped", feed=feed, reason=reason[:200], where=where[:100],
                    bytes=nbytes, dropped_so_far=self.metrics.counts.get("dropped", 0))

    # ----------------------------------------------------------- transports

    def tasks(self) -> list[Callable[[], Awaitable[None]]]:
        """One coroutine factory per feed that has its own transport, plus codec timers."""
        out: list[Callable[[], Awaitable[None]]] = []
        for feed in self.site.feeds:
            transport = self.transport(feed.name)
            if transport is not None:
                out.append(self._guarded(feed.name, transport.run))
        if any(isinstance(c, Zigbee2Mqtt) for _n, c, _b in self.mqtt_codecs):
            out.append(self._guarded("zigbee2mqtt-timers", self._codec_timers))
        return out

    def transport(self, name: str) -> SerialFeed | Gb26875Server | ModbusPoller | None:
        """The transport of feed ``name`` as configured (None for the MQTT-borne feeds)."""
        feed = self.site.feed(name)
        if feed is None:
            return None
        emit = self._emitter(name)
        link = self._linker(name)
        if feed.type == "panel-printer":
            dialect = feed.dialect
            return SerialFeed(feed.port, feed.baud, lambda d=dialect: PrinterParser(d), emit,
                              link, bytesize=feed.bytesize, parity=feed.parity,
                              stopbits=feed.stopbits)
        if feed.type == "gb26875":
            # the UITDs' clocks: the feed's utc_offset, else the site's (+08:00 default)
            offset = parse_utc_offset(feed.utc_offset or self.site.utc_offset)
            return Gb26875Server(feed.listen, emit, link, address=feed.centre_address_int,
                                 utc_offset_s=offset)
        if feed.type == "modbus":
            devices = [d for d in self.site.feed_devices(name) if d.ref]
            refs = [d.ref for d in devices if d.ref]
            types = {d.ref: ValueType(d.modbus_type, d.modbus_word_order)
                     for d in devices if d.ref and d.modbus_type != "uint16"}
            return ModbusPoller(feed.port, feed.baud, refs, emit, link, poll_s=feed.poll_s,
                                registers=feed.registers, timeout_s=feed.timeout_s,
                                bytesize=feed.bytesize, parity=feed.parity,
                                stopbits=feed.stopbits, types=types)
        return None

    def _emitter(self, feed: str) -> Callable[[list[FeedEvent]], None]:
        def emit(events: list[FeedEvent]) -> None:
            self.events(feed, events)
        return emit

    def _linker(self, feed: str) -> Callable[[bool, str], None]:
        def link(up: bool, detail: str) -> None:
            self.submit("link", self.clock(), (feed, up, detail), True)
        return link

    def _guarded(self, name: str, run: Callable[[], Awaitable[None]]
                 ) -> Callable[[], Awaitable[None]]:
        async def guarded() -> None:
            backoff = 0.2
            while True:
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.metrics.inc("feed_restarts")
                    log.exception("feed failed; starting it again", feed=name,
                                  retry_in_s=backoff)
                    if name in self.site_feed_names():
                        self.submit("link", self.clock(),
                                    (name, False, f"{type(exc).__name__}: {str(exc)[:120]}"),
                                    True)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RESTART_MAX_S)
        return guarded

    def site_feed_names(self) -> set[str]:
        return {f.name for f in self.site.feeds}

    async def _codec_timers(self) -> None:
        """Zigbee2MQTT's clear_after_s: clear a stuck detector once its time is up."""
        while True:
            now_s = self.clock() / 1e9
            wait = 1.0
            for name, codec, _base in self.mqtt_codecs:
                if isinstance(codec, Zigbee2Mqtt):
                    events = codec.tick(now_s)
                    if events:
                        self.events(name, events)
                    nxt = codec.next_deadline()
                    if nxt is not None:
                        wait = min(wait, max(0.01, nxt - now_s))
            await asyncio.sleep(wait)
