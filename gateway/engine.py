"""The incident engine: a pure state machine from events (with the time passed in) to decisions.

No I/O and no clock inside: every entry point takes ``now_ns``. State changes happen
only in ``_apply(step)``, which is also how ``restore`` rebuilds open incidents from
the journal after a crash, so a replayed engine is the engine that crashed.

The 10·30·60 flow for one incident:
  detected → located (at once) → confirmed (manual call point, two detectors in a zone,
  or the grid worker's reply) | queued → escalated at T0+confirm_s | dismissed
  → paged tier 1 → acked / on_scene, or unanswered at ack_timeout_s → paged tier 2 ...
  → closed by a person.  A ``breach`` step is recorded the moment a target passes unmet.

Locating, clustering and verification (docs/locating.md): the first ``located`` comes in
the same call as the first signal, at the detector (or along a camera's bearing); every
further detector refines it with ``gateway.locate`` and records a further ``located``
whose fields carry the estimate, so a replay needs no re-computation. An alarm joins an
incident by building, floor order, distance and, for smoke on the fire floor, by whether
one fire explains it better than two. Verification only decides whether the confirm
queue can be skipped; nothing waits for it. Disablement windows come from the site file;
their start and end are ``rule`` steps.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import NoReturn

import orjson

from alerting.cap import CapError, SiteFrame, cap_alert, cap_identifier
from alerting.causes import CAUSES, FALSE_ALARM_CAUSES
from alerting.centre_report import GENERIC, PART_TYPES
from alerting.channel import Delivery
from alerting.page import Page
from drivers.gb26875 import parse_ref
from drivers.signal import Signal
from gateway import locate, page_text
from gateway.clustering import Clustering
from gateway.config import Device, Site, Window, Zone
from gateway.escalation import site_zone, tier_roster
from gateway.geometry import building_of, zone_at
from gateway.model import NS, CentreReport, Decisions, DeviceState, Publish, Refused, Step
from gateway.supervision import (
    OFFLINE_TROUBLES,
    FeedLink,
    Heartbeats,
    ordered,
    public_state,
    signal_state_of,
    trouble_publish,
)

FINISHED_KEPT = 1000
CENTRE_LINK = "monitoring-centre"  # the uplink's name in feed/ and trouble/ (docs/centre.md)
HEAT_RISE_K = 8.0  # analog heat or temperature rise that counts as heat (multi-criteria)
CO_RISE_PPM = 25.0  # analog CO rise that counts as combustion gas (multi-criteria)
ANALOG_FRESH_S = 120.0  # an analog reading older than this is no evidence
ANALOG_BAND = {"heat": 1.0, "temperature": 1.0, "co": 3.0}  # baseline follows within this
# an analog addressable smoke head's level, percent of its own alarm level (the panel
# compensates drift: clean air is 0); levels at and above this say the smoke has come
SMOKE_LEVEL_MIN_PCT = 10.0
FIRE_KINDS = frozenset({"smoke", "heat", "flame", "co", "temperature"})  # for coincidence
HEATLIKE = frozenset({"heat", "temperature", "co"})
NEAR_SIGMA_M = {"heat": 6.0, "temperature": 6.0, "co": 9.0, "flame": 10.0, "gas": 8.0,
                "manual": 10.0}  # "near here" for alarms outside the smoke time model
RULE_LOOKBACK_NS = 7 * 86_400 * NS  # window changes older than this are not re-recorded
OPEN, CONFIRMED, DISMISSED, CLOSED = "confirming", "confirmed", "dismissed", "closed"


@dataclass
class Incident:
    id: str
    t0_ns: int
    building: str
    floor: int = 0
    x: float = 0.0
    y: float = 0.0
    error_m: float = 0.0
    zone: str | None = None
    state: str = OPEN
    unverified: bool = False  # confirmed by escalation, nobody looked
    confirmed_by: str | None = None
    queued_to: str | None = None
    devices: dict[str, int] = field(default_factory=dict)  # device -> detected t_ns
    located_ns: int | None = None
    confirmed_ns: int | None = None
    on_scene: dict[str, int] = field(default_factory=dict)
    paged: dict[str, int] = field(default_factory=dict)  # responder -> tier
    acked: set[str] = field(default_factory=set)
    declined: set[str] = field(default_factory=set)
    tier: int = 0  # tier currently waited on
    tier_deadline_ns: int | None = None
    repeats: int = 0
    breaches: set[str] = field(default_factory=set)
    pre_alerted: set[str] = field(default_factory=set)
    unreachable: set[str] = field(default_factory=set)  # every channel failed
    passed: set[str] = field(default_factory=set)  # in-turn member who let their turn pass
    queue: list[str] = field(default_factory=list)  # in-turn members still to page
    current: str | None = None  # in-turn member whose turn it is
    again: int = 0  # repeat pages within the current tier
    repeat_deadline_ns: int | None = None
    channel: dict[str, int] = field(default_factory=dict)  # responder -> channel index
    confirm_rule: str | None = None
    cap_sent: list[int] = field(default_factory=list)  # t_ns of each CAP message so far
    cap_dirty: bool = False
    last_ns: int = 0
    method: str = ""
    t_ignition: float | None = None  # seconds from T0, from the last refinement
    bearings: dict[str, float] = field(default_factory=dict)  # camera -> bearing_deg
    cause: str | None = None  # given with the dismissal or the close (alerting.causes)

    @property
    def active(self) -> bool:
        return self.state in (OPEN, CONFIRMED)

    def public(self, site: str) -> dict:
        return {
            "id": self.id, "site": site, "state": self.state, "zone": self.zone,
            "building": None if self.building.startswith("zone:") else self.building,
            "floor": self.floor, "x": round(self.x, 2), "y": round(self.y, 2),
            "error_m": round(self.error_m, 2), "method": self.method, "t0": self.t0_ns / NS,
            "unverified": self.unverified, "confirmed_by": self.confirmed_by,
            "devices": sorted(self.devices), "tier": self.tier,
            "paged": sorted(self.paged), "acked": sorted(self.acked),
            "on_scene": sorted(self.on_scene), "breaches": sorted(self.breaches),
        }


@dataclass(slots=True)
class _Analog:
    """A sensor's analog readings: a slow baseline and the latest value (sensor state)."""

    baseline: float
    value: float
    t_ns: int

    @property
    def rise(self) -> float:
        return self.value - self.baseline


@dataclass(slots=True)
class _Layout:
    """What the engine derives from the site file once: it never changes while running."""

    zone_of: dict[str, Zone]
    floor_devices: dict[tuple[str, int], list[Device]]
    plans: dict[tuple[str, int], locate.FloorPlan]  # built when first needed
    windows: list[tuple[str, str, str, Window]]  # (rule id, scope, target, window)

    @classmethod
    def of(cls, site: Site) -> _Layout:
        zone_of: dict[str, Zone] = {}
        floor_devices: dict[tuple[str, int], list[Device]] = {}
        for d in site.devices:
            z = zone_at(site, d.floor, d.x, d.y)
            if z is not None:
                zone_of[d.id] = z
                floor_devices.setdefault((building_of(z), d.floor), []).append(d)
        windows = [
            *((f"rule-zone-{z.id}", "zone", z.id, w) for z in site.zones for w in z.disabled),
            *((f"rule-device-{d.id}", "device", d.id, w) for d in site.devices
              for w in d.disabled)]
        return cls(zone_of, floor_devices, {}, windows)


class Engine(Clustering):
    def __init__(self, site: Site, layout: _Layout | None = None):
        self.site = site
        self.incidents: dict[str, Incident] = {}  # active ones only
        # recently closed or dismissed, so late answers are refused with the right reason;
        # bounded, and never republished, so a long-running gateway does not grow
        self.finished: OrderedDict[str, Incident] = OrderedDict()
        self.device_states: dict[str, DeviceState] = {}
        self.counter = 0
        self._layout = layout if layout is not None else _Layout.of(site)
        self._zone_of = self._layout.zone_of
        self._device_index = {d.id: i for i, d in enumerate(site.devices)}
        self._floor_devices = self._layout.floor_devices
        self._plans = self._layout.plans
        self._windows = self._layout.windows
        # Sensor state, like device_states: not rebuilt from steps. After a restart a
        # sensor's baseline starts again from its next reading (docs/locating.md).
        self.analog: dict[str, _Analog] = {}
        # devices whose own last signal was a fault: the gateway's fault troubles
        # (flooding, readings not numbers) must not clear it when they end
        self.fault_signalled: set[str] = set()
        self._rule_done: set[tuple[str, int]] = set()  # (rule id, boundary t_ns) recorded
        self._rules_seen_ns: int | None = None  # boundaries up to here are settled
        # supervision (gateway.supervision): heartbeats of devices and of feeds' far ends
        limits = {d.id: _ns(d.heartbeat_s) for d in site.devices if d.heartbeat_s}
        limits.update({_FEED + f.name: _ns(f.heartbeat_s) for f in site.feeds if f.heartbeat_s})
        self.heartbeats = Heartbeats(limits)
        self.links: dict[str, FeedLink] = {f.name: FeedLink(f.name) for f in site.feeds}
        if site.monitoring_centre is not None:  # its line, supervised like a feed's
            self.links[CENTRE_LINK] = FeedLink(CENTRE_LINK)

    def fresh(self) -> Engine:
        """A new, empty engine for the same site, sharing what is derived from the file.

        For benchmarks and tests that run thousands of scenarios on one site.
        """
        return Engine(self.site, self._layout)

    # ---------------------------------------------------------------- inputs

    def signal(self, sig: Signal, now_ns: int, received_ns: int | None = None) -> Decisions:
        """A device spoke. Alarms open or join an incident; every state change is published.

        ``received_ns`` is when the gateway received the signal (T0 of a new incident and the
        time of its ``detected`` step); ``now_ns`` is when it is being processed. A device in
        a disablement window stays ``disabled``: its signal is recorded by the runtime, and
        opens, joins and confirms nothing.
        """
        device = self.site.device(sig.device)
        if device is None:
            raise Refused(f"unknown device {sig.device!r}", "unknown_device")
        if sig.kind is not None and sig.kind != device.kind:
            raise Refused(f"device {device.id!r} is a {device.kind}, signal says {sig.kind!r}",
                          "kind_mismatch")
        out = Decisions()
        received = received_ns or now_ns
        self._heard(device, now_ns, out)
        # receipts are the native feed's (docs/mqtt.md): a panel's or a bridge's clock
        # may stamp two alarms of a point with the same second
        receipt = sig.ts if sig.state == "alarm" and device.feed is None else None
        prev = self.device_states.get(device.id)
        if receipt is not None and prev is not None and prev.alarm_ts is not None \
                and receipt <= prev.alarm_ts:
            # an alarm heard before, sent again because its receipt did not reach the
            # device (a broker crash, docs/mqtt.md): the receipt again, nothing else
            out.publishes.append(Publish(f"device/{device.id}", prev.payload(), retain=True))
            out.repeated.append(device.id)
            return out
        if self._disabled(device, received):
            self._device_state(device, "disabled", now_ns, out, receipt=receipt)
            return out
        if sig.state == "fault":
            self.fault_signalled.add(device.id)
        elif sig.state in ("clear", "alarm"):
            self.fault_signalled.discard(device.id)
        self._device_state(device, _DEVICE_STATE[sig.state], now_ns, out, receipt=receipt)
        if sig.value is not None and device.kind in ANALOG_BAND and sig.state != "fault":
            self._analog_reading(device, sig.value, received, now_ns, out,
                                 alarm=sig.state == "alarm")
        elif sig.value is not None and device.kind == "smoke" and sig.state == "clear":
            # a level, not a temperature: no baseline to follow, and no rule of its own
            self.analog[device.id] = _Analog(0.0, float(sig.value), received)
        if sig.state == "alarm":
            self._alarm(device, sig, now_ns, received, out)
        return out

    # ------------------------------------------------------- supervision

    def seen(self, device_id: str, now_ns: int) -> Decisions:
        """A device is alive (a heartbeat, a periodic report): resets its silence timer."""
        device = self._known(device_id)
        out = Decisions()
        self._heard(device, now_ns, out)
        return out

    def trouble(self, device_id: str, trouble: str, active: bool, now_ns: int,
                detail: str = "") -> Decisions:
        """A feed reports a device trouble starting or ending (battery, tamper, offline...)."""
        device = self._known(device_id)
        out = Decisions()
        ds = self.device_states.get(device.id)
        troubles = set(ds.troubles) if ds else set()
        state = None
        if trouble == "fault":
            # a fault is the device's state (device/<id> "fault"), as a fault signal sets
            # it; as a plain trouble it would be dropped with the next clear
            if active:
                state = "fault"
            elif (ds is not None and signal_state_of(ds.state) == "fault"
                  and device.id not in self.fault_signalled):
                state = "normal"  # but a fault the device itself sent stays
        elif active:
            troubles.add(trouble)
        else:
            troubles.discard(trouble)
        if active and trouble not in OFFLINE_TROUBLES:
            self.heartbeats.heard(device.id, now_ns)  # it spoke to say so
        self._device_state(device, state, now_ns, out, troubles=troubles,
                           detail=detail if active else "")
        return out

    def reset(self, feed: str, prefix: str | None, now_ns: int) -> Decisions:
        """A panel reset: its devices (under ``prefix`` where given) back to normal.

        A reset does not close an incident: a person does (CONTRACT §3).
        """
        out = Decisions()
        for d in self.site.feed_devices(feed):
            if prefix is not None and d.ref != prefix and not (d.ref or "").startswith(
                    prefix + "/"):
                continue
            ds = self.device_states.get(d.id)
            if ds is not None and ds.state in ("alarm", "fault"):
                self._device_state(d, "normal", now_ns, out)
        return out

    def link(self, feed: str, up: bool, now_ns: int, detail: str = "") -> Decisions:
        """A feed's transport came up or went down (cable pulled, device disconnected)."""
        out = Decisions()
        link = self.links.get(feed)
        if link is None:
            raise Refused(f"unknown feed {feed!r}", "unknown_feed")
        if up:
            self.heartbeats.heard(_FEED + feed, now_ns)
        if link.up is up:
            return out
        link.up, link.since_ns, link.detail = up, now_ns, detail
        out.publishes.append(Publish(f"feed/{feed}", link.payload(), retain=True))
        if up:
            out.publishes.append(trouble_publish(feed, (), now_ns))
        else:
            out.publishes.append(trouble_publish(feed, ("offline",), now_ns, detail))
        out.devices.append(DeviceState(feed, "normal" if up else "offline", now_ns, "feed",
                                       () if up else ("offline",), detail))
        return out

    def feed_seen(self, feed: str, now_ns: int) -> Decisions:
        """The feed's far end spoke (any good frame or heartbeat): its link is up."""
        link = self.links.get(feed)
        if link is None:
            raise Refused(f"unknown feed {feed!r}", "unknown_feed")
        self.heartbeats.heard(_FEED + feed, now_ns)
        if link.up is False and link.detail.startswith("silent"):
            return self.link(feed, True, now_ns, "heard again")
        return Decisions()

    def _known(self, device_id: str) -> Device:
        device = self.site.device(device_id)
        if device is None:
            raise Refused(f"unknown device {device_id!r}", "unknown_device")
        return device

    def _heard(self, device: Device, now_ns: int, out: Decisions) -> None:
        self.heartbeats.heard(device.id, now_ns)
        ds = self.device_states.get(device.id)
        if ds is not None and OFFLINE_TROUBLES & set(ds.troubles):
            self._device_state(device, None, now_ns, out,
                               troubles=set(ds.troubles) - OFFLINE_TROUBLES)

    def _supervise(self, now_ns: int, out: Decisions) -> None:
        """Devices and feeds silent past their heartbeat become troubles."""
        self.heartbeats.start(now_ns)
        for key, silent_ns in self.heartbeats.expired(now_ns):
            if key.startswith(_FEED):
                feed = key[len(_FEED):]
                if self.links[feed].up is not False:
                    out.extend(self.link(feed, False, now_ns,
                                         f"silent for {silent_ns / NS:.0f} s (heartbeat "
                                         f"{self.site.feed(feed).heartbeat_s:g} s)"))
                continue
            device = self.site.device(key)
            ds = self.device_states.get(key)
            if device is None or (ds is not None and "offline" in ds.troubles):
                continue
            troubles = {*(ds.troubles if ds else ()), "offline"}
            self._device_state(device, None, now_ns, out, troubles=troubles,
                               detail=f"silent for {silent_ns / NS:.0f} s "
                                      f"(heartbeat {device.heartbeat_s:g} s)")

    def _silent_keys(self) -> set[str]:
        keys = {d for d in self.heartbeats.limits_ns
                if (ds := self.device_states.get(d)) is not None and "offline" in ds.troubles}
        keys.update(_FEED + name for name, link in self.links.items() if link.up is False)
        return keys

    def reply(self, incident_id: str, decision: str, by: str, now_ns: int,
              cause: str | None = None) -> Decisions:
        """The grid worker (or another responder) confirms or dismisses a queued incident.

        A dismissal may say why (``cause``, one of BS 5839-1's false-alarm categories):
        ``firegrid audit`` counts false alarms by cause and by device from it.
        """
        inc = self._incident(incident_id)
        if decision not in ("confirm", "dismiss"):
            raise Refused(f"decision must be confirm or dismiss, got {decision!r}", "bad_payload")
        if cause is not None and (decision != "dismiss" or cause not in FALSE_ALARM_CAUSES):
            raise Refused(f"cause {_short(cause)} does not go with {decision}: a dismissal's "
                          f"is one of {', '.join(FALSE_ALARM_CAUSES)}", "bad_payload")
        if self.site.responder(by) is None:
            self._refuse(inc, f"reply by unknown responder {by!r}", "unknown_responder",
                         now_ns, by, f"reply:{decision}")
        confirmers = self._confirmers(inc)
        if by not in confirmers:
            self._refuse(inc, f"{by} may not decide for zone {inc.zone} "
                         f"(confirmer: {', '.join(sorted(confirmers)) or 'none'})",
                         "not_confirmer", now_ns, by, f"reply:{decision}")
        if inc.state != OPEN:
            self._refuse(inc, f"incident {inc.id} is already {inc.state}", "late_reply",
                         now_ns, by, f"reply:{decision}")
        out = Decisions()
        tier = self.site.responder(by).tier  # type: ignore[union-attr]
        if decision == "confirm":
            self._confirm(inc, "confirmed", now_ns, out, responder=by, tier=tier,
                          fields={"by": by})
        else:
            self._emit(out, inc, "dismissed", now_ns, responder=by, tier=tier,
                       fields={"by": by} | ({"cause": cause} if cause else {}))
            self._clear_confirm_request(inc, out)
        self._publish_incident(inc, out)
        return out

    def ack(self, responder: str, incident_id: str, status: str, now_ns: int) -> Decisions:
        """A pager answered: ack stops the escalation, decline passes on, on_scene is arrival."""
        inc = self._incident(incident_id)
        r = self.site.responder(responder)
        if r is None:
            self._refuse(inc, f"ack from unknown responder {responder!r}", "unknown_responder",
                         now_ns, responder, f"ack:{status}")
        if not inc.active:
            self._refuse(inc, f"incident {inc.id} is {inc.state}", "late_ack", now_ns,
                         responder, f"ack:{status}")
        if (status != "on_scene" and responder not in inc.paged
                and responder not in inc.pre_alerted):
            self._refuse(inc, f"{responder} was not paged for {inc.id}", "not_paged", now_ns,
                         responder, f"ack:{status}")
        assert r is not None
        out = Decisions()
        tier = inc.paged.get(responder, r.tier)
        if status == "decline":
            if responder in inc.declined or responder in inc.acked:
                raise Refused(f"{responder} already answered {inc.id}", "duplicate")
            self._emit(out, inc, "declined", now_ns, responder=responder, tier=tier)
            if tier == inc.tier and inc.state == CONFIRMED:
                self._advance(inc, now_ns, out)
        else:
            if responder not in inc.acked:
                self._emit(out, inc, "acked", now_ns, responder=responder, tier=tier,
                           fields={"status": status})
            elif status == "ack":
                raise Refused(f"{responder} already acknowledged {inc.id}", "duplicate")
            if status == "on_scene":
                if responder in inc.on_scene:
                    raise Refused(f"{responder} already on scene at {inc.id}", "duplicate")
                self._emit(out, inc, "on_scene", now_ns, responder=responder, tier=tier)
        self._publish_incident(inc, out)
        return out

    def delivery(self, d: Delivery, now_ns: int) -> Decisions:
        """A pager channel reports a page delivered or failed (TAP, SNPP).

        A failure moves to the responder's next channel; when none is left the responder
        is unreachable and, like a decline, no longer holds up the escalation.
        """
        out = Decisions()
        inc = self.incidents.get(d.incident)
        r = self.site.responder(d.responder)
        if inc is None or r is None:
            raise Refused(f"delivery report for {d.incident}/{d.responder}, not open",
                          "late_delivery")
        tier = inc.paged.get(r.id, r.tier)
        info = {"channel": d.channel, "detail": d.detail[:200], "attempts": d.attempts}
        if d.ok:
            self._emit(out, inc, "delivered", now_ns, responder=r.id, tier=tier, fields=info)
            return out
        channels = r.channels
        idx = inc.channel.get(r.id, 0)
        if idx + 1 < len(channels):
            self._emit(out, inc, "page_failed", now_ns, responder=r.id, tier=tier,
                       fields={**info, "next_channel": channels[idx + 1].type})
            pre = r.id not in inc.paged
            page = self._page(inc, r.id, tier, now_ns, channel=idx + 1, pre_alert=pre)
            self._emit(out, inc, "pre_alerted" if pre else "paged", now_ns, responder=r.id,
                       tier=tier, fields={"channel": channels[idx + 1].type,
                                          "channel_index": idx + 1, "text": page.text,
                                          "fallback": True})
            out.pages.append(page)
            return out
        self._emit(out, inc, "page_failed", now_ns, responder=r.id, tier=tier,
                   fields={**info, "final": True})
        if r.id in inc.paged and inc.paged[r.id] == inc.tier and inc.state == CONFIRMED:
            self._advance(inc, now_ns, out)
        self._publish_incident(inc, out)
        return out

    def forwarded(self, report: CentreReport, ok: bool, now_ns: int, *, attempts: int = 1,
                  detail: str = "") -> Decisions:
        """The monitoring centre confirmed a report (``forwarded``), or the uplink could
        not get a 确认 for it this time (``forward_failed``; it is sent again).

        Recorded even when the incident is finished and forgotten: the report carries
        the incident's id and T0, and an auditor wants to see when the centre had it.
        """
        out = Decisions()
        inc = self.incidents.get(report.incident) or self.finished.get(report.incident)
        self._emit(out, inc, "forwarded" if ok else "forward_failed", now_ns,
                   incident_id=report.incident, t0_ns=report.t0_ns, device=report.device,
                   fields={"attempts": attempts, "detail": detail[:200],
                           "part_addr": report.part_addr, "status": report.status})
        return out

    def close(self, incident_id: str, by: str, reason: str, now_ns: int,
              cause: str | None = None) -> Decisions:
        """A person closes the incident; detectors clearing never does.

        ``cause`` says whether it was a fire (``fire``) or which kind of false alarm.
        """
        inc = self._incident(incident_id)
        if cause is not None and cause not in CAUSES:
            raise Refused(f"cause must be one of {', '.join(CAUSES)}, got {_short(cause)}",
                          "bad_payload")
        r = self.site.responder(by)
        if r is None:
            self._refuse(inc, f"close by unknown responder {by!r}", "unknown_responder", now_ns,
                         by, "close")
        if not inc.active:
            self._refuse(inc, f"incident {inc.id} is already {inc.state}", "late_close", now_ns,
                         by, "close")
        assert r is not None
        out = Decisions()
        reported = inc.state == CONFIRMED  # every detector of it went to the centre
        self._emit(out, inc, "closed", now_ns, responder=by, tier=r.tier,
                   fields={"by": by, "reason": reason[:500]}
                   | ({"cause": cause} if cause else {}))
        self._clear_confirm_request(inc, out)
        if reported:  # the centre clears its alarm too
            for dev_id in sorted(inc.devices, key=inc.devices.__getitem__):
                self._report(inc, dev_id, out, status="normal", at_ns=now_ns)
        self._publish_incident(inc, out)
        return out

    def tick(self, now_ns: int) -> Decisions:
        """Fire every deadline at or before ``now_ns``: escalation, tier timeouts, breaches,
        and the start or end of a disablement window."""
        out = Decisions()
        self._rule_changes(now_ns, out)
        self._supervise(now_ns, out)
        sla = self.site.sla
        for inc in list(self.incidents.values()):
            if not inc.active:
                continue
            changed = False
            if inc.located_ns is None and now_ns >= inc.t0_ns + _ns(sla.locate_s):
                changed |= self._breach(inc, "locate", sla.locate_s, now_ns, out)
            if inc.state == OPEN and now_ns >= inc.t0_ns + _ns(sla.confirm_s):
                self._confirm(inc, "escalated", now_ns, out,
                              fields={"reason": "no decision by the confirm deadline"})
                changed = True
            if not inc.on_scene and now_ns >= inc.t0_ns + _ns(sla.in_place_s):
                changed |= self._breach(inc, "in_place", sla.in_place_s, now_ns, out)
            if inc.tier_deadline_ns is not None and now_ns >= inc.tier_deadline_ns:
                self._tier_timeout(inc, now_ns, out)
                changed = True
            if inc.repeat_deadline_ns is not None and now_ns >= inc.repeat_deadline_ns:
                self._repeat(inc, now_ns, out)
            if changed:
                self._publish_incident(inc, out)
        return out

    def next_deadline_ns(self) -> int | None:
        """The earliest time ``tick`` has something to do; None when nothing is pending."""
        sla = self.site.sla
        best: int | None = self._next_rule_change()
        if self.heartbeats.limits_ns:  # a site without supervision pays nothing here
            beat = self.heartbeats.next_ns(self._silent_keys())
            if beat is not None and (best is None or beat < best):
                best = beat
        for inc in self.incidents.values():
            if not inc.active:
                continue
            for t in (
                inc.t0_ns + _ns(sla.locate_s) if inc.located_ns is None
                and "locate" not in inc.breaches else None,
                inc.t0_ns + _ns(sla.confirm_s) if inc.state == OPEN else None,
                inc.t0_ns + _ns(sla.in_place_s) if not inc.on_scene
                and "in_place" not in inc.breaches else None,
                inc.tier_deadline_ns,
                inc.repeat_deadline_ns,
            ):
                if t is not None and (best is None or t < best):
                    best = t
        return best

    # --------------------------------------------------------- restore / state

    def restore(self, steps: Iterable[Step], devices: Iterable[DeviceState] = (),
                counter: int = 0) -> None:
        """Rebuild from the journal: re-apply every step of the open incidents, in order.

        Steps of finished incidents among them rebuild ``finished`` (late answers are
        refused as late); they leave no timer and nothing to republish.
        """
        self.counter = max(self.counter, counter)
        for step in steps:
            self._apply(step)
        for inc in (*self.incidents.values(), *self.finished.values()):
            inc.cap_dirty = False  # republished with the rest of retained() on connect
        for ds in devices:
            self.device_states[ds.device] = ds

    def retained(self) -> list[Publish]:
        """Every retained message the gateway owns, for republishing after a (re)connect."""
        out: list[Publish] = []
        for inc in self.incidents.values():
            out.append(Publish(f"incident/{inc.id}", orjson.dumps(self._state(inc)),
                               retain=True))
            if inc.state == OPEN and inc.queued_to is not None:
                out.append(self._confirm_request(inc))
            cap = self._cap(inc)
            if cap is not None:
                out.append(cap)
        for ds in self.device_states.values():
            if ds.kind == "feed":
                continue
            out.append(Publish(f"device/{ds.device}", ds.payload(), retain=True))
            if ds.troubles:
                out.append(trouble_publish(ds.device, ds.troubles, ds.since_ns, ds.detail))
        for link in self.links.values():
            if link.up is not None:
                out.append(Publish(f"feed/{link.name}", link.payload(), retain=True))
                if not link.up:
                    out.append(trouble_publish(link.name, ("offline",), link.since_ns,
                                               link.detail))
        return out

    def open_incidents(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.active]

    # ------------------------------------------------------------- internals

    def _confirmers(self, inc: Incident) -> set[str]:
        """Who may confirm or dismiss: the zone's grid worker, else any tier-0 responder."""
        zone = self.site.zone(inc.zone) if inc.zone else None
        if zone is not None and zone.worker:
            return {zone.worker}
        return {r.id for r in self.site.responders if r.tier == 0}

    def _refuse(self, inc: Incident, reason: str, kind: str, now_ns: int, who: str,
                what: str) -> NoReturn:
        """Refuse an answer about a known incident, and record that it was refused.

        A forged or misdirected acknowledgement is itself audit evidence, so it becomes a
        ``refused`` step (carried on the exception) as well as a counted log line.
        """
        out = Decisions()
        r = self.site.responder(who)
        self._emit(out, inc, "refused", now_ns, responder=who if r else None,
                   tier=r.tier if r else None,
                   fields={"reason": kind, "input": what, "from": who[:64]})
        raise Refused(reason, kind, out)

    def _incident(self, incident_id: str) -> Incident:
        inc = self.incidents.get(incident_id) or self.finished.get(incident_id)
        if inc is None:
            raise Refused(f"unknown incident {incident_id!r}", "unknown_incident")
        return inc

    def _device_state(self, device: Device, state: str | None, now_ns: int,
                      out: Decisions, *, troubles: set[str] | None = None,
                      detail: str = "", receipt: float | None = None) -> None:
        """Set a device's signal state (``state``) and/or its troubles; publish on change.

        ``device/<id>`` changes with the public state; ``trouble/<id>`` whenever the set
        of troubles (a ``fault`` signal counts as one) changes, empty once none is left.
        ``receipt``, the ``ts`` of an alarm just heard, is put in ``device/<id>`` as
        ``alarm_ts``, which is then published even if nothing else changed.
        """
        prev = self.device_states.get(device.id)
        if state is None and troubles is None:
            return
        sig_state = state if state is not None else (
            signal_state_of(prev.state) if prev else "normal")
        have = set(troubles) if troubles is not None else set(prev.troubles if prev else ())
        have.discard("fault")
        if sig_state == "fault":
            have.add("fault")
        new_troubles = ordered(have)
        public = public_state(sig_state, have)
        changed = prev is None or prev.state != public or prev.troubles != new_troubles
        if not changed and receipt is None:
            return
        if prev is None and public == "normal" and not new_troubles and state is None:
            return  # nothing to say about a device never seen in trouble
        alarm_ts = receipt if receipt is not None else prev.alarm_ts if prev else None
        keep = detail or (prev.detail if prev and new_troubles else "")
        if changed:
            ds = DeviceState(device.id, public, now_ns, device.kind, new_troubles, keep, alarm_ts)
        else:  # only the receipt is new: the state keeps its time
            assert prev is not None
            ds = replace(prev, alarm_ts=alarm_ts)
        self.device_states[device.id] = ds
        out.devices.append(ds)
        out.publishes.append(Publish(f"device/{device.id}", ds.payload(), retain=True))
        if new_troubles != (prev.troubles if prev else ()):
            out.publishes.append(trouble_publish(device.id, new_troubles, now_ns, keep))

    # ------------------------------------------------------------ an alarm

    def _alarm(self, device: Device, sig: Signal, now_ns: int, received_ns: int,
               out: Decisions) -> None:
        zone = self._zone_of.get(device.id)
        if zone is None:  # config checks every device floor has a zone; belt and braces
            raise Refused(f"device {device.id!r} is in no zone", "no_zone")
        if any(inc.active and device.id in inc.devices for inc in self.incidents.values()):
            return  # already counted in its incident
        bearing = sig.bearing_deg if device.kind == "camera" else None
        inc, est = self._cluster(device, zone, bearing, received_ns)
        notify: tuple[Device, Zone, list[str]] | None = None  # a new cell joined, who to tell
        # the device's own cell: the step's zone tag is the incident's, so an auditor can
        # see where each detector was without the site file (docs/audit.md)
        fields: dict[str, object] = {"kind": device.kind, "cell": zone.id}
        if bearing is not None:
            fields["bearing_deg"] = float(bearing)
        if sig.value is not None:
            fields["value"] = float(sig.value)
        if inc is None:
            self.counter += 1
            # date and time keep ids unique per site even if a journal is ever replaced
            stamp = datetime.fromtimestamp(received_ns / NS, UTC).strftime("%y%m%d-%H%M%S")
            inc_id = f"inc-{stamp}-{self.counter}"
            self._emit(out, None, "detected", received_ns, incident_id=inc_id, t0_ns=received_ns,
                       zone=zone.id, device=device.id,
                       fields={**fields, "building": building_of(zone),
                               "counter": self.counter})
            inc = self.incidents[inc_id]
        else:
            new_cell = device.kind != "camera" and zone.id not in self._cells(inc)
            self._emit(out, inc, "detected", received_ns, device=device.id, fields=fields)
            if inc.state == CONFIRMED:  # the centre already had the others: this one too
                self._report(inc, device.id, out)
            if new_cell:  # only who was paged before this alarm: a page sent now says it all
                notify = (device, zone, [*inc.paged, *sorted(inc.pre_alerted - inc.paged.keys())])
        self._locate(inc, now_ns, received_ns, out, est)
        if inc.state == OPEN:
            rule = self._auto_confirm_rule(inc, device, received_ns)
            if rule is not None:
                self._confirm(inc, "confirmed", now_ns, out,
                              fields={"by": "auto", "rule": rule, "trigger": device.id})
            elif inc.queued_to is None:
                self._queue(inc, now_ns, out)
        if inc.state == OPEN and not inc.pre_alerted:
            self._pre_alert(inc, now_ns, out)
        if notify is not None:
            self._notify_cell(inc, *notify, now_ns, out)
        self._publish_incident(inc, out)

    # ------------------------------------------------------------- locating

    def _fire_floor(self, inc: Incident, extra: Device | None = None) -> int:
        """The lowest floor in alarm (smoke rises, so it was first); cameras only if alone."""
        devs = [d for d in (self.site.device(i) for i in inc.devices) if d is not None]
        if extra is not None:
            devs.append(extra)
        floors = [d.floor for d in devs if d.kind != "camera"]
        return min(floors) if floors else min(d.floor for d in devs)

    def _plan(self, building: str, floor: int) -> locate.FloorPlan:
        key = (building, floor)
        plan = self._plans.get(key)
        if plan is None:
            zones = [(z.id, z.polygon) for z in self.site.zones
                     if z.floor == floor and building_of(z) == building]
            plan = locate.FloorPlan.build(zones)
            self._plans[key] = plan
        return plan

    def _solve(self, inc: Incident, t_ns: int, extra: tuple[Device, int] | None = None,
               exclude: str | None = None, fine: bool = True) -> locate.Estimate | None:
        """The evidence of one incident on its fire floor, as of ``t_ns``, through the solver."""
        got = self._evidence(inc, t_ns, extra, exclude)
        return locate.solve(got[0], got[1], fine) if got is not None else None

    def _evidence(self, inc: Incident, t_ns: int, extra: tuple[Device, int] | None = None,
                  exclude: str | None = None
                  ) -> tuple[locate.FloorPlan, locate.Evidence] | None:
        """The solver's input for one incident's fire floor, as of ``t_ns``."""
        floor = self._fire_floor(inc, extra[0] if extra else None)
        plan = self._plan(inc.building, floor)
        if plan.px.size == 0:
            return None
        zindex = {z: i for i, z in enumerate(plan.zone_ids)}
        ev = locate.Evidence(now=(t_ns - inc.t0_ns) / NS)
        members = [(i, t) for i, t in inc.devices.items() if i != exclude]
        if extra is not None:
            members.append((extra[0].id, extra[1]))
        taken = {i for other in self.incidents.values() if other.active for i in other.devices}
        taken.update(i for i, _ in members)
        if exclude:
            taken.add(exclude)
        for dev_id, t in members:
            d = self.site.device(dev_id)
            if d is None or d.floor != floor:
                continue
            zi = zindex.get(self._zone_of[d.id].id, -1)
            if d.kind == "smoke":
                ev.alarm_xy.append((d.x, d.y))
                ev.alarm_t.append((t - inc.t0_ns) / NS)
                ev.alarm_zone.append(zi)
            elif d.kind == "camera":
                b = inc.bearings.get(d.id)
                if b is not None:
                    ev.cam_xy.append((d.x, d.y))
                    ev.cam_bearing_deg.append(b)
                    ev.cam_sigma_deg.append(locate.BEARING_SIGMA_DEG)
                    ev.cam_zone.append(zi)
                elif d.azimuth_deg is not None:
                    ev.cam_xy.append((d.x, d.y))
                    ev.cam_bearing_deg.append(d.azimuth_deg)
                    ev.cam_sigma_deg.append(max((d.fov_deg or 90.0) / 2, 5.0))
                    ev.cam_zone.append(zi)
                else:
                    ev.near_xy.append((d.x, d.y))
                    ev.near_sigma.append(d.radius)
            elif d.kind != "manual":
                ev.near_xy.append((d.x, d.y))
                ev.near_sigma.append(NEAR_SIGMA_M.get(d.kind, d.radius))
        if not ev.has_position_evidence:  # only call points: a person stood there
            for dev_id, _ in members:
                d = self.site.device(dev_id)
                if d is not None and d.floor == floor and d.kind == "manual":
                    ev.near_xy.append((d.x, d.y))
                    ev.near_sigma.append(NEAR_SIGMA_M["manual"])
        for d in self._floor_devices.get((inc.building, floor), ()):
            if d.id in taken or self._disabled(d, t_ns):
                continue
            state = self.device_states.get(d.id)
            if d.kind == "smoke" and (state is None or state.state in ("normal", "trouble")):
                tr = self.analog.get(d.id)
                zi = zindex.get(self._zone_of[d.id].id, -1)
                if (tr is not None and SMOKE_LEVEL_MIN_PCT <= tr.value < 100.0
                        and 0 <= t_ns - tr.t_ns <= _ns(ANALOG_FRESH_S)):
                    ev.level_xy.append((d.x, d.y))  # smoke is coming: a point on its curve
                    ev.level_t.append((tr.t_ns - inc.t0_ns) / NS)
                    ev.level_frac.append(tr.value / 100.0)
                    ev.level_zone.append(zi)
                else:
                    ev.silent_xy.append((d.x, d.y))
                    ev.silent_zone.append(zi)
            elif d.kind in ("heat", "temperature"):
                tr = self.analog.get(d.id)
                if (tr is not None and tr.rise >= locate.MIN_ANALOG_RISE_K
                        and 0 <= t_ns - tr.t_ns <= _ns(ANALOG_FRESH_S)):
                    ev.analog_xy.append((d.x, d.y))
                    ev.analog_t.append((tr.t_ns - inc.t0_ns) / NS)
                    ev.analog_rise.append(tr.rise)
                    ev.analog_zone.append(zindex.get(self._zone_of[d.id].id, -1))
        return plan, ev

    def _locate(self, inc: Incident, now_ns: int, t_ns: int, out: Decisions,
                est: locate.Estimate | None = None) -> None:
        """First fix at the first device (or along its bearing); then refine on each one."""
        devs = sorted((d for d in (self.site.device(i) for i in inc.devices) if d is not None),
                      key=lambda d: inc.devices[d.id])
        first = devs[0]
        floor = self._fire_floor(inc)
        order: list[int] = []
        for d in devs:
            if d.kind != "camera" and d.floor not in order:
                order.append(d.floor)
        fields: dict[str, object] = {}
        if inc.located_ns is None and first.kind != "camera":
            x, y, err, method = first.x, first.y, first.radius, "first"
            zone = self._zone_of[first.id]
        else:
            est = est or self._solve(inc, t_ns)
            if est is not None:
                x, y, err, method = est.x, est.y, est.error_m, est.method
                zone = self.site.zone(est.zone)
                if est.t_ignition is not None and est.k is not None:
                    fields = {"t_ignition": round(est.t_ignition, 2),
                              "spread_k": round(est.k, 2)}
            else:  # no floor plan to search (degenerate polygons): the detectors' centroid
                same = [d for d in devs if d.floor == floor] or devs
                x = sum(d.x for d in same) / len(same)
                y = sum(d.y for d in same) / len(same)
                err = max(d.radius for d in same)
                method = "centroid"
                zone = zone_at(self.site, floor, x, y) or self._zone_of[same[0].id]
        first_fix = inc.located_ns is None
        step = self._emit(out, inc, "located", now_ns, zone=zone.id,
                          fields={"x": round(x, 3), "y": round(y, 3), "floor": floor,
                                  "error_m": round(err, 3), "detectors": len(devs),
                                  "method": method,
                                  "floors": ",".join(str(f) for f in order),
                                  **fields})
        if first_fix and step.elapsed_s > self.site.sla.locate_s:  # e.g. after a backlog
            self._breach(inc, "locate", self.site.sla.locate_s, now_ns, out)

    # ---------------------------------------------------------- verification

    def _auto_confirm_rule(self, inc: Incident, trigger: Device, t_ns: int) -> str | None:
        """Clear evidence skips the confirm queue; it never delays anything.

        A manual call point always confirms. Otherwise the incident's zone must allow the
        rule, and only devices in zones that allow it count: a kitchen (``ask_human``)
        detector never makes a coincidence, wherever the incident is.
        """
        if trigger.kind == "manual":
            return "manual_call_point"
        zone = self.site.zone(inc.zone) if inc.zone else None
        members = [d for d in (self.site.device(i) for i in inc.devices) if d is not None]

        def counted(rule: str, kinds: frozenset[str] | set[str]) -> list[Device]:
            return [d for d in members if d.kind in kinds and self._zone_of[d.id].allows(rule)]

        def allowed(rule: str) -> bool:
            return zone is None or zone.allows(rule)

        if allowed("multi_criteria") and counted("multi_criteria", {"smoke"}) and (
                counted("multi_criteria", HEATLIKE) or self._analog_near(inc, t_ns)):
            return "multi_criteria"
        if allowed("coincidence") and len(counted("coincidence", FIRE_KINDS)) >= 2:
            return "coincidence"
        if (allowed("camera_detector") and counted("camera_detector", {"camera"})
                and counted("camera_detector", FIRE_KINDS)):
            return "camera_detector"
        return None

    def _analog_near(self, inc: Incident, t_ns: int) -> list[Device]:
        """Heat or CO sensors near the incident whose latest reading rose past the threshold."""
        return [d for d in self._floor_devices.get((inc.building, inc.floor), ())
                if d.kind in HEATLIKE and d.id not in inc.devices
                and self._analog_evidence(d, inc, t_ns)]

    def _analog_evidence(self, d: Device, inc: Incident, t_ns: int) -> bool:
        """Does this sensor's latest reading count as heat or CO for this incident?"""
        tr = self.analog.get(d.id)
        if tr is None:
            return False
        need = CO_RISE_PPM if d.kind == "co" else HEAT_RISE_K
        return (tr.rise >= need and abs(t_ns - tr.t_ns) <= _ns(ANALOG_FRESH_S)
                and math.hypot(d.x - inc.x, d.y - inc.y) <= d.radius + inc.error_m + 3.0
                and self._zone_of[d.id].allows("multi_criteria")
                and not self._disabled(d, t_ns))

    def _analog_reading(self, device: Device, value: float, t_ns: int, now_ns: int,
                        out: Decisions, alarm: bool) -> None:
        """Track a sensor's baseline; a rise past the threshold may confirm an open incident."""
        tr = self.analog.get(device.id)
        if tr is None:
            self.analog[device.id] = _Analog(value, value, t_ns)
            return
        if value <= tr.baseline + ANALOG_BAND[device.kind]:
            tr.baseline += 0.2 * (value - tr.baseline)  # follows the room, not the fire
        tr.value, tr.t_ns = value, t_ns
        if alarm:
            return  # the alarm itself is the evidence: handled as it joins an incident
        zone = self._zone_of.get(device.id)
        if zone is None or tr.rise < (CO_RISE_PPM if device.kind == "co" else HEAT_RISE_K):
            return
        building = building_of(zone)
        for inc in list(self.incidents.values()):
            if (inc.state != OPEN or inc.building != building or inc.floor != device.floor
                    or device.id in inc.devices
                    or not self._analog_evidence(device, inc, t_ns)):
                continue
            rule = self._auto_confirm_rule(inc, device, t_ns)
            if rule == "multi_criteria":
                self._confirm(inc, "confirmed", now_ns, out,
                              fields={"by": "auto", "rule": rule, "trigger": device.id,
                                      "rise": round(tr.rise, 2)})
                self._publish_incident(inc, out)

    # ---------------------------------------------------- disablement windows

    def _disabled(self, device: Device, t_ns: int) -> bool:
        zone = self._zone_of.get(device.id)
        for _rid, scope, target, w in self._windows:
            if (target == device.id if scope == "device" else zone is not None
                    and target == zone.id) and w.start_ns <= t_ns < w.until_ns:
                return True
        return False

    def _boundaries(self) -> list[tuple[int, str, str, str, str, Window]]:
        """(t_ns, rule id, start|end, scope, target, window) of every window, in time order."""
        out = []
        for rid, scope, target, w in self._windows:
            out.append((w.start_ns, rid, "start", scope, target, w))
            out.append((w.until_ns, rid, "end", scope, target, w))
        return sorted(out, key=lambda b: (b[0], b[1], b[2] == "start"))

    def _next_rule_change(self) -> int | None:
        seen = self._rules_seen_ns
        for t, rid, *_ in self._boundaries():
            if (seen is None or t > seen) and (rid, t) not in self._rule_done:
                return t
        return None

    def _rule_changes(self, now_ns: int, out: Decisions) -> None:
        """Record each window start and end that has come, at its own time, once."""
        if not self._windows:
            return
        lo = self._rules_seen_ns if self._rules_seen_ns is not None else (
            now_ns - RULE_LOOKBACK_NS)
        if self._rules_seen_ns is not None and now_ns <= lo:
            return
        crossed = False
        for t, rid, change, scope, target, w in self._boundaries():
            if not lo < t <= now_ns or (rid, t) in self._rule_done:
                continue
            crossed = True
            device = target if scope == "device" else None
            zone = target if scope == "zone" else self._zone_of[target].id \
                if target in self._zone_of else None
            self._emit(out, None, "rule", t, incident_id=rid, t0_ns=w.start_ns, zone=zone,
                       device=device,
                       fields={"rule": "disabled", "change": change, "scope": scope,
                               "target": target, "from": w.start.isoformat(),
                               "until": w.until.isoformat(), "reason": w.reason[:200]})
        self._rules_seen_ns = now_ns
        if not crossed:
            return
        for d in self.site.devices:
            ds = self.device_states.get(d.id)
            if self._disabled(d, now_ns):
                self._device_state(d, "disabled", now_ns, out)
            elif ds is not None and ds.state == "disabled":
                self._device_state(d, "normal", now_ns, out)

    def _confirm(self, inc: Incident, stage: str, now_ns: int, out: Decisions,
                 **kw: object) -> None:
        """Confirmed (by a person or a rule) or escalated: record, breach if late, page tier 1."""
        step = self._emit(out, inc, stage, now_ns, **kw)  # type: ignore[arg-type]
        # an escalation meets the confirm target by definition (CONTRACT §4); a person's
        # confirmation can only be late when the gateway was down past the deadline
        if stage == "confirmed" and step.elapsed_s > self.site.sla.confirm_s:
            self._breach(inc, "confirm", self.site.sla.confirm_s, now_ns, out)
        self._clear_confirm_request(inc, out)
        for dev_id in sorted(inc.devices, key=inc.devices.__getitem__):
            self._report(inc, dev_id, out)
        self._dispatch(inc, 1, now_ns, out)

    def _report(self, inc: Incident, dev_id: str, out: Decisions, *, status: str = "fire",
                at_ns: int | None = None) -> None:
        """A detector of a confirmed incident, for the monitoring centre (if there is one):
        in fire alarm, or back to normal when the incident is closed (``at_ns``).

        Its component address is the one its GB/T 26875.3 feed gave it, when it came
        through one (``<sys type>/<sys addr>/<part addr>``), so the centre sees the
        panel's own numbering; otherwise its place in the site file's device list (1, 2,
        ...) under ``system_address``. Dismissed incidents are never reported.
        """
        mc = self.site.monitoring_centre
        d = self.site.device(dev_id)
        if mc is None or d is None:
            return
        sys_addr, part_addr = mc.system_address, self._device_index[d.id] + 1
        feed = self.site.feed(d.feed) if d.feed else None
        if feed is not None and feed.type == "gb26875" and d.ref:
            with contextlib.suppress(ValueError):
                _, sys_addr, part = parse_ref(d.ref)
                if part is not None:
                    part_addr = part
        zone = self._zone_of.get(d.id)
        where = page_text.cell_name(self.site, zone.id) if zone else ""
        out.reports.append(CentreReport(
            incident=inc.id, t0_ns=inc.t0_ns, device=d.id,
            t_ns=at_ns if at_ns is not None else inc.devices[d.id],
            part_type=PART_TYPES.get(d.kind, GENERIC), part_addr=part_addr,
            sys_addr=sys_addr, description=f"{d.id} {where}".strip(), status=status))

    def _queue(self, inc: Incident, now_ns: int, out: Decisions) -> None:
        zone = self.site.zone(inc.zone) if inc.zone else None
        worker = zone.worker if zone else None
        self._emit(out, inc, "queued", now_ns, responder=worker,
                   tier=0 if worker else None,
                   fields={"to": worker or "", "deadline": (inc.t0_ns + _ns(
                       self.site.sla.confirm_s)) / NS})
        out.publishes.append(self._confirm_request(inc))

    def _confirm_request(self, inc: Incident) -> Publish:
        zone = self.site.zone(inc.zone) if inc.zone else None
        body = {
            "incident": inc.id, "site": self.site.site, "zone": inc.zone,
            "zone_name": zone.name if zone else None,
            "building": inc.building if not inc.building.startswith("zone:") else None,
            "x": round(inc.x, 2), "y": round(inc.y, 2), "floor": inc.floor,
            "error_m": round(inc.error_m, 2), "devices": sorted(inc.devices),
            "to": inc.queued_to, "t0": inc.t0_ns / NS,
            "deadline": (inc.t0_ns + _ns(self.site.sla.confirm_s)) / NS,
            "reply_topic": f"firegrid/{self.site.site}/confirm/{inc.id}/reply",
        }
        return Publish(f"confirm/{inc.id}", orjson.dumps(body), retain=True, durable=True)

    def _clear_confirm_request(self, inc: Incident, out: Decisions) -> None:
        if inc.queued_to is not None:
            # durable: if the link is down now, the clear is sent on reconnect
            out.publishes.append(Publish(f"confirm/{inc.id}", b"", retain=True, durable=True))

    def _dispatch(self, inc: Incident, from_tier: int, now_ns: int, out: Decisions) -> None:
        """Page the first tier >= from_tier that has members: its on-duty members (or its
        fallback) all at once, or the first of them when the tier pages in turn."""
        tiers = sorted(t.tier for t in self.site.tiers if t.tier >= from_tier
                       and self.site.tier_members(t.tier))
        if not tiers:
            if inc.tier == 0:
                return  # a site with no tiers: nobody to page
            tier, repeat = inc.tier, True  # top tier passed over: page it again, never drop
        else:
            tier, repeat = tiers[0], False
        cfg = self.site.tier(tier)
        assert cfg is not None
        members, note = tier_roster(self.site, tier, now_ns)
        ids = [m.id for m in members if repeat or (
            m.id not in inc.declined and m.id not in inc.unreachable)]
        if not ids:  # everyone declined or cannot be reached: page them all the same
            ids = [m.id for m in members]
        if cfg.order == "in_turn":
            ids, queue = ids[:1], ids[1:]
        else:
            queue = []
        for rid in ids:
            self._page_step(inc, rid, tier, now_ns, out, repeat=inc.repeats + 1 if repeat
                            else 0, queue=queue, note=note)

    def _page_step(self, inc: Incident, rid: str, tier: int, now_ns: int, out: Decisions, *,
                   repeat: int = 0, queue: list[str] | None = None, note: str = "",
                   again: int = 0) -> None:
        """One ``paged`` step and its Page, on the responder's first channel."""
        cfg = self.site.tier(tier)
        r = self.site.responder(rid)
        assert cfg is not None and r is not None
        page = self._page(inc, rid, tier, now_ns)
        fields: dict[str, object] = {"channel": r.channels[0].type, "channel_index": 0,
                                     "text": page.text, "ack_timeout_s": cfg.ack_timeout_s,
                                     "repeat": repeat, "order": cfg.order}
        if cfg.repeat_s:
            fields["repeat_s"] = cfg.repeat_s
        if queue is not None and cfg.order == "in_turn":
            fields["queue"] = ",".join(queue)
        if note:
            fields["roster"] = note
        if again:
            fields["again"] = again
        self._emit(out, inc, "paged", now_ns, responder=rid, tier=tier, fields=fields)
        out.pages.append(page)

    def _pre_alert(self, inc: Incident, now_ns: int, out: Decisions) -> None:
        """Warn the first tier at ``located`` so it can start moving; not yet a dispatch."""
        first = next((t for t in sorted(self.site.tiers, key=lambda t: t.tier)
                      if self.site.tier_members(t.tier)), None)
        if first is None or not first.pre_alert:
            return
        members, note = tier_roster(self.site, first.tier, now_ns)
        for r in members:
            page = self._page(inc, r.id, first.tier, now_ns, pre_alert=True)
            self._emit(out, inc, "pre_alerted", now_ns, responder=r.id, tier=first.tier,
                       fields={"channel": r.channels[0].type, "channel_index": 0,
                               "text": page.text, **({"roster": note} if note else {})})
            out.pages.append(page)

    def _notify_cell(self, inc: Incident, device: Device, zone: Zone, told: list[str],
                     now_ns: int, out: Decisions) -> None:
        """Tell everyone already sent to the incident that another cell is in alarm.

        Alarm times cannot tell smoke that leaked next door from a second fire that started
        there (docs/locating.md), so the engine may keep both in one incident and send its
        responders to the first cell. A responder on the way or on scene must not learn of
        the second room only from the duty room: each one paged and still engaged (not
        declined, not unreachable) gets one ``notified`` step and a page naming the cell,
        on the channel that reached them. It asks for no answer and starts no timer. ``told``:
        who had been paged or pre-alerted before this alarm.
        """
        if not inc.active:
            return
        engaged = [rid for rid in told if rid not in inc.declined and rid not in inc.unreachable]
        for rid in engaged:
            r = self.site.responder(rid)
            if r is None:
                continue
            idx = inc.channel.get(rid, 0)
            tier = inc.paged.get(rid, r.tier)
            page = self._cell_page(inc, rid, tier, device, zone, now_ns, idx)
            self._emit(out, inc, "notified", now_ns, responder=rid, tier=tier,
                       fields={"cell": zone.id, "trigger": device.id,
                               "channel": r.channels[min(idx, len(r.channels) - 1)].type,
                               "channel_index": idx, "text": page.text})
            out.pages.append(page)

    def _cell_table(self, inc: Incident) -> list[dict]:
        """Each cell with a detector in the incident, in the order of its first alarm: zone,
        floor, first (unix s), devices. Cameras count for nothing: they see into other
        cells than their own."""
        cells: dict[str, dict] = {}
        for dev_id, t_ns in sorted(inc.devices.items(), key=lambda kv: kv[1]):
            d = self.site.device(dev_id)
            zone = self._zone_of.get(dev_id)
            if d is None or zone is None or d.kind == "camera":
                continue
            cell = cells.setdefault(zone.id, {"zone": zone.id, "floor": zone.floor,
                                              "first": round(t_ns / NS, 3), "devices": 0})
            cell["devices"] += 1
        return list(cells.values())

    def _cells(self, inc: Incident) -> list[str]:
        """The ids of :meth:`_cell_table`'s cells."""
        return [c["zone"] for c in self._cell_table(inc)]

    def _waiting(self, inc: Incident) -> list[str]:
        """Members of the current tier paged and still able to answer."""
        return [rid for rid, t in inc.paged.items() if t == inc.tier
                and rid not in inc.declined and rid not in inc.unreachable
                and rid not in inc.passed]

    def _advance(self, inc: Incident, now_ns: int, out: Decisions) -> None:
        """A member declined or cannot be reached: next in turn, else the next tier."""
        if inc.acked or inc.on_scene or self._waiting(inc):
            return
        if inc.queue:
            self._page_step(inc, inc.queue[0], inc.tier, now_ns, out, queue=inc.queue[1:])
        else:
            self._dispatch(inc, inc.tier + 1, now_ns, out)

    def _tier_timeout(self, inc: Incident, now_ns: int, out: Decisions) -> None:
        if inc.acked or inc.on_scene:
            return  # someone answered: the incident is in hand
        if inc.queue and inc.current is not None:  # in turn: the next member's turn
            self._emit(out, inc, "unanswered", now_ns, responder=inc.current, tier=inc.tier,
                       fields={"responders": inc.current, "next": inc.queue[0]})
            self._page_step(inc, inc.queue[0], inc.tier, now_ns, out, queue=inc.queue[1:])
            return
        members = [rid for rid, t in inc.paged.items() if t == inc.tier]
        self._emit(out, inc, "unanswered", now_ns, tier=inc.tier,
                   fields={"responders": ",".join(members)})
        self._dispatch(inc, inc.tier + 1, now_ns, out)

    def _repeat(self, inc: Incident, now_ns: int, out: Decisions) -> None:
        """Page the current tier's silent members again, until someone answers."""
        if inc.acked or inc.on_scene or not inc.active:
            inc.repeat_deadline_ns = None
            return
        waiting = self._waiting(inc)
        if not waiting:  # everyone declined or cannot be reached: the tier timer decides
            inc.repeat_deadline_ns = None
        n = inc.again + 1
        for rid in waiting:
            self._page_step(inc, rid, inc.tier, now_ns, out, again=n)

    def _breach(self, inc: Incident, sla: str, target: float, now_ns: int,
                out: Decisions) -> bool:
        if sla in inc.breaches:
            return False
        self._emit(out, inc, "breach", now_ns, fields={"sla": sla, "target_s": target})
        return True

    def _page(self, inc: Incident, responder: str, tier: int, now_ns: int, *,
              channel: int = 0, pre_alert: bool = False) -> Page:
        return page_text.incident_page(self.site, inc, self._cells(inc), responder, tier,
                                       now_ns, channel=channel, pre_alert=pre_alert)

    def _cell_page(self, inc: Incident, responder: str, tier: int, device: Device,
                   zone: Zone, now_ns: int, channel: int) -> Page:
        return page_text.cell_notice(self.site, inc, self._cells(inc), responder, tier,
                                     device, zone, now_ns, channel)

    def _publish_incident(self, inc: Incident, out: Decisions) -> None:
        out.publishes = [p for p in out.publishes if p.topic != f"incident/{inc.id}"]
        # a final state goes through the outbox: after a crash, finished incidents are not
        # republished, so a lost 'closed' would leave the broker saying 'confirmed' forever
        out.publishes.append(Publish(f"incident/{inc.id}", orjson.dumps(self._state(inc)),
                                     retain=True, durable=not inc.active))
        if inc.cap_dirty:
            inc.cap_dirty = False
            cap = self._cap(inc)
            if cap is not None:
                out.publishes = [p for p in out.publishes if p.topic != cap.topic]
                out.publishes.append(cap)

    def _state(self, inc: Incident) -> dict:
        """The retained ``incident/<id>`` body: the public fields and the cells in alarm.

        ``cells`` lists every cell with a detector in the incident, in the order their
        first alarm came: the fire's cell, then where its smoke (or, which alarm times
        cannot tell apart, a second fire next door: docs/locating.md) was detected next.
        A camera counts for nothing here: it sees into other cells than its own.
        """
        return {**inc.public(self.site.site), "confirm_rule": inc.confirm_rule,
                "cells": self._cell_table(inc), "cause": inc.cause}

    def _cap(self, inc: Incident) -> Publish | None:
        """The incident's latest CAP 1.2 message: Alert, then Update, then Cancel at the end.

        Built from the incident and the times of its earlier messages (kept by ``_apply``
        from steps), so a restored engine makes the same identifiers and references.
        """
        if not inc.cap_sent:
            return None
        cfg = self.site.cap
        sender = cfg.sender or f"firegrid@{self.site.site}"
        tz = site_zone(self.site)

        def when(t_ns: int) -> datetime:
            return datetime.fromtimestamp(t_ns // NS, UTC).astimezone(tz)

        refs = [(sender, cap_identifier(self.site.site, inc.id, i + 1), when(t))
                for i, t in enumerate(inc.cap_sent[:-1])]
        kind = "Cancel" if not inc.active else ("Alert" if not refs else "Update")
        frame = SiteFrame(cfg.lat, cfg.lon, cfg.rotation_deg) if cfg.lat is not None \
            and cfg.lon is not None else None
        try:
            xml = cap_alert({**inc.public(self.site.site), "confirm_rule": inc.confirm_rule},
                            sender=sender, frame=frame, msg_type=kind,
                            sent=when(inc.cap_sent[-1]), references=refs, scope=cfg.scope,
                            restriction=cfg.restriction, addresses=cfg.addresses, web=cfg.web,
                            language=cfg.language, zone_name=self._zone_name(inc),
                            seq=len(inc.cap_sent), also=self._also_areas(inc))
        except CapError:  # the site file is checked; never expected, never worth a page
            return None
        return Publish(f"cap/{inc.id}", xml, retain=True, durable=not inc.active)

    def _also_areas(self, inc: Incident) -> list[tuple[str, list[tuple[float, float]]]]:
        """The incident's other cells in alarm, named and outlined, for the CAP areas."""
        out = []
        for cid in self._cells(inc):
            zone = self.site.zone(cid)
            if zone is not None and cid != inc.zone:
                out.append((f"{zone.name or zone.id}, floor {zone.floor}",
                            [(float(x), float(y)) for x, y in zone.polygon]))
        return out

    def _zone_name(self, inc: Incident) -> str | None:
        zone = self.site.zone(inc.zone) if inc.zone else None
        return zone.name if zone else None

    def _emit(self, out: Decisions, inc: Incident | None, stage: str, now_ns: int, *,
              incident_id: str | None = None, t0_ns: int | None = None,
              zone: str | None = None, responder: str | None = None,
              tier: int | None = None, device: str | None = None,
              fields: dict | None = None) -> Step:
        """Make a step, apply it to the state, and add it to the decisions."""
        if inc is not None:
            incident_id, t0_ns = inc.id, inc.t0_ns
            zone = zone or inc.zone
            # strictly increasing per incident: same series + same timestamp would overwrite
            now_ns = max(now_ns, inc.last_ns + 1)
        assert incident_id is not None and t0_ns is not None
        step = Step(incident=incident_id, stage=stage, t_ns=now_ns, t0_ns=t0_ns, zone=zone,
                    responder=responder, tier=tier, device=device, fields=fields or {})
        self._apply(step)
        out.steps.append(step)
        return step

    def _apply(self, step: Step) -> None:
        """The only place incident state changes; replaying steps rebuilds the engine."""
        f = step.fields
        if step.stage == "rule":  # a disablement window started or ended: recorded once
            self._rule_done.add((step.incident, step.t_ns))
            return
        inc = self.incidents.get(step.incident) or self.finished.get(step.incident)
        if inc is None:
            if step.stage != "detected":
                return  # a fragment of an incident whose start was pruned: nothing to resume
            inc = Incident(id=step.incident, t0_ns=step.t0_ns,
                           building=f.get("building", f"zone:{step.zone}"), zone=step.zone)
            self.incidents[inc.id] = inc
            self.counter = max(self.counter, int(f.get("counter", 0)))
        inc.last_ns = max(inc.last_ns, step.t_ns)
        s = step.stage
        if s == "detected" and step.device:
            inc.devices.setdefault(step.device, step.t_ns)
            if f.get("bearing_deg") is not None:
                inc.bearings[step.device] = f["bearing_deg"]
        elif s == "located":
            inc.x, inc.y, inc.floor = f["x"], f["y"], f["floor"]
            inc.error_m, inc.zone = f["error_m"], step.zone
            inc.method, inc.t_ignition = f.get("method", ""), f.get("t_ignition")
            if inc.located_ns is None:
                inc.located_ns = step.t_ns
            if inc.cap_sent:  # a better position after the alert: CAP Update
                inc.cap_sent.append(step.t_ns)
                inc.cap_dirty = True
        elif s == "queued":
            inc.queued_to = f.get("to") or ""
        elif s in ("confirmed", "escalated"):
            inc.state = CONFIRMED
            inc.unverified = s == "escalated"
            inc.confirmed_by = f.get("by", "escalation")
            inc.confirm_rule = f.get("rule")
            inc.confirmed_ns = step.t_ns
            inc.cap_sent.append(step.t_ns)  # CAP Alert
            inc.cap_dirty = True
        elif s in ("dismissed", "closed"):
            if inc.cap_sent:  # CAP Cancel of the alert
                inc.cap_sent.append(step.t_ns)
                inc.cap_dirty = True
            inc.state = DISMISSED if s == "dismissed" else CLOSED
            inc.cause = f.get("cause")
            inc.tier_deadline_ns = inc.repeat_deadline_ns = None
            self.incidents.pop(inc.id, None)
            self.finished[inc.id] = inc
            while len(self.finished) > FINISHED_KEPT:
                self.finished.popitem(last=False)
        elif s == "paged" and step.responder and step.tier is not None:
            inc.channel[step.responder] = f.get("channel_index", 0)
            if f.get("fallback"):  # the same page on the responder's next channel
                return
            if f.get("again"):  # a repeat within the tier: the tier's deadline stands
                inc.again = f["again"]
                inc.repeat_deadline_ns = step.t_ns + _ns(f.get("repeat_s", 0)) \
                    if f.get("repeat_s") else None
                return
            if step.tier != inc.tier:
                inc.again = 0
            inc.paged[step.responder] = step.tier
            if f.get("repeat"):
                inc.repeats = f["repeat"]
            inc.tier = step.tier
            if "queue" in f:
                inc.current = step.responder
                inc.queue = [q for q in str(f["queue"]).split(",") if q]
            # someone already answered (e.g. on scene before confirmation): no tier timer
            answered = inc.acked or inc.on_scene
            inc.tier_deadline_ns = None if answered else (
                step.t_ns + _ns(f.get("ack_timeout_s", 0)))
            inc.repeat_deadline_ns = None if answered or not f.get("repeat_s") else (
                step.t_ns + _ns(f["repeat_s"]))
        elif s == "pre_alerted" and step.responder:
            inc.pre_alerted.add(step.responder)
            inc.channel[step.responder] = f.get("channel_index", 0)
        elif s == "page_failed" and step.responder:
            if f.get("final"):
                inc.unreachable.add(step.responder)
        elif s == "acked" and step.responder:
            inc.acked.add(step.responder)
            inc.tier_deadline_ns = inc.repeat_deadline_ns = None
        elif s == "on_scene" and step.responder:
            inc.on_scene.setdefault(step.responder, step.t_ns)
            inc.tier_deadline_ns = inc.repeat_deadline_ns = None
        elif s == "declined" and step.responder:
            inc.declined.add(step.responder)
        elif s == "unanswered":
            inc.tier_deadline_ns = None
            if step.responder:  # an in-turn member's turn passed
                inc.passed.add(step.responder)
            else:
                inc.repeat_deadline_ns = None
        elif s == "breach":
            inc.breaches.add(f["sla"])


_FEED = "feed:"  # heartbeat key prefix of a feed's far end (a device id has no ':')
_DEVICE_STATE = {"alarm": "alarm", "clear": "normal", "fault": "fault", "test": None}


def _short(value: object) -> str:
    """A refused value for a message: a short string as itself, anything else by its type."""
    return repr(value[:40]) if isinstance(value, str) else f"a {type(value).__name__}"


def _ns(seconds: float) -> int:
    return round(seconds * NS)
