"""SQLiteStore: the default conversation store, one WAL database file shared by the processes of one host."""
from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from bot.errors import StoreError
from bot.ownership import ConversationInfo, check_user_id
from bot.conversation import Record, check_id, check_rating, encode, utc_day, with_feedback
from bot.store import HostLock, StoreBackend, StoreBusyError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY, state TEXT NOT NULL, user_id TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, first_seq INTEGER NOT NULL);
    CREATE INDEX conversations_by_update ON conversations(updated_at);
    CREATE TABLE turns (
        conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, turn_id TEXT NOT NULL,
        data TEXT NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (conversation_id, seq)) WITHOUT ROWID;
    CREATE INDEX turns_by_time ON turns(created_at, conversation_id, seq);
    CREATE INDEX turns_by_turn_id ON turns(conversation_id, turn_id);
    CREATE TABLE feedback (
        conversation_id TEXT NOT NULL, turn_id TEXT NOT NULL, rating TEXT NOT NULL,
        comment TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (conversation_id, turn_id)) WITHOUT ROWID;
    CREATE TABLE daily_tokens (day TEXT PRIMARY KEY, tokens INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE locks (
        conversation_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
    """,
    2: """
    CREATE INDEX conversations_by_user ON conversations(user_id, updated_at) WHERE user_id IS NOT NULL;
    """,
}
PAGE = 500  # rows per query when streaming turns


class SQLiteStore(StoreBackend):
    """Conversations in one SQLite file (WAL, synchronous=NORMAL), a connection per thread.

    Cross-process serialisation uses a lock row per conversation, claimed with ``BEGIN IMMEDIATE``
    and leased for ``lock_lease`` seconds; no transaction is held while the caller works inside
    ``open()``. Writers take turns on a ``HostLock``, so all processes must share one host.

    Args:
        path: database file; its directory is created if missing.
        busy_timeout: seconds a statement waits for SQLite's write lock.
        idle_ttl, lock_timeout, lock_lease: see ``StoreBackend``.

    Raises:
        StoreError: the file is corrupt, read-only, locked, or from a newer hybridbot.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0, **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self._tls = threading.local()
        self._conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._conns_mutex = threading.Lock()
        self._inherited: list[sqlite3.Connection] = []  # from a parent process: never used nor closed
        self._pid = os.getpid()
        self._writer = HostLock(self.path.with_name(self.path.name + "-writer.lock"))  # see _write
        self._start()

    # -- connections ------------------------------------------------------------------
    def _start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory {self.path.parent} for the SQLite store: "
                             f"{exc.strerror}. Create it, writable by this user, or set BOT_STORE "
                             "to another path.") from exc
        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: could not switch to WAL mode (got {mode!r}); "
                                 "is the file on a network or read-only filesystem?")
            with self._write(conn):
                self._migrate(conn)
                conn.execute("DELETE FROM locks WHERE expires_at < ?", (time.time(),))
        except sqlite3.Error as exc:
            self.close()
            raise self._startup_error(exc) from exc
        except StoreError:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)  # still one thread per connection; close() may run elsewhere
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # forked (e.g. gunicorn --preload): never reuse the parent's handles
            with self._conns_mutex:
                self._inherited.extend(self._conns.values())
                self._conns = {}
            self._tls, self._pid = threading.local(), os.getpid()
        conn: sqlite3.Connection | None = getattr(self._tls, "conn", None)
        if conn is None:
            conn = self._connect()
            self._tls.conn = conn
            with self._conns_mutex:
                for thread in [t for t in self._conns if not t.is_alive()]:
                    self._conns.pop(thread).close()
                self._conns[threading.current_thread()] = conn
        return conn

    def close(self) -> None:
        """Close every thread's connection; the store reconnects if used again."""
        with self._conns_mutex:
            conns, self._conns = list(self._conns.values()), {}
        self._tls = threading.local()
        for conn in conns:
            conn.close()
        self._writer.close()

    def ping(self) -> None:
        with self._errors():
            self._conn().execute("SELECT 1 FROM meta LIMIT 1").fetchall()

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        # Our writers queue on a HostLock, not in SQLite's busy handler (sleeps of 1, 2, 5 ... 100 ms:
        # p99 340 ms under 20 clients on 2 gunicorn workers); other programs still meet busy_timeout.
        with self._writer.hold():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreBusyError(f"{self.path} stayed locked for more than {self.busy_timeout:g} s") from exc
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}, newer than this hybridbot "
                             f"understands ({SCHEMA_VERSION}); upgrade hybridbot or use another file.")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            log.info("SQLite store %s: migrating schema to version %d", self.path, step)
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        # Written on every start: also proves the file and directory are writable.
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         [("schema_version", str(SCHEMA_VERSION)), ("opened_at", str(time.time()))])

    def _startup_error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        where = f"SQLite store {self.path}"
        if "not a database" in text or "malformed" in text:
            return StoreError(f"{where} is not a valid SQLite database (corrupt, or another kind of file). "
                              "Move it aside (a new one is created on start) or set BOT_STORE to another file.")
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return StoreError(f"{where} cannot be written ({text}). Make the file and its directory "
                              f"{self.path.parent} writable by this user (SQLite also creates {self.path.name}-wal "
                              f"and -shm there, the store -writer.lock) or set BOT_STORE to a writable path.")
        if "locked" in text or "busy" in text:
            return StoreError(f"{where} is locked by another process for more than {self.busy_timeout:g} s. "
                              "Stop whatever holds it (a stuck worker, an open sqlite3 shell transaction) "
                              "and start again.")
        return StoreError(f"{where} cannot be opened: {text}")

    # -- locking and saving -------------------------------------------------------------
    def _acquire_and_load(self, cid: str, deadline: float) -> tuple[str, Record | None, int]:
        """Claim the lock row and read the conversation in the same write transaction."""
        token = uuid.uuid4().hex
        pause = 0.002
        conn = self._conn()
        while True:
            now = time.time()
            loaded = None
            try:
                with self._write(conn):
                    if conn.execute(
                            "INSERT INTO locks (conversation_id, owner, expires_at) VALUES (?, ?, ?) "
                            "ON CONFLICT(conversation_id) DO UPDATE SET owner = excluded.owner, "
                            "expires_at = excluded.expires_at WHERE locks.expires_at < ?",
                            (cid, token, now + self.lock_lease, now)).rowcount:
                        loaded = self._read(conn, cid)
            except sqlite3.OperationalError as exc:  # "locked"/"busy": another writer, try again
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise StoreError(f"SQLite store {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc
            if loaded is not None:
                return token, *loaded
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreBusyError(f"conversation {cid!r} is busy in another process "
                                     f"(waited {self.lock_timeout:g} s)")
            time.sleep(min(pause * random.uniform(0.5, 1.5), remaining))
            pause = min(pause * 2, 0.05)

    def _release(self, cid: str, token: str) -> None:
        with self._errors():
            self._conn().execute("DELETE FROM locks WHERE conversation_id = ? AND owner = ?", (cid, token))

    def _load(self, cid: str) -> tuple[Record | None, int]:
        with self._errors():
            return self._read(self._conn(), cid)

    @staticmethod
    def _read(conn: sqlite3.Connection, cid: str) -> tuple[Record | None, int]:
        row = conn.execute("SELECT state, user_id, created_at, updated_at, first_seq "
                           "FROM conversations WHERE id = ?", (cid,)).fetchone()
        last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM turns WHERE conversation_id = ?",
                                (cid,)).fetchone()[0]
        if row is None:
            return None, last_seq
        return Record(json.loads(row[0]), row[1], row[2], row[3], row[4]), last_seq

    def _save(self, cid: str, token: str, record: Record, turns: list[tuple[dict[str, Any], str]]) -> None:
        state = encode(record.state)  # a value JSON cannot hold fails here, before anything is written
        rows = [(cid, t["seq"], t["turn_id"], data, t["created_at"]) for t, data in turns]
        with self._errors(), self._write(self._conn()) as conn:
            owner = conn.execute("SELECT owner FROM locks WHERE conversation_id = ?", (cid,)).fetchone()
            if owner is None or owner[0] != token:
                raise StoreError(f"conversation {cid!r}: the lock lease ({self.lock_lease:g} s) ran out "
                                 "before saving and another request took over; this turn was not saved")
            conn.execute(
                "INSERT INTO conversations (id, state, user_id, created_at, updated_at, first_seq) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
                "user_id = excluded.user_id, created_at = excluded.created_at, "
                "updated_at = excluded.updated_at, first_seq = excluded.first_seq",
                (cid, state, record.user_id, record.created_at, record.updated_at, record.first_seq))
            conn.executemany("INSERT INTO turns (conversation_id, seq, turn_id, data, created_at) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("DELETE FROM locks WHERE conversation_id = ?", (cid,))

    def _history(self, cid: str, first_seq: int, limit: int | None) -> list[dict[str, Any]]:
        with self._errors():
            rows = self._conn().execute(
                "SELECT data FROM turns WHERE conversation_id = ? AND seq >= ? ORDER BY seq DESC LIMIT ?",
                (cid, first_seq, limit if limit else -1)).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    # -- transcripts, feedback, reports ----------------------------------------------------
    def transcript(self, conversation_id: str, *, limit: int | None = None) -> list[dict[str, Any]] | None:
        cid = check_id(conversation_id)
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN")  # one snapshot for the three reads
            try:
                known = conn.execute("SELECT 1 FROM conversations WHERE id = ? UNION ALL "
                                     "SELECT 1 FROM turns WHERE conversation_id = ? LIMIT 1",
                                     (cid, cid)).fetchone()
                rows = conn.execute("SELECT data FROM turns WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?",
                                    (cid, limit if limit else -1)).fetchall()
                feedback = self._feedback_of(conn, cid)
            finally:
                conn.execute("COMMIT")
        if known is None:
            return None
        return [with_feedback(json.loads(r[0]), feedback) for r in reversed(rows)]

    def _feedback_of(self, conn: sqlite3.Connection, cid: str) -> dict[str, dict[str, Any]]:
        return {row[0]: {"rating": row[1], "comment": row[2], "at": row[3]} for row in conn.execute(
            "SELECT turn_id, rating, comment, at FROM feedback WHERE conversation_id = ?", (cid,))}

    def add_feedback(self, conversation_id: str, turn_id: str, rating: str, comment: str = "") -> bool:
        cid = check_id(conversation_id)
        check_rating(rating)
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                if conn.execute("SELECT 1 FROM turns WHERE conversation_id = ? AND turn_id = ?",
                                (cid, turn_id)).fetchone() is None:
                    return False
                conn.execute("INSERT OR REPLACE INTO feedback (conversation_id, turn_id, rating, comment, at) "
                             "VALUES (?, ?, ?, ?, ?)", (cid, turn_id, rating, comment, time.time()))
        return True

    def iter_turns(self, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every turn oldest first, read in pages so no statement stays open between yields."""
        after: tuple[float, str, int] = (since.timestamp() if since else float("-inf"), "", -1)
        while True:
            with self._errors():
                conn = self._conn()
                rows = conn.execute(
                    "SELECT t.conversation_id, t.seq, t.data, t.created_at, f.rating, f.comment, f.at "
                    "FROM turns t LEFT JOIN feedback f "
                    "ON f.conversation_id = t.conversation_id AND f.turn_id = t.turn_id "
                    "WHERE (t.created_at, t.conversation_id, t.seq) > (?, ?, ?) "
                    "ORDER BY t.created_at, t.conversation_id, t.seq LIMIT ?", (*after, PAGE)).fetchall()
            for cid, seq, data, created_at, rating, comment, at in rows:
                turn = json.loads(data)
                turn["conversation_id"] = cid
                if rating is not None:
                    turn["feedback"] = {"rating": rating, "comment": comment, "at": at}
                yield turn
            if len(rows) < PAGE:
                return
            after = (rows[-1][3], rows[-1][0], rows[-1][1])

    def delete(self, conversation_id: str) -> bool:
        cid = check_id(conversation_id)
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                removed = sum(conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (cid,)).rowcount
                              for table, column in (("conversations", "id"), ("turns", "conversation_id"),
                                                    ("feedback", "conversation_id")))
        return removed > 0

    def purge(self, *, older_than: datetime) -> int:
        cutoff = older_than.timestamp()
        day = datetime.fromtimestamp(cutoff, timezone.utc).date().isoformat()
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                old = "SELECT id FROM conversations WHERE updated_at < ?"
                conn.execute(f"DELETE FROM turns WHERE conversation_id IN ({old})", (cutoff,))
                conn.execute(f"DELETE FROM feedback WHERE conversation_id IN ({old})", (cutoff,))
                count = conn.execute("DELETE FROM conversations WHERE updated_at < ?", (cutoff,)).rowcount
                conn.execute("DELETE FROM daily_tokens WHERE day < ?", (day,))
                conn.execute("DELETE FROM locks WHERE expires_at < ?", (time.time(),))
        return count

    # -- users ------------------------------------------------------------------------------
    def owner_of(self, conversation_id: str) -> str | None:
        return self._first("SELECT user_id FROM conversations WHERE id = ?", check_id(conversation_id))

    def conversations_of(self, user_id: str) -> list[ConversationInfo]:
        uid = check_user_id(user_id)
        with self._errors():
            rows = self._conn().execute(
                "SELECT id, user_id, created_at, updated_at FROM conversations WHERE user_id = ? "
                "ORDER BY updated_at DESC, id DESC", (uid,)).fetchall()
        return [ConversationInfo(*row) for row in rows]

    def delete_user(self, user_id: str) -> int:
        """Every conversation of the user, with turns and feedback, in one transaction."""
        uid = check_user_id(user_id)
        with self._errors():
            conn = self._conn()
            with self._write(conn):
                owned = "SELECT id FROM conversations WHERE user_id = ?"
                conn.execute(f"DELETE FROM turns WHERE conversation_id IN ({owned})", (uid,))
                conn.execute(f"DELETE FROM feedback WHERE conversation_id IN ({owned})", (uid,))
                count = conn.execute("DELETE FROM conversations WHERE user_id = ?", (uid,)).rowcount
        log.info("deleted %d conversation(s) of a user on request", count)
        return count

    def add_tokens_today(self, tokens: int, *, day: str | None = None) -> int:
        return self._count("INSERT INTO daily_tokens (day, tokens) VALUES (?, ?) ON CONFLICT(day) DO UPDATE "
                           "SET tokens = tokens + excluded.tokens RETURNING tokens", utc_day(day), int(tokens))

    def _count(self, upsert: str, *args: Any) -> int:
        """Run a counter's ``INSERT ... RETURNING`` in a write transaction; the new value."""
        with self._errors(), self._write(self._conn()) as conn:
            return int(conn.execute(upsert, args).fetchall()[0][0])

    def _first(self, sql: str, *args: Any) -> Any:
        """The first column of the first row of ``sql``; None without a row."""
        with self._errors():
            row = self._conn().execute(sql, args).fetchone()
        return row[0] if row else None

    def tokens_today(self, *, day: str | None = None) -> int:
        return int(self._first("SELECT tokens FROM daily_tokens WHERE day = ?", utc_day(day)) or 0)

    def reload_generation(self) -> int:
        return int(self._first("SELECT value FROM meta WHERE key = 'reload_generation'") or 0)

    def request_reload(self) -> int:
        return self._count("INSERT INTO meta (key, value) VALUES ('reload_generation', '1') ON CONFLICT(key) "
                           "DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value")

