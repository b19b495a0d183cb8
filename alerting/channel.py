"""What a pager channel reports back: one Delivery per page it tried to send.

A channel (TAP over serial or TCP, SNPP, the MQTT two-way pager) takes a Page and says
whether it left, how, and after how many attempts. A failed delivery is not silence:
the gateway records it as a step and moves to the responder's next channel, or counts
the responder as unanswered so the escalation policy moves on at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delivery:
    responder: str
    incident: str
    channel: str  # "tap", "snpp", "mqtt"
    ok: bool
    detail: str = ""  # what the far end said: "250 Message Sent OK", "3 NAKs", "hung up"
    attempts: int = 1
    # SNPP level 3: the message tag and pass code, to poll MSTA for the responder's reply
    tag: tuple[str, str] | None = None
