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

Values wider than a register (a gas detector's float32 %LEL, a counter's uint32) are
served as two consecutive registers: give a ``Value(12.5, "float32", "big")`` instead
of a bare register word, or ``set(unit, register, 12.5, "float32")``. The words are made
by pymodbus's own ``convert_to_registers``, not by firegrid's poller code.

Run one from a shell::

    python -m firmware_sim.modbus_device --port /dev/pts/5 --unit 1 --register 0 --value 100
    python -m firmware_sim.modbus_device --port /dev/pts/5 --set 1:0=12.5:float32:little

Never imports ``gateway``: a simulated device runs like a real one, in any process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import REGISTER_MAX, REGISTER_TABLES, UNIT_MAX, UNIT_MIN, parse_ref

# Function codes that address each register table (read; and write, for holding).
_TABLE_CODES = {"holding": frozenset({3, 6, 16, 22, 23}), "input": frozenset({4})}


def _check_value(unit: int, register: int, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"unit {unit} register {register}: value must be 0..65535, got {value!r}")


_DT = ModbusClientMixin.DATATYPE
DATA_TYPES = {"int16": _DT.INT16, "uint16": _DT.UINT16, "int32": _DT.INT32,
              "uint32": _DT.UINT32, "float32": _DT.FLOAT32}
WORD_ORDERS = ("big", "little")


@dataclass(frozen=True, slots=True)
class Value:
    """A number as a device stores it: ``data_type`` (int16, uint16, int32, uint32,
    float32) in ``word_order`` (``big``: high 16 bits in the first register). 32-bit
    types take the register they are given at and the next one."""

    value: float
    data_type: str = "uint16"
    word_order: str = "big"

    def words(self, unit: int, register: int) -> list[int]:
        """The register words, made by pymodbus; ValueError naming the place if the
        value does not fit its type."""
        where = f"unit {unit} register {register}"
        dt = DATA_TYPES.get(self.data_type)
        if dt is None:
            raise ValueError(f"{where}: data type must be one of {', '.join(DATA_TYPES)},"
                             f" got {self.data_type!r}")
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"{where}: word order must be big or little,"
                             f" got {self.word_order!r}")
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{where}: value must be a number, got {v!r}")
        if self.data_type == "float32":
            v = float(v)
        elif not isinstance(v, int):
            raise ValueError(f"{where}: {self.data_type} value must be an integer, got {v!r}")
        if dt.value[1] + register - 1 > REGISTER_MAX:
            raise ValueError(f"{where}: a {self.data_type} value runs past register 65535")
        try:
            return list(ModbusClientMixin.convert_to_registers(
                v, dt, word_order=self.word_order))  # type: ignore[arg-type]
        except (OverflowError, struct.error) as exc:
            raise ValueError(f"{where}: {v!r} does not fit {self.data_type} ({exc})") from None


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
        units: dict[int, dict[int, int | Value]] | None = None,
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
            words: dict[int, int] = {}
            for register, value in sorted(regs.items()):
                if (isinstance(register, bool) or not isinstance(register, int)
                        or not 0 <= register <= REGISTER_MAX):
                    raise ValueError(f"unit {unit}: register {register} is outside 0..65535")
                if isinstance(value, Value):
                    for offset, word in enumerate(value.words(unit, register)):
                        if register + offset in words or (offset and register + offset in regs):
                            raise ValueError(f"unit {unit} register {register + offset} is "
                                             f"given twice (the {value.data_type} at "
                                             f"{register} takes it)")
                        words[register + offset] = word
                    continue
                _check_value(unit, register, value)
                if register in words:
                    raise ValueError(f"unit {unit} register {register} is given twice")
                words[register] = value
            self._values[unit] = words
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

    def set(self, unit: int, register: int, value: float, data_type: str | None = None,
            word_order: str = "big") -> None:
        """Change a register; the next read request sees the new value.

        Without ``data_type`` ``value`` is the register's 16-bit word (0..65535). With
        it, ``value`` is stored as that type from ``register`` on (two registers for
        int32, uint32 and float32, which must both be simulated), both words at once,
        so a read never sees half an old value.
        """
        regs = self._values.get(unit)
        if regs is None or register not in regs:
            raise KeyError(f"unit {unit} has no register {register} in this simulator")
        if data_type is None:
            _check_value(unit, register, value)  # type: ignore[arg-type]
            regs[register] = value  # type: ignore[assignment]
            return
        words = Value(value, data_type, word_order).words(unit, register)
        if any(register + i not in regs for i in range(len(words))):
            raise KeyError(f"unit {unit} has no register {register + 1} in this simulator,"
                           f" which a {data_type} at {register} needs")
        for i, word in enumerate(words):
            regs[register + i] = word

    def get_value(self, unit: int, register: int, data_type: str,
                  word_order: str = "big") -> float:
        """The value the registers from ``register`` hold read as ``data_type``."""
        dt = DATA_TYPES[data_type]
        words = [self._values[unit][register + i] for i in range(dt.value[1])]
        value = ModbusClientMixin.convert_from_registers(
            words, dt, word_order=word_order)  # type: ignore[arg-type]
        assert isinstance(value, int | float)
        return value

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


def _number(text: str, data_type: str) -> float:
    """A command-line value of ``data_type``: decimal or 0x.. for integers; a float32
    also takes nan, inf and -inf (what a broken sensor sends)."""
    try:
        return float(text) if data_type == "float32" else integer(text)
    except ValueError:
        raise ValueError(f"value {text!r} is not a {data_type} number") from None


def _parse_set(text: str) -> tuple[int, int, int | Value]:
    """``"UNIT:REGISTER=VALUE[:TYPE[:ORDER]]"`` from the command line."""
    ref, sep, rest = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected UNIT:REGISTER=VALUE")
    value, _, typed = rest.partition(":")
    data_type, _, order = typed.partition(":")
    try:
        unit, register = parse_ref(ref)
        if not data_type:
            return unit, register, _number(value, "uint16")  # type: ignore[return-value]
        if data_type not in DATA_TYPES:
            raise ValueError(f"{text!r}: type must be one of {', '.join(DATA_TYPES)}")
        typed_value = Value(_number(value, data_type), data_type, order or "big")
        typed_value.words(unit, register)  # refuse what does not fit now, naming it
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return unit, register, typed_value


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
    p.add_argument("--value", default="0",
                   help="the register's word 0..65535 (or a number of --type), default 0")
    p.add_argument("--type", choices=tuple(DATA_TYPES), default=None,
                   help="serve --value as this type (32-bit types take two registers)")
    p.add_argument("--word-order", choices=WORD_ORDERS, default="big",
                   help="for 32-bit types: big = high word first (default)")
    p.add_argument(
        "--set",
        type=_parse_set,
        action="append",
        default=[],
        metavar="UNIT:REGISTER=VALUE[:TYPE[:ORDER]]",
        help="another register (or typed value, e.g. 1:2=12.5:float32:little) to serve;"
        " repeat as needed",
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
    units: dict[int, dict[int, int | Value]] = {}
    try:
        first: int | Value = (
            _number(args.value, "uint16") if args.type is None  # type: ignore[assignment]
            else Value(_number(args.value, args.type), args.type, args.word_order))
        for unit, register, value in [(args.unit, args.register, first), *args.set]:
            units.setdefault(unit, {})[register] = value
        sim = ModbusDeviceSim(args.port, args.baud, units, registers=args.registers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(sim))


if __name__ == "__main__":
    sys.exit(main())
