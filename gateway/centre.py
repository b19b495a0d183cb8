"""Confirmed fires to the monitoring centre: outbox rows of kind ``centre``, sent until the
centre confirms each one.

The engine decides what to report (``CentreReport``: every detector of an incident
once it is confirmed or escalated, and every detector that joins it after) and the
report is journaled in the outbox with the step that caused it. This dispatcher takes
the rows, turns each into a GB/T 26875.3 type-2 fire report (``alerting.centre_report``)
and sends it over the one connection ``alerting.centre_link`` keeps. The centre's 确认
becomes a ``forwarded`` step and clears the row; a report that gets none (the centre
silent, denying, unreachable) is recorded once as ``forward_failed`` and sent again,
oldest first, every ``RETRY_S`` until it is confirmed: a report is delayed by an outage,
never dropped. A crash sends again the rows not yet cleared: at most one duplicate per
crash, which the centre sees as a repeated state.

The line's state is the ``monitoring-centre`` link: ``feed/monitoring-centre`` and,
while it is down, ``trouble/monitoring-centre``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

import structlog

from alerting.centre_link import CentreLink
from alerting.centre_report import FIRE, NORMAL, UplinkSession, fire_report
from drivers.gb26875 import parse_utc_offset
from gateway.config import Site
from gateway.engine import CENTRE_LINK
from gateway.feeds import Submit
from gateway.metrics import Metrics
from gateway.model import NS, CentreReport

log = structlog.get_logger("firegrid.centre")

RETRY_S = 2.0  # between rounds of sending what the centre has not confirmed


class CentreDispatch:
    def __init__(self, site: Site, submit: Submit, metrics: Metrics,
                 done: Callable[[list[int]], None], clock: Callable[[], int] = time.time_ns):
        mc = site.monitoring_centre
        assert mc is not None
        self.submit = submit
        self.metrics = metrics
        self.done = done  # clears outbox rows
        self.clock = clock
        self.offset_s = parse_utc_offset(mc.utc_offset or site.utc_offset)
        address, centre = int(mc.address), int(mc.centre_address)
        self.link = CentreLink(
            mc.host, mc.port,
            lambda: UplinkSession(address, centre, utc_offset_s=self.offset_s,
                                  timeout_s=mc.timeout_s, retries=mc.retries),
            heartbeat_s=mc.heartbeat_s, clock=lambda: self.clock() / NS,
            on_link=self._on_link)
        self.waiting: deque[tuple[int, CentreReport]] = deque()
        self.known: set[int] = set()  # outbox ids queued or being sent
        self.failed: set[int] = set()  # ids whose failure is already a step
        self._more = asyncio.Event()

    def send(self, outbox_id: int, payload: bytes) -> None:
        """Queue one journaled report, unless it is already on its way."""
        if outbox_id in self.known:
            return
        try:
            report = CentreReport.from_json(payload)
        except Exception as exc:  # a row we wrote ourselves; never expected
            log.error("unreadable centre report in the outbox", id=outbox_id,
                      error=str(exc)[:200])
            self.done([outbox_id])
            return
        self.known.add(outbox_id)
        self.waiting.append((outbox_id, report))
        self._more.set()

    async def run(self) -> None:
        link = asyncio.create_task(self.link.run(), name="centre-link")
        try:
            await self._sender()
        finally:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link

    async def _sender(self) -> None:
        while True:
            if not self.waiting:
                self._more.clear()
                await self._more.wait()
                continue
            failures = 0
            held: set[tuple[str, str]] = set()  # (incident, device) with an earlier failure
            for _ in range(len(self.waiting)):  # one round, oldest first
                oid, report = self.waiting.popleft()
                key = (report.incident, report.device)
                # a device's reports keep their order: its "normal" never overtakes its fire
                if key in held or not await self._one(oid, report):
                    self.waiting.append((oid, report))
                    held.add(key)
                    failures += 1
                    if not self.link.up:
                        # the rest would fail the same way; wait for the line, in order
                        self.waiting.rotate(failures)  # the failed ones back in front
                        break
            if failures:
                await asyncio.sleep(RETRY_S)

    async def _one(self, oid: int, report: CentreReport) -> bool:
        obj = fire_report(sys_addr=report.sys_addr, part_type=report.part_type,
                          part_addr=report.part_addr, description=report.description,
                          at_s=report.t_ns / NS, utc_offset_s=self.offset_s,
                          status=FIRE if report.status == "fire" else NORMAL)
        outcome = await self.link.send([obj])
        log.info("centre report", incident=report.incident, device=report.device,
                 ok=outcome.ok, attempts=outcome.attempts, detail=outcome.detail[:120])
        if outcome.ok:
            self.metrics.inc("centre.forwarded")
            self.submit("forwarded", self.clock(),
                        (report, True, outcome.attempts, outcome.detail), True)
            self.done([oid])
            self.known.discard(oid)
            self.failed.discard(oid)
            return True
        self.metrics.inc("centre.failed")
        if oid not in self.failed:  # the first failure is a step; the retries are counted
            self.failed.add(oid)
            self.submit("forwarded", self.clock(),
                        (report, False, outcome.attempts, outcome.detail), True)
        return False

    def _on_link(self, up: bool, detail: str) -> None:
        log.info("monitoring centre " + ("up" if up else "down"), detail=detail)
        self.submit("link", self.clock(), (CENTRE_LINK, up, detail), True)
        if up:
            self._more.set()
