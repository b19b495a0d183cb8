"""A simulated TAP 1.8 paging terminal, on TCP (127.0.0.1) or on a serial port / pty.

It is the far end of ``alerting.tap_link`` and speaks with the same codec
(``alerting.tap.TapTerminal``), used from the terminal's side, so the gateway's pages
can be followed end to end on a real socket or a real pseudo-terminal without a
paging transmitter on the desk. It records every page it accepts and can be told to
misbehave the ways real terminals do, so the gateway's retry and failure paths run
for real:

* ``--nak N``: answer the next N blocks with ``514`` + NAK;
* ``--rs N`` (``--rs-code 511``): refuse the next N blocks with RS;
* ``--hang-up probe|logon|block``: send ``ESC EOT`` and hang up at that point;
* ``--silent``: answer nothing at all;
* ``--password``, ``--known-id``, ``--crlf``, ``--non-verbose``, ``--implied-login``,
  ``--max-block``: quirks of real encoders (fact sheet §5).

Run it::

    python -m firmware_sim.tap_terminal --tcp 127.0.0.1:10001
    python -m firmware_sim.tap_terminal --serial /dev/pts/7 --baud 9600 --framing 7E1

Each accepted page is printed to stdout as one JSON line,
``{"pager_id": "1234567", "text": "..."}``. A TCP connection is one call; on a serial
line each ``ESC EOT`` ends the call and the terminal waits for the next caller's CR.

Never imports ``gateway/``: the simulator runs as its own process, as a terminal would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import serial

from alerting.tap import HANG_UP_POINTS, MAX_BLOCK, TapFaults, TapTerminal, TapTimers

READ_SIZE = 1024
_SERIAL_POLL_S = 0.01


class TapSimulator:
    """What all of one simulator's calls share: settings, fault switches, the record.

    Each call (a TCP connection, or a session on the serial line) gets a fresh
    :class:`alerting.tap.TapTerminal` built from ``terminal_options``, sharing
    :attr:`faults`, so a test can flip a switch while the simulator runs. Accepted
    pages land in :attr:`pages` (and go to ``on_page``), every block received intact
    in :attr:`blocks`, every block refused in :attr:`refused`, and each call's end in
    :attr:`hangups` (the reason the terminal gave, or "caller hung up").
    """

    def __init__(
        self,
        *,
        faults: TapFaults | None = None,
        on_page: Callable[[str, str], None] | None = None,
        **terminal_options: Any,
    ) -> None:
        self.faults = faults if faults is not None else TapFaults()
        self.on_page = on_page
        self.options = terminal_options
        self.pages: list[tuple[str, str]] = []
        self.blocks: list[bytes] = []
        self.refused: list[tuple[str, bytes]] = []
        self.calls = 0
        self.hangups: list[str] = []
        self._lock = threading.Lock()  # the serial runner records from its own thread
        TapTerminal(faults=self.faults, **self.options)  # fail early on bad options

    def new_terminal(self) -> TapTerminal:
        with self._lock:
            self.calls += 1
        return TapTerminal(faults=self.faults, **self.options)

    def collect(self, term: TapTerminal, seen: tuple[int, int, int]) -> tuple[int, int, int]:
        """Copy what ``term`` recorded since ``seen`` into the shared record."""
        pages, blocks, refused = seen
        new_pages = term.pages[pages:]
        with self._lock:
            self.pages.extend(new_pages)
            self.blocks.extend(term.blocks[blocks:])
            self.refused.extend(term.refused[refused:])
        if self.on_page is not None:
            for pager_id, text in new_pages:
                self.on_page(pager_id, text)
        return len(term.pages), len(term.blocks), len(term.refused)

    def ended(self, reason: str) -> None:
        with self._lock:
            self.hangups.append(reason)


class TapTcpServer:
    """The simulator on a TCP port: one connection is one call (sheet §1.3).

    Binds 127.0.0.1 by default; ``port=0`` lets the kernel choose (see :attr:`port`).
    ``stop()`` also ends calls still open, a silent terminal's included.
    """

    def __init__(self, sim: TapSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self._want_port = port
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._call, self.host, self._want_port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    async def _call(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self._writers.add(writer)
        term = self.sim.new_terminal()
        seen = (0, 0, 0)
        reason = "caller hung up"
        try:
            out = term.start(loop.time())
            while True:
                if out:
                    writer.write(out)
                    await writer.drain()
                if term.closed:
                    reason = term.reason
                    break
                wake = term.next_deadline
                timeout = None if wake is None else max(0.0, wake - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    out = term.tick(loop.time())
                    continue
                if not data:
                    break
                out = term.receive(data, loop.time())
                seen = self.sim.collect(term, seen)
        except (OSError, asyncio.IncompleteReadError) as exc:
            reason = f"line error: {exc}"
        finally:
            self.sim.collect(term, seen)
            self.sim.ended(reason)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def parse_framing(framing: str) -> tuple[int, str, float]:
    """'7E1' → (7, 'E', 1.0), for pyserial."""
    text = framing.strip().upper()
    if len(text) < 3 or text[0] not in "5678" or text[1] not in "NEOMS":
        raise ValueError(f"framing must look like 7E1 or 8N1; got {framing!r}")
    try:
        stop = float(text[2:])
    except ValueError:
        raise ValueError(f"framing must look like 7E1 or 8N1; got {framing!r}") from None
    return int(text[0]), text[1], stop


def _is_pty(path: str) -> bool:
    """A Unix98 pty slave has no framing, and Linux refuses 7-bit or parity settings on
    one, so the simulator opens a pty as 8N1 (what the bytes are is unchanged)."""
    try:
        rdev = os.stat(path).st_rdev
    except OSError:
        return False
    return rdev != 0 and 136 <= os.major(rdev) <= 143


class TapSerialTerminal:
    """The simulator on a serial port or pty, with plain pyserial in its own thread.

    A serial line has no connect or disconnect, so each call ends at the terminal's
    ``ESC EOT`` (input still in flight is then discarded, as a modem hang-up would)
    and the next CR starts a new one. ``start()`` opens the port and returns once it
    is open; ``stop()`` ends the thread and closes the port.
    """

    def __init__(self, sim: TapSimulator, port: str, baud: int = 9600,
                 framing: str = "7E1") -> None:
        self.sim = sim
        self.port = port
        self.baud = baud
        self.framing = parse_framing(framing)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial: serial.Serial | None = None
        self.error: str | None = None

    def _open(self) -> serial.Serial:
        bits, parity, stop = (8, "N", 1.0) if _is_pty(self.port) else self.framing
        return serial.Serial(self.port, self.baud, bytesize=bits, parity=parity,
                             stopbits=stop, timeout=_SERIAL_POLL_S)

    def start(self) -> Self:
        self._serial = self._open()
        self._thread = threading.Thread(target=self._run, name=f"tap-sim {self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def request_stop(self) -> None:
        """Ask the serving loop to end (safe from a signal handler); see ``stop()``."""
        self._stop.set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` (from a signal handler)."""
        if self._serial is None:
            self._serial = self._open()
        try:
            self._run()
        finally:
            self.stop()

    def _run(self) -> None:
        ser = self._serial
        assert ser is not None
        term = self.sim.new_terminal()
        seen = (0, 0, 0)
        term.start(time.monotonic())
        try:
            while not self._stop.is_set():
                data = ser.read(max(1, ser.in_waiting))
                now = time.monotonic()
                out = term.receive(data, now) if data else term.tick(now)
                seen = self.sim.collect(term, seen)
                if out:
                    ser.write(out)
                    ser.flush()
                if term.closed:
                    self.sim.ended(term.reason)
                    time.sleep(_SERIAL_POLL_S)
                    ser.reset_input_buffer()  # the call is over: drop what was in flight
                    term = self.sim.new_terminal()
                    seen = (0, 0, 0)
                    term.start(time.monotonic())
        except (OSError, serial.SerialException) as exc:
            if not self._stop.is_set():
                self.error = f"{self.port}: {exc}"


# --- command line ---------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m firmware_sim.tap_terminal",
        description="Simulated TAP 1.8 paging terminal: prints each accepted page as JSON.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=_host_port, metavar="HOST:PORT",
                       help="listen on TCP (use 127.0.0.1; port 0 picks a free one)")
    where.add_argument("--serial", metavar="PORT", help="serial device or pty, e.g. /dev/pts/7")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--framing", default="7E1", help="serial framing: 7E1 (default) or 8N1")
    p.add_argument("--password", default=None, help="require this logon password")
    p.add_argument("--known-id", action="append", default=None, metavar="ID",
                   help="accept only these pager IDs (others get 511 + RS); repeatable")
    p.add_argument("--nak", type=int, default=0, metavar="N", help="NAK the next N blocks")
    p.add_argument("--rs", type=int, default=0, metavar="N", help="RS the next N blocks")
    p.add_argument("--rs-code", default="511", help="message code sent with --rs")
    p.add_argument("--hang-up", choices=HANG_UP_POINTS, default=None,
                   help="send ESC EOT and hang up at this point of every call")
    p.add_argument("--silent", action="store_true", help="never answer")
    p.add_argument("--crlf", action="store_true", help="end lines with CRLF, not CR")
    p.add_argument("--non-verbose", action="store_true",
                   help="send no message sequences (codes), only control characters")
    p.add_argument("--implied-login", action="store_true",
                   help="take a block without a logon first")
    p.add_argument("--max-block", type=int, default=MAX_BLOCK,
                   help="longest block accepted, in bytes (default 256)")
    p.add_argument("--t4", type=float, default=TapTimers().t4,
                   help="seconds idle between transactions before 501 (default 4)")
    p.add_argument("--t5", type=float, default=TapTimers().t5,
                   help="seconds to wait for a logon before re-prompting (default 8)")
    return p


def _print_page(pager_id: str, text: str) -> None:
    print(json.dumps({"pager_id": pager_id, "text": text}, ensure_ascii=False), flush=True)


def simulator_from_args(args: argparse.Namespace) -> TapSimulator:
    faults = TapFaults(nak_next=args.nak, rs_next=args.rs, rs_code=args.rs_code,
                       hang_up_at=args.hang_up, silent=args.silent)
    return TapSimulator(
        faults=faults, on_page=_print_page, password=args.password,
        known_ids=set(args.known_id) if args.known_id else None,
        timers=TapTimers(t4=args.t4, t5=args.t5), eol=b"\r\n" if args.crlf else b"\r",
        verbose=not args.non_verbose, implied_login=args.implied_login,
        max_block=args.max_block)


async def _serve_tcp(sim: TapSimulator, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with TapTcpServer(sim, host, port) as server:
        print(f"TAP terminal listening on {server.host}:{server.port}", file=sys.stderr,
              flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sim = simulator_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.tcp is not None:
        host, port = args.tcp
        try:
            asyncio.run(_serve_tcp(sim, host, port))
        except OSError as exc:
            print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        runner = TapSerialTerminal(sim, args.serial, args.baud, args.framing)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    framing = "8N1 (a pty has no framing)" if _is_pty(args.serial) else args.framing
    print(f"TAP terminal on {args.serial} at {args.baud} {framing}", file=sys.stderr,
          flush=True)
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        pass
    except (OSError, serial.SerialException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if runner.error:
        print(f"error: {runner.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
