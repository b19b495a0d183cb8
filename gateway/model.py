"""The gateway's vocabulary: audit steps, outgoing messages and the engine's decisions.

A Step is the unit of the audit trail (CONTRACT §4): journaled first, then sent to
InfluxDB with the same timestamp. The engine's state is rebuilt by re-applying steps,
so a step must carry everything its stage changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from alerting.page import Page

NS = 1_000_000_000

# Stages of CONTRACT §4 plus the ones firegrid adds (documented in docs/audit.md).
STAGES = (
    "detected", "located", "queued", "confirmed", "dismissed", "escalated",
    "paged", "acked", "on_scene", "breach", "closed",
    "declined", "unanswered", "refused", "rule",
    "pre_alerted", "delivered", "page_failed", "notified",
    "forwarded", "forward_failed",
)


@dataclass(slots=True)
class Step:
    incident: str
    stage: str
    t_ns: int  # when it happened (gateway clock), unix nanoseconds
    t0_ns: int  # T0 of the incident
    zone: str | None = None
    responder: str | None = None
    tier: int | None = None
    device: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None  # journal sequence number, once stored

    @property
    def elapsed_s(self) -> float:
        return (self.t_ns - self.t0_ns) / NS

    def tags(self) -> dict[str, str]:
        tags = {"incident": self.incident, "stage": self.stage}
        if self.zone:
            tags["zone"] = self.zone
        if self.responder:
            tags["responder"] = self.responder
        if self.tier is not None:
            tags["tier"] = str(self.tier)
        if self.device:
            tags["device"] = self.device
        return tags

    def to_json(self) -> bytes:
        return orjson.dumps({
            "incident": self.incident, "stage": self.stage, "t_ns": self.t_ns,
            "t0_ns": self.t0_ns, "zone": self.zone, "responder": self.responder,
            "tier": self.tier, "device": self.device, "fields": self.fields,
        })

    @classmethod
    def from_json(cls, data: bytes | str, seq: int | None = None) -> Step:
        obj = orjson.loads(data)
        return cls(seq=seq, **obj)


@dataclass(frozen=True, slots=True)
class Publish:
    """An MQTT message under ``firegrid/<site>/``; durable ones go through the journal outbox."""

    topic: str
    payload: bytes
    retain: bool = False
    durable: bool = False


@dataclass(frozen=True, slots=True)
class CentreReport:
    """A detector of a confirmed incident, to be reported to the monitoring centre.

    Journaled in the outbox with the step that caused it and cleared only once the
    centre has confirmed it, so a crash or a centre outage delays a report, never loses
    it (at most one duplicate per crash). Carries the incident's T0 so the outcome can
    be recorded as a step even after the incident is closed and forgotten.
    """

    incident: str
    t0_ns: int
    device: str
    t_ns: int  # when the device alarmed (or the incident closed): the time label
    part_type: int
    part_addr: int
    sys_addr: int
    description: str
    status: str = "fire"  # or "normal": the incident was closed, the component is back

    def to_json(self) -> bytes:
        return orjson.dumps({f: getattr(self, f) for f in self.__slots__})

    @classmethod
    def from_json(cls, data: bytes) -> CentreReport:
        d = orjson.loads(data)
        return cls(**{f: d[f] for f in cls.__slots__ if f in d})


@dataclass(frozen=True, slots=True)
class DeviceState:
    device: str
    state: str  # normal, alarm, fault, trouble, offline, disabled
    since_ns: int
    kind: str | None = None
    troubles: tuple[str, ...] = ()  # gateway.supervision.TROUBLE_ORDER, most severe first
    detail: str = ""  # why, for a trouble: "silent for 65 s (heartbeat 60 s)"
    # the device's own ts of the latest alarm heard from it: its receipt (docs/mqtt.md)
    alarm_ts: float | None = None

    def payload(self) -> bytes:
        body: dict[str, Any] = {"device": self.device, "state": self.state, "kind": self.kind,
                                "since": self.since_ns / NS}
        if self.troubles:
            body["troubles"] = list(self.troubles)
        if self.alarm_ts is not None:
            body["alarm_ts"] = self.alarm_ts
        return orjson.dumps(body)


@dataclass(slots=True)
class Decisions:
    """What the engine wants done, in order: record ``steps`` durably, then send the rest."""

    steps: list[Step] = field(default_factory=list)
    publishes: list[Publish] = field(default_factory=list)
    pages: list[Page] = field(default_factory=list)
    devices: list[DeviceState] = field(default_factory=list)
    reports: list[CentreReport] = field(default_factory=list)  # to the monitoring centre
    # devices whose alarm was one already heard, sent again for want of its receipt: the
    # audit records it as a repeat, so counting alarms counts it once (docs/audit.md)
    repeated: list[str] = field(default_factory=list)

    def extend(self, other: Decisions) -> None:
        self.steps.extend(other.steps)
        self.publishes.extend(other.publishes)
        self.pages.extend(other.pages)
        self.devices.extend(other.devices)
        self.reports.extend(other.reports)
        self.repeated.extend(other.repeated)

    def __bool__(self) -> bool:
        return bool(self.steps or self.publishes or self.pages or self.devices
                    or self.reports)


class Refused(Exception):
    """An input the engine will not act on (unknown incident, late reply, ...); counted, logged."""

    def __init__(self, reason: str, kind: str = "refused", decisions: Decisions | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.decisions = decisions  # a ``refused`` step to journal, when it concerns an incident
