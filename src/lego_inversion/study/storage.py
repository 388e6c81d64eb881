"""Answer storage: one interface, SQLite (embedded default, WAL) and PostgreSQL backends.

    from lego_inversion.study.storage import open_storage
    store = open_storage("studies/melted/answers.sqlite", study="melted")    # or "postgresql://user@127.0.0.1/db"
    store.submit("r001", "p00001", slot="a", side="left")   # True: stored; False: already answered (kept)
    store.answers()                                           # every stored Answer

Exactly one answer per (study, rater, item) is guaranteed by the database itself: the primary key
(study, rater, item) plus `INSERT ... ON CONFLICT DO NOTHING`. A double click, a retried request or two app
processes racing each other all end with the first answer stored and the others reported as duplicates.
Every submit is its own committed transaction (SQLite: WAL + synchronous=FULL), so a crash or restart of the
server loses nothing that was acknowledged. When the database cannot be reached, each call retries with a fresh
connection a few times and then raises `StorageUnavailable` (a UserError, so the CLI prints one line; the web
app answers 503); the next call connects afresh, so service resumes as soon as the database is back.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

SCHEMA = """CREATE TABLE IF NOT EXISTS study_answers (
    study TEXT NOT NULL,
    rater TEXT NOT NULL,
    item TEXT NOT NULL,
    slot TEXT NOT NULL CHECK (slot IN ('a', 'b')),
    side TEXT NOT NULL CHECK (side IN ('left', 'right')),
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (study, rater, item)
)"""
ATTEMPTS, RETRY_SLEEP = 3, 0.2  # a failing call tries 3 connections, 0.2 s then 0.4 s apart
INSERT = ("INSERT INTO study_answers (study, rater, item, slot, side, created_at) "
          "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (study, rater, item) DO NOTHING")
SELECT = "SELECT rater, item, slot, side, created_at FROM study_answers WHERE study = {p}"


class StorageUnavailable(UserError):
    """The answer database cannot be reached (down, restarting, file gone); worth retrying later."""


@dataclass(frozen=True)
class Answer:
    rater: str
    item: str
    slot: str  # "a" or "b": the candidate chosen
    side: str  # "left" or "right": where it was shown
    created_at: float = 0.0


class Storage:
    """Interface shared by both backends; subclasses provide `_connect` and the placeholder style."""

    placeholder = "?"

    def __init__(self, url: str, study: str):
        self.url, self.study = url, study
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()
        self._init_schema()

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._all = [c for c in self._all if c is not conn]
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def _execute(self, sql: str, params: tuple = (), fetch: bool = False):
        """Run one statement; a lost or refused connection is dropped and retried, then StorageUnavailable."""
        for attempt in range(ATTEMPTS):
            try:
                cur = self._conn().execute(sql.format(p=self.placeholder), params)
                return cur.fetchall() if fetch else cur.rowcount
            except (*self._retryable, StorageUnavailable) as exc:
                self._drop_conn()
                if attempt == ATTEMPTS - 1:
                    if isinstance(exc, StorageUnavailable):  # connecting failed: its message says why
                        raise
                    raise StorageUnavailable(f"answer storage {self._redacted()}: {_first_line(exc)}; "
                                             "is the database running?") from None
                time.sleep(RETRY_SLEEP * (attempt + 1))

    def submit(self, rater: str, item: str, slot: str, side: str) -> bool:
        """Store one answer; True if it is new, False if (rater, item) already had one (which is kept)."""
        if slot not in ("a", "b") or side not in ("left", "right"):
            raise ValueError(f"bad slot/side {slot!r}/{side!r}")
        return self._execute(INSERT, (self.study, rater, item, slot, side, time.time())) == 1

    def answers(self, rater: str | None = None) -> list[Answer]:
        sql, params = SELECT, (self.study,)
        if rater is not None:
            sql, params = SELECT + " AND rater = {p}", (self.study, rater)
        rows = self._execute(sql + " ORDER BY created_at, rater, item", params, fetch=True)
        return [Answer(*row) for row in rows]

    def count(self) -> int:
        return self._execute("SELECT COUNT(*) FROM study_answers WHERE study = {p}", (self.study,), fetch=True)[0][0]

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def _redacted(self) -> str:
        if "@" in self.url:
            scheme, rest = self.url.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return self.url


class SQLiteStorage(Storage):
    _retryable = (sqlite3.OperationalError,)

    def _connect(self):
        conn = sqlite3.connect(self.url, timeout=30, isolation_level=None)  # autocommit: one txn per statement
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _init_schema(self) -> None:
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.url}: cannot open as an SQLite answer database ({exc}); "
                            "check the path or pass --db with another file") from None


class PostgresStorage(Storage):
    placeholder = "%s"

    def __init__(self, url: str, study: str):
        try:
            import psycopg
        except ImportError:
            raise UserError("PostgreSQL storage needs psycopg: pip install 'psycopg[binary]'") from None
        self._psycopg = psycopg
        self._retryable = (psycopg.OperationalError, psycopg.InterfaceError)
        super().__init__(url, study)

    def _connect(self):
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StorageUnavailable(f"--db {self._redacted()}: cannot connect ({_first_line(exc)}); "
                                     "is PostgreSQL running?") from None

    def _init_schema(self) -> None:
        conn = self._conn()
        with conn.transaction():  # advisory lock: several app processes may start at once
            conn.execute("SELECT pg_advisory_xact_lock(727274)")
            conn.execute(SCHEMA)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_storage(url: str | Path, study: str) -> Storage:
    """`postgresql://...` / `postgres://...` -> PostgresStorage; `sqlite:///path` or a plain path -> SQLite."""
    url = str(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(url, study)
    if "://" in url and not url.startswith("sqlite:///"):
        raise UserError(f"--db {url.split('://')[0]}://...: unsupported; use a file path or postgresql://...")
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else Path(url)
    if not path.parent.is_dir():
        raise UserError(f"--db {path}: folder {path.parent} does not exist")
    return SQLiteStorage(str(path), study)
