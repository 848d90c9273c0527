"""Conversation stores: the ConversationStore protocol, the open()/locking logic every backend shares
(StoreBackend), and open_store. The Conversation itself and shared helpers are in bot.conversation."""
from __future__ import annotations

import collections
import fcntl
import importlib
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ContextManager, Iterator, Protocol
from urllib.parse import parse_qs, urlencode

from bot.conversation import Conversation, Record, check_id
from bot.errors import StoreError
from bot.ownership import ConversationInfo, UserData

log = logging.getLogger(__name__)

DEFAULT_IDLE_TTL = 7 * 24 * 3600.0
DEFAULT_LOCK_TIMEOUT = 10.0
DEFAULT_LOCK_LEASE = 60.0


class StoreBusyError(StoreError):
    """Another request holds the conversation's lock for longer than ``lock_timeout``."""


class ConversationStore(Protocol):
    """Where conversations (state + transcript), feedback and daily token counts live.

    ``StoreBackend`` documents each method; every backend derives from it.
    """

    def open(self, conversation_id: str, *, create: bool = True) -> ContextManager[Conversation]: ...
    def exists(self, conversation_id: str) -> bool: ...
    def transcript(self, conversation_id: str, *, limit: int | None = None) -> list[dict[str, Any]] | None: ...
    def add_feedback(self, conversation_id: str, turn_id: str, rating: str, comment: str = "") -> bool: ...
    def iter_turns(self, *, since: datetime | None = None) -> Iterator[dict[str, Any]]: ...
    def delete(self, conversation_id: str) -> bool: ...
    def purge(self, *, older_than: datetime) -> int: ...
    def owner_of(self, conversation_id: str) -> str | None: ...
    def conversations_of(self, user_id: str) -> list[ConversationInfo]: ...
    def export_user(self, user_id: str) -> dict[str, Any]: ...
    def delete_user(self, user_id: str) -> int: ...
    def add_tokens_today(self, tokens: int, *, day: str | None = None) -> int: ...
    def tokens_today(self, *, day: str | None = None) -> int: ...
    def reload_generation(self) -> int: ...
    def request_reload(self) -> int: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


class LocalLocks:
    """First-come-first-served mutexes keyed by conversation id, for the threads of one process.

    The head of each queue is the holder; entries vanish when nobody holds or waits.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queues: dict[str, collections.deque[threading.Event]] = {}

    def acquire(self, key: str, timeout: float) -> bool:
        with self._mutex:
            queue = self._queues.get(key)
            if queue is None:
                granted = threading.Event()
                granted.set()
                self._queues[key] = collections.deque([granted])
                return True
            mine = threading.Event()
            queue.append(mine)
        if mine.wait(max(timeout, 0.0)):
            return True
        with self._mutex:
            if mine.is_set():  # handed over just as we gave up
                return True
            queue.remove(mine)
            return False

    def release(self, key: str) -> None:
        with self._mutex:
            queue = self._queues[key]
            queue.popleft()
            if queue:
                queue[0].set()
            else:
                del self._queues[key]


class HostLock:
    """An exclusive lock for every thread and process of one host: a thread lock, then ``flock``
    on ``path`` (created if missing). The kernel wakes the next waiter at once and drops the
    lock of a process that dies; a forked child starts with its own. Example::

        with lock.hold():
            ...  # one writer at a time on this host
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pid, self._mutex, self._file = os.getpid(), threading.Lock(), None

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self._pid != os.getpid():  # never share a parent's thread lock or file
            self._pid, self._mutex, self._file = os.getpid(), threading.Lock(), None
        with self._mutex:
            if self._file is None:
                try:
                    self._file = open(self.path, "a+b")  # noqa: SIM115 - kept open between holds
                except OSError as exc:
                    raise StoreError(f"cannot open the lock file {self.path}: {exc.strerror}. Make its "
                                     "directory writable by this user.") from exc
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file (between holds); the next ``hold`` opens it again."""
        with self._mutex:
            if self._file is not None:
                self._file.close()
                self._file = None


class StoreBackend(UserData, ABC):
    """``open()`` and the rules every backend shares; subclasses supply storage primitives.

    Locking is two-level: a FIFO lock per id inside the process, then the backend's
    cross-process lock (a lease the backend checks again when it saves).
    """

    def __init__(self, *, idle_ttl: float = DEFAULT_IDLE_TTL, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 lock_lease: float = DEFAULT_LOCK_LEASE) -> None:
        if idle_ttl <= 0 or lock_timeout < 0 or lock_lease <= 0:
            raise ValueError("idle_ttl and lock_lease must be > 0 and lock_timeout >= 0")
        self.idle_ttl = float(idle_ttl)
        self.lock_timeout = float(lock_timeout)
        self.lock_lease = float(lock_lease)
        self._local_locks = LocalLocks()
        self._local_pid = os.getpid()

    @contextmanager
    def open(self, conversation_id: str, *, create: bool = True) -> Iterator[Conversation]:
        """Lock, load and yield a conversation; save it on normal exit, discard on exception.

        Raises:
            StoreBusyError: the lock was not free within ``lock_timeout`` seconds.
            KeyError: ``create`` is False and the id is unknown or idle-expired.
            StoreError: the backend failed (unreachable, lock lease lost before saving).
        """
        cid = check_id(conversation_id)
        deadline = time.monotonic() + self.lock_timeout
        if os.getpid() != self._local_pid:  # forked child: the parent's threads and their locks are gone
            self._local_locks, self._local_pid = LocalLocks(), os.getpid()
        if not self._local_locks.acquire(cid, self.lock_timeout):
            raise StoreBusyError(f"conversation {cid!r} is busy (waited {self.lock_timeout:g} s)")
        try:
            token, record, last_seq = self._acquire_and_load(cid, deadline)
            saved = False
            try:
                conv = self._conversation(cid, record, last_seq, create)
                yield conv
                self._save(cid, token, self._record_of(conv), conv.new_turns())
                saved = True
            finally:
                if not saved:
                    self._release_quietly(cid, token)
        finally:
            self._local_locks.release(cid)

    def _conversation(self, cid: str, record: Record | None, last_seq: int, create: bool) -> Conversation:
        now = time.time()
        # Ownership outlives the session: Redis expires the record but keeps owner:{id}.
        owner = record.user_id if record is not None else (self.owner_of(cid) if last_seq else None)
        if record is not None and self._expired(record, now):
            log.info("conversation %s idle for %.0f s: starting a new session", cid, now - record.updated_at)
            record = None
        if record is None and not create:
            raise KeyError(cid)
        if record is None:
            record = Record(state={}, user_id=owner, created_at=now, updated_at=now, first_seq=last_seq + 1)
            is_new = True
        else:
            is_new = False
        return Conversation(id=cid, state=record.state, created_at=record.created_at,
                            updated_at=record.updated_at, user_id=record.user_id, is_new=is_new,
                            first_seq=record.first_seq, next_seq=last_seq + 1,
                            _load_history=lambda first, limit: self._history(cid, first, limit))

    def _record_of(self, conv: Conversation) -> Record:
        if not isinstance(conv.state, dict):
            raise TypeError(f"conversation state must be a dict, got {type(conv.state).__name__}")
        conv.updated_at = time.time()
        return Record(state=conv.state, user_id=conv.user_id, created_at=conv.created_at,
                      updated_at=conv.updated_at, first_seq=conv.first_seq)

    def _expired(self, record: Record, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) - record.updated_at > self.idle_ttl

    def _release_quietly(self, cid: str, token: Any) -> None:
        try:
            self._release(cid, token)
        except StoreError as exc:
            log.warning("could not release the lock of conversation %s: %s", cid, exc)

    def exists(self, conversation_id: str) -> bool:
        """True if the conversation has live (not idle-expired) state."""
        record, _ = self._load(check_id(conversation_id))
        return record is not None and not self._expired(record)

    def _acquire_and_load(self, cid: str, deadline: float) -> tuple[Any, Record | None, int]:
        """(lock token, record, last turn seq): ``_acquire`` then ``_load``. A backend that can do
        both in one round trip overrides this; on an exception the lock must not be held."""
        token = self._acquire(cid, deadline)
        try:
            record, last_seq = self._load(cid)
        except BaseException:
            self._release_quietly(cid, token)
            raise
        return token, record, last_seq

    def _acquire(self, cid: str, deadline: float) -> Any:
        """Take the cross-process lock before ``deadline`` (monotonic) or raise StoreBusyError.

        The default suits a single process, where the in-process lock is all it takes.
        """
        return None

    def _release(self, cid: str, token: Any) -> None:
        return None

    @abstractmethod
    def _load(self, cid: str) -> tuple[Record | None, int]:
        """The stored record (None if absent) and the last turn seq (0 if none)."""

    @abstractmethod
    def _save(self, cid: str, token: Any, record: Record, turns: list[tuple[dict[str, Any], str]]) -> None:
        """Atomically write record + new turns (each with its JSON) and release the lock, if the
        lease is still ours. Encode the state before writing anything: a value JSON cannot hold
        saves nothing."""

    @abstractmethod
    def _history(self, cid: str, first_seq: int, limit: int | None) -> list[dict[str, Any]]:
        """Saved turns with seq >= first_seq (only the last ``limit``), oldest first."""

    @abstractmethod
    def transcript(self, conversation_id: str, *, limit: int | None = None) -> list[dict[str, Any]] | None:
        """Every turn (or the last ``limit``) oldest first, with ``seq`` and ``feedback`` if voted;
        None for an unknown id. Turns outlive the idle expiry: only ``delete``/``purge`` drop them."""

    @abstractmethod
    def add_feedback(self, conversation_id: str, turn_id: str, rating: str, comment: str = "") -> bool:
        """Record the vote (``up``/``down``) on a turn, replacing an earlier one; False if no such turn."""

    @abstractmethod
    def iter_turns(self, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Turns of all conversations with ``created_at >= since``, oldest first, with ``conversation_id``."""

    @abstractmethod
    def delete(self, conversation_id: str) -> bool:
        """Forget state, transcript and feedback; False if there was nothing."""

    @abstractmethod
    def purge(self, *, older_than: datetime) -> int:
        """Delete conversations last active before ``older_than``; returns how many."""

    @abstractmethod
    def add_tokens_today(self, tokens: int, *, day: str | None = None) -> int:
        """Add to the LLM token counter of ``day`` (YYYY-MM-DD, default today in UTC); the new total."""

    @abstractmethod
    def tokens_today(self, *, day: str | None = None) -> int:
        """The LLM token counter of ``day`` (default today in UTC)."""

    @abstractmethod
    def reload_generation(self) -> int:
        """How many times ``request_reload`` was called on this store, by any process (0 at first)."""

    @abstractmethod
    def request_reload(self) -> int:
        """Ask every process serving from this store to reload the bot; the new generation."""

    def ping(self) -> None:
        """Raise StoreError if the backend cannot be reached."""

    def close(self) -> None:
        """Release connections; the store reconnects if used again."""


def _seconds(params: dict[str, list[str]], name: str) -> dict[str, float]:
    if name not in params:
        return {}
    value = params.pop(name)[-1]
    try:
        return {name: float(value)}
    except ValueError:
        raise StoreError(f"store URL option {name} must be a number of seconds, got {value!r}") from None


def open_store(url: str | None, *, root: Path, **options: Any) -> ConversationStore:
    """Build the store a URL names (the web layer passes ``BOT_STORE``).

    * ``None``/``""``: SQLite at ``root/var/hybridbot.sqlite3``
    * ``memory://``
    * ``sqlite:///abs/path.sqlite3`` or ``sqlite://relative/to/root.sqlite3``
    * ``redis://[:password@]host:port/db?prefix=hybridbot:`` (also ``rediss://``)

    Every scheme accepts ``?idle_ttl=SECONDS&lock_timeout=SECONDS``; keyword ``options``
    (``idle_ttl``, ``lock_timeout``, ``lock_lease``) override the URL.

    Raises:
        StoreError: unknown scheme or option, or the backend cannot start.
    """
    url = (url or "").strip()
    if not url:
        from bot.sqlite_store import SQLiteStore
        return SQLiteStore(Path(root) / "var" / "hybridbot.sqlite3", **options)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(f"store URL {url!r} has no scheme; use memory://, sqlite:///path or redis://host:port/db")
    rest, _, query = rest.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    settings: dict[str, Any] = {**_seconds(params, "idle_ttl"), **_seconds(params, "lock_timeout")}
    scheme = scheme.lower()
    if scheme in ("redis", "rediss"):
        from bot.redis_store import RedisStore
        if "prefix" in params:
            settings["prefix"] = params.pop("prefix")[-1]
        client_url = f"{scheme}://{rest}" + (f"?{urlencode(params, doseq=True)}" if params else "")
        return RedisStore(client_url, **{**settings, **options})
    if params:
        raise StoreError(f"store URL {url!r}: unknown option(s) {', '.join(sorted(params))}")
    if scheme == "memory":
        from bot.memory_store import MemoryStore
        return MemoryStore(**{**settings, **options})
    if scheme == "sqlite":
        if not rest or rest == "/":
            raise StoreError(f"store URL {url!r} names no file; use sqlite:///abs/path or sqlite://relative/path")
        path = Path(rest) if rest.startswith("/") else Path(root) / rest
        from bot.sqlite_store import SQLiteStore
        return SQLiteStore(path, **{**settings, **options})
    raise StoreError(f"unknown store URL scheme {scheme!r} in {url!r}; use memory://, sqlite:// or redis://")


_BACKENDS = {"MemoryStore": "bot.memory_store", "SQLiteStore": "bot.sqlite_store", "RedisStore": "bot.redis_store"}


def __getattr__(name: str) -> Any:
    """``from bot.store import MemoryStore`` (or SQLiteStore, RedisStore), imported on first use."""
    if name in _BACKENDS:
        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
