"""A simulated monitoring centre (监控中心): the far end of the gateway's GB/T 26875.3 uplink.

It listens on TCP, answers through ``drivers.gb26875.CentreSession`` (the same codec and
the same answers firegrid gives its own UITDs), and records every component report it
confirmed, decoded. Faults it can be told to show, to test the gateway: ``deny``
(否认 to everything), ``silent`` (reads and says nothing), ``drop`` (closes every
connection as soon as it opens).

Command line::

    python -m firmware_sim.centre --listen 127.0.0.1:9100

firmware_sim never imports gateway/: the centre is a separate program, like a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from drivers.gb26875 import (
    CMD_DENY,
    CMD_SEND,
    BadFrame,
    CentreSession,
    ComponentStatus,
    Deframer,
    Frame,
    encode_frame,
    label_text,
    parse_adu,
    time_label,
)

MODES = ("confirm", "deny", "silent", "drop")


@dataclass(frozen=True, slots=True)
class Received:
    """A component report the centre confirmed: when it came, the frame's serial and
    source address, and the object."""

    at: float
    serial: int
    src: int
    report: ComponentStatus


class SimCentre:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, address: int = 0,
                 utc_offset_s: int = 0, mode: str = "confirm", record: Path | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.host, self.port = host, port
        self.address = address
        self.utc_offset_s = utc_offset_s
        self.mode = mode
        self.record = record  # JSON lines, one per report, appended as they come
        self.received: list[Received] = []
        self.heartbeats = 0
        self.connections = 0
        self.frames = 0  # command-2 frames seen, resends included
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> SimCentre:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._clients):
            w.close()
        self._clients.clear()

    def drop_all(self) -> None:
        """Close every open connection now (the centre restarted, a line broke)."""
        for w in list(self._clients):
            w.close()

    def alarms(self) -> list[Received]:
        return [r for r in self.received if r.report.status & 0x0002]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "drop":
            writer.close()
            return
        self._clients.add(writer)
        session = CentreSession(self.address, utc_offset_s=self.utc_offset_s)
        seen = Deframer()
        try:
            while data := await reader.read(4096):
                now = time.time()
                _events, reply = session.receive(data, now)
                for item in seen.feed(data):
                    if isinstance(item, BadFrame) or item.command != CMD_SEND:
                        continue
                    self.frames += 1
                    self._record(item, now, writer)
                if self.mode == "confirm":
                    writer.write(reply)
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    def _record(self, f: Frame, now: float, writer: asyncio.StreamWriter) -> None:
        if not f.adu:
            self.heartbeats += 1
        elif self.mode == "confirm":
            with contextlib.suppress(ValueError):
                for obj in parse_adu(f.adu):
                    if isinstance(obj, ComponentStatus) and not any(
                            r.serial == f.serial and r.src == f.src and r.report == obj
                            for r in self.received[-50:]):  # a resend is one report
                        self.received.append(Received(now, f.serial, f.src, obj))
                        self._write(self.received[-1])
        if self.mode == "deny":
            writer.write(encode_frame(Frame(serial=f.serial, time=time_label(now),
                                            src=self.address, dst=f.src, command=CMD_DENY)))


    def _write(self, r: Received) -> None:
        if self.record is None:
            return
        line = orjson.dumps({"at": r.at, "serial": r.serial, "src": r.src, "ref": r.report.ref,
                             "part_type": r.report.part_type, "status": r.report.status,
                             "description": r.report.description,
                             "time": label_text(r.report.time, self.utc_offset_s)})
        with self.record.open("ab") as fh:
            fh.write(line + b"\n")


def _show(r: Received, utc_offset_s: int) -> str:
    rep = r.report
    fire = "FIRE" if rep.status & 0x0002 else f"status 0x{rep.status:04X}"
    return (f"{time.strftime('%H:%M:%S', time.localtime(r.at))} {fire} {rep.ref} "
            f"type {rep.part_type} {rep.description!r} at {label_text(rep.time, utc_offset_s)}"
            f" (serial {r.serial}, from {r.src})")


async def _run(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    centre = await SimCentre(host or "127.0.0.1", int(port), address=args.address,
                             mode=args.mode, record=args.record).start()
    print(f"monitoring centre listening on {centre.host}:{centre.port} ({args.mode})",
          flush=True)
    shown = 0
    try:
        while True:
            await asyncio.sleep(0.2)
            for r in centre.received[shown:]:
                print(_show(r, 0), flush=True)
            shown = len(centre.received)
    finally:
        await centre.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:9100", help="host:port to listen on")
    ap.add_argument("--address", type=int, default=0, help="the centre's own address")
    ap.add_argument("--mode", choices=MODES, default="confirm")
    ap.add_argument("--record", type=Path, default=None,
                    help="append each confirmed report to this file as a JSON line")
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
