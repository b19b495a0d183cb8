"""A simulated SNPP (RFC 1861) paging gateway: the carrier end of firegrid's SNPP channel.

It speaks through the same codec as the client, ``alerting.snpp`` (line framing,
reply encoding, dot-stuffing), from the server side. It implements level 1 (PAGE,
MESS, RESE, SEND, QUIT, HELP), level 2's DATA, and the level-3 subset two-way paging
needs: 2WAY, PING, NOQU, EXPT, ACKR, RTYP, MCRE, two-way SEND (``860 <tag> <pass>``),
MSTA and KTAG. Everything else gets ``500 Command Not Implemented``.

Every page sent is recorded in ``pages``. Test hooks stand in for the pager and the
network:

* ``reply(tag, "01")`` — the responder pressed a multiple-choice key: MSTA says 888;
  ``reply_text(tag, "on scene")`` a typed reply (889), ``read(tag)`` a read receipt
  (881), ``expire(tag)`` the carrier gave up (780).
* ``mode``: ``"normal"``; ``"reject"`` (PAGE → 550, a bad pager id); ``"fail"``
  (SEND → 554, a technical failure); ``"hangup"`` (421 to the first command, then
  close); ``"silent"`` (accept the connection and never say anything); ``"level2"``
  (no two-way: 500 to every level-3 command); ``"level1"`` (also 500 to DATA).
  The mode is read at every command, so a test may change it between pages.
* ``offline``: pager ids that are out of range: two-way PAGE answers 950 (queued), or
  750 after NOQU, and two-way SEND answers 960.

Command line::

    python -m firmware_sim.snpp_server --listen 127.0.0.1:4444 [--mode level2]
        [--auto-reply 01 --after 3]

firmware_sim never imports gateway/: the simulated carrier is a separate program.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from alerting.snpp import (
    MAX_LINE,
    MCR_CHOICES,
    LineReader,
    SnppError,
    encode_reply,
    parse_command,
    unstuff_line,
)

log = logging.getLogger(__name__)

MODES = ("normal", "reject", "fail", "hangup", "silent", "level2", "level1")
LEVEL3 = frozenset({"2WAY", "PING", "NOQU", "EXPT", "ACKR", "RTYP", "MCRE", "MSTA", "KTAG"})
REPLY_TYPES = frozenset({"NONE", "YESNO", "SIMREPLY", "MULTICHOICE", "TEXT"})
MAX_MCR = 16  # multiple-choice responses per page before 552
MAX_DATA = 64 * 1024  # bytes of DATA text before the server refuses it (554)
MAX_PAGERS = 16  # PAGE commands per transaction before 552
READ_SIZE = 4096

HELP_LINES = (
    "Level 1: PAGEr MESSage RESEt SEND QUIT HELP",
    "Level 2: DATA",
    "Level 3: 2WAY PING NOQUeue EXPTag ACKRead RTYPe MCREsponse MSTAtus KTAG",
)


@dataclass(slots=True)
class ReceivedPage:
    """A page the simulator accepted with SEND, one per pager id in the transaction."""

    pager_id: str
    text: str
    two_way: bool = False
    tag: tuple[str, str] | None = None
    ack_read: bool = False
    reply_type: str = ""
    responses: dict[str, str] = field(default_factory=dict)
    at: float = 0.0


@dataclass(slots=True)
class _Tag:
    """What MSTA reports for one two-way page."""

    pass_code: str
    code: int  # 860, 861, 880, 881, 888, 889, 960, 780
    text: str = ""  # 888: the response code; 889: the typed text
    changed: float = field(default_factory=time.time)


@dataclass(slots=True)
class _Transaction:
    """What the client has entered since the last SEND or RESE."""

    pagers: list[str] = field(default_factory=list)
    text: str | None = None
    two_way: bool = False
    no_queue: bool = False
    ack_read: bool = False
    reply_type: str = ""
    responses: dict[str, str] = field(default_factory=dict)


class Session:
    """One client connection of the simulated gateway, sans-IO: ``greeting()`` first,
    then ``receive(data) -> bytes`` per read; ``closing`` says the server hangs up
    after sending what ``receive`` returned."""

    def __init__(self, server: SnppServer) -> None:
        self.server = server
        self._lines = LineReader(MAX_LINE)
        self._tx = _Transaction()
        self._data: list[bytes] | None = None  # DATA lines while a DATA text is open
        self._data_size = 0
        self.closing = False

    def greeting(self) -> bytes:
        if self.server.mode == "silent":
            return b""
        return encode_reply(220, "SNPP Gateway Ready (firegrid simulator)")

    def receive(self, data: bytes) -> bytes:
        if self.closing:
            return b""
        if self.server.mode == "silent":
            return b""
        try:
            lines = self._lines.feed(data)
        except SnppError as e:
            self.closing = True
            return encode_reply(421, f"{e}, Goodbye")
        out = bytearray()
        for line in lines:
            out += self._line(line)
            if self.closing:
                break
        return bytes(out)

    # -- dispatch

    def _line(self, line: bytes) -> bytes:
        if self._data is not None:
            return self._data_line(line)
        cmd = parse_command(line)
        mode = self.server.mode
        if mode == "hangup":
            self.closing = True
            return encode_reply(421, "Service not available, closing connection")
        if cmd.verb in LEVEL3 and mode in ("level2", "level1"):
            return encode_reply(500, "Command Not Implemented")
        if cmd.verb == "DATA" and mode == "level1":
            return encode_reply(500, "Command Not Implemented")
        handler = getattr(self, f"_cmd_{cmd.verb.lower()}", None) if cmd.verb.isalnum() else None
        if handler is None:
            return encode_reply(500, "Command Not Implemented")
        return handler(cmd.arg)

    # -- level 1

    def _cmd_page(self, arg: str) -> bytes:
        words = arg.split()
        if not words:
            return encode_reply(550, "Error, Invalid Pager ID")
        if self.server.mode == "reject":
            return encode_reply(550, f"Error, Invalid Pager ID {words[0]}")
        if len(self._tx.pagers) >= MAX_PAGERS:
            return encode_reply(552, "Maximum Entries Exceeded")
        pager = words[0]
        if self._tx.two_way:
            if pager in self.server.offline:
                if self._tx.no_queue:
                    return encode_reply(750, f"{pager} Not Online, Will Not Queue")
                self._tx.pagers.append(pager)
                return encode_reply(950, f"{pager} Not Online, Message Will Be Queued")
            self._tx.pagers.append(pager)
            return encode_reply(850, f"{pager} Online and Accepted")
        self._tx.pagers.append(pager)
        return encode_reply(250, "Pager ID Accepted")

    def _cmd_mess(self, arg: str) -> bytes:
        if self._tx.text is not None:
            return encode_reply(503, "ERROR, Message Already Entered")
        if not arg:
            return encode_reply(550, "ERROR, Invalid Message")
        self._tx.text = arg
        return encode_reply(250, "Message OK")

    def _cmd_rese(self, arg: str) -> bytes:
        self._tx = _Transaction()
        return encode_reply(250, "RESET OK")

    def _cmd_send(self, arg: str) -> bytes:
        tx = self._tx
        if not tx.pagers or tx.text is None:
            return encode_reply(503, "Error, Pager ID or Message Incomplete")
        if self.server.mode == "fail":
            return encode_reply(554, "Error, Technical Failure, Message Not Sent")
        self._tx = _Transaction()
        tag = None
        reply = encode_reply(250, "Message Sent Successfully")
        if tx.two_way:
            queued = any(p in self.server.offline for p in tx.pagers)
            if queued:
                code = 960
            elif tx.ack_read:
                code = 860
            elif tx.responses or tx.reply_type not in ("", "NONE"):
                code = 861
            else:
                code = 880
            tag = self.server.new_tag(code)
            words = {860: "Delivered, Awaiting Read Confirmation",
                     861: "Delivered, Awaiting Reply",
                     880: "Delivered",
                     960: "OK, Message QUEUED for Delivery"}[code]
            reply = encode_reply(code, f"{tag[0]} {tag[1]} {words}")
        for pager in tx.pagers:
            self.server.record(ReceivedPage(
                pager_id=pager, text=tx.text, two_way=tx.two_way, tag=tag,
                ack_read=tx.ack_read, reply_type=tx.reply_type,
                responses=dict(tx.responses), at=time.time()))
        return reply

    def _cmd_quit(self, arg: str) -> bytes:
        self.closing = True
        return encode_reply(221, "OK, Goodbye")

    def _cmd_help(self, arg: str) -> bytes:
        return b"".join(encode_reply(214, line) for line in HELP_LINES) + encode_reply(
            250, "End of Help Information")

    # -- level 2

    def _cmd_data(self, arg: str) -> bytes:
        if self._tx.text is not None:
            return encode_reply(503, "ERROR, Message Already Entered")
        self._data, self._data_size = [], 0
        return encode_reply(354, "Begin Input; End with <CRLF>'.'<CRLF>")

    def _data_line(self, line: bytes) -> bytes:
        assert self._data is not None
        if line == b".":
            lines, self._data = self._data, None
            if self._data_size > MAX_DATA:
                return encode_reply(554, f"Error, Message Over {MAX_DATA} Bytes")
            text = b"\n".join(lines).decode("utf-8", "replace").strip("\n")
            if not text.strip():
                return encode_reply(550, "Error, Blank Message")
            self._tx.text = text
            return encode_reply(250, "Message OK")
        self._data_size += len(line) + 1
        if self._data_size <= MAX_DATA:  # keep reading to the dot, but stop storing
            self._data.append(unstuff_line(line))
        return b""

    # -- level 3

    def _cmd_2way(self, arg: str) -> bytes:
        if self._tx.pagers or self._tx.text is not None:
            return encode_reply(550, "Error, Standard Transaction Already Underway, use RESEt")
        self._tx.two_way = True
        return encode_reply(250, "OK, Beginning 2-Way Transaction")

    def _cmd_ping(self, arg: str) -> bytes:
        words = arg.split()
        if not words or self.server.mode == "reject":
            return encode_reply(550, "Error, Invalid Pager ID")
        if words[0] in self.server.offline:
            return encode_reply(920, f"{words[0]} Not Online, Can Queue")
        return encode_reply(821, f"{words[0]} On System, Location Not Available")

    def _cmd_noqu(self, arg: str) -> bytes:
        if self._tx.pagers:
            return encode_reply(503, "Error, NOQUeue Must Come Before PAGEr")
        self._tx.no_queue = True
        return encode_reply(250, "Message Will Not Be Queued")

    def _cmd_expt(self, arg: str) -> bytes:
        if not arg.strip().isdigit():
            return encode_reply(550, "Error, Invalid Expiry")
        return encode_reply(250, "Message Expiration Accepted")

    def _cmd_ackr(self, arg: str) -> bytes:
        if arg.strip() not in ("0", "1"):
            return encode_reply(550, "Error, Invalid Read Acknowledgement Parameter")
        self._tx.ack_read = arg.strip() == "1"
        return encode_reply(250, "Read Acknowledgement Setting Accepted")

    def _cmd_rtyp(self, arg: str) -> bytes:
        kind = arg.strip().upper()
        if kind not in REPLY_TYPES:
            return encode_reply(550, "Error, Illegal Reply Type")
        if self._tx.reply_type:
            return encode_reply(503, "Error, Reply Type Already Set")
        self._tx.reply_type = kind
        return encode_reply(250, "Reply Type Accepted")

    def _cmd_mcre(self, arg: str) -> bytes:
        code, _, text = arg.partition(" ")
        if not self._tx.two_way:
            return encode_reply(550, "MCResponses Not Enabled")
        if len(code) != 2 or not code.isdigit() or not text.strip():
            return encode_reply(550, "Error, Invalid MCResponse")
        if code in self._tx.responses:
            return encode_reply(502, "Error, Would Duplicate Previously Entered MCResponse")
        if len(self._tx.responses) >= MAX_MCR:
            return encode_reply(552, "Error, Too Many MCResponses")
        self._tx.responses[code] = text.strip()
        return encode_reply(250, "Response Added to Transaction")

    def _cmd_msta(self, arg: str) -> bytes:
        state = self.server.lookup(arg.split())
        if state is None:
            return encode_reply(550, "Error, Invalid Message Tag or Pass Code")
        stamp = time.strftime("%y%m%d%H%M%S", time.gmtime(state.changed)) + "+0"
        words = {860: "Delivered, Awaiting Read Confirmation", 861: "Delivered, Awaiting Reply",
                 880: "Delivered", 881: "Delivered and Read", 888: state.text,
                 889: state.text, 960: "Queued, Not Yet Delivered", 780: "Message Expired"}
        return encode_reply(state.code, f"{next(self.server.sequence):05d} {stamp} "
                                        f"{words.get(state.code, '')}")

    def _cmd_ktag(self, arg: str) -> bytes:
        words = arg.split()
        if self.server.lookup(words) is None:
            return encode_reply(550, "Error, Invalid Message Tag or Pass Code")
        self.server.tags.pop(words[0], None)
        return encode_reply(250, "Message Tag Killed")


class SnppServer:
    """The simulated gateway on ``host:port`` (port 0: the kernel picks one; read
    ``port`` after ``start``). Use ``async with SnppServer() as server:``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, mode: str = "normal",
                 idle_timeout_s: float = 60.0, auto_reply: str = "",
                 auto_reply_after_s: float = 0.0) -> None:
        self.host = host
        self.port = port
        self.mode = mode
        self.idle_timeout_s = idle_timeout_s
        self.auto_reply = auto_reply
        self.auto_reply_after_s = auto_reply_after_s
        self.pages: list[ReceivedPage] = []
        self.tags: dict[str, _Tag] = {}
        self.offline: set[str] = set()
        self.sequence = itertools.count(1)
        self._tag_numbers = itertools.count(321)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._page_event = asyncio.Event()
        self.print_pages = False

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {value!r}")
        self._mode = value

    # -- test hooks

    def reply(self, tag: str | tuple[str, str], code: str) -> None:
        """The responder chose multiple-choice reply ``code`` ("01", "02", "03"…)."""
        self._set(tag, 888, f"{code} {dict((c, t) for c, t, _ in MCR_CHOICES).get(code, '')}")

    def reply_text(self, tag: str | tuple[str, str], text: str) -> None:
        """The responder typed ``text`` as the reply (889)."""
        self._set(tag, 889, text)

    def read(self, tag: str | tuple[str, str]) -> None:
        """The pager reported the page read (881)."""
        self._set(tag, 881, "")

    def expire(self, tag: str | tuple[str, str]) -> None:
        """The carrier gave up delivering the page (780)."""
        self._set(tag, 780, "")

    def _set(self, tag: str | tuple[str, str], code: int, text: str) -> None:
        key = tag if isinstance(tag, str) else tag[0]
        state = self.tags[key]  # KeyError: a test asked about a tag it was never given
        state.code, state.text, state.changed = code, text.strip(), time.time()

    async def wait_for_pages(self, count: int, timeout_s: float = 5.0) -> list[ReceivedPage]:
        """Wait until at least ``count`` pages were recorded; TimeoutError otherwise."""
        async with asyncio.timeout(timeout_s):
            while len(self.pages) < count:
                self._page_event.clear()
                await self._page_event.wait()
        return self.pages

    # -- used by sessions

    def new_tag(self, code: int) -> tuple[str, str]:
        tag = f"{next(self._tag_numbers):05d}"
        pass_code = f"{secrets.randbelow(10000):04d}"
        self.tags[tag] = _Tag(pass_code, code)
        if self.auto_reply and code != 960:
            loop = asyncio.get_running_loop()
            loop.call_later(self.auto_reply_after_s, self._auto, tag)
        return tag, pass_code

    def _auto(self, tag: str) -> None:
        if tag in self.tags:
            self.reply(tag, self.auto_reply)
            log.info("auto-reply %s to tag %s", self.auto_reply, tag)

    def lookup(self, words: list[str]) -> _Tag | None:
        if len(words) != 2:
            return None
        state = self.tags.get(words[0])
        if state is None or not secrets.compare_digest(state.pass_code.encode(),
                                                        words[1].encode()):
            return None
        return state

    def record(self, page: ReceivedPage) -> None:
        self.pages.append(page)
        self._page_event.set()
        if self.print_pages:  # the command line: one JSON line per page, for other programs
            print(json.dumps({"pager_id": page.pager_id, "text": page.text,
                              "two_way": page.two_way,
                              "tag": list(page.tag) if page.tag else None},
                             ensure_ascii=False), flush=True)
        log.info("page to %s%s: %r", page.pager_id,
                 f" (two-way, tag {page.tag[0]} {page.tag[1]})" if page.tag else "", page.text)

    # -- lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and drop every connection (idempotent)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> SnppServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        session = Session(self)
        try:
            writer.write(session.greeting())
            await writer.drain()
            while not session.closing:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    if self.mode != "silent":
                        writer.write(encode_reply(421, "Timeout, Goodbye"))
                    break
                if not data:
                    break
                out = session.receive(data)
                if out:
                    writer.write(out)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# ------------------------------------------------------------------ command line


def _split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


async def _serve(args: argparse.Namespace) -> int:
    host, port = args.listen
    server = SnppServer(host, port, mode=args.mode, idle_timeout_s=args.idle_timeout,
                        auto_reply=args.auto_reply, auto_reply_after_s=args.after)
    server.print_pages = True
    await server.start()
    print(f"SNPP simulator on {host}:{server.port}, mode {server.mode}; Ctrl-C to stop",
          file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m firmware_sim.snpp_server``."""
    p = argparse.ArgumentParser(prog="python -m firmware_sim.snpp_server",
                                description="Simulated SNPP (RFC 1861) paging gateway.")
    p.add_argument("--listen", type=_split_hostport, default=("127.0.0.1", 4444),
                   metavar="HOST:PORT", help="where to listen (default 127.0.0.1:4444)")
    p.add_argument("--mode", choices=MODES, default="normal")
    p.add_argument("--auto-reply", default="", metavar="CODE",
                   help="answer every two-way page with this multiple-choice code (01 ack, "
                        "02 decline, 03 on scene)")
    p.add_argument("--after", type=float, default=3.0, metavar="SECONDS",
                   help="delay before the auto-reply (default 3)")
    p.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"snpp_server: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
