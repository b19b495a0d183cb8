"""Sans-IO codec for GB/T 26875.3-2011, the link between a 用户信息传输装置 (UITD) and a
monitoring centre, with firegrid as the centre.

Bytes in, events and reply bytes out; no sockets, no asyncio and no clock inside (the
time is passed in), after the python-hyper h11/wsproto model. The asyncio transport is
``drivers.gb26875_server``; the device-side twin in ``firmware_sim.uitd`` uses this same
module from the other end. Layout, code tables and test vectors: the fact sheet
``protocols/gb26875-and-facp-serial.md`` part 1; user view: ``docs/feed-gb26875.md``.

Layers, lowest first:

- ``encode_frame`` / ``decode_frame``: one ``@@ … ##`` frame (30 bytes + ADU, fields
  little-endian, checksum = sum of bytes 2..26+N modulo 256).
- ``Deframer``: a TCP byte stream in any chunking to ``Frame`` / ``BadFrame``. Frames
  are cut by the length field, never on ``##`` (which may occur in the payload). A bad
  tail or an over-long length resynchronises at the next ``@@`` after the bad start;
  a bad checksum with a good tail skips the frame whole (so a ``@@`` in its payload is
  not taken for a frame); a frame, complete or not, that holds a complete valid frame
  is given up where that frame starts (its own length was corrupt). Bytes before a
  ``@@``, and false starts met while resynchronising, are reported as garbage. The
  buffer never holds more than two maximum frames.
- ``parse_adu`` / ``build_adu`` and the information objects of types 1, 2, 3, 4, 21,
  24 and 25; every other type is kept as ``RawAdu``.
- ``CentreSession``: one TCP connection seen from the centre, turning frames into
  ``drivers.feed`` events and answering them.

How ``CentreSession`` answers what the device sends (the standard's send/confirm and
request/response modes, clause 6):

- command 2 (发送数据), framed and checksummed correctly: 确认 (command 3) with the
  same serial, from the centre's ``address`` to the frame's source, the time label
  ``now_s`` in the device's zone (``utc_offset_s``) and an empty ADU, then the
  events of its objects plus ``Seen(None)``. An empty command 2 is the vendors'
  heartbeat: 确认 and ``Seen(None)`` only. An ADU whose objects do not parse
  gets 否认 (command 6) instead, but the objects before the bad one still give their
  events (an alarm is never dropped; the device resends, and a repeated state is
  harmless). A repeat of the previous frame (same serial, command and ADU: a resend
  after a lost 确认) is confirmed again without repeating its events.
- a bad checksum, a bad tail, a length over 1024, a reserved or user-defined command
  byte (0, 7..255): 否认 with the bad frame's serial and ``Garbage``, as clause 6.5
  lists these as validation errors. Bytes that are no frame at all are only
  ``Garbage``: there is no serial to deny. So are the false starts after a bad one,
  until a frame is read again: one 否认 per bad spell, so noise is not amplified.
- command 5 (应答) is the answer to a query: its objects give events, and it is not
  confirmed. firegrid sends no queries, but a device's state is its state.
- commands 3 and 6 (确认/否认) answer something; firegrid sends no commands, so they
  only show the device is alive (``Seen``).
- commands 1 (控制) and 4 (请求) go from a centre to a device; firegrid carries out no
  control commands and answers no queries, so they get 否认 and ``Garbage``.
- a partial frame that has waited ``stall_s`` (5 s) without completing is abandoned
  (``Garbage``, and 否认 if its header was readable): its length field was most
  likely corrupt, and waiting for it would swallow the device's resend.

Events (``drivers.feed``), ref formats ``"<sys type>/<sys addr>/<part addr>"`` for a
component, ``"<sys type>/<sys addr>"`` for a system and ``"uitd"`` for the device:

- type 2: fire bit → ``Signal(ref, "alarm")``, else fault (bit 2) or power fault (bit 8)
  → ``"fault"``, else ``"clear"``; ``ts`` is the object's time label in unix seconds
  and ``meta`` ``device_time`` the label as ISO 8601 text with the device's offset. Bit 0 (normal /
  test) is not used: the sheet's example frames leave it 0 for a real alarm.
- type 1: reset (bit 13) → ``Reset(ref)``; fire → ``Signal(ref, "alarm")``; mains,
  backup power, bus faults (bits 8-10) or fault (bit 2) → ``Trouble(ref, "fault", True,
  detail)``, none of them → ``Trouble(ref, "fault", False)``.
- type 3: ``Reading(ref, raw=value, unit)``, the raw int16; the step (0.1 °C …) is in
  ``ANALOG_TYPES`` and scaling is the gateway's.
- type 21: fire → ``Signal("uitd", "alarm")``; fault, mains, backup power, channel or
  monitoring-line fault (bits 2-6) → ``Trouble("uitd", "fault", …)`` as for type 1.
- types 4, 24, 25 are parsed but give no event; other types are ignored.

Time labels carry no zone. ``CentreSession(utc_offset_s=...)`` says how far ahead of
UTC the devices' clocks run (28800 for Beijing time; the codec's default, 0, reads
and writes UTC fields). The decoded time is information for logs and the audit
trail only: the gateway's receive time is an incident's T0 (CONTRACT).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, Self, TypeVar

from drivers.feed import FeedEvent, Garbage, Reading, Reset, Seen, Trouble
from drivers.signal import Signal

START = b"@@"
END = b"##"
HEADER_LEN = 27  # start marker and the 25-byte control unit
OVERHEAD = 30  # header, checksum and end marker
MAX_ADU = 1024
MAX_FRAME = OVERHEAD + MAX_ADU
MAX_ADDRESS = (1 << 48) - 1
_AT_RUN = re.compile(rb"@+")

CMD_CONTROL = 1
CMD_SEND = 2
CMD_CONFIRM = 3
CMD_REQUEST = 4
CMD_RESPONSE = 5
CMD_DENY = 6
COMMANDS = {
    CMD_CONTROL: "控制命令",
    CMD_SEND: "发送数据",
    CMD_CONFIRM: "确认",
    CMD_REQUEST: "请求",
    CMD_RESPONSE: "应答",
    CMD_DENY: "否认",
}

Time = tuple[int, int, int, int, int, int]
"""A time label: second, minute, hour, day, month, year - 2000, one byte each."""

NO_TIME: Time = (0, 0, 0, 1, 1, 0)  # 2000-01-01 00:00:00


class FrameError(ValueError):
    """A frame, header or ADU that cannot be used; the message says what and where."""

    def __init__(self, message: str, *, offset: int | None = None,
                 serial: int | None = None) -> None:
        where = []
        if offset is not None:
            where.append(f"at offset {offset}")
        if serial is not None:
            where.append(f"serial {serial}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.offset = offset
        self.serial = serial


# ------------------------------------------------------------------ time labels

MAX_UTC_OFFSET_S = 24 * 3600 - 60  # ±23:59, as the site's utc_offset allows
_OFFSET_RE = re.compile(r"([+-])([01][0-9]|2[0-3]):([0-5][0-9])")
_ADDRESS_RE = re.compile(r"[0-9A-Fa-f]{2}( [0-9A-Fa-f]{2}){5}")


def parse_utc_offset(text: str) -> int:
    """``"+08:00"`` → 28800: the offset of a device clock from UTC, in seconds."""
    m = _OFFSET_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"utc offset {text!r}: expected +HH:MM or -HH:MM, e.g. +08:00")
    seconds = int(m.group(2)) * 3600 + int(m.group(3)) * 60
    return -seconds if m.group(1) == "-" else seconds


def parse_address(value: int | str) -> int:
    """A 6-byte address as an integer: given as one (``88888``), or as the six bytes in
    wire order, low byte first, written in hex the way the fact sheet writes frames
    (``"38 5B 01 00 00 00"`` is 88888)."""
    if isinstance(value, bool):
        raise ValueError(f"address must be an integer or 6 hex bytes, got {value!r}")
    if isinstance(value, int):
        if not 0 <= value <= MAX_ADDRESS:
            raise ValueError(f"address {value} is outside 0..{MAX_ADDRESS} (6 bytes)")
        return value
    if isinstance(value, str) and _ADDRESS_RE.fullmatch(value.strip()):
        return int.from_bytes(bytes.fromhex(value), "little")
    raise ValueError(f"address {value!r}: expected an integer 0..{MAX_ADDRESS} or six hex "
                     "bytes in wire order, low byte first, e.g. '38 5B 01 00 00 00'")


def time_label(unix_s: float, utc_offset_s: int = 0) -> Time:
    """The time label for ``unix_s`` as the fields of a clock ``utc_offset_s`` seconds
    ahead of UTC (28800 for Beijing time); a clock outside 2000-2099 (or NaN) gives
    2000-01-01, since a reply must still go out."""
    try:
        if not math.isfinite(unix_s):
            return NO_TIME
        dt = datetime.fromtimestamp(unix_s + utc_offset_s, UTC)
    except (OverflowError, OSError, ValueError):
        return NO_TIME
    if not 2000 <= dt.year <= 2099:
        return NO_TIME
    return (dt.second, dt.minute, dt.hour, dt.day, dt.month, dt.year - 2000)


def _label_datetime(label: Sequence[int], utc_offset_s: int = 0) -> datetime | None:
    """The label as an aware datetime in the device's zone, or None if no valid date."""
    if len(label) != 6:
        return None
    s, mi, h, d, mo, y = label
    if not (0 <= s <= 59 and 0 <= mi <= 59 and 0 <= h <= 23 and 0 <= y <= 99):
        return None
    try:
        return datetime(2000 + y, mo, d, h, mi, s,
                        tzinfo=timezone(timedelta(seconds=utc_offset_s)))
    except ValueError:  # month 0, 31 February, ...
        return None


def label_to_unix(label: Sequence[int], utc_offset_s: int = 0) -> float | None:
    """Unix seconds of a time label written by a clock ``utc_offset_s`` seconds ahead
    of UTC, or None if it is no valid date."""
    dt = _label_datetime(label, utc_offset_s)
    return None if dt is None else dt.timestamp()


def label_text(label: Sequence[int], utc_offset_s: int = 0) -> str:
    """The label as the device wrote it, for logs and the audit trail: ISO 8601 with
    the configured offset (``2012-09-26T09:58:02+08:00``), or ``invalid`` and its bytes."""
    dt = _label_datetime(label, utc_offset_s)
    if dt is None:
        return "invalid " + " ".join(f"{b & 0xFF:02X}" for b in label)
    return dt.isoformat()


# ------------------------------------------------------------------ frames


@dataclass(frozen=True, slots=True)
class Header:
    """The control unit of a frame (offsets 2..26), readable before the rest arrives."""

    serial: int
    version: tuple[int, int]
    time: Time
    src: int
    dst: int
    length: int
    command: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One packet. ``time`` is the sender's time label; ``src``/``dst`` are 6-byte
    addresses; ``adu`` the application data unit (empty for 确认/否认 and heartbeats)."""

    serial: int
    version: tuple[int, int] = (1, 1)
    time: Time
    src: int
    dst: int
    command: int
    adu: bytes = b""


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Bytes the deframer skipped. ``header`` (and ``serial``) are set when a ``@@`` was
    followed by a readable control unit, so the sender can be sent a 否认; without one the
    bytes were garbage between frames. ``offset`` counts bytes since the stream began."""

    reason: str
    serial: int | None = None
    header: Header | None = None
    nbytes: int = 0
    offset: int = 0

    @property
    def garbage(self) -> bool:
        return self.header is None


def checksum(body: bytes | bytearray | memoryview) -> int:
    """Sum of the control unit and ADU bytes (offsets 2..26+N), low 8 bits."""
    return sum(body) & 0xFF


def _check_int(what: str, value: int, hi: int, serial: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise FrameError(f"{what} must be an integer in 0..{hi}, got {value!r}", serial=serial)


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of ``frame``; FrameError if a field does not fit its bytes."""
    sn = frame.serial
    _check_int("serial", sn, 0xFFFF)
    if len(frame.version) != 2:
        raise FrameError(f"version must be 2 bytes, got {frame.version!r}", serial=sn)
    for v in frame.version:
        _check_int("version byte", v, 0xFF, sn)
    if len(frame.time) != 6:
        raise FrameError(f"time label must be 6 bytes, got {frame.time!r}", serial=sn)
    for v in frame.time:
        _check_int("time label byte", v, 0xFF, sn)
    _check_int("source address", frame.src, MAX_ADDRESS, sn)
    _check_int("destination address", frame.dst, MAX_ADDRESS, sn)
    _check_int("command", frame.command, 0xFF, sn)
    if len(frame.adu) > MAX_ADU:
        raise FrameError(f"ADU of {len(frame.adu)} bytes is over {MAX_ADU}", serial=sn)
    body = (
        struct.pack("<H", sn)
        + bytes(frame.version)
        + bytes(frame.time)
        + frame.src.to_bytes(6, "little")
        + frame.dst.to_bytes(6, "little")
        + struct.pack("<HB", len(frame.adu), frame.command)
        + bytes(frame.adu)
    )
    return START + body + bytes([checksum(body)]) + END


def parse_header(data: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """The control unit of the frame starting at ``offset``; needs its 27 header bytes."""
    if len(data) - offset < HEADER_LEN:
        raise FrameError(f"header needs {HEADER_LEN} bytes, has {len(data) - offset}",
                         offset=offset)
    if data[offset:offset + 2] != START:
        raise FrameError("no start marker '@@'", offset=offset)
    sn, v1, v2 = struct.unpack_from("<HBB", data, offset + 2)
    t = tuple(data[offset + 6:offset + 12])
    src = int.from_bytes(data[offset + 12:offset + 18], "little")
    dst = int.from_bytes(data[offset + 18:offset + 24], "little")
    length, command = struct.unpack_from("<HB", data, offset + 24)
    return Header(sn, (v1, v2), t, src, dst, length, command)  # type: ignore[arg-type]


def _to_frame(data: bytes | bytearray, hdr: Header) -> Frame:
    return Frame(serial=hdr.serial, version=hdr.version, time=hdr.time, src=hdr.src,
                 dst=hdr.dst, command=hdr.command, adu=bytes(data[27:27 + hdr.length]))


def decode_frame(data: bytes) -> Frame:
    """Exactly one frame; FrameError naming what is wrong and where otherwise."""
    hdr = parse_header(data)
    if hdr.length > MAX_ADU:
        raise FrameError(f"ADU length {hdr.length} is over {MAX_ADU}", offset=24,
                         serial=hdr.serial)
    total = OVERHEAD + hdr.length
    if len(data) != total:
        raise FrameError(f"frame of {len(data)} bytes, its length field makes it {total}",
                         offset=0, serial=hdr.serial)
    n = hdr.length
    if data[28 + n:30 + n] != END:
        raise FrameError("no end marker '##'", offset=28 + n, serial=hdr.serial)
    want = checksum(data[2:27 + n])
    if data[27 + n] != want:
        raise FrameError(f"checksum 0x{data[27 + n]:02X}, computed 0x{want:02X}",
                         offset=27 + n, serial=hdr.serial)
    return _to_frame(data, hdr)


class Deframer:
    """Cuts a byte stream into frames. ``feed`` never raises: whatever is wrong comes
    out as a ``BadFrame`` in stream order, between the good frames.

    Only the first bad start after a good frame is reported with its header (so the
    sender gets one 否认); the false starts met while resynchronising after it are
    counted as garbage. A stream of ``@`` or of fake headers therefore costs little
    and gets a single 否认.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._junk = 0  # garbage bytes not yet reported, ending at _offset
        self._junk_at = 0
        self._resyncing = False  # looking for a frame after a bad start
        self._inside_from = 1  # inner starts before this are settled: no frame begins there

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that has not completed."""
        return len(self._buf)

    @property
    def pending_offset(self) -> int | None:
        """Stream offset of the incomplete frame held, or None if nothing is held."""
        return self._offset if self._buf else None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | BadFrame]:
        """Frames and bad frames completed by ``data``, in stream order."""
        out: list[Frame | BadFrame] = []
        view = memoryview(data)
        # in slices, so the buffer stays within two frames whatever one read brings
        for i in range(0, len(view), MAX_FRAME):
            self._buf += view[i:i + MAX_FRAME]
            self._process(out)
        self._flush_junk(out)
        return out

    def abandon(self) -> list[Frame | BadFrame]:
        """Give up on the incomplete frame held (its length field was probably corrupt)
        and look for frames in what came after its start."""
        out: list[Frame | BadFrame] = []
        buf = self._buf
        if not buf:
            return out
        j = buf.find(START, 1)
        n = len(buf) if j < 0 else j
        if len(buf) >= HEADER_LEN and not self._resyncing:
            hdr = parse_header(buf)
            self._bad(out, f"incomplete frame abandoned: {len(buf)} of "
                           f"{OVERHEAD + hdr.length} bytes arrived", hdr, n)
        else:
            self._skip_junk(n)
        self._resyncing = True
        self._process(out)
        self._flush_junk(out)
        return out

    # -- internals

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n
        self._inside_from = 1

    def _skip_junk(self, n: int) -> None:
        if not self._junk:
            self._junk_at = self._offset
        self._junk += n
        self._drop(n)

    def _flush_junk(self, out: list[Frame | BadFrame]) -> None:
        if self._junk:
            out.append(BadFrame(f"{self._junk} bytes outside any frame", nbytes=self._junk,
                                offset=self._junk_at))
            self._junk = 0

    def _bad(self, out: list[Frame | BadFrame], reason: str, hdr: Header, n: int) -> None:
        self._flush_junk(out)
        out.append(BadFrame(reason, hdr.serial, hdr, n, self._offset))
        self._drop(n)

    def _next_start(self) -> int:
        """Where to look for a frame after a bad start at 0: the next '@@', skipping at
        once the starts inside a run of '@' whose length field would read 0x4040."""
        buf = self._buf
        run = _AT_RUN.match(buf)
        if run is not None and run.end() >= 26:
            return run.end() - 25
        j = buf.find(START, 1)
        if j < 0:  # keep a last '@': it may begin the next frame
            j = len(buf) - 1 if buf.endswith(b"@") else len(buf)
        return j

    def _reject(self, out: list[Frame | BadFrame], reason: str, upto: int | None = None
                ) -> None:
        """The start at 0 is no frame: report it (the first after a good frame) or count
        it as garbage (a false start met while resynchronising), and move on."""
        n = self._next_start() if upto is None else upto
        if self._resyncing:
            self._skip_junk(n)
        else:
            self._resyncing = True
            self._bad(out, reason, parse_header(self._buf), n)

    def _complete_frame_inside(self) -> int | None:
        """Where a complete, valid frame starts inside the one at the head, if one does:
        the head's length field is then almost surely corrupt (or the head was garbage
        holding '@@'), and waiting for it would hold back the frames behind it.
        Checksums are computed for a few candidates only, so fake starts cost little."""
        buf = self._buf
        budget = 8
        undecided: int | None = None  # first start whose frame has not fully arrived
        j = buf.find(START, self._inside_from)
        while j >= 0 and budget:
            if len(buf) - j < HEADER_LEN:
                undecided = j if undecided is None else undecided
                break
            n = buf[j + 24] | buf[j + 25] << 8
            end = j + OVERHEAD + n
            if n <= MAX_ADU and end > len(buf):
                undecided = j if undecided is None else undecided
            elif n <= MAX_ADU and buf[end - 2:end] == END:
                budget -= 1
                if checksum(buf[j + 2:end - 3]) == buf[end - 3]:
                    return j
            j = buf.find(START, j + 1)
        # the next read resumes here: starts before it can never become a frame, so a
        # frame arriving a byte at a time is scanned once, not once per byte
        if budget:
            self._inside_from = undecided if undecided is not None else max(
                self._inside_from, len(buf) - 1)
        return None

    def _process(self, out: list[Frame | BadFrame]) -> None:
        buf = self._buf
        while buf:
            i = buf.find(START)
            if i < 0:
                keep = 1 if buf.endswith(b"@") else 0
                if len(buf) > keep:
                    self._skip_junk(len(buf) - keep)
                return
            if i:
                self._skip_junk(i)
            if len(buf) < HEADER_LEN:
                return
            n = buf[24] | buf[25] << 8
            if n > MAX_ADU:
                self._reject(out, f"ADU length {n} is over {MAX_ADU}")
                continue
            total = OVERHEAD + n
            if len(buf) < total:
                j = self._complete_frame_inside()
                if j is None:
                    return  # wait for the rest
                self._reject(out, f"cut short by a complete frame at offset "
                                  f"{self._offset + j} (length field says {n})", j)
                continue
            if buf[total - 2:total] != END:
                self._reject(out, f"no end marker '##' at offset {self._offset + total - 2}"
                                  f" (length field says {n})")
                continue
            hdr = parse_header(buf)
            self._resyncing = False  # a frame, good or not: framing is back
            want = checksum(buf[2:total - 3])
            if buf[total - 3] != want:
                # the length is right (the tail is where it says), unless a valid frame
                # began inside: a '@@' in its payload is not taken for a frame
                j = self._complete_frame_inside()
                if j is None or j >= total:
                    # a frame may start inside and not have arrived whole yet (a cut-off
                    # header's length can point at a '##' in the next frame): look for
                    # frames from the next '@@', as garbage, with no second 否认
                    j = self._next_start()
                self._bad(out, f"checksum 0x{buf[total - 3]:02X}, computed 0x{want:02X}",
                          hdr, j)
                self._resyncing = True
                continue
            self._flush_junk(out)
            out.append(_to_frame(buf, hdr))
            self._drop(total)


# ------------------------------------------------------------------ information objects


def _encode_time(t: Sequence[int]) -> bytes:
    if len(t) != 6:
        raise FrameError(f"time label must be 6 bytes, got {t!r}")
    for v in t:
        _check_int("time label byte", v, 0xFF)
    return bytes(t)


def _check_int16(what: str, value: int) -> None:
    if not isinstance(value, int) or not -32768 <= value <= 32767:
        raise FrameError(f"{what} must be an int16, got {value!r}")


def fit_description(text: str, size: int = 31) -> bytes:
    """``text`` in GB 18030, cut at a character boundary to ``size`` bytes, NUL-padded."""
    out = b""
    for ch in text:
        try:
            b = ch.encode("gb18030")
        except UnicodeEncodeError:  # a lone surrogate
            raise FrameError(f"description character {ch!r} has no GB 18030 form") from None
        if len(out) + len(b) > size:
            break
        out += b
    return out.ljust(size, b"\x00")


def read_description(raw: bytes | memoryview) -> str:
    """A fixed-size GB 18030 text: up to the first NUL (no GB 18030 character contains
    one), trailing spaces stripped, undecodable bytes replaced."""
    b = bytes(raw).split(b"\x00", 1)[0].rstrip(b" ")
    return b.decode("gb18030", errors="replace")


# The kinds of field: their widths; the integer kinds are struct codes. The wider ones
# are range-checked before the rest (their largest value; None: int16).
_WIDTH = {"B": 1, "H": 2, "I": 4, "h": 2, "text": 31, "time": 6}
_WIDE_MAX = {"H": 0xFFFF, "I": 0xFFFFFFFF, "h": None}


def _wire(kind: str, what: str = "", **default: Any) -> Any:
    """A field of an information object, laid out as ``kind`` (a key of ``_WIDTH``:
    "B" u8, "H" u16, "I" u32, "h" int16, "text" a 31-byte description, "time" a time
    label); ``what`` names it in errors."""
    return field(metadata={"wire": (kind, what)}, **default)


class _Object:
    """An information object of fixed size: its fields, declared with ``_wire`` in wire
    order, give its encoding, decoding and ``SIZE`` (set by ``_info_object``)."""

    __slots__ = ()
    TYPE: ClassVar[int]
    SIZE: ClassVar[int]
    MAX: ClassVar[int]
    _LAYOUT: ClassVar[tuple[tuple[str, str, str, int], ...]]  # (name, kind, what, offset)

    def encode(self) -> bytes:
        values = [getattr(self, name) for name, _, _, _ in self._LAYOUT]
        # the wider integers are checked first, then the rest in wire order
        for (_, kind, what, _), v in zip(self._LAYOUT, values, strict=True):
            if kind in _WIDE_MAX:
                hi = _WIDE_MAX[kind]
                if hi is None:
                    _check_int16(what, v)
                else:
                    _check_int(what, v, hi)
        out: list[bytes] = []
        for (_, kind, what, _), v in zip(self._LAYOUT, values, strict=True):
            if kind == "text":
                out.append(fit_description(v))
            elif kind == "time":
                out.append(_encode_time(v))
            else:
                if kind == "B":
                    _check_int(what, v, 0xFF)
                out.append(struct.pack("<" + kind, v))
        return b"".join(out)

    @classmethod
    def decode(cls, b: memoryview) -> Self:
        values: list[Any] = []
        for _, kind, _, at in cls._LAYOUT:
            if kind == "text":
                values.append(read_description(b[at:at + _WIDTH[kind]]))
            elif kind == "time":
                values.append(tuple(b[at:at + 6]))
            else:
                values.append(struct.unpack_from("<" + kind, b, at)[0])
        return cls(*values)


_O = TypeVar("_O", bound=_Object)


def _info_object(type_flag: int, max_count: int) -> Callable[[type[_O]], type[_O]]:
    """Makes the class a frozen dataclass of information object type ``type_flag``, at
    most ``max_count`` to an ADU, laid out as its ``_wire`` fields say."""

    def make(cls: type[_O]) -> type[_O]:
        cls = dataclass(frozen=True, slots=True)(cls)
        layout: list[tuple[str, str, str, int]] = []
        at = 0
        for f in fields(cls):  # type: ignore[arg-type]
            kind, what = f.metadata["wire"]
            layout.append((f.name, kind, what, at))
            at += _WIDTH[kind]
        cls.TYPE, cls.MAX, cls.SIZE, cls._LAYOUT = type_flag, max_count, at, tuple(layout)
        return cls

    return make


@dataclass(frozen=True, slots=True)
class _SystemObject(_Object):
    """The fields that open the objects about a building fire system."""

    sys_type: int = _wire("B", "system type")
    sys_addr: int = _wire("B", "system address")


@dataclass(frozen=True, slots=True)
class _PartObject(_SystemObject):
    """The fields that open the objects about one component of a system."""

    part_type: int = _wire("B", "component type")
    part_addr: int = _wire("I", "component address")

    @property
    def ref(self) -> str:
        return f"{self.sys_type}/{self.sys_addr}/{self.part_addr}"


@_info_object(type_flag=1, max_count=102)
class SystemStatus(_SystemObject):
    """Type 1, 建筑消防设施系统状态: bits 0-7 as for components, 8 mains fault, 9 backup
    power fault, 10 bus fault, 11 manual, 12 configuration changed, 13 reset."""

    status: int = _wire("H", "system status")
    time: Time = _wire("time", default=NO_TIME)

    @property
    def ref(self) -> str:
        return f"{self.sys_type}/{self.sys_addr}"


@_info_object(type_flag=2, max_count=22)
class ComponentStatus(_PartObject):
    """Type 2, 建筑消防设施部件运行状态: bit 1 fire, 2 fault, 3 disabled, 4 supervisory,
    5 started, 6 feedback, 7 delay, 8 power fault; bit 0 normal/test is unreliable."""

    status: int = _wire("H", "component status")
    description: str = _wire("text", default="")
    time: Time = _wire("time", default=NO_TIME)


@_info_object(type_flag=3, max_count=63)
class AnalogValue(_PartObject):
    """Type 3, 部件模拟量值: ``value`` is the raw int16; ``ANALOG_TYPES`` gives its step."""

    analog_type: int = _wire("B", "analog type")
    value: int = _wire("h", "analog value")
    time: Time = _wire("time", default=NO_TIME)


@_info_object(type_flag=4, max_count=102)
class Operation(_SystemObject):
    """Type 4, 建筑消防设施操作信息: bit 0 reset, 1 silence, 2 manual alarm, 3 alarm
    cleared, 4 self-test, 5 acknowledge, 6 test."""

    flags: int = _wire("B", "operation flags")
    operator: int = _wire("B", "operator")
    time: Time = _wire("time", default=NO_TIME)


@_info_object(type_flag=21, max_count=1)
class UitdStatus(_Object):
    """Type 21, 用户信息传输装置运行状态: bit 0 monitoring (0 = test), 1 fire, 2 fault,
    3 mains fault, 4 backup power fault, 5 channel to the centre failed, 6 monitoring
    line fault."""

    status: int = _wire("B", "UITD status")
    time: Time = _wire("time", default=NO_TIME)


@_info_object(type_flag=24, max_count=127)
class UitdOperation(_Object):
    """Type 24, 用户信息传输装置操作信息: as type 4, but bit 5 is 查岗应答 (duty check)."""

    flags: int = _wire("B", "operation flags")
    operator: int = _wire("B", "operator")
    time: Time = _wire("time", default=NO_TIME)


@_info_object(type_flag=25, max_count=1)
class UitdVersion(_Object):
    """Type 25, 用户信息传输装置软件版本 (no time label)."""

    major: int = _wire("B", "major version")
    minor: int = _wire("B", "minor version")


@dataclass(frozen=True, slots=True)
class RawAdu:
    """An ADU of a type this codec does not model (reads 61-91, configurations, ...)."""

    type_flag: int
    count: int
    body: bytes


InfoObject = (SystemStatus | ComponentStatus | AnalogValue | Operation | UitdStatus
              | UitdOperation | UitdVersion)
_KINDS: dict[int, type[InfoObject]] = {
    k.TYPE: k for k in (SystemStatus, ComponentStatus, AnalogValue, Operation, UitdStatus,
                        UitdOperation, UitdVersion)
}

ANALOG_TYPES: dict[int, tuple[str, str, float]] = {
    1: ("event count", "", 1),
    2: ("height", "m", 0.01),
    3: ("temperature", "°C", 0.1),
    4: ("pressure", "MPa", 0.1),
    5: ("pressure", "kPa", 0.1),
    6: ("gas concentration", "%LEL", 0.1),
    7: ("time", "s", 1),
    8: ("voltage", "V", 0.1),
    9: ("current", "A", 0.1),
    10: ("flow", "L/s", 0.1),
    11: ("air volume", "m³/min", 0.1),
    12: ("wind speed", "m/s", 1),
}
"""模拟量类型 → (quantity, unit, step of one raw count in that unit)."""


def _parse(adu: bytes | bytearray | memoryview) -> tuple[list[InfoObject | RawAdu],
                                                         FrameError | None]:
    """The objects of ``adu`` up to the first problem, and that problem (or None)."""
    b = memoryview(bytes(adu))
    if not b:
        return [], None
    if len(b) < 2:
        return [], FrameError("ADU of 1 byte: a type flag needs an object count", offset=1)
    t, n = b[0], b[1]
    kind = _KINDS.get(t)
    if kind is None:
        return [RawAdu(t, n, bytes(b[2:]))], None
    if n > kind.MAX:
        return [], FrameError(f"type {t}: count {n} is over the maximum {kind.MAX}",
                              offset=1)
    objs: list[InfoObject | RawAdu] = []
    for i in range(n):
        at = 2 + i * kind.SIZE
        if at + kind.SIZE > len(b):
            return objs, FrameError(
                f"type {t}: object {i + 1} of {n} truncated, needs {kind.SIZE} bytes, "
                f"{len(b) - at} left", offset=at)
        objs.append(kind.decode(b[at:at + kind.SIZE]))
    end = 2 + n * kind.SIZE
    if len(b) > end:
        return objs, FrameError(
            f"type {t}: {len(b) - end} bytes after object {n} of {n} (count too small)",
            offset=end)
    return objs, None


def parse_adu(adu: bytes | bytearray | memoryview) -> list[InfoObject | RawAdu]:
    """The information objects of an ADU; FrameError naming the type and object if the
    count and the length disagree. An empty ADU (heartbeat, 确认) has none."""
    objs, err = _parse(adu)
    if err is not None:
        raise err
    return objs


def build_adu(objects: Sequence[InfoObject]) -> bytes:
    """The ADU carrying ``objects``, which must all be of one type (at most its maximum
    count); an empty sequence gives the empty ADU of a heartbeat."""
    if not objects:
        return b""
    kind = type(objects[0])
    if kind not in _KINDS.values():
        raise FrameError(f"cannot build an ADU of {kind.__name__}")
    if any(type(o) is not kind for o in objects):
        raise FrameError("an ADU carries objects of one type only")
    if len(objects) > kind.MAX:
        raise FrameError(f"type {kind.TYPE}: {len(objects)} objects, at most {kind.MAX}")
    return bytes([kind.TYPE, len(objects)]) + b"".join(o.encode() for o in objects)


def parse_ref(ref: str) -> tuple[int, int, int | None]:
    """``"1/1/131082"`` → (1, 1, 131082) and ``"1/1"`` → (1, 1, None): the ref formats
    this feed uses for components and systems."""
    parts = ref.split("/")
    try:
        nums = [int(p, 10) for p in parts]
    except ValueError:
        raise ValueError(f"ref {ref!r}: expected '<sys type>/<sys addr>[/<part addr>]'") \
            from None
    if len(nums) not in (2, 3) or not (0 <= nums[0] <= 255 and 0 <= nums[1] <= 255) or (
            len(nums) == 3 and not 0 <= nums[2] <= 0xFFFFFFFF):
        raise ValueError(f"ref {ref!r}: expected '<0-255>/<0-255>[/<0-4294967295>]'")
    return nums[0], nums[1], nums[2] if len(nums) == 3 else None


# ------------------------------------------------------------------ objects → events

_SYS_FAULTS = ((2, "fault"), (8, "mains fault"), (9, "backup power fault"),
               (10, "bus fault"))
_UITD_FAULTS = ((2, "fault"), (3, "mains fault"), (4, "backup power fault"),
                (5, "channel to centre fault"), (6, "monitoring line fault"))


def _trouble(ref: str, status: int, bits: Iterable[tuple[int, str]]) -> Trouble:
    found = [name for bit, name in bits if status >> bit & 1]
    return Trouble(ref, "fault", bool(found), ", ".join(found))


def _signal(ref: str, state: str, label: Time, utc_offset_s: int) -> Signal:
    """A Signal stamped with the device's time label: ``ts`` in unix seconds (None if
    the label is no date) and, for the audit trail, ``meta`` ``device_time`` as written."""
    return Signal(ref, state, ts=label_to_unix(label, utc_offset_s),
                  meta=(("device_time", label_text(label, utc_offset_s)),))


def object_events(obj: InfoObject | RawAdu, utc_offset_s: int = 0) -> list[FeedEvent]:
    """What one information object means for the gateway (see the module docstring);
    time labels are read as a clock ``utc_offset_s`` seconds ahead of UTC."""
    match obj:
        case ComponentStatus():
            if obj.status & 0x0002:
                state = "alarm"
            elif obj.status & 0x0104:
                state = "fault"
            else:
                state = "clear"
            return [_signal(obj.ref, state, obj.time, utc_offset_s)]
        case SystemStatus():
            out: list[FeedEvent] = []
            if obj.status >> 13 & 1:
                out.append(Reset(obj.ref))
            if obj.status & 0x0002:
                out.append(_signal(obj.ref, "alarm", obj.time, utc_offset_s))
            out.append(_trouble(obj.ref, obj.status, _SYS_FAULTS))
            return out
        case AnalogValue():
            unit = ANALOG_TYPES.get(obj.analog_type, ("", "", 1))[1]
            return [Reading(obj.ref, raw=obj.value, unit=unit)]
        case UitdStatus():
            out = []
            if obj.status & 0x02:
                out.append(_signal("uitd", "alarm", obj.time, utc_offset_s))
            out.append(_trouble("uitd", obj.status, _UITD_FAULTS))
            return out
        case _:
            return []


# ------------------------------------------------------------------ centre session


class CentreSession:
    """The monitoring-centre end of one connection: ``receive`` bytes, get events for the
    gateway and the bytes to send back. Never raises on what the device sends."""

    def __init__(self, address: int = 0, *, stall_s: float = 5.0,
                 utc_offset_s: int = 0) -> None:
        _check_int("centre address", address, MAX_ADDRESS)
        if (isinstance(utc_offset_s, bool) or not isinstance(utc_offset_s, int)
                or abs(utc_offset_s) > MAX_UTC_OFFSET_S):
            raise ValueError(f"utc_offset_s must be an integer within ±{MAX_UTC_OFFSET_S},"
                             f" got {utc_offset_s!r}")
        self.address = address
        self.utc_offset_s = utc_offset_s
        self.stall_s = stall_s
        self.device_address: int | None = None  # src of the last good frame
        self._deframer = Deframer()
        self._pending: tuple[int, float] | None = None  # (stream offset, since)
        self._last: tuple[int, int, bytes] | None = None  # (serial, command, adu)

    def receive(self, data: bytes, now_s: float) -> tuple[list[FeedEvent], bytes]:
        """Events and reply bytes for ``data`` arriving at ``now_s`` (unix seconds)."""
        events, replies = self._stall(now_s)
        self._handle(self._deframer.feed(data), now_s, events, replies)
        self._track(now_s)
        return events, b"".join(replies)

    def tick(self, now_s: float) -> tuple[list[FeedEvent], bytes]:
        """Call now and then while no data arrives: abandons a stalled partial frame."""
        events, replies = self._stall(now_s)
        self._track(now_s)
        return events, b"".join(replies)

    def close(self) -> list[FeedEvent]:
        """The connection ended: report a partial frame left behind."""
        n = self._deframer.buffered
        self._deframer = Deframer()
        self._pending = None
        return [Garbage("connection closed inside a frame", "end of stream", n)] if n else []

    # -- internals

    def _stall(self, now_s: float) -> tuple[list[FeedEvent], list[bytes]]:
        events: list[FeedEvent] = []
        replies: list[bytes] = []
        if self._pending is not None and now_s - self._pending[1] >= self.stall_s:
            self._handle(self._deframer.abandon(), now_s, events, replies)
        return events, replies

    def _track(self, now_s: float) -> None:
        at = self._deframer.pending_offset
        if at is None:
            self._pending = None
        elif self._pending is None or self._pending[0] != at:
            self._pending = (at, now_s)

    def _reply(self, command: int, serial: int, dst: int, now_s: float) -> bytes:
        return encode_frame(Frame(serial=serial, time=time_label(now_s, self.utc_offset_s),
                                  src=self.address, dst=dst, command=command))

    def _handle(self, items: list[Frame | BadFrame], now_s: float, events: list[FeedEvent],
                replies: list[bytes]) -> None:
        for item in items:
            if isinstance(item, BadFrame):
                where = f"offset {item.offset}"
                if item.header is not None:
                    where += f", serial {item.header.serial}"
                    replies.append(self._reply(CMD_DENY, item.header.serial,
                                               item.header.src, now_s))
                events.append(Garbage(item.reason, where, item.nbytes))
            else:
                self._frame(item, now_s, events, replies)

    def _frame(self, f: Frame, now_s: float, events: list[FeedEvent],
               replies: list[bytes]) -> None:
        self.device_address = f.src
        where = f"serial {f.serial}"
        if f.command in (CMD_SEND, CMD_RESPONSE):
            key = (f.serial, f.command, f.adu)
            repeat = key == self._last
            self._last = key
            objs, err = _parse(f.adu)
            if not repeat:
                for obj in objs:
                    events.extend(object_events(obj, self.utc_offset_s))
            if err is not None:
                events.append(Garbage(f"bad ADU: {err}", where, len(f.adu)))
                self._last = None  # the resend must be read again
            if f.command == CMD_SEND:
                replies.append(self._reply(CMD_DENY if err else CMD_CONFIRM, f.serial,
                                           f.src, now_s))
        elif f.command in (CMD_CONTROL, CMD_REQUEST):
            events.append(Garbage(f"command {f.command} ({COMMANDS[f.command]}) is for a "
                                  "device, not a centre: denied", where, OVERHEAD + len(f.adu)))
            replies.append(self._reply(CMD_DENY, f.serial, f.src, now_s))
        elif f.command not in COMMANDS:
            events.append(Garbage(f"unrecognised command {f.command}: denied", where,
                                  OVERHEAD + len(f.adu)))
            replies.append(self._reply(CMD_DENY, f.serial, f.src, now_s))
        events.append(Seen(None))
