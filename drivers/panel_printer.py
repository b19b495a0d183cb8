"""Sans-IO codec for fire alarm control panels' printer ports: bytes in, feed events out.

Many panels have no data interface a gateway may use, only the port that drives their
built-in micro-printer. Reading that port is listen-only and cannot disturb the panel,
which is why it is the feed of choice for retrofitting old panels. This module turns the
printed text into the feed vocabulary of :mod:`drivers.feed` and, for the simulator in
``firmware_sim/panel.py``, turns events back into printer bytes. No I/O happens here:
the serial transport lives in :mod:`drivers.serial_link` (the h11 / wsproto model).

Dialects (``PrinterParser(dialect)``):

``gst`` and ``lida``
    海湾 GST and 利达 Lida share one micro-printer framing: a record starts with ESC '6'
    (``1B 36``), carries a header (date, time, loop-point), then ESC '9' (``1B 39``)
    and GB2312 text (event words, location label, device type), and ends with an empty
    line (``0A 0A``). Meaning is found by keywords, never by byte offsets, because the
    offsets published for GST do not even hold across its own examples. Both dialects
    accept both address forms, so a panel that mixes them still works:

    * GST ``004-004`` (loop 3 digits, ``-``, point 3 digits) anywhere in the header:
      ref ``"004-004"`` as printed;
    * Lida ``火警:01088`` (keyword, ``:``, 5 digits = controller 1 + loop 2 + point 2):
      ref ``"0-010-088"`` (controller, loop and point zero-padded to 3 digits, so the
      last seven characters have the GST shape and a second controller cannot collide).

``edwards``
    Edwards iO1000 prints one line per event, ``PULL ACT | 12:06:56 10/20/2023 L:1 D:126``,
    then a label line, then blank lines. ``L:1 D:126`` gives ref ``"001-126"`` (the GST
    shape, so a site mixing brands reads alike) and ``E:045`` gives ``"E045"``.

Every complete record (or Edwards event line) is followed by ``Seen(None)``: the panel
is alive, whatever it printed. Bad input never raises (a fire panel's port is often
shared with printer noise and other brands' ESC sequences): it is skipped and reported
as :class:`Garbage`, one per run of unusable bytes, and one per further ``JUNK_REPORT``
bytes of a long run, so a minute of noise shows up while it lasts. Buffers are
bounded: a record longer than ``MAX_RECORD`` bytes or a line longer than ``MAX_LINE``
is dropped. Output depends only on the byte stream, never on how it was cut into
reads, so a record split across reads gives exactly the events of the whole record.

The device type printed on the panel is kept in the Signal's ``meta``, not mapped to
``Signal.kind``: the gateway refuses a Signal whose kind differs from the configured
device's, and a fire alarm must not be lost to a naming mismatch.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from drivers.feed import FeedEvent, Garbage, Reset, Seen
from drivers.signal import Signal

DIALECTS = ("gst", "lida", "edwards")
"""Dialects this codec reads; the config also names ``notifier`` and ``simplex`` (not yet)."""

MAX_RECORD = 2048  # bytes from ESC '6' to the end of the record, both included
MAX_LINE = 256  # bytes of one Edwards line, without its terminator
JUNK_REPORT = 4096  # a run of junk longer than this is reported in pieces of this size
_META_CHARS = 64  # longest text kept from a record in Signal.meta

ESC_START = b"\x1b6"  # ESC '6': a record starts
ESC_TEXT = b"\x1b9"  # ESC '9': Chinese text follows
_RECORD_END = re.compile(rb"\n\r?\n")  # the empty line that ends a record (CR tolerated)
_LINE_END = re.compile(rb"[\r\n]")

# --- GST / Lida vocabulary -------------------------------------------------------------

# Checked in this order against the record's event words. Clear words first, since
# "故障恢复" also contains "故障"; alarm before fault, because a person can dismiss a
# false alarm but nobody can recover a missed one.
_GST_CLEAR = ("恢复", "消除")
_GST_ALARM = ("火警",)
_GST_FAULT = ("故障",)
_GST_RESET = ("复位",)
_GST_SEEN = (
    "屏蔽", "启动", "反馈", "监管", "请求", "开机", "关机", "停动", "隔离", "释放",
    "延时", "消音", "动作", "应答", "排除",
)  # fmt: skip
_LIDA_WORDS = (*_GST_CLEAR, *_GST_ALARM, *_GST_FAULT, *_GST_RESET, *_GST_SEEN)
_LIDA_ADDR = re.compile("(" + "|".join(_LIDA_WORDS) + r")\s*[:：]\s*([0-9]{5})(?![0-9])")
_LOOP_POINT = re.compile(r"(?<![0-9])([0-9]{3})-([0-9]{3})(?![0-9])")
_GST_TIME = re.compile(r"(\d{2}/\d{2}/\d{2})\s+(\d{1,2}:\d{2}(?::\d{2})?)")

# --- Edwards vocabulary ----------------------------------------------------------------

_EDW_ALARM = frozenset({"FIRE", "ALARM", "SMOKE", "HEAT", "PULL"})
_EDW_FAULT = frozenset({"TRBL", "PROB", "TROUBLE"})
_EDW_SEEN = frozenset({"MON", "SUPV", "SUPERVISORY", "MONITOR"})
_EDW_EVENT = re.compile(
    r"(?P<event>[A-Za-z][A-Za-z0-9 .\-]*?)\s*\|\s*"
    r"(?P<time>\d{1,2}:\d{2}(?::\d{2})?)\s+(?P<date>\d{1,2}/\d{1,2}/\d{2,4})(?P<rest>.*)"
)
_EDW_LOOP_DEV = re.compile(r"\bL:\s*([0-9]{1,3})\s+D:\s*([0-9]{1,3})\b")
_EDW_ELEMENT = re.compile(r"\bE:\s*([0-9]{1,3})\b")
_EDW_RESET_LINE = re.compile(r"^\s*(?:SYSTEM\s+)?RESET\b", re.IGNORECASE)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)
_ALIVE = Seen(None)


def _clean(text: str) -> str:
    """Text from the wire made safe to log and keep: no control characters, bounded."""
    return _CONTROL.sub("", text).strip()[:_META_CHARS]


def _alive(events: list[FeedEvent]) -> list[FeedEvent]:
    """A complete record or event line proves the panel is alive, whatever it says.

    Every one is followed by ``Seen(None)`` (as GB/T 26875.3 frames are), so the feed's
    supervision hears the panel even when all it prints is alarms; the event goes first.
    """
    return events if events == [_ALIVE] else [*events, _ALIVE]


class _JunkRun:
    """Counts consecutive unusable bytes and reports them as one Garbage per run.

    Offsets are stream offsets, and a long run is cut at exact multiples of
    ``JUNK_REPORT``, so what is reported does not depend on how reads were cut.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.nbytes = 0
        self.start = 0

    def add(self, out: list[FeedEvent], offset: int, n: int) -> None:
        """Add ``n`` junk bytes that start at stream ``offset``."""
        while n > 0:
            if self.nbytes == 0:
                self.start = offset
            take = min(n, JUNK_REPORT - self.nbytes)
            self.nbytes += take
            offset += take
            n -= take
            if self.nbytes >= JUNK_REPORT:
                self.end(out)

    def end(self, out: list[FeedEvent]) -> None:
        """The run is over (something usable came): report it, if there was one."""
        if self.nbytes:
            out.append(Garbage(self.reason, f"byte {self.start}", self.nbytes))
            self.nbytes = 0


class _StreamParser:
    """What the dialects' parsers share: the bytes held since the last complete record
    or line, their stream offset, and the junk run. A parser says how it reads the
    buffer (``_consume``) and what it does with what is held when flushed
    (``_drop_held``)."""

    def __init__(self, junk_reason: str) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._junk = _JunkRun(junk_reason)

    def feed(self, data: bytes) -> list[FeedEvent]:
        out: list[FeedEvent] = []
        self._buf += data
        pos = self._consume(out)
        del self._buf[:pos]
        self._base += pos
        return out

    def flush(self) -> list[FeedEvent]:
        """Report what is pending as Garbage; start afresh."""
        out: list[FeedEvent] = []
        self._drop_held(out)
        self._junk.end(out)
        self._base += len(self._buf)
        self._buf.clear()
        return out

    def _consume(self, out: list[FeedEvent]) -> int:
        """Add the events of the buffer to ``out``; how many bytes of it were used."""
        raise NotImplementedError

    def _drop_held(self, out: list[FeedEvent]) -> None:
        """Report the buffer as Garbage (or junk) and reset the parsing state."""
        raise NotImplementedError


class _EscRecordParser(_StreamParser):
    """GST / Lida records: ESC '6' … ESC '9' … LF LF, GB2312 (read as GB18030) text."""

    def __init__(self, dialect: str) -> None:
        super().__init__("bytes outside a printer record")
        self.dialect = dialect
        self._in_record = False  # _buf[0:2] is ESC '6' of an open record
        self._scan = 2  # where in _buf the search for the record's end resumes

    def _consume(self, out: list[FeedEvent]) -> int:
        buf = self._buf
        pos = 0
        while True:
            if not self._in_record:
                start = buf.find(ESC_START, pos)
                if start < 0:
                    # keep a trailing ESC: it may be the first half of ESC '6'
                    keep = 1 if len(buf) > pos and buf[-1] == 0x1B else 0
                    self._junk.add(out, self._base + pos, len(buf) - keep - pos)
                    pos = len(buf) - keep
                    break
                self._junk.add(out, self._base + pos, start - pos)
                self._junk.end(out)
                pos = start
                self._in_record = True
                self._scan = 2
            # inside a record that starts at pos: find its end, an interruption or the limit
            limit = pos + MAX_RECORD
            scan = pos + self._scan
            end = _RECORD_END.search(buf, scan, limit)
            restart = buf.find(ESC_START, scan, limit + 1)
            if restart >= 0 and (end is None or restart < end.start()):
                out.append(Garbage("printer record cut off by the next ESC 6",
                                   f"byte {self._base + pos}", restart - pos))
                pos = restart
                self._scan = 2
                continue
            if end is not None:
                out.extend(_alive(self._record(bytes(buf[pos + 2:end.start()]),
                                               self._base + pos, end.end() - pos)))
                pos = end.end()
                self._in_record = False
                continue
            if len(buf) > limit:
                out.append(Garbage(f"printer record without an end in {MAX_RECORD} bytes",
                                   f"byte {self._base + pos}", MAX_RECORD))
                pos = limit
                self._in_record = False
                continue
            # wait for more; a terminator or ESC '6' may straddle this read and the next
            self._scan = max(2, len(buf) - pos - 2)
            break
        return pos

    def _drop_held(self, out: list[FeedEvent]) -> None:
        if self._in_record:
            out.append(Garbage("printer record cut off (no end)", f"byte {self._base}",
                               len(self._buf)))
        else:
            self._junk.add(out, self._base, len(self._buf))
        self._in_record = False
        self._scan = 2

    def _record(self, rec: bytes, offset: int, size: int) -> list[FeedEvent]:
        """Events of one complete record (``rec`` without ESC '6' and the final LF LF)."""
        where = f"byte {offset}"
        head_b, has_text, body_b = rec.partition(ESC_TEXT)
        # NFKC: a panel may print full-width digits (GB2312 A3B0-A3B9); a site file holds
        # "004-004", so they are read as the ASCII digits they stand for
        head = _nfkc(head_b.decode("gb18030", errors="replace").replace("\r", ""))
        body = _nfkc(body_b.decode("gb18030", errors="replace").replace("\r", ""))
        body_lines = [ln for ln in (_clean(x) for x in body.split("\n")) if ln]
        label = device_type = ""
        ref: str | None = None
        candidates = [*head.split("\n"), *body_lines[:1]]
        lida = next((m for m in map(_LIDA_ADDR.search, candidates) if m), None)
        if lida is not None:
            words = _clean(lida.string)
            d = lida.group(2)
            ref = f"{d[0]}-{int(d[1:3]):03d}-{int(d[3:5]):03d}"
            label = body_lines[0] if body_lines and body_lines[0] != words else ""
        else:
            if has_text:
                words = body_lines[0] if body_lines else ""
                label = body_lines[1] if len(body_lines) > 1 else ""
                device_type = body_lines[2] if len(body_lines) > 2 else ""
            else:  # no ESC '9': whatever the header says is all there is
                words = _clean(" ".join(head.split("\n")))
            lp = _LOOP_POINT.search(head)
            ref = f"{lp.group(1)}-{lp.group(2)}" if lp else None

        if any(w in words for w in _GST_CLEAR):
            state = "clear"
        elif any(w in words for w in _GST_ALARM):
            state = "alarm"
        elif any(w in words for w in _GST_FAULT):
            state = "fault"
        elif any(w in words for w in _GST_RESET):
            return [Reset(None)]
        elif any(w in words for w in _GST_SEEN):
            return [Seen(None)]
        else:
            return [Garbage(f"printer record with no known event word: {words!r}", where, size)]
        if ref is None:
            return [Garbage(f"{state} record {words!r} without a loop-point", where, size)]
        meta: list[tuple[str, object]] = [("words", words)]
        when = _GST_TIME.search(head)
        if when:
            meta.append(("panel_time", f"{when.group(1)} {when.group(2)}"))
        if label:
            meta.append(("label", label))
        if device_type:
            meta.append(("device_type", device_type))
        return [Signal(ref, state, meta=tuple(meta))]


class _LineParser(_StreamParser):
    """Edwards iO1000: one event per line, then a label line, then blank lines."""

    def __init__(self) -> None:
        super().__init__("unrecognised printer lines")
        self._skipping = False  # inside a line already known to be overlong
        self._expect_label = False  # the last non-blank line was an event

    def _consume(self, out: list[FeedEvent]) -> int:
        buf = self._buf
        pos = 0
        while True:
            m = _LINE_END.search(buf, pos)
            if m is None:
                if self._skipping or len(buf) - pos > MAX_LINE:
                    self._skipping = True
                    self._junk.add(out, self._base + pos, len(buf) - pos)
                    pos = len(buf)
                break
            eol = m.start()
            if self._skipping or eol - pos > MAX_LINE:
                self._junk.add(out, self._base + pos, eol + 1 - pos)
                self._skipping = False
                self._expect_label = False
            else:
                self._line(out, bytes(buf[pos:eol]), self._base + pos)
            pos = eol + 1
        return pos

    def _drop_held(self, out: list[FeedEvent]) -> None:
        self._junk.add(out, self._base, len(self._buf))
        self._skipping = self._expect_label = False

    def _line(self, out: list[FeedEvent], raw: bytes, offset: int) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # Edwards labels are 8-bit; structure is ASCII
        if not text.strip():
            return  # blank lines separate events; they neither start nor end a run
        m = _EDW_EVENT.search(text)
        if m is not None:
            self._junk.end(out)
            self._expect_label = True
            out.extend(_alive([self._event(m, f"byte {offset}", len(raw))]))
        elif self._expect_label:
            self._junk.end(out)  # the label of the event above: nothing to report
            self._expect_label = False
        elif _EDW_RESET_LINE.match(text):
            self._junk.end(out)
            out.extend(_alive([Reset(None)]))
        else:
            self._junk.add(out, offset, len(raw) + 1)

    @staticmethod
    def _event(m: re.Match[str], where: str, size: int) -> FeedEvent:
        event = " ".join(m.group("event").upper().split())
        tokens = event.split()
        status = tokens[-1] if tokens[-1] in ("ACT", "RST") else None
        rest = m.group("rest")
        ref: str | None = None
        if ld := _EDW_LOOP_DEV.search(rest):
            ref = f"{int(ld.group(1)):03d}-{int(ld.group(2)):03d}"
        elif el := _EDW_ELEMENT.search(rest):
            ref = f"E{int(el.group(1)):03d}"
        if "RESET" in tokens:
            return Seen(None) if status == "RST" else Reset(None)
        words = set(tokens)
        if status == "RST":
            state = "clear"
        elif words & _EDW_ALARM:
            state = "alarm"
        elif words & _EDW_FAULT:
            state = "fault"
        elif words & _EDW_SEEN:
            return Seen(None)
        else:
            return Garbage(f"unknown printer event {event!r}", where, size)
        if ref is None:
            return Garbage(f"{state} event {event!r} without a point address", where, size)
        meta = (("event", event), ("panel_time", f"{m.group('time')} {m.group('date')}"))
        return Signal(ref, state, meta=meta)


class PrinterParser:
    """Incremental decoder of one panel's printer output.

    ``feed`` takes whatever bytes a read returned and gives back the events completed
    by them; it never raises on bad input. ``flush`` reports what is still pending as
    Garbage (the transport calls it when the link drops, since a half record will
    never be finished) and starts afresh.
    """

    def __init__(self, dialect: str) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"panel printer dialect {dialect!r} is not implemented; "
                             f"known: {', '.join(DIALECTS)}")
        self.dialect = dialect
        self._impl = _LineParser() if dialect == "edwards" else _EscRecordParser(dialect)

    def feed(self, data: bytes) -> list[FeedEvent]:
        """Events completed by ``data``, in stream order."""
        return self._impl.feed(data)

    def flush(self) -> list[FeedEvent]:
        """Garbage for an unfinished record or line and unreported junk; resets the state."""
        return self._impl.flush()


# --- encoders (the panel's side, for firmware_sim) -------------------------------------

GST_KINDS = ("fire", "fault", "restore", "reset")
EDWARDS_KINDS = ("fire", "fault", "restore", "reset", "monitor")
_GST_REF = re.compile(r"\d{3}-\d{3}")
_EDW_REF = re.compile(r"(\d{3})-(\d{3})|E(\d{3})")


def _gst_text(name: str, value: str) -> bytes:
    """One line of record text in GB18030 (GB2312 characters encode to GB2312 bytes)."""
    if any(c in value for c in "\n\r\x1b"):
        raise ValueError(f"{name} must not contain LF, CR or ESC: {value!r}")
    try:
        return value.encode("gb18030")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} cannot be printed in GB18030: {value!r}") from exc


def encode_gst(
    kind: str,
    ref: str | None,
    when: datetime,
    label: str = "",
    device_type: str = "感烟探测器",
    first: bool = True,
    *,
    date_format: str = "%y/%m/%d",
) -> bytes:
    """One GST printer record, laid out as in the GST9000 article's examples.

    ``kind`` is fire (首次火警, or 火警后续 when ``first`` is false), fault (故障), restore
    (故障恢复) or reset (系统复位, no loop-point, no label or device lines). ``ref`` is
    ``"LLL-PPP"``. The date's field order is not documented, hence ``date_format``
    (the article prints ``08/12/02``). Empty label or device-type lines are left out:
    an empty line would end the record early.
    """
    if kind not in GST_KINDS:
        raise ValueError(f"kind must be one of {', '.join(GST_KINDS)}; got {kind!r}")
    head = f"{when.strftime(date_format)}  {when:%H:%M}".encode("ascii")
    if kind == "reset":
        ref_line = b"  "
        lines = [_gst_text("words", "系统复位")]
    else:
        if ref is None or not _GST_REF.fullmatch(ref):
            raise ValueError(f"GST ref must look like '004-004'; got {ref!r}")
        ref_line = b"  " + ref.encode("ascii")
        words = {"fire": "首次火警" if first else "火警后续", "fault": "故障",
                 "restore": "故障恢复"}[kind]
        lines = [_gst_text("words", words)]
        lines += [_gst_text(n, v) for n, v in (("label", label), ("device_type", device_type))
                  if v]
    return (ESC_START + head + b"\n" + ref_line + b"\n" + ESC_TEXT
            + b"".join(line + b"\n" for line in lines) + b"\n")


def encode_edwards(
    kind: str, ref: str | None, when: datetime, label: str = "", *, event: str | None = None
) -> bytes:
    """One Edwards iO1000 event: the event line, the label line, two blank lines (CRLF).

    ``kind`` picks the event words: fire ``ALARM ACT``, fault ``TRBL ACT``, restore
    ``ALARM RST``, monitor ``MON ACT``, reset ``SYSTEM RESET`` (no address; the real
    panel's reset line is not documented, this one is the simulator's). ``event``
    overrides the words (``"PULL ACT"``). ``ref`` is ``"001-126"`` (printed
    ``L:1 D:126``) or ``"E045"`` (printed ``E:045``).
    """
    if kind not in EDWARDS_KINDS:
        raise ValueError(f"kind must be one of {', '.join(EDWARDS_KINDS)}; got {kind!r}")
    words = event or {"fire": "ALARM ACT", "fault": "TRBL ACT", "restore": "ALARM RST",
                      "monitor": "MON ACT", "reset": "SYSTEM RESET"}[kind]
    addr = ""
    if kind != "reset":
        m = _EDW_REF.fullmatch(ref or "")
        if m is None:
            raise ValueError(f"Edwards ref must look like '001-126' or 'E045'; got {ref!r}")
        addr = (f"L:{int(m.group(1))} D:{int(m.group(2))}" if m.group(1)
                else f"E:{m.group(3)}")
    if any(c in label for c in "\r\n"):
        raise ValueError(f"label must not contain CR or LF: {label!r}")
    line = f"{words:<8} | {when:%H:%M:%S} {when:%m/%d/%Y} {addr:>9}".rstrip()
    text = line + "\r\n" + (label + "\r\n" if label else "") + "\r\n\r\n"
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"label cannot be printed in Latin-1: {label!r}") from exc
