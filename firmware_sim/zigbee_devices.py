"""Simulated Zigbee devices behind a Zigbee2MQTT bridge: the far end of ``drivers.zigbee2mqtt``.

Zigbee2MQTT publishes a device's whole state as one JSON object whenever any attribute
changes, and its reachability on a separate, retained ``availability`` topic. The
simulator does the same, through the codec's own ``encode_state``/``encode_availability``,
so what it sends is what the feed reads. Devices:

- a smoke detector with battery and tamper switch (``smoke_detector``);
- a *stuck* smoke detector that keeps saying ``smoke: true`` after it alarmed, as some
  real ones do (``stuck_detector``): what ``clear_after_s`` in the site file is for;
- a temperature sensor (``temperature_sensor``).

Faults a site meets: a garbage payload on a device's topic, a device going offline and
back, a device going silent (it publishes nothing more), tamper, low battery, and a
stranger (a friendly name the site does not know).

The network is sans-IO (``ZigbeeNetwork`` returns messages); ``play`` publishes a script
of timed steps with aiomqtt. ``firmware_sim.frigate_events`` reuses ``Step``, ``run``
and the command line's shared part (``cli_parser``, ``publish``). This module never
imports ``gateway``.

    python -m firmware_sim.zigbee_devices --mqtt mqtt://127.0.0.1:1883 --smoke kitchen_smoke
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiomqtt

from drivers.zigbee2mqtt import (
    availability_topic,
    encode_availability,
    encode_state,
    state_topic,
)
from firmware_sim.runner import parse_mqtt_url

FAULTS = ("garbage", "offline", "silent", "tamper", "battery_low", "stranger")
GARBAGE = b'{"smoke": tru'  # a state message cut short: what a flaky bridge can deliver
STRANGER = "unknown_plug"  # a friendly name no site file names


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish: topic, payload and whether the broker keeps it (retained)."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """At ``at`` seconds into the script, call ``make(unix_now)`` and publish what it returns.

    The messages are made when due, not when the script is written, so timestamps in
    them (Frigate's ``start_time``) are real.
    """

    at: float
    make: Callable[[float], list[Message]]
    note: str = ""


@dataclass(slots=True)
class SimDevice:
    """One Zigbee device: its full exposed state, as Zigbee2MQTT would republish it."""

    name: str
    state: dict[str, Any]
    stuck: bool = False  # once smoke is true it stays true, whatever the device is told
    silent: bool = False  # publishes nothing any more (dead battery, out of range)

    def apply(self, changes: dict[str, Any]) -> None:
        """Change attributes; a stuck detector ignores being told its smoke is gone."""
        if self.stuck and self.state.get("smoke") is True and changes.get("smoke") is False:
            changes = {k: v for k, v in changes.items() if k != "smoke"}
        self.state.update(changes)


def smoke_detector(name: str, *, battery: int = 97) -> SimDevice:
    """A battery smoke detector with a tamper switch (the attributes of common models)."""
    return SimDevice(name, {"smoke": False, "battery": battery, "battery_low": False,
                            "tamper": False, "linkquality": 120})


def stuck_detector(name: str, *, battery: int = 81) -> SimDevice:
    """A smoke detector that latches ``smoke: true`` after it alarmed."""
    device = smoke_detector(name, battery=battery)
    device.stuck = True
    return device


def temperature_sensor(name: str, *, temperature: float = 22.5) -> SimDevice:
    """A temperature and humidity sensor."""
    return SimDevice(name, {"temperature": temperature, "humidity": 45.0, "battery": 88,
                            "linkquality": 96})


@dataclass(slots=True)
class ZigbeeNetwork:
    """The devices behind one Zigbee2MQTT bridge; every method returns what it publishes."""

    base_topic: str = "zigbee2mqtt"
    legacy_availability: bool = False
    devices: dict[str, SimDevice] = field(default_factory=dict)

    def add(self, device: SimDevice) -> SimDevice:
        self.devices[device.name] = device
        return device

    def _state(self, device: SimDevice) -> list[Message]:
        if device.silent:
            return []
        return [Message(state_topic(self.base_topic, device.name), encode_state(device.state))]

    def _availability(self, device: SimDevice, online: bool) -> list[Message]:
        if device.silent:
            return []
        payload = encode_availability(online, legacy=self.legacy_availability)
        return [Message(availability_topic(self.base_topic, device.name), payload, True)]

    def announce(self, name: str) -> list[Message]:
        """The device joins: reachable, then its current state."""
        device = self.devices[name]
        return self._availability(device, True) + self._state(device)

    def update(self, name: str, **changes: Any) -> list[Message]:
        """Attributes change; Zigbee2MQTT republishes the whole state."""
        device = self.devices[name]
        device.apply(changes)
        return self._state(device)

    def availability(self, name: str, online: bool) -> list[Message]:
        """Zigbee2MQTT decides the device is (un)reachable."""
        return self._availability(self.devices[name], online)

    def garbage(self, name: str, payload: bytes = GARBAGE) -> list[Message]:
        """A broken payload on the device's state topic."""
        return [Message(state_topic(self.base_topic, name), payload)]

    def silence(self, name: str) -> list[Message]:
        """The device stops talking; nothing is published now or later."""
        self.devices[name].silent = True
        return []

    def stranger(self) -> list[Message]:
        """A device the site does not know reports its state."""
        return [Message(state_topic(self.base_topic, STRANGER),
                        encode_state({"state": "ON", "power": 12.5}))]


def script(
    net: ZigbeeNetwork,
    *,
    smoke: Sequence[str] = (),
    stuck: Sequence[str] = (),
    temperature: Sequence[str] = (),
    faults: Iterable[str] = (),
) -> list[Step]:
    """The standard drill: devices join, alarm, report again while alarmed, and clear.

    Seconds (before time scaling): 0 join; 1 alarm / warm-up; 2 a report during the alarm
    (stuck detectors are told to clear here and do not); 3 clear; faults between 1.5 and
    4 on the first device. Adds the devices to ``net``.
    """
    steps: list[Step] = []

    def at(t: float, note: str, make: Callable[[], list[Message]]) -> None:
        steps.append(Step(t, lambda _now: make(), note))

    for names, make in ((smoke, smoke_detector), (stuck, stuck_detector),
                        (temperature, temperature_sensor)):
        for name in names:
            if name in net.devices:
                raise ValueError(f"device {name!r} named twice")
            net.add(make(name))
    for name in net.devices:
        at(0.0, f"{name} joins", lambda n=name: net.announce(n))
    for name in [*smoke, *stuck]:
        at(1.0, f"{name} smoke", lambda n=name: net.update(n, smoke=True))
    for name in smoke:
        at(2.0, f"{name} reports battery", lambda n=name: net.update(n, battery=96))
        at(3.0, f"{name} clears", lambda n=name: net.update(n, smoke=False))
    for name in stuck:
        at(2.0, f"{name} told to clear", lambda n=name: net.update(n, smoke=False))
        at(3.0, f"{name} reports battery", lambda n=name: net.update(n, battery=80))
    for name in temperature:
        for t, value in ((1.0, 31.5), (2.0, 58.0), (3.0, 24.0)):
            at(t, f"{name} {value} °C", lambda n=name, v=value: net.update(n, temperature=v))

    first = next(iter(net.devices), None)
    for fault in faults:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        if fault == "stranger":
            at(1.5, "a stranger reports", net.stranger)
            continue
        if first is None:
            raise ValueError(f"fault {fault!r} needs at least one device")
        if fault == "garbage":
            at(1.5, f"{first} garbage", lambda: net.garbage(first))
        elif fault == "tamper":
            at(1.5, f"{first} tampered", lambda: net.update(first, tamper=True))
            at(2.5, f"{first} closed", lambda: net.update(first, tamper=False))
        elif fault == "battery_low":
            at(2.5, f"{first} battery low", lambda: net.update(first, battery=9,
                                                               battery_low=True))
        elif fault == "offline":
            at(3.5, f"{first} offline", lambda: net.availability(first, False))
            at(4.0, f"{first} online", lambda: net.availability(first, True))
        elif fault == "silent":
            at(3.5, f"{first} goes silent", lambda: net.silence(first))
    steps.sort(key=lambda s: s.at)  # stable: same-time steps keep the order written
    return steps


async def play(
    client: aiomqtt.Client,
    steps: Sequence[Step],
    *,
    time_scale: float = 1.0,
    out: TextIO | None = None,
) -> int:
    """Publish every step's messages (QoS 1) at ``step.at * time_scale``; return the count.

    Steps run in time order one after the other, so a slow broker delays later messages
    instead of reordering them. With ``out``, each publish is printed as a line.
    """
    if not (math.isfinite(time_scale) and time_scale >= 0):
        raise ValueError(f"time_scale must be a number >= 0, got {time_scale!r}")
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    for step in sorted(steps, key=lambda s: s.at):
        delay = start + step.at * time_scale - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        for msg in step.make(time.time()):
            await client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
            sent += 1
            if out is not None:
                text = msg.payload.decode("utf-8", "replace")
                print(f"{loop.time() - start:7.2f}s {msg.topic} {text}", file=out, flush=True)
    return sent


async def run(mqtt_url: str, steps: Sequence[Step], *, name: str, time_scale: float = 1.0,
              out: TextIO | None = None) -> int:
    """Connect to the broker at ``mqtt_url``, play ``steps``, disconnect; return the count."""
    broker = parse_mqtt_url(mqtt_url)
    async with aiomqtt.Client(
        broker.host, broker.port, username=broker.username, password=broker.password,
        identifier=f"firegrid-sim-{name}-{uuid.uuid4().hex[:8]}",
    ) as client:
        return await play(client, steps, time_scale=time_scale, out=out)


def cli_parser(prog: str, description: str,
               add_options: Callable[[argparse.ArgumentParser], None]
               ) -> argparse.ArgumentParser:
    """The command line of a simulator that plays a script to a broker: ``--mqtt``, the
    simulator's own options (``add_options``), then ``--time-scale`` and ``--quiet``."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", help="broker URL")
    add_options(ap)
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply every scripted time (0.1 runs ten times faster)")
    ap.add_argument("--quiet", action="store_true", help="do not print what is published")
    return ap


def publish(args: argparse.Namespace, make_steps: Callable[[], Sequence[Step]], *,
            name: str) -> int:
    """Make the script and play it as the command line (``cli_parser``) says; the exit
    status: 0, 2 for a bad script or URL, 3 if the broker fails, 130 on Ctrl-C."""
    try:
        steps = make_steps()
        sent = asyncio.run(run(args.mqtt, steps, name=name, time_scale=args.time_scale,
                               out=None if args.quiet else sys.stdout))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except aiomqtt.MqttError as exc:
        print(f"error: broker {args.mqtt}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    if not args.quiet:
        print(f"{sent} messages published", file=sys.stderr)
    return 0


def _options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--base-topic", default="zigbee2mqtt")
    ap.add_argument("--smoke", action="append", default=[], metavar="NAME",
                    help="a smoke detector (repeatable)")
    ap.add_argument("--stuck", action="append", default=[], metavar="NAME",
                    help="a smoke detector that latches smoke: true (repeatable)")
    ap.add_argument("--temperature", action="append", default=[], metavar="NAME",
                    help="a temperature sensor (repeatable)")
    ap.add_argument("--fault", action="append", default=[], choices=FAULTS,
                    help="a fault on the first device, or an unknown device (repeatable)")
    ap.add_argument("--legacy-availability", action="store_true",
                    help="plain online/offline instead of {\"state\": ...}")


def main(argv: list[str] | None = None) -> int:
    """Command line: publish the standard drill for the named devices, then exit."""
    ap = cli_parser("python -m firmware_sim.zigbee_devices",
                    "Simulated Zigbee detectors behind Zigbee2MQTT: join, alarm, clear, "
                    "with optional faults.", _options)
    args = ap.parse_args(argv)
    if not (args.smoke or args.stuck or args.temperature):
        ap.error("name at least one device: --smoke, --stuck or --temperature")
    net = ZigbeeNetwork(args.base_topic, args.legacy_availability)
    return publish(args, lambda: script(net, smoke=args.smoke, stuck=args.stuck,
                                        temperature=args.temperature, faults=args.fault),
                   name="z2m")


if __name__ == "__main__":
    raise SystemExit(main())
