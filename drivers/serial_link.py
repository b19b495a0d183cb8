"""Asyncio transport that feeds a serial port's bytes to a sans-IO stream codec.

A fire panel's printer port is a cable that people trip over, a USB adapter that gets
unplugged, a panel that is powered down for maintenance. The feed must notice (so the
gateway can raise ``offline`` for the panel) and come back by itself when the cable
does, without anyone restarting the gateway. :class:`SerialFeed` owns exactly that:
open, read, hand bytes to the codec, report the link, and reopen with backoff. What the
bytes mean is the codec's business (``drivers.panel_printer``), so the same transport
serves any byte-stream protocol.

The port is opened with pyserial-asyncio-fast, so ``port`` is anything pyserial's
``serial_for_url`` opens: ``/dev/ttyUSB0``, a pseudo-terminal such as ``/dev/pts/5``
or a symlink to one, ``socket://host:port`` for a serial server. It is opened
exclusively (``flock``), so a second reader on the same port fails loudly instead of
silently stealing half the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Protocol

import serial
import serial_asyncio_fast

from drivers.feed import FeedEvent, Garbage

log = logging.getLogger(__name__)
PORT_WATCH_S = 0.05  # how often a missing port is looked for during the backoff

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
READ_SIZE = 4096
_CLOSE_TIMEOUT_S = 2.0


class StreamCodec(Protocol):
    """What SerialFeed needs from a codec: bytes in, events out, never raising on input."""

    def feed(self, data: bytes) -> list[FeedEvent]: ...


class SerialFeed:
    """One serial port read forever: events to ``emit``, link state to ``link``.

    ``parser_factory`` builds a fresh codec for every connection, because bytes that
    were in flight when the link broke cannot be completed by bytes after it. If the
    codec has a ``flush()`` method it is called when a connection ends, so a half
    record is reported as Garbage rather than lost in silence.

    ``link(True, port)`` is called when the port opens; ``link(False, reason)`` when an
    open fails or a connection breaks, with a reason that names the port and the error.
    A failure repeating the last reported reason is not reported again, so a panel
    unplugged for a night gives one report, not ten thousand.

    Reopening waits 0.2 s, doubling to 5 s; the wait starts again from 0.2 s after a
    connection that stayed up for at least the longest wait (a port that opens and
    breaks at once, such as a pty whose far end is gone, is not hammered).
    """

    def __init__(
        self,
        port: str,
        baud: int,
        parser_factory: Callable[[], StreamCodec],
        emit: Callable[[list[FeedEvent]], None],
        link: Callable[[bool, str], None],
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        *,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        if bytesize not in serial.Serial.BYTESIZES:
            raise ValueError(f"bytesize must be one of {serial.Serial.BYTESIZES}; got {bytesize}")
        if parity not in serial.Serial.PARITIES:
            raise ValueError(f"parity must be one of {serial.Serial.PARITIES}; got {parity!r}")
        if stopbits not in serial.Serial.STOPBITS:
            raise ValueError(f"stopbits must be one of {serial.Serial.STOPBITS}; got {stopbits}")
        if baud <= 0:
            raise ValueError(f"baud must be positive; got {baud}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        self.port = port
        self.baud = baud
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self._factory = parser_factory
        self._emit = emit
        self._link = link
        self._initial = backoff_initial_s
        self._max = backoff_max_s
        self._up = False
        self._last_down: str | None = None
        self._parser: StreamCodec | None = None

    @property
    def connected(self) -> bool:
        """True while the port is open and being read."""
        return self._up

    async def run(self) -> None:
        """Read until cancelled; never raises anything but CancelledError."""
        loop = asyncio.get_running_loop()
        delay = self._initial
        while True:
            try:
                parser = self._factory()
            except Exception as exc:  # e.g. a dialect not implemented: the feed is down
                self._down(f"{self.port}: codec cannot start: {exc}")
                await self._pause(delay)
                delay = min(delay * 2, self._max)
                continue
            try:
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=self.port, baudrate=self.baud, bytesize=self.bytesize,
                    parity=self.parity, stopbits=self.stopbits, exclusive=True,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(f"{self.port}: cannot open: {exc}")
            else:
                opened = loop.time()
                self._set_up()
                try:
                    reason = await self._pump(reader, parser)
                finally:
                    self._up = False
                    await self._close(writer)
                self._down(reason)
                if loop.time() - opened >= self._max:
                    delay = self._initial
            await self._pause(delay)
            delay = min(delay * 2, self._max)

    async def _pause(self, delay: float) -> None:
        """Wait out the backoff, but return as soon as a missing port appears again.

        A USB adapter plugged back in (or a pseudo-terminal made again) must be read at
        once: a panel's printer port keeps nothing, so every record printed before the
        reopen is lost.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        missing = not os.path.exists(self.port)
        while True:
            left = end - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(PORT_WATCH_S, left))
            if missing and os.path.exists(self.port):
                return

    async def _pump(self, reader: asyncio.StreamReader, parser: StreamCodec) -> str:
        """Feed reads to a fresh codec until the link breaks; return why it broke."""
        self._parser = parser
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    reason = f"{self.port}: port closed (end of input)"
                    break
                self._deliver(data)
        except asyncio.CancelledError:
            self._parser = None  # shutting down: nothing more to report
            raise
        except Exception as exc:
            reason = f"{self.port}: read failed: {exc}"
        self._flush()  # a half record will never be finished: report it
        return reason

    def _new_parser(self) -> StreamCodec | None:
        try:
            return self._factory()
        except Exception:
            log.exception("serial feed %s: codec factory failed", self.port)
            return None

    def _deliver(self, data: bytes) -> None:
        """Decode and emit; a codec or callback bug costs this read, never the feed."""
        parser = self._parser
        if parser is None:
            self._parser = self._new_parser()
            events: list[FeedEvent] = [Garbage("no codec for this read", self.port, len(data))]
        else:
            try:
                events = parser.feed(data)
            except Exception as exc:
                log.exception("serial feed %s: codec raised; starting a fresh one", self.port)
                events = [Garbage(f"codec error: {exc!r}", self.port, len(data))]
                self._parser = self._new_parser()
        self._send(events)

    def _flush(self) -> None:
        flush = getattr(self._parser, "flush", None)
        self._parser = None
        if flush is None:
            return
        try:
            events = flush()
        except Exception:
            log.exception("serial feed %s: codec flush failed", self.port)
            return
        self._send(events)

    def _send(self, events: list[FeedEvent]) -> None:
        if not events:
            return
        try:
            self._emit(events)
        except Exception:
            log.exception("serial feed %s: emit callback failed; %d events lost",
                          self.port, len(events))

    def _set_up(self) -> None:
        self._up = True
        self._last_down = None
        self._report(True, self.port)

    def _down(self, reason: str) -> None:
        if reason == self._last_down:
            return
        self._last_down = reason
        self._report(False, reason)

    def _report(self, up: bool, text: str) -> None:
        if not up:
            log.warning("serial feed down: %s", text)
        else:
            log.info("serial feed up: %s", text)
        try:
            self._link(up, text)
        except Exception:
            log.exception("serial feed %s: link callback failed", self.port)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        """Close the port and wait until pyserial has really released it (bounded)."""
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):  # not wait_for (3.11 drops cancels)
                await writer.wait_closed()
