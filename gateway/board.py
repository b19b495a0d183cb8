"""The duty room's board: what the gateway's retained MQTT topics say right now (pure).

A duty room connecting to the broker is handed every retained ``incident/<id>``,
``confirm/<id>``, ``device/<id>``, ``trouble/<id>``, ``feed/<name>`` and ``status``;
this module turns them into the few rows a person on duty needs: open incidents first,
with where, which cells, how long since T0, who must confirm by when, who is paged and
who answered; then what is in trouble. No IO here: ``firegrid watch`` (gateway/watch.py)
feeds it messages and renders it. A payload it cannot read is counted and named, never
fatal: the board is for people, and one bad retained message must not blank it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.config import Site

ACTIVE = ("confirming", "confirmed")
KINDS = ("incident", "confirm", "device", "trouble", "feed")


@dataclass(slots=True)
class Row:
    """One incident as the board shows it."""

    incident: str
    state: str
    where: str
    cells: list[str]
    t0: float
    confirm: str
    responders: str
    breaches: list[str]
    unverified: bool


@dataclass
class Board:
    """Latest retained state per topic, and what could not be read."""

    site: str
    names: dict[str, str] = field(default_factory=dict)  # zone id -> name, from the site file
    in_place_s: float = 60.0  # the site's in-place target (CONTRACT: 60 s unless configured)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    confirms: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    troubles: dict[str, dict[str, Any]] = field(default_factory=dict)
    feeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str | None = None  # online / offline; None: never seen
    bad: list[str] = field(default_factory=list)  # the last few unreadable messages, named
    bad_count: int = 0

    @classmethod
    def for_site(cls, site: Site) -> Board:
        return cls(site.site, {z.id: z.name for z in site.zones if z.name},
                   in_place_s=site.sla.in_place_s)

    @property
    def prefix(self) -> str:
        return f"firegrid/{self.site}/"

    def reset(self) -> None:
        """Forget every retained state: after a reconnect the broker sends them all again,
        and one cleared meanwhile (an empty retained message) is simply not among them."""
        for table in (self.incidents, self.confirms, self.devices, self.troubles, self.feeds):
            table.clear()
        self.status = None

    def apply(self, topic: str, payload: bytes) -> None:
        """One MQTT message (full topic). An empty payload clears a retained state."""
        if not topic.startswith(self.prefix):
            return
        rest = topic[len(self.prefix):]
        if rest == "status":
            self.status = payload.decode("utf-8", "replace")[:20] or None
            return
        kind, _, ident = rest.partition("/")
        if kind not in KINDS or not ident or "/" in ident:
            return  # signals, replies, acks, pages: traffic, not state
        table = {"incident": self.incidents, "confirm": self.confirms, "device": self.devices,
                 "trouble": self.troubles, "feed": self.feeds}[kind]
        if not payload:
            table.pop(ident, None)
            return
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self._bad(rest, f"not JSON ({exc})")
            return
        if not isinstance(body, dict):
            self._bad(rest, f"a JSON {type(body).__name__}, not an object")
            return
        table[ident] = body

    def _bad(self, topic: str, why: str) -> None:
        self.bad_count += 1
        self.bad = [*self.bad[-4:], f"{topic}: {why}"]

    # ------------------------------------------------------------------ rows

    def rows(self, now: float, finished: int = 5) -> list[Row]:
        """Open incidents, oldest first; then the ``finished`` most recent others."""
        def t0(inc: dict[str, Any]) -> float:
            return _num(inc.get("t0"))

        live = sorted((i for i in self.incidents.values() if i.get("state") in ACTIVE), key=t0)
        done = sorted((i for i in self.incidents.values() if i.get("state") not in ACTIVE),
                      key=t0, reverse=True)[:max(finished, 0)]
        return [self._row(i, now) for i in [*live, *done]]

    def _row(self, inc: dict[str, Any], now: float) -> Row:
        ident = str(inc.get("id", "?"))
        zone = str(inc.get("zone") or "?")
        where = (f"{self.names.get(zone, zone)} F{inc.get('floor', '?')} "
                 f"({_num(inc.get('x')):.0f},{_num(inc.get('y')):.0f}) "
                 f"±{_num(inc.get('error_m')):.0f} m")
        cells = [str(c.get("zone")) for c in _list(inc.get("cells")) if isinstance(c, dict)]
        others = [self.names.get(c, c) for c in cells if c != zone]
        responders = _responders(inc)
        breaches = [str(b) for b in _list(inc.get("breaches"))]
        if inc.get("state") in ACTIVE and not _list(inc.get("on_scene")) \
                and "in_place" not in breaches:
            left = _num(inc.get("t0")) + self.in_place_s - now
            if left >= 0:  # the 60 of 10·30·60: how long the first tier still has
                responders = "; ".join(x for x in (responders, f"in place: {left:.0f} s left")
                                       if x)
        return Row(ident, str(inc.get("state", "?")), where, others, t0=_num(inc.get("t0")),
                   confirm=self._confirm_text(ident, inc, now), responders=responders,
                   breaches=breaches,
                   unverified=bool(inc.get("unverified")))

    def _confirm_text(self, ident: str, inc: dict[str, Any], now: float) -> str:
        req = self.confirms.get(ident)
        if inc.get("state") == "confirming" and req is not None:
            left = _num(req.get("deadline")) - now
            who = req.get("to") or "nobody named"
            return f"{who}: {left:.0f} s left" if left >= 0 else f"{who}: overdue {-left:.0f} s"
        if inc.get("unverified"):
            return "escalated (nobody confirmed)"
        by = inc.get("confirmed_by")
        if by == "auto" and inc.get("confirm_rule"):
            return f"auto: {str(inc['confirm_rule']).replace('_', ' ')}"
        return f"by {by}" if by else ""

    def trouble_rows(self) -> list[tuple[str, str, float, str]]:
        """(device or feed, what, since, detail) for everything in trouble, oldest first."""
        out = [(d, ", ".join(str(x) for x in _list(t.get("troubles")) or [t.get("trouble", "?")]),
                _num(t.get("since")), str(t.get("detail", ""))) for d, t in self.troubles.items()]
        out += [(f"feed {name}", "down", _num(f.get("since")), str(f.get("detail", "")))
                for name, f in self.feeds.items() if f.get("state") == "down"
                and name not in self.troubles]
        return sorted(out, key=lambda r: r[2])

    def open_count(self) -> int:
        return sum(1 for i in self.incidents.values() if i.get("state") in ACTIVE)


def _responders(inc: dict[str, Any]) -> str:
    """Who is paged at which tier, and who acknowledged or is on scene."""
    paged = [str(p) for p in _list(inc.get("paged"))]
    acked = {str(p) for p in _list(inc.get("acked"))}
    scene = {str(p) for p in _list(inc.get("on_scene"))}
    if not paged and not scene:
        return ""
    marks = [f"{p} {'on scene' if p in scene else 'acked' if p in acked else 'paged'}"
             for p in [*paged, *sorted(scene - set(paged))]]
    return f"tier {inc.get('tier', '?')}: " + ", ".join(marks)


def _num(v: Any) -> float:
    """A number from a payload, or 0 for anything else (a board never fails on one field)."""
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return 0.0


def _list(v: Any) -> list:
    return v if isinstance(v, list) else []
