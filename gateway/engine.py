"""The incident engine: a pure state machine from events (with the time passed in) to decisions.

No I/O and no clock inside: every entry point takes ``now_ns``. State changes happen
only in ``_apply(step)``, which is also how ``restore`` rebuilds open incidents from
the journal after a crash, so a replayed engine is the engine that crashed.

The 10·30·60 flow for one incident:
  detected → located (at once) → confirmed (manual call point, two detectors in a zone,
  or the grid worker's reply) | queued → escalated at T0+confirm_s | dismissed
  → paged tier 1 → acked / on_scene, or unanswered at ack_timeout_s → paged tier 2 ...
  → closed by a person.  A ``breach`` step is recorded the moment a target passes unmet.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn

import orjson

from alerting.page import SCREEN, Page
from drivers.signal import Signal
from gateway.config import Device, Site, Zone
from gateway.geometry import building_of, zone_at
from gateway.model import NS, Decisions, DeviceState, Publish, Refused, Step

FINISHED_KEPT = 1000
CLUSTER_M = 20.0  # an alarm this close to an open incident, same building, joins it
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
    last_ns: int = 0

    @property
    def active(self) -> bool:
        return self.state in (OPEN, CONFIRMED)

    def public(self, site: str) -> dict:
        return {
            "id": self.id, "site": site, "state": self.state, "zone": self.zone,
            "building": None if self.building.startswith("zone:") else self.building,
            "floor": self.floor, "x": round(self.x, 2), "y": round(self.y, 2),
            "error_m": round(self.error_m, 2), "t0": self.t0_ns / NS,
            "unverified": self.unverified, "confirmed_by": self.confirmed_by,
            "devices": sorted(self.devices), "tier": self.tier,
            "paged": sorted(self.paged), "acked": sorted(self.acked),
            "on_scene": sorted(self.on_scene), "breaches": sorted(self.breaches),
        }


class Engine:
    def __init__(self, site: Site):
        self.site = site
        self.incidents: dict[str, Incident] = {}  # active ones only
        # recently closed or dismissed, so late answers are refused with the right reason;
        # bounded, and never republished, so a long-running gateway does not grow
        self.finished: OrderedDict[str, Incident] = OrderedDict()
        self.device_states: dict[str, DeviceState] = {}
        self.counter = 0
        self._zone_of: dict[str, Zone] = {}
        for d in site.devices:
            z = zone_at(site, d.floor, d.x, d.y)
            if z is not None:
                self._zone_of[d.id] = z

    # ---------------------------------------------------------------- inputs

    def signal(self, sig: Signal, now_ns: int, received_ns: int | None = None) -> Decisions:
        """A device spoke. Alarms open or join an incident; every state change is published.

        ``received_ns`` is when the gateway received the signal (T0 of a new incident and the
        time of its ``detected`` step); ``now_ns`` is when it is being processed.
        """
        device = self.site.device(sig.device)
        if device is None:
            raise Refused(f"unknown device {sig.device!r}", "unknown_device")
        if sig.kind is not None and sig.kind != device.kind:
            raise Refused(f"device {device.id!r} is a {device.kind}, signal says {sig.kind!r}",
                          "kind_mismatch")
        out = Decisions()
        self._device_state(device, _DEVICE_STATE[sig.state], now_ns, out)
        if sig.state == "alarm":
            self._alarm(device, now_ns, received_ns or now_ns, out)
        return out

    def reply(self, incident_id: str, decision: str, by: str, now_ns: int) -> Decisions:
        """The grid worker (or another responder) confirms or dismisses a queued incident."""
        inc = self._incident(incident_id)
        if decision not in ("confirm", "dismiss"):
            raise Refused(f"decision must be confirm or dismiss, got {decision!r}", "bad_payload")
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
            self._emit(out, inc, "dismissed", now_ns, responder=by, tier=tier, fields={"by": by})
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
        if status != "on_scene" and responder not in inc.paged:
            self._refuse(inc, f"{responder} was not paged for {inc.id}", "not_paged", now_ns,
                         responder, f"ack:{status}")
        assert r is not None
        out = Decisions()
        tier = inc.paged.get(responder, r.tier)
        if status == "decline":
            if responder in inc.declined or responder in inc.acked:
                raise Refused(f"{responder} already answered {inc.id}", "duplicate")
            self._emit(out, inc, "declined", now_ns, responder=responder, tier=tier)
            members = [m.id for m in self.site.tier_members(inc.tier)]
            if tier == inc.tier and all(m in inc.declined for m in members):
                self._dispatch(inc, inc.tier + 1, now_ns, out)
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

    def close(self, incident_id: str, by: str, reason: str, now_ns: int) -> Decisions:
        """A person closes the incident; detectors clearing never does."""
        inc = self._incident(incident_id)
        r = self.site.responder(by)
        if r is None:
            self._refuse(inc, f"close by unknown responder {by!r}", "unknown_responder", now_ns,
                         by, "close")
        if not inc.active:
            self._refuse(inc, f"incident {inc.id} is already {inc.state}", "late_close", now_ns,
                         by, "close")
        assert r is not None
        out = Decisions()
        self._emit(out, inc, "closed", now_ns, responder=by, tier=r.tier,
                   fields={"by": by, "reason": reason[:500]})
        self._clear_confirm_request(inc, out)
        self._publish_incident(inc, out)
        return out

    def tick(self, now_ns: int) -> Decisions:
        """Fire every deadline at or before ``now_ns``: escalation, tier timeouts, breaches."""
        out = Decisions()
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
            if changed:
                self._publish_incident(inc, out)
        return out

    def next_deadline_ns(self) -> int | None:
        """The earliest time ``tick`` has something to do; None when nothing is pending."""
        sla = self.site.sla
        best: int | None = None
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
            ):
                if t is not None and (best is None or t < best):
                    best = t
        return best

    # --------------------------------------------------------- restore / state

    def restore(self, steps: Iterable[Step], devices: Iterable[DeviceState] = (),
                counter: int = 0) -> None:
        """Rebuild from the journal: re-apply every step of the open incidents, in order."""
        self.counter = max(self.counter, counter)
        for step in steps:
            self._apply(step)
        for ds in devices:
            self.device_states[ds.device] = ds

    def retained(self) -> list[Publish]:
        """Every retained message the gateway owns, for republishing after a (re)connect."""
        out: list[Publish] = []
        for inc in self.incidents.values():
            out.append(Publish(f"incident/{inc.id}", orjson.dumps(inc.public(self.site.site)),
                               retain=True))
            if inc.state == OPEN and inc.queued_to is not None:
                out.append(self._confirm_request(inc))
        for ds in self.device_states.values():
            out.append(Publish(f"device/{ds.device}", ds.payload(), retain=True))
            if ds.state == "fault":
                out.append(self._trouble(ds.device, ds.since_ns))
        return out

    def _trouble(self, device: str, since_ns: int) -> Publish:
        return Publish(f"trouble/{device}",
                       orjson.dumps({"device": device, "trouble": "fault", "since": since_ns / NS}),
                       retain=True)

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
                      out: Decisions) -> None:
        if state is None:
            return
        prev = self.device_states.get(device.id)
        if prev is not None and prev.state == state:
            return
        ds = DeviceState(device.id, state, now_ns, device.kind)
        self.device_states[device.id] = ds
        out.devices.append(ds)
        out.publishes.append(Publish(f"device/{device.id}", ds.payload(), retain=True))
        if state == "fault":
            out.publishes.append(self._trouble(device.id, now_ns))
        elif prev is not None and prev.state == "fault":
            out.publishes.append(Publish(f"trouble/{device.id}", b"", retain=True, durable=True))

    def _alarm(self, device: Device, now_ns: int, received_ns: int, out: Decisions) -> None:
        zone = self._zone_of.get(device.id)
        if zone is None:  # config checks every device floor has a zone; belt and braces
            raise Refused(f"device {device.id!r} is in no zone", "no_zone")
        inc = self._cluster(device, zone)
        if inc is not None and device.id in inc.devices:
            return  # already counted in this incident
        if inc is None:
            self.counter += 1
            # date and time keep ids unique per site even if a journal is ever replaced
            stamp = datetime.fromtimestamp(received_ns / NS, UTC).strftime("%y%m%d-%H%M%S")
            inc_id = f"inc-{stamp}-{self.counter}"
            self._emit(out, None, "detected", received_ns, incident_id=inc_id, t0_ns=received_ns,
                       zone=zone.id, device=device.id,
                       fields={"kind": device.kind, "building": building_of(zone),
                               "counter": self.counter})
            inc = self.incidents[inc_id]
        else:
            self._emit(out, inc, "detected", received_ns, device=device.id,
                       fields={"kind": device.kind})
        self._locate(inc, now_ns, out)
        if inc.state == OPEN:
            rule = self._auto_confirm_rule(inc, device)
            if rule is not None:
                self._confirm(inc, "confirmed", now_ns, out,
                              fields={"by": "auto", "rule": rule, "trigger": device.id})
            elif inc.queued_to is None:
                self._queue(inc, now_ns, out)
        self._publish_incident(inc, out)

    def _cluster(self, device: Device, zone: Zone) -> Incident | None:
        """The open incident this alarm belongs to: same building, near floor, within CLUSTER_M."""
        building = building_of(zone)
        best: tuple[float, Incident] | None = None
        for inc in self.incidents.values():
            if not inc.active or inc.building != building:
                continue
            for dev_id in inc.devices:
                other = self.site.device(dev_id)
                # same floor, or the floor above (smoke rises); a floor below is a new fire
                if other is None or device.floor - other.floor not in (0, 1):
                    continue
                d = math.hypot(other.x - device.x, other.y - device.y)
                if d <= CLUSTER_M and (best is None or d < best[0]):
                    best = (d, inc)
        return best[1] if best else None

    def _locate(self, inc: Incident, now_ns: int, out: Decisions) -> None:
        """Position from the alarming detectors: the first one's own floor, their centroid."""
        devs = [d for d in (self.site.device(i) for i in inc.devices) if d is not None]
        first = min(devs, key=lambda d: inc.devices[d.id])
        same_floor = [d for d in devs if d.floor == first.floor]
        x = sum(d.x for d in same_floor) / len(same_floor)
        y = sum(d.y for d in same_floor) / len(same_floor)
        if len(same_floor) == 1:
            err = first.radius
        else:
            rms = math.sqrt(sum((d.x - x) ** 2 + (d.y - y) ** 2 for d in same_floor)
                            / len(same_floor))
            err = max(rms, min(d.radius for d in same_floor) / math.sqrt(len(same_floor)))
        zone = zone_at(self.site, first.floor, x, y) or self._zone_of[first.id]
        first_fix = inc.located_ns is None
        step = self._emit(out, inc, "located", now_ns, zone=zone.id,
                          fields={"x": round(x, 3), "y": round(y, 3), "floor": first.floor,
                                  "error_m": round(err, 3), "detectors": len(devs)})
        if first_fix and step.elapsed_s > self.site.sla.locate_s:  # e.g. after a backlog
            self._breach(inc, "locate", self.site.sla.locate_s, now_ns, out)

    def _auto_confirm_rule(self, inc: Incident, device: Device) -> str | None:
        """Clear evidence skips the confirm queue; it never delays anything."""
        if device.kind == "manual":
            return "manual_call_point"
        zone = self._zone_of[device.id]
        if zone.ask_human:
            return None
        in_zone = [d for d in inc.devices
                   if self._zone_of.get(d) is not None and self._zone_of[d].id == zone.id
                   and self.site.device(d).kind != "manual"]  # type: ignore[union-attr]
        return "coincidence" if len(in_zone) >= 2 else None

    def _confirm(self, inc: Incident, stage: str, now_ns: int, out: Decisions,
                 **kw: object) -> None:
        """Confirmed (by a person or a rule) or escalated: record, breach if late, page tier 1."""
        step = self._emit(out, inc, stage, now_ns, **kw)  # type: ignore[arg-type]
        # an escalation meets the confirm target by definition (CONTRACT §4); a person's
        # confirmation can only be late when the gateway was down past the deadline
        if stage == "confirmed" and step.elapsed_s > self.site.sla.confirm_s:
            self._breach(inc, "confirm", self.site.sla.confirm_s, now_ns, out)
        self._clear_confirm_request(inc, out)
        self._dispatch(inc, 1, now_ns, out)

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
        """Page every member of the first tier >= from_tier that has members."""
        tiers = sorted(t.tier for t in self.site.tiers if t.tier >= from_tier
                       and self.site.tier_members(t.tier))
        if not tiers:
            if inc.tier == 0:
                return  # a site with no tiers: nobody to page
            tier, repeat = inc.tier, True  # top tier passed over: page it again, never drop
        else:
            tier, repeat = tiers[0], False
        timeout = self.site.tier(tier).ack_timeout_s  # type: ignore[union-attr]
        for member in self.site.tier_members(tier):
            if member.id in inc.declined and not repeat:
                continue
            page = self._page(inc, member.id, tier, now_ns)
            self._emit(out, inc, "paged", now_ns, responder=member.id, tier=tier,
                       fields={"channel": "mqtt",  # TAP/SNPP sending is not built yet
                               "text": page.text, "ack_timeout_s": timeout,
                               "repeat": inc.repeats + 1 if repeat else 0})
            out.pages.append(page)

    def _tier_timeout(self, inc: Incident, now_ns: int, out: Decisions) -> None:
        if inc.acked or inc.on_scene:
            return  # someone answered: the incident is in hand
        members = [m.id for m in self.site.tier_members(inc.tier)]
        self._emit(out, inc, "unanswered", now_ns, tier=inc.tier,
                   fields={"responders": ",".join(members)})
        self._dispatch(inc, inc.tier + 1, now_ns, out)

    def _breach(self, inc: Incident, sla: str, target: float, now_ns: int,
                out: Decisions) -> bool:
        if sla in inc.breaches:
            return False
        self._emit(out, inc, "breach", now_ns, fields={"sla": sla, "target_s": target})
        return True

    def _page(self, inc: Incident, responder: str, tier: int, now_ns: int) -> Page:
        zone = self.site.zone(inc.zone) if inc.zone else None
        where = zone.name or zone.id if zone else "?"
        secs = int((now_ns - inc.t0_ns) / NS)
        text = (f"FIRE {where} F{inc.floor} ({inc.x:.0f},{inc.y:.0f})m T0+{secs}s "
                f"{inc.id} reply ack")
        if len(text) > SCREEN:
            text = f"FIRE {inc.zone} F{inc.floor} ({inc.x:.0f},{inc.y:.0f}) +{secs}s {inc.id}"
        return Page(responder=responder, incident=inc.id, tier=tier, zone=inc.zone or "",
                    text=text[:SCREEN],
                    extra={"site": self.site.site, "floor": inc.floor,
                           "x": round(inc.x, 2), "y": round(inc.y, 2),
                           "building": None if inc.building.startswith("zone:")
                           else inc.building,
                           "t0": inc.t0_ns / NS, "sent": now_ns / NS,
                           "ack_topic": f"firegrid/{self.site.site}/page/{responder}/ack"})

    def _publish_incident(self, inc: Incident, out: Decisions) -> None:
        out.publishes = [p for p in out.publishes if p.topic != f"incident/{inc.id}"]
        out.publishes.append(Publish(f"incident/{inc.id}",
                                     orjson.dumps(inc.public(self.site.site)), retain=True))

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
        elif s == "located":
            inc.x, inc.y, inc.floor = f["x"], f["y"], f["floor"]
            inc.error_m, inc.zone = f["error_m"], step.zone
            if inc.located_ns is None:
                inc.located_ns = step.t_ns
        elif s == "queued":
            inc.queued_to = f.get("to") or ""
        elif s in ("confirmed", "escalated"):
            inc.state = CONFIRMED
            inc.unverified = s == "escalated"
            inc.confirmed_by = f.get("by", "escalation")
            inc.confirmed_ns = step.t_ns
        elif s in ("dismissed", "closed"):
            inc.state = DISMISSED if s == "dismissed" else CLOSED
            inc.tier_deadline_ns = None
            self.incidents.pop(inc.id, None)
            self.finished[inc.id] = inc
            while len(self.finished) > FINISHED_KEPT:
                self.finished.popitem(last=False)
        elif s == "paged" and step.responder and step.tier is not None:
            inc.paged[step.responder] = step.tier
            if f.get("repeat"):
                inc.repeats = f["repeat"]
            inc.tier = step.tier
            # someone already answered (e.g. on scene before confirmation): no tier timer
            inc.tier_deadline_ns = None if inc.acked or inc.on_scene else (
                step.t_ns + _ns(f.get("ack_timeout_s", 0)))
        elif s == "acked" and step.responder:
            inc.acked.add(step.responder)
            inc.tier_deadline_ns = None
        elif s == "on_scene" and step.responder:
            inc.on_scene.setdefault(step.responder, step.t_ns)
            inc.tier_deadline_ns = None
        elif s == "declined" and step.responder:
            inc.declined.add(step.responder)
        elif s == "unanswered":
            inc.tier_deadline_ns = None
        elif s == "breach":
            inc.breaches.add(f["sla"])


_DEVICE_STATE = {"alarm": "alarm", "clear": "normal", "fault": "fault", "test": None}


def _ns(seconds: float) -> int:
    return round(seconds * NS)
