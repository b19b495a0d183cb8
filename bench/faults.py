"""Fault suite: the gateway killed, its broker and database stopped, its disk filled, its
input flooded, and what it lost, doubled or delayed because of it.

Run from the repository root (the project installed, e.g. editable)::

    python bench/faults.py [--quick] [--seed S] [--case NAME ...] [--influx-outage-s 600]

Each case starts its own servers (``firmware_sim.lab``: Mosquitto with the queue and
persistence settings of ``deploy/mosquitto/firegrid.conf``, InfluxDB 1.x) in a temporary
directory, runs ``python -m gateway.cli run ...`` as its own process exactly as an operator
does, plays a scripted scenario against it through MQTT (detectors, the grid worker and the
responders' pagers are separate MQTT clients that react to what the gateway publishes), does
something bad to it, and then compares what should exist (derived from what the scenario
did) with what the journal, InfluxDB and an MQTT subscriber hold. It prints one table: case,
what was done, figures, pass/fail against the thresholds below, duration; then the machine.
Exit 1 if any criterion fails, 130 on Ctrl-C; every process it started is stopped by PID.

Cases (``--case``): crash, offline-alarms, broker-restart, broker-crash, influx-outage,
serial, overload, full-disk, centre. docs/faults.md explains each figure. The quick
versions of crash, offline-alarms, broker-restart, broker-crash, serial, full-disk and
centre run in the test suite (tests/faults/).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import multiprocessing as mp
import os
import platform
import queue
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from drivers.panel_printer import ESC_TEXT, encode_gst
from firmware_sim.flood import PubFlood
from firmware_sim.kept_alarms import KeepingDetectors
from firmware_sim.lab import InfluxDB, Mosquitto, influx_rows
from firmware_sim.panel import NOISE

REPO = Path(__file__).resolve().parent.parent
NS = 1_000_000_000

# ------------------------------------------------------------------ thresholds
# The issue's Done-when: zero lost steps, zero missed pages, at most one duplicate page per
# crash, zero lost alarms across gateway and broker restarts, zero lost audit points with
# order kept, recovery within seconds.
RECOVERY_S = 5.0  # "within seconds": the gateway's own longest MQTT reconnect backoff
MAX_DUP_PAGES_PER_CRASH = 1
OVERLOAD_FACTOR = 2.0  # alarms under 2x capacity within their unloaded latency x 2
UP_GRACE_S = 1.0  # a timer due while the gateway runs must fire within this (else: missing)

CASES = ("crash", "offline-alarms", "broker-restart", "broker-crash", "influx-outage",
         "serial", "overload", "full-disk", "centre")

DEPLOY_BROKER_CONF = REPO / "deploy" / "mosquitto" / "firegrid.conf"
# lines of the deployed broker config that lab.Mosquitto does not already write
_LAB_KEYS = {"listener", "allow_anonymous", "persistence", "persistence_location",
             "persistence_file", "log_dest", "user", "include_dir"}


# ====================================================================== servers


def deploy_broker_settings() -> list[str]:
    """Settings of deploy/mosquitto/firegrid.conf beyond what the lab broker writes."""
    try:
        text = DEPLOY_BROKER_CONF.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#") and words[0] not in _LAB_KEYS:
            out.append(line.strip())
    return out


class Broker(Mosquitto):
    """The lab broker (persistence on) plus the deployed queue and autosave settings."""

    def __init__(self, overrides: Iterable[str] = ()) -> None:
        super().__init__()
        self.extra = deploy_broker_settings()
        for line in overrides:  # --broker-set: replace a deployed setting, or add one
            key = line.split()[0]
            self.extra = [x for x in self.extra if x.split()[0] != key] + [line]

    def _spawn(self, argv: list[str]) -> None:
        with self.conf_path.open("a") as f:
            f.write("# from deploy/mosquitto/firegrid.conf (bench/faults.py)\n"
                    + "\n".join(self.extra) + "\n")
        super()._spawn(argv)

    def kill9(self) -> None:
        """A broker crash or power cut: SIGKILL by PID, no chance to save its state."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            assert self._proc is not None
            self._proc.wait(10)
        self.stop()  # reaps and forgets it; nothing left to signal

    def log_text(self) -> str:
        try:
            return (self.workdir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""


_PR_SET_PDEATHSIG = 1


def _pdeathsig() -> Callable[[], None] | None:
    """Children die with us even if we are SIGKILLed (main thread only, Linux only)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


_LIVE: set[Any] = set()  # gateways and load publishers still running: stopped on the way out


def stop_everything() -> None:
    for thing in list(_LIVE):
        with contextlib.suppress(Exception):
            thing.stop()


_KV = re.compile(r"([\w.]+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


def parse_log_line(line: str) -> dict[str, str]:
    out = {}
    for key, value in _KV.findall(line):
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        out[key] = value
    return out


def log_time(kv: dict[str, str]) -> float:
    return datetime.fromisoformat(kv["timestamp"]).timestamp()


class Gw:
    """``firegrid run`` as its own process, as an operator starts it; every start, kill -9 and
    stop is timed (wall clock, comparable with the gateway's own step times)."""

    def __init__(self, work: Path, name: str, site_text: str, mqtt_url: str, influx_url: str,
                 journal: Path | None = None, env: dict[str, str] | None = None):
        work.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config = work / f"{name}.yaml"
        self.config.write_text(site_text)
        self.journal = journal or work / f"{name}.journal.sqlite3"
        self.log = work / f"{name}.gateway.log"
        self.args = [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config),
                     "--mqtt", mqtt_url, "--influx", influx_url, "--journal", str(self.journal)]
        self.env = {**os.environ, "FIREGRID_LOG": "info", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawns: list[float] = []
        self.downs: list[float] = []  # kill -9 or stop
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def start(self, wait: bool = True, timeout: float = 30.0) -> Gw:
        n = self.text().count("event='mqtt connected'")
        with self.log.open("ab") as fh:
            fh.write(f"--- faults: start at {time.time():.6f}\n".encode())
            self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_pdeathsig())
        self.spawns.append(time.time())
        _LIVE.add(self)
        if wait:
            self.wait_log("event='mqtt connected'", count=n + 1, timeout=timeout)
        return self

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def wait_log(self, needle: str, count: int = 1, timeout: float = 30.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.text().count(needle) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway {self.name} exited {self.proc.returncode}:\n"
                                   f"{self.text()[-3000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"{needle!r} not in the log of gateway {self.name}:\n"
                           f"{self.text()[-3000:]}")

    def kill9(self) -> float:
        assert self.proc is not None and self.proc.poll() is None, "gateway not running"
        t = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.downs.append(t)
        self.exit_codes.append(self.proc.returncode)
        return t

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM by PID (SIGKILL after ``timeout``); the exit code, None if it was killed."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is not None:
            _LIVE.discard(self)
            return proc.returncode
        t = time.time()
        proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            code = None
        self.downs.append(t)
        self.exit_codes.append(proc.returncode)
        _LIVE.discard(self)
        return code

    def windows(self) -> list[tuple[float, float]]:
        """(down, next spawn) for every kill or stop that was followed by a start."""
        return list(zip(self.downs, self.spawns[1:], strict=False))

    def events(self, name: str) -> list[dict[str, str]]:
        out = []
        for line in self.lines():
            if f"event='{name}'" in line:
                out.append(parse_log_line(line))
        return out

    def counters(self) -> dict[str, int]:
        return self.counters_at(-1)

    def counters_at(self, k: int) -> dict[str, int]:
        """Counters of the k-th process that logged 'gateway stopped' (the last: -1)."""
        stopped = self.events("gateway stopped")
        if not stopped or not -len(stopped) <= k < len(stopped):
            return {}
        return {key: int(v) for key, v in stopped[k].items() if v.isdigit()}

    def durable(self, stage: str) -> dict[str, float]:
        """incident -> when its first ``stage`` step was logged (right after the COMMIT)."""
        out: dict[str, float] = {}
        for kv in self.events("step"):
            if kv.get("stage") == stage:
                out.setdefault(kv["incident"], log_time(kv))
        return out

    def connected_at(self) -> list[float]:
        return [log_time(kv) for kv in self.events("mqtt connected")]

    def starts(self) -> list[tuple[float, float]]:
        """(spawn, ready) per process: ready = its 'gateway running' line (else the spawn)."""
        ready = [log_time(kv) for kv in self.events("gateway running")]
        out = []
        for i, sp in enumerate(self.spawns):
            nxt = self.spawns[i + 1] if i + 1 < len(self.spawns) else float("inf")
            r = next((t for t in ready if sp <= t < nxt), sp)
            out.append((sp, r))
        return out


# ====================================================================== the site


@dataclass
class SiteSpec:
    """A generated site of far-apart buildings, each its own zone with a manual call point
    and two smoke detectors 7 m apart (two alarms there confirm each other)."""

    name: str
    buildings: int
    confirm_s: float = 3.0
    in_place_s: float = 8.0
    locate_s: float = 10.0
    tier_timeouts: tuple[float, ...] = (2.0, 2.0)
    temps: int = 0  # temperature sensors (telemetry)
    heartbeats: int = 0  # smoke detectors that only ever send a routine 'clear'
    markers: int = 0
    extra: str = ""

    members: dict[int, list[str]] = field(default_factory=lambda: {
        1: ["guard-1"], 2: ["squad-1", "squad-2"]})

    @property
    def timeouts(self) -> dict[int, float]:
        return {i + 1: t for i, t in enumerate(self.tier_timeouts)}

    def kind(self, device: str | None) -> str:
        if device is None:
            return ""
        if device.startswith("mcp-"):
            return "manual"
        if device.startswith(("tmp-", "mark-")):
            return "temperature"
        return "smoke"

    def yaml(self) -> str:
        lines = [f"site: {self.name}",
                 f"sla: {{locate_s: {self.locate_s}, confirm_s: {self.confirm_s}, "
                 f"in_place_s: {self.in_place_s}}}", "zones:"]
        for b in range(self.buildings):
            x = b * 100
            lines.append(f"  - {{id: z{b}, building: b{b}, floor: 1, polygon: "
                         f"[[{x},0],[{x + 20},0],[{x + 20},10],[{x},10]], worker: w-1}}")
        lines.append("devices:")
        for b in range(self.buildings):
            x = b * 100
            lines.append(f"  - {{id: mcp-{b}, kind: manual, floor: 1, x: {x + 1}, y: 1}}")
            lines.append(f"  - {{id: smk-{b}-1, kind: smoke, floor: 1, x: {x + 5}, y: 5}}")
            lines.append(f"  - {{id: smk-{b}-2, kind: smoke, floor: 1, x: {x + 12}, y: 5}}")
        for i in range(self.temps):
            x = (i % self.buildings) * 100
            lines.append(f"  - {{id: tmp-{i}, kind: temperature, floor: 1, x: {x + 15}, y: 8}}")
        for i in range(self.heartbeats):
            x = (i % self.buildings) * 100
            lines.append(f"  - {{id: hb-{i}, kind: smoke, floor: 1, x: {x + 19}, y: 9}}")
        for k in range(self.markers):
            lines.append(f"  - {{id: mark-{k}, kind: temperature, floor: 1, x: 2, y: 9}}")
        lines += ["responders:", "  - {id: w-1, name: grid worker, tier: 0}"]
        for tier, names in sorted(self.members.items()):
            lines += [f"  - {{id: {n}, tier: {tier}}}" for n in names]
        lines.append("tiers:")
        lines += [f"  - {{tier: {t}, ack_timeout_s: {s}}}" for t, s in self.timeouts.items()]
        return "\n".join(lines) + "\n" + self.extra


def building_of(name: str) -> int | None:
    """Building number from a device id (mcp-12, smk-12-1) or a zone id (z12)."""
    m = re.match(r"^(?:mcp-|smk-|z)(\d+)", name or "")
    return int(m.group(1)) if m else None


# ====================================================================== MQTT


@dataclass
class Msg:
    t: float
    topic: str  # under the site prefix
    payload: bytes
    retain: bool
    dup: bool

    def json(self) -> Any:
        return orjson.loads(self.payload)


def _paho(client_id: str, clean: bool) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(0.1, 0.5)  # follow a broker restart closely
    return client


class Watch:
    """A duty-room subscriber on a persistent session (so a broker restart does not make it
    miss what the gateway publishes meanwhile): records every message with its arrival time
    and hands each to an optional event queue for the scenario's people to react to."""

    TOPICS = ("status", "incident/+", "confirm/+", "page/+", "trouble/+", "device/+")

    def __init__(self, port: int, site: str, name: str):
        self.prefix = f"firegrid/{site}/"
        self.lock = threading.Lock()
        self.msgs: list[Msg] = []
        self.events: queue.SimpleQueue[Msg] = queue.SimpleQueue()
        self.subscribed = threading.Event()
        self.client = _paho(f"faults-watch-{name}-{os.getpid()}", clean=False)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("watch could not subscribe")

    def _on_connect(self, client: paho.Client, *_a: Any) -> None:
        client.subscribe([(self.prefix + t, 1) for t in self.TOPICS])

    def _on_message(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        msg = Msg(time.time(), m.topic[len(self.prefix):], m.payload, bool(m.retain),
                  bool(m.dup))
        with self.lock:
            self.msgs.append(msg)
        self.events.put(msg)

    def find(self, pred: Callable[[Msg], bool]) -> list[Msg]:
        with self.lock:
            return [m for m in self.msgs if pred(m)]

    def wait(self, pred: Callable[[Msg], bool], timeout: float) -> Msg | None:
        end = time.time() + timeout
        while time.time() < end:
            found = self.find(pred)
            if found:
                return found[0]
            time.sleep(0.01)
        return None

    def pages(self) -> list[tuple[Msg, dict[str, Any]]]:
        return [(m, m.json()) for m in self.find(
            lambda m: m.topic.startswith("page/") and m.topic.count("/") == 1 and m.payload)]

    def incidents_of(self, devices: Iterable[str]) -> dict[str, str]:
        """device -> id of the first incident seen holding it."""
        want = set(devices)
        out: dict[str, str] = {}
        for m in self.find(lambda m: m.topic.startswith("incident/") and m.payload):
            body = m.json()
            for d in body.get("devices", []):
                if d in want and d not in out:
                    out[d] = body["id"]
        return out

    def close(self) -> None:
        self.client.loop_stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()


@dataclass
class Input:
    """Something a device or a person published (QoS 1), and when the broker took it."""

    t: float
    topic: str
    body: dict[str, Any]
    mid: int
    acked: float | None = None


class Actor:
    """Detectors, the grid worker and the pagers: one MQTT client on a persistent session.
    QoS 1; what is published while the broker is down is sent when it is back (paho keeps
    it), as a device with a retrying firmware would."""

    def __init__(self, port: int, site: str, name: str):
        self.prefix = f"firegrid/{site}/"
        self.inputs: list[Input] = []
        self._lock = threading.Lock()
        self._pending: dict[int, Input] = {}
        self._early: set[int] = set()
        self.hooks: list[Callable[[Input], None]] = []
        self.excluded: set[int] = set()  # ids of inputs that are not part of the scenario
        self.connected = threading.Event()
        self.client = _paho(f"faults-actor-{name}-{os.getpid()}", clean=False)
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("actor could not connect")

    def _on_publish(self, _c: Any, _u: Any, mid: int, *_a: Any) -> None:
        now = time.time()
        with self._lock:
            rec = self._pending.pop(mid, None)
            if rec is None:
                self._early.add(mid)
            else:
                rec.acked = now

    def pub(self, topic: str, body: dict[str, Any]) -> Input:
        t = time.time()
        info = self.client.publish(self.prefix + topic, orjson.dumps(body), qos=1)
        rec = Input(t, topic, body, info.mid)
        with self._lock:
            self.inputs.append(rec)
            if info.mid in self._early:
                self._early.discard(info.mid)
                rec.acked = time.time()
            else:
                self._pending[info.mid] = rec
        for hook in self.hooks:
            hook(rec)
        return rec

    def all_acked(self) -> bool:
        with self._lock:
            return not self._pending

    def close(self) -> None:
        self.client.loop_stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()


def load_publisher(host: str, port: int, msgs: list[tuple[str, bytes]], rate: float,
                   seconds: float, results: Any, ready: Any, go: Any, tag: str) -> None:
    """Background telemetry in its own process, token-bucket paced, QoS 1 (bench/ingest.py's
    publisher, with the messages given)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                         client_id=f"faults-load-{tag}-{os.getpid()}", clean_session=True)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = 0

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect(host, port, keepalive=30)
    client.loop_start()
    ready.set()
    go.wait()
    total = int(rate * seconds)
    start = time.monotonic()
    t_start = time.time()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            topic, payload = msgs[sent % len(msgs)]
            client.publish(topic, payload, qos=1)
            sent += 1
        ahead = sent / rate - (time.monotonic() - start)
        time.sleep(max(ahead, 0.0005))
    send_s = time.monotonic() - start
    deadline = time.monotonic() + 120
    while acked < sent and time.monotonic() < deadline:
        time.sleep(0.002)
    results.put({"sent": sent, "acked": acked, "send_s": send_s,
                 "done_s": time.monotonic() - start, "t_start": t_start,
                 "t_done": time.time()})
    client.disconnect()
    client.loop_stop()


class Load:
    """One load publisher process, started ready-to-go; stopped by its PID."""

    def __init__(self, port: int, msgs: list[tuple[str, bytes]], rate: float, seconds: float,
                 tag: str):
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.ready, self.go = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=load_publisher, daemon=True, name=f"faults-load-{tag}",
                                args=("127.0.0.1", port, msgs, rate, seconds, self.results,
                                      self.ready, self.go, tag))
        self.proc.start()
        _LIVE.add(self)
        if not self.ready.wait(60):
            self.stop()
            raise RuntimeError("load publisher did not start")

    def start(self) -> None:
        self.go.set()

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            return dict(self.results.get(timeout=timeout))
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.pid is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        _LIVE.discard(self)


# ====================================================================== scenario

KINDS = ("mcp", "confirm", "silent", "dismiss", "pair")
# who answers which page, per story: (tier, responder)
ACKER = {"mcp": (1, "guard-1"), "confirm": (1, "guard-1"), "dismiss": (1, "guard-1"),
         "silent": (2, "squad-1"), "pair": (2, "squad-2")}
DECLINER = {"pair": (1, "guard-1")}
REPLY_AFTER_S, ACK_AFTER_S, ON_SCENE_AFTER_S, CLOSE_AFTER_S = 1.0, 0.3, 1.0, 1.5


@dataclass
class Story:
    """One incident's script. mcp: manual call point, confirmed at once, the guard acks.
    confirm: a smoke alarm the grid worker confirms. silent: nobody confirms (escalated at
    the deadline) and the guard does not answer (tier 2 paged after its timeout, squad-1
    acks). dismiss: the worker dismisses it. pair: two smoke detectors confirm each other,
    the guard declines, tier 2 is paged at once, squad-2 acks. Whoever acks goes on scene,
    then the worker closes the incident."""

    idx: int
    kind: str
    building: int
    start: float
    incident: str | None = None
    devices: list[str] = field(default_factory=list)
    replied: bool = False
    acted: set[str] = field(default_factory=set)
    finished: float | None = None


class Director:
    """Plays stories: publishes alarms at their times and makes the people react to what the
    gateway publishes (confirm requests, pages), whenever it comes, gateway up or down."""

    def __init__(self, watch: Watch, actor: Actor):
        self.watch = watch
        self.actor = actor
        self.stories: list[Story] = []
        self.active: dict[int, Story] = {}  # building -> story not yet finished
        self.by_incident: dict[str, Story] = {}
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.skipped = 0

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    def add(self, kind: str, building: int, start: float) -> Story:
        story = Story(len(self.stories), kind, building, start)
        self.stories.append(story)
        first = f"mcp-{building}" if kind == "mcp" else f"smk-{building}-1"
        self.at(start, lambda: self._alarm(story, first))
        if kind == "pair":
            self.at(start + 0.2, lambda: self._alarm(story, f"smk-{building}-2"))
        return story

    def _alarm(self, story: Story, device: str) -> None:
        if story.building in self.active and self.active[story.building] is not story:
            story.finished = time.time()  # building still busy (a story got stuck): skip
            self.skipped += 1
            return
        self.active[story.building] = story
        story.devices.append(device)
        self.actor.pub(f"signal/{device}", {"kind": "manual" if device.startswith("mcp")
                                            else "smoke", "state": "alarm"})

    def pending(self) -> int:
        return len(self._heap)

    def tick(self) -> None:
        while True:
            try:
                msg = self.watch.events.get_nowait()
            except queue.Empty:
                break
            self._on_msg(msg)
        now = time.time()
        while self._heap and self._heap[0][0] <= now:
            _, _, fn = heapq.heappop(self._heap)
            fn()

    def run(self, until: Callable[[], bool], timeout: float,
            also: Callable[[], None] | None = None) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            self.tick()
            if also is not None:
                also()
            if until():
                return True
            time.sleep(0.005)
        return False

    def all_done(self) -> bool:
        return not self._heap and all(s.finished for s in self.stories)

    def _story_for(self, incident: str | None, hint: str | None) -> Story | None:
        if incident and incident in self.by_incident:
            return self.by_incident[incident]
        b = building_of(hint or "")
        story = self.active.get(b) if b is not None else None
        if story is not None and incident and story.incident is None:
            story.incident = incident
            self.by_incident[incident] = story
        return story

    def _on_msg(self, m: Msg) -> None:
        # retained copies come again with every (re)subscription: only live messages count
        if not m.payload or m.retain or m.topic.count("/") != 1:
            return
        head, _, rest = m.topic.partition("/")
        if head == "incident":
            body = m.json()
            devs = body.get("devices") or []
            story = self._story_for(body.get("id"), devs[0] if devs else None)
            if story is None or story.incident != body.get("id"):
                return
            if body.get("state") in ("closed", "dismissed") and story.finished is None:
                story.finished = m.t
                if self.active.get(story.building) is story:
                    del self.active[story.building]
            elif (body.get("state") == "confirming" and story.kind in ("confirm", "dismiss")
                  and not story.replied):
                story.replied = True
                decision = "confirm" if story.kind == "confirm" else "dismiss"
                inc = story.incident
                self.at(m.t + REPLY_AFTER_S, lambda: self.actor.pub(
                    f"confirm/{inc}/reply", {"decision": decision, "by": "w-1"}))
        elif head == "page":
            body = m.json()
            story = self._story_for(body.get("incident"), body.get("zone"))
            if story is None or story.incident != body.get("incident"):
                return
            who, tier, inc = rest, body.get("tier"), story.incident
            if who in story.acted:
                return
            if DECLINER.get(story.kind) == (tier, who):
                story.acted.add(who)
                self.at(m.t + ACK_AFTER_S, lambda: self.actor.pub(
                    f"page/{who}/ack", {"incident": inc, "status": "decline"}))
            elif ACKER[story.kind] == (tier, who):
                story.acted.add(who)
                self.at(m.t + ACK_AFTER_S, lambda: self.actor.pub(
                    f"page/{who}/ack", {"incident": inc, "status": "ack"}))
                self.at(m.t + ON_SCENE_AFTER_S, lambda: self.actor.pub(
                    f"page/{who}/ack", {"incident": inc, "status": "on_scene"}))
                self.at(m.t + CLOSE_AFTER_S, lambda: self.actor.pub(
                    f"incident/{inc}/close", {"by": "w-1", "reason": "fault suite"}))

    def close_stragglers(self) -> int:
        """Close what never finished (so the run ends); returns how many. These closes are
        the bench's, not the scenario's: they are left out of the step audit."""
        n = 0
        for s in self.stories:
            if s.finished is None and s.incident:
                rec = self.actor.pub(f"incident/{s.incident}/close",
                                     {"by": "w-1", "reason": "fault suite: straggler"})
                self.actor.excluded.add(id(rec))
                n += 1
        return n

    def scenario_inputs(self) -> list[Input]:
        return [i for i in self.actor.inputs if id(i) not in self.actor.excluded]


# ====================================================================== checking


@dataclass
class StepRow:
    seq: int
    incident: str
    stage: str
    t: float  # seconds
    t_ns: int
    t0: float
    responder: str | None
    tier: int | None
    device: str | None
    fields: dict[str, Any]


def read_journal(path: Path) -> list[StepRow]:
    """Every step in the journal, in ``seq`` order (read-only; safe while the gateway runs)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT seq, body FROM steps ORDER BY seq").fetchall()
    finally:
        db.close()
    out = []
    for seq, body in rows:
        s = orjson.loads(body)
        out.append(StepRow(seq, s["incident"], s["stage"], s["t_ns"] / NS, s["t_ns"],
                           s["t0_ns"] / NS, s.get("responder"), s.get("tier"), s.get("device"),
                           s.get("fields") or {}))
    return out


def _step_key(s: StepRow) -> tuple[Any, ...] | None:
    """Steps that may exist at most once per incident, by this key."""
    if s.stage == "detected":
        return ("detected", s.device)
    if s.stage in ("confirmed", "escalated", "dismissed"):
        return ("decision",)
    if s.stage in ("queued", "closed"):
        return (s.stage,)
    if s.stage == "paged":
        return ("paged", s.responder, s.tier, s.fields.get("repeat", 0))
    if s.stage in ("acked", "on_scene", "declined"):
        return (s.stage, s.responder)
    if s.stage == "breach":
        return ("breach", s.fields.get("sla"))
    return None


@dataclass
class Timer:
    incident: str
    what: str
    due: float
    t: float
    affected: bool  # due while the gateway was down or starting (before it was running)
    late_beyond_s: float  # t - max(due, spawn of the process that fired it)
    answered_in_time: bool = False  # an answer was published before ``due`` but came after


@dataclass
class Audit:
    expected: int = 0
    missing: list[str] = field(default_factory=list)
    duplicate_steps: list[str] = field(default_factory=list)
    refused: int = 0
    timers: list[Timer] = field(default_factory=list)
    escalated_needlessly: list[str] = field(default_factory=list)
    alarms: int = 0
    alarms_lost: list[str] = field(default_factory=list)


def _window_of(t: float, windows: list[tuple[float, float]]) -> tuple[float, float] | None:
    for down, up in windows:
        if down <= t < up:
            return down, up
    return None


def audit_steps(steps: list[StepRow], inputs: list[Input], site: SiteSpec,
                windows: list[tuple[float, float]], starts: list[tuple[float, float]],
                end_t: float) -> Audit:
    """What should be in the journal, given what the scenario published and the rules of
    docs/mqtt.md, against what is there. ``windows`` are the gateway's (down, restarted)
    intervals: a timer due in one may fire at the restart; ``starts`` (spawn, running) of
    every gateway process."""
    a = Audit()
    answers: dict[str, list[Input]] = defaultdict(list)  # incident -> replies and acks
    for inp in inputs:
        parts = inp.topic.split("/")
        if parts[0] == "confirm" and len(parts) == 3:
            answers[parts[1]].append(inp)
        elif parts[0] == "page" and len(parts) == 3:
            answers[inp.body.get("incident", "")].append(inp)

    def grace_end(due: float) -> float:
        w = _window_of(due, windows)
        return w[1] + RECOVERY_S if w else due + UP_GRACE_S

    def timer(inc: str, what: str, due: float, t: float,
              answer: Callable[[Input], bool] = lambda _i: False) -> None:
        spawn, ready = max(((sp, rd) for sp, rd in starts if sp <= t), default=(t, t))
        tm = Timer(inc, what, due, t, due < ready, t - max(due, spawn))
        # an answer that would have stopped this timer, published before it was due
        tm.answered_in_time = any(i.t < due and answer(i) for i in answers.get(inc, []))
        if tm.answered_in_time:
            a.escalated_needlessly.append(f"{inc}: {what} due {due:.3f} fired {t:.3f}")
        a.timers.append(tm)

    by_inc: dict[str, list[StepRow]] = defaultdict(list)
    for s in steps:
        by_inc[s.incident].append(s)
    tiers = sorted(site.timeouts)
    tier_members = {t: site.members.get(t, []) for t in tiers}
    top = tiers[-1] if tiers else 0

    for inc, ss in by_inc.items():
        def want(ok: bool, what: str, inc: str = inc) -> None:
            a.expected += 1
            if not ok:
                a.missing.append(f"{inc}: {what}")

        a.refused += sum(1 for s in ss if s.stage == "refused")
        for key, n in Counter(k for k in map(_step_key, ss) if k).items():
            if n > 1:
                a.duplicate_steps.append(f"{inc}: {key} x{n}")
        first = ss[0]
        if first.stage != "detected":
            want(False, f"first step is {first.stage}, not detected")
            continue
        t0 = first.t0
        stages = [s.stage for s in ss]
        manual = site.kind(first.device) == "manual"
        want("located" in stages, "located")
        if not manual:
            want("queued" in stages, "queued (confirm request)")
        final = next((s for s in ss if s.stage in ("closed", "dismissed")), None)
        decisions = [s for s in ss if s.stage in ("confirmed", "escalated", "dismissed")]
        deadline = t0 + site.confirm_s
        closed_undecided = final is not None and final.stage == "closed" and not decisions
        if not closed_undecided and (decisions or end_t > grace_end(deadline)):
            want(bool(decisions), "a decision (confirmed, escalated or dismissed)")
        if decisions and not manual and "queued" in stages:
            d = decisions[0]
            if d.stage != "escalated" and d.t > grace_end(deadline):
                want(False, f"escalated at the deadline ({d.stage} came "
                     f"{d.t - deadline:.1f} s after it)")
        for s in ss:
            if s.stage == "escalated":
                timer(inc, "escalation", deadline, s.t,
                      lambda i: i.topic.startswith("confirm/"))

        def paged_after(who: str, tier: int, after_ns: int, repeat: bool,
                        ss: list[StepRow] = ss) -> bool:
            return any(p.stage == "paged" and p.responder == who and p.tier == tier
                       and p.t_ns >= after_ns and (bool(p.fields.get("repeat")) == repeat)
                       for p in ss)

        # pages: tier 1 on every confirmation; the next tier after unanswered or all declined
        declined: dict[int, set[str]] = defaultdict(set)
        current = 0  # the tier last paged: a decline only passes on from that one
        for s in ss:
            if s.stage == "paged" and s.tier is not None:
                current = s.tier
            if s.stage in ("confirmed", "escalated") and tiers:
                for who in tier_members[tiers[0]]:
                    want(paged_after(who, tiers[0], s.t_ns, False), f"paged {who} tier "
                         f"{tiers[0]} after {s.stage}")
            nxt_from = None
            if s.stage == "unanswered" and s.tier is not None:
                nxt_from = s.tier
            elif s.stage == "declined" and s.tier is not None:
                declined[s.tier].add(s.responder or "")
                if s.tier == current and set(tier_members.get(s.tier, [])) <= declined[s.tier]:
                    nxt_from = s.tier
            if nxt_from is not None:
                higher = [t for t in tiers if t > nxt_from and tier_members[t]]
                nt, repeat = (higher[0], False) if higher else (top, True)
                for who in tier_members[nt]:
                    if who in declined[nt] and not repeat:
                        continue
                    want(paged_after(who, nt, s.t_ns, repeat),
                         f"paged {who} tier {nt} after {s.stage} tier {s.tier}")
        # tier timeouts: paged, nobody answered by the deadline -> unanswered
        due: tuple[float, int] | None = None
        answered = False
        for s in ss:
            if due is not None and s.stage != "unanswered" and s.t > grace_end(due[0]):
                want(False, f"unanswered for tier {due[1]} due at +{due[0] - t0:.1f} s")
                due = None
            if s.stage == "paged" and s.tier is not None and not answered:
                due = (s.t + site.timeouts[s.tier], s.tier)
            elif s.stage in ("acked", "on_scene"):
                answered, due = True, None
            elif s.stage == "unanswered":
                if due is not None:
                    a.expected += 1
                    members = set(tier_members.get(due[1], []))
                    timer(inc, f"tier {due[1]} ack timeout", due[0], s.t,
                          lambda i, m=members: i.topic.split("/")[1] in m
                          and i.body.get("status") in ("ack", "on_scene"))
                due = None
            elif s.stage in ("closed", "dismissed"):
                due = None
        if due is not None and end_t > grace_end(due[0]):
            want(False, f"unanswered for tier {due[1]} due at +{due[0] - t0:.1f} s")
        # in-place target
        in_place = t0 + site.in_place_s
        arrived = next((s.t for s in ss if s.stage == "on_scene"), None)
        ended = final.t if final else None
        firsts = [t for t in (arrived, ended) if t is not None]
        settled = min(firsts) if firsts else None
        late = settled is None or settled > in_place
        if late and (settled or end_t) > grace_end(in_place):
            want(any(s.stage == "breach" and s.fields.get("sla") == "in_place" for s in ss),
                 "breach in_place")
        for s in ss:
            if s.stage == "breach" and s.fields.get("sla") == "in_place":
                timer(inc, "in-place breach", in_place, s.t)

    # what the scenario published: every input must have left a step
    detected_by_dev: dict[str, list[StepRow]] = defaultdict(list)
    for s in steps:
        if s.stage == "detected" and s.device:
            detected_by_dev[s.device].append(s)
    used: set[int] = set()
    for inp in inputs:
        parts = inp.topic.split("/")
        if parts[0] == "signal" and inp.body.get("state") == "alarm":
            a.alarms += 1
            a.expected += 1
            dev = parts[1]
            cand = [s for s in detected_by_dev.get(dev, [])
                    if s.seq not in used and s.t >= inp.t - 0.05]
            if cand:
                used.add(cand[0].seq)
            else:
                a.alarms_lost.append(dev)
                a.missing.append(f"alarm {dev} published at {inp.t:.3f}: no detected step")
            continue
        if parts[0] == "confirm" and len(parts) == 3:
            inc, who = parts[1], inp.body["by"]
            stages = {"confirm": {"confirmed"}, "dismiss": {"dismissed"}}[inp.body["decision"]]
            what = f"reply:{inp.body['decision']}"
        elif parts[0] == "page" and len(parts) == 3:
            inc, who, status = inp.body["incident"], parts[1], inp.body["status"]
            stages = {"ack": {"acked"}, "on_scene": {"on_scene"},
                      "decline": {"declined"}}[status]
            what = f"ack:{status}"
        elif parts[0] == "incident" and len(parts) == 3:
            inc, who, stages, what = parts[1], inp.body["by"], {"closed"}, "close"
        else:
            continue
        a.expected += 1
        ok = any((s.stage in stages and s.responder == who)
                 or (s.stage == "refused" and s.fields.get("input") == what
                     and s.fields.get("from") == who) for s in by_inc.get(inc, []))
        if not ok:
            a.missing.append(f"{inc}: {what} by {who} published at {inp.t:.3f}: no step")
    return a


@dataclass
class PageCheck:
    paged: int = 0
    seen: int = 0
    missed: list[str] = field(default_factory=list)
    duplicates: int = 0
    dup_per_crash: dict[int, int] = field(default_factory=dict)
    redelivered: int = 0  # broker -> watcher redeliveries (DUP flag), not the gateway's doing
    phantom: list[str] = field(default_factory=list)


def check_pages(steps: list[StepRow], pages: list[tuple[Msg, dict[str, Any]]],
                downs: list[float]) -> PageCheck:
    """Every ``paged`` step must have its page on MQTT (same incident, responder, tier and
    ``sent`` time); a page seen more than once is a duplicate, charged to the last crash
    (kill or stop) before its second arrival."""
    pc = PageCheck()
    groups: dict[tuple[str, str, int, float], list[float]] = defaultdict(list)
    for m, body in pages:
        if m.dup:
            pc.redelivered += 1
            continue
        key = (body["incident"], m.topic.split("/", 1)[1], body["tier"],
               round(float(body["sent"]), 6))
        groups[key].append(m.t)
    matched: set[tuple[str, str, int, float]] = set()
    for s in steps:
        if s.stage != "paged":
            continue
        pc.paged += 1
        hit = next((k for k in groups if k[0] == s.incident and k[1] == s.responder
                    and k[2] == s.tier and abs(k[3] - s.t) < 0.01), None)
        if hit is None:
            pc.missed.append(f"{s.incident} {s.responder} tier {s.tier} at {s.t:.3f}")
        else:
            pc.seen += 1
            matched.add(hit)
    for key, arrivals in groups.items():
        if key not in matched:
            pc.phantom.append(f"{key}")
        for t in sorted(arrivals)[1:]:
            pc.duplicates += 1
            crash = sum(1 for d in downs if d < t)
            pc.dup_per_crash[crash] = pc.dup_per_crash.get(crash, 0) + 1
    return pc


def retained_states(port: int, site: str, wait_s: float = 1.0) -> dict[str, bytes]:
    """What a duty-room client connecting now gets: the retained incident states and
    confirm requests on the broker (topic under the site prefix -> payload)."""
    prefix = f"firegrid/{site}/"
    got: dict[str, bytes] = {}
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        if m.retain:
            with lock:
                got[m.topic[len(prefix):]] = m.payload

    client = _paho(f"faults-retained-{os.getpid()}-{time.monotonic_ns()}", clean=True)
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=10)
    client.subscribe([(prefix + "incident/+", 1), (prefix + "confirm/+", 1)])
    client.loop_start()
    time.sleep(wait_s)
    client.loop_stop()
    client.disconnect()
    with lock:
        return dict(got)


def stale_retained(steps: list[StepRow], retained: dict[str, bytes]) -> list[str]:
    """Incidents whose retained state on the broker is not the journal's, and confirm
    requests still retained for incidents no longer waiting for one."""
    state: dict[str, str] = {}
    for st in steps:
        if st.stage in ("closed", "dismissed"):
            state[st.incident] = st.stage
        elif st.stage in ("confirmed", "escalated") and state.get(st.incident) != "closed":
            state[st.incident] = "confirmed"
        else:
            state.setdefault(st.incident, "confirming")
    out = []
    for inc, want in state.items():
        raw = retained.get(f"incident/{inc}")
        got = orjson.loads(raw).get("state") if raw else None
        if got != want:
            out.append(f"incident/{inc}: broker says {got}, journal says {want}")
        if retained.get(f"confirm/{inc}") and want != "confirming":
            out.append(f"confirm/{inc}: request still retained, journal says {want}")
    return out


def influx_query(base: str, db: str, q: str) -> list[dict[str, Any]]:
    return influx_rows(base, db, q)


def influx_count(base: str, db: str, q: str) -> int:
    try:
        rows = influx_query(base, db, q)
    except OSError:
        return -1
    return int(rows[0].get("count", 0)) if rows else 0


def _step_ident(incident: str, stage: str, t_ns: int, responder: str | None,
                device: str | None) -> tuple[str, str, int, str, str]:
    return (incident, stage, t_ns, responder or "", device or "")


@dataclass
class InfluxCheck:
    journal: int = 0
    influx: int = 0
    lost: list[str] = field(default_factory=list)
    extra: int = 0
    order_broken: list[str] = field(default_factory=list)


def check_influx(steps: list[StepRow], base: str, db: str, site: str,
                 wait_s: float = 30.0) -> InfluxCheck:
    """Every journal step in InfluxDB once, with its timestamp, each incident's steps in the
    journal's order when sorted by time (what an auditor reads)."""
    ic = InfluxCheck(journal=len(steps))
    end = time.time() + wait_s
    q = f"SELECT count(elapsed_s) FROM incident_step WHERE site = '{site}'"
    while time.time() < end and influx_count(base, db, q) < len(steps):
        time.sleep(0.2)
    rows = influx_query(base, db, f"SELECT * FROM incident_step WHERE site = '{site}'")
    ic.influx = len(rows)
    got = {_step_ident(r["incident"], r["stage"], r["time"], r.get("responder"),
                       r.get("device")) for r in rows}
    want = {_step_ident(s.incident, s.stage, s.t_ns, s.responder, s.device) for s in steps}
    ic.lost = [f"{w}" for w in sorted(want - got)]
    ic.extra = len(got - want)
    by_inc: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in rows:
        by_inc[r["incident"]].append((r["time"], r["stage"]))
    journal_order: dict[str, list[str]] = defaultdict(list)
    for s in steps:
        journal_order[s.incident].append(s.stage)
    for inc, order in journal_order.items():
        seen = [stage for _, stage in sorted(by_inc.get(inc, []))]
        if seen != order and not ic.lost:
            ic.order_broken.append(inc)
    return ic


# ====================================================================== results


@dataclass
class Check:
    name: str
    value: Any
    limit: str
    ok: bool

    def text(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.value} ({self.limit})"


@dataclass
class Result:
    case: str
    done: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    status: str = "pass"  # pass, FAIL, not built, error
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def check(self, name: str, value: Any, ok: bool, limit: str) -> None:
        self.checks.append(Check(name, value, limit, bool(ok)))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def finish(self) -> Result:
        if self.status == "pass" and self.failed:
            self.status = "FAIL"
        return self


@dataclass
class Ctx:
    work: Path
    quick: bool
    seed: int
    influx: InfluxDB
    influx_outage_s: float = 600.0
    incidents: int | None = None
    kills: int | None = None
    capacity: float | None = None
    overload_s: float = 10.0
    broker_set: list[str] = field(default_factory=list)
    pulls: int | None = None  # cable pulls in the serial case
    garbage_s: float | None = None  # how long the panel sends garbage in the serial case
    load_nice: int = 0  # overload: nice value of the flood's publishers
    servers: list[Any] = field(default_factory=list)

    def dir(self, name: str) -> Path:
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def broker(self, name: str) -> Broker:
        b = Broker(self.broker_set)
        self.servers.append(b)
        b.start(self.dir(name) / "mosquitto")
        return b

    def db(self, name: str) -> str:
        return f"faults_{name.replace('-', '_')}_{os.getpid()}_{int(time.time())}"


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _stories_figures(r: Result, director: Director) -> None:
    r.figures["incidents"] = (f"{len(director.stories)} ("
                              + ", ".join(f"{k} {sum(1 for s in director.stories if s.kind == k)}"
                                          for k in KINDS) + ")")


def _add_common_checks(r: Result, a: Audit, pc: PageCheck, ic: InfluxCheck,
                       crashes: int | None) -> None:
    """The Done-when figures every scenario case reports."""
    r.figures["steps journaled; expectations checked"] = f"{ic.journal}; {a.expected}"
    r.figures["steps lost (journal)"] = len(a.missing)
    r.figures["steps lost (InfluxDB)"] = len(ic.lost)
    r.figures["alarms published / lost"] = f"{a.alarms} / {len(a.alarms_lost)}"
    r.figures["pages: paged steps / seen / missed"] = f"{pc.paged} / {pc.seen} / {len(pc.missed)}"
    r.figures["duplicate pages"] = (f"{pc.duplicates}" + (
        f" (per crash: max {max(pc.dup_per_crash.values())})" if pc.dup_per_crash else ""))
    if pc.redelivered:
        r.figures["broker redeliveries to the watcher (DUP)"] = pc.redelivered
    if pc.phantom:
        r.figures["pages with no paged step in the journal"] = len(pc.phantom)
    r.figures["duplicate steps"] = len(a.duplicate_steps)
    r.figures["refused steps"] = a.refused
    r.check("steps lost (journal)", len(a.missing), not a.missing, "= 0")
    r.check("steps lost (InfluxDB)", len(ic.lost), not ic.lost, "= 0")
    r.check("InfluxDB order per incident", f"{len(ic.order_broken)} broken",
            not ic.order_broken, "= 0")
    r.check("alarms lost", len(a.alarms_lost), not a.alarms_lost, "= 0")
    r.check("pages missed", len(pc.missed), not pc.missed, "= 0")
    if crashes is not None:
        worst = max(pc.dup_per_crash.values(), default=0)
        r.check("duplicate pages per crash", worst, worst <= MAX_DUP_PAGES_PER_CRASH,
                f"<= {MAX_DUP_PAGES_PER_CRASH}")
    else:
        r.check("duplicate pages", pc.duplicates, pc.duplicates == 0, "= 0 (no crash)")
    r.notes += [f"missing: {m}" for m in a.missing[:15]]
    r.notes += [f"InfluxDB lost: {m}" for m in ic.lost[:10]]
    r.notes += [f"page missed: {m}" for m in pc.missed[:10]]
    r.notes += [f"duplicate step: {m}" for m in a.duplicate_steps[:10]]


def _retained_check(r: Result, broker: Broker, site: str, steps: list[StepRow]) -> None:
    """Beyond the Done-when: what a duty room connecting now sees must match the journal."""
    stale = stale_retained(steps, retained_states(broker.port, site))
    r.figures["retained states on the broker unlike the journal"] = len(stale)
    r.check("[extra] retained incident states match the journal", len(stale), not stale, "= 0")
    r.notes += [f"stale retained: {x}" for x in stale[:10]]


def _timer_checks(r: Result, a: Audit) -> None:
    hit = [t for t in a.timers if t.affected]
    rest = [t for t in a.timers if not t.affected]
    worst_hit = max((t.late_beyond_s for t in hit), default=0.0)
    worst_rest = max((t.late_beyond_s for t in rest), default=0.0)
    r.figures["timers fired (escalation, ack timeout, breach)"] = (
        f"{len(a.timers)}; {len(hit)} due while down or before the restart")
    r.figures["timers resumed late (beyond restart), max"] = (
        f"{worst_hit:.2f} s" if hit else "- (none due while down)")
    r.figures["timers late while up, max"] = f"{worst_rest * 1000:.0f} ms"
    if hit:
        r.figures["timers that fired though the answer was sent in time (queued while down)"] = (
            f"{len(a.escalated_needlessly)}")
        r.notes += [f"fired though answered in time: {x}" for x in a.escalated_needlessly[:5]]
    r.check("timers resumed late", f"{max(worst_hit, worst_rest):.2f} s",
            max(worst_hit, worst_rest) <= RECOVERY_S, f"<= {RECOVERY_S:g} s")
    worst = sorted(a.timers, key=lambda t: -t.late_beyond_s)[:3]
    r.notes += [f"latest timer: {t.incident} {t.what} due {t.due:.3f} fired {t.t:.3f} "
                f"(+{t.late_beyond_s:.2f} s beyond {'restart' if t.affected else 'due'})"
                for t in worst if t.late_beyond_s > 0.5]


@dataclass
class Outcome:
    """A case's gateway stopped and its record judged: exit code, journal, the three checks."""

    code: int
    steps: list[StepRow]
    audit: Audit
    pages: PageCheck
    influx: InfluxCheck


def stop_and_check(gw: Gw, watch: Watch, inputs: list[Input], site: SiteSpec,
                   influx_base: str, db: str, *, influx_wait_s: float = 30.0) -> Outcome:
    """Stop the gateway (clean), then audit its journal, the pages seen and InfluxDB.

    The last gateway down-window is its final stop, which no page may be blamed on.
    """
    end_t = time.time()
    code = gw.stop()
    steps = read_journal(gw.journal)
    return Outcome(code, steps,
                   audit_steps(steps, inputs, site, gw.windows(), gw.starts(), end_t),
                   check_pages(steps, watch.pages(), gw.downs[:-1]),
                   check_influx(steps, influx_base, db, site.name, wait_s=influx_wait_s))


def _restart_times(gw: Gw) -> list[float]:
    """Spawn -> 'mqtt connected' for every start after the first."""
    conn = gw.connected_at()
    out = []
    for sp in gw.spawns[1:]:
        after = [c for c in conn if c >= sp]
        if after:
            out.append(after[0] - sp)
    return out


# ====================================================================== cases


def case_crash(ctx: Ctx) -> Result:
    """kill -9 of the gateway at seeded random points across >= 50 incidents."""
    r = Result("crash")
    n = ctx.incidents or (50 if ctx.quick else 100)
    kills = ctx.kills if ctx.kills is not None else (3 if ctx.quick else 10)
    spacing = 0.6
    rng = random.Random(ctx.seed)
    site = SiteSpec("faults-crash", buildings=n)
    broker = ctx.broker("crash")
    db = ctx.db("crash")
    gw = Gw(ctx.dir("crash"), "crash", site.yaml(), broker.url, ctx.influx.url(db)).start()
    watch = Watch(broker.port, site.name, "crash")
    actor = Actor(broker.port, site.name, "crash")
    director = Director(watch, actor)
    try:
        kinds = [KINDS[i % len(KINDS)] for i in range(n)]
        rng.shuffle(kinds)
        t_start = time.time() + 0.5
        for i, kind in enumerate(kinds):
            director.add(kind, i, t_start + i * spacing)
        span_end = t_start + n * spacing + 3.0
        # kill plan: one kill per equal slot, at a random time early enough in the slot for
        # the restart and 2.5 s of running before the next; half at a random instant, half
        # 0-20 ms after the next input the scenario publishes (the journal/outbox window)
        slot = (span_end - t_start - 1.0) / max(kills, 1)
        plan = []
        for k in range(kills):
            down = rng.uniform(0.3, min(3.0, max(0.3, slot - 3.0)))
            at = t_start + 1.0 + k * slot + rng.uniform(0, max(0.0, slot - down - 2.5))
            mode = "instant" if k % 2 == 0 else "after-input"
            plan.append((at, mode, rng.uniform(0.0, 0.02), down))
        armed: list[tuple[float, float]] = []

        def kill(down: float) -> None:
            if not gw.alive:  # still down from the previous kill: skip this one
                r.notes.append("a planned kill found the gateway down; skipped")
                return
            t = gw.kill9()
            director.at(t + down, lambda: gw.start(wait=False))

        def after_input(rec: Input) -> None:
            if armed:
                delay, down = armed.pop(0)
                director.at(rec.t + delay, lambda: kill(down))

        actor.hooks.append(after_input)
        for at, mode, delay, down in plan:
            if mode == "instant":
                director.at(at, lambda down=down: kill(down))
            else:
                director.at(at, lambda delay=delay, down=down: armed.append((delay, down)))
        done = director.run(lambda: director.all_done() and gw.alive,
                            timeout=n * spacing + 60)
        armed.clear()
        if not done:
            if not gw.alive:
                gw.start(wait=False)
            stuck = director.close_stragglers()
            r.notes.append(f"{stuck} stories had not finished after the timeout")
            director.run(director.all_done, timeout=15)
        director.run(lambda: False, timeout=1.0)
        out = stop_and_check(gw, watch, director.scenario_inputs(), site,
                             ctx.influx.base_url, db)
        code, steps, a, pc, ic = out.code, out.steps, out.audit, out.pages, out.influx
        restarts = _restart_times(gw)
        downs = [w[1] - w[0] for w in gw.windows()] or [0.0]
        r.done = (f"{n} incidents, one every {spacing} s, people reacting on MQTT; "
                  f"gateway kill -9 x{len(gw.windows())} at seeded random points "
                  f"(seed {ctx.seed}; half of them 0-20 ms after an input), down "
                  f"{min(downs):.1f}-{max(downs):.1f} s each, restarted")
        _stories_figures(r, director)
        r.figures["kills"] = len(gw.windows())
        _add_common_checks(r, a, pc, ic, crashes=len(gw.windows()))
        _retained_check(r, broker, site.name, steps)
        _timer_checks(r, a)
        r.figures["restart: spawn -> MQTT connected"] = (
            f"max {max(restarts):.2f} s" if restarts else "-")
        r.figures["stories finished"] = (f"{sum(1 for s in director.stories if s.finished)}"
                                         f" / {len(director.stories)}")
        r.check("restarted gateways connected", f"{len(restarts)} / {len(gw.windows())}",
                len(restarts) == len(gw.windows()), "all")
        r.check("clean stop at the end", code, code == 0, "exit 0")
    finally:
        watch.close()
        actor.close()
        gw.stop()
        broker.stop()
    return r


def case_offline_alarms(ctx: Ctx) -> Result:
    """Alarms published while the gateway is down: after a clean stop and after kill -9."""
    r = Result("offline-alarms")
    k = 50 if ctx.quick else 200
    site = SiteSpec("faults-offline", buildings=2 * k, confirm_s=600, in_place_s=1200,
                    tier_timeouts=(600.0, 600.0))
    broker = ctx.broker("offline-alarms")
    db = ctx.db("offline")
    gw = Gw(ctx.dir("offline-alarms"), "offline", site.yaml(), broker.url,
            ctx.influx.url(db)).start()
    watch = Watch(broker.port, site.name, "offline")
    actor = Actor(broker.port, site.name, "offline")
    rounds = []
    try:
        for rnd, how in enumerate(("SIGTERM", "kill -9")):
            devices = [f"mcp-{rnd * k + i}" for i in range(k)]
            if how == "SIGTERM":
                code = gw.stop()
                r.check("clean stop", code, code == 0, "exit 0")
            else:
                gw.kill9()
            t_down = gw.downs[-1]
            offline = watch.wait(lambda m, t=t_down: m.topic == "status"
                                 and m.payload == b"offline" and m.t >= t, 20)
            for dev in devices:
                actor.pub(f"signal/{dev}", {"kind": "manual", "state": "alarm"})
                time.sleep(0.01)
            ok = _wait(actor.all_acked, 10)
            time.sleep(0.5)
            gw.start(wait=False)
            t_spawn = gw.spawns[-1]
            _wait(lambda devs=devices: len(watch.incidents_of(devs)) == len(devs), 30)
            seen = watch.incidents_of(devices)
            t_all = max((m.t for m in watch.find(
                lambda m, t=t_spawn: m.topic.startswith("incident/") and m.payload
                and m.t >= t)), default=None) if len(seen) == len(devices) else None
            rounds.append({"how": how, "devices": devices, "spawn": t_spawn,
                           "all_acked": ok, "offline_seen": offline is not None,
                           "recovered_s": (t_all - t_spawn) if t_all else None})
            gw.wait_log("event='mqtt connected'", count=len(gw.spawns))
        time.sleep(1.0)
        out = stop_and_check(gw, watch, actor.inputs, site, ctx.influx.base_url, db)
        code, steps, a, pc, ic = out.code, out.steps, out.audit, out.pages, out.influx
        r.done = (f"{k} manual call points published (QoS 1) while the gateway was down, "
                  "twice: after a clean stop (SIGTERM) and after kill -9; then restarted")
        detected = {s.device: s for s in steps if s.stage == "detected"}
        for rd in rounds:
            got = [d for d in rd["devices"] if d in detected]
            after = [d for d in got if detected[d].t0 >= rd["spawn"]]
            lost = len(rd["devices"]) - len(got)
            r.figures[f"after {rd['how']}: published / processed / lost"] = (
                f"{len(rd['devices'])} / {len(got)} / {lost}")
            r.figures[f"after {rd['how']}: restart -> all incidents on MQTT"] = _fmt_s(
                rd["recovered_s"])
            r.check(f"alarms lost after {rd['how']}", lost, lost == 0, "= 0")
            r.check(f"T0 after the restart ({rd['how']})", f"{len(after)} / {len(got)}",
                    len(after) == len(got), "all (docs/operations.md)")
            rec = rd["recovered_s"]
            r.check(f"recovery after {rd['how']}", _fmt_s(rec),
                    rec is not None and rec <= RECOVERY_S, f"<= {RECOVERY_S:g} s")
            r.check(f"last will seen ({rd['how']})", rd["offline_seen"], rd["offline_seen"],
                    "status offline")
        _add_common_checks(r, a, pc, ic, crashes=1)
        _retained_check(r, broker, site.name, steps)
        r.check("clean stop at the end", code, code == 0, "exit 0")
    finally:
        watch.close()
        actor.close()
        gw.stop()
        broker.stop()
    return r


def _wait(pred: Callable[[], Any], timeout: float, step: float = 0.02) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def case_broker_restart(ctx: Ctx) -> Result:
    """The broker stopped and restarted mid-scenario (persistence as deploy/ sets it)."""
    r = Result("broker-restart")
    down_s = 4.0 if ctx.quick else 10.0
    k = 10 if ctx.quick else 40
    n_a = 10
    site = SiteSpec("faults-broker", buildings=n_a + 2 * k)
    broker = ctx.broker("broker-restart")
    db = ctx.db("broker")
    gw = Gw(ctx.dir("broker-restart"), "broker", site.yaml(), broker.url,
            ctx.influx.url(db)).start()
    watch = Watch(broker.port, site.name, "broker")
    actor = Actor(broker.port, site.name, "broker")
    director = Director(watch, actor)
    try:
        # phase A: the gateway runs; the broker goes away mid-scenario and comes back
        t = time.time() + 0.3
        for i in range(n_a):
            director.add(KINDS[i % len(KINDS)], i, t + 0.3 * i)
        director.run(lambda: False, timeout=0.3 * n_a + 0.8)
        t_stop = time.time()
        broker.stop()  # SIGTERM: Mosquitto saves its persistence file
        t_a = time.time() + 0.5
        for i in range(k):  # alarms raised during the outage: the devices retry them
            director.add("mcp", n_a + i, t_a + (down_s - 1.0) * i / k)
        director.run(lambda: False, timeout=down_s)
        broker.start()
        t_up = time.time()
        director.run(director.all_done, timeout=40)
        conn = [c for c in gw.connected_at() if c >= t_up]
        resub_s = conn[0] - t_up if conn else None
        outage_alarms = {f"mcp-{n_a + i}" for i in range(k)}

        # phase B: alarms queued for the stopped gateway survive a broker restart
        gw.kill9()
        t_b = time.time()
        for i in range(k):
            director.add("mcp", n_a + k + i, t_b + 0.01 * i)
        director.run(lambda: not director.pending() and actor.all_acked(), timeout=15)
        queued_for_gw = {f"mcp-{n_a + k + i}" for i in range(k)}
        time.sleep(0.3)
        broker.stop()
        broker.start()
        t_up_b = time.time()
        gw.start(wait=False)
        director.run(director.all_done, timeout=40)
        if not director.all_done():
            stuck = director.close_stragglers()
            r.notes.append(f"{stuck} stories had not finished")
            director.run(director.all_done, timeout=10)
        director.run(lambda: False, timeout=1.0)
        out = stop_and_check(gw, watch, director.scenario_inputs(), site,
                             ctx.influx.base_url, db)
        code, steps, a, pc, ic = out.code, out.steps, out.audit, out.pages, out.influx
        detected = {s.device: s for s in steps if s.stage == "detected"}
        first_after = min((detected[d].t0 for d in outage_alarms if d in detected), default=None)
        r.done = (f"A: {n_a} incidents under way, broker stopped (SIGTERM) for {down_s:g} s, "
                  f"{k} alarms raised meanwhile (devices retry), restarted. B: gateway kill -9,"
                  f" {k} alarms queued for it, broker restarted, gateway restarted")
        _stories_figures(r, director)
        lost_a = len(outage_alarms - set(detected))
        lost_b = len(queued_for_gw - set(detected))
        r.figures["A: broker down"] = f"{t_up - t_stop:.1f} s"
        r.figures["A: broker up -> gateway resubscribed"] = _fmt_s(resub_s)
        r.figures["A: broker up -> first outage alarm processed"] = _fmt_s(
            first_after - t_up if first_after else None)
        r.figures["A: alarms raised during the outage / lost"] = f"{k} / {lost_a}"
        r.figures["B: alarms queued for the gateway across the restart / lost"] = (
            f"{k} / {lost_b}")
        spawn_b = gw.spawns[-1]
        got_b = [detected[d].t0 for d in queued_for_gw if d in detected]
        r.figures["B: gateway restart -> all queued alarms processed"] = _fmt_s(
            max(got_b) - spawn_b if len(got_b) == k else None)
        r.figures["broker settings (deploy)"] = "; ".join(broker.extra) or "lab defaults"
        r.check("time to resubscribe", _fmt_s(resub_s),
                resub_s is not None and resub_s <= RECOVERY_S, f"<= {RECOVERY_S:g} s")
        r.check("alarms lost across the broker restart", lost_a + lost_b,
                lost_a + lost_b == 0, "= 0")
        _add_common_checks(r, a, pc, ic, crashes=1)
        _retained_check(r, broker, site.name, steps)
        _timer_checks(r, a)
        r.check("clean stop at the end", code, code == 0, "exit 0")
        del t_up_b
    finally:
        watch.close()
        actor.close()
        gw.stop()
        broker.stop()
    return r


def case_broker_crash(ctx: Ctx) -> Result:
    """Beyond the issue's 'stopped and restarted': the broker killed (-9, a power cut) with
    alarms queued for the gateway. Mosquitto saves them only every autosave_interval, so
    only devices that keep their alarm until the gateway's receipt (docs/mqtt.md) lose
    none; devices that send and forget are counted beside them."""
    r = Result("broker-crash")
    k = 10 if ctx.quick else 40
    site = SiteSpec("faults-brokercrash", buildings=2 * k, confirm_s=600, in_place_s=1200,
                    tier_timeouts=(600.0, 600.0))
    broker = ctx.broker("broker-crash")
    db = ctx.db("brokercrash")
    gw = Gw(ctx.dir("broker-crash"), "brokercrash", site.yaml(), broker.url,
            ctx.influx.url(db)).start()
    actor = Actor(broker.port, site.name, "brokercrash")
    keeping = [f"mcp-{i}" for i in range(k)]
    forgetting = [f"mcp-{i}" for i in range(k, 2 * k)]
    fleet = KeepingDetectors("127.0.0.1", broker.port, f"firegrid/{site.name}/", keeping,
                             "manual", f"faults-keeping-{os.getpid()}")
    try:
        # a clean broker restart first, so the gateway's session is in the persistence file
        broker.stop()
        broker.start()
        gw.wait_log("event='mqtt connected'", count=2)
        _wait(lambda: fleet.connects >= 2, 10)
        gw.kill9()
        for a, b in zip(keeping, forgetting, strict=True):
            fleet.alarm(a)
            actor.pub(f"signal/{b}", {"kind": "manual", "state": "alarm"})
        acked = _wait(actor.all_acked, 10)
        time.sleep(1.0)
        broker.kill9()
        broker.start()
        t_up = time.time()
        gw.start()
        confirmed = _wait(lambda: not fleet.unconfirmed(), 30)
        t_receipts = time.time() - t_up
        time.sleep(1.0)
        code = gw.stop()
        steps = read_journal(gw.journal)
        got = {s.device for s in steps if s.stage == "detected"}
        incidents = Counter(s.device for s in steps if s.stage == "detected")
        lost = [d for d in keeping if d not in got]
        twice = [d for d in keeping if incidents.get(d, 0) > 1]
        lost_plain = [d for d in forgetting if d not in got]
        resent = sum(fleet.sent[d] for d in keeping) - k
        r.done = (f"gateway session saved by a clean broker restart; gateway kill -9; {k} "
                  f"alarms from devices that keep them until the gateway's receipt and {k} "
                  "from devices that send and forget, all acknowledged by the broker; 1 s "
                  "later the broker killed (-9); broker and gateway restarted")
        r.figures["alarms acknowledged by the broker (send and forget)"] = (
            f"{k} (all acked: {acked})")
        r.figures["receipting devices: alarms lost / sent again"] = f"{len(lost)} / {resent}"
        r.figures["broker up -> every receipt back"] = (
            f"{t_receipts:.2f} s" if confirmed else f"not within 30 s ({fleet.unconfirmed()})")
        r.figures["send-and-forget devices: alarms lost"] = f"{len(lost_plain)} of {k}"
        r.figures["broker settings (deploy)"] = "; ".join(broker.extra) or "lab defaults"
        r.check("alarms lost across a broker crash (receipting devices)", len(lost), not lost,
                "= 0")
        r.check("an alarm sent again opens no second incident", len(twice), not twice, "= 0")
        r.check("receipts back after the crash", _fmt_s(t_receipts if confirmed else None),
                confirmed and t_receipts <= RECOVERY_S, f"<= {RECOVERY_S:g} s")
        r.check("clean stop at the end", code, code == 0, "exit 0")
        if lost_plain:
            r.notes.append("Mosquitto writes its persistence file only every autosave_interval"
                           " seconds and on a clean stop: what devices sent and forgot since "
                           "the last save dies with it")
    finally:
        fleet.close()
        actor.close()
        gw.stop()
        broker.stop()
    return r


def case_influx_outage(ctx: Ctx) -> Result:
    """InfluxDB down for --influx-outage-s under load: points lost, order, catch-up."""
    r = Result("influx-outage")
    outage = ctx.influx_outage_s
    buildings = 60
    site = SiteSpec("faults-influx", buildings=buildings, temps=200, heartbeats=50)
    broker = ctx.broker("influx-outage")
    influx = InfluxDB()
    ctx.servers.append(influx)
    influx.start(ctx.dir("influx-outage") / "influxd")
    db = "faults_influx"
    gw = Gw(ctx.dir("influx-outage"), "influx", site.yaml(), broker.url, influx.url(db)).start()
    watch = Watch(broker.port, site.name, "influx")
    actor = Actor(broker.port, site.name, "influx")
    director = Director(watch, actor)
    telemetry_rate, heartbeat_rate = 500.0, 50.0
    warm, tail = 10.0, 10.0
    total = warm + outage + 30.0 + tail
    prefix = f"firegrid/{site.name}/signal/"
    tele = [(f"{prefix}tmp-{i}", orjson.dumps({"kind": "temperature", "state": "clear",
                                                "value": 20 + i % 7}))
            for i in range(site.temps)]
    beats = [(f"{prefix}hb-{i}", orjson.dumps({"kind": "smoke", "state": "test"}))
             for i in range(site.heartbeats)]
    loads = [Load(broker.port, tele, telemetry_rate, total, "tele"),
             Load(broker.port, beats, heartbeat_rate, total, "beat")]
    try:
        t0 = time.time()
        for load in loads:
            load.start()
        spacing = 2.5
        n_stories = int((total - tail) / spacing)
        for i in range(n_stories):
            director.add(KINDS[i % len(KINDS)], i % buildings, t0 + 1.0 + i * spacing)
        director.run(lambda: False, timeout=warm)
        t_stop = time.time()
        influx.stop()
        director.run(lambda: False, timeout=outage)
        influx.start()
        t_back = time.time()
        q_steps = (f"SELECT count(elapsed_s) FROM incident_step WHERE site = '{site.name}' "
                   f"AND time <= {int(t_back * NS)}")
        q_beats = (f"SELECT count(n) FROM signal WHERE site = '{site.name}' AND state = 'test'"
                   f" AND time <= {int(t_back * NS)}")
        samples: list[tuple[float, int, int]] = []

        def poll() -> None:  # what InfluxDB holds of the backlog, every 0.2 s
            if samples and time.time() - samples[-1][0] < 0.2:
                return
            samples.append((time.time(), influx_count(influx.base_url, db, q_steps),
                            influx_count(influx.base_url, db, q_beats)))

        director.run(lambda: False, timeout=30.0, also=poll)
        director.run(lambda: all(not ld.proc.is_alive() for ld in loads),
                     timeout=total + 60 - (time.time() - t0))
        results = [load.result(timeout=30) for load in loads]
        director.run(director.all_done, timeout=40)
        if not director.all_done():
            r.notes.append(f"{director.close_stragglers()} stories had not finished")
            director.run(director.all_done, timeout=10)
        director.run(lambda: False, timeout=2.0)
        out = stop_and_check(gw, watch, director.scenario_inputs(), site, influx.base_url, db,
                             influx_wait_s=60)
        code, steps, a, pc, ic = out.code, out.steps, out.audit, out.pages, out.influx
        counters = gw.counters()
        # the backlog at InfluxDB's return, known now: steps and heartbeats up to t_back
        backlog_steps = sum(1 for st in steps if st.t <= t_back)
        backlog_beats = influx_count(influx.base_url, db, q_beats)
        steps_caught = next((t - t_back for t, n, _ in samples if n >= backlog_steps), None)
        beats_caught = next((t - t_back for t, _, n in samples if n >= backlog_beats), None)
        beats_acked = results[1]["acked"]
        beats_in = influx_count(influx.base_url, db,
                                f"SELECT count(n) FROM signal WHERE site = '{site.name}' "
                                "AND state = 'test'")
        shed = (counters.get("dropped.journal_full", 0) + counters.get("dropped.shed_overload", 0)
                + counters.get("dropped.flooding", 0))
        r.done = (f"{len(director.stories)} incidents (one every {spacing:g} s) under "
                  f"{telemetry_rate:g} telemetry + {heartbeat_rate:g} heartbeat signals/s; "
                  f"InfluxDB stopped {warm:g} s in, for {t_back - t_stop:.0f} s, restarted")
        _stories_figures(r, director)
        r.figures["backlog at InfluxDB's return"] = (f"{backlog_steps} steps, "
                                                      f"{backlog_beats} heartbeat points")
        r.figures["InfluxDB back -> backlog of steps in"] = _fmt_s(steps_caught)
        r.figures["InfluxDB back -> backlog of heartbeats in"] = _fmt_s(beats_caught)
        r.figures["heartbeat points published / in InfluxDB"] = f"{beats_acked} / {beats_in}"
        r.figures["steps in InfluxDB / journal"] = f"{ic.influx} / {ic.journal}"
        r.figures["gateway counters"] = " ".join(f"{k}={v}" for k, v in sorted(counters.items())
                                                if k.startswith(("influx", "dropped")))
        r.check("audit points lost (steps)", len(ic.lost), not ic.lost, "= 0")
        r.check("audit points lost (heartbeat records)", beats_acked - max(beats_in, 0) - shed,
                beats_in + shed >= beats_acked, "= 0 (or counted as shed)")
        r.check("order kept (per incident, time order = journal order)",
                f"{len(ic.order_broken)} broken", not ic.order_broken, "= 0")
        r.check("catch-up time", _fmt_s(steps_caught),
                steps_caught is not None and steps_caught <= RECOVERY_S, f"<= {RECOVERY_S:g} s")
        _add_common_checks(r, a, pc, ic, crashes=None)
        _retained_check(r, broker, site.name, steps)
        _timer_checks(r, a)
        r.check("clean stop at the end", code, code == 0, "exit 0")
    finally:
        for load in loads:
            load.stop()
        watch.close()
        actor.close()
        gw.stop()
        influx.stop()
        broker.stop()
    return r


SERIAL_FEED = "panel"
SERIAL_MIN_UP_S = 5.2  # a pull comes this long after the port was last reopened, at least
SERIAL_OUTAGE_S = (0.5, 5.0)  # how long the cable stays out (seeded)
SERIAL_REOPEN_S = 0.3  # a record printed this soon after the plug-in may beat the reopen


def _plugged_before(pull_log: list[dict], t: float) -> float:
    """When the cable was last put back before ``t``."""
    return max((p["plug"] for p in pull_log if p["plug"] <= t), default=float("-inf"))
SERIAL_GUARD_S = 0.3  # no alarm this close before a pull: it would be cut off in flight
GARBAGE_LATENCY_S = 1.0  # every alarm among the garbage: an incident within this


class PanelLine:
    """A fire panel's printer cable: two linked pseudo-terminals made by socat, the panel's
    end held open by the bench, the gateway's end named in the site file. ``pull()`` kills
    socat by its PID: both ends vanish, as a USB-serial adapter's port does when it is
    unplugged, and what the panel prints meanwhile goes nowhere. ``plug()`` starts socat
    again on the same paths (a new pty pair); the gateway must reopen it by itself."""

    def __init__(self, folder: Path):
        self.device = folder / "panel-dev"  # the panel's end
        self.gateway = folder / "panel-gw"  # the gateway's end (the site file names it)
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd: int | None = None
        self.plugs: list[tuple[float, float]] = []  # (socat started, both links there)
        self.pulls: list[float] = []

    @property
    def plugged(self) -> bool:
        return self.fd is not None

    def plug(self) -> tuple[float, float]:
        """Start socat; the cable is in once both links exist (polled every 2 ms). Returns
        (socat started, links seen): the gateway may open its end in between."""
        t_spawn = time.time()
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.device}",
             f"pty,raw,echo=0,link={self.gateway}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_pdeathsig())
        _LIVE.add(self)
        if not _wait(lambda: self.device.exists() and self.gateway.exists(), 5, 0.002):
            self.stop()
            raise RuntimeError("socat did not make its pseudo-terminals within 5 s")
        t = time.time()
        self.fd = os.open(self.device, os.O_WRONLY | os.O_NOCTTY)
        self.plugs.append((t_spawn, t))
        return t_spawn, t

    def pull(self) -> float:
        """Kill socat (SIGTERM by PID): the cable is out. Returns when that began."""
        t = time.time()
        self._unplug()
        self.pulls.append(t)
        return t

    def write(self, data: bytes) -> bool:
        """Put bytes on the line; False if the cable is out (they went nowhere)."""
        if self.fd is None:
            return False
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            return False
        return True

    def _unplug(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        self._unplug()
        _LIVE.discard(self)


class SerialWatch(Watch):
    """The duty-room subscriber, also reading the feeds' link states (``feed/<name>``)."""

    TOPICS = (*Watch.TOPICS, "feed/+")


@dataclass
class PanelAlarm:
    """One fire record the panel printed (or tried to, with the cable out)."""

    device: str
    phase: str  # quiet, pulls, garbage
    t: float  # when its last byte was written (or the write was refused)
    written: bool  # False: the cable was out
    incident: str | None = None
    handled: float | None = None  # first incident/<id> message listing the device
    gap: bool = False  # written after a plug-in, before the gateway had reopened the port

    @property
    def latency(self) -> float | None:
        return None if self.handled is None else self.handled - self.t


def serial_site(n: int, port: Path) -> tuple[str, list[tuple[str, str, int]]]:
    """A site of ``n`` far-apart buildings, each one smoke detector on the panel's loops
    (so every alarm is an incident of its own); returns the YAML and (device, ref, b)."""
    points = [(f"pnl-{b}", f"{1 + b % 2:03d}-{1 + b // 2:03d}", b) for b in range(n)]
    lines = ["site: faults-serial",
             "sla: {locate_s: 10, confirm_s: 600, in_place_s: 1200}", "zones:"]
    for b in range(n):
        x = b * 100
        lines.append(f"  - {{id: z{b}, building: b{b}, floor: 1, polygon: "
                     f"[[{x},0],[{x + 20},0],[{x + 20},10],[{x},10]], worker: w-1}}")
    lines += ["feeds:",
              f"  - {{name: {SERIAL_FEED}, type: panel-printer, port: \"{port}\", baud: 9600,"
              " dialect: gst}", "devices:"]
    for dev, ref, b in points:
        lines.append(f"  - {{id: {dev}, kind: smoke, floor: 1, x: {b * 100 + 5}, y: 5, "
                     f"feed: {SERIAL_FEED}, ref: \"{ref}\"}}")
    lines += ["responders:", "  - {id: w-1, name: grid worker, tier: 0}",
              "  - {id: guard-1, tier: 1}", "tiers:", "  - {tier: 1, ack_timeout_s: 600}"]
    return "\n".join(lines) + "\n", points


class SerialScenario:
    """The panel, the cable and the duty room on one clock: a heap of timed actions (prints,
    pulls, plugs, garbage) run from one loop that also closes every incident as soon as it
    is seen, so the same loop-point can alarm again."""

    def __init__(self, line: PanelLine, watch: SerialWatch, actor: Actor,
                 points: list[tuple[str, str, int]], seed: int):
        self.line = line
        self.watch = watch
        self.actor = actor
        self.points = points
        self.rng_alarm = random.Random(seed * 1_000 + 1)  # alarm times and record splits
        self.rng_pull = random.Random(seed * 1_000 + 2)  # pull moments and outages
        self.rng_junk = random.Random(seed * 1_000 + 3)  # what the garbage is
        self.alarms: list[PanelAlarm] = []
        self.first_seen: dict[str, tuple[float, tuple[str, ...]]] = {}  # incident -> t, devs
        self.closing: set[str] = set()
        self.links: list[tuple[float, str, float, bool]] = []  # t, state, since, retained
        self.troubles: list[tuple[float, dict[str, Any]]] = []  # trouble/<feed>
        self.garbage: Counter[str] = Counter()  # bytes written, by kind
        self.next_pull: float | None = None
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._turn = 0
        self._fired: set[str] = set()  # loop-points printed once (首次火警, then 火警后续)
        self.busy = False  # a record is being written in pieces: no garbage in between

    # -------------------------------------------------------------- the clock
    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn))

    def run(self, until: Callable[[], bool], timeout: float) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            self.drain()
            now = time.time()
            while self._heap and self._heap[0][0] <= now:
                _, _, fn = heapq.heappop(self._heap)
                fn()
            if until():
                return True
            time.sleep(0.002)
        self.drain()
        return False

    def idle(self) -> bool:
        return not self._heap

    def clear(self) -> None:
        self._heap.clear()

    def drain(self) -> None:
        while True:
            try:
                m = self.watch.events.get_nowait()
            except queue.Empty:
                return
            if not m.payload:
                continue
            if m.topic == f"feed/{SERIAL_FEED}":
                body = m.json()
                self.links.append((m.t, body.get("state", ""), float(body.get("since", 0)),
                                   m.retain))
            elif m.topic == f"trouble/{SERIAL_FEED}":
                self.troubles.append((m.t, m.json()))
            elif m.topic.startswith("incident/") and m.topic.count("/") == 1:
                body = m.json()
                inc = body.get("id", "")
                self.first_seen.setdefault(inc, (m.t, tuple(body.get("devices") or ())))
                if body.get("state") not in ("closed", "dismissed") and inc not in self.closing:
                    self.closing.add(inc)
                    self.actor.pub(f"incident/{inc}/close",
                                   {"by": "w-1", "reason": "fault suite: serial"})

    # ------------------------------------------------------------ the panel
    def up_since(self, after: float) -> float | None:
        """When the gateway reopened the port after ``after`` (its feed/<name> 'up')."""
        return next((s for _t, state, s, _r in self.links if state == "up" and s >= after),
                    None)

    def record(self, phase: str, split: int = 1) -> None:
        """The panel prints a fire record for the next loop-point in turn."""
        dev, ref, b = self.points[self._turn % len(self.points)]
        self._turn += 1
        data = encode_gst("fire", ref, datetime.now(), label=f"{b}号楼一层",
                          device_type="感烟探测器", first=ref not in self._fired)
        self._fired.add(ref)
        if split <= 1 or not self.line.plugged:
            ok = self.line.write(data)
            self.alarms.append(PanelAlarm(dev, phase, time.time(), ok))
            return
        cuts = sorted(self.rng_alarm.sample(range(1, len(data)), split - 1))
        pieces = [data[a:z] for a, z in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        self.busy = True
        state = {"ok": True}

        def piece(i: int) -> None:
            state["ok"] = self.line.write(pieces[i]) and state["ok"]
            if i + 1 < len(pieces):
                self.at(time.time() + self.rng_alarm.uniform(0.005, 0.03),
                        lambda: piece(i + 1))
            else:
                self.busy = False
                self.alarms.append(PanelAlarm(dev, phase, time.time(), state["ok"]))

        piece(0)

    def stream(self, phase: str, spacing: tuple[float, float], until: float,
               split: tuple[int, int] = (1, 1)) -> None:
        """Fire records every ``spacing`` seconds (seeded) until ``until``; none within
        SERIAL_GUARD_S before a pull (it is printed just after, with the cable out)."""
        def tick() -> None:
            now = time.time()
            if now >= until:
                return
            if self.next_pull is not None and 0 <= self.next_pull - now < SERIAL_GUARD_S:
                self.at(self.next_pull + 0.05, tick)
                return
            self.record(phase, self.rng_alarm.randint(*split))
            self.at(now + self.rng_alarm.uniform(*spacing), tick)

        self.at(time.time() + self.rng_alarm.uniform(*spacing) / 2, tick)

    def junk(self, rate: float, until: float, tick_s: float = 0.05) -> None:
        """Garbage at ``rate`` bytes/s until ``until``: random bytes, other brands' printer
        ESC sequences, and records cut short (of points on no loop here, cut anywhere; of
        our points, cut before the event words), never inside a real record."""
        start = time.time()
        far = [f"009-{p:03d}" for p in range(1, 40)]

        def tick() -> None:
            now = time.time()
            if now >= until:
                return
            due = int((min(now, until) - start) * rate) - sum(self.garbage.values())
            while due > 0 and not self.busy:
                roll = self.rng_junk.random()
                if roll < 0.15:
                    data, kind = self.rng_junk.choice(NOISE), "other brands' ESC sequences"
                elif roll < 0.25:
                    ours = self.rng_junk.random() < 0.5
                    ref = (self.rng_junk.choice(self.points)[1] if ours
                           else self.rng_junk.choice(far))
                    full = encode_gst("fire", ref, datetime.now(), label="garbage")
                    end = full.index(ESC_TEXT) + 2 if ours else len(full) - 2
                    data, kind = full[:self.rng_junk.randrange(2, end)], "truncated records"
                else:
                    n = min(due, self.rng_junk.randint(8, 96))
                    data, kind = self.rng_junk.randbytes(n), "random bytes"
                if self.line.write(data):
                    self.garbage[kind] += len(data)
                due -= len(data)
            self.at(now + tick_s, tick)

        self.at(start, tick)


def _quantile_text(values: list[float], ps: Iterable[float] = (50, 99), unit: str = "ms",
                   with_max: bool = True) -> str:
    if not values:
        return "-"
    k = 1000.0 if unit == "ms" else 1.0
    fmt = "{:.0f} ms" if unit == "ms" else "{:.2f} s"
    parts = [f"p{p:g} {fmt.format(_pct(values, p) * k)}" for p in ps]
    if with_max:
        parts.append(f"max {fmt.format(max(values) * k)}")
    return ", ".join(parts) + f" (n={len(values)})"


def case_serial(ctx: Ctx) -> Result:
    """A panel's printer cable pulled and put back, and a panel sending garbage."""
    r = Result("serial")
    n_points = 10 if ctx.quick else 20
    pulls = ctx.pulls if ctx.pulls is not None else (2 if ctx.quick else 10)
    garbage_s = ctx.garbage_s if ctx.garbage_s is not None else (5.0 if ctx.quick else 60.0)
    pull_spread = 1.0 if ctx.quick else 4.0
    alarm_every = (0.7, 1.5)  # while the cable is pulled and put back
    junk_every = (0.8, 1.6) if ctx.quick else (1.0, 3.0)  # fire records among the garbage
    line_rate = 9600 / 10  # bytes/s a 9600 baud 8N1 line carries: garbage fills it
    folder = ctx.dir("serial")
    line = PanelLine(folder)
    text, points = serial_site(n_points, line.gateway)
    broker = ctx.broker("serial")
    db = ctx.db("serial")
    gw = Gw(folder, "serial", text, broker.url, ctx.influx.url(db))
    watch: SerialWatch | None = None
    actor: Actor | None = None
    try:
        line.plug()
        gw.start()
        pid = gw.pid
        watch = SerialWatch(broker.port, "faults-serial", "serial")
        actor = Actor(broker.port, "faults-serial", "serial")
        sc = SerialScenario(line, watch, actor, points, ctx.seed)
        if not sc.run(lambda: sc.up_since(0) is not None, 10):
            raise RuntimeError("the gateway never reported feed/panel up")

        # (a) one fire record per loop-point on a quiet line, each incident closed
        t = time.time()
        for i in range(n_points):
            sc.at(t + 0.3 + 0.3 * i, lambda: sc.record("quiet"))
        sc.run(lambda: sc.idle() and len(sc.closing) >= n_points, n_points * 0.3 + 10)
        sc.run(lambda: False, 0.5)

        # (b) the cable pulled K times at seeded moments, out 0.5-5 s, put back; the panel
        # prints a fire every 0.7-1.5 s throughout, with the cable in or out
        pull_log: list[dict[str, Any]] = []
        sc.stream("pulls", alarm_every, until=float("inf"))
        last_up = sc.up_since(0) or time.time()
        for k in range(pulls):
            at = max(last_up + SERIAL_MIN_UP_S, time.time()) + sc.rng_pull.uniform(0, pull_spread)
            outage = sc.rng_pull.uniform(*SERIAL_OUTAGE_S)
            sc.next_pull = at
            sc.run(lambda at=at: time.time() >= at, at - time.time() + 1)
            t_pull = line.pull()
            sc.next_pull = None
            sc.run(lambda: False, max(0.0, t_pull + outage - time.time()))
            t_spawn, t_plug = line.plug()
            ok = sc.run(lambda t_spawn=t_spawn: sc.up_since(t_spawn) is not None, 20)
            up = sc.up_since(t_spawn)
            pull_log.append({"pull": t_pull, "plug": t_plug, "outage": t_plug - t_pull,
                             "up": up if up is None else max(up, t_plug)})
            if not ok or up is None:
                r.notes.append(f"pull {k + 1}: the gateway did not reopen the port within 20 s")
                break
            last_up = up
        sc.run(lambda: False, 3.0)  # the next fire after the last plug-in, handled
        sc.clear()
        alive_b = gw.alive
        sc.run(lambda: False, 1.0)

        # (c) garbage at the line's full rate for garbage_s, real fire records among it
        t_c = time.time()
        t_c_end = t_c + garbage_s
        sc.junk(line_rate, t_c_end)
        sc.stream("garbage", junk_every, until=t_c_end - 0.3, split=(1, 3))
        sc.run(lambda: time.time() >= t_c_end and not sc.busy, garbage_s + 10)
        sc.run(lambda: False, 1.5)
        alive_c = gw.alive
        same_pid = gw.pid == pid
        end_t = time.time()
        code = gw.stop()
        counters = gw.counters()
        steps = read_journal(gw.journal)
        retained = retained_states(broker.port, "faults-serial", wait_s=0.5)
        sc.drain()

        # ------------------------------------------------------------ matching
        # an alarm's incident: the first incident listing its device that appeared after it
        # was written and before the next record for that device was written
        by_dev: dict[str, list[PanelAlarm]] = defaultdict(list)
        for a in sc.alarms:
            if a.written:
                by_dev[a.device].append(a)
        firsts = sorted((t0, inc, devs) for inc, (t0, devs) in sc.first_seen.items())
        matched: set[str] = set()
        for dev, alarms in by_dev.items():
            for i, a in enumerate(alarms):
                nxt = alarms[i + 1].t if i + 1 < len(alarms) else float("inf")
                hit = next((inc for t0, inc, devs in firsts if dev in devs and a.t <= t0 < nxt
                            and inc not in matched), None)
                if hit is not None:
                    matched.add(hit)
                    a.incident, a.handled = hit, sc.first_seen[hit][0]
        for p in pull_log:  # written after the plug-in, before the port was open again
            for a in sc.alarms:
                if a.written and p["plug"] <= a.t < (p["up"] or end_t):
                    a.gap = True
        phantom = sorted(set(sc.first_seen) - matched)

        written = [a for a in sc.alarms if a.written]
        unplugged = [a for a in sc.alarms if not a.written]
        open_port = [a for a in written if not a.gap]
        gap = [a for a in written if a.gap]
        lost_open = [a for a in open_port if a.incident is None]
        lost_gap = [a for a in gap if a.incident is None]
        quiet = [a for a in written if a.phase == "quiet"]
        junky = [a for a in written if a.phase == "garbage"]
        lat_quiet = [a.latency for a in quiet if a.latency is not None]
        lat_junk = [a.latency for a in junky if a.latency is not None]
        slow = [a for a in junky if a.latency is None or a.latency > GARBAGE_LATENCY_S]
        to_up = [p["up"] - p["plug"] for p in pull_log if p["up"] is not None]
        up_seen: list[float] = []  # plug -> the 'up' message on MQTT (a duty room's view)
        downs_seen = troubles_seen = 0
        to_next: list[float] = []
        for i, p in enumerate(pull_log):
            t_next_pull = pull_log[i + 1]["pull"] if i + 1 < len(pull_log) else end_t
            msg = next((t for t, st, s, _r in sc.links if st == "up" and t >= p["plug"]), None)
            if msg is not None:
                up_seen.append(msg - p["plug"])
            if any(st == "down" and p["pull"] <= t < p["plug"] + 5 for t, st, _s, _r
                   in sc.links):
                downs_seen += 1
            if any(p["pull"] <= t < p["plug"] + 5 and b.get("trouble") == "offline"
                   for t, b in sc.troubles):
                troubles_seen += 1
            nxt = next((a for a in sc.alarms if a.handled is not None
                        and p["plug"] <= a.t < t_next_pull), None)
            if nxt is not None:
                to_next.append(nxt.handled - p["plug"])
        down_in_junk = sum(1 for t, st, _s, _r in sc.links if st == "down" and t >= t_c)
        journal_incs = {s.incident for s in steps if s.stage == "detected"}
        closed = {s.incident for s in steps if s.stage == "closed"}
        bad_retained = []
        for a in written:
            if a.incident is None:
                continue
            raw = retained.get(f"incident/{a.incident}")
            devs = orjson.loads(raw).get("devices", []) if raw else []
            if a.device not in devs:
                bad_retained.append(f"incident/{a.incident}: retained "
                                    f"{'devices ' + str(devs) if raw else 'nothing'}, "
                                    f"not {a.device}")
        tracebacks = gw.text().count("Traceback")
        junk_total = sum(sc.garbage.values())
        restarts = len(gw.spawns) - 1  # the bench starts it once: any other is a new pid

        r.done = (f"{n_points} loop-points of a GST panel printer feed (socat pty pair, 9600 "
                  f"baud), one building each; every incident closed when seen. (a) one fire "
                  f"record per point on a quiet line. (b) the cable pulled {len(pull_log)}x "
                  f"(socat killed by PID) at seeded moments (seed {ctx.seed}), out "
                  f"{SERIAL_OUTAGE_S[0]:g}-{SERIAL_OUTAGE_S[1]:g} s, put back; a fire every "
                  f"{alarm_every[0]:g}-{alarm_every[1]:g} s throughout. (c) {garbage_s:g} s of "
                  f"garbage at the line's rate ({line_rate:.0f} B/s: random bytes, other brands'"
                  f" ESC sequences, cut-off records), a fire record every {junk_every[0]:g}-"
                  f"{junk_every[1]:g} s among it, in 1-3 writes")
        r.figures["alarms sent (plugged) / incidents opened / lost"] = (
            f"{len(written)} / {len(sc.first_seen)} / {len(lost_open) + len(lost_gap)}")
        r.figures["  of which with the port open / lost"] = f"{len(open_port)} / {len(lost_open)}"
        r.figures["  of which after plug-in, before the port was reopened / lost"] = (
            f"{len(gap)} / {len(lost_gap)}")
        r.figures["alarms sent while unplugged (physically lost, not counted)"] = len(unplugged)
        r.figures["incidents with no alarm sent"] = len(phantom)
        r.figures["incidents on MQTT / in the journal / closed"] = (
            f"{len(sc.first_seen)} / {len(journal_incs)} / {len(closed)}")
        r.figures["pulls: outage"] = _quantile_text([p["outage"] for p in pull_log], (50,),
                                                    unit="s")
        r.figures["pulls reported (feed/panel down; trouble/panel offline)"] = (
            f"{downs_seen}; {troubles_seen} of {len(pull_log)}")
        r.figures["recovery: plug -> port reopened (feed/panel up)"] = _quantile_text(
            to_up, (50,), unit="s")
        r.figures["recovery: plug -> 'up' on MQTT"] = _quantile_text(up_seen, (50,), unit="s")
        r.figures["recovery: plug -> next alarm handled"] = _quantile_text(to_next, (50,),
                                                                           unit="s")
        r.figures["alarm latency, quiet line (write -> incident on MQTT)"] = _quantile_text(
            lat_quiet)
        r.figures["alarm latency during garbage"] = _quantile_text(lat_junk)
        r.figures["alarms during garbage: sent / incidents / later than 1 s or lost"] = (
            f"{len(junky)} / {sum(1 for a in junky if a.incident)} / {len(slow)}")
        r.figures["garbage bytes sent"] = (f"{junk_total} in {garbage_s:g} s ("
                                           + ", ".join(f"{k} {v}" for k, v in
                                                       sorted(sc.garbage.items())) + ")")
        r.figures["feed/panel down during garbage"] = down_in_junk
        r.figures["gateway counters"] = " ".join(
            f"{k}={v}" for k, v in sorted(counters.items())
            if k.startswith("dropped") or k in ("feed_restarts", "inputs")) or "-"
        r.figures["gateway restarts"] = (
            f"{restarts}; pid {pid} running after the pulls: {alive_b}, after the garbage: "
            f"{alive_c}" + ("" if same_pid else " (pid changed)"))
        r.figures["tracebacks in the gateway log"] = tracebacks

        r.check("alarms lost with the port open", len(lost_open), not lost_open, "= 0")
        # the gateway watches for a missing port every 50 ms: only a record printed in the
        # instant before it reopens may be lost, as on any reader of a port that keeps nothing
        late_gap = [a for a in lost_gap if a.t - _plugged_before(pull_log, a.t) > SERIAL_REOPEN_S]
        r.check("alarms lost after plug-in", len(lost_gap), not late_gap,
                f"none written later than {SERIAL_REOPEN_S:g} s after the plug-in")
        r.check("alarms lost during garbage", sum(1 for a in junky if a.incident is None),
                all(a.incident for a in junky), "= 0")
        r.check("incidents with no alarm sent", len(phantom), not phantom, "= 0")
        r.check("gateway restarts", restarts, restarts == 0 and alive_b and alive_c
                and same_pid, "= 0, the same process running throughout")
        r.check("pulls done and reported", f"{len(pull_log)} / {pulls}; down {downs_seen}, "
                f"offline {troubles_seen}", len(pull_log) == pulls and downs_seen == pulls
                and troubles_seen == pulls, "all")
        worst_up = max(to_up, default=0.0)
        r.check("recovery: plug -> port reopened", _fmt_s(worst_up if to_up else None),
                len(to_up) == pulls and worst_up <= RECOVERY_S, f"<= {RECOVERY_S:g} s each")
        worst_next = max(to_next, default=0.0)
        r.check("recovery: plug -> next alarm handled", _fmt_s(worst_next if to_next else None),
                len(to_next) == len(pull_log) and worst_next <= RECOVERY_S + max(alarm_every),
                f"<= {RECOVERY_S:g} s + one alarm interval ({max(alarm_every):g} s)")
        worst_junk = max(lat_junk, default=0.0)
        r.check("every alarm during garbage handled", _fmt_s(worst_junk if lat_junk else None),
                (bool(junky) or garbage_s < 2) and not slow, f"<= {GARBAGE_LATENCY_S:g} s each")
        r.check("feed stayed up during garbage", down_in_junk, down_in_junk == 0, "= 0 downs")
        r.check("[extra] retained incident/<id> lists the device", len(bad_retained),
                not bad_retained, "= 0 wrong")
        r.check("incidents in the journal", f"{len(journal_incs)} / {len(sc.first_seen)}",
                journal_incs == set(sc.first_seen), "= on MQTT")
        r.check("clean stop at the end", code, code == 0, "exit 0")
        r.notes += [f"lost with the port open: {a.device} written at {a.t:.3f} ({a.phase})"
                    for a in lost_open[:10]]
        r.notes += [f"lost after plug-in, before the port was reopened: {a.device} written "
                    f"at {a.t:.3f}" for a in lost_gap[:10]]
        r.notes += [f"slow during garbage: {a.device} written at {a.t:.3f}: "
                    + (f"{a.latency:.3f} s" if a.latency is not None else "no incident")
                    for a in slow[:10]]
        r.notes += [f"incident with no alarm sent: {inc} {sc.first_seen[inc][1]}"
                    for inc in phantom[:10]]
        r.notes += bad_retained[:10]
        for i, p in enumerate(pull_log):
            r.notes.append(f"pull {i + 1}: out {p['outage']:.2f} s, port reopened "
                           + (f"{p['up'] - p['plug']:.2f} s after the plug-in" if p["up"]
                              else "never"))
    finally:
        if watch is not None:
            watch.close()
        if actor is not None:
            actor.close()
        gw.stop()
        line.stop()
        broker.stop()
    return r


def _alarm_latencies(gw: Gw, published: dict[str, float]) -> list[float]:
    """publish -> 'located' durable (the step's log line, written after the COMMIT), s."""
    return [total for total, _way_in in _alarm_splits(gw, published).values()]


def _alarm_splits(gw: Gw, published: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Per alarm: (publish -> located durable, publish -> T0 the gateway's receipt), s.

    The second part is the way in (publisher, broker, socket); the rest is the gateway."""
    steps = read_journal(gw.journal)
    first = {s.device: s for s in steps if s.stage == "detected"}
    durable = gw.durable("located")
    return {d: (durable[first[d].incident] - t, first[d].t0 - t) for d, t in published.items()
            if d in first and first[d].incident in durable}


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))]


# bench/ingest.py's highest zero-loss ingest rate on this machine (docs/benchmarks.md)
DOCUMENTED_CAPACITY = 23000.0
SYS_WAIT_S = 2.5  # one sys_interval of deploy/mosquitto/firegrid.conf (2 s), and some


FLOOD_TEMPS, FLOOD_HEARTBEATS = 13, 3  # the overload flood's devices (16 publishers)


def case_overload(ctx: Ctx) -> Result:
    """Telemetry and heartbeats at twice the gateway's capacity: alarms, shed, counted."""
    r = Result("overload")
    n_alarms, max_alarms = 20, 60
    site = SiteSpec("faults-overload", buildings=max_alarms, confirm_s=600, in_place_s=1200,
                    tier_timeouts=(600.0, 600.0), temps=200, heartbeats=50, markers=4)
    broker = ctx.broker("overload")
    prefix = f"firegrid/{site.name}/signal/"
    # sixteen publishers, one device each: 13 temperature sensors reporting values and 3
    # smoke detectors' routine heartbeats (about 4:1; before 27 November 2026 (evening)
    # the sixteen were all heartbeats, the first sixteen topic names in sorted order)
    mix: list[tuple[str, bytes]] = []
    for i in range(FLOOD_TEMPS):
        for v in range(9):
            mix.append((f"{prefix}tmp-{i}", orjson.dumps(
                {"kind": "temperature", "state": "clear", "value": 20 + (i + v) % 9})))
    for i in range(FLOOD_HEARTBEATS):
        mix.append((f"{prefix}hb-{i}", orjson.dumps({"kind": "smoke", "state": "clear"})))

    def phase(name: str, rate: float, seconds: float) -> dict[str, Any]:
        """A fresh gateway (own journal, own session), optional flood, alarms among it."""
        sub = SiteSpec(f"faults-{name}", **{k: getattr(site, k) for k in (
            "buildings", "confirm_s", "in_place_s", "tier_timeouts", "temps", "heartbeats",
            "markers")})
        msgs = [(t.replace(site.name, sub.name), p) for t, p in mix]
        gw = Gw(ctx.dir("overload"), name, sub.yaml(), broker.url,
                ctx.influx.url(ctx.db(name))).start()
        watch = Watch(broker.port, sub.name, name)
        actor = Actor(broker.port, sub.name, name)
        loads = [PubFlood("127.0.0.1", broker.port, msgs, rate, seconds, name,
                          nice=ctx.load_nice)] if rate else []
        _LIVE.update(loads)
        published: dict[str, float] = {}
        try:
            for load in loads:
                load.start()
            t0 = time.time()
            every = max(seconds, 2.0) / n_alarms
            i = 0  # n_alarms over the flood's nominal length, more while it actually lasts
            while i < max_alarms and (i < n_alarms or any(ld.running() for ld in loads)):
                delay = t0 + (i + 0.5) * every - time.time()
                if delay > 0:
                    time.sleep(delay)
                rec = actor.pub(f"signal/smk-{i}-1", {"kind": "smoke", "state": "alarm"})
                published[f"smk-{i}-1"] = rec.t
                i += 1
            results = [load.result(timeout=seconds + 120) for load in loads]
            t_marker = time.time()
            actor.pub("signal/mark-0", {"kind": "temperature", "state": "clear"})
            drained = watch.wait(lambda m: m.topic == "device/mark-0", 180)
            # the broker's dropped count reaches the gateway every sys_interval (deploy: 2 s)
            time.sleep(SYS_WAIT_S)
            code = gw.stop()
            counters = gw.counters()
            splits = _alarm_splits(gw, published)
            lat = [total for total, _way_in in splits.values()]
            got = {st.device for st in read_journal(gw.journal) if st.stage == "detected"}
            lost = sorted(d for d in published if d not in got)
            acked = sum(x["acked"] for x in results)
            unacked = sum(x["sent"] - x["acked"] for x in results)
            t_first = min((x["t_start"] for x in results), default=t0)
            t_last = max((x["t_done"] for x in results), default=t0)
            return {"lat": lat, "splits": splits, "counters": counters, "acked": acked,
                    "code": code,
                    "unacked": unacked,
                    "achieved": acked / max(t_last - t_first, 1e-9) if results else 0.0,
                    "drain_s": (drained.t - t_marker) if drained else None,
                    "busy_s": (drained.t - t_first) if drained else None,
                    "alarms": len(published), "alarms_in": len(published) - len(lost),
                    "lost": [(d, published[d]) for d in lost],
                    "flood_s": t_last - t_first}
        finally:
            for load in loads:
                load.stop()
            watch.close()
            actor.close()
            gw.stop()

    try:
        capacity = ctx.capacity or DOCUMENTED_CAPACITY
        # what it reads while a flood runs on the same cores (information only)
        cal = phase("calibrate", 16000.0, 4.0)
        read_flooded = cal["counters"].get("inputs", 0) / cal["busy_s"] if cal["busy_s"] else 0
        unloaded = phase("unloaded", 0.0, 4.0)
        rate = OVERLOAD_FACTOR * capacity
        loaded = phase("loaded", rate, ctx.overload_s)
        c = loaded["counters"]
        processed = c.get("inputs", 0) - loaded["alarms"] - 1
        # shed by the gateway's bounded queue, and dropped by the broker for the gateway's
        # queue: the gateway counts the latter from $SYS (dropped.broker, trouble/broker)
        shed_gw = c.get("dropped.shed_overload", 0) + c.get("dropped.flooding", 0)
        shed_broker = c.get("dropped.broker", 0)
        shed = shed_gw + shed_broker
        # the broker accepted it (PUBACK), so the gateway must have read it or counted it
        # as shed; more read than acked means acks were still outstanding at the deadline
        uncounted = max(0, loaded["acked"] - processed - shed)
        broker_drops = broker.log_text().count("Outgoing messages are being dropped")
        u99, l99 = _pct(unloaded["lat"], 99), _pct(loaded["lat"], 99)
        r.done = (f"capacity {capacity:.0f} signals/s ("
                  + ("--capacity" if ctx.capacity else "bench/ingest.py, docs/benchmarks.md")
                  + f"); {unloaded['alarms']} alarms unloaded, then telemetry + heartbeats "
                  f"offered at {rate:.0f}/s ({OVERLOAD_FACTOR:g}x) for {ctx.overload_s:g} s "
                  "(QoS 1, 16 mosquitto_pub processes), an alarm every "
                  f"{ctx.overload_s / n_alarms:.1f} s "
                  "for as long as the flood lasted")
        r.figures["read rate while flooded from the same 2 cores (information)"] = (
            f"{read_flooded:.0f}/s ({cal['counters'].get('inputs', 0)} in "
            f"{cal['busy_s'] or 0:.1f} s; offered 16000/s, achieved {cal['achieved']:.0f}/s)")
        r.figures["load achieved"] = (f"{loaded['achieved']:.0f}/s = "
                                      f"{loaded['achieved'] / capacity:.2f}x capacity "
                                      f"({loaded['acked']} acked by the broker in "
                                      f"{loaded['flood_s']:.1f} s)")
        r.figures["alarm publish -> located durable, unloaded"] = (
            f"p50 {_pct(unloaded['lat'], 50) * 1000:.1f} ms, p99 {u99 * 1000:.1f} ms")
        r.figures["alarm publish -> located durable, loaded"] = (
            f"p50 {_pct(loaded['lat'], 50) * 1000:.1f} ms, p99 {l99 * 1000:.1f} ms, "
            f"max {max(loaded['lat'], default=float('nan')) * 1000:.1f} ms")
        if loaded["splits"]:
            worst = max(loaded["splits"], key=lambda d: loaded["splits"][d][0])
            total, way_in = loaded["splits"][worst]
            in_gw = [tot - win for tot, win in loaded["splits"].values()]
            in_gw_idle = [tot - win for tot, win in unloaded["splits"].values()]
            r.figures["slowest alarm under load: way in (publisher, broker) / gateway"] = (
                f"{worst}: {way_in * 1000:.1f} / {(total - way_in) * 1000:.1f} ms")
            # the gateway's own share, T0 (its receipt) -> located durable: information,
            # not the criterion (which is publish -> durable, as a device sees it)
            r.figures["in the gateway, T0 -> located durable p50 / p99, unloaded / loaded"] = (
                f"{_pct(in_gw_idle, 50) * 1000:.1f} / {_pct(in_gw_idle, 99) * 1000:.1f} ms; "
                f"{_pct(in_gw, 50) * 1000:.1f} / {_pct(in_gw, 99) * 1000:.1f} ms")
        r.figures["telemetry published / processed / shed (counted) / uncounted"] = (
            f"{loaded['acked']} / {processed} / {shed} (gateway {shed_gw}, broker "
            f"{shed_broker} counted by the gateway from $SYS) / {uncounted}")
        r.figures["Mosquitto 'Outgoing messages are being dropped' lines"] = broker_drops
        if loaded["unacked"]:
            r.figures["publishes the broker had not acknowledged after 120 s"] = loaded["unacked"]
        r.figures["backlog drained after the flood"] = _fmt_s(loaded["drain_s"])
        r.check("load reached 2x capacity (test rig)", f"{loaded['achieved'] / capacity:.2f}x",
                loaded["achieved"] >= 0.95 * rate, f">= {0.95 * OVERLOAD_FACTOR:.1f}x")
        r.figures["alarms during the flood / lost"] = (
            f"{loaded['alarms']} / {loaded['alarms'] - loaded['alarms_in']}")
        r.check("alarms lost", loaded["alarms"] - loaded["alarms_in"],
                loaded["alarms_in"] == loaded["alarms"], "= 0")
        r.notes += [f"alarm {d} published at {t:.3f} never reached the journal"
                    for d, t in loaded["lost"]]
        r.notes += [f"mosquitto: {ln}" for ln in broker.log_text().splitlines()
                    if "dropped" in ln][:5]
        r.check("alarm latency under load", f"p99 {l99 * 1000:.1f} ms",
                l99 <= OVERLOAD_FACTOR * u99,
                f"<= {OVERLOAD_FACTOR:g} x unloaded p99 = {OVERLOAD_FACTOR * u99 * 1000:.1f} ms")
        r.check("every shed message counted", uncounted, uncounted == 0, "uncounted = 0")
        r.check("clean stop at the end", loaded["code"], loaded["code"] == 0, "exit 0")
    finally:
        broker.stop()
    return r


def _fill(mnt: Path) -> Path:
    """Fill a filesystem to its last byte; returns the filler file."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def case_full_disk(ctx: Ctx) -> Result:
    """The journal's filesystem full: a trouble raised, alarms still paged, nothing dropped."""
    r = Result("full-disk")
    mnt = ctx.dir("full-disk") / "disk"
    mnt.mkdir(exist_ok=True)
    n, self_wait = 10, 10.0
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       check=True, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        r.status = "error"
        err = getattr(exc, "stderr", "") or exc
        r.figures["tmpfs"] = f"cannot mount a tmpfs here ({str(err).strip()}): needs root"
        r.checks.append(Check("tmpfs mounted", False, "mount -t tmpfs", False))
        return r
    site = SiteSpec("faults-disk", buildings=n + 8, confirm_s=600, in_place_s=1200,
                    tier_timeouts=(600.0, 600.0))
    broker = ctx.broker("full-disk")
    db = ctx.db("disk")
    gw = Gw(ctx.dir("full-disk"), "disk", site.yaml(), broker.url, ctx.influx.url(db),
            journal=mnt / "journal.sqlite3")
    watch = actor = None

    def journaled(devs: Iterable[str]) -> bool:
        try:
            got = {s.device for s in read_journal(gw.journal) if s.stage == "detected"}
        except sqlite3.Error:
            return False
        return set(devs) <= got

    try:
        gw.start()
        watch = Watch(broker.port, site.name, "disk")
        actor = Actor(broker.port, site.name, "disk")
        for i in range(3):  # before: all normal
            actor.pub(f"signal/mcp-{i}", {"kind": "manual", "state": "alarm"})
        _wait(lambda: len(watch.pages()) >= 3, 10)
        filler = _fill(mnt)
        free = shutil.disk_usage(mnt).free
        t_full = time.time()
        devices = [f"mcp-{i}" for i in range(3, 3 + n)]
        for dev in devices:
            actor.pub(f"signal/{dev}", {"kind": "manual", "state": "alarm"})
            time.sleep(0.2)
        trouble = watch.wait(lambda m: m.topic == "trouble/gateway" and m.payload
                             and m.json().get("trouble") == "journal_failed", 5)
        _wait(lambda: len(watch.pages()) >= 3 + n or not gw.alive, 5)
        alive_full = gw.alive
        page_zones = {b.get("zone") for _, b in watch.pages()}
        paged_devices = [d for d in devices if f"z{building_of(d)}" in page_zones]
        time.sleep(1.0)
        filler.unlink()
        t_freed = time.time()
        # does it recover by itself, with nothing else arriving?
        self_recovered = (time.time() - t_freed) if _wait(lambda: journaled(devices),
                                                          self_wait, 0.1) else None
        next_input = None
        if self_recovered is None:  # then with the next routine signal
            rec = actor.pub("signal/smk-0-2", {"kind": "smoke", "state": "test"})
            if _wait(lambda: journaled(devices), 10, 0.05):
                next_input = time.time() - rec.t
        cleared = watch.wait(lambda m: m.topic == "trouble/gateway" and not m.payload
                             and m.t >= t_freed, 5 if gw.alive else 0.1)
        alive_end = gw.alive
        n_inputs_a = len(actor.inputs)
        code_a = gw.stop()
        counters_a = gw.counters()
        gw.start()

        # B (compound, beyond the issue): disk full again, alarms paged, then kill -9
        filler = _fill(mnt)
        b_devices = [f"mcp-{i}" for i in range(3 + n, 3 + n + 3)]
        n_pages = len(watch.pages())
        for dev in b_devices:
            actor.pub(f"signal/{dev}", {"kind": "manual", "state": "alarm"})
            time.sleep(0.2)
        _wait(lambda: len(watch.pages()) >= n_pages + len(b_devices), 5)
        b_paged = len(watch.pages()) - n_pages
        t_kill = time.time()
        gw.kill9()
        filler.unlink()
        gw.start()
        time.sleep(2.0)
        end_t = time.time()
        code = gw.stop()
        steps = read_journal(gw.journal)
        b_lost = [d for d in b_devices if d not in {s.device for s in steps
                                                     if s.stage == "detected"}]
        a = audit_steps(steps, actor.inputs[:n_inputs_a], site, gw.windows(), gw.starts(),
                        end_t)
        # B ends in a kill -9: a page sent but not yet forgotten by the full journal may go
        # again after it (at least once), as after any crash; A has no crash: none may
        pc = check_pages(steps, watch.pages(), [t_kill])
        ic = check_influx(steps, ctx.influx.base_url, db, site.name, wait_s=15)
        r.done = (f"journal on a 2 MiB tmpfs filled to {free} bytes free; {n} manual call "
                  f"points (one every 0.2 s); space freed 1 s after the last, then nothing "
                  f"else sent for {self_wait:g} s, then one routine signal. B: full again, "
                  "3 alarms, kill -9, space freed, restart")
        r.figures["gateway alive with the disk full / after"] = f"{alive_full} / {alive_end}"
        r.figures["trouble/gateway journal_failed"] = (
            f"{trouble.t - t_full:.2f} s after the disk filled" if trouble else "never seen")
        r.figures["alarms during the full disk paged on MQTT"] = f"{len(paged_devices)} / {n}"
        r.figures["space freed -> held steps journaled, no further input"] = (
            _fmt_s(self_recovered) if self_recovered is not None
            else f"not within {self_wait:g} s")
        if next_input is not None:
            r.figures["next input -> held steps journaled"] = _fmt_s(next_input)
        r.figures["trouble cleared once journaled"] = "yes" if cleared else "no"
        r.figures["gateway counters (A)"] = " ".join(
            f"{k}={v}" for k, v in sorted(counters_a.items())
            if "journal" in k or "unjournaled" in k) or "-"
        r.figures["B: full disk + kill -9: alarms paged / lost from journal"] = (
            f"{b_paged} / {len(b_lost)} (documented limit; not a criterion)")
        r.check("gateway kept running", f"{alive_full}/{alive_end}", alive_full and alive_end,
                "no exit")
        r.check("trouble raised", bool(trouble), bool(trouble), "journal_failed on MQTT")
        r.check("alarms paged while full", f"{len(paged_devices)} / {n}",
                len(paged_devices) == n, "all")
        r.check("recovery after space freed", _fmt_s(self_recovered),
                self_recovered is not None and self_recovered <= RECOVERY_S,
                f"<= {RECOVERY_S:g} s, without waiting for another input")
        _add_common_checks(r, a, pc, ic, crashes=1)
        before_kill = pc.dup_per_crash.get(0, 0)
        r.check("duplicate pages before the kill (A and B)", before_kill, before_kill == 0,
                "= 0 (no crash)")
        r.check("clean stops", f"{code_a}, {code}", code_a == 0 and code == 0, "exit 0")
        if not alive_full or not alive_end:
            r.notes += [f"gateway log: {ln[:300]}" for ln in gw.lines()
                        if "rror" in ln][-3:]
    finally:
        if watch is not None:
            watch.close()
        if actor is not None:
            actor.close()
        gw.stop()
        broker.stop()
        res = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
    return r


class CentreProc:
    """``python -m firmware_sim.centre`` as its own process on a fixed port, recording every
    report it confirmed to a JSON-lines file; stopped (and killed) by its PID."""

    def __init__(self, port: int, folder: Path):
        self.port, self.record = port, folder / "centre.jsonl"
        self.log = folder / "centre.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ups: list[float] = []
        self.downs: list[float] = []

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firmware_sim.centre", "--listen",
                 f"127.0.0.1:{self.port}", "--record", str(self.record)],
                cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_pdeathsig())
        _LIVE.add(self)
        end = time.time() + 10
        while time.time() < end and "listening" not in self.log.read_text(errors="replace")[
                -2000:]:
            time.sleep(0.02)
        self.ups.append(time.time())

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.downs.append(time.time())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        _LIVE.discard(self)

    def reports(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [orjson.loads(ln) for ln in self.record.read_bytes().splitlines() if ln]


def case_centre(ctx: Ctx) -> Result:
    """Reports to a monitoring centre (GB/T 26875.3) across centre crashes and gateway crashes.

    Manual call points one every 0.5 s, each its own incident confirmed at once, closed
    by the worker 1 s after the duty room sees it: two reports per incident (fire, then
    back to normal). Meanwhile the centre is killed (kill -9) and restarted, and the
    gateway is killed (kill -9) and restarted, at seeded moments. Every report must reach
    the centre, each device's "normal" after its fire, with at most one duplicate per
    crash of either.
    """
    r = Result("centre")
    n = 20 if ctx.quick else 60
    rng = random.Random(f"centre/{ctx.seed}")
    folder = ctx.dir("centre")
    port = _free_port()
    site = SiteSpec("faults-centre", buildings=n, confirm_s=600, in_place_s=1200,
                    tier_timeouts=(600.0, 600.0),
                    extra=(f"monitoring_centre: {{host: 127.0.0.1, port: {port}, address: 888,"
                           " timeout_s: 1, retries: 1, heartbeat_s: 2}\n"))
    broker = ctx.broker("centre")
    db = ctx.db("centre")
    centre = CentreProc(port, folder)
    centre.start()
    gw = Gw(folder, "centre", site.yaml(), broker.url, ctx.influx.url(db)).start()
    watch = Watch(broker.port, site.name, "centre")
    actor = Actor(broker.port, site.name, "centre")
    spacing = 0.5
    span = n * spacing
    # two centre outages and two gateway crashes at seeded moments inside the run, each
    # kind in its own half so that they do not overlap (a kill while down is no kill)
    down_max = 3.0 if ctx.quick else 8.0
    outages = [(rng.uniform(0.05, 0.45) * span, rng.uniform(1.0, down_max)),
               (rng.uniform(0.55, 0.95) * span, rng.uniform(1.0, down_max))]
    crashes = [(rng.uniform(0.05, 0.45) * span, rng.uniform(0.3, 2.0)),
               (rng.uniform(0.55, 0.95) * span, rng.uniform(0.3, 2.0))]
    gw_kills = 0
    events: list[tuple[float, str, float]] = sorted(
        [(t, "centre", d) for t, d in outages] + [(t, "gateway", d) for t, d in crashes])
    published: dict[str, float] = {}
    closed: set[str] = set()
    seen_at: dict[str, float] = {}
    try:
        t0 = time.time()
        i = 0
        pending: list[tuple[float, str, Callable[[], None]]] = []
        while i < n or pending or events or len(closed) < n:
            if time.time() - t0 > span + 120:
                r.notes.append(f"centre: gave up waiting; {len(closed)} of {n} closed")
                break
            now = time.time() - t0
            if i < n and now >= i * spacing:
                dev = f"mcp-{i}"
                published[dev] = actor.pub(f"signal/{dev}", {"kind": "manual",
                                                             "state": "alarm"}).t
                i += 1
            while events and now >= events[0][0]:
                _, what, down = events.pop(0)
                if what == "centre":
                    if centre.proc is not None and centre.proc.poll() is None:
                        centre.kill9()
                        pending.append((now + down, "centre up", centre.start))
                elif gw.alive:
                    gw.kill9()
                    gw_kills += 1
                    pending.append((now + down, "gateway up", lambda: gw.start(wait=False)))
            for item in sorted(pending):
                if now >= item[0]:
                    pending.remove(item)
                    item[2]()
            while True:  # the duty room sees each incident confirmed: close it 1 s later
                try:
                    m = watch.events.get_nowait()
                except queue.Empty:
                    break
                if (m.topic.startswith("incident/") and m.topic.count("/") == 1 and m.payload
                        and m.json().get("state") == "confirmed"):
                    seen_at.setdefault(m.json()["id"], now)
            for inc, t in seen_at.items():
                if inc not in closed and now - t >= 1.0:
                    actor.pub(f"incident/{inc}/close", {"by": "w-1", "reason": "drill"})
                    closed.add(inc)
            time.sleep(0.02)
        if not gw.alive:
            gw.start(wait=False)
        if centre.proc is None or centre.proc.poll() is not None:
            centre.start()
        t_end = time.time()
        want = {(f"1/1/{3 * b + 1}", st) for b in range(n) for st in (3, 1)}  # fire, normal
        _wait(lambda: want <= {(x["ref"], x["status"]) for x in centre.reports()}, 60)
        t_all = time.time()
        time.sleep(1.0)
        got = centre.reports()
        seen = Counter((x["ref"], x["status"]) for x in got)
        lost = sorted(want - set(seen))
        dups = sum(c - 1 for c in seen.values() if c > 1)
        order_bad = []
        for ref in {x["ref"] for x in got}:
            fires = [x["at"] for x in got if x["ref"] == ref and x["status"] == 3]
            normals = [x["at"] for x in got if x["ref"] == ref and x["status"] == 1]
            if normals and (not fires or min(normals) < min(fires)):
                order_bad.append(ref)
        code = gw.stop()
        steps = read_journal(gw.journal)
        fwd = [s for s in steps if s.stage == "forwarded"]
        r.done = (f"{n} call points, one every {spacing:g} s, each closed 1 s after it is seen "
                  f"(2 reports each); the centre killed {len(centre.downs)} times "
                  f"({', '.join(f'{d:.1f} s' for _, d in outages)} down) and the gateway "
                  f"{gw_kills} times ({', '.join(f'{d:.1f} s' for _, d in crashes)} "
                  "down), kill -9 each")
        crashes_n = len(centre.downs) + gw_kills
        r.figures["reports due / at the centre / lost"] = (
            f"{len(want)} / {len(set(seen) & want)} / {len(lost)}")
        r.figures["duplicates at the centre (crashes of either)"] = f"{dups} ({crashes_n})"
        backs = []  # centre back -> its first report in (the backlog starts to flow)
        for up in centre.ups[1:]:
            first = min((x["at"] for x in got if x["at"] >= up), default=None)
            if first is not None:
                backs.append(first - up)
        r.figures["centre back -> first report in"] = (
            ", ".join(f"{b:.2f} s" for b in backs) or "-")
        r.figures["last report in after the run ended"] = _fmt_s(t_all - t_end)
        r.figures["forwarded steps in the journal"] = str(len(fwd))
        r.check("reports lost", len(lost), not lost, "= 0")
        r.check("duplicate reports per crash", f"{dups} for {crashes_n}",
                dups <= crashes_n, f"<= {MAX_DUP_PAGES_PER_CRASH} per crash")
        r.check("a device's normal before its fire", len(order_bad), not order_bad, "= 0")
        r.check("centre back -> reports flowing", _fmt_s(max(backs, default=None)),
                len(backs) == len(centre.ups) - 1 and all(b <= RECOVERY_S + 5.0 for b in backs),
                f"<= {RECOVERY_S + 5:g} s (the uplink's backoff tops at 10 s)")
        r.check("clean stop at the end", code, code == 0, "exit 0")
        if lost:
            r.notes.append(f"centre: first lost reports {lost[:5]}")
    finally:
        watch.close()
        actor.close()
        gw.stop()
        centre.stop()
        broker.stop()
    return r


def _free_port() -> int:
    from firmware_sim.lab import free_port

    return free_port()


RUNNERS: dict[str, Callable[[Ctx], Result]] = {
    "crash": case_crash, "offline-alarms": case_offline_alarms,
    "broker-restart": case_broker_restart, "broker-crash": case_broker_crash,
    "influx-outage": case_influx_outage, "serial": case_serial, "overload": case_overload,
    "full-disk": case_full_disk, "centre": case_centre,
}


def run_case(name: str, ctx: Ctx) -> Result:
    t = time.monotonic()
    try:
        r = RUNNERS[name](ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a case that could not run is a failure, with its reason
        import traceback
        r = Result(name, status="error")
        r.figures["error"] = f"{type(exc).__name__}: {str(exc)[:600]}"
        r.notes.append(traceback.format_exc()[-2000:])
        r.checks.append(Check("case ran", False, "without error", False))
    finally:
        stop_everything()
    r.duration_s = time.monotonic() - t
    return r.finish()


# ====================================================================== output


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds) for every process."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tck)
    return out


def other_cpu(sample_s: float = 1.0) -> str:
    """Processes the suite did not start that used over 20 % of a core in a short sample:
    on a shared machine they take CPU from the gateway and skew timings."""
    a = _proc_table()
    time.sleep(sample_s)
    b = _proc_table()
    ours = {os.getpid()}
    grew = True
    while grew:
        n = len(ours)
        ours |= {pid for pid, (ppid, _) in b.items() if ppid in ours}
        grew = len(ours) != n
    busy = []
    for pid, (_, cpu) in b.items():
        if pid in ours or pid not in a:
            continue
        pct = 100 * (cpu - a[pid][1]) / sample_s
        if pct >= 20:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                cmd = "?"
            busy.append(f"{pct:.0f}% {cmd[:70].strip()}")
    return "; ".join(busy) or "none"


def machine(workdir: Path, overrides: Iterable[str] = ()) -> dict[str, str]:
    """bench/ingest.py's machine description, if it can be loaded; else a short one."""
    try:
        sys.path.insert(0, str(REPO))
        from bench import ingest  # type: ignore[import-not-found]
        info = dict(ingest.machine(workdir))
    except Exception:
        info = {"platform": platform.platform(), "cpu": f"{os.cpu_count()} cores",
                "python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    info["broker settings"] = "; ".join(Broker(overrides).extra) + (
        " (deploy/mosquitto)" if not overrides else " (deploy/mosquitto + --broker-set)")
    with contextlib.suppress(Exception):
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "gateway"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        info["gateway code"] = rev + (" + uncommitted changes in gateway/" if dirty else "")
    return info


def print_table(results: list[Result], info: dict[str, str], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, width=args.width)
    t = Table(title=f"firegrid fault suite ({'quick' if args.quick else 'full'}, seed "
              f"{args.seed})", title_justify="left", show_lines=True)
    t.add_column("case", no_wrap=True)
    t.add_column("what was done", ratio=2)
    t.add_column("figures", ratio=3)
    t.add_column("criteria", ratio=3)
    t.add_column("result", no_wrap=True)
    t.add_column("time", justify="right", no_wrap=True)
    for r in results:
        figs = "\n".join(f"{k}: {v}" for k, v in r.figures.items())
        checks = "\n".join(c.text() for c in r.checks)
        status = r.status if r.status != "FAIL" else f"FAIL ({len(r.failed)})"
        t.add_row(r.case, escape(r.done), escape(figs), escape(checks) or "-", status,
                  f"{r.duration_s:.0f} s")
    console.print(t)
    m = Table(title="machine", show_header=False, title_justify="left")
    m.add_column(style="bold")
    m.add_column()
    for k, v in info.items():
        m.add_row(k, escape(str(v)))
    console.print(m)
    for r in results:
        for note in r.notes:
            console.print(f"[{r.case}] {note}", markup=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the short versions (about 3 min)")
    ap.add_argument("--seed", type=int, default=1, help="seed for kill points and stories")
    ap.add_argument("--case", nargs="+", choices=CASES, metavar="NAME",
                    help=f"only these cases: {', '.join(CASES)}")
    ap.add_argument("--influx-outage-s", type=float, default=None,
                    help="InfluxDB outage (default 600, --quick 20)")
    ap.add_argument("--incidents", type=int, help="incidents in the crash case (50/100)")
    ap.add_argument("--kills", type=int, help="kill -9 count in the crash case (3/10)")
    ap.add_argument("--capacity", type=float,
                    help="gateway capacity in signals/s for the overload case (default 23000, "
                    "bench/ingest.py's highest zero-loss rate in docs/benchmarks.md)")
    ap.add_argument("--overload-s", type=float, default=None,
                    help="flood duration (default 10, --quick 5)")
    ap.add_argument("--load-nice", type=int, default=0,
                    help="nice value of the overload flood's publishers (default 0; 10 lets "
                    "them take only the CPU the gateway and broker leave, as devices on "
                    "other machines would)")
    ap.add_argument("--pulls", type=int, help="cable pulls in the serial case (10/2)")
    ap.add_argument("--garbage-s", type=float, default=None,
                    help="how long the panel sends garbage in the serial case (60, --quick 5)")
    ap.add_argument("--broker-set", action="append", default=[], metavar="'KEY VALUE'",
                    help="a Mosquitto setting replacing or added to deploy/'s (repeatable), "
                    "e.g. --broker-set 'autosave_interval 1'")
    ap.add_argument("--workdir", type=Path, help="where the temporary directory goes")
    ap.add_argument("--keep", action="store_true", help="keep logs, journals, broker logs")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--width", type=int, default=200, help="table width")
    args = ap.parse_args(argv)
    cases = list(args.case or CASES)
    outage = args.influx_outage_s if args.influx_outage_s is not None else (
        20.0 if args.quick else 600.0)

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if args.workdir:  # a folder that does not exist yet is made, as --keep implies
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="firegrid-faults-", dir=args.workdir))
    influx = InfluxDB()
    results: list[Result] = []
    try:
        info = machine(work, args.broker_set)
        info["other busy processes at start"] = other_cpu()
        influx.start(work / "influxd")
        ctx = Ctx(work, args.quick, args.seed, influx, outage, args.incidents, args.kills,
                  args.capacity, args.overload_s or (5.0 if args.quick else 10.0),
                  args.broker_set, pulls=args.pulls, garbage_s=args.garbage_s,
                  load_nice=args.load_nice)
        for name in cases:
            print(f"--- {name} ...", flush=True)
            res = run_case(name, ctx)
            print(f"--- {name}: {res.status} in {res.duration_s:.0f} s"
                  + "".join(f"\n    {c.text()}" for c in res.failed), flush=True)
            results.append(res)
        info["load average at the end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        info["other busy processes at the end"] = other_cpu()
        print_table(results, info, args)
        if args.json:
            args.json.write_text(json.dumps([{
                "case": r.case, "done": r.done, "figures": r.figures, "status": r.status,
                "checks": [c.__dict__ for c in r.checks], "notes": r.notes,
                "duration_s": r.duration_s} for r in results], indent=2, default=str))
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        stop_everything()
        influx.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in results if r.status in ("FAIL", "error")]
    print(f"{len(results) - len(failed)} of {len(results)} cases without a failed criterion"
          + (f"; failed: {', '.join(r.case for r in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
