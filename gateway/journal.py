"""The journal: every step durable on the gateway before anything leaves it.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when ``commit``
returns, so a power cut after a page went out can never lose the step that explains
it. One transaction holds a batch of steps, the outbox rows for the pages and
confirm requests they cause, and device states; the outbox row is deleted only after
the message was handed to the broker, so a crash in between re-sends it (at least
once) instead of losing it. InfluxDB is fed from here in ``seq`` order, with a cursor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.model import DeviceState, Step

SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL,
    stage TEXT NOT NULL,
    t_ns INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_incident ON steps(incident);
CREATE TABLE IF NOT EXISTS open_incidents (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,            -- publish, page, pager, poll, centre
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS records (   -- signals and health: line protocol, sent after steps
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

FINAL_STAGES = ("closed", "dismissed")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    kind: str
    topic: str
    payload: bytes
    retain: bool


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --------------------------------------------------------------- writing

    def commit(self, steps: Iterable[Step], outbox: Iterable[tuple[str, str, bytes, bool]] = (),
               devices: Iterable[DeviceState] = (), records: Iterable[str] = ()
               ) -> list[OutboxItem]:
        """Make a batch durable in one transaction; returns the outbox rows to send."""
        items: list[OutboxItem] = []
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for step in steps:
                cur.execute(
                    "INSERT INTO steps(incident, stage, t_ns, body) VALUES (?,?,?,?)",
                    (step.incident, step.stage, step.t_ns, step.to_json()),
                )
                step.seq = cur.lastrowid
                if step.stage == "detected" and step.fields.get("counter"):
                    cur.execute("INSERT OR IGNORE INTO open_incidents(id) VALUES (?)",
                                (step.incident,))
                    cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('counter', ?)",
                                (str(step.fields["counter"]),))
                elif step.stage in FINAL_STAGES:
                    cur.execute("DELETE FROM open_incidents WHERE id = ?", (step.incident,))
            for kind, topic, payload, retain in outbox:
                cur.execute("INSERT INTO outbox(kind, topic, payload, retain) VALUES (?,?,?,?)",
                            (kind, topic, payload, int(retain)))
                items.append(OutboxItem(cur.lastrowid or 0, kind, topic, payload, retain))
            for ds in devices:
                cur.execute("INSERT OR REPLACE INTO devices(device, body) VALUES (?, ?)",
                            (ds.device, orjson.dumps([ds.state, ds.since_ns, ds.kind,
                                                      list(ds.troubles), ds.detail,
                                                      ds.alarm_ts])))
            cur.executemany("INSERT INTO records(line) VALUES (?)", [(r,) for r in records])
            cur.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite has already rolled back on a full disk
                cur.execute("ROLLBACK")
            raise
        return items

    def sent(self, ids: Iterable[int]) -> None:
        """The broker has these outbox messages; forget them."""
        self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    # --------------------------------------------------------------- reading

    def open_steps(self, finished: int = 0) -> list[Step]:
        """Every step of every incident not yet closed or dismissed, in journal order.

        With ``finished``, also the steps of that many incidents finished most recently
        (as far as pruning left them), so that an answer arriving after a restart for an
        incident closed before it is refused as late, not as unknown.
        """
        rows = self.db.execute(
            "SELECT seq, body FROM steps WHERE incident IN (SELECT id FROM open_incidents)"
            " OR incident IN (SELECT incident FROM steps"
            "  WHERE incident NOT IN (SELECT id FROM open_incidents)"
            "  GROUP BY incident ORDER BY MAX(seq) DESC LIMIT ?)"
            " ORDER BY seq",
            (finished,),
        )
        return [Step.from_json(body, seq) for seq, body in rows]

    def devices(self) -> list[DeviceState]:
        out = []
        for device, body in self.db.execute("SELECT device, body FROM devices"):
            state, since_ns, kind, *rest = orjson.loads(body)  # older rows have 3 fields
            troubles = tuple(rest[0]) if rest else ()
            detail = rest[1] if len(rest) > 1 else ""
            alarm_ts = rest[2] if len(rest) > 2 else None
            out.append(DeviceState(device, state, since_ns, kind, troubles, detail, alarm_ts))
        return out

    def counter(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='counter'").fetchone()
        return int(row[0]) if row else 0

    def pending_outbox(self) -> list[OutboxItem]:
        return [OutboxItem(i, k, t, p, bool(r)) for i, k, t, p, r in self.db.execute(
            "SELECT id, kind, topic, payload, retain FROM outbox ORDER BY id")]

    def steps_after(self, seq: int, limit: int = 5000) -> list[Step]:
        rows = self.db.execute(
            "SELECT seq, body FROM steps WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [Step.from_json(body, s) for s, body in rows]

    def all_steps(self, incident: str | None = None) -> list[Step]:
        if incident is None:
            rows = self.db.execute("SELECT seq, body FROM steps ORDER BY seq")
        else:
            rows = self.db.execute(
                "SELECT seq, body FROM steps WHERE incident = ? ORDER BY seq", (incident,))
        return [Step.from_json(body, s) for s, body in rows]

    def last_seq(self) -> int:
        row = self.db.execute("SELECT MAX(seq) FROM steps").fetchone()
        return int(row[0] or 0)

    def records_after(self, seq: int, limit: int = 5000) -> list[tuple[int, str]]:
        return list(self.db.execute(
            "SELECT seq, line FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)))

    def forget_records(self, upto: int) -> None:
        """InfluxDB has these records: they are not needed for anything else."""
        self.db.execute("DELETE FROM records WHERE seq <= ?", (upto,))

    def pending_records(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(row[0])

    # ------------------------------------------------------- size and pruning

    def used_bytes(self) -> int:
        """Bytes the journal's live pages take (freed pages are reused, not counted)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def prune(self, before_ns: int) -> int:
        """Delete steps already in InfluxDB of finished incidents that began before a time.

        Open incidents keep every step (the engine is rebuilt from them); so does
        anything InfluxDB has not acknowledged. Returns how many steps were deleted.
        """
        cur = self.db.execute(
            "DELETE FROM steps WHERE seq <= ? AND t_ns < ? "
            "AND incident NOT IN (SELECT id FROM open_incidents)",
            (self.cursor(), before_ns))
        return cur.rowcount

    # ------------------------------------------------------------ small notes

    def note(self, key: str) -> str | None:
        """A value the gateway keeps across restarts (e.g. what its session subscribed)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (f"note:{key}",)).fetchone()
        return str(row[0]) if row else None

    def set_note(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                        (f"note:{key}", value))

    # ------------------------------------------------------- forward cursor

    def cursor(self, name: str = "influx") -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?",
                              (f"cursor:{name}",)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, seq: int, name: str = "influx") -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                        (f"cursor:{name}", str(seq)))
