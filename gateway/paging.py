"""Pages that leave on a pager channel other than MQTT: TAP terminals and SNPP servers.

The engine decides who is paged and on which of the responder's channels; the page is
journaled in the outbox with the step. This dispatcher takes it from the outbox, runs the
channel's client (``alerting.tap_link``, ``alerting.snpp_link``) and reports the outcome
back to the engine as a ``delivery`` input: delivered, or failed so the engine tries the
next channel or moves the escalation on. An outbox row is cleared only once its outcome
is known, so a crash mid-call sends the page again after the restart (at most one
duplicate per crash). SNPP two-way pages are then polled for the responder's reply at
least every ``POLL_S``; a reply becomes an acknowledgement like one over MQTT. Each
such poll is journaled as an outbox row of kind ``poll`` (message tag, pass code, page,
deadline) and cleared when polling ends, so a restarted gateway goes on asking until the
same deadline: a pager reply sent while the gateway was down is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import orjson
import structlog

from alerting.channel import Delivery
from alerting.page import Ack, Page
from alerting.snpp_link import kill_snpp, poll_snpp, send_snpp
from alerting.tap import TapTimers
from alerting.tap_link import send_tap
from gateway.config import Site, SnppPager, TapPager
from gateway.feeds import Submit
from gateway.metrics import Metrics

log = structlog.get_logger("firegrid.paging")

POLL_S = 3.0  # CONTRACT §2: an SNPP two-way pager is polled at least every 5 s
POLL_FOR_S = 3600.0  # stop asking about a page after an hour
MAX_CALLS = 16  # pages being sent at once; the rest wait their turn


class PagerDispatch:
    def __init__(self, site: Site, submit: Submit, metrics: Metrics,
                 sent: Callable[[list[int]], None], clock: Callable[[], int] = time.time_ns,
                 still_waiting: Callable[[str, str], bool] = lambda _i, _r: True,
                 remember: Callable[[str, bytes], int | None] = lambda _t, _p: None,
                 answered: Callable[[str, str], str | None] = lambda _i, _r: None):
        self.site = site
        self.submit = submit
        self.metrics = metrics
        self.sent = sent  # clears outbox rows
        self.clock = clock
        self.still_waiting = still_waiting  # (incident, responder): is an answer still useful?
        # journals a poll as an outbox row (topic, payload) -> its id, None if it cannot
        self.remember = remember
        # (incident, responder) -> the answer the engine already has ("ack"), if any
        self.answered = answered
        self.in_flight: set[int] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._calls = asyncio.Semaphore(MAX_CALLS)

    def send(self, outbox_id: int, payload: bytes) -> None:
        """Start sending one journaled page, unless it is already on its way."""
        if outbox_id in self.in_flight:
            return
        try:
            page = Page.from_json(payload)
        except Exception as exc:  # a row we wrote ourselves; never expected
            log.error("unreadable page in the outbox", id=outbox_id, error=str(exc)[:200])
            self.sent([outbox_id])
            return
        self.in_flight.add(outbox_id)
        self._spawn(self._deliver(outbox_id, page))

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Stop sending and polling. Bounded: a call that ignores its cancellation (a
        ``wait_for`` on 3.11 can swallow one) must not hold up the gateway's stop; its
        outbox row stays, so the page goes again after the restart."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=2.0)

    async def _deliver(self, outbox_id: int, page: Page) -> None:
        try:
            async with self._calls:
                delivery = await self._call(page)
            self.metrics.inc("pages.delivered" if delivery.ok else "pages.failed")
            log.info("page delivery", responder=page.responder, incident=page.incident,
                     channel=delivery.channel, ok=delivery.ok, detail=delivery.detail[:120],
                     attempts=delivery.attempts)
            self.submit("delivery", self.clock(), delivery, True)
            self.sent([outbox_id])
            if delivery.ok and delivery.tag is not None:
                pager = self._pager(page)
                if isinstance(pager, SnppPager):
                    until_ns = self.clock() + round(POLL_FOR_S * 1e9)
                    row = self.remember(f"poll/{page.responder}", orjson.dumps({
                        "tag": list(delivery.tag), "until_ns": until_ns,
                        "page": orjson.loads(page.to_json())}))
                    if row is not None:
                        self.in_flight.add(row)
                    self._spawn(self._poll(pager, delivery.tag, page, until_ns, row))
        finally:
            self.in_flight.discard(outbox_id)

    def resume(self, outbox_id: int, payload: bytes) -> None:
        """Go on polling for a reply journaled before a restart (an outbox ``poll`` row)."""
        if outbox_id in self.in_flight:
            return
        try:
            row = orjson.loads(payload)
            tag = (str(row["tag"][0]), str(row["tag"][1]))
            until_ns = int(row["until_ns"])
            page = Page.from_json(orjson.dumps(row["page"]))
        except Exception as exc:  # a row we wrote ourselves; never expected
            log.error("unreadable poll in the outbox", id=outbox_id, error=str(exc)[:200])
            self.sent([outbox_id])
            return
        pager = self._pager(page)
        if not isinstance(pager, SnppPager):  # the site file changed: nobody to ask
            log.warning("snpp poll dropped: the responder has no such pager now",
                        responder=page.responder, incident=page.incident)
            self.sent([outbox_id])
            return
        self.in_flight.add(outbox_id)
        log.info("snpp poll resumed", responder=page.responder, incident=page.incident,
                 for_s=round(max(0, until_ns - self.clock()) / 1e9, 1))
        self._spawn(self._poll(pager, tag, page, until_ns, outbox_id))

    def _pager(self, page: Page) -> TapPager | SnppPager | None:
        r = self.site.responder(page.responder)
        idx = int(page.extra.get("channel_index", 0))
        if r is None or not 0 <= idx < len(r.channels):
            return None
        pager = r.channels[idx]
        return pager if isinstance(pager, TapPager | SnppPager) else None

    async def _call(self, page: Page) -> Delivery:
        pager = self._pager(page)
        if isinstance(pager, TapPager):
            return await send_tap(
                pager.port, pager.host, None, pager.baud, pager.password, pager.pager_id, page,
                timers=TapTimers(t1=pager.probe_s, t3=pager.answer_s),
                connect_retries=pager.calls - 1, deadline=pager.deadline_s,
                framing=pager.framing, max_chars=pager.max_chars, n1=pager.probes,
                n2=pager.block_retries, n3=pager.logon_retries)
        if isinstance(pager, SnppPager):
            return await send_snpp(pager.host, pager.port, pager.pager_id, page)
        return Delivery(page.responder, page.incident, str(page.extra.get("channel")), False,
                        "no such pager channel in the site file")

    async def _poll(self, pager: SnppPager, tag: tuple[str, str], page: Page, until_ns: int,
                    row: int | None) -> None:
        """Ask the SNPP server for the responder's reply until there is one.

        Ends when the reply is final (decline, on scene), the server no longer knows the
        page, the answer is no longer wanted, or at ``until_ns``; then the journaled row
        is cleared. A cancellation (the gateway stopping) leaves it for the next start.
        """
        # the server keeps answering the latest reply: report each one once, and not one
        # the engine already has from before a restart
        last = self.answered(page.incident, page.responder)
        expired = False
        try:
            while (self.clock() < until_ns
                   and self.still_waiting(page.incident, page.responder)):
                await asyncio.sleep(POLL_S)
                try:
                    status = await poll_snpp(pager.host, pager.port, tag)
                except Exception as exc:  # the client should not raise; a poll is cheap to lose
                    log.warning("snpp poll failed", responder=page.responder,
                                error=str(exc)[:120])
                    continue
                if status == "ack" and self.answered(page.incident, page.responder) == "ack":
                    last = status  # acknowledged meanwhile another way (MQTT): not twice
                if status in ("ack", "decline", "on_scene") and status != last:
                    last = status
                    self.submit("ack", self.clock(),
                                Ack(page.responder, page.incident, status), True)
                    if status != "ack":
                        break
                elif status == "expired":
                    expired = True
                    break
            if not expired:  # nothing more wanted from this page: the carrier may drop it
                outcome = await kill_snpp(pager.host, pager.port, tag)
                log.info("snpp page tag killed", responder=page.responder,
                         incident=page.incident, outcome=outcome)
        except asyncio.CancelledError:
            if row is not None:
                self.in_flight.discard(row)
            raise
        if row is not None:
            self.in_flight.discard(row)
            self.sent([row])
