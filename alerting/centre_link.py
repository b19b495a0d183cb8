"""The TCP connection to a monitoring centre, around ``alerting.centre_report``.

The gateway dials the centre (in the field the centre listens and devices dial it,
fact sheet §1.1) and keeps the connection: heartbeats every ``heartbeat_s`` while
nothing else is sent, resends by the session's timers, and a new connection with a
backoff (0.5 s doubling to 10 s) when it breaks or a heartbeat goes unconfirmed. Each
report waits for its own outcome; a report caught by a broken connection fails, and
whoever sent it decides whether to send it again (the gateway does, until the centre
confirms: ``gateway.centre``).

``on_link(up, detail)`` is called on every change, so the gateway can show the centre as
a trouble while it cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from alerting.centre_report import Outcome, UplinkSession
from drivers.gb26875 import InfoObject

CONNECT_S = 5.0
BACKOFF_S = (0.5, 10.0)
READ = 4096


class CentreLink:
    def __init__(self, host: str, port: int, session: Callable[[], UplinkSession], *,
                 heartbeat_s: float = 30.0, clock: Callable[[], float] = time.time,
                 on_link: Callable[[bool, str], None] = lambda _up, _detail: None):
        self.host, self.port = host, port
        self._new_session = session
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.on_link = on_link
        self.session: UplinkSession | None = None
        self.up = False
        self.detail = "not connected yet"
        self._reported: bool | None = None  # what on_link was last told
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: dict[int, asyncio.Future[Outcome]] = {}
        self._beats: set[int] = set()
        self._connected = asyncio.Event()
        self._last_sent = 0.0
        self._kick = asyncio.Event()

    async def send(self, objects: Sequence[InfoObject], wait_s: float = CONNECT_S) -> Outcome:
        """Report ``objects`` and wait for the centre's 确认 (or for the session to give up).

        Waits up to ``wait_s`` for a connection first; without one the outcome is a
        failure naming why, at once, so the caller's queue does not stall.
        """
        if not self._connected.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._connected.wait()
        if self.session is None or self._writer is None:
            return Outcome(0, False, 0, f"centre not connected: {self.detail}")
        serial, frame = self.session.report(objects, self.clock())
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[serial] = fut
        self._write(frame)
        self._kick.set()  # the serving loop's next deadline changed
        return await fut

    async def run(self) -> None:
        """Connect, serve, reconnect; until cancelled."""
        backoff = BACKOFF_S[0]
        while True:
            try:
                async with asyncio.timeout(CONNECT_S):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
            except (OSError, TimeoutError) as exc:
                self._set(False, f"connect to {self.host}:{self.port}: "
                                 f"{exc or type(exc).__name__}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            backoff = BACKOFF_S[0]
            self.session = self._new_session()
            self._writer = writer
            self._last_sent = self.clock()
            self._connected.set()
            self._set(True, f"connected to {self.host}:{self.port}")
            detail = "connection closed"
            try:
                await self._serve(reader)
            except (OSError, ConnectionError) as exc:
                detail = str(exc) or type(exc).__name__
            finally:
                self._connected.clear()
                self._writer = None
                for outcome in self.session.lost():
                    self._settle(outcome)
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            self._set(False, detail)
            await asyncio.sleep(backoff)

    # -- internals

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        assert self.session is not None
        while True:
            now = self.clock()
            due = [now + self.heartbeat_s - (now - self._last_sent)]
            if (d := self.session.next_deadline()) is not None:
                due.append(d)
            wait = max(0.0, min(min(due) - now, 1.0))
            data: bytes | None = None
            self._kick.clear()
            read = asyncio.ensure_future(reader.read(READ))
            kick = asyncio.ensure_future(self._kick.wait())
            try:
                done, _ = await asyncio.wait({read, kick}, timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                kick.cancel()
            if read in done:
                data = read.result()
                if not data:
                    raise ConnectionError("the centre closed the connection")
            else:
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read
            now = self.clock()
            if data:
                outcomes, out = self.session.receive(data, now)
                self._write(out)
                for o in outcomes:
                    self._settle(o)
            outcomes, out = self.session.tick(now)
            self._write(out)
            for o in outcomes:
                self._settle(o)
            if now - self._last_sent >= self.heartbeat_s and not self.session.waiting:
                serial, frame = self.session.heartbeat(now)
                self._beats.add(serial)
                self._write(frame)

    def _write(self, data: bytes) -> None:
        if data and self._writer is not None:
            self._writer.write(data)
            self._last_sent = self.clock()

    def _settle(self, outcome: Outcome) -> None:
        if outcome.serial in self._beats:
            self._beats.discard(outcome.serial)
            if not outcome.ok and self._writer is not None:
                # a centre that confirms nothing is as good as gone: dial again
                self._writer.close()
            return
        fut = self._waiters.pop(outcome.serial, None)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    def _set(self, up: bool, detail: str) -> None:
        changed = up != self._reported
        self.up, self.detail, self._reported = up, detail, up
        if changed:
            self.on_link(up, detail)
