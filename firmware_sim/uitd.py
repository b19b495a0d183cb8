"""A simulated 用户信息传输装置 (UITD): the device end of the GB/T 26875.3 feed.

It dials the monitoring centre (firegrid's ``drivers.gb26875_server``, or any other
centre) and speaks through the same codec, ``drivers.gb26875``, from the other side,
so what it sends is by construction what a conforming device sends. Uploads use the
standard's send/confirm mode: a new serial per packet, resent with the same serial on
否认 or after ``timeout_s`` (≤ 10 s) without 确认, at most ``retries`` (3) times.

Faults it can inject, to test the centre: garbage bytes, a frame split across writes, a
bad checksum, silence (no heartbeats, nothing sent), and a dropped connection that is
opened again. Every 确认/否认 it receives is recorded in ``received``.

It answers the centre too: 确认 to a control command (init, time sync, 查岗), a type-21
status (应答) to a type-81 read, and 否认 to any other request.

Command line::

    python -m firmware_sim.uitd --connect 127.0.0.1:9000 --fire 1/1/131082

firmware_sim never imports gateway/: a simulated device is a separate program.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drivers.gb26875 import (
    CMD_CONFIRM,
    CMD_CONTROL,
    CMD_DENY,
    CMD_REQUEST,
    CMD_RESPONSE,
    CMD_SEND,
    AnalogValue,
    BadFrame,
    ComponentStatus,
    Deframer,
    Frame,
    InfoObject,
    SystemStatus,
    UitdStatus,
    build_adu,
    encode_frame,
    parse_address,
    parse_ref,
    parse_utc_offset,
    time_label,
)

log = logging.getLogger(__name__)

UITD_ADDRESS = 0x000379  # the fact sheet's example device, 79 03 00 00 00 00
CENTRE_ADDRESS = 0x015B38  # and its centre, 38 5B 01 00 00 00
BEIJING_S = 8 * 3600  # a device's clock runs Beijing time (UTC+08:00), as in the field
SMOKE = 42  # 点型光电感烟火灾探测器, what GST-type panels usually report

FIRE, FAULT, CLEAR = 0x0003, 0x0005, 0x0001  # bit 0 (normal) set, as the standard says
SYS_RESET = 0x2001  # bit 13 reset, bit 0 normal
LOST = -1  # what a waiter gets when the connection goes


@dataclass(frozen=True, slots=True)
class Reply:
    """A frame the centre sent: ``command`` 3 (确认), 6 (否认), 1 or 4, its serial, when
    it came (``at``, the simulator's clock), and the centre's address and time label."""

    command: int
    serial: int
    at: float
    src: int = 0
    time: tuple[int, ...] = ()


class Uitd:
    """One simulated device on one TCP connection (reopened by ``reconnect``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        address: int = UITD_ADDRESS,
        centre: int = CENTRE_ADDRESS,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 10.0,
        retries: int = 3,
        part_type: int = SMOKE,
        utc_offset_s: int = BEIJING_S,
    ) -> None:
        self.host, self.port = host, port
        self.address, self.centre = address, centre
        self.clock = clock
        self.utc_offset_s = utc_offset_s  # its time labels are local time this far from UTC
        self.timeout_s = min(timeout_s, 10.0)  # the standard: not more than 10 s
        self.retries = retries
        self.part_type = part_type
        self.status = 0x01  # type 21: monitoring, no fire, no fault
        self.received: list[Reply] = []
        self.silent = False
        self._serial = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._rx: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._wlock = asyncio.Lock()

    # -- connection

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        """Open the connection; serials start again at 0, as on a new link."""
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._serial = 0
        self._rx = asyncio.create_task(self._receive(self._reader, self._writer))

    async def close(self, *, abort: bool = False) -> None:
        """Close the connection (``abort``: reset it, as a device losing power does)."""
        self.stop_heartbeats()
        writer, rx = self._writer, self._rx
        self._writer = self._reader = self._rx = None
        if writer is not None:
            if abort:
                writer.transport.abort()
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        if rx is not None:
            rx.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rx
        self._lost()
        self._waiters.clear()

    async def reconnect(self, *, abort: bool = True, pause_s: float = 0.0) -> None:
        """Drop the connection and open it again, as after a network outage."""
        await self.close(abort=abort)
        await asyncio.sleep(pause_s)
        await self.connect()

    async def __aenter__(self) -> Uitd:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- uploads (send/confirm)

    def frame(self, adu: bytes = b"", command: int = CMD_SEND,
              serial: int | None = None) -> tuple[int, bytes]:
        """A new frame from this device: (its serial, its bytes)."""
        if serial is None:
            serial = self._serial
            self._serial = (self._serial + 1) & 0xFFFF
        data = encode_frame(Frame(serial=serial, time=self._now(),
                                  src=self.address, dst=self.centre, command=command,
                                  adu=adu))
        return serial, data

    async def upload(self, objects: Sequence[InfoObject]) -> bool:
        """Send objects (none: a heartbeat) until confirmed; False if never confirmed."""
        serial, data = self.frame(build_adu(objects))
        return await self._exchange(serial, [data])

    async def fire(self, ref: str, description: str = "") -> bool:
        return await self.upload([self._component(ref, FIRE, description)])

    async def fault(self, ref: str, description: str = "") -> bool:
        return await self.upload([self._component(ref, FAULT, description)])

    async def clear(self, ref: str, description: str = "") -> bool:
        return await self.upload([self._component(ref, CLEAR, description)])

    async def reset(self, ref: str = "1/1") -> bool:
        """Type 1 with the reset bit: the panel at system ``ref`` was reset."""
        sys_type, sys_addr, _ = parse_ref(ref)
        return await self.upload([SystemStatus(sys_type, sys_addr, SYS_RESET, self._now())])

    async def system(self, ref: str, status: int) -> bool:
        sys_type, sys_addr, _ = parse_ref(ref)
        return await self.upload([SystemStatus(sys_type, sys_addr, status, self._now())])

    async def analog(self, ref: str, analog_type: int, value: int) -> bool:
        """Type 3: a raw analog value (temperature in 0.1 °C is ``analog_type`` 3)."""
        sys_type, sys_addr, part = self._part(ref)
        return await self.upload([AnalogValue(sys_type, sys_addr, self.part_type, part,
                                              analog_type, value, self._now())])

    async def uitd_status(self, status: int) -> bool:
        """Type 21: the device's own state (bit 1 fire, 2 fault, 3 mains fault, ...)."""
        self.status = status
        return await self.upload([UitdStatus(status, self._now())])

    async def heartbeat(self) -> bool:
        """An empty 发送数据 frame, the vendors' heartbeat."""
        return await self.upload([])

    def start_heartbeats(self, interval_s: float = 20.0) -> None:
        """Send a heartbeat every ``interval_s`` (vendors use 20-30 s) until stopped."""
        self.stop_heartbeats()
        self._beat = asyncio.create_task(self._heartbeats(interval_s))

    def stop_heartbeats(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    # -- faults

    def go_silent(self) -> None:
        """Stop sending anything (heartbeats included); the connection stays open."""
        self.stop_heartbeats()
        self.silent = True

    def speak(self) -> None:
        self.silent = False

    async def send_garbage(self, data: bytes) -> None:
        await self._write([data])

    async def send_split(self, objects: Sequence[InfoObject], cut: Sequence[int] = (13,),
                         pause_s: float = 0.05) -> bool:
        """Upload with the frame cut at the byte offsets ``cut``, written apart."""
        serial, data = self.frame(build_adu(objects))
        bounds = [0, *sorted(c for c in cut if 0 < c < len(data)), len(data)]
        parts = [data[a:b] for a, b in itertools.pairwise(bounds)]
        return await self._exchange(serial, parts, pause_s)

    async def send_bad_checksum(self, objects: Sequence[InfoObject]) -> int | None:
        """One frame with its checksum off by one, not resent: the centre's answer
        (6 for 否认) or None after ``timeout_s``."""
        serial, data = self.frame(build_adu(objects))
        bad = data[:-3] + bytes([(data[-3] + 1) & 0xFF]) + data[-2:]
        fut = self._waiter(serial)
        await self._write([bad])
        try:
            return await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(serial, None)

    # -- what came back

    @property
    def confirmed(self) -> list[int]:
        """Serials the centre confirmed (确认), in order."""
        return [r.serial for r in self.received if r.command == CMD_CONFIRM]

    @property
    def denied(self) -> list[int]:
        """Serials the centre denied (否认), in order."""
        return [r.serial for r in self.received if r.command == CMD_DENY]

    # -- internals

    def _now(self) -> tuple[int, int, int, int, int, int]:
        return time_label(self.clock(), self.utc_offset_s)

    def _part(self, ref: str) -> tuple[int, int, int]:
        sys_type, sys_addr, part = parse_ref(ref)
        if part is None:
            raise ValueError(f"ref {ref!r} names a system; a component needs three parts")
        return sys_type, sys_addr, part

    def _component(self, ref: str, status: int, description: str) -> ComponentStatus:
        sys_type, sys_addr, part = self._part(ref)
        return ComponentStatus(sys_type, sys_addr, self.part_type, part, status,
                               description, self._now())

    def _waiter(self, serial: int) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[serial] = fut
        return fut

    async def _write(self, parts: Sequence[bytes], pause_s: float = 0.0) -> bool:
        if self.silent or not self.connected:
            return False
        async with self._wlock:
            writer = self._writer
            assert writer is not None
            for i, part in enumerate(parts):
                if i and pause_s:
                    await asyncio.sleep(pause_s)
                writer.write(part)
                await writer.drain()
        return True

    async def _exchange(self, serial: int, parts: Sequence[bytes], pause_s: float = 0.0) -> bool:
        """Send and wait for 确认; resend on 否认 or timeout, ``retries`` times."""
        try:
            for _ in range(1 + self.retries):
                fut = self._waiter(serial)
                try:
                    if not await self._write(parts, pause_s):
                        return False
                    answer = await asyncio.wait_for(fut, self.timeout_s)
                except TimeoutError:
                    continue
                except OSError:
                    return False
                if answer == CMD_CONFIRM:
                    return True
                if answer == LOST:
                    return False
                log.info("uitd: serial %d denied, resending", serial)
            return False
        finally:
            self._waiters.pop(serial, None)

    async def _heartbeats(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.heartbeat()
            except OSError as e:
                log.warning("uitd: heartbeat failed: %s", e)

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deframer = Deframer()
        try:
            while data := await reader.read(4096):
                for item in deframer.feed(data):
                    if isinstance(item, BadFrame):
                        log.info("uitd: from centre: %s", item.reason)
                    else:
                        await self._answer(item, writer)
        except OSError as e:
            log.info("uitd: connection lost: %s", e)
        finally:
            self._lost()

    def _lost(self) -> None:
        """The connection is gone: whoever waits for an answer gets LOST."""
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_result(LOST)

    async def _answer(self, f: Frame, writer: asyncio.StreamWriter) -> None:
        self.received.append(Reply(f.command, f.serial, self.clock(), f.src, f.time))
        if f.command in (CMD_CONFIRM, CMD_DENY):
            fut = self._waiters.get(f.serial)
            if fut is not None and not fut.done():
                fut.set_result(f.command)
            return
        if f.command == CMD_CONTROL:  # init, time sync, 查岗: accepted
            _, reply = self.frame(command=CMD_CONFIRM, serial=f.serial)
        elif f.command == CMD_REQUEST and f.adu[:1] == bytes([81]):
            adu = build_adu([UitdStatus(self.status, self._now())])
            _, reply = self.frame(adu, command=CMD_RESPONSE, serial=f.serial)
        elif f.command == CMD_REQUEST:
            _, reply = self.frame(command=CMD_DENY, serial=f.serial)
        else:
            return
        if not self.silent:
            async with self._wlock:
                writer.write(reply)
                await writer.drain()


# ------------------------------------------------------------------ command line


def _address(text: str) -> int:
    try:
        return parse_address(int(text) if text.strip().isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _offset(text: str) -> int:
    try:
        return parse_utc_offset(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


async def _run(args: argparse.Namespace) -> int:
    host, port = args.connect
    dev = Uitd(host, port, address=args.address, centre=args.centre,
               timeout_s=args.timeout, part_type=args.part_type,
               utc_offset_s=args.utc_offset)
    await dev.connect()
    ok = True
    try:
        steps = [("fire", ref) for ref in args.fire] + [("fault", ref) for ref in args.fault]
        steps += [("clear", ref) for ref in args.clear] + [("reset", ref) for ref in args.reset]
        for what, ref in steps:
            if what == "reset":
                confirmed = await dev.reset(ref)
            else:
                confirmed = await getattr(dev, what)(ref, args.description)
            ok = ok and confirmed
            print(f"{what} {ref}: {'确认 (confirmed)' if confirmed else 'not confirmed'}")
        if args.heartbeat:
            print(f"heartbeat every {args.heartbeat:g} s; Ctrl-C to stop")
            while True:
                confirmed = await dev.heartbeat()
                print(f"heartbeat: {'确认' if confirmed else 'not confirmed'}")
                await asyncio.sleep(args.heartbeat)
    finally:
        await dev.close()
        for r in dev.received:
            print(f"received command {r.command} serial {r.serial}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m firmware_sim.uitd``; exit status 1 if any upload
    went unconfirmed."""
    p = argparse.ArgumentParser(prog="python -m firmware_sim.uitd",
                                description="Simulated GB/T 26875.3 transmission device.")
    p.add_argument("--connect", type=_split_hostport, required=True, metavar="HOST:PORT")
    p.add_argument("--fire", action="append", default=[], metavar="REF",
                   help="component ref <sys type>/<sys addr>/<part addr>, e.g. 1/1/131082")
    p.add_argument("--fault", action="append", default=[], metavar="REF")
    p.add_argument("--clear", action="append", default=[], metavar="REF")
    p.add_argument("--reset", action="append", default=[], metavar="SYS",
                   help="system ref <sys type>/<sys addr>, e.g. 1/1")
    p.add_argument("--heartbeat", type=float, default=0.0, metavar="SECONDS",
                   help="then send heartbeats at this interval until interrupted")
    p.add_argument("--description", default="", help="component text (GB 18030, 31 bytes)")
    p.add_argument("--part-type", type=int, default=SMOKE)
    p.add_argument("--address", type=_address, default=UITD_ADDRESS,
                   help="this device's address: an integer or 6 hex bytes, low byte first")
    p.add_argument("--centre", type=_address, default=CENTRE_ADDRESS,
                   help="the centre's address, e.g. 88888 or '38 5B 01 00 00 00'")
    p.add_argument("--utc-offset", type=_offset, default=BEIJING_S, metavar="+HH:MM",
                   help="the device clock's offset from UTC (default +08:00)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for 确认")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as e:
        print(f"uitd: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
