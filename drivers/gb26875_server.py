"""asyncio transport for the GB/T 26875.3 feed: firegrid listens as the monitoring
centre and user information transmission devices (UITDs) connect to it.

All protocol work is in ``drivers.gb26875``; this module only moves bytes. Every
connection gets its own ``CentreSession``, so a device that sends garbage, stalls or
drops its connection affects nobody else. Reads are bounded (``READ_SIZE``), replies go
out as soon as a read is handled, and idle connections are left open: heartbeats are a
vendor convention, and supervising the device is the gateway's job (``Seen`` events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from drivers.feed import FeedEvent, Garbage
from drivers.gb26875 import CentreSession

log = logging.getLogger(__name__)

READ_SIZE = 4096
TICK_S = 1.0  # how often an idle connection's session is ticked (stalled frames)
MAX_CONNECTIONS = 64


def split_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) → (host, port); an empty host is
    127.0.0.1, so nothing is exposed unless a host is given."""
    host, sep, port_s = listen.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"listen {listen!r}: expected 'host:port'")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_s)


class Gb26875Server:
    """Accepts UITD connections on ``listen`` and hands their events to ``emit``.

    ``link(True, peer)`` is called when a device connects, ``link(False, reason)`` when
    the last connected device has gone. ``clock`` gives unix seconds (time labels of
    the replies, stall detection). ``address`` is the centre's 6-byte address, the
    source of every reply; ``utc_offset_s`` how far ahead of UTC the devices' clocks
    run (28800 for Beijing time), for the time labels read and written.
    """

    def __init__(
        self,
        listen: str,
        emit: Callable[[list[FeedEvent]], None],
        link: Callable[[bool, str], None],
        address: int = 0,
        clock: Callable[[], float] = time.time,
        *,
        max_connections: int = MAX_CONNECTIONS,
        utc_offset_s: int = 0,
    ) -> None:
        self._host, self._port = split_listen(listen)
        CentreSession(address, utc_offset_s=utc_offset_s)  # refuse bad settings now
        self.utc_offset_s = utc_offset_s
        self._emit = emit
        self._link = link
        self.address = address
        self._clock = clock
        self._max = max_connections
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.started = asyncio.Event()

    @property
    def port(self) -> int:
        """The port listened on (the kernel's pick when ``listen`` said port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def run(self) -> None:
        """Serve until cancelled; then close every connection."""
        self._server = await asyncio.start_server(self._accept, self._host, self._port,
                                                  limit=READ_SIZE)
        self.started.set()
        log.info("gb26875 listening on %s:%d", self._host, self.port)
        try:
            await asyncio.Event().wait()
        finally:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            if self._conns:
                await asyncio.gather(*self._conns, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self.started.clear()

    # -- internals

    def _deliver(self, events: list[FeedEvent]) -> None:
        if not events:
            return
        try:
            self._emit(events)
        except Exception:  # the gateway's bug must not cost the device its connection
            log.exception("gb26875 emit failed; %d events lost", len(events))

    def _tell_link(self, up: bool, text: str) -> None:
        try:
            self._link(up, text)
        except Exception:
            log.exception("gb26875 link callback failed")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else "?"
        if len(self._conns) >= self._max:
            log.warning("gb26875: refusing %s, already %d connections", peer, self._max)
            self._deliver([Garbage(f"connection refused: {self._max} already open", peer)])
            writer.transport.abort()
            return
        self._conns[task] = writer
        self._tell_link(True, peer)
        reason = "closed by device"
        try:
            reason = await self._serve(peer, reader, writer)
        except asyncio.CancelledError:
            reason = "server stopped"
            raise
        except OSError as e:  # reset by the peer, ...
            reason = f"connection error: {e}"
        finally:
            del self._conns[task]
            if reason == "closed by device":
                writer.close()
            else:
                writer.transport.abort()
            if not self._conns:
                self._tell_link(False, f"{peer}: {reason}")

    async def _serve(self, peer: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> str:
        session = CentreSession(self.address, utc_offset_s=self.utc_offset_s)
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation
                # that lands with the data, and the session would outlive the gateway's stop
                async with asyncio.timeout(TICK_S):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                events, reply = session.tick(self._clock())
            else:
                if not data:
                    self._deliver(session.close())
                    return "closed by device"
                events, reply = session.receive(data, self._clock())
            if reply:
                writer.write(reply)
            self._deliver(events)
            if reply:
                await writer.drain()
