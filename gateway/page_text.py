"""What a pager shows: an incident's page and the notice of another cell in alarm.

A pager screen holds 80 characters (``alerting.page.SCREEN``), and a responder reads it
running. So each text is built in falling order of detail (the cell's name, the other
cells by name, how to answer) and the first that fits is sent; the last resort keeps
the place and the incident id and drops the rest. Everything a screen cannot hold goes
in the page's ``extra`` fields for the MQTT pager and the duty room (docs/mqtt.md).

Pure functions of the site, the incident and the time, so the engine stays pure and a
restored engine writes the same pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerting.page import SCREEN, Page
from gateway.config import Device, Site, Zone
from gateway.geometry import building_of
from gateway.model import NS

if TYPE_CHECKING:  # the engine imports this module; the type is only for the reader
    from gateway.engine import Incident


def cell_name(site: Site, zone_id: str) -> str:
    """The cell's name as people know it, else its id."""
    zone = site.zone(zone_id)
    return (zone.name or zone.id) if zone else zone_id


def _channel_type(site: Site, responder: str, channel: int) -> str:
    r = site.responder(responder)
    if r is None:
        return "mqtt"
    return r.channels[min(channel, len(r.channels) - 1)].type


def _building(inc: Incident, name: str) -> str:
    """``name`` and a space, unless the incident's zone has no building of its own."""
    return "" if inc.building.startswith("zone:") else f"{name} "


def incident_page(site: Site, inc: Incident, cells: list[str], responder: str, tier: int,
                  now_ns: int, *, channel: int = 0, pre_alert: bool = False) -> Page:
    """A page that fits an 80-character screen and says where to run and how to answer.

    ``cells`` are the incident's cells in the order of their first alarm; the others
    than the incident's own are named (``also ...``) when the screen has room, else
    counted (``+N cells``).
    """
    kind = _channel_type(site, responder, channel)
    zone = site.zone(inc.zone) if inc.zone else None
    where = (zone.name or zone.id) if zone else "?"
    building = _building(inc, inc.building)
    secs = int((now_ns - inc.t0_ns) / NS)
    head = "PRE-ALERT fire?" if pre_alert else "FIRE"
    how = "reply 01 ack" if kind == "snpp" else "reply ack"
    others = [c for c in cells if c != inc.zone]
    also = [f" also {', '.join(cell_name(site, c) for c in others)}",
            f" +{len(others)} cell{'s' if len(others) > 1 else ''}"] if others else [""]
    texts = [f"{head} {building}{where} F{inc.floor} ({inc.x:.0f},{inc.y:.0f})m{a} "
             f"T0+{secs}s {inc.id}{h}" for h in (f" {how}", "") for a in also]
    texts += [f"{head} {building}{inc.zone} F{inc.floor} ({inc.x:.0f},{inc.y:.0f}){a} "
              f"+{secs}s {inc.id}" for a in also[-1:]]
    text = next((t for t in texts if len(t) <= SCREEN), texts[-1])
    return Page(responder=responder, incident=inc.id, tier=tier, zone=inc.zone or "",
                text=text[:SCREEN],
                extra={"site": site.site, "floor": inc.floor, "cells": cells,
                       "x": round(inc.x, 2), "y": round(inc.y, 2),
                       "building": None if inc.building.startswith("zone:") else inc.building,
                       "t0": inc.t0_ns / NS, "sent": now_ns / NS,
                       "channel": kind, "channel_index": channel,
                       **({"pre_alert": True} if pre_alert else {}),
                       "ack_topic": f"firegrid/{site.site}/page/{responder}/ack"})


def cell_notice(site: Site, inc: Incident, cells: list[str], responder: str, tier: int,
                device: Device, zone: Zone, now_ns: int, channel: int) -> Page:
    """The notice of another cell in alarm: where it is, and which incident it joined."""
    kind = _channel_type(site, responder, channel)
    building = _building(inc, building_of(zone))
    secs = int((now_ns - inc.t0_ns) / NS)
    texts = [f"ALSO IN ALARM {building}{cell_name(site, zone.id)} F{zone.floor} "
             f"({device.x:.0f},{device.y:.0f})m T0+{secs}s {inc.id}",
             f"ALSO IN ALARM {building}{zone.id} F{zone.floor} "
             f"({device.x:.0f},{device.y:.0f}) +{secs}s {inc.id}"]
    text = next((t for t in texts if len(t) <= SCREEN), texts[-1])
    return Page(responder=responder, incident=inc.id, tier=tier, zone=zone.id,
                text=text[:SCREEN],
                extra={"site": site.site, "floor": zone.floor,
                       "x": round(device.x, 2), "y": round(device.y, 2),
                       "building": None if inc.building.startswith("zone:")
                       else building_of(zone), "cells": cells,
                       "notice": "cell", "incident_zone": inc.zone,
                       "t0": inc.t0_ns / NS, "sent": now_ns / NS,
                       "channel": kind, "channel_index": channel})
