"""Fire panel printer ports: the codec (drivers.panel_printer), the serial transport
(drivers.serial_link) and the simulated panel (firmware_sim.panel).

The codec is checked against the published GST examples byte for byte, then against
arbitrary bytes cut into arbitrary reads (it must never raise, and the cut must not
change the result). The transport is checked on real pseudo-terminals (socat, or
os.openpty), with the simulated panel on the far end: alarms arrive, noise does not
stop them, and a pulled cable is reported and recovered from without help.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.feed import FeedEvent, Garbage, Reset, Seen
from drivers.panel_printer import (
    JUNK_REPORT,
    MAX_LINE,
    MAX_RECORD,
    PrinterParser,
    encode_edwards,
    encode_gst,
)
from drivers.serial_link import SerialFeed
from drivers.signal import Signal
from firmware_sim.lab import PtyPair
from firmware_sim.panel import NOISE, PanelSim
from tests import harness

FAST = settings(max_examples=200, deadline=None)
REPO = Path(__file__).resolve().parents[1]

# The article's examples (fact sheet PART 2.1). Example 2 is printed with its header
# elided ("1B 36 …"); HEADER_1724 is example 1's header put in its place.
EX1_FIRE = bytes.fromhex(
    "1B 36 30 38 2F 31 32 2F 30 32 20 20 31 37 3A 32 34 0A 20 20 30 30 34 2D 30 30 34 0A"
    " 1B 39 CA D7 B4 CE BB F0 BE AF 0A C8 B9 C2 A5 D2 BB B2 E3 C9 CF BF D5 0A"
    " B8 D0 D1 CC CC BD B2 E2 C6 F7 0A 0A")
HEADER_1724 = bytes.fromhex("1B 36 30 38 2F 31 32 2F 30 32 20 20 31 37 3A 32 34 0A 20 20")
EX2_FOLLOW_UP = HEADER_1724 + bytes.fromhex(
    "30 30 36 2D 30 30 37 0A 1B 39 BB F0 BE AF BA F3 D0 F8 0A"
    " D6 D0 D1 CC C1 F9 B2 E3 BC C6 BB AE B2 BF 0A B8 D0 D1 CC CC BD B2 E2 C6 F7 0A 0A")
EX3_RESET = bytes.fromhex(
    "1B 36 30 38 2F 31 32 2F 30 32 20 20 31 37 3A 32 35 0A 20 20 0A"
    " 1B 39 CF B5 CD B3 B8 B4 CE BB 0A 0A")

# Edwards iO1000 lines as published (fact sheet PART 2.3, jsedintel README).
EDWARDS_SAMPLE = (
    "PULL ACT | 12:06:56 10/20/2023 L:1 D:126\nSala de pruebas\n\n\n"
    "PROB ACT | 12:07:13 10/20/2023     E:045\nSilencio Senales\n\n\n"
    "MON ACT  | 12:07:13 10/20/2023     E:042\nReinicio\n\n\n"
    "PULL RST | 12:07:35 10/20/2023 L:1 D:126\nSala de pruebas\n\n\n"
    "PROB RST | 12:07:35 10/20/2023     E:045\nSilencio Senales\n\n\n"
    "MON RST  | 12:07:35 10/20/2023     E:042\nReinicio\n"
).encode("ascii")

WHEN = datetime(2008, 12, 2, 17, 24)


def gst(text: str) -> bytes:
    return text.encode("gb18030")


def signals(events: list[FeedEvent]) -> list[tuple[str, str]]:
    return [(e.device, e.state) for e in events if isinstance(e, Signal)]


def feed_chunks(dialect: str, data: bytes, cuts: list[int]) -> list[FeedEvent]:
    p = PrinterParser(dialect)
    out: list[FeedEvent] = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        out += p.feed(data[a:b])
    return out


# ====================================================================== GST examples


def test_example_1_first_fire_alarm() -> None:
    events = PrinterParser("gst").feed(EX1_FIRE)
    assert len(events) == 2 and events[1] == Seen(None)  # any good record: the panel is alive
    sig = events[0]
    assert isinstance(sig, Signal)
    assert (sig.device, sig.state, sig.kind) == ("004-004", "alarm", None)
    meta = dict(sig.meta)
    assert meta == {"words": "首次火警", "panel_time": "08/12/02 17:24",
                    "label": "裙楼一层上空", "device_type": "感烟探测器"}


def test_example_2_fire_follow_up_where_offsets_do_not_hold() -> None:
    events = PrinterParser("gst").feed(EX2_FOLLOW_UP)
    assert signals(events) == [("006-007", "alarm")]
    assert dict(events[0].meta)["words"] == "火警后续"  # type: ignore[union-attr]


def test_example_3_system_reset() -> None:
    assert PrinterParser("gst").feed(EX3_RESET) == [Reset(None), Seen(None)]


def test_encode_gst_reproduces_the_examples_byte_for_byte() -> None:
    assert encode_gst("fire", "004-004", WHEN, label="裙楼一层上空") == EX1_FIRE
    assert encode_gst("reset", None, datetime(2008, 12, 2, 17, 25)) == EX3_RESET
    assert encode_gst("fire", "006-007", WHEN, label="中烟六层计划部", first=False) == (
        EX2_FOLLOW_UP)


def test_the_three_examples_in_one_stream_with_noise_between() -> None:
    data = b"".join([NOISE[0], EX1_FIRE, NOISE[2], EX2_FOLLOW_UP, b"\x00\xff" * 5, EX3_RESET])
    events = PrinterParser("gst").feed(data)
    assert [type(e).__name__ for e in events] == [
        "Garbage", "Signal", "Seen", "Garbage", "Signal", "Seen", "Garbage", "Reset", "Seen"]
    assert signals(events) == [("004-004", "alarm"), ("006-007", "alarm")]
    assert events[0] == Garbage("bytes outside a printer record", "byte 0", len(NOISE[0]))


# ====================================================================== GST keywords


def record(words: str, ref_line: str = "  004-004", *rest: str) -> bytes:
    body = "".join(f"{x}\n" for x in (words, *rest))
    return b"\x1b6" + gst(f"08/12/02  17:24\n{ref_line}\n") + b"\x1b9" + gst(body) + b"\n"


@pytest.mark.parametrize(("words", "expected"), [
    ("首次火警", Signal("004-004", "alarm")),
    ("火警后续", Signal("004-004", "alarm")),
    ("火警", Signal("004-004", "alarm")),
    ("故障", Signal("004-004", "fault")),
    ("故障恢复", Signal("004-004", "clear")),
    ("恢复", Signal("004-004", "clear")),
    ("火警消除", Signal("004-004", "clear")),
    ("复位", Reset(None)),
    ("系统复位", Reset(None)),
    ("屏蔽", Seen(None)),
    ("启动", Seen(None)),
    ("反馈", Seen(None)),
    ("监管", Seen(None)),
])
def test_keyword_to_event(words: str, expected: FeedEvent) -> None:
    events = PrinterParser("gst").feed(record(words, "  004-004", "门厅", "感烟探测器"))
    assert events[-1] == Seen(None) and len(events) == (1 if expected == Seen(None) else 2)
    got = events[0]
    if isinstance(expected, Signal):
        assert isinstance(got, Signal)
        assert (got.device, got.state) == (expected.device, expected.state)
    else:
        assert got == expected


def test_keywords_in_the_label_do_not_count() -> None:
    # the location label is free text typed by the installer: "火警" there is no alarm
    events = PrinterParser("gst").feed(record("启动", "  004-004", "火警电话旁 101-102室"))
    assert events == [Seen(None)]


def test_fire_or_fault_without_loop_point_is_garbage_naming_the_record() -> None:
    for words in ("首次火警", "故障"):
        events = PrinterParser("gst").feed(record(words, "  "))
        assert len(events) == 2 and isinstance(events[0], Garbage) and events[1] == Seen(None)
        assert words in events[0].reason and "loop-point" in events[0].reason


def test_unknown_record_words_are_garbage() -> None:
    events = PrinterParser("gst").feed(record("打印测试"))
    assert len(events) == 2 and isinstance(events[0], Garbage)
    assert "打印测试" in events[0].reason


def test_loop_point_found_anywhere_in_header_lines() -> None:
    data = b"\x1b6" + gst("2008-12-02 17:24 机号1 004-004\n") + b"\x1b9" + gst("火警\n\n")
    assert signals(PrinterParser("gst").feed(data)) == [("004-004", "alarm")]


@pytest.mark.parametrize("dialect", ["lida", "gst"])
def test_lida_keyword_colon_five_digits(dialect: str) -> None:
    p = PrinterParser(dialect)
    fire = b"\x1b6" + gst("火警:01088\n") + b"\x1b9" + gst("一楼大厅\n\n")
    fault = b"\x1b6" + gst("08-12-02 17:24 故障:10203\n") + b"\x1b9" + gst("感烟探测器\n\n")
    reset = b"\x1b6" + gst("复位:00000\n") + b"\x1b9" + gst("控制器\n\n")
    events = p.feed(fire + fault + reset)
    assert signals(events) == [("0-010-088", "alarm"), ("1-002-003", "fault")]
    assert events[-2:] == [Reset(None), Seen(None)]
    assert dict(events[0].meta)["label"] == "一楼大厅"  # type: ignore[union-attr]


# ====================================================================== framing faults


def test_good_record_after_garbage_and_other_brands_noise() -> None:
    junk = bytes(range(256)) + b"".join(NOISE) + b"\x1b"
    events = PrinterParser("gst").feed(junk + EX1_FIRE)
    assert events[-1:] and signals(events) == [("004-004", "alarm")]
    garbage = [e for e in events if isinstance(e, Garbage)]
    assert len(garbage) == 1 and garbage[0].nbytes == len(junk)  # one per run of junk


def test_record_interrupted_by_next_record_is_dropped_and_next_is_read() -> None:
    cut = EX1_FIRE[:30]
    events = PrinterParser("gst").feed(cut + EX2_FOLLOW_UP)
    assert isinstance(events[0], Garbage) and "cut off" in events[0].reason
    assert events[0].nbytes == 30
    assert signals(events) == [("006-007", "alarm")]


def test_overlong_record_is_dropped_and_parsing_resumes_at_next_esc6() -> None:
    p = PrinterParser("gst")
    data = b"\x1b6" + b"x" * (2 * MAX_RECORD) + EX1_FIRE
    events: list[FeedEvent] = []
    for i in range(0, len(data), 100):
        events += p.feed(data[i:i + 100])
        assert len(p._impl._buf) <= MAX_RECORD + 100  # bounded
    assert events[0] == Garbage(f"printer record without an end in {MAX_RECORD} bytes",
                                "byte 0", MAX_RECORD)
    assert isinstance(events[1], Garbage) and events[1].nbytes == MAX_RECORD + 2
    assert signals(events) == [("004-004", "alarm")]


def test_long_junk_burst_is_bounded_and_reported_while_it_lasts() -> None:
    p = PrinterParser("gst")
    junk = bytes(b for b in os.urandom(5 * JUNK_REPORT) if b != 0x1B)
    events = p.feed(junk)
    assert len(p._impl._buf) <= 1
    assert [e.nbytes for e in events] == [JUNK_REPORT] * (len(junk) // JUNK_REPORT)  # type: ignore[union-attr]
    events = p.feed(EX1_FIRE)
    assert events[0].nbytes == len(junk) % JUNK_REPORT  # type: ignore[union-attr]
    assert signals(events) == [("004-004", "alarm")]


def test_crlf_record_end_is_tolerated() -> None:
    data = EX1_FIRE.replace(b"\n", b"\r\n")
    assert signals(PrinterParser("gst").feed(data)) == [("004-004", "alarm")]


def test_flush_reports_a_half_record() -> None:
    p = PrinterParser("gst")
    assert p.feed(EX1_FIRE[:40]) == []
    assert p.flush() == [Garbage("printer record cut off (no end)", "byte 0", 40)]
    assert signals(p.feed(EX1_FIRE)) == [("004-004", "alarm")]


def test_unknown_dialect_is_refused() -> None:
    for dialect in ("notifier", "simplex", "GST", ""):
        with pytest.raises(ValueError, match="not implemented"):
            PrinterParser(dialect)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: encode_gst("fire", "4-4", WHEN), "004-004"),
    (lambda: encode_gst("smoke", "004-004", WHEN), "kind"),
    (lambda: encode_gst("fire", "004-004", WHEN, label="a\nb"), "LF"),
    (lambda: encode_edwards("fire", "1-126", WHEN), "001-126"),
    (lambda: encode_edwards("fire", "001-126", WHEN, label="火"), "Latin-1"),
])
def test_encoders_refuse_what_they_cannot_print(call: Callable[[], bytes], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ====================================================================== Edwards


def test_edwards_sheet_lines() -> None:
    events = PrinterParser("edwards").feed(EDWARDS_SAMPLE)
    assert [(type(e).__name__, getattr(e, "device", None), getattr(e, "state", None))
            for e in events if e != Seen(None)] == [
        ("Signal", "001-126", "alarm"),
        ("Signal", "E045", "fault"),
        ("Signal", "001-126", "clear"),
        ("Signal", "E045", "clear"),
        ("Signal", "E042", "clear"),
    ]
    assert events.count(Seen(None)) == 6  # one per event line; MON ACT is only that
    assert dict(events[0].meta) == {"event": "PULL ACT",  # type: ignore[union-attr]
                                    "panel_time": "12:06:56 10/20/2023"}


def test_encode_edwards_prints_the_sheet_layout() -> None:
    when = datetime(2023, 10, 20, 12, 6, 56)
    assert encode_edwards("fire", "001-126", when, "Sala de pruebas", event="PULL ACT") == (
        b"PULL ACT | 12:06:56 10/20/2023 L:1 D:126\r\nSala de pruebas\r\n\r\n\r\n")
    assert encode_edwards("monitor", "E042", datetime(2023, 10, 20, 12, 7, 13)).startswith(
        b"MON ACT  | 12:07:13 10/20/2023     E:042\r\n")


@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"])
def test_edwards_line_terminators(eol: bytes) -> None:
    data = EDWARDS_SAMPLE.replace(b"\n", eol) + eol
    assert len(signals(PrinterParser("edwards").feed(data))) == 5


@pytest.mark.parametrize(("line", "expected"), [
    ("FIRE ACT | 01:02:03 01/02/2024 L:2 D:7", Signal("002-007", "alarm")),
    ("SMOKE ACT | 01:02:03 01/02/2024 L:1 D:1", Signal("001-001", "alarm")),
    ("HEAT ACT | 01:02:03 01/02/2024 L:1 D:2", Signal("001-002", "alarm")),
    ("ALARM ACT | 01:02:03 01/02/2024 L:1 D:3", Signal("001-003", "alarm")),
    ("TRBL ACT | 01:02:03 01/02/2024 L:1 D:4", Signal("001-004", "fault")),
    ("SMOKE RST | 01:02:03 01/02/2024 L:1 D:1", Signal("001-001", "clear")),
    ("SUPV ACT | 01:02:03 01/02/2024 E:001", Seen(None)),
    ("SYSTEM RESET | 01:02:03 01/02/2024", Reset(None)),
    ("SYSTEM RESET", Reset(None)),
    ("RESET", Reset(None)),
])
def test_edwards_event_words(line: str, expected: FeedEvent) -> None:
    events = PrinterParser("edwards").feed(b"\r\n" + line.encode() + b"\r\n")
    assert events[-1] == Seen(None) and len(events) == (1 if expected == Seen(None) else 2)
    got = events[0]
    if isinstance(expected, Signal):
        assert isinstance(got, Signal) and (got.device, got.state) == (expected.device,
                                                                        expected.state)
    else:
        assert got == expected


def test_edwards_overlong_and_unknown_lines_are_garbage_then_parsing_goes_on() -> None:
    p = PrinterParser("edwards")
    junk = b"\x1b@" + b"z" * (5 * MAX_LINE)  # overlong, fed in pieces, no terminator yet
    events = [e for i in range(0, len(junk), 50) for e in p.feed(junk[i:i + 50])]
    assert events == [] and len(p._impl._buf) <= MAX_LINE + 50
    events = p.feed(b"\r\nnot an event\r\nALARM ACT | 01:02:03 01/02/2024\r\n"
                    b"PULL ACT | 12:06:56 10/20/2023 L:1 D:126\r\n")
    assert isinstance(events[0], Garbage) and events[0].where == "byte 0"
    assert events[0].nbytes == len(junk) + 1 + len(b"not an event") + 1
    assert isinstance(events[1], Garbage) and "without a point" in events[1].reason
    assert signals(events) == [("001-126", "alarm")]


def test_edwards_label_is_not_read_as_an_event() -> None:
    data = b"MON ACT  | 12:07:13 10/20/2023     E:042\r\nRESET PANEL\r\n\r\n"
    assert PrinterParser("edwards").feed(data) == [Seen(None)]


# ====================================================================== properties

INTERESTING = [b"\x1b6", b"\x1b9", b"\x1b", b"\n", b"\n\n", b"\r", b"\r\n", b"|", b" ",
               gst("火警"), gst("故障恢复"), gst("系统复位"), b"004-004", b":01088",
               b"08/12/02  17:24\n  ", b"PULL ACT | 12:06:56 10/20/2023 L:1 D:126",
               b"RESET", b"E:045", *NOISE, EX1_FIRE, EX3_RESET]
hostile_bytes = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.one_of(st.sampled_from(INTERESTING), st.binary(max_size=40)),
             max_size=60).map(b"".join),
)


@FAST
@given(dialect=st.sampled_from(["gst", "lida", "edwards"]), data=hostile_bytes,
       draw=st.data())
def test_arbitrary_bytes_in_arbitrary_reads_never_raise_nor_depend_on_the_cut(
        dialect: str, data: bytes, draw: st.DataObject) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=12)))
    whole = PrinterParser(dialect).feed(data)
    assert feed_chunks(dialect, data, cuts) == whole
    for e in whole:
        assert isinstance(e, Signal | Garbage | Reset | Seen)
        if isinstance(e, Signal):
            assert e.state in ("alarm", "fault", "clear")


GST_REF = st.from_regex(r"[0-9]{3}-[0-9]{3}", fullmatch=True)
GST_LABEL = st.text(alphabet="裙楼一层上空中烟六计划部门厅火警故障ABCxyz0123456789- ", max_size=12)
GST_EXPECT = {"fire": "alarm", "fault": "fault", "restore": "clear"}


@FAST
@given(items=st.lists(st.tuples(st.sampled_from(["fire", "fault", "restore", "reset"]),
                                GST_REF, GST_LABEL, st.booleans(),
                                st.sampled_from([b"", *NOISE, b"\x00\xff\x1b"])),
                      min_size=1, max_size=8))
def test_gst_encode_feed_round_trip(items: list[tuple[str, str, str, bool, bytes]]) -> None:
    data = b""
    expected: list[object] = []
    for kind, ref, label, first, noise in items:
        data += noise + encode_gst(kind, ref, WHEN, label=label, first=first)
        expected.append(Reset(None) if kind == "reset" else (ref, GST_EXPECT[kind]))
    got = [e if isinstance(e, Reset) else (e.device, e.state)
           for e in PrinterParser("gst").feed(data) if isinstance(e, Signal | Reset)]
    assert got == expected


EDW_REF = st.one_of(GST_REF, st.from_regex(r"E[0-9]{3}", fullmatch=True))
EDW_LABEL = st.text(alphabet="Sala de pruebas ñ0123456789-:/", max_size=20)
EDW_EXPECT = {"fire": "alarm", "fault": "fault", "restore": "clear"}


@FAST
@given(items=st.lists(st.tuples(st.sampled_from(["fire", "fault", "restore", "reset",
                                                 "monitor"]), EDW_REF, EDW_LABEL,
                                st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31))),
                      min_size=1, max_size=8))
def test_edwards_encode_feed_round_trip(items: list[tuple[str, str, str, datetime]]) -> None:
    data = b""
    expected: list[object] = []
    for kind, ref, label, when in items:
        data += encode_edwards(kind, ref, when, label)
        if kind != "monitor":
            expected.append(Reset(None) if kind == "reset" else (ref, EDW_EXPECT[kind]))
        expected.append(Seen(None))
    got = [e if isinstance(e, Reset | Seen) else (e.device, e.state)  # type: ignore[union-attr]
           for e in PrinterParser("edwards").feed(data)]
    assert got == expected


def test_split_at_every_byte_boundary_gives_the_same_events() -> None:
    lida = b"\x1b6" + gst("火警:01088\n") + b"\x1b9" + gst("一楼大厅\n\n")
    streams = {
        "gst": (b"\xff\x1b" + EX1_FIRE + NOISE[2] + EX2_FOLLOW_UP + b"\x1b6cut" + EX3_RESET
                + lida + b"tail"),
        "edwards": b"\x01junk\r\n" + EDWARDS_SAMPLE + b"\r\nSYSTEM RESET\r\n",
    }
    for dialect, data in streams.items():
        whole = PrinterParser(dialect).feed(data)
        assert len(signals(whole)) >= 3
        for i in range(len(data) + 1):
            assert feed_chunks(dialect, data, [i]) == whole, (dialect, i)
        assert feed_chunks(dialect, data, list(range(1, len(data)))) == whole


# ====================================================================== real ptys


class Sink:
    """Collects what a SerialFeed reports and lets a test wait for it."""

    def __init__(self) -> None:
        self.events: list[FeedEvent] = []
        self.links: list[tuple[bool, str]] = []
        self._changed = asyncio.Event()
        self._seen = 0  # events already consumed by next_signal

    def emit(self, events: list[FeedEvent]) -> None:
        self.events.extend(events)
        self._changed.set()

    def link(self, up: bool, text: str) -> None:
        self.links.append((up, text))
        self._changed.set()

    async def until(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; links={self.links} "
                                     f"events={self.events[-5:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def next_signal(self, ref: str, state: str = "alarm", timeout: float = 1.0) -> float:
        """Wait for the next Signal(ref, state) after those already seen; return seconds."""
        t0 = time.monotonic()

        def found() -> bool:
            for i in range(self._seen, len(self.events)):
                e = self.events[i]
                if isinstance(e, Signal) and (e.device, e.state) == (ref, state):
                    self._seen = i + 1
                    return True
            return False

        await self.until(found, timeout, f"Signal({ref!r}, {state!r})")
        return time.monotonic() - t0

    def link_count(self, up: bool) -> int:
        return sum(1 for u, _ in self.links if u is up)


needs_socat = pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")


@pytest.fixture
def socat(tmp_path: Path) -> Iterator[PtyPair]:
    with PtyPair(tmp_path, "panel") as pair:
        pair.start()
        yield pair


def running(feed: SerialFeed) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return harness.running(feed)


def gst_feed(port: Path | str, sink: Sink, **kw: object) -> SerialFeed:
    return SerialFeed(str(port), 9600, lambda: PrinterParser("gst"), sink.emit, sink.link,
                      **kw)  # type: ignore[arg-type]


@needs_socat
async def test_pty_fire_record_arrives_within_a_second_through_noise(socat: PtyPair) -> None:
    sink = Sink()
    async with running(gst_feed(socat.gateway, sink)):
        await sink.until(lambda: sink.link_count(True) == 1, 3, "link up")
        assert sink.links[0] == (True, str(socat.gateway))
        with PanelSim(str(socat.device), "gst", seed=7) as panel:
            panel.send("fire", "004-004", label="裙楼一层上空")
            assert await sink.next_signal("004-004") < 1.0
            # garbage, other brands' noise, then a record split over four writes
            await asyncio.to_thread(panel.garbage, 300)
            await asyncio.to_thread(panel.noise, 5)
            await asyncio.to_thread(panel.send, "fire", "006-007", split=4, pause_s=0.05)
            assert await sink.next_signal("006-007") < 1.0
            # a long junk burst, then the next alarm still comes
            await asyncio.to_thread(panel.junk_burst, 3 * JUNK_REPORT)
            await asyncio.to_thread(panel.send, "fire", "004-005")
            assert await sink.next_signal("004-005") < 1.0
            await asyncio.to_thread(panel.send, "reset")
            await sink.until(lambda: Reset(None) in sink.events, 1, "reset")
    assert any(isinstance(e, Garbage) for e in sink.events)
    assert sink.link_count(False) == 0


@needs_socat
async def test_pty_pulled_cable_is_reported_and_the_feed_reconnects_by_itself(
        socat: PtyPair) -> None:
    sink = Sink()
    async with running(gst_feed(socat.gateway, sink)):
        await sink.until(lambda: sink.link_count(True) == 1, 3, "link up")
        with PanelSim(str(socat.device), "gst") as panel:
            panel.send("fire", "004-004")
            await sink.next_signal("004-004")
        socat.pull()  # the cable is pulled: our socat, stopped by its PID
        await sink.until(lambda: sink.link_count(False) >= 1, 2, "link down")
        down = next(text for up, text in sink.links if not up)
        assert str(socat.gateway) in down
        await asyncio.sleep(0.3)  # a while with no cable: reopen attempts fail
        socat.plug()  # the cable is back, same paths
        await sink.until(lambda: sink.link_count(True) == 2, 6, "link up again")
        with PanelSim(str(socat.device), "gst") as panel:
            panel.send("fire", "004-004")
            assert await sink.next_signal("004-004") < 1.0


@needs_socat
async def test_simulator_command_line_on_a_pty(socat: PtyPair) -> None:
    sink = Sink()
    async with running(gst_feed(socat.gateway, sink)):
        await sink.until(lambda: sink.link_count(True) == 1, 3, "link up")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware_sim.panel", "--port", str(socat.device),
            "--dialect", "gst", "--fire", "004-004", "--noise", "--garbage", "100",
            "--split", "3", "--pause", "0.02", "--reset", "--seed", "1", cwd=REPO)
        try:
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await sink.next_signal("004-004", timeout=2)
        await sink.until(lambda: Reset(None) in sink.events, 1, "reset")


async def test_openpty_edwards_line_arrives() -> None:
    master, slave = os.openpty()
    try:
        sink = Sink()
        feed = SerialFeed(os.ttyname(slave), 9600, lambda: PrinterParser("edwards"),
                          sink.emit, sink.link)
        async with running(feed):
            await sink.until(lambda: sink.link_count(True) == 1, 3, "link up")
            os.write(master, b"\x1b@noise\r\n" + encode_edwards(
                "fire", "001-126", datetime(2023, 10, 20, 12, 6, 56), "Sala de pruebas",
                event="PULL ACT"))
            assert await sink.next_signal("001-126") < 1.0
    finally:
        os.close(master)
        os.close(slave)


async def test_port_that_cannot_open_is_reported_once_and_never_raises(tmp_path: Path) -> None:
    sink = Sink()
    missing = tmp_path / "no-such-tty"
    async with running(gst_feed(missing, sink, backoff_initial_s=0.01, backoff_max_s=0.05)) as t:
        await sink.until(lambda: sink.link_count(False) == 1, 2, "link down")
        await asyncio.sleep(0.3)  # several more failed attempts, same reason: not repeated
        assert not t.done()
    assert sink.link_count(False) == 1 and sink.link_count(True) == 0
    assert str(missing) in sink.links[0][1]


async def test_a_codec_or_callback_that_raises_does_not_stop_the_feed() -> None:
    master, slave = os.openpty()
    calls = {"emit": 0}

    class Flaky:
        def __init__(self) -> None:
            self.inner = PrinterParser("gst")

        def feed(self, data: bytes) -> list[FeedEvent]:
            if b"BOOM" in data:
                raise RuntimeError("codec bug")
            return self.inner.feed(data)

    sink = Sink()

    def emit(events: list[FeedEvent]) -> None:
        calls["emit"] += 1
        if calls["emit"] == 1:
            raise RuntimeError("gateway bug")
        sink.emit(events)

    try:
        feed = SerialFeed(os.ttyname(slave), 9600, Flaky, emit, sink.link)
        async with running(feed) as task:
            await sink.until(lambda: sink.link_count(True) == 1, 3, "link up")
            os.write(master, b"BOOM")
            await asyncio.sleep(0.1)  # its Garbage goes to the failing emit, and is lost
            os.write(master, EX1_FIRE)
            assert await sink.next_signal("004-004") < 1.0
            assert not task.done()
    finally:
        os.close(master)
        os.close(slave)


def test_serial_settings_are_checked_up_front() -> None:
    def make(**kw: object) -> SerialFeed:
        return SerialFeed("/dev/null", 9600, lambda: PrinterParser("gst"), lambda e: None,
                          lambda u, t: None, **kw)  # type: ignore[arg-type]

    make(bytesize=7, parity="E", stopbits=1)
    for bad in ({"bytesize": 9}, {"parity": "X"}, {"stopbits": 3}):
        with pytest.raises(ValueError):
            make(**bad)


async def test_a_dialect_not_implemented_reports_the_feed_down() -> None:
    master, slave = os.openpty()
    sink = Sink()
    try:
        feed = SerialFeed(os.ttyname(slave), 9600, lambda: PrinterParser("notifier"),
                          sink.emit, sink.link, backoff_initial_s=0.01, backoff_max_s=0.05)
        async with running(feed) as task:
            await sink.until(lambda: sink.link_count(False) == 1, 2, "link down")
            await asyncio.sleep(0.1)
            assert not task.done()
        assert sink.link_count(True) == 0 and sink.link_count(False) == 1
        assert "notifier" in sink.links[0][1] and "not implemented" in sink.links[0][1]
    finally:
        os.close(master)
        os.close(slave)
