"""MemoryStore: conversations in this process's memory, for tests and single-process demos."""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from bot.ownership import ConversationInfo, check_user_id
from bot.conversation import Record, check_id, check_rating, encode, utc_day, with_feedback
from bot.store import StoreBackend

log = logging.getLogger(__name__)


class MemoryStore(StoreBackend):
    """Everything in this process's memory (JSON copies, as the other backends keep): tests and demos."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._mutex = threading.Lock()
        self._convs: dict[str, _MemoryEntry] = {}
        self._tokens: dict[str, int] = {}
        self._generation = 0

    def _load(self, cid: str) -> tuple[Record | None, int]:
        with self._mutex:
            entry = self._convs.get(cid, _MemoryEntry())
            return (Record(**json.loads(entry.record)) if entry.record else None), len(entry.turns)

    def _save(self, cid: str, token: Any, record: Record, turns: list[tuple[dict[str, Any], str]]) -> None:
        raw, encoded = encode(record.__dict__), [data for _, data in turns]
        with self._mutex:
            entry = self._convs.setdefault(cid, _MemoryEntry())
            entry.record = raw
            entry.turns.extend(encoded)

    def _history(self, cid: str, first_seq: int, limit: int | None) -> list[dict[str, Any]]:
        with self._mutex:
            rows = self._convs.get(cid, _MemoryEntry()).turns[first_seq - 1:]
        return [json.loads(r) for r in (rows[-limit:] if limit else rows)]

    def _turns_of(self, cid: str, entry: _MemoryEntry, limit: int | None = None) -> list[dict[str, Any]]:
        rows = entry.turns[-limit:] if limit else entry.turns
        return [with_feedback(json.loads(r), entry.feedback) for r in rows]

    def transcript(self, conversation_id: str, *, limit: int | None = None) -> list[dict[str, Any]] | None:
        with self._mutex:
            entry = self._convs.get(check_id(conversation_id))
            return self._turns_of(conversation_id, entry, limit) if entry else None

    def add_feedback(self, conversation_id: str, turn_id: str, rating: str, comment: str = "") -> bool:
        check_rating(rating)
        with self._mutex:
            entry = self._convs.get(check_id(conversation_id))
            if entry is None or not any(json.loads(r)["turn_id"] == turn_id for r in entry.turns):
                return False
            entry.feedback[turn_id] = {"rating": rating, "comment": comment, "at": time.time()}
        return True

    def iter_turns(self, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        start = since.timestamp() if since is not None else -math.inf
        with self._mutex:
            turns = [dict(t, conversation_id=cid) for cid, entry in self._convs.items()
                     for t in self._turns_of(cid, entry) if t["created_at"] >= start]
        yield from sorted(turns, key=lambda t: (t["created_at"], t["conversation_id"], t["seq"]))

    def delete(self, conversation_id: str) -> bool:
        with self._mutex:
            return self._convs.pop(check_id(conversation_id), None) is not None

    def purge(self, *, older_than: datetime) -> int:
        cutoff = older_than.timestamp()
        day = datetime.fromtimestamp(cutoff, timezone.utc).date().isoformat()
        with self._mutex:
            old = [cid for cid, entry in self._convs.items()
                   if entry.record is None or json.loads(entry.record)["updated_at"] < cutoff]
            for cid in old:
                del self._convs[cid]
            for stale in [d for d in self._tokens if d < day]:
                del self._tokens[stale]
        return len(old)

    def owner_of(self, conversation_id: str) -> str | None:
        with self._mutex:
            entry = self._convs.get(check_id(conversation_id))
            return json.loads(entry.record)["user_id"] if entry and entry.record else None

    def conversations_of(self, user_id: str) -> list[ConversationInfo]:
        check_user_id(user_id)
        with self._mutex:
            records = [(cid, json.loads(e.record)) for cid, e in self._convs.items() if e.record]
        found = [ConversationInfo(cid, r["user_id"], r["created_at"], r["updated_at"])
                 for cid, r in records if r["user_id"] == user_id]
        return sorted(found, key=lambda c: (c.updated_at, c.id), reverse=True)

    def add_tokens_today(self, tokens: int, *, day: str | None = None) -> int:
        key = utc_day(day)
        with self._mutex:
            self._tokens[key] = self._tokens.get(key, 0) + int(tokens)
            return self._tokens[key]

    def tokens_today(self, *, day: str | None = None) -> int:
        with self._mutex:
            return self._tokens.get(utc_day(day), 0)

    def reload_generation(self) -> int:
        return self._generation

    def request_reload(self) -> int:
        with self._mutex:
            self._generation += 1
            return self._generation


@dataclass
class _MemoryEntry:
    record: str | None = None  # JSON of a Record
    turns: list[str] = field(default_factory=list)  # JSON turns in seq order
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)  # turn_id -> vote
