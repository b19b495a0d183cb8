"""Simulated native detectors: publish a scenario's device events at their scripted times.

They are the far end of ``drivers.native`` and so use its ``encode``: what the simulator
sends is by construction what a conforming device sends, and a change in the codec
shows up on both sides at once. ``raw`` events bypass the codec on purpose, to feed the
gateway garbage it must drop without stopping (CONTRACT §3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt

from drivers.native import encode
from drivers.signal import Signal
from firmware_sim.scenario import DeviceEvent

Emit = Callable[[str, dict[str, Any]], None]
"""Reports what the simulator did or saw: ``emit(kind, detail)``; the runner timestamps it."""


def stopwatch() -> Callable[[], float]:
    """A clock of real seconds since this call, on the event loop's monotonic time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    return lambda: loop.time() - start


def event_topic(prefix: str, event: DeviceEvent) -> str:
    """Full topic of an event: ``<prefix>signal/<device>`` unless the event overrides it."""
    return prefix + (event.topic if event.topic is not None else f"signal/{event.device}")


def event_payload(event: DeviceEvent, ts: float | None = None) -> bytes:
    """The bytes a device sends for ``event``: the native encoding, or ``raw`` verbatim.

    ``ts`` is the device's own clock (unix seconds), sent with an alarm on the native
    topic as a conforming device does: the gateway names it in its receipt and records
    it as ``device_ts`` (docs/mqtt.md, "Alarm receipts").
    """
    if event.raw is not None:
        return event.raw.encode("utf-8")
    assert event.state is not None  # guaranteed by DeviceEvent's validator
    return encode(
        Signal(
            device=event.device,
            state=event.state,
            kind=event.kind,
            value=event.value,
            bearing_deg=event.bearing_deg,
            ts=ts if event.state == "alarm" and event.topic is None else None,
        )
    )


async def play_events(
    client: aiomqtt.Client,
    prefix: str,
    events: Sequence[DeviceEvent],
    *,
    now: Callable[[], float] | None = None,
    time_scale: float = 1.0,
    emit: Emit | None = None,
) -> None:
    """Publish each event (QoS 1) when ``now()`` reaches ``event.at * time_scale``.

    ``now`` gives real seconds since the scenario started (it defaults to the moment of
    this call), so the devices stay on the same clock as the responders that run beside
    them. Events are sent in time order, file order breaking ties, one after the other:
    a slow broker delays later events instead of reordering them.
    """
    clock = now if now is not None else stopwatch()
    for event in sorted(events, key=lambda e: e.at):  # sorted() is stable
        delay = event.at * time_scale - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        topic, payload = event_topic(prefix, event), event_payload(event, ts=time.time())
        await client.publish(topic, payload, qos=1)
        if emit is not None:
            emit("signal", {
                "device": event.device,
                "at": event.at,
                "topic": topic,
                "payload": payload.decode("utf-8", "replace"),
            })
