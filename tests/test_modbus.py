"""Modbus feed: ref parsing and request planning (unit), then the poller end to end.

End-to-end tests run the poller against simulated units over a real pseudo-terminal
pair made by socat: once against firegrid's ``ModbusDeviceSim`` and once against
pymodbus's own serial server configured here directly, a device simulator firegrid did
not write. Killing socat (by its PID) is a pulled cable; starting it again on the same
link paths is plugging it back in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.feed import FeedEvent, Reading, Trouble
from drivers.modbus import (
    DATA_TYPES,
    Block,
    ModbusPoller,
    ValueType,
    parse_ref,
    plan_blocks,
    split_block,
)
from firmware_sim.lab import PtyPair
from firmware_sim.modbus_device import ModbusDeviceSim, Value, _parse_set
from gateway.config import parse_site
from gateway.feeds import FeedHub
from gateway.metrics import Metrics
from tests import harness

needs_socat = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")


# --- parse_ref ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "want"),
    [("1:0", (1, 0)), ("247:65535", (247, 65535)), ("01:007", (1, 7)), ("12:40001", (12, 40001))],
)
def test_parse_ref(ref: str, want: tuple[int, int]) -> None:
    assert parse_ref(ref) == want


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("0:1", r"unit 0 is outside 1\.\.247 \(0 is broadcast"),
        ("248:0", r"unit 248 is outside 1\.\.247"),
        ("1:65536", r"register 65536 is outside 0\.\.65535"),
        ("1", "expected '<unit>:<register>'"),
        ("1:", "expected '<unit>:<register>'"),
        (":1", "expected '<unit>:<register>'"),
        ("a:b", "expected '<unit>:<register>'"),
        ("1:2:3", "expected '<unit>:<register>'"),
        (" 1:0", "expected '<unit>:<register>'"),
        ("1:-1", "expected '<unit>:<register>'"),
        ("1:0x10", "expected '<unit>:<register>'"),
        ("１:0", "expected '<unit>:<register>'"),  # fullwidth digit: int() would take it
        ("1:" + "9" * 40, "expected '<unit>:<register>'"),
        ("", "expected '<unit>:<register>'"),
        (1, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_parse_ref_rejects(ref: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ref(ref)  # type: ignore[arg-type]


# --- plan_blocks -------------------------------------------------------------------------


def test_one_block_covers_a_units_refs() -> None:
    [block] = plan_blocks(["1:3", "1:0", "1:1"])
    assert (block.unit, block.start, block.count) == (1, 0, 4)
    assert block.refs == ((0, "1:0"), (1, "1:1"), (3, "1:3"))
    assert block.registers == (0, 1, 3)


def test_units_are_separate_requests_in_unit_order() -> None:
    blocks = plan_blocks(["2:5", "1:0", "2:6"])
    assert [(b.unit, b.start, b.count) for b in blocks] == [(1, 0, 1), (2, 5, 2)]


def test_blocks_are_capped_at_125_registers() -> None:
    assert [(b.start, b.count) for b in plan_blocks(["1:0", "1:124"])] == [(0, 125)]
    assert [(b.start, b.count) for b in plan_blocks(["1:0", "1:125"])] == [(0, 1), (125, 1)]
    blocks = plan_blocks(["1:0", "1:1000", "1:1010", "1:60", "1:1124", "1:1125"])
    assert [(b.start, b.count) for b in blocks] == [(0, 61), (1000, 125), (1125, 1)]


def test_repeated_refs_once_and_two_spellings_both_kept() -> None:
    [block] = plan_blocks(["1:0", "1:0", "01:0"])
    assert block.count == 1
    assert block.refs == ((0, "01:0"), (0, "1:0"))


def test_plan_rejects_a_bad_ref_and_a_bad_cap() -> None:
    with pytest.raises(ValueError, match="'9:x'"):
        plan_blocks(["1:0", "9:x"])
    with pytest.raises(ValueError, match="max_count"):
        plan_blocks(["1:0"], max_count=126)


def test_split_block_reads_each_register_alone() -> None:
    block = Block(3, 0, 8, ((0, "3:0"), (5, "3:5"), (5, "03:5"), (7, "3:7")))
    assert split_block(block) == [
        Block(3, 0, 1, ((0, "3:0"),)),
        Block(3, 5, 1, ((5, "3:5"), (5, "03:5"))),
        Block(3, 7, 1, ((7, "3:7"),)),
    ]


refs_strategy = st.lists(
    st.tuples(st.integers(1, 247), st.integers(0, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    min_size=1,
    max_size=40,
)


@given(refs_strategy, st.integers(1, 125))
def test_plan_covers_every_ref_once_with_fewest_requests(refs: list[str], cap: int) -> None:
    blocks = plan_blocks(refs, max_count=cap)
    seen = [ref for b in blocks for _, ref in b.refs]
    assert sorted(seen) == sorted(set(refs))
    for b in blocks:
        assert 1 <= b.count <= cap
        for reg, ref in b.refs:
            assert parse_ref(ref) == (b.unit, reg)
            assert b.start <= reg < b.start + b.count
        assert b.refs[0][0] == b.start and b.refs[-1][0] == b.start + b.count - 1  # tight
    for prev, nxt in itertools.pairwise(blocks):
        assert (prev.unit, prev.start) < (nxt.unit, nxt.start)
        if prev.unit == nxt.unit:
            # the next block could not have started inside the previous one's reach
            assert nxt.start - prev.start >= cap


# --- values over one or two registers -------------------------------------------------------


@pytest.mark.parametrize(("vt", "registers", "value"), [
    (ValueType(), [0xFFFF], 65535),
    (ValueType("int16"), [0xFFFF], -1),
    (ValueType("int16"), [0x8000], -32768),
    (ValueType("int32"), [0xFFFF, 0xFFFE], -2),
    (ValueType("int32", "little"), [0xFFFE, 0xFFFF], -2),
    (ValueType("uint32"), [0x0001, 0x1170], 70000),
    (ValueType("uint32", "little"), [0x1170, 0x0001], 70000),
    (ValueType("float32"), [0x4148, 0x0000], 12.5),  # IEEE-754 0x41480000
    (ValueType("float32", "little"), [0x0000, 0x4148], 12.5),
    (ValueType("float32"), [0xC2F6, 0xE979], -123.456001281738),
])
def test_value_types_decode_known_words(vt: ValueType, registers: list[int],
                                        value: float) -> None:
    assert vt.decode(registers) == pytest.approx(value, rel=1e-12)
    assert vt.encode(vt.decode(registers)) == registers


def test_float32_nan_and_inf_decode_as_such() -> None:
    vt = ValueType("float32")
    assert math.isnan(vt.decode([0x7FC0, 0x0000]))
    assert vt.decode([0x7F80, 0x0000]) == math.inf
    assert vt.decode([0xFF80, 0x0000]) == -math.inf


_VALUES = {
    "int16": st.integers(-(1 << 15), (1 << 15) - 1),
    "uint16": st.integers(0, (1 << 16) - 1),
    "int32": st.integers(-(1 << 31), (1 << 31) - 1),
    "uint32": st.integers(0, (1 << 32) - 1),
    "float32": st.floats(width=32, allow_nan=False),
}


@given(st.sampled_from(DATA_TYPES).flatmap(
    lambda dt: st.tuples(st.just(dt), st.sampled_from(["big", "little"]), _VALUES[dt])))
def test_value_types_round_trip(case: tuple[str, str, float]) -> None:
    data_type, order, value = case
    vt = ValueType(data_type, order)
    words = vt.encode(value)
    assert len(words) == vt.width == (2 if data_type.endswith("32") else 1)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert vt.decode(words) == value
    if vt.width == 2:  # the two orders are the same words, swapped
        assert ValueType(data_type, "big" if order == "little" else "little").encode(
            value) == words[::-1]


@given(st.sampled_from(["int32", "uint32", "float32"]), st.sampled_from(["big", "little"]),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_any_two_words_decode_to_a_number_of_the_type(data_type: str, order: str,
                                                      hi: int, lo: int) -> None:
    value = ValueType(data_type, order).decode([hi, lo])
    if data_type == "float32":
        assert isinstance(value, float)
        if math.isfinite(value):
            assert ValueType(data_type, order).decode(
                ValueType(data_type, order).encode(value)) == value
    else:
        assert isinstance(value, int)


def test_value_types_refuse_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="data_type must be one of"):
        ValueType("int64")
    with pytest.raises(ValueError, match="word_order"):
        ValueType("float32", "middle")
    with pytest.raises(ValueError, match=r"int32 value must be -2147483648\.\.2147483647"):
        ValueType("int32").encode(1 << 31)
    with pytest.raises(ValueError, match="integer"):
        ValueType("uint32").encode(1.5)
    with pytest.raises(ValueError, match="cannot hold"):
        ValueType("float32").encode(1e39)
    with pytest.raises(ValueError, match="needs 2 registers"):
        ValueType("float32").decode([1])


def test_a_32_bit_value_is_read_whole_in_one_request() -> None:
    widths = {"1:3": 2}
    [block] = plan_blocks(["1:0", "1:3"], widths=widths)
    assert (block.start, block.count) == (0, 5)  # registers 0..4: both words of 1:3
    # at the 125 cap: a value whose second word would fall outside starts a new request
    assert [(b.start, b.count) for b in plan_blocks(["1:0", "1:123"], widths={"1:123": 2})
            ] == [(0, 125)]
    assert [(b.start, b.count) for b in plan_blocks(["1:0", "1:124"], widths={"1:124": 2})
            ] == [(0, 1), (124, 2)]
    # the fallback to single reads keeps the two words of a value together
    block = Block(3, 0, 9, ((0, "3:0"), (5, "3:5"), (7, "3:7")))
    assert split_block(block, {"3:5": 2, "3:7": 2}) == [
        Block(3, 0, 1, ((0, "3:0"),)), Block(3, 5, 2, ((5, "3:5"),)),
        Block(3, 7, 2, ((7, "3:7"),))]
    with pytest.raises(ValueError, match="runs past register 65535"):
        plan_blocks(["1:65535"], widths={"1:65535": 2})


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 400), st.sampled_from([1, 2])),
                min_size=1, max_size=30), st.integers(2, 125))
def test_plan_keeps_every_value_inside_one_request(cells: list[tuple[int, int, int]],
                                                   cap: int) -> None:
    widths = {f"{u}:{r}": w for u, r, w in cells}
    blocks = plan_blocks(list(widths), max_count=cap, widths=widths)
    assert sorted(ref for b in blocks for _, ref in b.refs) == sorted(widths)
    for b in blocks:
        assert 1 <= b.count <= cap
        for reg, ref in b.refs:
            assert b.start <= reg and reg + widths[ref] <= b.start + b.count
        assert max(reg + widths[ref] for reg, ref in b.refs) == b.start + b.count  # tight


# --- constructor checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"registers": "coils"}, "registers must be 'holding' or 'input'"),
        ({"refs": []}, "at least one ref"),
        ({"refs": ["1:0", "0:0"]}, "unit 0"),
        ({"poll_s": 0}, "poll_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"baud": 0}, "baud"),
        ({"parity": "X"}, "parity"),
        ({"port": ""}, "port"),
        ({"types": {"1:1": ValueType("float32")}}, "not polled"),
        ({"refs": ["1:65535"], "types": {"1:65535": ValueType("uint32")}},
         "runs past register 65535"),
    ],
)
def test_poller_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "port": "/dev/null", "baud": 9600, "refs": ["1:0"], "emit": print, "link": print,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ModbusPoller(**args)  # type: ignore[arg-type]


# --- end to end over a socat pty pair ------------------------------------------------------


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[PtyPair]:
    with PtyPair(tmp_path, "rs485") as pair:  # started by each test
        yield pair


class Recorder:
    """The poller's emit and link callbacks, with arrival times."""

    def __init__(self) -> None:
        self.events: list[tuple[float, FeedEvent]] = []
        self.links: list[tuple[float, bool, str]] = []
        self.fail_next_emit = False

    def emit(self, events: list[FeedEvent]) -> None:
        if self.fail_next_emit:
            self.fail_next_emit = False
            raise RuntimeError("a broken consumer")
        now = time.monotonic()
        self.events.extend((now, ev) for ev in events)

    def link(self, up: bool, detail: str) -> None:
        self.links.append((time.monotonic(), up, detail))

    def readings(self, ref: str, since: float = 0.0) -> list[tuple[float, float]]:
        return [(t, ev.raw) for t, ev in self.events
                if t >= since and isinstance(ev, Reading) and ev.ref == ref]

    def troubles(self, ref: str, since: float = 0.0) -> list[Trouble]:
        return [ev for t, ev in self.events
                if t >= since and isinstance(ev, Trouble) and ev.ref == ref]

    def link_changes(self, since: float = 0.0) -> list[tuple[bool, str]]:
        return [(up, detail) for t, up, detail in self.links if t >= since]


async def eventually(check: Callable[[], bool], within: float, what: str) -> float:
    """Wait until ``check()`` holds; return how long it took, or fail saying ``what``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def running(poller: ModbusPoller) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return harness.running(poller, must_be_cancelled=True)


POLL_S = 0.2
TIMEOUT_S = 0.15


@needs_socat
async def test_poller_against_firegrid_sim(ptys: PtyPair) -> None:
    ptys.start()
    sim = ModbusDeviceSim(
        str(ptys.device), 9600,
        {1: {0: 100, 1: 200, 2: 300, 3: 400}, 2: {10: 5, 500: 7}},
    )
    await sim.start()
    rec = Recorder()
    refs = ["1:0", "1:1", "1:2", "1:3", "2:10", "2:500"]
    poller = ModbusPoller(str(ptys.gateway), 9600, refs, rec.emit, rec.link,
                          poll_s=POLL_S, timeout_s=TIMEOUT_S)
    assert [(b.unit, b.start, b.count) for b in poller.plan] == [
        (1, 0, 4), (2, 10, 1), (2, 500, 1)]
    try:
        async with running(poller):
            # every ref read within about two poll periods of the port opening
            await eventually(lambda: bool(rec.links), 2, "link reported")
            assert rec.link_changes() == [(True, str(ptys.gateway))]
            opened = rec.links[0][0]
            await eventually(lambda: all(rec.readings(r) for r in refs), 2 * POLL_S + 0.3,
                             "a reading for every ref")
            assert {r: rec.readings(r)[0][1] for r in refs} == {
                "1:0": 100, "1:1": 200, "1:2": 300, "1:3": 400, "2:10": 5, "2:500": 7}
            assert rec.readings("1:0")[0][0] - opened < 2 * POLL_S

            # a changed register shows in the next readings
            sim.set(1, 2, 999)
            await eventually(lambda: any(v == 999 for _, v in rec.readings("1:2")),
                             2 * POLL_S + 0.3, "changed value read")

            # a silent unit: one no_response trouble per ref, the other unit still read
            silenced = time.monotonic()
            sim.silence(2)
            took = await eventually(
                lambda: len(rec.troubles("2:10")) == 1 and len(rec.troubles("2:500")) == 1,
                POLL_S + TIMEOUT_S + 1.0, "no_response for unit 2")
            assert took < POLL_S + TIMEOUT_S + 1.0
            [t10] = rec.troubles("2:10")
            assert (t10.trouble, t10.active) == ("no_response", True)
            assert "unit 2" in t10.detail and "no answer" in t10.detail
            await asyncio.sleep(6 * POLL_S)
            assert len(rec.troubles("2:10")) == 1, "reported once on the edge, not every poll"
            assert poller.troubled == {"2:10", "2:500"}
            during = [t for t, _ in rec.readings("1:0", since=silenced)]
            assert len(during) >= 5, "unit 1 kept being read"
            gaps = [b - a for a, b in itertools.pairwise(during)]
            # cadence holds: the silent unit costs one timeout per cycle (not one per block)
            assert statistics.median(gaps) < POLL_S + 0.05, gaps
            assert max(gaps) < POLL_S + TIMEOUT_S + 0.1, gaps
            assert not rec.readings("2:10", since=silenced + POLL_S + TIMEOUT_S)

            # answering again clears the trouble, and readings come back
            sim.silence(2, False)
            await eventually(lambda: len(rec.troubles("2:10")) == 2, 2 * POLL_S + 0.5,
                             "no_response cleared")
            assert rec.troubles("2:10")[1] == Trouble("2:10", "no_response", False)
            assert rec.troubles("2:500")[1] == Trouble("2:500", "no_response", False)
            assert poller.troubled == frozenset()

            # cable pulled: link down naming the port, no trouble storm for the units
            pulled = time.monotonic()
            ptys.stop()
            await eventually(lambda: rec.link_changes(since=pulled), 1.5, "link down")
            [(up, reason)] = rec.link_changes(since=pulled)
            assert not up and str(ptys.gateway) in reason
            await sim.stop()
            await asyncio.sleep(0.3)
            assert not rec.troubles("1:0", since=pulled)

            # plugged back in (and the device side restarted on it): link up, readings resume
            ptys.start()
            await sim.start()
            plugged = time.monotonic()
            await eventually(lambda: (True, str(ptys.gateway)) in rec.link_changes(pulled),
                             3.0, "link up again")
            await eventually(lambda: rec.readings("1:2", since=plugged), 1.0, "readings resume")
            assert rec.readings("1:2", since=plugged)[0][1] == 999
            assert [up for up, _ in rec.link_changes(since=pulled)] == [False, True]
    finally:
        await sim.stop()


def _pymodbus_units() -> list[SimDevice]:
    """Units defined with pymodbus's own datastore model (input registers only)."""
    invalid = [SimData(address=0, datatype=DataType.INVALID)]
    bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
    gas = [SimData(address=0, values=[250, 1], datatype=DataType.REGISTERS)]
    return [
        # a gas detector: input registers 0..1 (e.g. %LEL x10 and a status word)
        SimDevice(id=5, simdata=(bits, bits, invalid, gas)),
        # a device with a sparse map: 0 and 5 exist, 1..4 do not, 7 does not
        SimDevice(id=6, simdata=(bits, bits, invalid,
                                 [SimData(address=0, values=11, datatype=DataType.REGISTERS),
                                  SimData(address=5, values=55, datatype=DataType.REGISTERS)])),
    ]


@needs_socat
async def test_poller_against_pymodbus_server_and_port_appearing_late(ptys: PtyPair) -> None:
    rec = Recorder()
    rec.fail_next_emit = True  # a consumer that raises must not stop the feed
    refs = ["5:0", "5:1", "6:0", "6:5", "6:7"]
    poller = ModbusPoller(str(ptys.gateway), 19200, refs, rec.emit, rec.link,
                          poll_s=POLL_S, registers="input", timeout_s=TIMEOUT_S)
    server: ModbusSerialServer | None = None
    async with running(poller):
        # the port does not exist yet: link down, reason naming the port, and retries
        await eventually(lambda: bool(rec.links), 1.0, "first link report")
        [(up, reason)] = rec.link_changes()
        assert not up and str(ptys.gateway) in reason and "cannot open" in reason
        await asyncio.sleep(0.5)
        assert len(rec.links) == 1, "down is reported once, not on every retry"

        ptys.start()
        server = ModbusSerialServer(_pymodbus_units(), framer=FramerType.RTU,
                                    port=str(ptys.device), baudrate=19200)
        await server.serve_forever(background=True)
        try:
            await eventually(lambda: len(rec.links) == 2, 2.0, "link up once the port exists")
            assert rec.links[1][1:] == (True, str(ptys.gateway))
            await eventually(lambda: all(rec.readings(r) for r in ["5:0", "5:1", "6:0", "6:5"]),
                             3 * POLL_S + 0.3, "readings from pymodbus's server")
            assert rec.readings("5:0")[-1][1] == 250 and rec.readings("5:1")[-1][1] == 1
            # unit 6 refused 0..7 as one read; the poller fell back to single reads
            assert rec.readings("6:0")[-1][1] == 11 and rec.readings("6:5")[-1][1] == 55
            assert [(b.unit, b.start, b.count) for b in poller.plan] == [
                (5, 0, 2), (6, 0, 1), (6, 5, 1), (6, 7, 1)]
            # the register that does not exist: trouble (the unit answered "no such address")
            await eventually(lambda: bool(rec.troubles("6:7")), 1.0, "6:7 trouble")
            [t] = rec.troubles("6:7")
            assert t.active and "exception response 2 (illegal data address)" in t.detail
            assert not rec.troubles("6:0") and not rec.troubles("5:0")
        finally:
            await server.shutdown()


@needs_socat
async def test_simulator_command_line(ptys: PtyPair) -> None:
    """``python -m firmware_sim.modbus_device`` serves what it is told; SIGTERM exits 0."""
    ptys.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim.modbus_device", "--port", str(ptys.device),
        "--unit", "1", "--register", "0", "--value", "100", "--set", "1:1=0x10",
        "--set", "3:7=7", "--set", "3:8=-2.5:float32:little",
        cwd=Path(__file__).resolve().parent.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert b"serving on" in line
        rec = Recorder()
        refs = ["1:0", "1:1", "3:7", "3:8"]
        poller = ModbusPoller(str(ptys.gateway), 9600, refs, rec.emit, rec.link,
                              poll_s=POLL_S, timeout_s=TIMEOUT_S,
                              types={"3:8": ValueType("float32", "little")})
        async with running(poller):
            await eventually(lambda: all(rec.readings(r) for r in refs),
                             1.0, "readings from the command-line simulator")
        assert [rec.readings(r)[0][1] for r in refs] == [100, 16, 7, -2.5]
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_simulator_rejects_bad_setup() -> None:
    with pytest.raises(ValueError, match="unit 0 is outside"):
        ModbusDeviceSim("/dev/null", 9600, {0: {0: 1}})
    with pytest.raises(ValueError, match=r"value must be 0\.\.65535"):
        ModbusDeviceSim("/dev/null", 9600, {1: {0: 65536}})
    with pytest.raises(ValueError, match="register 70000"):
        ModbusDeviceSim("/dev/null", 9600, {1: {70000: 1}})
    with pytest.raises(ValueError, match="registers must be"):
        ModbusDeviceSim("/dev/null", 9600, {1: {0: 1}}, registers="coils")
    sim = ModbusDeviceSim("/dev/null", 9600, {1: {0: 1}})
    with pytest.raises(KeyError):
        sim.set(1, 5, 1)
    with pytest.raises(ValueError):
        sim.set(1, 0, -1)
    with pytest.raises(KeyError):
        sim.silence(9)
    sim.set(1, 0, 42)
    assert sim.get(1, 0) == 42


# --- 32-bit and float values over a real pty --------------------------------------------------


def _typed_pymodbus_unit() -> SimDevice:
    """A unit whose values pymodbus's own datastore encodes (big word order), plus one
    little-endian float laid out by hand: firegrid's code makes none of these words."""
    invalid = [SimData(address=0, datatype=DataType.INVALID)]
    bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
    holding = [
        SimData(address=0, values=12.5, datatype=DataType.FLOAT32),  # %LEL
        SimData(address=2, values=-70000, datatype=DataType.INT32),
        SimData(address=4, values=4_000_000_000, datatype=DataType.UINT32),
        SimData(address=6, values=[0x0000, 0x4148], datatype=DataType.REGISTERS),  # 12.5 LE
        SimData(address=8, values=math.nan, datatype=DataType.FLOAT32),  # sensor says "none"
        SimData(address=10, values=-5, datatype=DataType.INT16),
    ]
    return SimDevice(id=7, simdata=(bits, bits, holding, invalid))


@needs_socat
async def test_poller_reads_32_bit_and_float_values_from_pymodbus_server(ptys: PtyPair) -> None:
    ptys.start()
    requests: list[bytes] = []

    def trace(sending: bool, data: bytes) -> bytes:
        if not sending:
            requests.append(bytes(data))
        return data

    server = ModbusSerialServer([_typed_pymodbus_unit()], framer=FramerType.RTU,
                                port=str(ptys.device), baudrate=9600, trace_packet=trace)
    await server.serve_forever(background=True)
    types = {"7:0": ValueType("float32"), "7:2": ValueType("int32"),
             "7:4": ValueType("uint32"), "7:6": ValueType("float32", "little"),
             "7:8": ValueType("float32"), "7:10": ValueType("int16")}
    rec = Recorder()
    poller = ModbusPoller(str(ptys.gateway), 9600, list(types), rec.emit, rec.link,
                          poll_s=POLL_S, timeout_s=TIMEOUT_S, types=types)
    # all six values, 11 registers, in one request: no value is read in two halves
    assert [(b.unit, b.start, b.count) for b in poller.plan] == [(7, 0, 11)]
    try:
        async with running(poller):
            await eventually(lambda: all(len(rec.readings(r)) >= 2 for r in types),
                             3 * POLL_S + 1.0, "two readings of every value")
        got = {r: rec.readings(r)[-1][1] for r in types}
        assert got["7:0"] == 12.5 and got["7:6"] == 12.5
        assert got["7:2"] == -70000 and got["7:4"] == 4_000_000_000 and got["7:10"] == -5
        assert math.isnan(got["7:8"])  # passed on as NaN: the gateway drops it
        assert not [ev for _, ev in rec.events if isinstance(ev, Trouble)]
        # every request on the wire: unit 7, function 3, registers 0..10
        assert requests and {r[:6] for r in requests} == {bytes([7, 3, 0, 0, 0, 11])}
    finally:
        await server.shutdown()


GAS_SITE = """
site: gas
zones:
  - {id: a, floor: 1, polygon: [[0,0],[10,0],[10,10],[0,10]]}
feeds:
  - {name: rs485, type: modbus, port: "PORT", poll_s: 0.2, timeout_s: 0.15}
devices:
  - {id: gas-f, kind: gas, floor: 1, x: 1, y: 1, feed: rs485, ref: "1:0",
     data_type: float32, alarm_at: 25, clear_at: 10}
  - {id: cnt-1, kind: gas, floor: 1, x: 2, y: 2, feed: rs485, ref: "1:2",
     data_type: int32, word_order: little}
  - {id: tmp-1, kind: temperature, floor: 1, x: 3, y: 3, feed: rs485, ref: "1:4",
     signed: true, scale: 0.1}
"""


@needs_socat
async def test_float_gas_detector_from_site_file_to_signals(ptys: PtyPair) -> None:
    """The site file's types reach the poller through the gateway's FeedHub, the
    simulator serves typed values, and a NaN between readings is counted, not an alarm
    or a clear."""
    ptys.start()
    sim = ModbusDeviceSim(str(ptys.device), 9600, {1: {
        0: Value(4.5, "float32"), 2: Value(-3, "int32", "little"), 4: Value(-12, "int16")}})
    await sim.start()
    got: list[tuple[str, object]] = []
    metrics = Metrics()
    hub = FeedHub(parse_site(GAS_SITE.replace("PORT", str(ptys.gateway))),
                  lambda kind, _t, data, _u: got.append((kind, data)), metrics)
    poller = hub.transport("rs485")
    assert isinstance(poller, ModbusPoller)
    assert [(b.start, b.count) for b in poller.plan] == [(0, 5)]

    def values(device: str) -> list[tuple[str, float]]:
        return [(d.state, d.value) for k, d in got  # type: ignore[attr-defined]
                if k == "signal" and d.device == device]  # type: ignore[attr-defined]

    try:
        async with running(poller):
            await eventually(lambda: all(values(d) for d in ("gas-f", "cnt-1", "tmp-1")),
                             2.0, "a reading of every device")
            assert values("gas-f")[0] == ("clear", 4.5)
            assert values("cnt-1")[0] == ("clear", -3)
            assert values("tmp-1")[0][1] == pytest.approx(-1.2)
            sim.set(1, 0, 30.25, "float32")
            await eventually(lambda: ("alarm", 30.25) in values("gas-f"), 1.0, "alarm")
            sim.set(1, 0, math.nan, "float32")
            await eventually(lambda: metrics.snapshot().get("dropped.bad_payload", 0) >= 2,
                             1.0, "NaN counted")
            assert values("gas-f")[-1][0] == "alarm", "a NaN is no clear"
            assert ("seen", "gas-f") in got
            sim.set(1, 0, 5.0, "float32")
            await eventually(lambda: values("gas-f")[-1] == ("clear", 5.0), 1.0, "clear")
            alarms = [v for v in values("gas-f") if v[0] == "alarm"]
            assert all(v == 30.25 for _, v in alarms)
    finally:
        await sim.stop()


def test_simulator_typed_values() -> None:
    sim = ModbusDeviceSim("/dev/null", 9600, {1: {0: Value(12.5, "float32", "little"),
                                                  2: Value(-2, "int32"), 4: 9}})
    assert [sim.get(1, r) for r in range(5)] == [0x0000, 0x4148, 0xFFFF, 0xFFFE, 9]
    sim.set(1, 2, 70000, "uint32", "little")
    assert (sim.get(1, 2), sim.get(1, 3)) == (0x1170, 0x0001)
    assert sim.get_value(1, 2, "uint32", "little") == 70000
    sim.set(1, 0, math.inf, "float32")
    assert sim.get_value(1, 0, "float32") == math.inf
    with pytest.raises(KeyError, match="register 5"):
        sim.set(1, 4, 1, "int32")  # register 5 is not simulated
    with pytest.raises(ValueError, match="given twice"):
        ModbusDeviceSim("/dev/null", 9600, {1: {0: Value(1, "int32"), 1: 5}})
    with pytest.raises(ValueError, match="does not fit int32"):
        ModbusDeviceSim("/dev/null", 9600, {1: {0: Value(1 << 31, "int32")}})
    with pytest.raises(ValueError, match="runs past register 65535"):
        ModbusDeviceSim("/dev/null", 9600, {1: {65535: Value(1.0, "float32")}})
    with pytest.raises(ValueError, match="data type must be one of"):
        ModbusDeviceSim("/dev/null", 9600, {1: {0: Value(1, "int64")}})
    assert _parse_set("1:0=12.5:float32:little") == (1, 0, Value(12.5, "float32", "little"))
    assert _parse_set("2:4=-3:int32") == (2, 4, Value(-3, "int32", "big"))
    assert _parse_set("1:1=0x10") == (1, 1, 16)


async def test_a_cancellation_swallowed_by_the_library_still_stops_the_poller() -> None:
    """Python 3.11's wait_for returns a reply that lands with the cancel and drops the
    cancel; the poller must stop all the same, or the gateway's stop waits on it."""

    class Reply:
        def __init__(self) -> None:
            self.registers = [7]

        def isError(self) -> bool:  # pymodbus's name
            return False

    class Client:  # only what _read touches: a reply that swallows the cancel
        async def read_holding_registers(self, start: int, count: int,
                                         device_id: int) -> Reply:
            # as wait_for does when the reply and the cancel arrive together
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(5)
            return Reply()

    poller = ModbusPoller("/dev/null-not-opened", 9600, ["1:0"], lambda _e: None,
                          lambda _u, _d: None, poll_s=0.2, timeout_s=0.15)
    (block,) = poller.plan
    task = asyncio.create_task(poller._read(Client(), block))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)  # inside the read
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert task.cancelled()
