"""Simulated Frigate NVR: tracked-object events for a camera, the far end of ``drivers.frigate``.

Frigate publishes a tracked object on ``<prefix>/events`` as ``new`` when it stops being a
possible false positive, ``update`` when its score, box or zones change, and ``end``
when it is gone; each message holds the object ``before`` and ``after`` the change. Its
audio detector says ``ON``/``OFF`` on ``<prefix>/<camera>/audio/<label>``, and
``<prefix>/available`` is ``online`` while it runs (``offline`` is its last will).

The sequences here are those a fire feed has to get right:

- ``person``: an ordinary object, which only shows the camera is alive;
- ``fire``: a fire in the left part of the image, growing (new → update → end);
- ``false_positive``: smoke that Frigate first believes and then marks false positive;
- ``audio``: a smoke alarm heard (``fire_alarm``), on the audio topic or as an event;
- ``offline``: Frigate stops and starts again.

Topics and labels come from ``drivers.frigate``; timing, publishing and the shared
part of the command line from ``firmware_sim.zigbee_devices``. This module never
imports ``gateway``.

    python -m firmware_sim.frigate_events --mqtt mqtt://127.0.0.1:1883 --camera cam-01
"""

from __future__ import annotations

import argparse
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from drivers.frigate import AUDIO_OFF, AUDIO_ON, OFFLINE, ONLINE
from firmware_sim.zigbee_devices import Message, Step, cli_parser, publish

SEQUENCES = ("person", "fire", "false_positive", "audio", "offline")
DEFAULT_SEQUENCES = ("person", "fire", "false_positive", "audio")

Box = tuple[int, int, int, int]
Make = Callable[[float], list[Message]]  # what a step does at a given unix time


@dataclass(slots=True)
class TrackedObject:
    """One object Frigate tracks; ``publish`` gives the event message of its latest change."""

    camera: SimCamera
    id: str
    label: str
    start_time: float
    box: Box
    score: float
    zones: list[str]
    false_positive: bool = False
    top_score: float = 0.0
    entered: list[str] = field(default_factory=list)
    end_time: float | None = None
    last: dict[str, Any] | None = field(default=None, repr=False)  # the previous ``after``

    def _view(self, now: float) -> dict[str, Any]:
        """The object as Frigate describes it (the fields of its MQTT event payload)."""
        x1, y1, x2, y2 = self.box
        w, h = max(x2 - x1, 1), max(y2 - y1, 1)
        cw, ch = self.camera.width, self.camera.height
        region = [max(x1 - 32, 0), max(y1 - 32, 0), min(x2 + 32, cw), min(y2 + 32, ch)]
        return {
            "id": self.id, "camera": self.camera.name, "frame_time": now,
            "snapshot_time": now, "label": self.label, "sub_label": None,
            "top_score": self.top_score, "false_positive": self.false_positive,
            "start_time": self.start_time, "end_time": self.end_time, "score": self.score,
            "box": list(self.box), "area": w * h, "ratio": round(w / h, 6), "region": region,
            "current_zones": list(self.zones), "entered_zones": list(self.entered),
            "thumbnail": None, "has_snapshot": True, "has_clip": True, "stationary": False,
            "motionless_count": 0, "position_changes": 0, "attributes": {},
            "current_attributes": [],
        }

    def change(self, *, box: Box | None = None, score: float | None = None,
               zones: list[str] | None = None, false_positive: bool | None = None) -> None:
        """The object moved, grew, scored differently, changed zone or was re-judged."""
        if box is not None:
            self.box = box
        if score is not None:
            self.score = score
        if zones is not None:
            self.zones = zones
        if false_positive is not None:
            self.false_positive = false_positive
        self.top_score = max(self.top_score, self.score)
        self.entered += [z for z in self.zones if z not in self.entered]

    def publish(self, kind: str, now: float) -> Message:
        """The ``frigate/events`` message of type ``kind`` (new, update, end) at ``now``."""
        if kind == "end":
            self.end_time = now
        after = self._view(now)
        before = self.last if self.last is not None else after
        self.last = after
        body = orjson.dumps({"type": kind, "before": before, "after": after})
        return Message(f"{self.camera.prefix}/events", body)


@dataclass(slots=True)
class SimCamera:
    """A camera as Frigate sees it, detect resolution ``width`` × ``height`` pixels."""

    name: str
    prefix: str = "frigate"
    width: int = 1280
    height: int = 720
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def track(self, now: float, label: str, box: Box, score: float,
              zones: Iterable[str] = ()) -> TrackedObject:
        """A new tracked object; its id looks like Frigate's (start time and a suffix)."""
        suffix = "".join(self.rng.choices(string.ascii_lowercase + string.digits, k=6))
        obj = TrackedObject(self, f"{now:.6f}-{suffix}", label, now, box, score, list(zones))
        obj.change()
        return obj

    def audio(self, label: str, on: bool) -> Message:
        """The audio detector hears ``label`` (ON) or stopped hearing it (OFF)."""
        return Message(f"{self.prefix}/{self.name}/audio/{label}",
                       (AUDIO_ON if on else AUDIO_OFF).encode())

    def available(self, online: bool) -> Message:
        """Frigate's retained availability (one per Frigate, not per camera)."""
        return Message(f"{self.prefix}/available", (ONLINE if online else OFFLINE).encode(),
                       retain=True)


def script(camera: SimCamera, sequences: Iterable[str] = DEFAULT_SEQUENCES, *,
           audio_via: str = "topic") -> list[Step]:
    """Steps for the chosen sequences, one after the other (seconds before time scaling).

    ``audio_via``: ``topic`` sends the audio detection as Frigate does
    (``<camera>/audio/fire_alarm`` ON/OFF); ``events`` sends it as a ``fire_alarm``
    tracked object instead.
    """
    if audio_via not in ("topic", "events"):
        raise ValueError(f"audio_via must be topic or events, got {audio_via!r}")
    steps: list[Step] = []
    held: dict[str, TrackedObject] = {}
    t = 0.0

    def at(dt: float, note: str, make: Make) -> None:
        steps.append(Step(t + dt, make, note))

    def new(key: str, label: str, box: Box, score: float, zones: list[str]) -> Make:
        def make(now: float) -> list[Message]:
            held[key] = camera.track(now, label, box, score, zones)
            return [held[key].publish("new", now)]
        return make

    def update(key: str, **change: Any) -> Make:
        def make(now: float) -> list[Message]:
            held[key].change(**change)
            return [held[key].publish("update", now)]
        return make

    def end(key: str) -> Make:
        return lambda now: [held[key].publish("end", now)]

    w, h = camera.width, camera.height
    at(0.0, "frigate online", lambda _now: [camera.available(True)])
    t = 0.2
    for seq in sequences:
        if seq not in SEQUENCES:
            raise ValueError(f"unknown sequence {seq!r}; one of {', '.join(SEQUENCES)}")
        if seq == "person":
            box = (w // 2, h // 3, w // 2 + w // 10, h - 10)
            at(0.0, "person walks in", new("person", "person", box, 0.81, ["corridor"]))
            at(0.4, "person leaves", end("person"))
            t += 0.8
        elif seq == "fire":
            # centred at a quarter of the width: fov/4 counter-clockwise of the axis
            small = (w // 4 - w // 20, h // 2, w // 4 + w // 20, h // 2 + h // 8)
            large = (w // 4 - w // 10, h // 3, w // 4 + w // 10, h // 2 + h // 6)
            at(0.0, "fire seen", new("fire", "fire", small, 0.72, ["kitchen"]))
            at(0.5, "fire grows", update("fire", box=large, score=0.88,
                                         zones=["kitchen", "corridor"]))
            at(1.5, "fire out of sight", end("fire"))
            t += 2.0
        elif seq == "false_positive":
            box = (3 * w // 4, h // 4, 3 * w // 4 + w // 12, h // 4 + h // 10)
            at(0.0, "smoke seen", new("fp", "smoke", box, 0.66, []))
            at(0.3, "smoke judged false positive", update("fp", false_positive=True,
                                                          score=0.4))
            at(0.6, "smoke gone", end("fp"))
            t += 1.0
        elif seq == "audio":
            if audio_via == "topic":
                at(0.0, "fire alarm heard", lambda _now: [camera.audio("fire_alarm", True)])
                at(0.5, "fire alarm silent", lambda _now: [camera.audio("fire_alarm", False)])
            else:
                at(0.0, "fire alarm heard", new("audio", "fire_alarm", (0, 0, w, h), 0.7, []))
                at(0.5, "fire alarm silent", end("audio"))
            t += 1.0
        elif seq == "offline":
            at(0.0, "frigate stops", lambda _now: [camera.available(False)])
            at(0.3, "frigate starts", lambda _now: [camera.available(True)])
            t += 0.6
    steps.sort(key=lambda s: s.at)
    return steps


def _options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--base-topic", default="frigate", help="Frigate's mqtt.topic_prefix")
    ap.add_argument("--camera", default="cam-01", help="Frigate camera name")
    ap.add_argument("--width", type=int, default=1280, help="detect width in pixels")
    ap.add_argument("--height", type=int, default=720, help="detect height in pixels")
    ap.add_argument("--sequence", action="append", choices=SEQUENCES, default=None,
                    help=f"repeatable; default: {' '.join(DEFAULT_SEQUENCES)}")
    ap.add_argument("--audio-via", choices=("topic", "events"), default="topic")


def main(argv: list[str] | None = None) -> int:
    """Command line: publish the chosen sequences for one camera, then exit."""
    ap = cli_parser("python -m firmware_sim.frigate_events",
                    "Simulated Frigate events for one camera: fire, false positive, audio "
                    "fire alarm, availability.", _options)
    args = ap.parse_args(argv)
    if args.width < 1 or args.height < 1:
        ap.error("--width and --height must be positive")
    camera = SimCamera(args.camera, args.base_topic.rstrip("/"), args.width, args.height)
    return publish(args, lambda: script(camera, args.sequence or DEFAULT_SEQUENCES,
                                        audio_via=args.audio_via), name="frigate")


if __name__ == "__main__":
    raise SystemExit(main())
