"""SNPP (RFC 1861) as a sans-IO codec: bytes in, events and bytes out, no sockets.

SNPP is the paging carriers' SMTP-like protocol on TCP port 444: the client sends a
command line, the server answers ``NNN text``. firegrid is the client; the simulator in
``firmware_sim.snpp_server`` is a server built on the same pieces, so both ends agree
on framing by construction. Transports live elsewhere (``alerting.snpp_link``), in the
style of h11: this module never reads a clock or a socket, so every exchange can be
replayed from a transcript in a unit test.

What is here:

* ``ReplyParser``: reply lines → ``Reply(code, text, more)``. Lines end in CRLF or a
  bare LF; ``NNN-`` marks a line that more lines of the same reply follow. A line is
  at most ``MAX_LINE`` (1 KiB) bytes, so a hostile server cannot make the gateway
  buffer without bound; anything that is not a reply raises ``SnppError``.
* ``encode_command`` / ``encode_data`` (with SMTP-style dot-stuffing), and for the
  server side ``parse_command``, ``unstuff_line`` and ``encode_reply``.
* ``SnppClient``: one paging session, optionally two-way (level 3) with
  multiple-choice replies ``01`` ack, ``02`` decline, ``03`` on scene. A server that
  does not do two-way for this pager gets the same page one-way instead: a page that
  arrives without acknowledgement beats a page that never arrives.
* ``MstaPoll``: one ``MSTA <tag> <pass>`` session that reads the responder's reply.

The servers are free to change reply texts (RFC 1861 §4.9), so decisions use codes
only; the text is carried along for the audit trail.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

MAX_LINE = 1024  # bytes in one line, terminator excluded: far above any real reply
MESS_MAX = 250  # bytes of text sent with MESS; longer or multi-line text goes with DATA
DATA_LINE_MAX = 1000  # bytes per DATA line (SMTP's 998 + CRLF, kept below MAX_LINE)
MAX_TEXT = 8192  # bytes of page text; a pager shows 80 characters, so this only trims abuse
MAX_TOKEN = 64  # bytes in a pager id, message tag or pass code
NO_TEXT = "(no text)"  # sent for an empty page: many servers refuse an empty MESS

# The multiple-choice replies offered on a two-way page: (code, text shown, ack status).
MCR_CHOICES: tuple[tuple[str, str, str], ...] = (
    ("01", "Ack", "ack"),
    ("02", "Decline", "decline"),
    ("03", "On scene", "on_scene"),
)
MCR_STATUS = {code: status for code, _, status in MCR_CHOICES}

# MSTA statuses (MstaPoll.status and parse_msta)
WAITING = "waiting"  # 860/861/960: delivered or queued, no reply yet
READ = "read"  # 870: read on the pager, no reply yet
DELIVERED = "delivered"  # 880: delivered, final, and no reply will come
ACK, DECLINE, ON_SCENE = "ack", "decline", "on_scene"
UNKNOWN = "unknown"  # a reply came but does not map to an ack status
EXPIRED = "expired"  # 780: the carrier gave up on the page
UNKNOWN_TAG = "unknown_tag"  # 550: the server does not know the tag (or the pass code)
FAILED = "failed"  # anything else: no status could be read this time
KILLED = "killed"  # KTAG answered 2xx: the server forgot the tag (and a queued page)

# 889 free-text replies a responder may type, normalised (lower case, single spaces)
_TEXT_REPLIES = {
    "ack": ACK, "yes": ACK, "ok": ACK, "okay": ACK, "y": ACK, "1": ACK, "01": ACK,
    "no": DECLINE, "decline": DECLINE, "n": DECLINE, "2": DECLINE, "02": DECLINE,
    "on scene": ON_SCENE, "onscene": ON_SCENE, "3": ON_SCENE, "03": ON_SCENE,
}

_TIMESTAMP = re.compile(r"\d{12}(\d{2})?([+-]\d{1,4})?")  # YYMMDDHHMMSS[±GMT], 4-digit years too
_GMT = re.compile(r"[+-]\d{1,4}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SnppError(ValueError):
    """The bytes are not SNPP, or a value cannot be put on the wire; the message says why.

    The one exception the codec raises, so a transport can catch exactly this and turn
    it into a failed delivery, while a bug elsewhere still surfaces as itself.
    """


def _show(data: bytes | str, limit: int = 60) -> str:
    """A short repr for error messages: the offending line may be 1 KiB of garbage."""
    return repr(data[:limit]) + ("…" if len(data) > limit else "")


# ---------------------------------------------------------------------------- lines


class LineReader:
    """Splits a byte stream into lines at LF (a CR before it is dropped), bounded.

    Both ends use it: the client for replies, the server for commands and DATA lines.
    A line longer than ``limit`` raises ``SnppError`` as soon as it is known to be too
    long, even before its terminator arrives; after that the reader stays broken,
    because where the next line starts is no longer known.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._error: SnppError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the complete lines it finishes, without terminators."""
        if self._error is not None:
            raise self._error
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while (end := self._buf.find(b"\n", start)) >= 0:
            line = bytes(self._buf[start:end])
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.limit:
                self._fail(len(line))
            lines.append(line)
        del self._buf[:start]
        if len(self._buf) > self.limit + 1:  # +1: room for the CR before the LF
            self._fail(len(self._buf))
        return lines

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a line."""
        return len(self._buf)

    def _fail(self, size: int) -> None:
        self._error = SnppError(f"line of {size}+ bytes is over the {self.limit}-byte "
                                f"line length limit")
        self._buf.clear()
        raise self._error


# ---------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply line. ``more`` is True for ``NNN-text``: the reply continues."""

    code: int
    text: str
    more: bool = False

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


def parse_reply(line: bytes) -> Reply:
    """One reply line, terminator removed → Reply; raise SnppError if it is not one."""
    if len(line) < 3 or not all(0x30 <= b <= 0x39 for b in line[:3]):
        raise SnppError(f"not an SNPP reply (no 3-digit code): {_show(line)}")
    sep = line[3:4]
    if sep not in (b"", b" ", b"\t", b"-"):
        raise SnppError(f"not an SNPP reply (code not followed by space or '-'): {_show(line)}")
    text = line[4:].decode("utf-8", "replace").strip()
    return Reply(int(line[:3]), _CONTROL.sub(" ", text), sep == b"-")


class ReplyParser:
    """Bytes from a server → Replies, in order, across arbitrary chunking."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._lines = LineReader(limit)

    def feed(self, data: bytes) -> list[Reply]:
        replies, error = self.feed_until_error(data)
        if error is not None:
            raise error
        return replies

    def feed_until_error(self, data: bytes) -> tuple[list[Reply], SnppError | None]:
        """The replies before the first bad line, and that line's error (or None).

        A good reply must count even when junk follows it in the same read: a page the
        server accepted is accepted, whatever came after.
        """
        replies: list[Reply] = []
        try:
            lines = self._lines.feed(data)
        except SnppError as e:
            return replies, e
        for line in lines:
            try:
                replies.append(parse_reply(line))
            except SnppError as e:
                return replies, e
        return replies, None


def encode_reply(code: int, text: str = "", *, more: bool = False) -> bytes:
    """A reply line as a server sends it (``NNN text`` or ``NNN-text``), CRLF-ended."""
    if not 0 <= code <= 999:
        raise SnppError(f"reply code {code} is not three digits")
    clean = _CONTROL.sub(" ", text.replace("\n", " "))
    line = f"{code:03d}{'-' if more else ' '}{clean}".rstrip().encode("utf-8")
    if len(line) > MAX_LINE:
        raise SnppError(f"reply of {len(line)} bytes is over the {MAX_LINE}-byte line limit")
    return line + b"\r\n"


# ---------------------------------------------------------------------------- commands


def encode_command(verb: str, *args: str) -> bytes:
    """``verb args…`` as one CRLF-ended line; raise SnppError if it cannot be one line.

    A CR or LF inside an argument would start a second command on the server: that is
    refused here, not escaped, because no SNPP argument may contain one.
    """
    line = " ".join((verb, *args))
    if "\r" in line or "\n" in line:
        raise SnppError(f"command {verb} contains a line break: {_show(line)}")
    raw = line.encode("utf-8")
    if len(raw) > MAX_LINE:
        raise SnppError(f"command {verb} of {len(raw)} bytes is over the {MAX_LINE}-byte limit")
    return raw + b"\r\n"


def check_token(value: str, what: str) -> str:
    """A pager id, tag or pass code: 1–64 visible ASCII characters, no spaces.

    These go back on the wire as command arguments, so whatever a server or a config
    file supplies is checked before it is trusted.
    """
    if not 0 < len(value) <= MAX_TOKEN or not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise SnppError(f"{what} must be 1–{MAX_TOKEN} visible ASCII characters: {_show(value)}")
    return value


@dataclass(frozen=True, slots=True)
class Command:
    """A command line as a server reads it: ``verb`` is the first four letters, upper
    case (only those are significant, RFC 1861 §4), ``arg`` the rest of the line."""

    verb: str
    arg: str

    @property
    def args(self) -> list[str]:
        return self.arg.split()


def parse_command(line: bytes) -> Command:
    """One command line (terminator removed) → Command. Never raises: an empty or
    garbled line becomes a verb the server does not know, and gets its 500."""
    parts = line.decode("utf-8", "replace").strip().split(None, 1)
    if not parts:
        return Command("", "")
    return Command(parts[0][:4].upper(), parts[1] if len(parts) > 1 else "")


# ---------------------------------------------------------------------------- text


def clean_text(text: str) -> list[str]:
    """Page text → the lines to send: line breaks normalised, other control characters
    blanked, trailing spaces and empty edge lines dropped, total size bounded."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = _CONTROL.sub(" ", text)
    raw = text.encode("utf-8")
    if len(raw) > MAX_TEXT:
        text = raw[: MAX_TEXT - 3].decode("utf-8", "ignore") + "..."
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines or [NO_TEXT]


def _wrap(line: str, limit: int) -> list[str]:
    """Split one line into pieces of at most ``limit`` UTF-8 bytes, on character
    boundaries, so a long line still fits a server's line buffer."""
    pieces: list[str] = []
    while len(line.encode("utf-8")) > limit:
        cut = line.encode("utf-8")[:limit].decode("utf-8", "ignore")
        pieces.append(cut)
        line = line[len(cut):]
    pieces.append(line)
    return pieces


def stuff_line(line: str) -> str:
    """Dot-stuff one DATA line: a leading '.' is doubled so it cannot end the text."""
    return "." + line if line.startswith(".") else line


def unstuff_line(line: bytes) -> bytes:
    """The server side of ``stuff_line`` (the lone '.' terminator is checked first)."""
    return line[1:] if line.startswith(b"..") else line


def encode_data(lines: list[str]) -> bytes:
    """The DATA body: each line dot-stuffed, CRLF-ended, then the ``.`` terminator."""
    out = bytearray()
    for line in lines:
        for piece in _wrap(line, DATA_LINE_MAX - 1):  # -1: room for a stuffed dot
            out += stuff_line(piece).encode("utf-8") + b"\r\n"
    return bytes(out) + b".\r\n"


def fits_mess(lines: list[str]) -> bool:
    """True if the text can go on one MESS line (the level-1 way, understood by all)."""
    return len(lines) == 1 and len(lines[0].encode("utf-8")) <= MESS_MAX


def flatten(lines: list[str]) -> str:
    """Multi-line text as one MESS line, for a server without DATA: lines joined with
    ' / ' and cut to ``MESS_MAX`` bytes."""
    one = " / ".join(line.strip() for line in lines if line.strip()) or NO_TEXT
    return _wrap(one, MESS_MAX)[0]


# ---------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class Plan:
    """What one session should do: page ``pager_id`` with ``text``; ``two_way`` asks
    for a level-3 transaction with a read acknowledgement and multiple-choice replies."""

    pager_id: str
    text: str
    two_way: bool = True

    def __post_init__(self) -> None:
        check_token(self.pager_id, "pager id")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a session ended.

    ``accepted`` means the server took the page (250, or 8xx/9xx for two-way);
    ``detail`` is the deciding reply or the reason it failed; ``tag`` is
    (message tag, pass code) when the page went two-way and can be polled with MSTA;
    ``fallback`` says why a two-way page went one-way, empty if it did not.
    """

    accepted: bool
    detail: str
    codes: tuple[int, ...]
    two_way: bool = False
    tag: tuple[str, str] | None = None
    fallback: str = ""


@dataclass(slots=True)
class _Step:
    verb: str
    args: tuple[str, ...] = ()
    two_way: bool = False  # part of the two-way preamble: a refusal means fall back

    def encode(self) -> bytes:
        return encode_command(self.verb, *self.args)


@dataclass(slots=True)
class _Session:
    """The bookkeeping both machines share: the reply parser, the codes seen, and what
    the next reply answers."""

    parser: ReplyParser = field(default_factory=ReplyParser)
    codes: list[int] = field(default_factory=list)
    pending: str = "greeting"  # what the next reply answers ("" when nothing is due)
    finished: bool = False


class _Machine:
    """What SnppClient and MstaPoll share: the session, its public state, and
    ``receive``, which parses replies and hands each complete one to ``_on_reply``.
    A subclass says how it ends on a hang-up (``_closed``) and on an error
    (``_abort``)."""

    def __init__(self) -> None:
        self._s = _Session()

    @property
    def finished(self) -> bool:
        return self._s.finished

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(self._s.codes)

    @property
    def waiting_for(self) -> str:
        """What the client is waiting for, for a timeout message: 'the greeting',
        'the reply to PAGE'…"""
        if self._s.pending == "greeting":
            return "the 220 greeting"
        return f"the reply to {self._s.pending}" if self._s.pending else "nothing"

    def receive(self, data: bytes) -> bytes:
        if self._s.finished:
            return b""
        if not data:
            return self._closed(f"server closed the connection while we waited for "
                                f"{self.waiting_for}")
        replies, error = self._s.parser.feed_until_error(data)
        out = bytearray()
        for reply in replies:
            if reply.more:
                continue
            self._s.codes.append(reply.code)
            if not self._s.pending:
                self._abort(f"unexpected reply with no command pending: {reply}")
                raise SnppError(f"unexpected reply with no command pending: {_show(str(reply))}")
            out += self._on_reply(reply)
            if self._s.finished:
                break
        if error is not None and not self._s.finished:
            self._abort(f"protocol error: {error}")
            if not out:
                raise error
            # what the good replies before it called for still goes out; the session is
            # over (finished), so the caller sends it and hangs up
        return bytes(out)

    def _closed(self, detail: str) -> bytes:
        raise NotImplementedError

    def _abort(self, detail: str) -> None:
        raise NotImplementedError

    def _on_reply(self, reply: Reply) -> bytes:
        raise NotImplementedError


class SnppClient(_Machine):
    """One SNPP paging session as a state machine (sans-IO).

    Feed it what the server sends with ``receive(data)``; it returns the bytes to send
    (possibly none). ``receive(b"")`` means the server closed the connection. Once
    ``decided`` is True, ``outcome`` holds the result and only the QUIT courtesy
    remains; ``finished`` says the session is over (the transport may close).

    The session: greeting 220; for a two-way plan ``2WAY``, ``PAGE``, ``ACKR 1``,
    ``RTYP MULTICHOICE`` and one ``MCRE`` per choice; then the text (``MESS`` or
    ``DATA``) and ``SEND``; then ``QUIT``. If the server refuses any step of the
    two-way preamble (5xx or 7xx: not implemented, not two-way capable), the client
    sends ``RESE`` (unless nothing was started) and pages one-way. If ``DATA`` is not
    implemented (a level-1 server), the text goes flattened onto one ``MESS`` line.
    A 4xx reply means the server is closing: the session fails at once.

    ``receive`` raises only SnppError (a reply that is not SNPP, or a line over
    1 KiB); the outcome is then already recorded as failed.
    """

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        self._lines = clean_text(plan.text)
        self._queue: deque[_Step] = deque()
        self._step: _Step | None = None
        self._two_way_started = False
        self._fallback = ""
        self.outcome: Outcome | None = None
        if plan.two_way:
            self._queue.extend(self._two_way_steps())
        else:
            self._queue.extend(self._one_way_steps())

    # -- public state

    @property
    def decided(self) -> bool:
        return self.outcome is not None

    # -- input

    def _closed(self, detail: str) -> bytes:
        self._s.finished = True
        if self.outcome is None:
            self._decide(False, detail)
        return b""

    # -- steps

    def _two_way_steps(self) -> list[_Step]:
        steps = [_Step("2WAY", (), True), _Step("PAGE", (self.plan.pager_id,), True),
                 _Step("ACKR", ("1",), True), _Step("RTYP", ("MULTICHOICE",), True)]
        steps += [_Step("MCRE", (code, text), True) for code, text, _ in MCR_CHOICES]
        return [*steps, self._text_step(), _Step("SEND")]

    def _one_way_steps(self) -> list[_Step]:
        return [_Step("PAGE", (self.plan.pager_id,)), self._text_step(), _Step("SEND")]

    def _text_step(self) -> _Step:
        if fits_mess(self._lines):
            return _Step("MESS", (self._lines[0],))
        return _Step("DATA")

    def _next(self) -> bytes:
        self._step = self._queue.popleft()
        self._s.pending = self._step.verb
        return self._step.encode()

    def _quit(self) -> bytes:
        self._step = None
        self._s.pending = "QUIT"
        return encode_command("QUIT")

    def _decide(self, accepted: bool, detail: str, tag: tuple[str, str] | None = None) -> None:
        self.outcome = Outcome(accepted=accepted, detail=detail, codes=self.codes,
                               two_way=self._two_way_started and not self._fallback,
                               tag=tag, fallback=self._fallback)

    def _abort(self, detail: str) -> None:
        if self.outcome is None:
            self._decide(False, detail)
        self._s.finished = True
        self._s.pending = ""

    def _fail(self, reply: Reply, verb: str) -> bytes:
        """A refusal that ends the page; QUIT politely unless the server is closing."""
        self._decide(False, f"{reply} (to {verb})")
        if reply.code // 100 == 4:
            self._s.finished = True
            self._s.pending = ""
            return b""
        return self._quit()

    def _fall_back(self, reply: Reply, verb: str) -> bytes:
        """Two-way refused: page one-way instead, resetting the transaction if needed."""
        self._fallback = f"{reply} (to {verb})"
        self._queue = deque(self._one_way_steps())
        if verb == "2WAY":  # nothing was started on the server
            return self._next()
        self._step = _Step("RESE")
        self._s.pending = "RESE"
        return self._step.encode()

    # -- replies

    def _on_reply(self, reply: Reply) -> bytes:
        pending, step = self._s.pending, self._step
        first = reply.code // 100
        if pending == "QUIT":
            self._s.finished = True
            self._s.pending = ""
            return b""
        if first == 4:
            return self._fail(reply, pending)
        if pending == "greeting":
            if reply.code == 220:
                return self._next()
            return self._fail(reply, "connect, expected 220")
        assert step is not None
        if step.two_way:
            if step.verb == "2WAY" and first == 2:
                self._two_way_started = True
            if first in (2, 8, 9):  # 250, or 850/950 to PAGE
                return self._next()
            if first in (5, 7) and not self._fallback:
                return self._fall_back(reply, step.verb)
            return self._fail(reply, step.verb)
        if step.verb == "DATA":
            if reply.code == 354:
                self._step = _Step("TEXT")  # its 250 moves on like any other step
                self._s.pending = "the DATA text"
                return encode_data(self._lines)
            if reply.code in (500, 502):  # a level-1 server: put the text on one line
                self._step = _Step("MESS", (flatten(self._lines),))
                self._s.pending = "MESS"
                return self._step.encode()
            return self._fail(reply, pending)
        if step.verb == "SEND":
            return self._on_send(reply)
        if first == 2:  # PAGE, MESS, RESE, end of DATA text
            return self._next()
        return self._fail(reply, pending)

    def _on_send(self, reply: Reply) -> bytes:
        first = reply.code // 100
        if first == 2:
            self._decide(True, str(reply))
        elif first in (8, 9) and self._two_way_started and not self._fallback:
            self._decide(True, str(reply), _parse_tag(reply.text))
        else:
            return self._fail(reply, "SEND")
        return self._quit()


def _parse_tag(text: str) -> tuple[str, str] | None:
    """``<tag> <pass> …`` from a two-way SEND reply; None if the server gave none usable
    (the page is still accepted, it just cannot be polled)."""
    words = text.split()
    if len(words) < 2:
        return None
    try:
        return check_token(words[0], "message tag"), check_token(words[1], "pass code")
    except SnppError:
        return None


# ---------------------------------------------------------------------------- MSTA


def _strip_sequence_and_time(text: str) -> str:
    """The part of an MSTA reply after ``<sequence> <YYMMDDHHMMSS±GMT>``, which servers
    write in slightly different ways (the GMT offset attached or as its own word)."""
    words = text.split()
    if len(words) >= 2 and words[0].isdigit() and _TIMESTAMP.fullmatch(words[1]):
        words = words[2:]
        if words and _GMT.fullmatch(words[0]):
            words = words[1:]
    return " ".join(words)


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[_\-]", " ", text.lower()).split()).strip(" .!")


def parse_msta(reply: Reply) -> str:
    """An MSTA reply → one of the status constants (WAITING, READ, DELIVERED, ACK,
    DECLINE, ON_SCENE, UNKNOWN, EXPIRED, UNKNOWN_TAG, FAILED).

    881 (delivered and read) counts as ACK: a pager without reply keys can only say
    "read", and a responder who read a fire page has been reached. 888 carries the
    multiple-choice code (01/02/03, see MCR_CHOICES); 889 free text, mapped by words
    (yes/ok/ack, no/decline, on scene).
    """
    code = reply.code
    if code in (860, 861) or code // 100 == 9:
        return WAITING
    if code == 870:
        return READ
    if code == 881:
        return ACK
    if code == 888:
        rest = _strip_sequence_and_time(reply.text).split()
        return MCR_STATUS.get(rest[0], UNKNOWN) if rest else UNKNOWN
    if code == 889:
        return _TEXT_REPLIES.get(_normalise(_strip_sequence_and_time(reply.text)), UNKNOWN)
    if code // 10 == 88:
        return DELIVERED
    if code == 780:
        return EXPIRED
    if code == 550:
        return UNKNOWN_TAG
    return FAILED


class MstaPoll(_Machine):
    """One status poll as a state machine: greeting, ``MSTA <tag> <pass>``, ``QUIT``.

    Same conventions as SnppClient: ``receive`` returns bytes to send, ``receive(b"")``
    is the server hanging up, ``decided`` / ``status`` / ``reply`` hold the result,
    and only SnppError is raised.
    """

    verb = "MSTA"

    def __init__(self, tag: str, pass_code: str) -> None:
        super().__init__()
        self.tag = check_token(tag, "message tag")
        self.pass_code = check_token(pass_code, "pass code")
        self.status: str | None = None
        self.reply: Reply | None = None
        self.detail = ""

    @property
    def decided(self) -> bool:
        return self.status is not None

    def _end(self, status: str, detail: str, *, quit_: bool) -> bytes:
        if self.status is None:
            self.status, self.detail = status, detail
        if quit_:
            self._s.pending = "QUIT"
            return encode_command("QUIT")
        self._s.finished = True
        self._s.pending = ""
        return b""

    def _closed(self, detail: str) -> bytes:
        return self._end(FAILED, detail, quit_=False)

    def _abort(self, detail: str) -> None:
        self._end(FAILED, detail, quit_=False)

    def _on_reply(self, reply: Reply) -> bytes:
        pending = self._s.pending
        if pending == "QUIT" or reply.code // 100 == 4:
            return self._end(FAILED, f"{reply} (to {pending})", quit_=False)
        if pending == "greeting":
            if reply.code == 220:
                self._s.pending = self.verb
                return encode_command(self.verb, self.tag, self.pass_code)
            return self._end(FAILED, f"{reply} (to connect, expected 220)", quit_=True)
        # the reply to the command
        self.reply = reply
        return self._end(self._result(reply), str(reply), quit_=True)

    def _result(self, reply: Reply) -> str:
        return parse_msta(reply)


class KtagKill(MstaPoll):
    """``KTAG <tag> <pass>``: the server may forget the page (and not deliver it late).

    A courtesy once the gateway no longer wants an answer (the incident closed, the
    responder declined): a carrier still holding the page for a pager out of range
    would otherwise deliver it after the fact. ``status`` is KILLED on 2xx,
    UNKNOWN_TAG on 550 (already gone), FAILED otherwise.
    """

    verb = "KTAG"

    def _result(self, reply: Reply) -> str:
        if reply.code // 100 == 2:
            return KILLED
        return UNKNOWN_TAG if reply.code == 550 else FAILED
