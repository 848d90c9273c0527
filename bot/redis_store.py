"""RedisStore: conversations in Redis, so any number of app instances serve the same conversations."""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import secrets
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator

from bot.conversation import Record, check_id, check_rating, encode, utc_day, with_feedback
from bot.errors import StoreError
from bot.ownership import ConversationInfo, check_user_id
from bot.store import StoreBackend, StoreBusyError

log = logging.getLogger(__name__)

TOKEN_COUNTER_TTL = 2 * 24 * 3600  # a day's counter outlives the day in every time zone
LOCK_POLL = 0.02  # seconds between attempts to take a busy conversation lock
BATCH = 200  # conversations per pipeline when scanning or purging

# KEYS: lock, conv, turns. ARGV: token, lease (ms). {1, state JSON or nil, turn count} once the
# lock is ours (also when it already was: a retried call after a lost reply), {0} while another
# request holds it.
OPEN_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0}
end
return {1, redis.call('GET', KEYS[2]), redis.call('LLEN', KEYS[3])}
"""
# KEYS: lock, conv, turns, turnidx, conversations, owner, user index. ARGV: token, state JSON,
# idle TTL (ms), updated_at, conversation id, user id or '', n, then n turn JSONs, n turn ids,
# n seqs. 0 (nothing written) if the lease is no longer ours.
SAVE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local n = tonumber(ARGV[7])
for i = 1, n do
  redis.call('RPUSH', KEYS[3], ARGV[7 + i])
  redis.call('HSET', KEYS[4], ARGV[7 + n + i], ARGV[7 + 2 * n + i])
end
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[6], ARGV[6])
  redis.call('ZADD', KEYS[7], ARGV[4], ARGV[5])
end
redis.call('DEL', KEYS[1])
return 1
"""
# KEYS: lock. ARGV: token. Drops the lock only if it is still ours; 1 if it was.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
SHAS = {code: hashlib.sha1(code.encode()).hexdigest() for code in (OPEN_LUA, SAVE_LUA, RELEASE_LUA)}


class RedisStore(StoreBackend):
    """Conversations in Redis under ``prefix`` (default ``hybridbot:``).

    Keys: ``conv:{id}`` (state JSON, sliding expiry ``PX idle_ttl``), ``turns:{id}`` (list, one
    JSON turn per seq), ``turnidx:{id}`` (hash turn_id -> seq), ``feedback:{id}`` (hash
    turn_id -> JSON), ``lock:{id}`` (a lease token, taken and checked by Lua scripts),
    ``conversations`` (sorted set id -> last activity, for purge and reports), ``tokens:{day}``;
    for conversations of verified users also ``owner:{id}`` (the user id) and ``user:{user_id}``
    (sorted set id -> last activity). Transcripts and ownership have no TTL: they stay until
    ``delete``/``purge``. Not for Redis Cluster (scripts and MULTI span several keys).

    Args:
        url: ``redis://[[user]:password@]host:port/db`` (or ``rediss://``), for redis-py.
        prefix: namespace of every key.
        client: an existing ``redis.Redis`` to use instead of ``url`` (not closed by ``close``).
        socket_timeout, connect_timeout: seconds, short so a dead Redis fails fast.
        idle_ttl, lock_timeout, lock_lease: see ``StoreBackend``.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "hybridbot:",
                 client: Any = None, socket_timeout: float = 2.0, connect_timeout: float = 1.0,
                 **options: Any) -> None:
        super().__init__(**options)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise StoreError("the Redis store needs the redis package: pip install 'hybridbot[redis]'") from None
        self._redis = redis
        self.prefix = prefix
        self._owns_client = client is None
        self._where = _redacted(url) if client is None else "the given Redis client"
        if client is None:
            try:
                client = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                              socket_connect_timeout=connect_timeout,
                                              retry=Retry(NoBackoff(), 1), health_check_interval=30)
            except ValueError as exc:
                raise StoreError(f"bad Redis URL {self._where}: {exc}") from exc
        self._r = client
        self._idle: collections.deque[Any] = collections.deque()  # connections for the turn scripts (_eval)
        self._idle_pid = os.getpid()

    def _key(self, kind: str, cid: str = "") -> str:
        return f"{self.prefix}{kind}:{cid}" if cid else f"{self.prefix}{kind}"

    def _keys(self, cid: str) -> list[str]:
        return [self._key(kind, cid) for kind in ("conv", "turns", "turnidx", "feedback")]

    @contextmanager
    def _errors(self) -> Iterator[None]:
        errors = self._redis.exceptions
        try:
            yield
        except (errors.ConnectionError, errors.TimeoutError) as exc:
            raise StoreError(f"Redis at {self._where} is unreachable: {exc}") from exc
        except errors.RedisError as exc:
            raise StoreError(f"Redis at {self._where}: {exc}") from exc

    def ping(self) -> None:
        with self._errors():
            self._r.ping()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().disconnect()
        if self._owns_client:
            self._r.close()

    def clear(self) -> int:
        """Delete every key under this store's prefix (all its conversations, transcripts and
        counters); returns how many keys went. For tests, benchmarks and decommissioning."""
        with self._errors():
            keys = list(self._r.scan_iter(match=f"{self.prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                self._r.delete(*keys[start:start + 1000])
        return len(keys)

    # -- locking and saving -------------------------------------------------------------
    # A turn costs two round trips: OPEN takes the lock and reads the conversation, SAVE checks
    # the lease, writes state + turns and drops the lock, each atomically in one Lua script.

    def _eval(self, code: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script with EVALSHA on a connection of the store's own small pool.

        A turn's scripts skip redis-py's pool, retry and instrumentation layers, which cost more
        CPU than the round trip itself: connections wait in a deque (append and pop are atomic,
        so no lock), one per call in flight at the busiest moment so far. NOSCRIPT (a restarted
        Redis) loads the script and runs it again; a broken connection is reopened and the call
        made once more, as the client's own retry would (the scripts are safe to repeat).
        """
        errors = self._redis.exceptions
        if self._idle_pid != os.getpid():  # a forked child must not share its parent's sockets
            self._idle, self._idle_pid = collections.deque(), os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            pool = self._r.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
        try:
            for attempt in range(3):
                try:
                    conn.send_command("EVALSHA", SHAS[code], len(keys), *keys, *args)
                    return conn.read_response()
                except errors.NoScriptError:
                    if attempt == 2:
                        raise
                    conn.send_command("SCRIPT", "LOAD", code)
                    conn.read_response()
                except (errors.ConnectionError, errors.TimeoutError):
                    conn.disconnect()
                    if attempt:
                        raise
        finally:
            self._idle.append(conn)

    def _acquire_and_load(self, cid: str, deadline: float) -> tuple[str, Record | None, int]:
        token = secrets.token_hex(16)
        lease = str(max(1, round(self.lock_lease * 1000)))
        keys = [self._key("lock", cid), self._key("conv", cid), self._key("turns", cid)]
        while True:
            with self._errors():
                reply = self._eval(OPEN_LUA, keys, [token, lease])
            if reply[0] == 1:
                raw, last_seq = reply[1], int(reply[2])
                return token, (Record(**json.loads(raw)) if raw else None), last_seq
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise StoreBusyError(f"conversation {cid!r} is busy on another instance "
                                     f"(waited {self.lock_timeout:g} s)")
            time.sleep(min(LOCK_POLL, wait))

    def _release(self, cid: str, token: str) -> None:
        with self._errors():
            if not self._eval(RELEASE_LUA, [self._key("lock", cid)], [token]):
                log.warning("lock of conversation %s had already expired", cid)

    def _load(self, cid: str) -> tuple[Record | None, int]:
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.get(self._key("conv", cid))
            pipe.llen(self._key("turns", cid))
            raw, last_seq = pipe.execute()
        return (Record(**json.loads(raw)) if raw is not None else None), int(last_seq)

    def _save(self, cid: str, token: str, record: Record, turns: list[tuple[dict[str, Any], str]]) -> None:
        user = record.user_id or ""
        keys = [self._key("lock", cid), self._key("conv", cid), self._key("turns", cid),
                self._key("turnidx", cid), self._key("conversations"), self._key("owner", cid),
                self._key("user", user)]
        args: list[Any] = [token, encode(record.__dict__), max(1, round(self.idle_ttl * 1000)),
                           repr(record.updated_at), cid, user, len(turns)]
        args += [data for _, data in turns]
        args += [t["turn_id"] for t, _ in turns]
        args += [t["seq"] for t, _ in turns]
        with self._errors():
            saved = self._eval(SAVE_LUA, keys, args)
        if not saved:
            raise StoreError(f"conversation {cid!r}: the lock lease ({self.lock_lease:g} s) ran out "
                             "before saving; this turn was not saved")

    def _history(self, cid: str, first_seq: int, limit: int | None) -> list[dict[str, Any]]:
        start = first_seq - 1
        with self._errors():
            if limit:
                start = max(start, int(self._r.llen(self._key("turns", cid))) - limit)
            rows = self._r.lrange(self._key("turns", cid), start, -1)
        return [json.loads(r) for r in rows]

    # -- transcripts, feedback, reports ----------------------------------------------------

    def transcript(self, conversation_id: str, *, limit: int | None = None) -> list[dict[str, Any]] | None:
        cid = check_id(conversation_id)
        with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.exists(self._key("conv", cid))
            pipe.lrange(self._key("turns", cid), -limit if limit else 0, -1)
            pipe.hgetall(self._key("feedback", cid))
            has_state, rows, feedback = pipe.execute()
        if not has_state and not rows:
            return None
        votes = {k.decode(): json.loads(v) for k, v in feedback.items()}
        return [with_feedback(json.loads(r), votes) for r in rows]

    def add_feedback(self, conversation_id: str, turn_id: str, rating: str, comment: str = "") -> bool:
        cid = check_id(conversation_id)
        check_rating(rating)
        with self._errors():
            if not self._r.hexists(self._key("turnidx", cid), turn_id):
                return False
            vote = {"rating": rating, "comment": comment, "at": time.time()}
            self._r.hset(self._key("feedback", cid), turn_id, encode(vote))
        return True

    def iter_turns(self, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every turn oldest first; only conversations active since ``since`` are read."""
        start = since.timestamp() if since is not None else -math.inf
        turns: list[dict[str, Any]] = []
        with self._errors():
            cids = [c.decode() for c in self._r.zrangebyscore(self._key("conversations"), start, "+inf")]
            for offset in range(0, len(cids), BATCH):
                batch = cids[offset:offset + BATCH]
                pipe = self._r.pipeline(transaction=False)
                for cid in batch:
                    pipe.lrange(self._key("turns", cid), 0, -1)
                    pipe.hgetall(self._key("feedback", cid))
                results = pipe.execute()
                for cid, rows, feedback in zip(batch, results[::2], results[1::2]):
                    votes = {k.decode(): json.loads(v) for k, v in feedback.items()}
                    for raw in rows:
                        turn = with_feedback(json.loads(raw), votes)
                        if turn["created_at"] >= start:
                            turn["conversation_id"] = cid
                            turns.append(turn)
        turns.sort(key=lambda t: (t["created_at"], t["conversation_id"], t["seq"]))
        yield from turns

    def delete(self, conversation_id: str) -> bool:
        cid = check_id(conversation_id)
        with self._errors():
            owner = self._r.get(self._key("owner", cid))
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(*self._keys(cid), self._key("owner", cid))
            pipe.zrem(self._key("conversations"), cid)
            if owner is not None:
                pipe.zrem(self._key("user", owner.decode()), cid)
            removed = pipe.execute()[0]
        return int(removed) > 0

    def purge(self, *, older_than: datetime) -> int:
        """Remove conversations last active before ``older_than`` (token counters expire by TTL)."""
        cutoff = older_than.timestamp()
        index = self._key("conversations")
        count = 0
        with self._errors():
            cids = [c.decode() for c in self._r.zrangebyscore(index, "-inf", f"({cutoff!r}")]
            for offset in range(0, len(cids), BATCH):
                batch = cids[offset:offset + BATCH]
                owners = self._r.mget([self._key("owner", cid) for cid in batch])
                pipe = self._r.pipeline(transaction=True)
                for cid, owner in zip(batch, owners):
                    pipe.delete(*self._keys(cid), self._key("owner", cid))
                    if owner is not None:
                        pipe.zrem(self._key("user", owner.decode()), cid)
                pipe.zrem(index, *batch)
                count += pipe.execute()[-1]
        return count

    # -- users ------------------------------------------------------------------------------

    def owner_of(self, conversation_id: str) -> str | None:
        cid = check_id(conversation_id)
        with self._errors():
            owner = self._r.get(self._key("owner", cid))
        return owner.decode() if owner is not None else None

    def conversations_of(self, user_id: str) -> list[ConversationInfo]:
        uid = check_user_id(user_id)
        index = self._key("user", uid)
        with self._errors():
            entries = [(c.decode(), float(score))
                       for c, score in self._r.zrange(index, 0, -1, desc=True, withscores=True)]
            pipe = self._r.pipeline(transaction=False)
            for cid, _ in entries:
                pipe.get(self._key("owner", cid))
                pipe.get(self._key("conv", cid))
                pipe.lindex(self._key("turns", cid), 0)
            results = pipe.execute()
            found, stale = [], []
            for (cid, score), owner, raw, first in zip(entries, results[::3], results[1::3], results[2::3]):
                if owner is None or owner.decode() != uid:  # deleted, or the index lagged behind
                    stale.append(cid)
                    continue
                created = json.loads(raw)["created_at"] if raw is not None else (
                    json.loads(first)["created_at"] if first is not None else None)
                found.append(ConversationInfo(cid, uid, created, score))
            if stale:
                self._r.zrem(index, *stale)
        return found

    def delete_user(self, user_id: str) -> int:
        uid = check_user_id(user_id)
        count = sum(1 for info in self.conversations_of(uid) if self.delete(info.id))
        with self._errors():
            self._r.delete(self._key("user", uid))
        log.info("deleted %d conversation(s) of a user on request", count)
        return count

    def add_tokens_today(self, tokens: int, *, day: str | None = None) -> int:
        key = self._key("tokens", utc_day(day))
        with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.incrby(key, int(tokens))
            pipe.expire(key, TOKEN_COUNTER_TTL)
            total, _ = pipe.execute()
        return int(total)

    def tokens_today(self, *, day: str | None = None) -> int:
        with self._errors():
            value = self._r.get(self._key("tokens", utc_day(day)))
        return int(value) if value is not None else 0

    def reload_generation(self) -> int:
        with self._errors():
            value = self._r.get(self._key("reload_generation"))
        return int(value) if value is not None else 0

    def request_reload(self) -> int:
        with self._errors():
            return int(self._r.incr(self._key("reload_generation")))


def _redacted(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':' if user else ''}***@{host}"
