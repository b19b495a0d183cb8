"""Asyncio transport for TAP: carry :class:`alerting.tap.TapClient` over serial or TCP.

The protocol lives in ``alerting.tap``; this module only moves its bytes and keeps its
clock. Why it exists as its own small layer: the paging terminal is at the far end of
a serial cable, a modem line or a TCP socket, each of which drops in its own way, and a
fire page must not hang the gateway or vanish in silence. So every call here

* is bounded by one overall deadline (30 s by default), whatever the terminal does;
* retries a session that failed on the line (hang-up, ``ESC EOT``, silence, NAKs) up to
  ``connect_retries`` more times, with only the pages not yet accepted;
* does not retry a page the terminal refused with RS (sending it again cannot help);
* never raises (except ``asyncio.CancelledError``): the outcome is a
  :class:`alerting.channel.Delivery` with ``ok`` and a ``detail`` a person can read.

A page the terminal accepted but whose ACK was lost with the line is sent again on the
retry: a responder may see it twice, which is better than not at all.

Serial ports are opened with pyserial-asyncio-fast, at 7E1 by default (sheet §1.2: the
spec and most carriers); a local encoder set to 8N1 usually works at 7E1 too (the
frames have the same length, parity is not checked, and TAP data is 7-bit), and
``framing="8N1"`` is there for the ones that do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

import serial
import serial_asyncio_fast

from alerting.channel import Delivery
from alerting.page import Page
from alerting.tap import MAX_INFO, PageResult, TapClient, TapTimers

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 30.0
RETRY_PAUSE_S = 0.5
READ_SIZE = 1024
_CLOSE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class TapTarget:
    """Where the paging terminal is: a serial device, or a TCP host and port.

    ``framing`` is data bits, parity and stop bits as in "7E1" or "8N1" (serial only).
    """

    port: str | None = None
    host: str | None = None
    tcp_port: int | None = None
    baud: int = 9600
    framing: str = "7E1"

    def __post_init__(self) -> None:
        if self.host is not None:
            if self.tcp_port is None or not 0 < self.tcp_port < 65536:
                raise ValueError(f"a TCP TAP target needs a port in 1-65535; got "
                                 f"{self.tcp_port!r}")
        elif not self.port:
            raise ValueError("a TAP target needs a serial port, or a host and a TCP port")
        _parse_framing(self.framing)
        if self.baud <= 0:
            raise ValueError(f"baud must be positive; got {self.baud}")

    def __str__(self) -> str:
        if self.host is not None:
            return f"tcp://{self.host}:{self.tcp_port}"
        return f"{self.port}@{self.baud}/{self.framing}"


def _parse_framing(framing: str) -> tuple[int, str, float]:
    """'7E1' → (7, 'E', 1): bytesize, pyserial parity letter, stop bits."""
    text = framing.strip().upper()
    if len(text) < 3 or not text[0].isdigit():
        raise ValueError(f"framing must look like 7E1 or 8N1; got {framing!r}")
    bits, parity, stop = int(text[0]), text[1], text[2:]
    if bits not in serial.Serial.BYTESIZES or parity not in serial.Serial.PARITIES:
        raise ValueError(f"framing must look like 7E1 or 8N1; got {framing!r}")
    try:
        stopbits = float(stop)
    except ValueError:
        raise ValueError(f"framing must look like 7E1 or 8N1; got {framing!r}") from None
    if stopbits not in serial.Serial.STOPBITS:
        raise ValueError(f"stop bits must be 1, 1.5 or 2; got {framing!r}")
    return bits, parity, stopbits


def target_from(port: str | int | None, host: str | None, tcp_port: int | None = None,
                baud: int = 9600, framing: str = "7E1") -> TapTarget:
    """Build a target from the config's shape: with ``host``, ``port`` is the TCP port."""
    if host is not None:
        number = tcp_port if tcp_port is not None else port
        try:
            number = int(number) if number is not None else None
        except (TypeError, ValueError):
            raise ValueError(f"with host, port must be a TCP port number; got {port!r}") \
                from None
        return TapTarget(host=host, tcp_port=number, baud=baud, framing=framing)
    return TapTarget(port=None if port is None else str(port), baud=baud, framing=framing)


def _is_pty(path: str) -> bool:
    """True for a Unix98 pseudo-terminal slave (/dev/pts/N, or a socat link to one)."""
    try:
        rdev = os.stat(path).st_rdev
    except OSError:
        return False
    return rdev != 0 and 136 <= os.major(rdev) <= 143


async def _open(target: TapTarget) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the TCP connection or the serial port as a pair of asyncio streams.

    The serial port is opened here rather than by ``open_serial_connection`` so that it
    is closed again (and its exclusive lock released) if wrapping it fails; otherwise
    the next retry would find the port locked by our own leaked handle. A pty has no
    framing: Linux refuses parity and 7-bit settings on one (EINVAL on the second
    attempt to set them), so a pty is always opened as 8N1, whatever ``framing`` says.
    """
    loop = asyncio.get_running_loop()
    if target.host is not None:
        return await asyncio.open_connection(target.host, target.tcp_port)
    assert target.port is not None
    bits, parity, stop = (8, "N", 1.0) if _is_pty(target.port) else _parse_framing(
        target.framing)
    port = serial.serial_for_url(target.port, baudrate=target.baud, bytesize=bits,
                                 parity=parity, stopbits=stop, exclusive=True,
                                 timeout=0, write_timeout=0)
    try:
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await serial_asyncio_fast.connection_for_serial(
            loop, lambda: protocol, port)
    except BaseException:
        port.close()
        raise
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _close(writer: asyncio.StreamWriter, end: float) -> None:
    """Close, waiting at most a second (less near the deadline) for the line to let go."""
    writer.close()
    wait = max(0.1, min(_CLOSE_TIMEOUT_S, end - asyncio.get_running_loop().time()))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(wait):
            await writer.wait_closed()


async def _write(writer: asyncio.StreamWriter, data: bytes, end: float) -> None:
    """Write and drain; a line that stops taking bytes (flow control) cannot outlast
    the deadline: TimeoutError."""
    writer.write(data)
    async with asyncio.timeout(max(0.0, end - asyncio.get_running_loop().time())):
        await writer.drain()


async def _run_session(target: TapTarget, client: TapClient, end: float) -> None:
    """One connection: open, drive the client until it is done or ``end``, close.

    Failures of the line become the client's error (via ``connection_lost`` or
    ``abort``), so the caller only ever looks at the client.
    """
    loop = asyncio.get_running_loop()
    try:
        # asyncio.timeout throughout, not wait_for: on 3.11 wait_for drops a cancellation
        # that lands with the result, and a page in flight would outlive the gateway's stop
        async with asyncio.timeout(max(0.0, end - loop.time())):
            reader, writer = await _open(target)
    except TimeoutError:
        client.abort(f"{target}: could not connect before the deadline")
        return
    except Exception as exc:  # OSError, SerialException, termios.error, ValueError, ...
        client.abort(f"{target}: cannot open: {exc}")
        return
    try:
        out = client.start(loop.time())
        while not client.done:
            if out:
                await _write(writer, out, end)
                out = b""
            now = loop.time()
            if now >= end:
                client.abort("deadline passed")
                break
            wake = client.next_deadline
            wait = end - now if wake is None else min(wake, end) - now
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                out = client.tick(loop.time())
                continue
            if not data:
                client.connection_lost(loop.time(), "the terminal closed the line")
                break
            out = client.receive(data, loop.time())
        if out:  # e.g. the logout's EOT CR when ESC EOT came in the same read
            with contextlib.suppress(Exception):
                await _write(writer, out, loop.time() + _CLOSE_TIMEOUT_S)
    except TimeoutError:
        client.abort("deadline passed while writing to the line")
    except (OSError, serial.SerialException) as exc:
        client.connection_lost(loop.time(), f"line error: {exc}")
    finally:
        await _close(writer, end)


async def send_tap_batch(
    target: TapTarget,
    password: str,
    pages: list[tuple[str, Page]],
    *,
    timers: TapTimers | None = None,
    n1: int = 3,
    n2: int = 3,
    n3: int = 3,
    connect_retries: int = 2,
    deadline: float = DEFAULT_DEADLINE_S,
    max_chars: int = MAX_INFO,
    transparency: bool = True,
    retry_pause: float = RETRY_PAUSE_S,
) -> list[Delivery]:
    """Send ``(pager_id, page)`` pairs over one TAP call; one Delivery per page, in order.

    A session that fails on the line is tried again (at most ``connect_retries`` more
    times, ``retry_pause`` apart) with the pages still open; pages refused by RS are
    final. Everything, retries included, ends within ``deadline`` seconds. Never
    raises except CancelledError: bad arguments and bugs become failed Deliveries.
    """
    results = [PageResult(pid, page.text) for pid, page in pages]
    sessions = [0] * len(pages)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        last_error = ""
        for attempt in range(connect_retries + 1):
            todo = [i for i, r in enumerate(results) if not r.accepted and not r.permanent]
            if not todo:
                break
            if attempt:
                pause = min(retry_pause, max(0.0, end - loop.time()))
                await asyncio.sleep(pause)
            if loop.time() >= end:
                last_error = last_error or "deadline passed"
                break
            client = TapClient(password, [(results[i].pager_id, results[i].text) for i in todo],
                               timers, n1, n2, n3, max_chars=max_chars,
                               transparency=transparency)
            await _run_session(target, client, end)
            for i, result in zip(todo, client.results, strict=True):
                sessions[i] += 1
                merged = results[i]
                merged.accepted = result.accepted
                merged.permanent = result.permanent
                merged.attempts += result.attempts
                merged.code = result.code or merged.code
                merged.detail = result.detail
            last_error = client.error or ""
            if client.error:
                log.warning("TAP session to %s failed (try %d of %d): %s", target,
                            attempt + 1, connect_retries + 1, client.error)
        for result in results:
            if not result.accepted and not result.permanent and last_error \
                    and last_error not in result.detail:
                result.detail = f"{result.detail}; {last_error}"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug must not cost the page its Delivery
        log.exception("TAP send to %s failed unexpectedly", target)
        for result in results:
            if not result.accepted:
                result.detail = f"internal error: {exc!r}"
    return [
        Delivery(responder=page.responder, incident=page.incident, channel="tap",
                 ok=result.accepted, detail=_detail(result, tries),
                 attempts=max(1, tries))
        for (_, page), result, tries in zip(pages, results, sessions, strict=True)
    ]


def _detail(result: PageResult, sessions: int) -> str:
    tries = f"{sessions} session{'s' if sessions != 1 else ''}"
    sends = f"{result.attempts} block send{'s' if result.attempts != 1 else ''}"
    return f"{result.detail} ({tries}, {sends})"


async def send_tap(
    port: str | int | None,
    host: str | None,
    tcp_port: int | None,
    baud: int,
    password: str,
    pager_id: str,
    page: Page,
    *,
    timers: TapTimers | None = None,
    connect_retries: int = 2,
    deadline: float = DEFAULT_DEADLINE_S,
    framing: str = "7E1",
    max_chars: int = MAX_INFO,
    n1: int = 3,
    n2: int = 3,
    n3: int = 3,
    retry_pause: float = RETRY_PAUSE_S,
) -> Delivery:
    """Send one page to one pager over TAP; the outcome as a Delivery, never an exception.

    ``port`` is a serial device (``/dev/ttyUSB2``) when ``host`` is None; with ``host``
    the TCP port is ``tcp_port``, or ``port`` when ``tcp_port`` is None (the config's
    ``pager: {host: ..., port: 10001}`` shape). See :func:`send_tap_batch`.
    """
    try:
        target = target_from(port, host, tcp_port, baud, framing)
    except ValueError as exc:
        return Delivery(responder=page.responder, incident=page.incident, channel="tap",
                        ok=False, detail=f"bad TAP target: {exc}", attempts=0)
    deliveries = await send_tap_batch(
        target, password, [(pager_id, page)], timers=timers, n1=n1, n2=n2, n3=n3,
        connect_retries=connect_retries, deadline=deadline, max_chars=max_chars,
        retry_pause=retry_pause)
    return deliveries[0]
