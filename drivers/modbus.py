"""Modbus RTU feed: poll gas and temperature sensors on an RS-485 line.

Modbus is master/slave: nothing arrives unless the gateway asks. ``ModbusPoller`` is the
master. Every ``poll_s`` it reads the registers the site names (``ref`` =
``"<unit>:<register>"``, CONTRACT §2) and emits one ``Reading`` per ref with the raw
register value; scaling and ``alarm_at``/``clear_at`` belong to the gateway
(``drivers.analog.Threshold``), because the same rule serves GB/T 26875.3 analog values.

pymodbus is the codec and the serial transport (RTU framing, CRC, function codes 3/4,
exception responses); this module decides *what* to read, *when*, and what a failure
means for the site:

- A unit that does not answer (timeout, CRC-damaged reply, exception response) is a
  device ``Trouble`` ``no_response``, never an alarm: a detector that cannot be read is
  a maintenance job, and the gateway must say so once, not every poll.
- The serial port itself failing (USB adapter unplugged, pty gone) is the feed's link,
  reported through ``link(False, reason)`` and repaired by reopening with backoff.
- The bus is shared and half-duplex, so requests go one at a time; a silent unit costs
  its ``timeout_s`` once per cycle (no Modbus-level retries: the next poll is the
  retry), so it cannot hold the other detectors hostage.

Values: each ref names the first register of its value. By default that is one
register read as an unsigned 16-bit number (0..65535); a ``ValueType`` per ref makes
it ``int16`` (two's complement) or a 32-bit ``int32``, ``uint32`` or IEEE-754
``float32`` spread over the ref's register and the next one, in ``big`` (high word
first, the Modbus convention) or ``little`` word order. The two registers of a 32-bit
value are always fetched in the same request (a block never cuts a value in two), and
are turned into a number by pymodbus's own ``convert_from_registers``. A float that is
NaN or infinite is passed on as it is; the gateway counts and logs it and never
compares it with a threshold. See docs/feed-modbus.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import serial
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from drivers.feed import FeedEvent, Reading, Trouble

log = logging.getLogger(__name__)

UNIT_MIN, UNIT_MAX = 1, 247  # 0 is broadcast (no answer), 248..255 reserved
REGISTER_MAX = 0xFFFF
MAX_REGISTERS_PER_READ = 125  # Modbus limit for function codes 3 and 4
REGISTER_TABLES = ("holding", "input")
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
EXC_ILLEGAL_ADDRESS = 2

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}

# Data types of a value, with the number of registers it spans (pymodbus's DATATYPE).
_DATATYPES = {
    "int16": ModbusClientMixin.DATATYPE.INT16,
    "uint16": ModbusClientMixin.DATATYPE.UINT16,
    "int32": ModbusClientMixin.DATATYPE.INT32,
    "uint32": ModbusClientMixin.DATATYPE.UINT32,
    "float32": ModbusClientMixin.DATATYPE.FLOAT32,
}
DATA_TYPES = tuple(_DATATYPES)
WORD_ORDERS = ("big", "little")


@dataclass(frozen=True, slots=True)
class ValueType:
    """How the register(s) of one ref make a number.

    ``data_type`` is one of ``DATA_TYPES``; ``word_order`` says which register holds
    the high 16 bits of a 32-bit value: ``"big"`` the first (lower address), ``"little"``
    the second. Bytes within a register are always big-endian, as Modbus sends them.
    """

    data_type: str = "uint16"
    word_order: str = "big"

    def __post_init__(self) -> None:
        if self.data_type not in _DATATYPES:
            raise ValueError(f"data_type must be one of {', '.join(DATA_TYPES)},"
                             f" got {self.data_type!r}")
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"word_order must be 'big' or 'little', got {self.word_order!r}")

    @property
    def width(self) -> int:
        """Registers the value spans: 1 for 16-bit types, 2 for 32-bit ones."""
        return int(_DATATYPES[self.data_type].value[1])

    def decode(self, registers: list[int]) -> int | float:
        """The number in ``registers`` (exactly ``width`` of them), by pymodbus."""
        if len(registers) != self.width:
            raise ValueError(f"{self.data_type} needs {self.width} registers,"
                             f" got {len(registers)}")
        value = ModbusClientMixin.convert_from_registers(
            registers, _DATATYPES[self.data_type],
            word_order=self.word_order)  # type: ignore[arg-type]
        assert isinstance(value, int | float)
        return value

    def encode(self, value: float) -> list[int]:
        """The registers holding ``value`` (the inverse of ``decode``), by pymodbus."""
        dt = _DATATYPES[self.data_type]
        if self.data_type != "float32":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.data_type} value must be an integer, got {value!r}")
            bits = 16 * self.width
            lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
                      if self.data_type.startswith("int") else (0, (1 << bits) - 1))
            if not lo <= value <= hi:
                raise ValueError(f"{self.data_type} value must be {lo}..{hi}, got {value}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"float32 value must be a number, got {value!r}")
        try:
            return list(ModbusClientMixin.convert_to_registers(
                float(value) if self.data_type == "float32" else value, dt,
                word_order=self.word_order))  # type: ignore[arg-type]
        except (OverflowError, struct.error) as exc:  # beyond float32's range
            raise ValueError(f"{self.data_type} cannot hold {value!r}: {exc}") from None


UINT16 = ValueType()

_REF_RE = re.compile(r"([0-9]{1,10}):([0-9]{1,10})")


def parse_ref(ref: str) -> tuple[int, int]:
    """``"<unit>:<register>"`` → ``(unit, register)``, decimal, register 0-based.

    The register is the protocol address as it goes on the wire (the "40001" of a
    datasheet is address 0). Raises ValueError saying what is wrong, so a config check
    can point at the device.
    """
    if not isinstance(ref, str):
        raise ValueError(f"modbus ref must be a string '<unit>:<register>', got {ref!r}")
    m = _REF_RE.fullmatch(ref)
    if m is None:
        raise ValueError(
            f"modbus ref {ref!r}: expected '<unit>:<register>' in decimal, e.g. '1:0'"
        )
    unit, register = int(m.group(1)), int(m.group(2))
    if not UNIT_MIN <= unit <= UNIT_MAX:
        raise ValueError(
            f"modbus ref {ref!r}: unit {unit} is outside {UNIT_MIN}..{UNIT_MAX}"
            " (0 is broadcast, 248..255 are reserved)"
        )
    if register > REGISTER_MAX:
        raise ValueError(
            f"modbus ref {ref!r}: register {register} is outside 0..{REGISTER_MAX}"
            " (the 0-based protocol address)"
        )
    return unit, register


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers of ``unit`` from ``start``.

    ``refs`` pairs each wanted register with the ref string the site wrote, so events
    carry the site's own spelling back (``"01:7"`` stays ``"01:7"``).
    """

    unit: int
    start: int
    count: int
    refs: tuple[tuple[int, str], ...]

    @property
    def registers(self) -> tuple[int, ...]:
        """The distinct registers this block is read for, ascending."""
        return tuple(sorted({reg for reg, _ in self.refs}))


def plan_blocks(refs: Iterable[str], max_count: int = MAX_REGISTERS_PER_READ,
                widths: Mapping[str, int] | None = None) -> list[Block]:
    """Group refs into as few read requests as possible, units ascending.

    Per unit, the smallest contiguous block that covers its registers is one request;
    a span wider than ``max_count`` is cut greedily from the lowest register, which
    gives the fewest requests. Fewer requests = shorter bus time per cycle. Registers in
    the gaps are read and ignored (the poller falls back to single reads if a device
    refuses them). ``widths`` gives the registers a ref's value spans (default 1; 2 for
    a 32-bit value): a value is never cut between two requests. Raises ValueError on
    the first bad ref.
    """
    if not 1 <= max_count <= MAX_REGISTERS_PER_READ:
        raise ValueError(f"max_count must be 1..{MAX_REGISTERS_PER_READ}, got {max_count}")
    widths = widths or {}
    by_unit: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ref in dict.fromkeys(refs):  # drop repeats, keep order
        unit, register = parse_ref(ref)
        width = widths.get(ref, 1)
        if not 1 <= width <= max_count:
            raise ValueError(f"modbus ref {ref!r}: a value of {width} registers does not"
                             f" fit a read of at most {max_count}")
        if register + width - 1 > REGISTER_MAX:
            raise ValueError(f"modbus ref {ref!r}: a value of {width} registers from"
                             f" {register} runs past register {REGISTER_MAX}")
        by_unit[unit].append((register, ref))
    blocks: list[Block] = []
    for unit in sorted(by_unit):
        wanted = sorted(by_unit[unit])
        group: list[tuple[int, str]] = []
        for reg, ref in wanted:
            if group and reg + widths.get(ref, 1) - group[0][0] > max_count:
                blocks.append(_block(unit, group, widths))
                group = []
            group.append((reg, ref))
        blocks.append(_block(unit, group, widths))
    return blocks


def split_block(block: Block, widths: Mapping[str, int] | None = None) -> list[Block]:
    """One block per distinct register of ``block``, covering just its value.

    Used when a device refuses a read that spans registers it does not implement
    (exception 2, illegal data address): reading each wanted value alone still works.
    A 32-bit value (``widths``) stays one read of its two registers.
    """
    singles: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for reg, ref in block.refs:
        singles[reg].append((reg, ref))
    return [_block(block.unit, pairs, widths) for _, pairs in sorted(singles.items())]


def _block(unit: int, pairs: list[tuple[int, str]],
           widths: Mapping[str, int] | None = None) -> Block:
    start = pairs[0][0]
    end = max(reg + (widths or {}).get(ref, 1) for reg, ref in pairs)
    return Block(unit, start, end - start, tuple(pairs))


def _frame_gap_s(baud: int, bytesize: int, parity: str, stopbits: float) -> float:
    """The 3.5-character silence Modbus RTU requires between frames.

    Devices use that silence to find the start of the next frame; firing the next
    request straight after a reply can make a slow device drop it. Above 19200 baud the
    specification fixes it at 1.75 ms.
    """
    if baud > 19200:
        return 0.00175
    bits_per_char = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return 3.5 * bits_per_char / baud


@dataclass(frozen=True, slots=True)
class _Failed:
    """A read that produced no values: ``answered`` tells a refusal from silence."""

    answered: bool
    detail: str
    code: int | None = None


def _describe_open_error(port: str, bytesize: int, parity: str, stopbits: float) -> str:
    """Why ``port`` does not open, for the link reason (pymodbus only logs it).

    Opens the port the way pymodbus does (exclusive lock included) and closes it at
    once; only called after pymodbus failed, so it never competes with a live session.
    """
    try:
        ser = serial.serial_for_url(
            port, exclusive=True, bytesize=bytesize, parity=parity, stopbits=stopbits
        )
    except Exception as exc:  # pyserial raises SerialException, OSError, termios.error...
        return str(exc) or type(exc).__name__
    ser.close()
    return "it opened on a second try; it may be flapping"


def _lost_reason(port: str) -> str:
    if port.startswith("/") and not os.path.exists(port):
        return f"{port} disappeared (adapter unplugged or far end gone)"
    return f"{port}: serial port failed (I/O error or hang-up)"


class ModbusPoller:
    """Poll Modbus RTU units over one serial port until cancelled.

    ``emit`` receives lists of ``Reading``/``Trouble`` events (one list per unit per
    cycle); ``link`` receives ``(True, port)`` when the port opens and ``(False,
    reason)`` when it cannot be opened or fails, each once per change. Both are called
    from the event loop and must not block; an exception in them is logged, not raised.

    ``port`` is any path or URL pyserial opens, a pseudo-terminal included.
    """

    def __init__(
        self,
        port: str,
        baud: int,
        refs: list[str],
        emit: Callable[[list[FeedEvent]], None],
        link: Callable[[bool, str], None],
        poll_s: float = 1.0,
        registers: str = "holding",
        timeout_s: float = 0.5,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        types: Mapping[str, ValueType] | None = None,
    ) -> None:
        if not isinstance(port, str) or not port:
            raise ValueError(f"port must be a non-empty path, got {port!r}")
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, got {baud!r}")
        if registers not in REGISTER_TABLES:
            raise ValueError(f"registers must be 'holding' or 'input', got {registers!r}")
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if bytesize not in (7, 8):
            raise ValueError(f"bytesize must be 7 or 8, got {bytesize!r}")
        if parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be 'N', 'E' or 'O', got {parity!r}")
        if stopbits not in (1, 1.5, 2):
            raise ValueError(f"stopbits must be 1, 1.5 or 2, got {stopbits!r}")
        if not refs:
            raise ValueError("a modbus feed needs at least one ref")
        self._types: dict[str, ValueType] = dict(types or {})
        unknown = sorted(set(self._types) - set(refs))
        if unknown:
            raise ValueError(f"types given for refs that are not polled: {unknown}")
        self._widths = {ref: vt.width for ref, vt in self._types.items() if vt.width != 1}
        blocks = plan_blocks(refs, widths=self._widths)
        self._plan: dict[int, list[Block]] = defaultdict(list)
        for b in blocks:
            self._plan[b.unit].append(b)
        self._port = port
        self._baud = baud
        self._emit_cb = emit
        self._link_cb = link
        self._poll_s = float(poll_s)
        self._holding = registers == "holding"
        self._timeout_s = float(timeout_s)
        self._bytesize = bytesize
        self._parity = parity
        self._stopbits = stopbits
        self._gap_s = _frame_gap_s(baud, bytesize, parity, stopbits)
        self._troubled: set[str] = set()
        self._link_up: bool | None = None

    @property
    def port(self) -> str:
        return self._port

    @property
    def plan(self) -> tuple[Block, ...]:
        """The read requests of one cycle, in order (after any gap fallback)."""
        return tuple(b for unit in sorted(self._plan) for b in self._plan[unit])

    @property
    def types(self) -> dict[str, ValueType]:
        """The value type of each ref that is not a plain uint16 register."""
        return dict(self._types)

    @property
    def troubled(self) -> frozenset[str]:
        """Refs whose ``no_response`` trouble is currently active."""
        return frozenset(self._troubled)

    # --- callbacks, shielded --------------------------------------------------------

    def _emit(self, events: list[FeedEvent]) -> None:
        if not events:
            return
        try:
            self._emit_cb(events)
        except Exception:
            log.exception("modbus %s: emit callback failed; events dropped", self._port)

    def _link(self, up: bool, detail: str) -> None:
        if self._link_up is up:
            return
        self._link_up = up
        try:
            self._link_cb(up, detail)
        except Exception:
            log.exception("modbus %s: link callback failed", self._port)

    # --- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Open, poll, and reopen after failures, forever; only CancelledError escapes."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START_S
        while True:
            try:
                opened = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a pymodbus/pyserial surprise end the feed
                log.exception("modbus %s: open failed unexpectedly", self._port)
                opened = f"{self._port}: cannot open ({exc})"
            if isinstance(opened, str):
                self._link(False, opened)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            client, lost = opened
            self._link(True, self._port)
            began = loop.time()
            try:
                reason = await self._session(client, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("modbus %s: poll session failed unexpectedly", self._port)
                reason = f"{self._port}: unexpected error ({exc})"
            finally:
                with contextlib.suppress(Exception):
                    client.close()
            self._link(False, reason)
            if loop.time() - began >= BACKOFF_MAX_S:
                backoff = BACKOFF_START_S  # it worked for a while: a fresh fault, start low
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _open(self) -> tuple[AsyncModbusSerialClient, asyncio.Event] | str:
        """A connected client and an event set when its port fails, or the reason why not."""
        lost = asyncio.Event()

        def on_connect(up: bool) -> None:
            if not up:
                lost.set()

        client = AsyncModbusSerialClient(
            self._port,
            framer=FramerType.RTU,
            baudrate=self._baud,
            bytesize=self._bytesize,
            parity=self._parity,
            stopbits=self._stopbits,  # type: ignore[arg-type]
            timeout=self._timeout_s,
            retries=0,  # a retry doubles the stall of a silent unit; the next poll retries
            reconnect_delay=0,  # reopening is ours: we report the link and pace the backoff
            trace_connect=on_connect,
        )
        connected = await client.connect()
        _still_cancelled()
        if connected and client.connected:
            return client, lost
        client.close()
        why = await asyncio.to_thread(
            _describe_open_error, self._port, self._bytesize, self._parity, self._stopbits
        )
        return f"{self._port}: cannot open ({why})"

    async def _session(self, client: AsyncModbusSerialClient, lost: asyncio.Event) -> str:
        """Poll cycles at a steady cadence until the port fails; return the reason."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            for unit in sorted(self._plan):
                if lost.is_set() or not client.connected:
                    return _lost_reason(self._port)
                events = await self._poll_unit(client, unit)
                if events is None:
                    return _lost_reason(self._port)
                self._emit(events)
            # Cadence: cycles start poll_s apart. A cycle that overran (many silent
            # units) is followed at once, without trying to catch up missed ticks.
            next_at = max(next_at + self._poll_s, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_at - loop.time()):
                    await lost.wait()
            if lost.is_set() or not client.connected:
                return _lost_reason(self._port)

    async def _poll_unit(
        self, client: AsyncModbusSerialClient, unit: int
    ) -> list[FeedEvent] | None:
        """Read every block of ``unit``; None when the port failed meanwhile."""
        events: list[FeedEvent] = []
        blocks = self._plan[unit]
        i = 0
        while i < len(blocks):
            block = blocks[i]
            result = await self._read(client, block)
            if not client.connected:
                return None  # the failure was the port's, not the unit's
            if isinstance(result, list):
                events.extend(self._set_trouble(block, False))
                events.extend(self._readings(block, result))
            elif result.code == EXC_ILLEGAL_ADDRESS and len(block.registers) > 1:
                singles = split_block(block, self._widths)
                log.warning(
                    "modbus %s: unit %d refuses registers %d..%d as one read (%s);"
                    " reading %d registers one by one from now on",
                    self._port, unit, block.start, block.start + block.count - 1,
                    result.detail, len(singles),
                )
                blocks[i : i + 1] = singles
                continue  # read the first single now, in this same cycle
            elif not result.answered:
                # Silent unit: its other blocks would only time out too. Skip them so the
                # unit costs one timeout per cycle, and mark all of its refs.
                for rest in blocks[i:]:
                    events.extend(self._set_trouble(rest, True, result.detail))
                break
            else:
                events.extend(self._set_trouble(block, True, result.detail))
            i += 1
        return events

    def _readings(self, block: Block, values: list[int]) -> list[FeedEvent]:
        """One ``Reading`` per ref of ``block``, its value decoded as its type says.

        A float32 that is NaN or infinite is passed on unchanged (the unit did answer):
        the gateway counts it as bad input and never holds it against a threshold.
        """
        out: list[FeedEvent] = []
        for reg, ref in block.refs:
            vt = self._types.get(ref, UINT16)
            at = reg - block.start
            out.append(Reading(ref, raw=vt.decode(values[at:at + vt.width])))
        return out

    def _set_trouble(self, block: Block, active: bool, detail: str = "") -> list[FeedEvent]:
        """``no_response`` Trouble events for refs of ``block`` whose state changes."""
        out: list[FeedEvent] = []
        for _, ref in block.refs:
            if (ref in self._troubled) is active:
                continue
            if active:
                self._troubled.add(ref)
                out.append(Trouble(ref, "no_response", True, detail=detail))
            else:
                self._troubled.discard(ref)
                out.append(Trouble(ref, "no_response", False))
        return out

    async def _read(self, client: AsyncModbusSerialClient, block: Block) -> list[int] | _Failed:
        """One request on the bus: the registers, or why there are none."""
        await asyncio.sleep(self._gap_s)
        read = client.read_holding_registers if self._holding else client.read_input_registers
        table = "holding" if self._holding else "input"
        what = f"unit {block.unit} {table} registers {block.start}..{block.start + block.count - 1}"
        silent = _Failed(False, f"{what}: no answer within {self._timeout_s:g} s")
        try:
            # pymodbus bounds the wait by timeout_s; the outer bound is a guard against a
            # transport that hangs some other way, so the cycle cadence always holds.
            async with asyncio.timeout(self._timeout_s * 2 + 1.0):
                resp = await read(block.start, count=block.count, device_id=block.unit)
        except (TimeoutError, ModbusException, OSError):
            # No reply, a reply that failed its CRC (the framer drops it, so it times
            # out), or the port went away (the caller checks the link first).
            _still_cancelled()
            return silent
        _still_cancelled()
        if resp.isError():
            code = getattr(resp, "exception_code", None)
            name = _EXCEPTION_NAMES.get(code, "unknown") if isinstance(code, int) else "?"
            return _Failed(True, f"{what}: exception response {code} ({name})", code)
        values = list(getattr(resp, "registers", None) or [])
        if len(values) != block.count:
            # A stale reply to an earlier request of this unit, or a broken device.
            return _Failed(True, f"{what}: answered {len(values)} registers")
        return values


def _still_cancelled() -> None:
    """Re-raise a cancellation that a library's ``wait_for`` swallowed.

    On Python 3.11, ``asyncio.wait_for`` (pymodbus uses it for connects and replies)
    returns the result and drops the cancellation when both arrive together, so the
    poller would run on after the gateway cancelled it and its stop would wait for ever.
    ``Task.cancelling()`` still counts the request: honour it here.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
