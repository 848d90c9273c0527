"""RedisStore specifics: key layout and TTLs, prefixes, an unreachable server, a missing redis package."""
from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
import redis

from bot.errors import StoreError
from bot.redis_store import TOKEN_COUNTER_TTL, RedisStore

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    raw = redis.Redis.from_url(REDIS_URL)
    yield raw
    raw.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    name = f"hbtest:{uuid.uuid4().hex}:"
    yield name
    RedisStore(client=client, prefix=name).clear()


@pytest.fixture
def store(prefix: str) -> Iterator[RedisStore]:
    made = RedisStore(REDIS_URL, prefix=prefix, idle_ttl=3600)
    yield made
    made.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_keys_live_under_the_prefix_with_the_documented_ttls(store: RedisStore, client: redis.Redis,
                                                             prefix: str) -> None:
    with store.open("c1") as conv:
        lock_ttl = client.pttl(f"{prefix}lock:c1")
        assert 0 < lock_ttl <= store.lock_lease * 1000
        conv.add_turn({"turn_id": "t1", "text_in": "hi"})
    store.add_feedback("c1", "t1", "up")
    store.add_tokens_today(10, day="2026-05-01")
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{prefix}*"))
    assert keys == [prefix + k for k in ("conv:c1", "conversations", "feedback:c1", "tokens:2026-05-01",
                                         "turnidx:c1", "turns:c1")]
    assert 0 < client.pttl(f"{prefix}conv:c1") <= 3600 * 1000
    assert client.ttl(f"{prefix}turns:c1") == -1  # transcripts follow purge(), not the idle TTL
    assert 0 < client.ttl(f"{prefix}tokens:2026-05-01") <= TOKEN_COUNTER_TTL


def test_every_open_slides_the_idle_expiry(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    with store.open("c1"):
        pass
    time.sleep(0.05)
    before = client.pttl(f"{prefix}conv:c1")
    with store.open("c1"):
        pass
    assert client.pttl(f"{prefix}conv:c1") > before


def test_prefixes_keep_bots_apart(store: RedisStore, prefix: str) -> None:
    other = RedisStore(REDIS_URL, prefix=prefix + "other:")
    try:
        with store.open("c1") as conv:
            conv.add_turn({"turn_id": "t1"})
        assert not other.exists("c1") and other.transcript("c1") is None
        assert other.purge(older_than=datetime.now(timezone.utc) + timedelta(days=1)) == 0
        assert store.exists("c1")
    finally:
        other.close()


def test_unreachable_redis_raises_store_error_without_leaking_the_password() -> None:
    url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    down = RedisStore(url, lock_timeout=1)  # connects lazily: the app can start and report via /readyz
    kwargs = down._r.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.0, 1.0)
    assert kwargs["retry"].get_retries() == 1
    calls = [down.ping, lambda: down.transcript("c1"), lambda: down.add_tokens_today(5),
             lambda: down.add_feedback("c1", "t1", "up"), lambda: list(down.iter_turns())]
    for call in calls:
        with pytest.raises(StoreError, match="unreachable") as info:
            call()
        assert "s3cret" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(StoreError, match="unreachable"):
        with down.open("c1"):
            pass
    down.close()


def test_bad_redis_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="bad Redis URL"):
        RedisStore("redis://127.0.0.1:notaport/0")


def test_missing_redis_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with pytest.raises(StoreError, match=r"pip install 'hybridbot\[redis\]'"):
        RedisStore(REDIS_URL)


def test_a_given_client_is_used_and_left_open(client: redis.Redis, prefix: str) -> None:
    shared = RedisStore(client=client, prefix=prefix)
    with shared.open("c1") as conv:
        conv.state["x"] = 1
    shared.close()
    assert client.ping()
    assert client.exists(f"{prefix}conv:c1") == 1


def test_clear_deletes_its_own_prefix_only(store: RedisStore, client: redis.Redis) -> None:
    with store.open("c1") as conv:
        conv.add_turn({"turn_id": "t1", "text_in": "hi", "replies": []})
    store.add_tokens_today(5)
    neighbour = f"{store.prefix[:-1]}-other:keep"
    client.set(neighbour, "1")
    try:
        assert store.clear() >= 2
        assert list(client.scan_iter(match=f"{store.prefix}*")) == []
        assert client.get(neighbour) == b"1"
    finally:
        client.delete(neighbour)


# -- the turn scripts' own connections ---------------------------------------------------------------
def turn(store: RedisStore, cid: str, turn_id: str) -> None:
    with store.open(cid) as conv:
        conv.state["n"] = conv.state.get("n", 0) + 1
        conv.add_turn({"turn_id": turn_id, "text_in": "hi"})


def test_turns_go_on_after_redis_forgets_its_scripts(store: RedisStore, client: redis.Redis) -> None:
    turn(store, "c1", "t1")
    client.script_flush()  # as after a restart of Redis
    turn(store, "c1", "t2")
    assert [t["turn_id"] for t in store.transcript("c1")] == ["t1", "t2"]


def test_a_connection_the_server_closed_is_reopened_without_losing_the_turn(store: RedisStore,
                                                                             client: redis.Redis) -> None:
    turn(store, "c1", "t1")
    (conn,) = store._idle  # the one connection the turn scripts used
    conn.send_command("CLIENT", "ID")
    assert client.client_kill_filter(_id=conn.read_response()) == 1  # as a Redis restart or a network blip would
    turn(store, "c1", "t2")
    with store.open("c1") as conv:
        assert conv.state["n"] == 2
    assert [t["turn_id"] for t in store.transcript("c1")] == ["t1", "t2"]


def test_taking_the_lock_again_with_the_same_token_is_harmless(store: RedisStore, prefix: str) -> None:
    from bot.redis_store import OPEN_LUA
    keys = [f"{prefix}lock:c1", f"{prefix}conv:c1", f"{prefix}turns:c1"]
    assert store._eval(OPEN_LUA, keys, ["token-a", "60000"])[0] == 1
    assert store._eval(OPEN_LUA, keys, ["token-a", "60000"])[0] == 1  # a retry after a lost reply
    assert store._eval(OPEN_LUA, keys, ["token-b", "60000"]) == [0]   # anyone else still waits


def test_script_connections_are_reused_across_threads_and_closed_by_close(store: RedisStore) -> None:
    for i in range(200):  # short-lived threads, as each SSE reply runs in one: no connection per thread
        worker = threading.Thread(target=turn, args=(store, f"c{i % 3}", f"t{i}"))
        worker.start()
        worker.join()
    assert len(store._idle) == 1
    barrier = threading.Barrier(4)

    def together(i: int) -> None:
        barrier.wait()
        turn(store, f"p{i}", "t1")
    threads = [threading.Thread(target=together, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= len(store._idle) <= 4  # one per call in flight at the busiest moment
    conns = list(store._idle)
    store.close()
    assert not store._idle and all(c._sock is None for c in conns)
