"""A simulated fire panel's printer port: writes GST or Edwards records to a serial port.

It is the far end of ``drivers.panel_printer`` and prints with that module's encoders,
so what it sends is by construction what the codec reads; a change of layout shows up
on both sides at once. The interesting part is the faults a real printer line has and
the gateway must survive, each injectable on purpose: random bytes, a record split
across writes with pauses between them, long bursts of junk, and other brands'
printer ESC sequences on the same line.

Run it against any port pyserial opens, a pseudo-terminal included, e.g. the far end
of ``socat -d -d pty,raw,echo=0,link=/tmp/panel pty,raw,echo=0,link=/tmp/gw``::

    python -m firmware_sim.panel --port /tmp/panel --dialect gst --fire 004-004
    python -m firmware_sim.panel --port /tmp/panel --noise --garbage 200 --split 4 \
        --fire 004-004 --reset

Never imports ``gateway/``: the simulator runs as its own process, as a panel would.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

import serial

from drivers.panel_printer import encode_edwards, encode_gst

NOISE: tuple[bytes, ...] = (
    bytes.fromhex("1B 40 1B 63 00 1B 38 04"),  # 安吉斯 CA2000 / GEC2000 init
    bytes.fromhex("1B 40 1B 31 00 0A"),  # 北大青鸟 LN1010
    bytes.fromhex("1B 40 1C 69 00 1B 43 06 1B 78 00 1C 26 0A 00 00"),  # 利达 LD188EL
    bytes.fromhex("1B 40 1C 2E 0D 0A"),  # 赋安 FHSJ record start
    bytes.fromhex("0A 0A 1B 69 01"),  # 赋安 FHSJ record end
    bytes.fromhex("1C 26"),  # 依爱 EI-2000G
    b"-+" * 20 + b"\n",  # GST9000 parallel-port separator line
)
"""Other brands' printer control sequences (fact sheet PART 2.3): realistic line noise."""


class PanelSim:
    """One simulated panel on one serial port; every method writes at once.

    ``dialect`` is ``gst`` or ``edwards`` (Lida prints like GST; the simulator speaks
    the GST layout). ``seed`` makes the random faults reproducible.
    """

    def __init__(
        self,
        port: str,
        dialect: str = "gst",
        baud: int = 9600,
        *,
        seed: int | None = None,
        date_format: str = "%y/%m/%d",
    ) -> None:
        if dialect not in ("gst", "edwards"):
            raise ValueError(f"simulated dialect must be gst or edwards; got {dialect!r}")
        self.dialect = dialect
        self.date_format = date_format
        self.rng = random.Random(seed)
        self._fire_seen: set[str] = set()
        self._port = serial.serial_for_url(port, baudrate=baud, write_timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the port (idempotent)."""
        self._port.close()

    # --- what a panel prints ----------------------------------------------------------

    def record(self, kind: str, ref: str | None, *, label: str = "",
               when: datetime | None = None) -> bytes:
        """The bytes this panel prints for ``kind`` at ``ref``, without writing them.

        A GST panel prints 首次火警 for a point's first alarm and 火警后续 after; a
        reset forgets which points have been in alarm, as the panel does.
        """
        when = when or datetime.now()
        if self.dialect == "edwards":
            return encode_edwards(kind, ref, when, label)
        first = True
        if kind == "fire" and ref is not None:
            first = ref not in self._fire_seen
            self._fire_seen.add(ref)
        elif kind == "reset":
            self._fire_seen.clear()
        return encode_gst(kind, ref, when, label, first=first, date_format=self.date_format)

    def send(self, kind: str, ref: str | None = None, *, label: str = "",
             when: datetime | None = None, split: int = 1, pause_s: float = 0.05) -> bytes:
        """Print one record; with ``split`` > 1 it leaves in that many writes, pausing
        ``pause_s`` between them, as a slow printer buffer or a USB adapter delivers it."""
        data = self.record(kind, ref, label=label, when=when)
        if split <= 1:
            self.write(data)
            return data
        cuts = sorted(self.rng.sample(range(1, len(data)), min(split, len(data)) - 1))
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            self.write(data[a:b])
            time.sleep(pause_s)
        return data

    # --- faults ------------------------------------------------------------------------

    def garbage(self, n: int) -> bytes:
        """``n`` random bytes, as a line with wrong baud rate or a loose ground gives."""
        data = self.rng.randbytes(n)
        self.write(data)
        return data

    def junk_burst(self, nbytes: int, chunk: int = 256, pause_s: float = 0.0) -> int:
        """A long burst of random bytes in ``chunk``-sized writes; returns bytes sent."""
        sent = 0
        while sent < nbytes:
            self.garbage(min(chunk, nbytes - sent))
            sent += min(chunk, nbytes - sent)
            if pause_s:
                time.sleep(pause_s)
        return sent

    def noise(self, count: int = 1) -> bytes:
        """``count`` ESC sequences of other brands' printers, picked at random."""
        data = b"".join(self.rng.choice(NOISE) for _ in range(count))
        self.write(data)
        return data

    def write(self, data: bytes) -> None:
        """Write raw bytes and wait until they have left (tcdrain)."""
        self._port.write(data)
        self._port.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the records and faults given, in a fixed order.

    Order: noise, garbage, junk burst, then fire, fault, restore records, then reset,
    each ``--repeat`` times, ``--interval`` seconds apart.
    """
    ap = argparse.ArgumentParser(
        prog="python -m firmware_sim.panel",
        description="Simulated fire panel printer port (GST / Edwards) on a serial port.")
    ap.add_argument("--port", required=True, help="serial port or pty path, e.g. /dev/pts/5")
    ap.add_argument("--dialect", choices=("gst", "edwards"), default="gst")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--fire", action="append", default=[], metavar="REF",
                    help="fire alarm at REF (GST '004-004', Edwards '001-126' or 'E045')")
    ap.add_argument("--fault", action="append", default=[], metavar="REF")
    ap.add_argument("--restore", action="append", default=[], metavar="REF")
    ap.add_argument("--reset", action="store_true", help="print a system reset last")
    ap.add_argument("--label", default="", help="location label printed with each record")
    ap.add_argument("--garbage", type=int, default=0, metavar="N", help="N random bytes first")
    ap.add_argument("--junk-burst", type=int, default=0, metavar="N",
                    help="N random bytes in 256-byte writes first")
    ap.add_argument("--noise", type=int, nargs="?", const=3, default=0, metavar="N",
                    help="N other-brand ESC sequences first (3 if no N)")
    ap.add_argument("--split", type=int, default=1, metavar="N",
                    help="send each record in N writes with pauses")
    ap.add_argument("--pause", type=float, default=0.05, help="seconds between split writes")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        sim = PanelSim(args.port, args.dialect, args.baud, seed=args.seed)
    except (serial.SerialException, ValueError) as exc:
        print(f"panel: cannot open {args.port}: {exc}", file=sys.stderr)
        return 2
    with sim:
        try:
            for i in range(args.repeat):
                if i:
                    time.sleep(args.interval)
                if args.noise:
                    sim.noise(args.noise)
                if args.garbage:
                    sim.garbage(args.garbage)
                if args.junk_burst:
                    sim.junk_burst(args.junk_burst)
                for kind, refs in (("fire", args.fire), ("fault", args.fault),
                                   ("restore", args.restore)):
                    for ref in refs:
                        sim.send(kind, ref, label=args.label, split=args.split,
                                 pause_s=args.pause)
                if args.reset:
                    sim.send("reset", split=args.split, pause_s=args.pause)
        except (serial.SerialException, OSError, ValueError) as exc:
            print(f"panel: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
