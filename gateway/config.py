"""Site configuration (CONTRACT §2): parsed with pydantic, every problem reported with its place.

A duty room edits these files by hand, so a mistake must be reported as
``devices[3].x: field required (line 41)`` rather than as a traceback, and a
misspelt key must be an error rather than a silently ignored setting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from alerting.tap import MAX_INFO as TAP_MAX_INFO
from drivers.gb26875 import parse_address as gb26875_address
from drivers.textguard import MAX_FLOW_DEPTH, flow_depth, unencodable

MAX_SECONDS = 86400.0  # a target or timeout beyond a day is a typo, not a policy
DEVICE_KINDS = ("smoke", "heat", "co", "gas", "flame", "manual", "camera", "temperature")
ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # MQTT-topic safe: no '/', '+', '#', spaces

# Radius (metres) a detector of each kind watches; the first position's error_m.
DEFAULT_RADIUS_M: dict[str, float] = {
    "smoke": 6.4,  # GB 50116: about 60-80 m^2 per point smoke detector
    "heat": 4.4,  # about 20-30 m^2 per point heat detector
    "co": 6.4,
    "gas": 4.0,
    "flame": 10.0,
    "manual": 3.0,  # a person stood at the call point
    "camera": 15.0,
    "temperature": 4.4,
}


UTC_OFFSET = r"^[+-]([01][0-9]|2[0-3]):[0-5][0-9]$"

# Modbus value types (docs/feed-modbus.md); the 32-bit ones span two registers
MODBUS_DATA_TYPES = ("int16", "uint16", "int32", "uint32", "float32")
MODBUS_32BIT = ("int32", "uint32", "float32")

# Rules that may confirm an incident without the grid worker (docs/locating.md). A manual
# call point always does (EN 54-2: it overrides every delay), so it is not in this list.
AUTO_CONFIRM_RULES = ("coincidence", "multi_criteria", "camera_detector")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, not ignored."""

    # NaN and infinity are no time, place or threshold a site can mean
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Window(Strict):
    """A disablement window (hot work, a detector being serviced), with a UTC offset.

    During it the device's (or zone's) signals are still recorded, but they do not open,
    join or confirm an incident; its start and end are each a ``rule`` step.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              populate_by_name=True)

    start: datetime = Field(alias="from")
    until: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _aware_and_ordered(self) -> Window:
        if self.start.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("give times with a UTC offset, e.g. 2026-01-05T08:00:00+08:00")
        if self.until <= self.start:
            raise ValueError("until must be after from")
        return self

    @property
    def start_ns(self) -> int:
        return _unix_ns(self.start)

    @property
    def until_ns(self) -> int:
        return _unix_ns(self.until)


def _unix_ns(t: datetime) -> int:
    """Exact integer nanoseconds (a float timestamp would lose the last digits)."""
    d = t - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000


class SLA(Strict):
    locate_s: float = Field(10.0, gt=0, le=MAX_SECONDS)
    confirm_s: float = Field(30.0, gt=0, le=MAX_SECONDS)
    in_place_s: float = Field(60.0, gt=0, le=MAX_SECONDS)


class Zone(Strict):
    id: str = Field(pattern=ID)
    name: str | None = None
    building: str | None = None
    floor: int
    polygon: list[tuple[float, float]] = Field(min_length=3)
    worker: str | None = None
    ask_human: bool = False
    # which automatic rules may confirm here; None = all. ask_human: true allows none.
    auto_confirm: list[Literal[AUTO_CONFIRM_RULES]] | None = None  # type: ignore[valid-type]
    disabled: list[Window] = Field(default_factory=list)
    # ceiling height (m): which GB 50116 row the coverage notes use; None = up to 6 m
    ceiling_m: float | None = Field(None, gt=0, le=100)

    def allows(self, rule: str) -> bool:
        """May ``rule`` confirm an incident here? A manual call point always may."""
        if rule == "manual_call_point":
            return True
        if self.ask_human:
            return False
        return self.auto_confirm is None or rule in self.auto_confirm


class Device(Strict):
    id: str = Field(pattern=ID)
    kind: Literal[DEVICE_KINDS]  # type: ignore[valid-type]
    floor: int
    x: float
    y: float
    name: str | None = None
    feed: str | None = None
    ref: str | None = None
    radius_m: float | None = Field(None, gt=0)
    azimuth_deg: float | None = None
    fov_deg: float | None = Field(None, gt=0, le=360)
    scale: float = 1.0
    alarm_at: float | None = None
    clear_at: float | None = None
    disabled: list[Window] = Field(default_factory=list)
    # supervision: silent longer than this (no signal, report or heartbeat) is a trouble
    heartbeat_s: float | None = Field(None, gt=0, le=MAX_SECONDS)
    # Zigbee2MQTT detectors that leave ``smoke: true`` after the sound stops
    clear_after_s: float | None = Field(None, gt=0, le=MAX_SECONDS)
    frame_width: int = Field(1280, gt=0, le=100_000)  # Frigate camera: detect width, px
    signed: bool = False  # Modbus: the register holds a two's-complement int16
    # Modbus: what the register(s) from ``ref`` hold; 32-bit types span two registers
    data_type: Literal[MODBUS_DATA_TYPES] | None = None  # type: ignore[valid-type]
    # Modbus, 32-bit types: "big" = the high 16 bits in the first register (ref's own)
    word_order: Literal["big", "little"] | None = None

    @model_validator(mode="after")
    def _thresholds(self) -> Device:
        both = self.alarm_at is not None and self.clear_at is not None
        if both and self.clear_at > self.alarm_at:  # type: ignore[operator]
            raise ValueError("clear_at must not be above alarm_at")
        if self.clear_at is not None and self.alarm_at is None:
            raise ValueError("clear_at needs alarm_at")
        if self.scale == 0:
            raise ValueError("scale must not be 0 (every reading would be 0)")
        return self

    @property
    def modbus_type(self) -> str:
        """The Modbus data type in effect: ``signed: true`` is ``int16``; else uint16."""
        if self.data_type is not None:
            return self.data_type
        return "int16" if self.signed else "uint16"

    @property
    def modbus_word_order(self) -> str:
        return self.word_order or "big"

    @property
    def modbus_width(self) -> int:
        """Registers the device's value spans on a Modbus feed (2 for 32-bit types)."""
        return 2 if self.modbus_type in MODBUS_32BIT else 1

    @property
    def radius(self) -> float:
        return self.radius_m if self.radius_m is not None else DEFAULT_RADIUS_M[self.kind]


class _FeedBase(Strict):
    name: str = Field(pattern=ID)
    # the far end (panel, transmission device, bridge) silent longer than this: link down
    heartbeat_s: float | None = Field(None, gt=0, le=MAX_SECONDS)


class _SerialFeed(_FeedBase):
    port: str = Field(min_length=1)
    baud: int = Field(9600, gt=0, le=4_000_000)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class Zigbee2MqttFeed(_FeedBase):
    type: Literal["zigbee2mqtt"]
    base_topic: str = "zigbee2mqtt"


class FrigateFeed(_FeedBase):
    type: Literal["frigate"]
    base_topic: str = "frigate"


class PanelPrinterFeed(_SerialFeed):
    type: Literal["panel-printer"]
    dialect: Literal["gst", "lida", "edwards"] = "gst"


class Gb26875Feed(_FeedBase):
    type: Literal["gb26875"]
    listen: str = Field(pattern=r"^[^:]+:\d+$")
    # the centre's 6-byte address in replies: an integer, or "38 5B 01 00 00 00" (wire
    # order, low byte first, as the fact sheet writes frames)
    centre_address: int | str = 0
    # how far the UITDs' clocks run ahead of UTC; None: the site's utc_offset
    utc_offset: str | None = Field(None, pattern=UTC_OFFSET)

    @field_validator("centre_address", mode="before")
    @classmethod
    def _address(cls, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError("give an integer or six hex bytes such as '38 5B 01 00 00 00'")
        return gb26875_address(v)

    @property
    def centre_address_int(self) -> int:
        return int(self.centre_address)


class ModbusFeed(_SerialFeed):
    type: Literal["modbus"]
    poll_s: float = Field(1.0, gt=0, le=3600)
    timeout_s: float = Field(0.5, gt=0, le=60)  # a unit silent this long: no_response
    registers: Literal["holding", "input"] = "holding"


Feed = Annotated[
    Zigbee2MqttFeed | FrigateFeed | PanelPrinterFeed | Gb26875Feed | ModbusFeed,
    Field(discriminator="type"),
]


class MqttPager(Strict):
    type: Literal["mqtt"]


class TapPager(Strict):
    """A responder's pager behind a TAP paging terminal (docs/pager-tap.md).

    The keys after ``pager_id`` fit firegrid to a terminal that departs from the TAP
    spec's defaults: 8N1 encoders, tighter block limits, slow dial-up carriers.
    """

    type: Literal["tap"]
    port: str | int | None = None
    host: str | None = None
    baud: int = Field(9600, gt=0, le=921_600)
    password: str = Field("000000", max_length=16)
    pager_id: str = Field(min_length=1, max_length=16)
    framing: Literal["7E1", "8N1", "7O1", "7E2", "8E1"] = "7E1"  # serial only
    max_chars: int = Field(TAP_MAX_INFO, ge=20, le=TAP_MAX_INFO)  # per block, spec max 250
    probe_s: float = Field(2.0, gt=0, le=60)  # t1: between CR probes
    answer_s: float = Field(10.0, gt=0, le=120)  # t3: wait for a logon or block answer
    probes: int = Field(3, ge=1, le=20)  # n1: CR probes before giving up
    block_retries: int = Field(3, ge=1, le=20)  # n2: sends of one block (NAK, silence)
    logon_retries: int = Field(3, ge=1, le=20)  # n3: logon attempts
    calls: int = Field(3, ge=1, le=10)  # whole calls (connect, logon, pages) per page
    deadline_s: float = Field(30.0, gt=0, le=300)  # everything, retries included

    @model_validator(mode="after")
    def _where(self) -> TapPager:
        if self.port is None:
            raise ValueError("a TAP pager needs port (a serial device, or a TCP port with host)")
        if self.host is not None and "framing" in self.model_fields_set:
            raise ValueError("framing is for a serial line; TAP over TCP has none")
        return self


class SnppPager(Strict):
    type: Literal["snpp"]
    host: str
    port: int = 444
    pager_id: str


Pager = Annotated[MqttPager | TapPager | SnppPager, Field(discriminator="type")]


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


class Shift(Strict):
    """On duty on these days from ``from`` until ``until`` (site-local time, see utc_offset).

    A shift whose ``until`` is not after ``from`` runs past midnight into the next day.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              populate_by_name=True)

    days: list[Literal[DAYS]] = Field(default_factory=lambda: list(DAYS))  # type: ignore[valid-type]
    start: str = Field("00:00", alias="from", pattern=HHMM)
    until: str = Field("24:00", pattern=HHMM)

    def minutes(self) -> tuple[int, int]:
        h1, m1 = (int(p) for p in self.start.split(":"))
        h2, m2 = (int(p) for p in self.until.split(":"))
        return h1 * 60 + m1, h2 * 60 + m2


class Responder(Strict):
    id: str = Field(pattern=ID)
    name: str | None = None
    tier: int = Field(ge=0)
    pager: Pager | None = None
    # or several, tried in turn when a page cannot be delivered on one
    pagers: list[Pager] | None = Field(None, min_length=1)
    on_duty: list[Shift] | None = None  # None: always on duty

    @model_validator(mode="after")
    def _one_way_to_say_it(self) -> Responder:
        if self.pager is not None and self.pagers is not None:
            raise ValueError("give pager or pagers, not both")
        return self

    @property
    def channels(self) -> list[MqttPager | TapPager | SnppPager]:
        """The channels to try, in order; MQTT (CONTRACT §3) when none is named."""
        if self.pagers is not None:
            return list(self.pagers)
        return [self.pager] if self.pager is not None else [MqttPager(type="mqtt")]


class Tier(Strict):
    tier: int = Field(ge=1)
    ack_timeout_s: float = Field(gt=0, le=MAX_SECONDS)
    # all members at once, or one after another (each gets ack_timeout_s)
    order: Literal["all", "in_turn"] = "all"
    repeat_s: float | None = Field(None, gt=0, le=MAX_SECONDS)  # page again until answered
    pre_alert: bool = False  # page this tier at `located`, before confirmation
    fallback: list[str] = Field(default_factory=list)  # paged when nobody is on duty


class Cap(Strict):
    """How ``cap/<incident>`` (CAP 1.2) describes the site; see docs/cap.md."""

    lat: float | None = Field(None, ge=-90, le=90)  # the site frame's origin in WGS84
    lon: float | None = Field(None, ge=-180, le=180)
    rotation_deg: float = 0.0  # +x axis, counter-clockwise from east
    sender: str | None = Field(None, pattern=r"^[^\s,<&]+$")
    language: str = Field("en-US", pattern=r"^(en|zh)(-[A-Za-z0-9]+)*$")
    scope: Literal["Public", "Restricted", "Private"] = "Public"
    restriction: str | None = None
    addresses: str | None = None
    web: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Cap:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        if self.scope == "Restricted" and not self.restriction:
            raise ValueError("scope Restricted needs restriction")
        if self.scope == "Private" and not self.addresses:
            raise ValueError("scope Private needs addresses")
        return self


class MonitoringCentre(Strict):
    """Where confirmed fires are reported upward over GB/T 26875.3 (docs/centre.md).

    The gateway dials ``host``:``port`` as a UITD (用户信息传输装置) would, with its own
    ``address`` as the source of every frame, and reports each detector of a confirmed
    or escalated incident as a type-2 fire report; the centre's 确认 is recorded as a
    ``forwarded`` step.
    """

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # this gateway's 6-byte address as the centre knows it, and the centre's own:
    # an integer, or six hex bytes in wire order ("79 03 00 00 00 00")
    address: int | str
    centre_address: int | str = 0
    system_address: int = Field(1, ge=0, le=255)  # 系统地址 of the reported fire system
    utc_offset: str | None = Field(None, pattern=UTC_OFFSET)  # the centre's clock; site's
    timeout_s: float = Field(10.0, gt=0, le=10)  # clause 6.5: at most 10 s for a 确认
    retries: int = Field(3, ge=0, le=3)  # ... and at most 3 resends
    heartbeat_s: float = Field(30.0, ge=1, le=600)

    @field_validator("address", "centre_address", mode="before")
    @classmethod
    def _address(cls, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError("give an integer or six hex bytes such as '79 03 00 00 00 00'")
        return gb26875_address(v)


class Site(Strict):
    site: str = Field(pattern=r"^[a-z0-9-]+$")
    sla: SLA = SLA()
    zones: list[Zone] = Field(min_length=1)
    devices: list[Device] = Field(default_factory=list)
    responders: list[Responder] = Field(default_factory=list)
    tiers: list[Tier] = Field(default_factory=list)
    feeds: list[Feed] = Field(default_factory=list)
    mqtt: str | None = None
    influx: str | None = None
    journal: str | None = None
    journal_max_mb: float = Field(512.0, gt=0)  # trouble at 80 %, signals shed at 95 %
    journal_keep_days: float = Field(30.0, gt=0)  # finished, forwarded steps kept this long
    utc_offset: str = Field("+08:00", pattern=UTC_OFFSET)
    cap: Cap = Cap()
    monitoring_centre: MonitoringCentre | None = None

    def device(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def feed(self, name: str) -> Feed | None:
        return next((f for f in self.feeds if f.name == name), None)

    def feed_devices(self, name: str) -> list[Device]:
        return [d for d in self.devices if d.feed == name]

    def responder(self, responder_id: str) -> Responder | None:
        return self._responders.get(responder_id)

    def zone(self, zone_id: str) -> Zone:
        return self._zones[zone_id]

    def tier(self, tier: int) -> Tier | None:
        return self._tiers.get(tier)

    def tier_members(self, tier: int) -> list[Responder]:
        return [r for r in self.responders if r.tier == tier]

    @property
    def max_tier(self) -> int:
        return max((t.tier for t in self.tiers), default=0)

    def model_post_init(self, context: Any) -> None:
        object.__setattr__(self, "_devices", {d.id: d for d in self.devices})
        object.__setattr__(self, "_responders", {r.id: r for r in self.responders})
        object.__setattr__(self, "_zones", {z.id: z for z in self.zones})
        object.__setattr__(self, "_tiers", {t.tier: t for t in self.tiers})


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` are ``(place, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(self.lines()[0] if problems else source)

    def lines(self) -> list[str]:
        return [f"{self.source}: {place}: {msg}" if place else f"{self.source}: {msg}"
                for place, msg in self.problems]


def format_loc(loc: Iterable[Any]) -> str:
    """('devices', 3, 'x') -> 'devices[3].x'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _cross_check(site: Site) -> list[tuple[str, str]]:
    """Problems no single field shows: duplicate ids and references to things that do not exist."""
    problems: list[tuple[str, str]] = []
    for key, items, attr in (
        ("zones", site.zones, "id"),
        ("devices", site.devices, "id"),
        ("responders", site.responders, "id"),
        ("feeds", site.feeds, "name"),
        ("tiers", site.tiers, "tier"),
    ):
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            value = getattr(item, attr)
            if value in seen:
                first = f"{key}[{seen[value]}]"
                problems.append((f"{key}[{i}].{attr}", f"duplicate {value!r} (first at {first})"))
            seen.setdefault(value, i)
    responders = {r.id for r in site.responders}
    feeds = {f.name for f in site.feeds}
    tiers = {t.tier for t in site.tiers}
    floors = {z.floor for z in site.zones}
    for i, z in enumerate(site.zones):
        if z.worker is not None and z.worker not in responders:
            problems.append((f"zones[{i}].worker", f"no responder with id {z.worker!r}"))
    for i, d in enumerate(site.devices):
        if d.feed is not None and d.feed not in feeds:
            problems.append((f"devices[{i}].feed", f"no feed named {d.feed!r}"))
        if d.feed is not None and not d.ref:
            problems.append((f"devices[{i}].ref", f"required for a device on feed {d.feed!r}"))
        if d.feed is None and d.ref is not None:
            problems.append((f"devices[{i}].ref", "only devices with a feed take a ref"))
        if d.feed is None and d.clear_after_s is not None:
            problems.append((f"devices[{i}].clear_after_s", "only for Zigbee2MQTT devices"))
        if d.floor not in floors:
            problems.append((f"devices[{i}].floor", f"no zone on floor {d.floor}"))
        if d.id in feeds or d.id in ("gateway", "broker", "monitoring-centre"):
            problems.append((f"devices[{i}].id", f"{d.id!r} names a feed, the gateway, the "
                                                 "broker or the monitoring centre, whose "
                                                 "troubles share trouble/<id>"))
    problems.extend(_feed_refs(site))
    for i, r in enumerate(site.responders):
        if r.tier >= 1 and r.tier not in tiers:
            problems.append((f"responders[{i}].tier", f"no tiers entry for tier {r.tier}"))
    for i, t in enumerate(site.tiers):
        if not any(r.tier == t.tier for r in site.responders):
            problems.append((f"tiers[{i}].tier", f"no responder in tier {t.tier}"))
        for j, rid in enumerate(t.fallback):
            if rid not in responders:
                problems.append((f"tiers[{i}].fallback[{j}]", f"no responder with id {rid!r}"))
    if site.monitoring_centre is not None:
        for i, f in enumerate(site.feeds):
            if f.name == "monitoring-centre":  # the uplink's own name in feed/ and trouble/
                problems.append((f"feeds[{i}].name", "'monitoring-centre' is the name of "
                                 "the monitoring_centre uplink; call this feed otherwise"))
    return problems


REF_FORMATS = {
    "modbus": (re.compile(r"^[0-9]{1,3}:[0-9]{1,5}\Z"), "<unit>:<register>, e.g. 1:0"),
    "gb26875": (re.compile(r"^(uitd|[0-9]{1,3}/[0-9]{1,3}(/[0-9]{1,10})?)\Z"),
                "<sys type>/<sys addr>/<part addr>, <sys type>/<sys addr> or uitd"),
}


def _feed_refs(site: Site) -> list[tuple[str, str]]:
    """A ref must be unique on its feed and have the feed's address shape."""
    problems: list[tuple[str, str]] = []
    types = {f.name: f.type for f in site.feeds}
    seen: dict[tuple[str, str], int] = {}
    for i, d in enumerate(site.devices):
        if d.feed is None or d.ref is None or d.feed not in types:
            continue
        key = (d.feed, d.ref)
        if key in seen:
            problems.append((f"devices[{i}].ref", f"{d.ref!r} on feed {d.feed!r} is already "
                                                  f"devices[{seen[key]}]"))
        seen.setdefault(key, i)
        fmt = REF_FORMATS.get(types[d.feed])
        if fmt is not None and not fmt[0].match(d.ref):
            problems.append((f"devices[{i}].ref", f"{d.ref!r} is not {fmt[1]}"))
        elif types[d.feed] == "modbus":
            unit, register = (int(p) for p in d.ref.split(":"))
            if not 1 <= unit <= 247 or register > 65535:
                problems.append((f"devices[{i}].ref", "unit must be 1-247 and register 0-65535"))
        if d.clear_after_s is not None and types[d.feed] != "zigbee2mqtt":
            problems.append((f"devices[{i}].clear_after_s", "only for Zigbee2MQTT devices"))
        if d.signed and types[d.feed] != "modbus":
            problems.append((f"devices[{i}].signed", "only for Modbus registers"))
    problems.extend(_modbus_values(site, types))
    return problems


def _modbus_values(site: Site, types: dict[str, str]) -> list[tuple[str, str]]:
    """``data_type``/``word_order``: only on Modbus devices, consistent with ``signed``,
    and a 32-bit value's second register belonging to no other device."""
    problems: list[tuple[str, str]] = []
    spans: dict[tuple[str, int], list[tuple[int, int, int]]] = {}  # (feed, unit) -> spans
    for i, d in enumerate(site.devices):
        on_modbus = d.feed is not None and types.get(d.feed) == "modbus"
        for key in ("data_type", "word_order"):
            if getattr(d, key) is not None and not on_modbus:
                problems.append((f"devices[{i}].{key}", "only for devices on a modbus feed"))
        if not on_modbus:
            continue
        if d.signed and d.data_type not in (None, "int16"):
            problems.append((f"devices[{i}].signed",
                             f"signed: true means data_type int16, which contradicts "
                             f"data_type: {d.data_type}; give data_type alone"))
        if d.word_order is not None and d.modbus_type not in MODBUS_32BIT:
            problems.append((f"devices[{i}].word_order",
                             f"only for 32-bit values (data_type {', '.join(MODBUS_32BIT)}); "
                             f"a {d.modbus_type} register has no word order"))
        if d.ref is None or not REF_FORMATS["modbus"][0].match(d.ref):
            continue  # already reported
        unit, register = (int(p) for p in d.ref.split(":"))
        if not 1 <= unit <= 247 or register > 65535:
            continue  # already reported
        width = d.modbus_width
        if register + width - 1 > 65535:
            problems.append((f"devices[{i}].ref", f"a {d.modbus_type} value takes registers "
                             f"{register} and {register + 1}; the last register is 65535"))
            continue
        spans.setdefault((d.feed, unit), []).append((register, register + width - 1, i))  # type: ignore[arg-type]
    for (feed, unit), items in spans.items():
        items.sort()
        reach = items[0]  # the span seen so far that reaches furthest
        for b0, b1, j in items[1:]:
            a0, a1, i = reach
            if b0 <= a1 and (a1 > a0 or b1 > b0):  # an overlap involving a 32-bit value
                di = site.devices[i]
                problems.append((f"devices[{j}].ref",
                                 f"register {b0} of unit {unit} on feed {feed!r} is already "
                                 f"read by devices[{i}] ({di.id}, {di.modbus_type} at "
                                 f"registers {a0}..{a1})"))
            if b1 > a1:
                reach = (b0, b1, j)
    return problems


def _line_map(text: str) -> dict[tuple[Any, ...], int]:
    """Map each YAML path (('devices', 3, 'x')) to its 1-based line, for error messages."""
    lines: dict[tuple[Any, ...], int] = {}
    seen: set[int] = set()  # an alias is walked once: an alias bomb stays linear

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except Exception:  # already parsed once; the map only adds line numbers
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _with_line(msg: str, loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> str:
    """Append the line of the nearest enclosing node: ``field required (line 23)``."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{msg} (line {lines[loc[:n]]})"
    return msg


def _parse_place(place: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", place))


def parse_site(text: str, source: str = "<config>") -> Site:
    """Parse YAML text into a Site, or raise ConfigError listing every problem with its place."""
    if flow_depth(text) > MAX_FLOW_DEPTH:
        raise ConfigError(source, [("", f"not valid YAML: nested over {MAX_FLOW_DEPTH} deep")])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [(where, f"not valid YAML: {problem}")]) from None
    except (RecursionError, MemoryError):
        raise ConfigError(source, [("", "not valid YAML: nested too deeply")]) from None
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError on bad tags
        raise ConfigError(source, [("", f"not valid YAML: {type(exc).__name__}: "
                                        f"{str(exc)[:120]}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [("", "expected a mapping at the top (site:, zones:, ...)")])
    bad_text = list(unencodable(data))
    if bad_text:
        raise ConfigError(source, [(place, "text that is not valid Unicode (a lone surrogate)")
                                   for place in bad_text])
    lines = _line_map(text)
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _strip_union_tags(tuple(err["loc"]))
            msg = err["msg"]
            msg = msg[0].lower() + msg[1:] if msg else msg
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append((format_loc(loc), _with_line(msg, loc, lines)))
        raise ConfigError(source, problems) from None
    problems = _cross_check(site)
    if problems:
        raise ConfigError(
            source, [(p, _with_line(m, _parse_place(p), lines)) for p, m in problems]
        )
    return site


def _strip_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic puts a discriminated union's tag ('tap', 'modbus') into the loc; drop it."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        after_pager = i >= 1 and (loc[i - 1] == "pager" or (
            i >= 2 and loc[i - 2] == "pagers" and isinstance(loc[i - 1], int)))
        after_feed = i >= 2 and loc[i - 2] == "feeds" and isinstance(loc[i - 1], int)
        if isinstance(part, str) and (after_pager or after_feed):
            continue
        out.append(part)
    return tuple(out)


def load_site(path: str | Path) -> Site:
    """Read and parse a site file; a missing or unreadable file is a ConfigError too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(p), [("", f"cannot read file: {reason}")]) from None
    return parse_site(text, str(p))
