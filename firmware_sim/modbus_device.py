"""Simulated Modbus RTU sensors: the device side of the ``modbus`` feed.

Gas detectors and temperature probes on an RS-485 line are Modbus slaves: each answers
read requests for its unit address with its register values. This simulator plays any
number of such units on one serial port (in tests, one end of a socat pseudo-terminal
pair) so the gateway's poller can be tested against a real byte stream, timing and all.

It is built on pymodbus's own server, not on firegrid's poller code, so the two sides
of a test do not share a codec and cannot share a bug. Registers live in pymodbus's
datastore; ``set()`` changes are applied through the device ``action`` hook, pymodbus's
documented way to alter registers as they are read. ``silence()`` drops a unit's
replies on the way out (the unit still hears, but never answers), which is what a
powered-off or disconnected sensor looks like from the master's side.

Run one from a shell::

    python -m firmware_sim.modbus_device --port /dev/pts/5 --unit 1 --register 0 --value 100

Never imports ``gateway``: a simulated device runs like a real one, in any process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import REGISTER_MAX, REGISTER_TABLES, UNIT_MAX, UNIT_MIN, parse_ref

# Function codes that address each register table (read; and write, for holding).
_TABLE_CODES = {"holding": frozenset({3, 6, 16, 22, 23}), "input": frozenset({4})}


def _check_value(unit: int, register: int, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"unit {unit} register {register}: value must be 0..65535, got {value!r}")


class ModbusDeviceSim:
    """Modbus RTU slaves ``units`` (unit → {register: value}) on serial ``port``.

    Registers are 16-bit, 0-based protocol addresses, served from the table named by
    ``registers`` (``"holding"``, function code 3, or ``"input"``, code 4); the other
    table and every register not listed answer exception 2 (illegal data address), as
    a real device with a sparse register map does. Requests for unit addresses not
    listed get no answer, as on a real bus.
    """

    def __init__(
        self,
        port: str,
        baud: int = 9600,
        units: dict[int, dict[int, int]] | None = None,
        *,
        registers: str = "holding",
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        if registers not in REGISTER_TABLES:
            raise ValueError(f"registers must be 'holding' or 'input', got {registers!r}")
        if not units:
            raise ValueError("the simulator needs at least one unit with one register")
        self._values: dict[int, dict[int, int]] = {}
        for unit, regs in units.items():
            if isinstance(unit, bool) or not isinstance(unit, int):
                raise ValueError(f"unit must be an int, got {unit!r}")
            if not UNIT_MIN <= unit <= UNIT_MAX:
                raise ValueError(f"unit {unit} is outside {UNIT_MIN}..{UNIT_MAX}")
            if not regs:
                raise ValueError(f"unit {unit} needs at least one register")
            for register, value in regs.items():
                if (isinstance(register, bool) or not isinstance(register, int)
                        or not 0 <= register <= REGISTER_MAX):
                    raise ValueError(f"unit {unit}: register {register} is outside 0..65535")
                _check_value(unit, register, value)
            self._values[unit] = dict(regs)
        self._port = port
        self._baud = baud
        self._table = registers
        self._bytesize = bytesize
        self._parity = parity
        self._stopbits = stopbits
        self._silent: set[int] = set()
        self._server: ModbusSerialServer | None = None
        self._lost = asyncio.Event()

    @property
    def port(self) -> str:
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def get(self, unit: int, register: int) -> int:
        """Current value of a register (what the next read will return)."""
        return self._values[unit][register]

    def set(self, unit: int, register: int, value: int) -> None:
        """Change a register; the next read request sees the new value."""
        if unit not in self._values or register not in self._values[unit]:
            raise KeyError(f"unit {unit} has no register {register} in this simulator")
        _check_value(unit, register, value)
        self._values[unit][register] = value

    def silence(self, unit: int, silent: bool = True) -> None:
        """Make ``unit`` stop answering (True) or answer again (False)."""
        if unit not in self._values:
            raise KeyError(f"unit {unit} is not simulated")
        if silent:
            self._silent.add(unit)
        else:
            self._silent.discard(unit)

    async def start(self) -> None:
        """Open the port and serve; raises RuntimeError naming the port if it cannot."""
        if self._server is not None:
            raise RuntimeError(f"modbus simulator on {self._port} is already running")
        self._lost = asyncio.Event()
        server = ModbusSerialServer(
            [self._device(unit) for unit in sorted(self._values)] + [self._nobody()],
            framer=FramerType.RTU,
            port=self._port,
            baudrate=self._baud,
            bytesize=self._bytesize,
            parity=self._parity,
            stopbits=self._stopbits,
            trace_packet=self._outgoing,
            trace_connect=self._on_connect,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise RuntimeError(f"modbus simulator cannot open {self._port}: {exc}") from None
        self._server = server

    async def stop(self) -> None:
        """Close the port. Safe to call twice; ``start()`` again serves the same values."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def wait_lost(self) -> None:
        """Return when the port failed under the simulator (e.g. the pty went away).

        pymodbus's serial server does not reopen a port; a device whose wire is gone is
        stopped and started again by whoever runs it.
        """
        await self._lost.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- pymodbus hooks ---------------------------------------------------------------

    def _device(self, unit: int) -> SimDevice:
        """A pymodbus device whose chosen register table holds this unit's registers."""
        regs = [
            SimData(address=reg, values=value, datatype=DataType.REGISTERS)
            for reg, value in sorted(self._values[unit].items())
        ]
        unused = [SimData(address=0, datatype=DataType.INVALID)]
        bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
        holding, inputs = (regs, unused) if self._table == "holding" else (unused, regs)
        return SimDevice(
            id=unit,
            simdata=(bits, [*bits], holding, inputs),
            action=functools.partial(self._sync, unit),
        )

    @staticmethod
    def _nobody() -> SimDevice:
        """pymodbus's catch-all device (id 0) for unit addresses we do not simulate.

        Without it the server fails the lookup and answers "device failure"; with it
        the request gets an answer that ``_outgoing`` then drops, so the address stays
        silent, as an empty address on a real bus does.
        """
        return SimDevice(id=0, simdata=[SimData(address=0, datatype=DataType.INVALID)])

    async def _sync(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """Put our values into pymodbus's registers before it answers; keep writes."""
        if function_code not in _TABLE_CODES[self._table]:
            return None
        values = self._values[unit]
        for reg, value in values.items():
            current_registers[reg - start_address] = value
        if set_values:  # a master wrote holding registers: remember them as ours
            for offset, value in enumerate(set_values):
                if address + offset in values:
                    values[address + offset] = int(value)
        return None

    def _outgoing(self, sending: bool, data: bytes) -> bytes:
        """Drop replies from silenced or unknown units; pass everything else unchanged."""
        if sending and data and (data[0] not in self._values or data[0] in self._silent):
            return b""
        return data

    def _on_connect(self, up: bool) -> None:
        if not up and self._server is not None:
            self._lost.set()


def integer(text: str) -> int:
    """A command-line integer, decimal or with a 0x/0o/0b prefix."""
    return int(text, 0)


def _parse_set(text: str) -> tuple[int, int, int]:
    """``"UNIT:REGISTER=VALUE"`` from the command line."""
    ref, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected UNIT:REGISTER=VALUE")
    try:
        unit, register = parse_ref(ref)
        number = integer(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return unit, register, number


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m firmware_sim.modbus_device",
        description="Simulate Modbus RTU sensors on a serial port (e.g. one end of a "
        "socat pty pair) until Ctrl-C.",
    )
    p.add_argument("--port", required=True, help="serial port or pty path to serve on")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--unit", type=int, default=1, help="unit address (1..247), default 1")
    p.add_argument("--register", type=int, default=0, help="0-based register, default 0")
    p.add_argument("--value", type=integer, default=0, help="0..65535, default 0")
    p.add_argument(
        "--set",
        type=_parse_set,
        action="append",
        default=[],
        metavar="UNIT:REGISTER=VALUE",
        help="another register to serve; repeat as needed",
    )
    p.add_argument("--registers", choices=REGISTER_TABLES, default="holding")
    return p


async def _serve(sim: ModbusDeviceSim) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"modbus simulator serving on {sim.port}; Ctrl-C to stop", flush=True)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(sim.wait_lost())]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await sim.stop()
    if waits[1] in done and not stop.is_set():
        print(f"error: lost {sim.port}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: exit 0 on Ctrl-C/SIGTERM, 1 if the port fails, 2 on bad input."""
    args = _build_parser().parse_args(argv)
    units: dict[int, dict[int, int]] = {}
    for unit, register, value in [(args.unit, args.register, args.value), *args.set]:
        units.setdefault(unit, {})[register] = value
    try:
        sim = ModbusDeviceSim(args.port, args.baud, units, registers=args.registers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(sim))


if __name__ == "__main__":
    sys.exit(main())
