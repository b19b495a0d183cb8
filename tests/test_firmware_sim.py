"""firmware_sim against a real Mosquitto: scenario files, simulated devices and people.

The gateway's side is played by a small scripted MQTT client (``FakeGateway``) that
reacts to what the simulator sends the way CONTRACT §3 says the gateway does, so these
tests check the simulator's half of every exchange on real topics and payloads without
depending on the gateway. Delays are tenths of a second to keep the file fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt
import orjson
import pytest

from drivers.native import decode
from drivers.signal import Signal
from firmware_sim.devices import play_events
from firmware_sim.lab import Mosquitto, free_port
from firmware_sim.runner import SimEvent, parse_mqtt_url, run_scenario
from firmware_sim.scenario import (
    ScenarioError,
    bundled_scenario,
    load_scenario,
    parse_scenario,
)

React = Callable[["FakeGateway", str, bytes], Awaitable[None]]


class FakeGateway:
    """A scripted stand-in for the gateway: records every message under the site prefix
    and lets the test react to each one (``react(gw, relative_topic, payload)``)."""

    def __init__(self, broker: Mosquitto, site: str, react: React | None = None) -> None:
        self.prefix = f"firegrid/{site}/"
        self.client = aiomqtt.Client("127.0.0.1", broker.port, identifier=f"fake-gw-{site}")
        self.react = react
        self.seen: list[tuple[float, str, bytes]] = []  # (monotonic time, topic, payload)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        await self.client.subscribe(self.prefix + "#", qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(et, e, tb)

    async def _run(self) -> None:
        async for msg in self.client.messages:
            topic = msg.topic.value.removeprefix(self.prefix)
            payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
            self.seen.append((time.monotonic(), topic, payload))
            if self.react is not None:
                await self.react(self, topic, payload)

    async def send(self, topic: str, obj: Any, *, retain: bool = False) -> None:
        payload = b"" if obj is None else orjson.dumps(obj)
        await self.client.publish(self.prefix + topic, payload, qos=1, retain=retain)

    def got(self, topic: str) -> list[Any]:
        return [orjson.loads(p) for _, t, p in self.seen if t == topic and p]


# --- scenario files ------------------------------------------------------------------


def test_bundled_demo_scenario_tells_the_three_stories() -> None:
    demo = load_scenario(bundled_scenario("demo"))
    assert demo.site == "taibai-demo" and demo.prefix == "firegrid/taibai-demo/"
    assert [(e.at, e.device, e.state) for e in demo.events][:2] == [
        (0, "smk-311", "alarm"), (2, "heat-312", "alarm")]
    w07 = demo.responders["w-07"].confirm_rule("b3-2f-kitchen")
    assert w07 is not None and (w07.decision, w07.after_s) == ("confirm", 4)
    lobby = demo.responders["w-03"].confirm_rule("b1-1f-lobby")
    assert lobby is not None and (lobby.decision, lobby.cause) == ("dismiss", "unwanted")
    guard = demo.responders["guard-1"]
    assert guard.page_rule("b3-2f-kitchen").on_scene_after_s == 20  # type: ignore[union-attr]
    assert guard.page_rule("b1-2f-flats").never  # type: ignore[union-attr]
    assert demo.close_rule("b1-2f-flats").by == "w-03"  # type: ignore[union-attr]
    assert demo.close_rule("b3-2f-kitchen").cause == "fire"  # type: ignore[union-attr]
    assert 50 <= demo.duration_s <= 70
    assert load_scenario(bundled_scenario("garbage")).events[0].raw == "this is not json"


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("events: [{at: 0, device: smk-1, state: alarm, colour: red}]", "events[0].colour"),
        ("responders: {w-1: {pages: [{zone: z, ack_afer_s: 3}]}}",
         "responders.w-1.pages[0].ack_afer_s"),
        ("close: [{zone: z, by: w-1, after_s: 1}]", "close[0].after_s"),
        ("events: [{at: 0, device: smk-1, state: burning}]", "events[0]"),
        ("events: [{at: 99, device: smk-1, state: alarm}]", "(top level)"),
        ("responders: {g: {pages: [{zone: z, never: true, ack_after_s: 1}]}}",
         "responders.g.pages[0]"),
        ("wibble: 1", "wibble"),
        ("responders: {w: {confirm: [{zone: z, decision: confirm, cause: unwanted}]}}",
         "responders.w.confirm[0]"),
        ("responders: {w: {confirm: [{zone: z, decision: dismiss, cause: fire}]}}",
         "responders.w.confirm[0].cause"),
        ("close: [{zone: z, by: w-1, cause: toast}]", "close[0].cause"),
    ],
)
def test_scenario_errors_name_their_place(text: str, place: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(f"name: t\nsite: s\nduration_s: 10\n{text}\n", "t.yaml")
    assert any(p.startswith(f"{place}:") for p in info.value.problems), info.value.problems
    assert str(info.value).startswith("t.yaml: ")


def test_scenario_file_errors() -> None:
    with pytest.raises(ScenarioError, match="not valid YAML"):
        parse_scenario("name: [unclosed")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario("/nonexistent/scenario.yaml")
    with pytest.raises(ScenarioError) as info:
        parse_scenario("name: t\nsite: Bad_Site\n")
    assert {p.split(":")[0] for p in info.value.problems} == {"site", "duration_s"}


def test_parse_mqtt_url() -> None:
    b = parse_mqtt_url("mqtt://us%40er:p%3Ass@127.0.0.1:1999")
    assert (b.host, b.port, b.username, b.password) == ("127.0.0.1", 1999, "us@er", "p:ss")
    assert parse_mqtt_url("mqtt://localhost").port == 1883
    with pytest.raises(ValueError, match="mqtt://"):
        parse_mqtt_url("http://127.0.0.1:1883")


# --- devices -------------------------------------------------------------------------


async def test_devices_publish_native_payloads_on_time(mosquitto: Mosquitto) -> None:
    scenario = parse_scenario("""
name: devices
site: t-dev
duration_s: 2
events:   # deliberately out of order: the player sorts by time
  - {at: 0.6, device: smk-9, topic: custom/place, state: fault}
  - {at: 0.0, device: smk-1, state: alarm, kind: smoke, value: 1.5}
  - {at: 0.3, device: cam-1, state: alarm, kind: camera, bearing_deg: -30}
  - {at: 0.45, device: smk-2, raw: "not json {"}
""")
    async with FakeGateway(mosquitto, "t-dev") as gw, aiomqtt.Client(
        "127.0.0.1", mosquitto.port, identifier="dev-sim"
    ) as sim:
        emitted: list[tuple[str, dict[str, Any]]] = []
        start = time.monotonic()
        await play_events(sim, scenario.prefix, scenario.events,
                          emit=lambda kind, d: emitted.append((kind, d)))
        await asyncio.sleep(0.2)
    got = [(t - start, topic, payload) for t, topic, payload in gw.seen]
    assert [topic for _, topic, _ in got] == [
        "signal/smk-1", "signal/cam-1", "signal/smk-2", "custom/place"]
    alarm = decode("smk-1", got[0][2])
    assert alarm == Signal("smk-1", "alarm", kind="smoke", value=1.5, ts=alarm.ts)
    # an alarm carries the device's clock, so the gateway's receipt can name it
    assert alarm.ts is not None and abs(alarm.ts - time.time()) < 30
    assert decode("cam-1", got[1][2]).bearing_deg == -30
    assert got[2][2] == b"not json {"
    assert orjson.loads(got[3][2]) == {"state": "fault"}
    for (t, _, _), at in zip(got, (0.0, 0.3, 0.45, 0.6), strict=True):
        assert at - 0.02 <= t <= at + 0.25, (t, at)
    assert [d["device"] for k, d in emitted if k == "signal"] == ["smk-1", "cam-1", "smk-2",
                                                                 "smk-9"]


# --- people --------------------------------------------------------------------------

ANSWERS = """
name: answers
site: t-ans
until_closed: true
duration_s: 8
responders:
  w-1:
    confirm: [{zone: z-kitchen, decision: confirm, after_s: 0.3}, {zone: "*", decision: dismiss}]
  guard-1:
    pages: [{zone: z-kitchen, ack_after_s: 0.2, on_scene_after_s: 0.5}]
  mute-1:
    pages: [{zone: "*", never: true}]
  squad-1:
    pages: [{zone: z-kitchen, decline_after_s: 0.1}]
events:
  - {at: 0.1, device: smk-1, state: alarm, kind: smoke}
close:
  - {zone: z-kitchen, by: w-1, after_on_scene_s: 0.3, reason: "fire out", cause: fire}
"""


async def _gateway_side(gw: FakeGateway, topic: str, payload: bytes) -> None:
    """What the real gateway would do, reduced to one ask_human incident in z-kitchen."""
    state = {"id": "inc-1", "zone": "z-kitchen", "x": 1.0, "y": 2.0, "floor": 2,
             "t0": time.time(), "on_scene": []}
    if topic == "signal/smk-1":
        await gw.send("incident/inc-1", {**state, "state": "queued"}, retain=True)
        await gw.send("confirm/inc-1", {"incident": "inc-1", "zone": "z-kitchen", "x": 1.0,
                                        "y": 2.0, "floor": 2, "deadline": time.time() + 30},
                      retain=True)
    elif topic == "confirm/inc-1/reply":
        await gw.send("confirm/inc-1", None, retain=True)  # decided: clear the request
        await gw.send("incident/inc-1", {**state, "state": "confirmed"}, retain=True)
        for who in ("guard-1", "guard-1", "mute-1", "nobody", "squad-1"):  # guard-1 twice
            await gw.send(f"page/{who}", {"incident": "inc-1", "tier": 1, "zone": "z-kitchen",
                                          "responder": who, "text": "FIRE z-kitchen"})
    elif topic == "page/guard-1/ack" and orjson.loads(payload)["status"] == "on_scene":
        await gw.send("incident/inc-1", {**state, "state": "on_scene",
                                         "on_scene": ["guard-1"]}, retain=True)
    elif topic == "incident/inc-1/close":
        await gw.send("incident/inc-1", {**state, "state": "closed",
                                         "on_scene": ["guard-1"]}, retain=True)


async def test_people_confirm_ack_close_and_stay_silent(mosquitto: Mosquitto) -> None:
    scenario = parse_scenario(ANSWERS)
    seen: list[SimEvent] = []
    async with FakeGateway(mosquitto, "t-ans", _gateway_side) as gw:
        report = await run_scenario(scenario, mosquitto.url, on_event=seen.append)
        await asyncio.sleep(0.1)

    # the confirm request was answered once, on its reply topic, with the contract's JSON
    assert gw.got("confirm/inc-1/reply") == [{"decision": "confirm", "by": "w-1"}]
    (req,) = report.confirm_requests  # the emptied retained request is ignored
    (reply,) = report.replies
    assert req.detail["zone"] == "z-kitchen" and req.detail["retained"] is False
    assert 0.25 <= reply.t - req.t <= 0.6
    # guard-1 acks then goes on scene, once each though paged twice; squad-1 declines
    assert gw.got("page/guard-1/ack") == [{"incident": "inc-1", "status": "ack"},
                                          {"incident": "inc-1", "status": "on_scene"}]
    assert gw.got("page/squad-1/ack") == [{"incident": "inc-1", "status": "decline"}]
    # a `never` rule and an unlisted person stay silent, though their pages arrived
    assert gw.got("page/mute-1/ack") == [] and gw.got("page/nobody/ack") == []
    assert {p.detail["responder"] for p in report.pages} == {"guard-1", "mute-1", "nobody",
                                                            "squad-1"}
    first_page = min(p.t for p in report.pages if p.detail["responder"] == "guard-1")
    ack_t = {a.detail["status"]: a.t for a in report.acks if a.detail["responder"] == "guard-1"}
    assert 0.15 <= ack_t["ack"] - first_page <= 0.5
    assert 0.45 <= ack_t["on_scene"] - first_page <= 0.8
    # w-1 closed it after someone was on scene, and the run stopped once all were closed
    assert gw.got("incident/inc-1/close") == [{"by": "w-1", "reason": "fire out",
                                                "cause": "fire"}]
    (close,) = report.closes
    assert 0.25 <= close.t - ack_t["on_scene"] <= 0.7
    assert report.stopped_by == "all_closed" and report.elapsed_s < 4
    assert report.incidents["inc-1"]["state"] == "closed"
    assert seen == report.events and report.ignored == []
    kinds = [e.kind for e in report.events]
    assert kinds.index("signal") < kinds.index("confirm_request") < kinds.index("reply")


async def test_retained_request_from_before_the_run_is_answered(mosquitto: Mosquitto) -> None:
    """A person opening their phone still sees a request that was waiting for them."""
    scenario = parse_scenario("""
name: late
site: t-late
duration_s: 0.8
responders:
  w-1: {confirm: [{zone: "*", decision: dismiss, after_s: 0.1}]}
""")
    async with FakeGateway(mosquitto, "t-late") as gw:
        await gw.send("confirm/inc-7", {"incident": "inc-7", "zone": "z", "x": 0, "y": 0,
                                        "floor": 1, "deadline": time.time() + 30}, retain=True)
        await gw.send("page/w-1", [1, 2, 3], retain=True)  # garbage: ignored, recorded
        report = await run_scenario(scenario, mosquitto.url)
        await asyncio.sleep(0.1)
    assert gw.got("confirm/inc-7/reply") == [{"decision": "dismiss", "by": "w-1"}]
    assert report.confirm_requests[0].detail["retained"] is True
    assert report.stopped_by == "duration" and 0.75 <= report.elapsed_s <= 1.5
    assert [i["topic"] for i in report.ignored] == ["firegrid/t-late/page/w-1"]


async def test_time_scale_compresses_the_script(mosquitto: Mosquitto) -> None:
    scenario = parse_scenario("""
name: fast
site: t-fast
duration_s: 8
responders:
  w-1: {confirm: [{zone: z, decision: confirm, after_s: 4}]}
events:
  - {at: 0, device: smk-1, state: alarm}
  - {at: 3, device: smk-2, state: alarm}
  - {at: 6, device: smk-1, state: clear}
""")

    async def ask(gw: FakeGateway, topic: str, payload: bytes) -> None:
        if topic == "signal/smk-1" and orjson.loads(payload)["state"] == "alarm":
            await gw.send("confirm/inc-1", {"incident": "inc-1", "zone": "z", "x": 0, "y": 0,
                                            "floor": 1, "deadline": time.time() + 30})

    async with FakeGateway(mosquitto, "t-fast", ask) as gw:
        report = await run_scenario(scenario, mosquitto.url, time_scale=0.05)
    times = [s.t for s in report.signals]
    for t, at in zip(times, (0.0, 0.15, 0.3), strict=True):
        assert at - 0.01 <= t <= at + 0.12, times
    assert 0.4 <= report.elapsed_s <= 0.9 and report.stopped_by == "duration"
    assert report.time_scale == 0.05
    (req,), (reply,) = report.confirm_requests, report.replies
    assert 0.18 <= reply.t - req.t <= 0.4
    assert gw.got("confirm/inc-1/reply") == [{"decision": "confirm", "by": "w-1"}]
    with pytest.raises(ValueError, match="time_scale"):
        await run_scenario(scenario, mosquitto.url, time_scale=0)


async def test_unreachable_broker_raises_mqtt_error() -> None:
    scenario = parse_scenario("name: x\nsite: x\nduration_s: 1\n")
    with pytest.raises(aiomqtt.MqttError):
        await run_scenario(scenario, f"mqtt://127.0.0.1:{free_port()}")


def test_the_drill_example_in_the_docs_is_a_valid_scenario() -> None:
    """docs/drills.md shows a whole scenario file: it must stay one the simulator takes."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "drills.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    sc = parse_scenario(example, "docs/drills.md")
    assert sc.site == "taibai-demo" and sc.until_closed and len(sc.events) == 2
    anywhere = sc.responders["w-07"].confirm_rule("b1-1f-lobby")
    assert anywhere is not None and (anywhere.decision, anywhere.cause) == ("dismiss", "unwanted")
    assert sc.responders["guard-1"].page_rule("b1-2f-flats").never  # type: ignore[union-attr]
