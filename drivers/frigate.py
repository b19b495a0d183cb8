"""Codec for Frigate NVR: ``<base>/events`` tracked objects into fire signals with a bearing.

Frigate tracks objects per camera and publishes a JSON message when one becomes a true
positive (``new``), when it changes in a way worth telling (``update``: better score,
new zone) and when it is gone (``end``). A site running a fire or smoke model (or
Frigate's audio detector, whose ``fire_alarm`` label hears a sounder) makes its cameras
detectors: this codec turns the first message of each such tracked object into one
alarm, and the end of the last one on a camera into a clear. The object's box becomes a
bearing from the camera, which the gateway intersects with other cameras' bearings and
the floor plan to place the fire.

Bearing: angles are degrees counter-clockwise from the site's +x axis (CONTRACT §2).
A camera looking along ``azimuth_deg`` with a horizontal field of view ``fov_deg`` sees
the left edge of its image at ``azimuth + fov/2`` and the right edge at
``azimuth - fov/2``; the box centre is placed linearly between them (a pinhole lens is
not linear in angle, but the error is small next to a box's own width and the camera's
mounting error). ``frame_width`` is Frigate's detect width, in whose pixels boxes come.

Frigate's audio detector announces a sound on ``<base>/<camera>/audio/<label>`` as
``ON``/``OFF``; ``fire_alarm`` there is handled like a tracked object without a box.
``<base>/available`` (``online``/``offline``, Frigate's last will) becomes an
``offline`` trouble on every configured camera, because none of them can report while
Frigate is down.

Sans-IO and defensive like the other feeds: nothing that arrives raises; bad JSON,
wrong types, unknown cameras and oversize payloads become ``Garbage`` naming the topic.
A bad descriptive field (box, score, zones, start time) is reported as Garbage and left
out, and the alarm still goes: it must not be lost to a malformed decoration. State is
bounded: only configured cameras, at most ``MAX_ACTIVE`` open events each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from drivers.feed import FeedEvent, Garbage, Seen, Trouble
from drivers.native import _show
from drivers.signal import Signal

MAX_PAYLOAD = 65536  # a real event message is 1-3 KiB; leave room for many zones/attributes
MAX_WHERE = 160  # characters of a topic kept in a Garbage event
MAX_ACTIVE = 16  # open fire events remembered per camera; the oldest is forgotten beyond
MAX_ID = 128  # characters of a Frigate event id (they look like "1607123955.475377-mxklsc")
MAX_ZONES = 16  # zones kept in the signal's metadata
MAX_ZONE_NAME = 64
MAX_PIXELS = 100_000  # a box coordinate beyond this is not from any real detect resolution
TS_RANGE = (0.0, 4102444800.0)  # unix seconds up to 2100-01-01, as the native feed takes

FIRE_LABELS = frozenset({"fire", "smoke", "fire_alarm"})
"""Labels that mean fire: ``fire``/``smoke`` from custom object models, ``fire_alarm``
from Frigate's audio model (a smoke alarm sounding within earshot)."""

AUDIO_LABELS = frozenset({"fire_alarm"})
"""Labels heard, not seen: their box (if any) says nothing about direction."""

EVENT_TYPES = ("new", "update", "end")
ONLINE, OFFLINE = "online", "offline"
AUDIO_ON, AUDIO_OFF = "ON", "OFF"
_AUDIO_EVENT = "audio"  # the pseudo event id of an audio detection from the audio topic


@dataclass(frozen=True, slots=True)
class CameraView:
    """Where a camera looks, for turning a box into a bearing.

    ``azimuth_deg``: direction of the optical axis, CCW from the site's +x axis.
    ``fov_deg``: horizontal field of view. ``frame_width``: Frigate's ``detect.width``.
    Without azimuth or field of view the camera still alarms, with no bearing.
    """

    azimuth_deg: float | None = None
    fov_deg: float | None = None
    frame_width: int = 1280

    def __post_init__(self) -> None:
        a, f, w = self.azimuth_deg, self.fov_deg, self.frame_width
        if a is not None and not _is_number(a):
            raise ValueError(f"azimuth_deg must be a finite number, got {a!r}")
        if f is not None and not (_is_number(f) and 0 < f <= 360):
            raise ValueError(f"fov_deg must be in (0, 360], got {f!r}")
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"frame_width must be a positive number of pixels, got {w!r}")

    def bearing(self, box: tuple[float, float, float, float]) -> float | None:
        """Bearing towards the centre of ``box`` (pixels), in [0, 360); None if unknown.

        A centre outside the frame (a ``frame_width`` smaller than Frigate's detect width)
        is held at the frame's edge, so the bearing never leaves the field of view.
        """
        if self.azimuth_deg is None or self.fov_deg is None:
            return None
        cx = min(max((box[0] + box[2]) / 2.0, 0.0), float(self.frame_width))
        return normalise(self.azimuth_deg + self.fov_deg * (0.5 - cx / self.frame_width))


def normalise(angle_deg: float) -> float:
    """An angle in [0, 360). ``-1e-15 % 360`` is 360.0 in floating point: folded to 0."""
    a = angle_deg % 360.0
    return 0.0 if a >= 360.0 else a


def _is_number(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _where(topic: str) -> str:
    return topic if len(topic) <= MAX_WHERE else topic[:MAX_WHERE] + "…"


def _garbage(topic: str, why: str, nbytes: int) -> Garbage:
    where = _where(topic)
    return Garbage(f"{where}: {why}", where, nbytes)


def _pixels(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


class Frigate:
    """One Frigate instance (one MQTT ``topic_prefix``) and the cameras the site uses.

    ``cameras`` maps Frigate's camera name (the device's ``ref``) to its view. Events from
    other cameras are counted as Garbage.
    """

    def __init__(self, base_topic: str, cameras: Mapping[str, CameraView]) -> None:
        base = base_topic.rstrip("/") if isinstance(base_topic, str) else ""
        if not base or "+" in base or "#" in base:
            raise ValueError(f"base_topic {base_topic!r}: must be a topic without + or #")
        for name in cameras:
            if not isinstance(name, str) or not name or any(c in name for c in "/+#"):
                raise ValueError(f"camera {name!r}: must be a non-empty name without / + #")
        self.base_topic = base
        self._cameras = dict(cameras)
        self._events_topic = f"{base}/events"
        self._available_topic = f"{base}/available"
        # camera -> open fire event ids, oldest first (a dict keeps insertion order)
        self._active: dict[str, dict[str, None]] = {name: {} for name in cameras}
        self._available: bool | None = None

    def topics(self) -> list[str]:
        """MQTT filters to subscribe: events, Frigate's availability, the audio fire alarm."""
        audio = [f"{self.base_topic}/+/audio/{label}" for label in sorted(AUDIO_LABELS)]
        return [self._events_topic, self._available_topic, *audio]

    # ------------------------------------------------------------- input

    def receive(self, topic: str, payload: bytes, now_s: float) -> list[FeedEvent]:
        """Turn one MQTT message into feed events; never raises on what arrives.

        ``now_s`` is unused (Frigate has no timed behaviour here); it is taken so that all
        feed codecs are driven the same way.
        """
        del now_s
        if not isinstance(topic, str):
            return [Garbage(f"topic is a {type(topic).__name__}, not text")]
        if not isinstance(payload, bytes | bytearray | memoryview):
            return [_garbage(topic, f"payload is a {type(payload).__name__}", 0)]
        data = bytes(payload)
        if len(data) > MAX_PAYLOAD:
            return [_garbage(topic, f"payload of {len(data)} bytes is over {MAX_PAYLOAD}",
                             len(data))]
        if not data:
            return []  # a retained topic being cleared: nothing happened
        if topic == self._events_topic:
            return self._event(topic, data)
        if topic == self._available_topic:
            return self._availability(topic, data)
        prefix = self.base_topic + "/"
        if topic.startswith(prefix):
            camera, _, rest = topic[len(prefix):].partition("/")
            if rest.startswith("audio/") and rest[len("audio/"):] in AUDIO_LABELS:
                return self._audio(topic, camera, rest[len("audio/"):], data)
        return [_garbage(topic, "not a Frigate topic this feed reads", len(data))]

    def tick(self, now_s: float) -> list[FeedEvent]:
        """Nothing is timed in this feed; here so every feed is driven alike."""
        del now_s
        return []

    def next_deadline(self) -> float | None:
        """Always None: see ``tick``."""
        return None

    # ------------------------------------------------------------- events

    def _event(self, topic: str, data: bytes) -> list[FeedEvent]:
        n = len(data)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return [_garbage(topic, f"not JSON: {exc}", n)]
        if not isinstance(obj, dict):
            return [_garbage(topic, f"expected a JSON object, got {type(obj).__name__}", n)]
        kind = obj.get("type")
        if kind not in EVENT_TYPES:
            return [_garbage(topic, f"'type' must be new, update or end, got {_show(kind)}", n)]
        after = obj.get("after")
        if not isinstance(after, dict):
            return [_garbage(topic, f"'after' must be an object, got {_show(after)}", n)]
        camera, label, event_id = after.get("camera"), after.get("label"), after.get("id")
        fp = after.get("false_positive", False)
        for key, value, ok in (
            ("camera", camera, isinstance(camera, str)),
            ("label", label, isinstance(label, str)),
            ("id", event_id, isinstance(event_id, str) and 0 < len(event_id) <= MAX_ID),
            ("false_positive", fp, fp is None or isinstance(fp, bool)),
        ):
            if not ok:
                return [_garbage(topic, f"'after.{key}' is not valid: {_show(value)}", n)]
        assert isinstance(camera, str) and isinstance(label, str) and isinstance(event_id, str)
        if camera not in self._cameras:
            return [_garbage(topic, f"unknown camera {_show(camera)}", n)]
        seen: list[FeedEvent] = [Seen(camera)]
        if label not in FIRE_LABELS:
            return seen  # a person or a car: the camera is alive, nothing more
        active = self._active[camera]
        if fp:
            # Frigate may still call an object a false positive; if it turns one we
            # already signalled into a false positive, take the alarm back.
            if event_id in active:
                del active[event_id]
                if not active:
                    return [Signal(camera, "clear"), *seen]
            return seen
        if kind == "end":
            active.pop(event_id, None)
            if active:
                return seen
            bad: list[FeedEvent] = []
            ts = self._number(after, "end_time", TS_RANGE, topic, n, bad)
            return [Signal(camera, "clear", ts=ts), *seen, *bad]
        if event_id in active:
            return seen  # an update of an event already signalled: no new alarm
        if len(active) >= MAX_ACTIVE:
            del active[next(iter(active))]
        active[event_id] = None
        return self._alarm(camera, label, event_id, after, topic, n)

    def _alarm(self, camera: str, label: str, event_id: str, after: dict[str, Any],
               topic: str, n: int) -> list[FeedEvent]:
        """The one alarm of a fire event: bearing from its box, metadata for the audit."""
        bad: list[FeedEvent] = []
        meta: list[tuple[str, object]] = []
        box = self._box(after, topic, n, bad)
        if box is not None:
            meta.append(("box", ",".join(_pixels(v) for v in box)))
        score = self._number(after, "top_score", (0.0, 1.0), topic, n, bad)
        if score is None:
            score = self._number(after, "score", (0.0, 1.0), topic, n, bad)
        if score is not None:
            meta.append(("top_score", score))
        zones = self._zones(after, topic, n, bad)
        if zones is not None:
            meta.append(("zones", zones))
        meta += [("label", label), ("event", event_id)]
        bearing = None
        if box is not None and label not in AUDIO_LABELS:
            bearing = self._cameras[camera].bearing(box)
        ts = self._number(after, "start_time", TS_RANGE, topic, n, bad)
        sig = Signal(camera, "alarm", ts=ts, bearing_deg=bearing, meta=tuple(meta))
        return [sig, Seen(camera), *bad]

    @staticmethod
    def _number(obj: dict[str, Any], key: str, bounds: tuple[float, float], topic: str, n: int,
                bad: list[FeedEvent]) -> float | None:
        v = obj.get(key)
        if v is None:
            return None
        if _is_number(v) and bounds[0] <= v <= bounds[1]:
            return float(v)
        bad.append(_garbage(topic, f"'after.{key}' must be a number in "
                                   f"[{bounds[0]:g}, {bounds[1]:g}], got {_show(v)}", n))
        return None

    @staticmethod
    def _box(obj: dict[str, Any], topic: str, n: int,
             bad: list[FeedEvent]) -> tuple[float, float, float, float] | None:
        v = obj.get("box")
        if v is None:
            return None
        if (isinstance(v, list) and len(v) == 4
                and all(_is_number(c) and 0 <= c <= MAX_PIXELS for c in v)
                and v[0] <= v[2] and v[1] <= v[3]):
            return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))
        bad.append(_garbage(topic, f"'after.box' must be [x_min, y_min, x_max, y_max] in "
                                   f"pixels, got {_show(v)}", n))
        return None

    @staticmethod
    def _zones(obj: dict[str, Any], topic: str, n: int, bad: list[FeedEvent]) -> str | None:
        v = obj.get("current_zones")
        if v is None:
            return None
        if isinstance(v, list) and all(isinstance(z, str) and 0 < len(z) <= MAX_ZONE_NAME
                                       and "," not in z for z in v):
            return ",".join(v[:MAX_ZONES])
        bad.append(_garbage(topic, f"'after.current_zones' must be a list of names, got "
                                   f"{_show(v)}", n))
        return None

    # ------------------------------------------------------------- audio, availability

    def _audio(self, topic: str, camera: str, label: str, data: bytes) -> list[FeedEvent]:
        """``<base>/<camera>/audio/fire_alarm``: ``ON`` while the sound is heard."""
        if camera not in self._cameras:
            return [_garbage(topic, f"unknown camera {_show(camera)}", len(data))]
        word = data.strip()
        active = self._active[camera]
        if word == AUDIO_ON.encode():
            if _AUDIO_EVENT in active:
                return [Seen(camera)]
            if len(active) >= MAX_ACTIVE:
                del active[next(iter(active))]
            active[_AUDIO_EVENT] = None
            meta = (("label", label), ("event", _AUDIO_EVENT))
            return [Signal(camera, "alarm", meta=meta), Seen(camera)]
        if word == AUDIO_OFF.encode():
            # Frigate says OFF for every quiet audio type: only an OFF after ON clears
            if _AUDIO_EVENT not in active:
                return [Seen(camera)]
            del active[_AUDIO_EVENT]
            return [*([] if active else [Signal(camera, "clear")]), Seen(camera)]
        return [_garbage(topic, f"expected ON or OFF, got {_show(data[:80])}", len(data))]

    def _availability(self, topic: str, data: bytes) -> list[FeedEvent]:
        """Frigate up or down: a trouble on every camera, on the first report and on change.

        When Frigate comes back after being down, the events it had open are gone (it
        never sends their ``end``), so they are forgotten and their cameras cleared; a
        fire still burning is a new event in the new Frigate and alarms again.
        """
        word = data.strip().decode("utf-8", "replace")
        if word not in (ONLINE, OFFLINE):
            return [_garbage(topic, f"expected online or offline, got {_show(data[:80])}",
                             len(data))]
        online = word == ONLINE
        if self._available is online:
            return [Seen(None)] if online else []
        out: list[FeedEvent] = []
        if online and self._available is False:
            for camera, active in self._active.items():
                if active:
                    active.clear()
                    out.append(Signal(camera, "clear"))
        self._available = online
        out += [Trouble(camera, "offline", not online) for camera in self._cameras]
        if online:
            out.append(Seen(None))
        return out
