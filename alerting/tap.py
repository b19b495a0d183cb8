"""TAP 1.8 (Telocator Alphanumeric Protocol, a.k.a. IXO / PET), sans-IO: both ends.

Why a sans-IO codec: a paging terminal may sit on an RS-232 line, behind a modem, or
on a TCP socket, and the dialogue (CR probes, ``ID=``, ``ESC PG1``, checksummed
blocks, ``EOT CR``) is the same on all of them. Keeping the protocol here, with the
time passed in and bytes in and out, lets the transport (``alerting.tap_link``) stay
small, lets the simulator (``firmware_sim.tap_terminal``) speak the other end with the
same code, and lets every timer and retry be tested in simulated time, the way the
python-hyper projects (h11, wsproto) are built. Nothing in this module reads a clock,
sleeps or touches a socket.

Reference: ``shared/protocols/pagers.md`` §1 (the fact sheet), cited as "sheet §x".

Pieces:

* :func:`checksum`, :func:`escape`, :func:`unescape`, :func:`ascii7`, :func:`blocks`,
  :func:`decode_block`, :func:`parse_block`: the block format (sheet §1.6-1.9).
* :class:`TapClient`: the sender's state machine (sheet §1.5, §1.10, §1.11, §6).
* :class:`TapTerminal`: the paging terminal's state machine, with fault switches for
  tests (sheet §1.13).

Both state machines are driven the same way: ``start(now)`` once, then ``receive(data,
now)`` for every read and ``tick(now)`` when ``next_deadline`` passes; each returns the
bytes to write. Neither ever raises on what the far end sends.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

STX, ETX, EOT, ACK, LF, CR = 0x02, 0x03, 0x04, 0x06, 0x0A, 0x0D
NAK, ETB, SUB, ESC, RS, US = 0x15, 0x17, 0x1A, 0x1B, 0x1E, 0x1F
TERMINATORS = (ETX, ETB, US)

MAX_INFO = 250
"""Information characters per block, the fields' CRs included (sheet §1.6)."""
MAX_BLOCK = MAX_INFO + 6
"""A whole block: STX + information + terminator + 3 checksum characters + CR."""

_MAX_LINE = 512  # a response line longer than this is noise, not a message sequence
_MAX_BUFFER = 8192  # bytes a terminal keeps while waiting for a block to end
_MAX_KEPT = 32  # message-sequence lines a client keeps (per response, and in total)

CODES: dict[str, str] = {
    "110": "TAP version supported",
    "111": "Terminal still processing previous input",
    "112": "Maximum pages entered for this session",
    "113": "Maximum time reached for this session",
    "114": "Welcome",
    "115": "Exit message",
    "211": "Page(s) sent successfully",
    "212": "Long message truncated and sent",
    "213": "Message accepted, held for deferred delivery",
    "214": "Message truncated to the character maximum and sent",
    "501": "Timeout waiting for user input",
    "502": "Unexpected characters before the start of a transaction",
    "503": "Too many checksum errors",
    "504": "Message text not allowed for this pager",
    "505": "Alphabetic characters sent to a numeric pager",
    "506": "Too many invalid pages received",
    "507": "Invalid logon: badly formed logon sequence",
    "508": "Invalid logon: service type or category not supported",
    "509": "Invalid logon: wrong password",
    "510": "Illegal pager ID",
    "511": "Invalid pager ID: no subscriber with this ID",
    "512": "Temporarily cannot deliver to this pager ID",
    "513": "Long message rejected for exceeding the maximum length",
    "514": "Checksum error",
    "515": "Message format error",
    "516": "Message quota temporarily exceeded",
    "517": "Message rejected: over the character maximum",
}
"""TAP 1.8 Appendix A message-sequence codes (sheet §1.12), used to explain a bare code.

Software should act on the control character (ACK, NAK, RS, ESC EOT), not the code;
the code and its text only go into the outcome a person reads.
"""

_CODE_LINE = re.compile(r"^\s*(\d{3})(?:\s+(.*?))?\s*$")


# --- block format ---------------------------------------------------------------------


def checksum(block: bytes) -> bytes:
    """The 3-character TAP checksum of ``block`` (STX up to and including its terminator).

    Sum of the 7-bit values, low 12 bits, one ``0x30 + nibble`` character per nibble,
    most significant first (sheet §1.8). Masking each byte is what lets a 7E1 sender
    and an 8N1 receiver agree: the parity bit never counts.
    """
    total = sum(b & 0x7F for b in block) & 0xFFF
    return bytes((0x30 + (total >> 8 & 0xF), 0x30 + (total >> 4 & 0xF), 0x30 + (total & 0xF)))


def ascii7(text: str) -> str:
    """``text`` as the 7-bit characters a pager can show: what the terminal will receive.

    TAP is 7-bit ASCII (sheet §1.2, §1.9), so anything else must be replaced before it
    is sent, never sent raw (a raw byte >= 0x80 loses its top bit on a 7E1 line and
    arrives as a different character). Letters with accents lose the accent ("é" →
    "e", via Unicode NFKD), compatibility forms become their plain letters ("ﬁ" → "fi",
    a no-break space → " "), and everything else, Chinese included, becomes "?". DEL
    (0x7F) becomes "?" too, because it has no transparency form. Control characters
    are kept here; :func:`escape` decides how they travel.
    """
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if code < 0x7F:
            out.append(ch)
            continue
        if code == 0x7F:
            out.append("?")
            continue
        decomposed = unicodedata.normalize("NFKD", ch)
        plain = [c for c in decomposed if ord(c) < 0x7F]
        rest = [c for c in decomposed if ord(c) >= 0x7F]
        if plain and all(unicodedata.combining(c) for c in rest):
            out.extend(plain)
        else:
            out.append("?")
    return "".join(out)


def escape(text: str, *, transparency: bool = True) -> bytes:
    """Encode one field's text for a TAP block: 7-bit, control characters made safe.

    With ``transparency`` (TAP 1.6 and later, the default) every control character
    below 0x20 is sent as ``SUB`` followed by the character plus 0x40, so LF travels as
    ``1A 4A`` and a CR in the text cannot end the field early (sheet §1.9). The spec
    only requires this for CR, LF, ESC, STX, ETX, US, ETB, EOT and SUB; doing it for
    all of them costs a byte or two and means no terminal ever sees a raw control
    character in a field. Terminals older than 1.6 do not understand SUB: for those
    pass ``transparency=False`` and each control character becomes a space instead.
    Non-ASCII text is replaced as :func:`ascii7` says.
    """
    out = bytearray()
    for ch in ascii7(text):
        code = ord(ch)
        if code < 0x20:
            if transparency:
                out += bytes((SUB, code + 0x40))
            else:
                out.append(0x20)
        else:
            out.append(code)
    return bytes(out)


def unescape(raw: bytes) -> str:
    """Undo :func:`escape`'s transparency on one field's bytes (the terminal's side).

    Lenient on purpose: ``SUB`` before a character outside 0x40-0x5F yields that
    character unchanged, and a trailing lone ``SUB`` is dropped, since a terminal must
    never fail a page over one odd byte. Each byte is masked to 7 bits first.
    """
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        b = raw[i] & 0x7F
        if b == SUB:
            if i + 1 < n:
                nxt = raw[i + 1] & 0x7F
                out.append(chr(nxt - 0x40 if 0x40 <= nxt < 0x60 else nxt))
            i += 2
            continue
        out.append(chr(b))
        i += 1
    return "".join(out)


def page_text(text: str) -> str:
    """The message text exactly as a conforming terminal records it from :func:`blocks`.

    :func:`ascii7` plus trailing spaces removed (sheet §1.6: "trailing spaces should be
    removed"). Tests compare what the terminal recorded with this.
    """
    return ascii7(text).rstrip(" ")


def _units(raw: bytes) -> list[bytes]:
    """Split an escaped field into units that must not be cut: a SUB pair is one unit."""
    units: list[bytes] = []
    i = 0
    while i < len(raw):
        step = 2 if raw[i] == SUB and i + 1 < len(raw) else 1
        units.append(raw[i:i + step])
        i += step
    return units


def _finish(info: bytes, terminator: int) -> bytes:
    body = bytes((STX,)) + info + bytes((terminator,))
    return body + checksum(body) + bytes((CR,))


def blocks(pager_id: str, text: str, max_chars: int = MAX_INFO, *,
           transparency: bool = True) -> list[bytes]:
    """One paging transaction (pager ID, message) as complete TAP blocks, checksums on.

    Each block carries at most ``max_chars`` information characters, the fields' CRs
    included (250 in the spec, fewer on some encoders: WaveWare needs about 245 minus
    the ID length, sheet §1.6). When a transaction needs more than one block (sheet
    §1.7), a block that ends inside a field ends with ``US`` and the field goes on in
    the next block with no CR at the cut; a block that ends just after a field's CR,
    with more fields to come, ends with ``ETB``; the last block ends with ``ETX``.
    A SUB escape pair is never cut in two. Trailing spaces are dropped from the text.
    """
    if max_chars < 2:
        raise ValueError(f"max_chars must be at least 2 (a SUB pair); got {max_chars}")
    fields = [
        escape(pager_id, transparency=transparency),
        escape(page_text(text), transparency=transparency),
    ]
    out: list[bytes] = []
    cur = bytearray()
    for index, raw in enumerate(fields):
        units = _units(raw)
        taken_here = 0  # units of this field already placed in ``cur``
        i = 0
        while True:
            while i < len(units) and len(cur) + len(units[i]) <= max_chars:
                cur += units[i]
                i += 1
                taken_here += 1
            if i == len(units) and len(cur) < max_chars:
                cur.append(CR)  # the field ends in this block
                break
            # the block is full before the field (or its CR) is complete
            out.append(_finish(bytes(cur), US if taken_here else ETB))
            cur = bytearray()
            taken_here = 0
        if index < len(fields) - 1 and len(cur) >= max_chars:
            out.append(_finish(bytes(cur), ETB))
            cur = bytearray()
    out.append(_finish(bytes(cur), ETX))
    return out


@dataclass(frozen=True, slots=True)
class Block:
    """One received block, taken apart but not yet joined to its transaction.

    ``fields`` are the complete fields' raw (still escaped) bytes; ``partial`` is the
    start of a field that continues in the next block (``US`` only). Raw bytes are
    kept so that a SUB pair cut across two blocks by another sender still decodes.
    """

    fields: list[bytes]
    partial: bytes | None
    terminator: int
    ok: bool  # the checksum matched
    expected: bytes
    got: bytes


def decode_block(data: bytes) -> Block | None:
    """Take apart one block ``STX ... ETX|ETB|US c1 c2 c3 [CR]``; None if it is not one.

    Bytes are masked to 7 bits (sheet §1.2: accept 7E1 and 8N1 peers alike). A block
    whose checksum does not match is still returned, with ``ok`` false, so the caller
    can answer ``514`` + NAK with both values.
    """
    data = bytes(b & 0x7F for b in data)
    if len(data) < 5 or data[0] != STX:
        return None
    end = next((i for i in range(1, len(data)) if data[i] in TERMINATORS), -1)
    if end < 0 or len(data) < end + 4:
        return None
    terminator = data[end]
    expected = checksum(data[:end + 1])
    got = data[end + 1:end + 4]
    parts = data[1:end].split(bytes((CR,)))
    partial: bytes | None
    if terminator == US:
        partial = parts.pop()
    else:
        partial = None
        if parts[-1] == b"":
            parts.pop()  # the last field's CR: nothing after it
        # else: a last field with no CR before ETX/ETB; taken as complete (lenient)
    return Block(parts, partial, terminator, expected == got, expected, got)


def parse_block(data: bytes) -> tuple[list[str], bool]:
    """The fields of one block as text, and whether its checksum matched.

    A field cut by ``US`` is returned as the last item. Anything that is not a block
    gives ``([], False)``. For whole transactions use :class:`TapTerminal`, which joins
    fields across ``ETB`` and ``US`` blocks.
    """
    block = decode_block(data)
    if block is None:
        return [], False
    fields = [unescape(f) for f in block.fields]
    if block.partial is not None:
        fields.append(unescape(block.partial))
    return fields, block.ok


def code_limit(text: str) -> int | None:
    """The character limit a ``214`` or ``517`` message starts with, e.g. "80 character
    maximum..." → 80 (sheet §1.12: the digits end at the first non-digit)."""
    match = re.match(r"\s*(\d+)", text)
    return int(match.group(1)) if match else None


# --- response scanning (the client's input) ---------------------------------------------


class Ev(Enum):
    """What the client can hear from a terminal, whatever the framing around it."""

    ID = "ID="
    ACK = "ACK"
    NAK = "NAK"
    RS = "RS"
    DISCONNECT = "ESC EOT"
    GO = "ESC [p"
    CODE = "code"


@dataclass(frozen=True, slots=True)
class Event:
    kind: Ev
    code: str = ""
    text: str = ""


class ResponseScanner:
    """Turn a terminal's bytes into events, leniently (sheet §1.10 "Leniency").

    Real terminals differ: ``211 text CR ACK CR`` or a bare ``ACK CR``, CR or LF or
    CRLF line ends, ``ID=`` with or without an end of line, banners and verbose text in
    between. So the scanner does not match exact framing: it splits lines on CR and LF,
    reports each line that starts with a 3-digit code, reports ``ID=`` as soon as it
    appears, and reports each ACK, NAK, RS, ``ESC EOT`` and ``ESC [ p`` where it finds
    it. Continuation lines (indented) are added to the previous code's text. Memory is
    bounded: a line is cut at 512 characters.
    """

    def __init__(self) -> None:
        self._line = bytearray()
        self._esc = b""  # an ESC sequence cut across reads
        self._last_code: tuple[str, list[str]] | None = None

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        stream = self._esc + bytes(b & 0x7F for b in data)
        self._esc = b""
        i, n = 0, len(stream)
        while i < n:
            b = stream[i]
            if b == ESC:
                if i + 1 >= n:
                    self._esc = stream[i:]
                    break
                nxt = stream[i + 1]
                if nxt == EOT:
                    self._end_line(events)
                    events.append(Event(Ev.DISCONNECT))
                    i += 2
                    continue
                if nxt == ord("["):
                    if i + 2 >= n:
                        self._esc = stream[i:]
                        break
                    if stream[i + 2] in b"pP":
                        self._end_line(events)
                        events.append(Event(Ev.GO))
                        i += 3
                        continue
                i += 1  # some other escape: ignore the ESC
                continue
            if b in (CR, LF):
                self._end_line(events)
            elif b == ACK:
                self._end_line(events)
                events.append(Event(Ev.ACK))
            elif b == NAK:
                self._end_line(events)
                events.append(Event(Ev.NAK))
            elif b == RS:
                self._end_line(events)
                events.append(Event(Ev.RS))
            elif b >= 0x20:
                if len(self._line) < _MAX_LINE:
                    self._line.append(b)
                if self._line.endswith(b"ID="):
                    events.append(Event(Ev.ID))
                    self._line.clear()
            i += 1
        return events

    def _end_line(self, events: list[Event]) -> None:
        if not self._line:
            return
        text = self._line.decode("ascii", "replace")
        self._line.clear()
        match = _CODE_LINE.match(text) if not text[:1].isspace() else None
        if match:
            code, rest = match.group(1), match.group(2) or ""
            events.append(Event(Ev.CODE, code, rest))
        elif text.strip():
            # a continuation line or free text: shown to people only
            events.append(Event(Ev.CODE, "", text.strip()))


def describe(messages: list[tuple[str, str]]) -> str:
    """A one-line account of a response's message sequences, e.g. "211 Page(s) Sent".

    A bare code (non-verbose terminals) gets its Appendix A meaning from :data:`CODES`.
    """
    parts: list[str] = []
    for code, text in messages:
        if code:
            parts.append(f"{code} {text or CODES.get(code, 'unknown code')}")
        elif text:
            parts.append(text)
    return "; ".join(parts)


# --- the client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TapTimers:
    """TAP timers in seconds (sheet §1.4); the defaults are the spec's rev 1.0 values.

    ``t1`` probe interval, ``t2`` terminal's ``ID=`` deadline, ``t3`` response to a
    logon or a block, ``t4`` the terminal's patience between transactions, ``t5`` the
    terminal's wait for a logon. The client uses t1 and t3; the terminal t4 and t5.
    Tests pass tenths of a second so that every timeout path runs in well under a
    second.
    """

    t1: float = 2.0
    t2: float = 1.0
    t3: float = 10.0
    t4: float = 4.0
    t5: float = 8.0


@dataclass(slots=True)
class PageResult:
    """What became of one page in one or more TAP sessions.

    ``attempts`` counts block transmissions (resends included); ``code`` is the last
    3-digit message-sequence code heard for this page, ``detail`` the account a person
    reads ("211 Page(s) Sent Successfully", "RS: abandoned: 511 ..."). ``permanent`` is
    true when the terminal refused the page (RS): sending it again will not help.
    """

    pager_id: str
    text: str
    accepted: bool = False
    attempts: int = 0
    code: str | None = None
    detail: str = "not sent"
    permanent: bool = False


class ClientState(Enum):
    PROBING = "probing"  # CR every t1, waiting for ID=
    LOGON = "logon"  # ESC PG1 sent, waiting for ACK / NAK / ESC EOT / ESC [p
    GO_AHEAD = "go-ahead"  # logon ACKed, waiting for ESC [p
    SENDING = "sending"  # a block sent, waiting for its response
    LOGOUT = "logout"  # EOT CR sent, waiting for ESC EOT
    DONE = "done"


class TapClient:
    """The sending side of one TAP session: probe, log on, send pages, log out.

    ``pages`` are ``(pager_id, text)`` pairs, sent one transaction each, in order, over
    one logon (TAP was made for batches: one call, many pages). Counts:

    * ``n1``: CR probes before giving up on ``ID=`` (each waits ``t1``);
    * ``n2``: resends of one block after a NAK or no response within ``t3`` (so a
      block goes out at most ``n2 + 1`` times);
    * ``n3``: logon attempts (a NAK, a repeated ``ID=`` or no answer within ``t3``
      each cost one).

    A terminal's RS abandons that page only (permanently: see
    :attr:`PageResult.permanent`) and the session goes on with the next page. ``ESC
    EOT``, a block NAKed too often, a silent terminal or a lost connection end the
    session with :attr:`error` set; pages not accepted by then can be tried again on a
    new connection. After the last page the client sends ``EOT CR`` and waits ``t3``
    for ``ESC EOT``; a terminal that just hangs up instead costs nothing, since every
    page was already answered.
    """

    def __init__(
        self,
        password: str,
        pages: list[tuple[str, str]],
        timers: TapTimers | None = None,
        n1: int = 3,
        n2: int = 3,
        n3: int = 3,
        *,
        max_chars: int = MAX_INFO,
        transparency: bool = True,
    ) -> None:
        if min(n1, n3) < 1 or n2 < 0:
            raise ValueError("need n1 >= 1, n2 >= 0, n3 >= 1")
        self.password = password
        self.timers = timers or TapTimers()
        self.n1, self.n2, self.n3 = n1, n2, n3
        self.results = [PageResult(pid, text) for pid, text in pages]
        self._blocks = [blocks(pid, text, max_chars, transparency=transparency)
                        for pid, text in pages]
        self.state = ClientState.PROBING
        self.error: str | None = None
        self.logout_clean = False  # ESC EOT heard after our EOT CR
        self.messages: list[tuple[str, str]] = []  # the last 32 (code, text) heard
        self._scanner = ResponseScanner()
        self._pending: list[tuple[str, str]] = []  # message sequences since the last event
        self._deadline: float | None = None
        self._probes = 0
        self._logons = 0
        self._page = 0
        self._block = 0
        self._sends = 0  # transmissions of the current block

    # -- driving ----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state is ClientState.DONE

    @property
    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do; None once the session is over."""
        return None if self.done else self._deadline

    def start(self, now: float) -> bytes:
        """The first CR probe (sheet §1.5: it also lets the terminal find the baud rate)."""
        if self.state is not ClientState.PROBING or self._probes:
            return b""
        if not self.results:  # nothing to send: no call at all
            self.state = ClientState.DONE
            return b""
        self._probes = 1
        self._deadline = now + self.timers.t1
        return b"\r"

    def receive(self, data: bytes, now: float) -> bytes:
        """Bytes from the terminal; returns the bytes to send. Never raises on input."""
        if self.done:
            return b""
        out = bytearray()
        for event in self._scanner.feed(data):
            if self.done:
                break
            was = self.state
            out += self._on_event(event, now)
            if was is ClientState.PROBING and self.state is ClientState.LOGON:
                # sheet §6 step 3: flush the input before the logon, so that ID=
                # answers to earlier probes in the same read do not cost a logon
                self._scanner = ResponseScanner()
                break
        return bytes(out)

    def tick(self, now: float) -> bytes:
        """Act on an expired timer: re-probe, resend, or give up. Early calls do nothing."""
        if self.done or self._deadline is None or now < self._deadline:
            return b""
        state = self.state
        if state is ClientState.PROBING:
            if self._probes < self.n1:
                self._probes += 1
                self._deadline = now + self.timers.t1
                return b"\r"
            return self._fail(f"no ID= after {self._probes} probes")
        if state is ClientState.LOGON:
            return self._logon(now, f"no answer to logon within {self.timers.t3:g} s")
        if state is ClientState.GO_AHEAD:
            return self._fail(f"logon accepted but no go-ahead (ESC [p) within "
                              f"{self.timers.t3:g} s")
        if state is ClientState.SENDING:
            if self._sends <= self.n2:
                return self._send_block(now)
            return self._fail(f"no response to block {self._block + 1} after "
                              f"{self._sends} sends")
        if state is ClientState.LOGOUT:
            self.state = ClientState.DONE  # every page was already answered
            return b""
        return b""

    def connection_lost(self, now: float, reason: str = "connection closed") -> None:
        """The line dropped. After our logout that is how some terminals say goodbye."""
        if self.done:
            return
        if self.state is ClientState.LOGOUT:
            self.state = ClientState.DONE
            return
        self._fail(f"{reason} while {self.state.value}")

    def abort(self, reason: str) -> None:
        """Give up from outside (the transport's overall deadline); records ``reason``."""
        if not self.done:
            self._fail(reason)

    # -- events -----------------------------------------------------------------------

    def _on_event(self, event: Event, now: float) -> bytes:
        if event.kind is Ev.CODE:
            # bounded: a terminal that floods text must not grow memory without end
            self._pending = [*self._pending[-(_MAX_KEPT - 1):], (event.code, event.text)]
            self.messages = [*self.messages[-(_MAX_KEPT - 1):], (event.code, event.text)]
            return b""
        state = self.state
        if event.kind is Ev.DISCONNECT:
            said = self._take_pending()
            if state is ClientState.LOGOUT:
                self.logout_clean = True
                self.state = ClientState.DONE
                return b""
            return self._fail("terminal sent ESC EOT: forced disconnect"
                              + (f" ({said})" if said else ""))
        if state is ClientState.PROBING:
            if event.kind is Ev.ID:
                self._take_pending()
                return self._logon(now, None)
            return b""
        if state is ClientState.LOGON:
            if event.kind is Ev.ACK:
                self._take_pending()
                self.state = ClientState.GO_AHEAD
                self._deadline = now + self.timers.t3
                return b""
            if event.kind is Ev.GO:  # early go-ahead, without or before the ACK
                self._take_pending()
                return self._next_page(now)
            if event.kind is Ev.NAK:
                return self._logon(now, f"logon NAKed ({self._take_pending() or 'no text'})")
            if event.kind is Ev.ID:
                return self._logon(now, "terminal asked for the logon again (ID=)")
            return b""
        if state is ClientState.GO_AHEAD:
            if event.kind is Ev.GO:
                self._take_pending()
                return self._next_page(now)
            return b""
        if state is ClientState.SENDING:
            return self._on_block_response(event, now)
        if state is ClientState.LOGOUT and event.kind is Ev.RS:
            # sheet §1.11 (10b): content already ACKed turned out unacceptable
            said = self._take_pending()
            for result in self.results:
                if result.accepted:
                    result.accepted = False
                    result.permanent = True
                    result.detail = "RS after logout: terminal withdrew acceptance" + (
                        f" ({said})" if said else "")
            return b""
        return b""

    def _on_block_response(self, event: Event, now: float) -> bytes:
        result = self.results[self._page]
        if event.kind is Ev.ACK:
            pending = self._pending
            if any(code == "110" for code, _ in pending):
                # a late answer to a repeated logon, not to our block: ignore it
                self._take_pending()
                return b""
            said = self._take_pending()
            self._record_code(result, pending)
            if self._block + 1 < len(self._blocks[self._page]):
                self._block += 1
                self._sends = 0
                return self._send_block(now)
            result.accepted = True
            result.detail = said or "ACK"
            self._page += 1
            return self._next_page(now)
        if event.kind is Ev.NAK:
            pending = self._pending
            said = self._take_pending()
            self._record_code(result, pending)
            if self._sends <= self.n2:
                return self._send_block(now)
            return self._fail(f"block NAKed {self._sends} times"
                              + (f" ({said})" if said else ""))
        if event.kind is Ev.RS:
            pending = self._pending
            said = self._take_pending()
            self._record_code(result, pending)
            result.accepted = False
            result.permanent = True
            result.detail = "RS: abandoned" + (f": {said}" if said else "")
            self._page += 1
            return self._next_page(now)
        return b""  # ID=, a stray go-ahead: not an answer to a block

    # -- actions ----------------------------------------------------------------------

    def _logon(self, now: float, why_again: str | None) -> bytes:
        if self._logons >= self.n3:
            return self._fail(f"logon failed after {self._logons} attempts: {why_again}")
        self._logons += 1
        self.state = ClientState.LOGON
        self._deadline = now + self.timers.t3
        return b"\x1bPG1" + ascii7(self.password).encode("ascii") + b"\r"

    def _next_page(self, now: float) -> bytes:
        if self._page >= len(self.results):
            return self._logout(now)
        self._block = 0
        self._sends = 0
        return self._send_block(now)

    def _send_block(self, now: float) -> bytes:
        self.state = ClientState.SENDING
        self._sends += 1
        self.results[self._page].attempts += 1
        self._deadline = now + self.timers.t3
        return self._blocks[self._page][self._block]

    def _logout(self, now: float) -> bytes:
        self.state = ClientState.LOGOUT
        self._deadline = now + self.timers.t3
        return bytes((EOT, CR))

    def _fail(self, reason: str) -> bytes:
        self.error = reason
        self.state = ClientState.DONE
        self._deadline = None
        for result in self.results:
            if not result.accepted and not result.permanent:
                if result.attempts:
                    result.detail = reason
                else:
                    result.detail = f"not sent: {reason}"
        return b""

    def _take_pending(self) -> str:
        said = describe(self._pending)
        self._pending = []
        return said

    @staticmethod
    def _record_code(result: PageResult, pending: list[tuple[str, str]]) -> None:
        codes = [code for code, _ in pending if code]
        if codes:
            result.code = codes[-1]


# --- the terminal -----------------------------------------------------------------------


HANG_UP_POINTS = ("probe", "logon", "block")


@dataclass(slots=True)
class TapFaults:
    """Fault switches for a simulated terminal; shared by all of a simulator's sessions.

    Counters count down as they are used, across sessions, so "NAK the next 2 blocks"
    means the next two blocks this simulator receives on any connection. They exist
    so the client's resend, abandon, retry and timeout paths can be tested against a
    terminal that really misbehaves on a real line.

    * ``nak_next``: answer the next k blocks with ``514`` + NAK (the block is dropped).
    * ``rs_next`` / ``rs_code``: answer the next k blocks with ``<rs_code>`` + RS.
    * ``hang_up_at``: answer with ``ESC EOT`` (and hang up) at ``"probe"`` (the first
      CR), ``"logon"`` or ``"block"``, on every session while it is set.
    * ``silent``: never answer anything.
    """

    nak_next: int = 0
    rs_next: int = 0
    rs_code: str = "511"
    hang_up_at: str | None = None
    silent: bool = False

    def __post_init__(self) -> None:
        if self.hang_up_at is not None and self.hang_up_at not in HANG_UP_POINTS:
            raise ValueError(f"hang_up_at must be one of {HANG_UP_POINTS}; "
                             f"got {self.hang_up_at!r}")


class TermState(Enum):
    WAIT_CR = "wait-cr"
    WAIT_LOGON = "wait-logon"
    READY = "ready"
    CLOSED = "closed"


class TapTerminal:
    """The paging terminal's side of one session (sheet §1.13), for the simulator.

    It answers the first byte with ``ID=``, checks the logon (``ESC PG1`` and, when
    ``password`` is not None, the password), then takes blocks: it verifies each
    checksum (``514`` + NAK on a mismatch, ``503`` + ``ESC EOT`` after ``n2``
    consecutive ones), joins fields across ``ETB`` and ``US`` blocks, undoes SUB
    transparency, and on ``ETX`` records the page in :attr:`pages` and answers ``211``
    + ACK. ``EOT CR`` gets ``115`` + ``ESC EOT``. Idle too long in logon (t5, with
    ``n3`` ``ID=`` re-prompts) or between transactions (t4) gets ``501`` + ``ESC EOT``.
    Once :attr:`closed` is true the transport should hang up.

    Quirk options mirror real encoders (sheet §5): ``eol`` (``b"\\r"`` or
    ``b"\\r\\n"``), ``verbose`` (False: no message sequences at all, like Ascom),
    ``implied_login`` (a block with no logon is taken, like STI and WaveWare),
    ``known_ids`` (others get ``511`` + RS), ``max_block`` (longer blocks get ``515`` +
    RS).
    """

    def __init__(
        self,
        password: str | None = None,
        *,
        faults: TapFaults | None = None,
        timers: TapTimers | None = None,
        n2: int = 3,
        n3: int = 3,
        known_ids: set[str] | None = None,
        banner: str | None = "firegrid TAP simulator",
        eol: bytes = b"\r",
        verbose: bool = True,
        implied_login: bool = False,
        max_block: int = MAX_BLOCK,
    ) -> None:
        self.password = password
        self.faults = faults if faults is not None else TapFaults()
        self.timers = timers or TapTimers()
        self.n2, self.n3 = n2, n3
        self.known_ids = known_ids
        self.banner = banner
        self.eol = eol
        self.verbose = verbose
        self.implied_login = implied_login
        self.max_block = max_block
        self.state = TermState.WAIT_CR
        self.pages: list[tuple[str, str]] = []
        self.transactions: list[list[str]] = []  # every accepted transaction's fields
        self.blocks: list[bytes] = []  # every block received intact, as it arrived
        self.refused: list[tuple[str, bytes]] = []  # (code, block) for each block not taken
        self.reason = ""  # why the terminal closed
        self._buf = bytearray()
        self._deadline: float | None = None
        self._prompts = 0
        self._bad_checksums = 0
        self._fields: list[bytes] = []  # the open transaction's complete fields
        self._partial: bytes | None = None  # a field cut by US
        self._skipping = False  # dropping the rest of an oversized block
        self._garbage = False  # a 502 was sent for the current run of junk

    @property
    def closed(self) -> bool:
        return self.state is TermState.CLOSED

    @property
    def next_deadline(self) -> float | None:
        return None if self.closed or self.faults.silent else self._deadline

    def start(self, now: float) -> bytes:
        """A caller connected; real terminals wait for the caller's CR (sheet §1.5)."""
        self._deadline = None
        return b""

    def tick(self, now: float) -> bytes:
        """Idle timers: re-prompt ``ID=`` (t5, up to n3) or give up with ``501``."""
        if self.closed or self.faults.silent or self._deadline is None or now < self._deadline:
            return b""
        if self.state is TermState.WAIT_LOGON and self._prompts < self.n3:
            self._prompts += 1
            self._deadline = now + self.timers.t5
            return b"ID=" + self.eol
        return self._close("501", "Timeout waiting for user input")

    def receive(self, data: bytes, now: float) -> bytes:
        """Bytes from the caller; returns the terminal's answer. Never raises on input."""
        if self.closed or self.faults.silent or not data:
            return b""
        self._buf += bytes(b & 0x7F for b in data)  # 7E1 and 8N1 callers alike
        out = bytearray()
        while self._buf and not self.closed:
            before = len(self._buf), self.state, self._skipping
            out += self._step(now)
            if (len(self._buf), self.state, self._skipping) == before:
                break  # waiting for more bytes
        if len(self._buf) > _MAX_BUFFER:
            del self._buf[:-_MAX_BUFFER]
        return bytes(out)

    # -- one step of input ---------------------------------------------------------------

    def _step(self, now: float) -> bytes:
        if self.state is TermState.WAIT_CR:
            return self._on_probe(now)
        if self.state is TermState.WAIT_LOGON:
            return self._on_logon_input(now)
        return self._on_ready_input(now)

    def _on_probe(self, now: float) -> bytes:
        # the CR, or any bytes before it (autobaud), is consumed
        end = next((i for i, b in enumerate(self._buf) if b in (CR, LF)), len(self._buf) - 1)
        del self._buf[:end + 1]
        if self.faults.hang_up_at == "probe":
            return self._close("", "", hang_up=True)
        self.state = TermState.WAIT_LOGON
        self._prompts = 1
        self._deadline = now + self.timers.t5
        return b"ID=" + self.eol

    def _on_logon_input(self, now: float) -> bytes:
        if self._buf[0] == STX and self.implied_login:
            self.state = TermState.READY
            return b""
        ends = [i for i in (self._buf.find(CR), self._buf.find(LF)) if i >= 0]
        if not ends:
            if len(self._buf) > 64:  # no logon is this long: junk
                self._buf.clear()
            return b""
        end = min(ends)
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        if not line.strip():
            return b""  # extra probe CRs, or the LF of a CRLF
        start = line.rfind(bytes((ESC,)))
        if start < 0:
            return self._reprompt(now)  # manual mode or noise: ask again
        logon = line[start + 1:]
        if self.faults.hang_up_at == "logon":
            return self._close("", "", hang_up=True)
        if len(logon) < 3 or logon[:2].upper() != b"PG" or logon[2:3] not in b"13":
            return self._close("508", "Invalid logon: service type or category not supported")
        if self.password is not None and logon[3:].decode("ascii") != self.password:
            return self._close("509", "Invalid logon: wrong password")
        self.state = TermState.READY
        self._deadline = now + self.timers.t4
        out = self._msg("110", "1.8")
        if self.banner:
            out += self._msg("114", self.banner)
        return out + bytes((ACK,)) + self.eol + b"\x1b[p" + self.eol

    def _reprompt(self, now: float) -> bytes:
        if self._prompts >= self.n3:
            return self._close("507", "Invalid logon: badly formed logon sequence")
        self._prompts += 1
        self._deadline = now + self.timers.t5
        return b"ID=" + self.eol

    def _on_ready_input(self, now: float) -> bytes:
        buf = self._buf
        if self._skipping:
            return self._skip_oversized()
        first = buf[0]
        if first == STX:
            self._garbage = False
            return self._on_block_bytes(now)
        if first == EOT:
            if len(buf) < 2:
                return b""
            if buf[1] in (CR, LF):
                del buf[:2]
                return self._close("115", "Goodbye")
            del buf[:1]
            return self._junk()
        if first in (CR, LF):
            del buf[:1]
            return b""
        # junk up to the next byte that could start something
        cut = next((i for i, b in enumerate(buf) if b in (STX, EOT, CR, LF)), len(buf))
        del buf[:cut]
        return self._junk()

    def _junk(self) -> bytes:
        if self._garbage:
            return b""
        self._garbage = True
        return self._msg("502", "Unexpected characters before the start of a transaction")

    def _on_block_bytes(self, now: float) -> bytes:
        buf = self._buf
        end = next((i for i in range(1, min(len(buf), self.max_block))
                    if buf[i] in TERMINATORS), -1)
        if end < 0:
            if len(buf) >= self.max_block:
                self._skipping = True
                return self._refuse_oversized()
            return b""  # the block is still arriving
        if end + 5 > self.max_block:  # STX .. terminator, 3 checksum characters, CR
            self._skipping = True
            return self._refuse_oversized()
        if len(buf) < end + 5:
            return b""  # checksum and CR still to come
        size = end + 5 if buf[end + 4] in (CR, LF) else end + 4
        raw = bytes(buf[:size])
        del buf[:size]
        self._deadline = now + self.timers.t4
        return self._on_block(raw)

    def _refuse_oversized(self) -> bytes:
        self._fields, self._partial = [], None
        self.refused.append(("515", bytes(self._buf[:64])))
        return self._msg("515", "Message format error: block too long") + bytes((RS,)) + self.eol

    def _skip_oversized(self) -> bytes:
        buf = self._buf
        end = next((i for i, b in enumerate(buf) if b in TERMINATORS), -1)
        if end < 0:
            buf.clear()
            return b""
        if len(buf) < end + 5:
            return b""
        del buf[:end + 5 if buf[end + 4] in (CR, LF) else end + 4]
        self._skipping = False
        return b""

    def _on_block(self, raw: bytes) -> bytes:
        block = decode_block(raw)
        if block is None:  # cannot happen for a framed block; be safe anyway
            return self._msg("515", "Message format error") + bytes((RS,)) + self.eol
        faults = self.faults
        if faults.hang_up_at == "block":
            return self._close("", "", hang_up=True)
        if not block.ok:
            self._bad_checksums += 1
            self.refused.append(("514", raw))
            if self._bad_checksums > self.n2:
                return self._close("503", "Too many checksum errors")
            exp, got = block.expected.decode(), block.got.decode("ascii", "replace")
            return self._msg("514", f"Checksum error - Exp. {exp} Got {got}") + bytes(
                (NAK,)) + self.eol
        self._bad_checksums = 0
        if faults.nak_next > 0:
            faults.nak_next -= 1
            self.refused.append(("514", raw))
            return self._msg("514", "Checksum error (simulated)") + bytes((NAK,)) + self.eol
        if faults.rs_next > 0:
            faults.rs_next -= 1
            self._fields, self._partial = [], None
            self.refused.append((faults.rs_code, raw))
            text = CODES.get(faults.rs_code, "Transaction refused")
            return self._msg(faults.rs_code, text) + bytes((RS,)) + self.eol
        self.blocks.append(raw)
        parts, partial = list(block.fields), block.partial
        if self._partial is not None:  # the field cut by the previous block's US
            if parts:
                parts[0] = self._partial + parts[0]
            elif partial is not None:
                partial = self._partial + partial
            else:
                parts = [self._partial]  # ended by ETX/ETB without its CR: lenient
            self._partial = None
        self._fields.extend(parts)
        self._partial = partial
        if block.terminator != ETX:
            return self.eol + bytes((ACK,)) + self.eol  # sheet §1.7: ACK every block
        return self._on_transaction()

    def _on_transaction(self) -> bytes:
        fields = [unescape(f) for f in self._fields]
        self._fields, self._partial = [], None
        while len(fields) < 2:
            fields.append("")
        pager_id, text = fields[0], "\r".join(fields[1:])
        if self.known_ids is not None and pager_id.strip() not in self.known_ids:
            self.refused.append(("511", b""))
            return self._msg("511", "Invalid pager ID - not in database") + bytes(
                (RS,)) + self.eol
        self.pages.append((pager_id, text))
        self.transactions.append(fields)
        return self._msg("211", "Page(s) Sent Successfully") + bytes((ACK,)) + self.eol

    # -- output helpers ----------------------------------------------------------------

    def _msg(self, code: str, text: str) -> bytes:
        """A message-sequence line, or nothing for a non-verbose terminal."""
        if not self.verbose:
            return b""
        return f"{code} {text}".encode("ascii", "replace") + self.eol

    def _close(self, code: str, text: str, *, hang_up: bool = False) -> bytes:
        self.state = TermState.CLOSED
        self._deadline = None
        self.reason = f"{code} {text}".strip() or ("hung up (fault)" if hang_up else "closed")
        line = self._msg(code, text) if code else b""
        return line + b"\x1b\x04" + self.eol

