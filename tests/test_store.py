"""Conversation stores: the same behaviour from MemoryStore, SQLiteStore and RedisStore."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bot.errors import StoreError
from bot.memory_store import MemoryStore
from bot.redis_store import RedisStore
from bot.sqlite_store import SQLiteStore
from bot.conversation import Conversation
from bot.store import HostLock, LocalLocks, StoreBackend, StoreBusyError, open_store

REDIS_URL = "redis://127.0.0.1:6379/13"
BACKENDS = ["memory", "sqlite", "redis"]
SHARED_BACKENDS = ["sqlite", "redis"]  # several store objects (processes, instances) share the data


def turn(turn_id: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"turn_id": turn_id, "text_in": text, "replies": [{"text": "ok"}], "route": {"kind": "rule"},
            "latency_ms": 3, **extra}


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[..., StoreBackend]]:
    """make_store(kind, **options): a fresh store; stores of one kind in one test share their data."""
    made: list[StoreBackend] = []
    prefix = f"hbtest:{uuid.uuid4().hex}:"

    def make(kind: str, **options: Any) -> StoreBackend:
        store: StoreBackend
        if kind == "memory":
            store = MemoryStore(**options)
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / "store.sqlite3", **options)
        else:
            store = RedisStore(REDIS_URL, prefix=prefix, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    cleaner = RedisStore(REDIS_URL, prefix=prefix)
    cleaner.clear()
    cleaner.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, make_store: Callable[..., StoreBackend]) -> StoreBackend:
    return make_store(request.param)


def leftovers(store: StoreBackend) -> list[Any]:
    """Conversation data a backend still holds (token counters excepted)."""
    if isinstance(store, MemoryStore):
        return list(store._convs)
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        rows = [(t, conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in ("conversations", "turns", "feedback", "locks")]
        conn.close()
        return [r for r in rows if r[1]]
    assert isinstance(store, RedisStore)
    return [k for k in store._r.scan_iter(match=f"{store.prefix}*") if b":tokens:" not in k]


def test_state_and_turns_are_saved_on_exit_and_reloaded(store: StoreBackend) -> None:
    with store.open("c1") as conv:
        assert conv.is_new and conv.state == {} and conv.user_id is None
        conv.state["flow_stack"] = [{"flow": "price", "slots": {"car_model": "model_x3"}}]
        conv.user_id = "visitor-7"
        conv.add_turn(turn("t1", "price of the x3"))
    assert store.exists("c1")
    with store.open("c1") as conv:
        assert not conv.is_new
        assert conv.state == {"flow_stack": [{"flow": "price", "slots": {"car_model": "model_x3"}}]}
        assert conv.user_id == "visitor-7"
        assert [t["text_in"] for t in conv.history()] == ["price of the x3"]
        assert conv.updated_at >= conv.created_at


def test_exception_inside_open_saves_nothing_and_releases_the_lock(store: StoreBackend) -> None:
    with store.open("c1") as conv:
        conv.state["n"] = 1
    with pytest.raises(RuntimeError, match="boom"):
        with store.open("c1") as conv:
            conv.state["n"] = 2
            conv.add_turn(turn("t1"))
            raise RuntimeError("boom")
    with store.open("c1", create=False) as conv:  # would time out if the lock were still held
        assert conv.state == {"n": 1}
        assert conv.history() == []
    assert store.transcript("c1") == []


def test_unknown_id_with_create_false_raises_key_error_and_creates_nothing(store: StoreBackend) -> None:
    with pytest.raises(KeyError):
        with store.open("nope", create=False):
            pass
    assert not store.exists("nope")
    assert store.transcript("nope") is None


def test_state_that_is_not_json_is_refused_and_nothing_is_saved(store: StoreBackend) -> None:
    with pytest.raises(TypeError):
        with store.open("c1") as conv:
            conv.state["when"] = object()
    assert not store.exists("c1")
    with store.open("c1") as conv:
        with pytest.raises(ValueError, match="turn_id"):
            conv.add_turn({"text_in": "no id"})
        conv.add_turn(turn("t1"))
        with pytest.raises(ValueError, match="already added"):
            conv.add_turn(turn("t1"))
        with pytest.raises(TypeError):
            conv.add_turn(turn("t2", extra={1, 2}))
    assert [t["turn_id"] for t in store.transcript("c1") or []] == ["t1"]


def test_transcript_keeps_every_turn_in_seq_order(store: StoreBackend) -> None:
    for n in range(3):
        with store.open("c1") as conv:
            conv.add_turn(turn(f"a{n}", f"message {n}"))
            conv.add_turn(turn(f"b{n}", f"follow-up {n}", tokens={"prompt": 10, "completion": n}))
    transcript = store.transcript("c1")
    assert transcript is not None
    assert [t["seq"] for t in transcript] == [1, 2, 3, 4, 5, 6]
    assert [t["turn_id"] for t in transcript] == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert transcript[5]["tokens"] == {"prompt": 10, "completion": 2}
    assert transcript[0]["replies"] == [{"text": "ok"}] and transcript[0]["route"] == {"kind": "rule"}
    assert [t["turn_id"] for t in store.transcript("c1", limit=2) or []] == ["a2", "b2"]
    assert store.transcript("other") is None


def test_created_at_defaults_to_now_and_accepts_datetimes(store: StoreBackend) -> None:
    before = time.time()
    moment = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    with store.open("c1") as conv:
        conv.add_turn(turn("t1"))
        conv.add_turn(turn("t2", created_at=moment))
        conv.add_turn(turn("t3", created_at="2026-03-01T12:00:05+00:00"))
    first, second, third = store.transcript("c1") or []
    assert first["created_at"] >= before
    assert second["created_at"] == moment.timestamp()
    assert third["created_at"] == moment.timestamp() + 5


def test_history_covers_saved_and_new_turns_with_a_limit(store: StoreBackend) -> None:
    with store.open("c1") as conv:
        for n in range(4):
            conv.add_turn(turn(f"t{n}"))
    with store.open("c1") as conv:
        conv.add_turn(turn("t4"))
        assert [t["turn_id"] for t in conv.history()] == ["t0", "t1", "t2", "t3", "t4"]
        assert [t["turn_id"] for t in conv.history(limit=2)] == ["t3", "t4"]
        assert [t["seq"] for t in conv.history(limit=3)] == [3, 4, 5]
        assert conv.history(limit=0) == []


def test_feedback_is_one_vote_per_turn_and_needs_a_real_turn(store: StoreBackend) -> None:
    with store.open("c1") as conv:
        conv.add_turn(turn("t1"))
        conv.add_turn(turn("t2"))
    assert store.add_feedback("c1", "t2", "down", "wrong price")
    assert store.add_feedback("c1", "t2", "up")  # changed their mind: replaces the vote
    assert not store.add_feedback("c1", "missing", "up")
    assert not store.add_feedback("unknown", "t1", "up")
    with pytest.raises(ValueError, match="rating"):
        store.add_feedback("c1", "t1", "meh")
    t1, t2 = store.transcript("c1") or []
    assert "feedback" not in t1
    assert t2["feedback"]["rating"] == "up" and t2["feedback"]["comment"] == ""
    assert t2["feedback"]["at"] >= t2["created_at"]


def test_iter_turns_lists_all_conversations_oldest_first(store: StoreBackend) -> None:
    base = float(int(time.time()) - 100)  # whole seconds: datetimes keep only microseconds
    with store.open("b") as conv:
        conv.add_turn(turn("b1", created_at=base + 1))
        conv.add_turn(turn("b2", created_at=base + 3))
    with store.open("a") as conv:
        conv.add_turn(turn("a1", created_at=base + 2))
    store.add_feedback("b", "b2", "down")
    turns = list(store.iter_turns())
    assert [(t["conversation_id"], t["turn_id"]) for t in turns] == [("b", "b1"), ("a", "a1"), ("b", "b2")]
    assert turns[2]["feedback"]["rating"] == "down"
    since = datetime.fromtimestamp(base + 2, timezone.utc)
    assert [t["turn_id"] for t in store.iter_turns(since=since)] == ["a1", "b2"]


def test_delete_removes_state_transcript_and_feedback(store: StoreBackend) -> None:
    with store.open("c1") as conv:
        conv.add_turn(turn("t1"))
    store.add_feedback("c1", "t1", "up")
    with store.open("c2") as conv:
        conv.add_turn(turn("t1"))
    assert store.delete("c1")
    assert not store.delete("c1")
    assert not store.exists("c1") and store.transcript("c1") is None
    assert store.transcript("c2") is not None
    with store.open("c1") as conv:  # a deleted id starts from scratch
        assert conv.is_new and conv.history() == []
        conv.add_turn(turn("t9"))
    assert [t["seq"] for t in store.transcript("c1") or []] == [1]


def test_purge_removes_conversations_idle_before_the_cutoff_and_leaves_nothing(store: StoreBackend) -> None:
    with store.open("old") as conv:
        conv.add_turn(turn("t1"))
    store.add_feedback("old", "t1", "down")
    time.sleep(0.02)
    cutoff = datetime.now(timezone.utc)
    time.sleep(0.02)
    with store.open("new") as conv:
        conv.add_turn(turn("t1"))
    assert store.purge(older_than=cutoff) == 1
    assert store.transcript("old") is None and not store.exists("old")
    assert store.transcript("new") is not None
    assert store.purge(older_than=datetime.now(timezone.utc) + timedelta(days=1)) == 1
    assert list(store.iter_turns()) == []
    assert leftovers(store) == []


@pytest.mark.parametrize("kind", BACKENDS)
def test_idle_conversation_starts_a_new_session_but_keeps_its_transcript(
        kind: str, make_store: Callable[..., StoreBackend]) -> None:
    store = make_store(kind, idle_ttl=0.3)
    with store.open("c1") as conv:
        conv.state["slots"] = {"car_model": "model_x3"}
        conv.add_turn(turn("t1"))
    time.sleep(0.45)
    assert not store.exists("c1")
    with pytest.raises(KeyError):
        with store.open("c1", create=False):
            pass
    with store.open("c1") as conv:
        assert conv.is_new and conv.state == {}
        assert conv.history() == []  # the LLM does not see the expired session
        conv.add_turn(turn("t2"))
    assert [(t["turn_id"], t["seq"]) for t in store.transcript("c1") or []] == [("t1", 1), ("t2", 2)]


def test_daily_token_counter_adds_up_per_day(store: StoreBackend) -> None:
    assert store.tokens_today() == 0
    assert store.add_tokens_today(120) == 120
    assert store.add_tokens_today(30) == 150
    assert store.tokens_today() == 150
    assert store.add_tokens_today(7, day="2026-01-02") == 7
    assert store.tokens_today(day="2026-01-02") == 7
    assert store.tokens_today(day="2026-01-03") == 0
    with pytest.raises(ValueError):
        store.tokens_today(day="yesterday")


@pytest.mark.parametrize("kind", SHARED_BACKENDS)
def test_a_reload_request_is_seen_by_every_store_object_on_the_same_data(
        kind: str, make_store: Callable[..., StoreBackend]) -> None:
    here, there = make_store(kind), make_store(kind)  # two workers or two instances
    assert here.reload_generation() == there.reload_generation() == 0
    assert here.request_reload() == 1
    assert there.request_reload() == 2
    assert here.reload_generation() == there.reload_generation() == 2


def test_reload_generation_counts_requests_in_one_process(make_store: Callable[..., StoreBackend]) -> None:
    store = make_store("memory")
    assert store.reload_generation() == 0
    assert [store.request_reload() for _ in range(3)] == [1, 2, 3]


def test_ping_succeeds_on_a_working_backend(store: StoreBackend) -> None:
    store.ping()


def test_conversation_waits_for_the_holder_then_times_out(store: StoreBackend) -> None:
    store.lock_timeout = 0.2
    holding, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with store.open("c1") as conv:
                conv.add_turn(turn("held"))
                holding.set()
                done.wait(5)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    with pytest.raises(StoreBusyError, match="busy"):
        with store.open("c1"):
            pass
    with store.open("c2") as conv:  # other conversations do not wait
        conv.add_turn(turn("free"))
    done.set()
    holder.join()
    assert errors == []
    assert [t["turn_id"] for t in store.transcript("c1") or []] == ["held"]


def append_concurrently(stores: list[StoreBackend], cid: str, per_store: int, tag: str) -> list[BaseException]:
    """per_store threads per store, each a read-modify-write of one counter plus one turn."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores) * per_store)

    def work(store: StoreBackend, n: int) -> None:
        try:
            start.wait(10)
            with store.open(cid) as conv:
                count = conv.state.get("count", 0)
                time.sleep(0.001)  # widen the window a lost update would need
                conv.state["count"] = count + 1
                conv.add_turn(turn(f"{tag}-{n}", f"message {count + 1}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(store, i * per_store + n))
               for i, store in enumerate(stores) for n in range(per_store)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def check_counted(store: StoreBackend, cid: str, total: int) -> None:
    transcript = store.transcript(cid) or []
    assert [t["seq"] for t in transcript] == list(range(1, total + 1))
    assert len({t["turn_id"] for t in transcript}) == total
    # each turn saw the counter its predecessor left: no update was lost or applied twice
    assert [t["text_in"] for t in transcript] == [f"message {n}" for n in range(1, total + 1)]
    with store.open(cid, create=False) as conv:
        assert conv.state["count"] == total


def test_fifty_threads_on_one_conversation_are_applied_one_by_one(store: StoreBackend) -> None:
    assert append_concurrently([store], "c1", 50, "t") == []
    check_counted(store, "c1", 50)


@pytest.mark.parametrize("kind", SHARED_BACKENDS)
def test_two_store_instances_on_one_backend_serialise_one_conversation(
        kind: str, make_store: Callable[..., StoreBackend]) -> None:
    stores = [make_store(kind), make_store(kind)]
    assert append_concurrently(stores, "c1", 15, "t") == []
    check_counted(stores[0], "c1", 30)


@pytest.mark.parametrize("kind", SHARED_BACKENDS)
def test_a_holder_whose_lease_ran_out_cannot_save_over_the_next_one(
        kind: str, make_store: Callable[..., StoreBackend]) -> None:
    slow, fast = make_store(kind, lock_lease=0.2), make_store(kind)
    with pytest.raises(StoreError, match="not saved"):
        with slow.open("c1") as conv:
            conv.add_turn(turn("slow"))
            time.sleep(0.35)
            with fast.open("c1") as other:  # the lease expired: another instance may take over
                other.add_turn(turn("fast"))
    assert [t["turn_id"] for t in fast.transcript("c1") or []] == ["fast"]
    with fast.open("c1") as conv:  # and nothing is left locked
        assert len(conv.history()) == 1


def test_local_locks_serve_waiters_in_arrival_order() -> None:
    locks = LocalLocks()
    assert locks.acquire("c", 1)
    order: list[int] = []

    def wait(n: int) -> None:
        assert locks.acquire("c", 5)
        order.append(n)
        locks.release("c")

    threads = []
    for n in range(4):
        threads.append(threading.Thread(target=wait, args=(n,)))
        threads[-1].start()
        while len(locks._queues["c"]) < n + 2:  # holder + the n+1 queued so far
            time.sleep(0.001)
    assert not locks.acquire("c", 0.01)  # a waiter that gives up leaves the queue
    assert len(locks._queues["c"]) == 5
    locks.release("c")
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3]
    assert locks._queues == {}


def _append_in_process(path: str, cid: str, count: int, tag: str, start: Any) -> None:
    store = SQLiteStore(path)
    start.wait(30)
    for n in range(count):
        with store.open(cid) as conv:
            value = conv.state.get("count", 0)
            conv.state["count"] = value + 1
            conv.add_turn(turn(f"{tag}-{n}", f"message {value + 1}"))
    store.close()


def test_two_processes_on_one_sqlite_file_lose_no_turn(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    SQLiteStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    workers = [ctx.Process(target=_append_in_process, args=(path, "c1", 25, tag, start)) for tag in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    store = SQLiteStore(path)
    check_counted(store, "c1", 50)
    store.close()


def test_sqlite_iter_turns_pages_through_many_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.sqlite_store.PAGE", 3)
    store = SQLiteStore(tmp_path / "s.sqlite3")
    base = time.time() - 50
    for cid in ("x", "y"):
        with store.open(cid) as conv:
            for n in range(5):
                conv.add_turn(turn(f"{cid}{n}", created_at=base + n))
    assert [t["turn_id"] for t in store.iter_turns()] == [f"{c}{n}" for n in range(5) for c in "xy"]
    store.close()


def test_sqlite_corrupt_file_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "var" / "hybridbot.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(StoreError, match="not a valid SQLite database") as info:
        SQLiteStore(path)
    assert str(path) in str(info.value) and "Move it aside" in str(info.value)


def test_sqlite_database_locked_past_the_busy_timeout_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    SQLiteStore(path).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another process") as info:
            SQLiteStore(path, busy_timeout=0.2)
        assert str(path) in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_sqlite_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99, newer"):
        SQLiteStore(path)


def open_as_unprivileged(path: Path) -> str:
    """SQLiteStore(path) in a forked child running as nobody; the StoreError text, or "" if it opened."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads alive (3.12+): the child execs nothing
        pid = os.fork()
    if pid == 0:  # child: drop root, try, report through the pipe, never return into pytest
        code = 0
        try:
            os.setgid(65534)
            os.setuid(65534)
            SQLiteStore(path).close()
        except StoreError as exc:
            os.write(write_end, str(exc).encode())
        except BaseException as exc:
            os.write(write_end, f"unexpected {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message
    return message


@pytest.mark.parametrize("what, expected", [
    ("directory", "cannot be written"),
    ("file", "cannot be written"),
    ("missing directory", "cannot create the directory"),
])
def test_sqlite_read_only_location_is_a_clear_store_error(what: str, expected: str) -> None:
    """As root (which ignores file modes) the attempt runs in a child that became nobody."""
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's 0700 base: nobody must reach it
        folder = Path(tmp) / "ro"
        folder.mkdir()
        path = folder / ("sub/s.sqlite3" if what == "missing directory" else "s.sqlite3")
        if what == "file":
            SQLiteStore(path).close()
            for leftover in folder.glob("s.sqlite3-*"):
                leftover.unlink()
            path.chmod(0o444)
            folder.chmod(0o777 if os.geteuid() == 0 else 0o755)  # nobody may write the folder, not the file
        else:
            folder.chmod(0o555)
        Path(tmp).chmod(0o755)
        try:
            if os.geteuid() == 0:
                message = open_as_unprivileged(path)
            else:
                with pytest.raises(StoreError) as info:
                    SQLiteStore(path)
                message = str(info.value)
        finally:
            folder.chmod(0o755)
    assert expected in message and str(path.parent if what == "missing directory" else path) in message
    assert "writable" in message


def test_open_store_reads_urls(tmp_path: Path) -> None:
    default = open_store(None, root=tmp_path)
    assert isinstance(default, SQLiteStore) and default.path == tmp_path / "var" / "hybridbot.sqlite3"
    default.close()
    assert isinstance(open_store("", root=tmp_path), SQLiteStore)
    memory = open_store("memory://?idle_ttl=60&lock_timeout=2", root=tmp_path)
    assert isinstance(memory, MemoryStore) and (memory.idle_ttl, memory.lock_timeout) == (60, 2)
    relative = open_store("sqlite://data/bot.db", root=tmp_path)
    assert isinstance(relative, SQLiteStore) and relative.path == tmp_path / "data" / "bot.db"
    absolute = open_store(f"sqlite://{tmp_path}/abs.db", root=Path("/nonexistent"), idle_ttl=5)
    assert isinstance(absolute, SQLiteStore) and absolute.path == tmp_path / "abs.db"
    assert absolute.idle_ttl == 5
    redis_store = open_store("redis://127.0.0.1:6379/13?prefix=hbtest-url:&lock_timeout=3", root=tmp_path)
    assert isinstance(redis_store, RedisStore)
    assert (redis_store.prefix, redis_store.lock_timeout) == ("hbtest-url:", 3)
    assert redis_store._r.connection_pool.connection_kwargs["db"] == 13
    redis_store.ping()
    for store in (relative, absolute, redis_store):
        store.close()


@pytest.mark.parametrize("url, message", [
    ("postgres://db/bot", "unknown store URL scheme 'postgres'"),
    ("var/bot.sqlite3", "has no scheme"),
    ("sqlite://", "names no file"),
    ("memory://?idle_tl=5", "unknown option"),
    ("memory://?idle_ttl=soon", "idle_ttl must be a number of seconds"),
])
def test_open_store_rejects_bad_urls_with_the_fix(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url, root=tmp_path)


def test_conversation_history_without_a_store_is_the_new_turns() -> None:
    conv = Conversation(id="c", state={}, created_at=0.0, updated_at=0.0)
    conv.add_turn(turn("t1"))
    assert [t["seq"] for t in conv.history()] == [1]


# -- HostLock: SQLite writers of every process of the host take turns on it ------------------------
def test_host_lock_is_exclusive_between_holders_and_freed_when_its_process_dies(tmp_path: Path) -> None:
    path = tmp_path / "db-writer.lock"
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from pathlib import Path; from bot.store import HostLock;"
            "lock = HostLock(Path(sys.argv[1])); cm = lock.hold(); cm.__enter__(); print('held', flush=True);"
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(path), str(Path(__file__).resolve().parents[1])],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        got = threading.Event()

        def take() -> None:
            with HostLock(path).hold():
                got.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(0.5)  # the other process holds it
        child.send_signal(signal.SIGKILL)  # dies without unlocking: the kernel frees the lock
        assert got.wait(10)
        waiter.join(10)
    finally:
        child.kill()
        child.wait()


def test_host_lock_orders_the_threads_of_one_process(tmp_path: Path) -> None:
    lock, inside, overlaps = HostLock(tmp_path / "x.lock"), [], []

    def work() -> None:
        for _ in range(50):
            with lock.hold():
                inside.append(1)
                overlaps.append(len(inside))
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 200 and max(overlaps) == 1
    lock.close()


def test_a_lock_file_that_cannot_be_made_is_a_store_error_naming_it(tmp_path: Path) -> None:
    lock = HostLock(tmp_path / "missing-dir" / "db-writer.lock")
    with pytest.raises(StoreError, match="cannot open the lock file .*missing-dir"):
        with lock.hold():
            pass
