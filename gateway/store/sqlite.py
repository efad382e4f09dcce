"""`sqlite:///PATH`: the embedded default, safe for several worker processes on one host.

SQLite's API blocks, so it never runs on the event loop. All operations go to one
writer thread through a queue; the thread takes whatever has queued up, runs the whole
batch inside one `BEGIN IMMEDIATE ... COMMIT` and hands the results back to the loop in
one wake-up (group commit). Under load that amortises the commit and the thread hop
over many decisions; unloaded it is one op per transaction.

Atomicity across processes: `BEGIN IMMEDIATE` takes SQLite's write lock before the
read, so a read-modify-write can never interleave with another process's; a process
that finds the lock taken waits up to `busy_timeout`. WAL mode lets readers (the CLI,
the counting thread) proceed meanwhile, and `synchronous=NORMAL` skips the fsync per
commit, which WAL makes safe against corruption (a power cut may lose the last
commits: a few deferral records, never mail).

Slow reads (scan, counts) run on a second, read-only thread so they never hold up the
hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import StoreError
from gateway.policy.records import Record
from gateway.store.base import DynamicEntry, Outcome, Snapshot, Store
from gateway.store.codec import decode, encode, kind_of

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key     TEXT PRIMARY KEY,
    kind    TEXT NOT NULL,
    expires REAL NOT NULL,
    value   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_expires ON records (expires);
CREATE TABLE IF NOT EXISTS entries (
    role    TEXT NOT NULL,
    entry   TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    added   REAL NOT NULL,
    expires REAL,
    PRIMARY KEY (role, entry)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name    TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    expires REAL
) WITHOUT ROWID;
"""
BATCH_MAX = 256
_UPSERT = (
    "INSERT INTO records (key, kind, expires, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, expires = excluded.expires, "
    "value = excluded.value"
)

Op = Callable[[sqlite3.Connection], Any]


class _Worker(threading.Thread):
    """A thread owning one connection; runs queued ops in batched transactions."""

    def __init__(self, path: str, busy_timeout: float, name: str, readonly: bool) -> None:
        super().__init__(name=name, daemon=True)
        self.path = path
        self.busy_timeout = busy_timeout
        self.readonly = readonly
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.ready = threading.Event()
        self.startup_error: BaseException | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        if not self.readonly:
            self._set_up(conn)
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema, retried while another process does the same.

        Switching a new database to WAL needs its exclusive lock, and SQLite answers
        "database is locked" at once, without its busy handler, when another connection
        is opening it at the same moment (two gateways, a gateway and the CLI, a test's
        processes): so the wait busy_timeout promises is done here."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to open() and re-raised there
            self.startup_error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < BATCH_MAX:
                    try:
                        job = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> None:
        writes = any(write for _, write, _, _ in batch)
        results: list[tuple[asyncio.Future, bool, Any]] = []
        try:
            if writes:
                conn.execute("BEGIN IMMEDIATE")
            for op, _, future, _ in batch:
                try:
                    results.append((future, True, op(conn)))
                except sqlite3.Error as exc:
                    results.append((future, False, _store_error(exc, self.path)))
                except Exception as exc:  # a bug in a change function: only its caller fails
                    results.append((future, False, exc))
            if writes:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _store_error(exc, self.path)
            results = [(future, False, error) for _, _, future, _ in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_, _, _, loop), result in zip(batch, results, strict=True):
            by_loop.setdefault(loop, []).append(result)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[asyncio.Future, bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():
            continue  # the caller gave up (client disconnected): the op still happened
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _store_error(exc: sqlite3.Error, path: str) -> StoreError:
    return StoreError(f"sqlite {path}: {exc}")


class SQLiteStore(Store):
    def __init__(
        self, path: str, clock: Callable[[], float] = time.time, busy_timeout: float = 5.0
    ) -> None:
        super().__init__(clock)
        self.path = path
        self.url = f"sqlite://{path}"
        self.busy_timeout = busy_timeout
        self._writer: _Worker | None = None
        self._reader: _Worker | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._problem: str | None = None

    async def open(self) -> None:
        if self._writer is not None:
            return
        directory = Path(self.path).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store.url {self.url}: cannot create {directory}: {exc.strerror}"
            ) from None
        writer = _Worker(self.path, self.busy_timeout, "onajimi-sqlite-writer", readonly=False)
        reader = _Worker(self.path, self.busy_timeout, "onajimi-sqlite-reader", readonly=True)
        for worker in (writer, reader):
            worker.start()
            await asyncio.get_running_loop().run_in_executor(None, worker.ready.wait)
            if worker.startup_error is not None:
                for started in (writer, reader):
                    if started.is_alive():
                        started.jobs.put(None)
                error = worker.startup_error
                raise StoreError(
                    f"store.url {self.url}: cannot open the database: {error}"
                ) from None
        self._writer, self._reader = writer, reader
        with contextlib.suppress(OSError):
            stat = os.stat(self.path)
            self._identity = (stat.st_dev, stat.st_ino)

    async def check(self) -> str | None:
        """Is the file at the path still the one this store has open?

        Deleted or replaced (an operator's `rm`, a restore, a CLI that created a new file
        after a deletion), the open file lives on, unseen by anything else, and is lost
        at the next restart. Switching to the new file in place is not safe: the WAL and
        shared-memory files are found by name and other processes may still use the old
        ones. So the store saves a copy of what it holds next to the path (VACUUM INTO),
        once, and from then on reports the problem, for /healthz and the log.
        """
        if self._problem is not None or self._identity is None:
            return self._problem
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            what = "was deleted"
        except OSError as exc:
            return f"sqlite {self.path}: cannot check the database file: {exc.strerror}"
        else:
            if (stat.st_dev, stat.st_ino) == self._identity:
                return None
            what = "was replaced by another file"
        rescue = f"{self.path}.rescued-{os.getpid()}-{int(time.time())}"
        try:
            await self._run(
                lambda conn: conn.execute("VACUUM INTO ?", (rescue,)), write=False, slow=True
            )
            saved = f"what this gateway knew is saved in {rescue}"
        except StoreError as exc:
            saved = f"saving what this gateway knew failed ({exc})"
        self._problem = (
            f"sqlite {self.path} {what} while in use: this gateway goes on with the old "
            f"file, which nothing else sees; {saved}; restart the gateway (moving the "
            "saved copy into place first keeps it)"
        )
        return self._problem

    async def close(self) -> None:
        for worker in (self._writer, self._reader):
            if worker is not None:
                worker.jobs.put(None)
                await asyncio.get_running_loop().run_in_executor(None, worker.join, 5)
        self._writer = self._reader = None

    async def _run(self, op: Op, *, write: bool, slow: bool = False) -> Any:
        worker = self._reader if slow else self._writer
        if worker is None:
            raise StoreError(f"store {self.url} is not open")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        worker.jobs.put((op, write, future, loop))
        return await future

    # -- records --------------------------------------------------------------------------
    async def get(self, key: str) -> Record | None:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> Record | None:
            row = conn.execute(
                "SELECT value FROM records WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
            return decode(row[0]) if row else None

        return await self._run(op, write=False)

    async def read_many(self, keys: list[str]) -> list[Snapshot]:
        """One trip to the database thread for all of them."""
        now = self.clock()

        def op(conn: sqlite3.Connection) -> list[Snapshot]:
            marks = ", ".join("?" * len(keys))
            found = dict(
                conn.execute(
                    f"SELECT key, value FROM records WHERE key IN ({marks}) AND expires > ?",
                    (*keys, now),
                )
            )
            return [Snapshot(decode(found[key]) if key in found else None) for key in keys]

        return await self._run(op, write=False)

    async def update(
        self,
        key: str,
        change: Callable[[Record | None], Outcome[T]],
        snapshot: Snapshot | None = None,
    ) -> T:
        decided: tuple[Record | None, Outcome[T]] | None = None
        if snapshot is not None:
            outcome = change(snapshot.record)
            if not outcome.write:  # e.g. a familiar host passing: no trip to the thread
                return outcome.value
            decided = (snapshot.record, outcome)
        now = self.clock()

        def op(conn: sqlite3.Connection) -> T:
            row = conn.execute(
                "SELECT value FROM records WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
            current = decode(row[0]) if row else None
            if decided is not None and current == decided[0]:
                outcome = decided[1]  # unchanged since the snapshot: already decided on it
            else:
                outcome = change(current)
            if outcome.write:
                record = outcome.record
                if record is None:
                    conn.execute("DELETE FROM records WHERE key = ?", (key,))
                else:
                    conn.execute(_UPSERT, (key, kind_of(record), record.expires, encode(record)))
            return outcome.value

        return await self._run(op, write=True)

    async def scan(self, prefix: str = "") -> list[tuple[str, Record]]:
        now = self.clock()
        upper = prefix + "\U0010ffff"

        def op(conn: sqlite3.Connection) -> list[tuple[str, Record]]:
            rows = conn.execute(
                "SELECT key, value FROM records WHERE key >= ? AND key < ? AND expires > ? "
                "ORDER BY key",
                (prefix, upper, now),
            ).fetchall()
            return [(key, decode(value)) for key, value in rows]

        return await self._run(op, write=False, slow=True)

    async def counts(self) -> dict[str, int]:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT kind, COUNT(*) FROM records WHERE expires > ? GROUP BY kind", (now,)
            ).fetchall()
            return dict(rows)

        return await self._run(op, write=False, slow=True)

    # -- dynamic list entries -------------------------------------------------------------
    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('generation', '1') ON CONFLICT (name) "
            "DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        )

    async def add_entry(self, role: str, entry: DynamicEntry) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO entries (role, entry, comment, added, expires) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (role, entry) DO UPDATE SET comment = excluded.comment, "
                "added = excluded.added, expires = excluded.expires",
                (role, entry.text, entry.comment, entry.added, entry.expires),
            )
            self._bump(conn)

        await self._run(op, write=True)

    async def remove_entry(self, role: str, text: str) -> bool:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> bool:
            # Not DELETE ... RETURNING: SQLite 3.40 returns wrong values for expressions
            # over a WITHOUT ROWID table there. Inside BEGIN IMMEDIATE this is as atomic.
            row = conn.execute(
                "SELECT expires FROM entries WHERE role = ? AND entry = ?", (role, text)
            ).fetchone()
            conn.execute("DELETE FROM entries WHERE role = ? AND entry = ?", (role, text))
            self._bump(conn)
            return row is not None and (row[0] is None or row[0] > now)

        return await self._run(op, write=True)

    async def entries(self, role: str) -> list[DynamicEntry]:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> list[DynamicEntry]:
            rows = conn.execute(
                "SELECT entry, comment, added, expires FROM entries WHERE role = ? "
                "AND (expires IS NULL OR expires > ?) ORDER BY added, entry",
                (role, now),
            ).fetchall()
            return [DynamicEntry(*row) for row in rows]

        return await self._run(op, write=False)

    async def generation(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
            return int(row[0]) if row else 0

        return await self._run(op, write=False)

    # -- meta -----------------------------------------------------------------------------
    async def set_meta(self, name: str, value: str, ttl: float | None = None) -> None:
        expires = None if ttl is None else self.clock() + ttl

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO meta (name, value, expires) VALUES (?, ?, ?) ON CONFLICT (name) "
                "DO UPDATE SET value = excluded.value, expires = excluded.expires",
                (name, value, expires),
            )

        await self._run(op, write=True)

    async def get_meta(self, name: str) -> str | None:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM meta WHERE name = ? AND (expires IS NULL OR expires > ?)",
                (name, now),
            ).fetchone()
            return row[0] if row else None

        return await self._run(op, write=False)

    async def list_meta(self, prefix: str) -> dict[str, str]:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT name, value FROM meta WHERE name >= ? AND name < ? "
                "AND (expires IS NULL OR expires > ?)",
                (prefix, prefix + "\U0010ffff", now),
            ).fetchall()
            return dict(rows)

        return await self._run(op, write=False, slow=True)

    # -- maintenance ----------------------------------------------------------------------
    async def sweep(self, limit: int = 1000) -> int:
        now = self.clock()

        def op(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM records WHERE key IN "
                "(SELECT key FROM records WHERE expires <= ? LIMIT ?)",
                (now, limit),
            )
            conn.execute("DELETE FROM entries WHERE expires IS NOT NULL AND expires <= ?", (now,))
            conn.execute("DELETE FROM meta WHERE expires IS NOT NULL AND expires <= ?", (now,))
            return cursor.rowcount

        return await self._run(op, write=True)
