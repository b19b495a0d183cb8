"""Journal → InfluxDB: the audit trail leaves the gateway in order, and only once acknowledged.

Steps are read after a cursor kept in the journal, written in batches with their
journal timestamps (so a re-send after a crash or an outage overwrites the same
points instead of doubling them), and the cursor moves only after InfluxDB answered
204. When InfluxDB is down the steps simply wait; the retry backoff is capped at a
few seconds so the backlog drains soon after the database is back.
"""

from __future__ import annotations

import asyncio
import sqlite3

import structlog

from gateway.influx import InfluxClient, InfluxUnreachable, InfluxWriteError, format_point
from gateway.journal import Journal
from gateway.metrics import Metrics
from gateway.model import Step

log = structlog.get_logger("firegrid.forwarder")

MEASUREMENT = "incident_step"
BATCH = 5000
MAX_BACKOFF_S = 2.0
_INTERNAL_FIELDS = {"counter"}  # journal bookkeeping, not audit data


def step_line(site: str, step: Step) -> str:
    """One line-protocol point for a step (CONTRACT §4); numbers always as floats."""
    tags = step.tags()
    tags["site"] = site
    fields: dict[str, float | str | bool] = {"elapsed_s": step.elapsed_s}
    for key, value in step.fields.items():
        if key in _INTERNAL_FIELDS or value is None:
            continue
        if isinstance(value, bool):
            fields[key] = value
        elif isinstance(value, int | float):
            fields[key] = float(value)  # one type per field, whatever the stage
        else:
            fields[key] = str(value)
    return format_point(MEASUREMENT, tags, fields, step.t_ns)


class Forwarder:
    def __init__(self, journal: Journal, client: InfluxClient, site: str, metrics: Metrics):
        self.journal = journal
        self.client = client
        self.site = site
        self.metrics = metrics
        self.wake = asyncio.Event()
        self.up = True

    def lag(self) -> int:
        """Steps journaled but not yet acknowledged by InfluxDB."""
        return self.journal.last_seq() - self.journal.cursor()

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                sent = await self.flush()
            except (TimeoutError, InfluxUnreachable, OSError, sqlite3.Error) as exc:
                if self.up:
                    log.warning("influxdb down; steps wait in the journal", error=str(exc),
                                lag=self.lag())
                self.up = False
                self.metrics.inc("influx.retries")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if not self.up:
                log.info("influxdb back; backlog drained", lag=self.lag())
            self.up = True
            backoff = 0.2
            if sent == 0:
                self.wake.clear()
                await self.wake.wait()

    async def flush(self) -> int:
        """Send everything waiting: all steps first (alarms first), then signals and health."""
        total = await self._flush_steps()
        total += await self._flush_records()
        return total

    async def _write(self, lines: list[str], what: str, first: int, last: int) -> None:
        try:
            await self.client.write_lines(lines)
        except InfluxWriteError as exc:
            if not exc.permanent:
                raise InfluxUnreachable(str(exc)) from None
            # a batch InfluxDB will never take must not block the trail behind it
            log.error("influxdb refused a batch", what=what, error=str(exc), first_seq=first,
                      last_seq=last)
            self.metrics.inc(f"influx.refused_{what}", len(lines))

    async def _flush_steps(self) -> int:
        total = 0
        while True:
            steps = self.journal.steps_after(self.journal.cursor(), BATCH)
            if not steps:
                return total
            first, last = steps[0].seq, steps[-1].seq
            assert first is not None and last is not None
            await self._write([step_line(self.site, s) for s in steps], "steps", first, last)
            self.journal.set_cursor(last)
            self.metrics.inc("influx.steps", len(steps))
            total += len(steps)

    async def _flush_records(self) -> int:
        total = 0
        while True:
            rows = self.journal.records_after(0, BATCH)
            if not rows:
                return total
            await self._write([line for _, line in rows], "records", rows[0][0], rows[-1][0])
            self.journal.forget_records(rows[-1][0])
            self.metrics.inc("influx.records", len(rows))
            total += len(rows)
            # a new step while records drain goes first
            if self.journal.last_seq() > self.journal.cursor():
                total += await self._flush_steps()
