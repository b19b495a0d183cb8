"""What a page is, independent of how it leaves: the vocabulary every pager channel speaks.

The gateway builds Pages; channels (MQTT two-way pager now; TAP and SNPP later) carry
them and report acknowledgements back as Acks.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import Any

import orjson

ACK_STATUSES = ("ack", "on_scene", "decline")
SCREEN = 80  # characters on a numeric/alpha pager screen
MAX_ACK = 1024  # an acknowledgement is a few dozen bytes; anything larger is hostile

_REPR = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 40, 40, 6, 6


def _show(value: object) -> str:
    """A short, bounded repr for error messages: a hostile value may be huge or 1000 deep."""
    return _REPR.repr(value)


class AckError(ValueError):
    """An acknowledgement that cannot be understood; the message says why."""


@dataclass(frozen=True, slots=True)
class Page:
    responder: str
    incident: str
    tier: int
    zone: str
    text: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"incident": self.incident, "tier": self.tier, "zone": self.zone,
             "responder": self.responder, "text": self.text, **self.extra}
        )

    @classmethod
    def from_json(cls, data: bytes) -> Page:
        obj = orjson.loads(data)
        known = {"incident", "tier", "zone", "responder", "text"}
        return cls(responder=obj["responder"], incident=obj["incident"], tier=obj["tier"],
                   zone=obj["zone"], text=obj["text"],
                   extra={k: v for k, v in obj.items() if k not in known})


@dataclass(frozen=True, slots=True)
class Ack:
    responder: str
    incident: str
    status: str  # one of ACK_STATUSES


def decode_mqtt_ack(responder: str, payload: bytes) -> Ack:
    """Parse ``page/<responder>/ack`` JSON; raise AckError naming what is wrong."""
    if len(payload) > MAX_ACK:
        raise AckError(f"ack of {len(payload)} bytes is over {MAX_ACK}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise AckError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AckError("expected a JSON object")
    incident, status = obj.get("incident"), obj.get("status")
    if not isinstance(incident, str) or not incident:
        raise AckError("'incident' must be a non-empty string")
    if status not in ACK_STATUSES:
        raise AckError(f"'status' must be one of {', '.join(ACK_STATUSES)}; got {_show(status)}")
    return Ack(responder=responder, incident=incident, status=status)


def encode_mqtt_ack(ack: Ack) -> bytes:
    return orjson.dumps({"incident": ack.incident, "status": ack.status})
