"""A telemetry flood from Mosquitto's own C client, for the load and overload benchmarks.

A Python MQTT publisher costs about a core per 10,000 QoS 1 messages/s, so on a two-core
machine it cannot offer twice what the gateway processes while the broker and the gateway
run beside it. ``mosquitto_pub -l`` publishes each line of its standard input as one
message to its one topic and costs a few percent of a core at those rates; ``PubFlood``
runs several (one topic each, so the flood comes from that many devices) and writes
their lines at a set rate from a feeder thread (token bucket, 1 ms ticks). A process
exits 0 only once the broker has acknowledged every line it sent, which is how the
acknowledged count is known. Processes are stopped by their PID. ``nice`` lowers their
priority: on a real site the devices are other machines, so a test that shares the
gateway's cores with them can make them take only what the gateway and broker leave.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from typing import Any

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


class PubFlood:
    """``msgs`` (topic, payload without newlines) at ``rate`` per second for ``seconds``."""

    def __init__(self, host: str, port: int, msgs: list[tuple[str, bytes]], rate: float,
                 seconds: float, tag: str, procs: int = 16, qos: int = 1, nice: int = 0):
        by_topic: dict[str, list[bytes]] = defaultdict(list)
        for topic, payload in msgs:
            if b"\n" in payload:
                raise ValueError(f"payload for {topic} holds a newline: one line is one message")
            by_topic[topic].append(payload + b"\n")
        if len(by_topic) > procs:  # one process per topic: more would be silently unsent
            raise ValueError(f"{len(by_topic)} topics for {procs} publisher processes; "
                             f"one process publishes one topic")
        topics = sorted(by_topic)
        self.lines = [by_topic[tp] for tp in topics]
        self.topics = topics
        self.rate, self.seconds = rate, seconds
        self.sent = [0] * len(topics)
        self.t_start = self.t_done = 0.0
        self.start_mono = self.send_done_mono = self.done_mono = 0.0
        self._cpu0 = 0.0
        self.procs = [subprocess.Popen(
            [MOSQUITTO_PUB, "-h", host, "-p", str(port), "-q", str(qos), "-M", "1000", "-l",
             "-t", tp, "-i", f"flood-{tag}-{i}-{os.getpid()}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=(lambda: os.nice(nice)) if nice else None)
            for i, tp in enumerate(topics)]
        self.thread = threading.Thread(target=self._feed, daemon=True, name=f"flood-{tag}")
        time.sleep(0.3)  # every process connected before the clock starts

    def start(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._cpu0 = usage.ru_utime + usage.ru_stime
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive() or any(p.poll() is None for p in self.procs)

    def _feed(self) -> None:
        total = int(self.rate * self.seconds)
        n = len(self.procs)
        share = [total // n + (1 if i < total % n else 0) for i in range(n)]
        self.t_start = time.time()
        self.start_mono = start = time.monotonic()
        done = 0
        while done < total:
            due = min(total, int((time.monotonic() - start) * self.rate) + 1)
            for i, proc in enumerate(self.procs):  # this tick's share, one write per process
                want = min(share[i], due * share[i] // total) - self.sent[i]
                if want <= 0 or proc.stdin is None:
                    continue
                lines = self.lines[i]
                chunk = b"".join(lines[(self.sent[i] + k) % len(lines)] for k in range(want))
                try:
                    proc.stdin.write(chunk)
                    proc.stdin.flush()
                except (BrokenPipeError, ValueError):
                    share[i] = self.sent[i]  # that process is gone: count what it had
                    total = sum(share)
                    continue
                self.sent[i] += want
                done += want
            ahead = done / self.rate - (time.monotonic() - start)
            time.sleep(max(ahead, 0.0005))
        self.send_done_mono = time.monotonic()
        for proc in self.procs:
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                if proc.stdin is not None:
                    proc.stdin.close()

    def result(self, timeout: float) -> dict[str, Any]:
        """Lines sent, how many the broker acknowledged, when, and the C clients' CPU."""
        self.thread.join(timeout)
        end = time.monotonic() + timeout
        acked = 0
        for proc, sent in zip(self.procs, self.sent, strict=True):
            try:
                code = proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                code = None
            acked += sent if code == 0 else 0
        self.done_mono = time.monotonic()
        self.t_done = time.time()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime - self._cpu0
        self.stop()
        span = max(self.done_mono - self.start_mono, 1e-9)
        return {"sent": sum(self.sent), "acked": acked, "t_start": self.t_start,
                "t_done": self.t_done, "start_mono": self.start_mono,
                "done_mono": self.done_mono, "done_s": span,
                "send_s": (self.send_done_mono or self.done_mono) - self.start_mono,
                "cpu_pct": 100 * cpu / span, "devices": len(self.procs)}

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
