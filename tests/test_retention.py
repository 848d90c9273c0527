"""Ownership in the stores, per-user export and erasure, retention purge (command, CLI, daily worker): no rows left."""
from __future__ import annotations

import logging
import sqlite3
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner

from bot.app import Bot
from bot.memory_store import MemoryStore
from bot.redis_store import RedisStore
from bot.retention import RetentionWorker, privacy_from_dir, purge, purge_command, start_retention
from bot.sqlite_store import SQLiteStore
from bot.store import StoreBackend
from bot.errors import ConfigErrors

log = logging.getLogger(__name__)

REDIS_URL = "redis://127.0.0.1:6379/12"
BACKENDS = ["memory", "sqlite", "redis"]
DAY = 24 * 3600


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"hbtest-identity:{uuid.uuid4().hex}:"
    yield name
    cleaner = RedisStore(REDIS_URL, prefix=name)
    cleaner.clear()
    cleaner.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[StoreBackend]:
    made: StoreBackend
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / "store.sqlite3")
    else:
        made = RedisStore(REDIS_URL, prefix=prefix)
    yield made
    made.close()


def converse(store: StoreBackend, user: str | None, turns: int = 2, *, vote: bool = True) -> str:
    """A conversation with ``turns`` turns (and a vote on the first), owned by ``user``."""
    cid = Bot.new_conversation_id()
    with store.open(cid) as conv:
        conv.user_id = user
        for i in range(turns):
            conv.add_turn({"turn_id": f"t{i}", "text_in": f"message {i}", "replies": [{"text": f"reply {i}"}]})
    if vote:
        assert store.add_feedback(cid, "t0", "down", "wrong price")
    return cid


def age(store: StoreBackend, cid: str, days: float) -> None:
    """Make conversation ``cid`` look last active ``days`` days ago (as the store records activity)."""
    when = time.time() - days * DAY
    if isinstance(store, MemoryStore):
        import json
        entry = store._convs[cid]
        entry.record = json.dumps({**json.loads(entry.record), "updated_at": when})
    elif isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (when, cid))
        conn.close()
    else:
        store._r.zadd(store._key("conversations"), {cid: when})


def leftovers(store: StoreBackend) -> list[Any]:
    """Every piece of conversation data the backend still holds (token counters excepted)."""
    if isinstance(store, MemoryStore):
        return sorted(store._convs)
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path)
        rows = [(t, n) for t in ("conversations", "turns", "feedback", "locks")
                for n in conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone() if n]
        conn.close()
        return rows
    keys = sorted(k.decode() for k in store._r.scan_iter(match=f"{store.prefix}*"))
    return [k for k in keys if not k.startswith(f"{store.prefix}tokens:")]


def test_owner_of_and_conversations_of(store: StoreBackend) -> None:
    a1 = converse(store, "alice")
    b1 = converse(store, "bob")
    anon = converse(store, None)
    a2 = converse(store, "alice")
    assert (store.owner_of(a1), store.owner_of(b1), store.owner_of(anon)) == ("alice", "bob", None)
    assert store.owner_of(Bot.new_conversation_id()) is None
    mine = store.conversations_of("alice")
    assert [c.id for c in mine] == [a2, a1]  # most recent first
    assert all(c.user_id == "alice" and c.created_at is not None and c.updated_at >= c.created_at for c in mine)
    assert store.conversations_of("nobody") == []


def test_ownership_outlives_the_idle_expiry(tmp_path: Path, prefix: str) -> None:
    for store in (MemoryStore(idle_ttl=0.05), SQLiteStore(tmp_path / "s.sqlite3", idle_ttl=0.05),
                  RedisStore(REDIS_URL, prefix=prefix, idle_ttl=0.05)):
        cid = converse(store, "alice", vote=False)
        deadline = time.monotonic() + 5
        while store.exists(cid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not store.exists(cid)
        assert store.owner_of(cid) == "alice" and [c.id for c in store.conversations_of("alice")] == [cid]
        with store.open(cid) as conv:  # a new session under the same id stays the user's
            assert conv.is_new and conv.user_id == "alice"
        store.close()


def test_export_user_holds_every_conversation_and_turn_of_that_user_only(store: StoreBackend) -> None:
    a1 = converse(store, "alice", 2)
    converse(store, "bob", 3)
    a2 = converse(store, "alice", 1, vote=False)
    data = store.export_user("alice")
    assert data["user_id"] == "alice" and data["exported_at"] > 0
    assert [c["conversation_id"] for c in data["conversations"]] == [a1, a2]  # oldest first
    first = data["conversations"][0]
    assert [t["text_in"] for t in first["turns"]] == ["message 0", "message 1"]
    assert first["turns"][0]["feedback"]["rating"] == "down"
    assert store.export_user("carol")["conversations"] == []


@pytest.mark.parametrize("bad", ["", "x" * 300])
def test_user_ids_are_checked(store: StoreBackend, bad: str) -> None:
    with pytest.raises(ValueError):
        store.conversations_of(bad)
    with pytest.raises(ValueError):
        store.delete_user(bad)


def test_delete_user_leaves_nothing_of_that_user_and_keeps_the_others(store: StoreBackend) -> None:
    for _ in range(3):
        converse(store, "alice")
    bob = converse(store, "bob")
    anon = converse(store, None)
    assert store.delete_user("alice") == 3
    assert store.conversations_of("alice") == [] and store.export_user("alice")["conversations"] == []
    assert store.transcript(bob) is not None and store.transcript(anon) is not None
    assert store.delete_user("alice") == 0
    store.delete_user("bob")
    store.delete(anon)
    assert leftovers(store) == []


def test_deleting_a_conversation_leaves_no_rows(store: StoreBackend) -> None:
    owned, anon = converse(store, "alice"), converse(store, None)
    assert store.delete(owned) and store.delete(anon)
    assert store.transcript(owned) is None and store.owner_of(owned) is None
    assert store.conversations_of("alice") == []
    assert leftovers(store) == []


def test_purge_removes_old_conversations_entirely_and_keeps_recent_ones(store: StoreBackend) -> None:
    old_owned, old_anon = converse(store, "alice"), converse(store, None)
    recent = converse(store, "alice")
    age(store, old_owned, 40)
    age(store, old_anon, 31)
    assert purge_command(store, 30) == 2
    assert store.transcript(old_owned) is None and store.transcript(old_anon) is None
    assert [c.id for c in store.conversations_of("alice")] == [recent]
    assert purge_command(store, 0, now=datetime.now(timezone.utc) + timedelta(seconds=5)) == 1
    assert leftovers(store) == []


def test_purge_refuses_a_negative_period(store: StoreBackend) -> None:
    with pytest.raises(ValueError, match=">= 0 days"):
        purge_command(store, -1)


# -- hybridbot purge ------------------------------------------------------------------------------------
def bot_dir(root: Path, privacy: str = "") -> Path:
    (root / "intents.yaml").write_text(textwrap.dedent("""\
        version: 1
        intents:
          greet: {examples: [hello, hi]}
    """) + textwrap.dedent(privacy), encoding="utf-8")
    (root / "flows").mkdir(exist_ok=True)
    (root / "flows" / "greet.yaml").write_text("version: 1\ntrigger: greet\nsteps:\n  - say: Hello!\n",
                                              encoding="utf-8")
    return root


def test_the_purge_command_uses_retention_days_from_intents_yaml(tmp_path: Path) -> None:
    root = bot_dir(tmp_path, "privacy:\n  retention_days: 30\n")
    store = SQLiteStore(root / "var" / "hybridbot.sqlite3")
    old, recent = converse(store, "alice"), converse(store, None)
    age(store, old, 45)
    store.close()
    result = CliRunner().invoke(purge, [str(root)], env={"BOT_STORE": ""})
    assert result.exit_code == 0, result.output
    assert "deleted 1 conversation(s) idle for more than 30 day(s)" in result.output
    store = SQLiteStore(root / "var" / "hybridbot.sqlite3")
    assert store.transcript(old) is None and store.transcript(recent) is not None
    store.close()


def test_the_purge_command_takes_older_than_and_a_store_url(tmp_path: Path) -> None:
    root = bot_dir(tmp_path)
    path = tmp_path / "elsewhere.sqlite3"
    store = SQLiteStore(path)
    cid = converse(store, None)
    age(store, cid, 8)
    store.close()
    result = CliRunner().invoke(purge, [str(root), "--older-than", "7"], env={"BOT_STORE": f"sqlite:///{path}"})
    assert result.exit_code == 0 and "deleted 1 conversation(s)" in result.output
    store = SQLiteStore(path)
    assert leftovers(store) == []
    store.close()


def test_the_purge_command_without_a_period_says_how_to_give_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(purge, [str(bot_dir(tmp_path))], env={"BOT_STORE": "memory://"})
    assert result.exit_code == 2 and "pass --older-than DAYS or set privacy.retention_days" in result.output


def test_a_wrong_privacy_block_is_reported_with_its_position(tmp_path: Path) -> None:
    root = bot_dir(tmp_path, "privacy:\n  retention_days: 30\n  redact:\n    patterns: {bad: '(unclosed'}\n")
    with pytest.raises(ConfigErrors) as info:
        privacy_from_dir(root)
    assert info.value.errors[0].location == "intents.yaml:7:21"
    assert "not a valid regular expression" in info.value.errors[0].message
    result = CliRunner().invoke(purge, [str(root)], env={"BOT_STORE": "memory://"})
    assert result.exit_code == 1 and "intents.yaml:7:21" in result.output


# -- the daily worker -----------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return value


def test_the_worker_purges_on_its_schedule_and_stops() -> None:
    store = MemoryStore()
    days: list[float | None] = [30]
    worker = RetentionWorker(lambda: store, lambda: days[0], interval=0.05, first_delay=0)
    old = converse(store, None)
    age(store, old, 31)
    worker.start()
    try:
        wait_for(lambda: worker.runs >= 1 and store.transcript(old) is None)
        newer = converse(store, None)
        age(store, newer, 60)
        wait_for(lambda: store.transcript(newer) is None)
        days[0] = None  # retention switched off by a reload: runs go on, nothing is deleted
        runs = worker.runs
        kept = converse(store, None)
        age(store, kept, 90)
        wait_for(lambda: worker.runs >= runs + 2)
        assert store.transcript(kept) is not None
    finally:
        worker.stop()
    assert not worker.running and worker.purged == 2


def test_start_retention_reads_the_bots_privacy_settings(tmp_path: Path) -> None:
    bot = Bot.from_path(bot_dir(tmp_path), store=MemoryStore(), env={})
    worker = start_retention(bot, interval=3600, first_delay=3600)
    try:
        assert worker.running
        assert worker.run_once() is None  # this bot sets no retention_days
    finally:
        worker.stop()
        bot.close()
    assert not worker.running


def test_a_store_failure_is_logged_and_retried_later(caplog: pytest.LogCaptureFixture) -> None:
    class DownStore(MemoryStore):
        def purge(self, *, older_than: datetime) -> int:
            from bot.errors import StoreError
            raise StoreError("connection refused (test)")

    worker = RetentionWorker(lambda: DownStore(), lambda: 30, interval=3600, first_delay=3600)
    with caplog.at_level(logging.ERROR, logger="bot.retention"):
        assert worker.run_once() is None
    assert "purge failed, trying again in 3600 s" in caplog.text


def test_a_version_1_sqlite_file_is_migrated_and_keeps_its_owners(tmp_path: Path) -> None:
    from bot.sqlite_store import MIGRATIONS
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[1] + "; CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                       "INSERT INTO meta VALUES ('schema_version', '1');")
    conn.execute("INSERT INTO conversations VALUES ('c-old-1', '{}', 'alice', 1.0, 2.0, 1)")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    try:
        assert [c.id for c in store.conversations_of("alice")] == ["c-old-1"]
        with sqlite3.connect(path) as check:
            version = check.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            indexes = {row[1] for row in check.execute("PRAGMA index_list(conversations)")}
        check.close()
        assert version == "2" and "conversations_by_user" in indexes
    finally:
        store.close()
