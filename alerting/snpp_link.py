"""asyncio transport for SNPP: moves bytes between a TCP socket and the sans-IO machines
in ``alerting.snpp`` (``SnppClient`` to send a page, ``MstaPoll`` to read a reply).

Both calls are bounded by one deadline for the whole exchange (connect, greeting,
every reply), because a carrier gateway that accepts the connection and then stalls
must not hold a fire page for longer than the escalation policy allows. Neither call
raises for anything the network or the server does: ``send_snpp`` reports it as a
failed ``Delivery`` whose ``detail`` names the reply code and text (or the timeout, or
the socket error), so the gateway can record the step and move to the next channel at
once. Only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from alerting.channel import Delivery
from alerting.page import Page
from alerting.snpp import (
    ACK,
    DECLINE,
    EXPIRED,
    FAILED,
    ON_SCENE,
    UNKNOWN_TAG,
    KtagKill,
    MstaPoll,
    Plan,
    SnppClient,
    SnppError,
)

log = logging.getLogger(__name__)

READ_SIZE = 4096
QUIT_GRACE_S = 1.0  # once the page is decided, how long the QUIT courtesy may take
CLOSE_GRACE_S = 0.5

# MSTA statuses that poll_snpp reports; everything else is "nothing yet" (None)
_POLL_RESULT = {ACK: "ack", DECLINE: "decline", ON_SCENE: "on_scene",
                EXPIRED: "expired", UNKNOWN_TAG: "expired"}


class _Machine(Protocol):
    """What SnppClient and MstaPoll have in common, as far as the transport cares."""

    @property
    def decided(self) -> bool: ...

    @property
    def finished(self) -> bool: ...

    @property
    def waiting_for(self) -> str: ...

    def receive(self, data: bytes) -> bytes: ...


async def _converse(machine: _Machine, host: str, port: int, deadline_s: float) -> str:
    """Run ``machine`` over one TCP connection until it is finished.

    Returns "" when the machine ran to its end (its own result says how it went), or
    why the conversation broke off: no connection, a timeout, a protocol error. Once
    the machine has decided, the remaining QUIT exchange gets at most QUIT_GRACE_S and
    its failure is not reported: the page's fate is already known.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout_at(end) as timer:
            reader, writer = await asyncio.open_connection(host, port)
            grace_set = False
            while not machine.finished:
                if machine.decided and not grace_set:
                    timer.reschedule(min(end, loop.time() + QUIT_GRACE_S))
                    grace_set = True
                data = await reader.read(READ_SIZE)
                out = machine.receive(data)
                if out:
                    writer.write(out)
                    await writer.drain()
        return ""
    except TimeoutError:
        if machine.decided:
            return ""
        if writer is None:
            return f"no connection to {host}:{port} within {deadline_s:g} s"
        return f"no reply within {deadline_s:g} s while waiting for {machine.waiting_for}"
    except SnppError as e:
        return f"protocol error from {host}:{port}: {e}"
    except OSError as e:
        if machine.decided:
            return ""
        what = "cannot connect to" if writer is None else "connection lost to"
        return f"{what} {host}:{port}: {e.strerror or e}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await writer.wait_closed()


async def send_snpp(host: str, port: int, pager_id: str, page: Page, *, two_way: bool = True,
                    deadline_s: float = 15.0) -> Delivery:
    """Send ``page`` to ``pager_id`` through the SNPP server at host:port.

    With ``two_way`` the page asks for a read acknowledgement and offers the replies
    01 Ack, 02 Decline, 03 On scene; if the server takes it as a two-way page the
    Delivery's ``tag`` is (message tag, pass code) for ``poll_snpp``. A server or
    pager that cannot do two-way gets the page one-way (``tag`` None, ``detail`` says
    why). Never raises except CancelledError: every failure is ``ok=False`` with a
    ``detail`` naming the reply code and text, the timeout or the socket error.
    """
    def delivery(ok: bool, detail: str, tag: tuple[str, str] | None = None) -> Delivery:
        return Delivery(responder=page.responder, incident=page.incident, channel="snpp",
                        ok=ok, detail=detail, tag=tag)

    try:
        client = SnppClient(Plan(pager_id=pager_id, text=page.text, two_way=two_way))
    except SnppError as e:
        return delivery(False, f"not sent: {e}")
    try:
        broke_off = await _converse(client, host, port, deadline_s)
    except Exception as e:  # a bug must not stop the alarm path: report, log, go on
        log.exception("snpp: unexpected error paging %s at %s:%s", pager_id, host, port)
        return delivery(False, f"internal error: {e!r}")
    outcome = client.outcome
    if outcome is None:  # timed out or could not connect before anything was decided
        detail = broke_off or "session ended without a result"
        log.warning("snpp: page to %s at %s:%s failed: %s", pager_id, host, port, detail)
        return delivery(False, detail)
    detail = outcome.detail
    if outcome.fallback:
        detail += (f"; sent one-way after {outcome.fallback}" if outcome.accepted
                   else f"; one-way retry after {outcome.fallback}")
    if not outcome.accepted:
        log.warning("snpp: page to %s at %s:%s refused: %s", pager_id, host, port, detail)
    return delivery(outcome.accepted, detail, outcome.tag)


async def _tag_command(machine: type[MstaPoll], host: str, port: int, tag: tuple[str, str],
                       deadline_s: float) -> str | None:
    """One ``MSTA``/``KTAG`` session about ``tag``: its status, or None when it failed
    (logged). Never raises except CancelledError."""
    verb = machine.verb
    try:
        session = machine(*tag)
    except (SnppError, TypeError) as e:
        log.warning("snpp: cannot send %s for tag %r: %s", verb, tag, e)
        return None
    try:
        broke_off = await _converse(session, host, port, deadline_s)
    except Exception:
        log.exception("snpp: unexpected error on %s %s at %s:%s", verb, tag, host, port)
        return None
    if session.status is None:
        log.warning("snpp: %s %s at %s:%s failed: %s", verb, tag[0], host, port,
                    broke_off or "no result")
        return None
    log.debug("snpp: %s %s: %s (%s)", verb, tag[0], session.status, session.detail)
    return session.status


async def poll_snpp(host: str, port: int, tag: tuple[str, str], *,
                    deadline_s: float = 5.0) -> str | None:
    """Ask the SNPP server for the responder's reply to the page with ``tag``.

    Returns "ack", "decline" or "on_scene" once the responder has answered (881,
    delivered and read, counts as "ack"); "expired" when the page expired (780) or the
    server no longer knows the tag (550), so polling it again is pointless; None when
    there is nothing yet, including when the poll itself failed (logged): the caller
    polls again, and its escalation timer, not this call, decides when to give up.
    Never raises except CancelledError.
    """
    status = await _tag_command(MstaPoll, host, port, tag, deadline_s)
    return None if status is None else _POLL_RESULT.get(status)


async def kill_snpp(host: str, port: int, tag: tuple[str, str], *,
                    deadline_s: float = 5.0) -> str:
    """``KTAG`` the page with ``tag``: "killed", "unknown_tag" (already gone) or "failed".

    Never raises except CancelledError; a failed kill is logged and costs nothing but
    a page the carrier may still deliver.
    """
    return await _tag_command(KtagKill, host, port, tag, deadline_s) or FAILED
