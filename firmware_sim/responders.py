"""Simulated people: grid workers who confirm, pager holders who ack, anyone who closes.

They see only what a real person's phone or pager would: confirm requests, pages and
incident states on MQTT (CONTRACT §3), and answer by scripted rules after a delay. Each
answer is its own task, so a slow answer never holds up another person, and each
(person, incident, action) is done at most once, because the gateway may re-send a page
or re-publish a retained request and a real person does not ack twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import orjson

from alerting.page import Ack, Page, encode_mqtt_ack
from firmware_sim.devices import Emit
from firmware_sim.scenario import CloseRule, Scenario

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"closed", "dismissed"})
"""Incident states after which nobody closes it and ``until_closed`` may count it done."""


class Responders:
    """Every scripted person of a scenario, sharing one MQTT client.

    Call ``subscribe()`` before any device event is sent (so no request is missed),
    run ``listen()`` as a task, and ``aclose()`` at the end to drop pending answers.
    """

    def __init__(
        self,
        scenario: Scenario,
        client: aiomqtt.Client,
        *,
        time_scale: float = 1.0,
        emit: Emit | None = None,
    ) -> None:
        self.scenario = scenario
        self.client = client
        self.prefix = scenario.prefix
        self.time_scale = time_scale
        self._emit = emit or (lambda kind, detail: None)
        self.incidents: dict[str, dict[str, Any]] = {}  # latest non-empty state per incident
        self.ignored: list[dict[str, Any]] = []  # messages that could not be understood
        self.errors: list[BaseException] = []  # failures of answer tasks (e.g. broker gone)
        self._cleared: set[str] = set()  # incidents whose retained state was emptied
        self._done: set[tuple[str, str, str]] = set()  # (person, incident, action)
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks: dict[tuple[str, str], asyncio.Task[None]] = {}

    # --- wiring --------------------------------------------------------------------

    def filters(self) -> list[str]:
        """What a person's device listens to; ``+`` keeps replies and closes out."""
        return [f"{self.prefix}{t}/+" for t in ("confirm", "page", "incident")]

    async def subscribe(self) -> None:
        """Subscribe (QoS 1); returns after the broker's SUBACK, so nothing is missed."""
        for topic in self.filters():
            await self.client.subscribe(topic, qos=1)

    async def listen(self) -> None:
        """Handle messages until cancelled; raises MqttError if the broker goes away."""
        async for msg in self.client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
            self.handle(msg.topic.value, bytes(payload), retained=bool(msg.retain))

    async def aclose(self) -> None:
        """Cancel answers not yet given: the scenario is over, its people go home."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def all_closed(self) -> bool:
        """True once at least one incident was seen and every one is closed or dismissed."""
        return bool(self.incidents) and all(
            i in self._cleared or s.get("state") in TERMINAL_STATES
            for i, s in self.incidents.items()
        )

    # --- dispatch ------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """Route one message; synchronous so that it never waits on the broker."""
        if not topic.startswith(self.prefix):
            return
        parts = topic[len(self.prefix):].split("/")
        if len(parts) != 2 or parts[0] not in ("confirm", "page", "incident"):
            return
        what, ident = parts
        if not payload:  # an emptied retained message: the request is decided, or gone
            if what == "incident":
                self._cleared.add(ident)
            return
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            self._ignore(topic, payload, "not a JSON object")
            return
        if what == "confirm":
            self._on_confirm(ident, obj, retained)
        elif what == "page":
            self._on_page(ident, topic, payload, retained)
        else:
            self._on_incident(ident, obj, retained)

    def _ignore(self, topic: str, payload: bytes, reason: str) -> None:
        log.warning("ignoring %s: %s", topic, reason)
        self.ignored.append(
            {"topic": topic, "payload": payload[:200].decode("utf-8", "replace"),
             "reason": reason}
        )

    def _on_confirm(self, incident: str, req: dict[str, Any], retained: bool) -> None:
        zone = req.get("zone")
        self._emit("confirm_request", {
            "incident": incident, "zone": zone, "deadline": req.get("deadline"),
            "retained": retained, "request": req,
        })
        for person, script in self.scenario.responders.items():
            rule = script.confirm_rule(zone)
            if rule is not None and self._once(person, incident, "reply"):
                self._later(rule.after_s, lambda p=person, r=rule: self._reply(
                    incident, p, r.decision, r.cause))

    def _on_page(self, responder: str, topic: str, payload: bytes, retained: bool) -> None:
        try:
            page = Page.from_json(payload)
        except (KeyError, TypeError, ValueError):
            self._ignore(topic, payload, "not a page (needs incident, tier, zone, text)")
            return
        self._emit("page", {
            "responder": responder, "incident": page.incident, "tier": page.tier,
            "zone": page.zone, "text": page.text, "retained": retained,
            **({"notice": page.extra["notice"]} if page.extra.get("notice") else {}),
        })
        if page.extra.get("notice"):  # news about an incident already paged: no answer
            return
        script = self.scenario.responders.get(responder)
        rule = script.page_rule(page.zone) if script is not None else None
        if rule is None or rule.never:
            return
        inc = page.incident
        if rule.ack_after_s is not None and self._once(responder, inc, "ack"):
            self._acks[responder, inc] = self._later(
                rule.ack_after_s, lambda: self._ack(responder, inc, "ack"))
        if rule.on_scene_after_s is not None and self._once(responder, inc, "on_scene"):
            self._later(rule.on_scene_after_s, lambda: self._ack(responder, inc, "on_scene"))
        if rule.decline_after_s is not None and self._once(responder, inc, "decline"):
            self._later(rule.decline_after_s, lambda: self._ack(responder, inc, "decline"))

    def _on_incident(self, incident: str, state: dict[str, Any], retained: bool) -> None:
        self.incidents[incident] = state
        self._cleared.discard(incident)
        self._emit("incident", {
            "incident": incident, "state": state.get("state"), "zone": state.get("zone"),
            "on_scene": state.get("on_scene"), "retained": retained, "payload": state,
        })
        if state.get("state") in TERMINAL_STATES:
            return
        if not (state.get("on_scene") or state.get("state") == "on_scene"):
            return
        rule = self.scenario.close_rule(state.get("zone"))
        if rule is not None and self._once(rule.by, incident, "close"):
            self._later(rule.after_on_scene_s, lambda: self._close(incident, rule))

    # --- answers -------------------------------------------------------------------

    def _once(self, person: str, incident: str, action: str) -> bool:
        key = (person, incident, action)
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def _later(
        self, delay_s: float, answer: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        """Give ``answer()`` after the scripted delay (scaled) as a task of its own."""

        async def run() -> None:
            await asyncio.sleep(delay_s * self.time_scale)
            await answer()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            log.error("simulated answer failed: %r", exc)
            self.errors.append(exc)

    async def _publish(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)

    async def _reply(self, incident: str, person: str, decision: str,
                     cause: str | None = None) -> None:
        topic = f"{self.prefix}confirm/{incident}/reply"
        body = {"decision": decision, "by": person} | ({"cause": cause} if cause else {})
        await self._publish(topic, orjson.dumps(body))
        self._emit("reply", {"incident": incident, "by": person, "decision": decision,
                             "cause": cause, "topic": topic})

    async def _ack(self, responder: str, incident: str, status: str) -> None:
        first = self._acks.get((responder, incident))
        if status != "ack" and first is not None and not first.done():
            await asyncio.wait([first])  # equal delays: keep "ack" before "on_scene"
        topic = f"{self.prefix}page/{responder}/ack"
        await self._publish(topic, encode_mqtt_ack(Ack(responder, incident, status)))
        self._emit("ack", {"responder": responder, "incident": incident, "status": status,
                           "topic": topic})

    async def _close(self, incident: str, rule: CloseRule) -> None:
        latest = self.incidents.get(incident, {})
        if incident in self._cleared or latest.get("state") in TERMINAL_STATES:
            return  # someone else closed it meanwhile
        topic = f"{self.prefix}incident/{incident}/close"
        body = {"by": rule.by, "reason": rule.reason} | (
            {"cause": rule.cause} if rule.cause else {})
        await self._publish(topic, orjson.dumps(body))
        self._emit("close", {"incident": incident, "by": rule.by, "reason": rule.reason,
                             "cause": rule.cause, "topic": topic})
