"""A conversation as the dialogue engine sees it (Conversation, Record) and the checks and
encodings every store backend shares."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

RATINGS = ("up", "down")
MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class Record:
    """A conversation's stored row: dialogue state plus bookkeeping (times are UNIX seconds)."""

    state: dict[str, Any]
    user_id: str | None
    created_at: float
    updated_at: float
    first_seq: int  # first turn of the current session; earlier turns are transcript only


@dataclass(eq=False)
class Conversation:
    """One conversation, locked for the duration of ``with store.open(id) as conv:``.

    ``state`` belongs to the dialogue engine: mutate it in place (or assign a new dict);
    it is saved with ``turns_added`` when the ``with`` block exits normally.
    """

    id: str
    state: dict[str, Any]
    created_at: float
    updated_at: float
    user_id: str | None = None
    turns_added: list[dict[str, Any]] = field(default_factory=list)
    is_new: bool = False  # created by this open() (unknown or idle-expired id)
    first_seq: int = field(default=1, repr=False)
    next_seq: int = field(default=1, repr=False)
    _load_history: Callable[[int, int | None], list[dict[str, Any]]] | None = field(
        default=None, repr=False)
    _turn_json: list[str] = field(default_factory=list, repr=False)  # turns_added, encoded once

    def new_turns(self) -> list[tuple[dict[str, Any], str]]:
        """``turns_added`` with each one's JSON, for the store to save."""
        return list(zip(self.turns_added, self._turn_json))

    def add_turn(self, turn: dict[str, Any]) -> None:
        """Append a turn; the store assigns ``seq`` and saves it on exit.

        Args:
            turn: JSON-serialisable dict with at least ``turn_id`` (unique in the
                conversation); ``created_at`` (UNIX seconds) defaults to now.
        """
        stored, raw = prepare_turn(turn, self.next_seq + len(self.turns_added))
        if any(t["turn_id"] == stored["turn_id"] for t in self.turns_added):
            raise ValueError(f"turn_id {stored['turn_id']!r} was already added to this conversation")
        self.turns_added.append(stored)
        self._turn_json.append(raw)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Turns of the current session (saved ones, then ``turns_added``), oldest first.

        Args:
            limit: keep only the last ``limit`` turns.
        """
        if limit is not None and limit <= 0:
            return []
        saved = self._load_history(self.first_seq, limit) if self._load_history else []
        turns = saved + self.turns_added
        return turns[-limit:] if limit is not None else turns


def encode(value: Any) -> str:
    """Compact JSON; raises TypeError/ValueError for values JSON cannot hold (incl. NaN)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def timestamp(value: Any) -> float:
    """UNIX seconds from a number, an ISO 8601 string or a datetime (naive = local time)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ValueError(f"not a timestamp: {value!r}")


def utc_day(day: str | None = None) -> str:
    """``day`` checked as YYYY-MM-DD, or today's date in UTC."""
    if day is None:
        return datetime.now(timezone.utc).date().isoformat()
    datetime.strptime(day, "%Y-%m-%d")
    return day


def prepare_turn(turn: dict[str, Any], seq: int) -> tuple[dict[str, Any], str]:
    """A copy of ``turn`` with ``seq`` and a numeric ``created_at``, and its JSON (so a value
    JSON cannot hold fails here, where the caller added it)."""
    if not isinstance(turn, dict):
        raise TypeError(f"a turn must be a dict, got {type(turn).__name__}")
    turn_id = turn.get("turn_id")
    if not isinstance(turn_id, str) or not turn_id:
        raise ValueError("a turn needs a non-empty string 'turn_id'")
    stored = dict(turn)
    stored.pop("feedback", None)
    stored.pop("conversation_id", None)
    stored["created_at"] = timestamp(turn["created_at"]) if "created_at" in turn else time.time()
    stored["seq"] = seq
    return stored, encode(stored)


def with_feedback(turn: dict[str, Any], feedback: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``turn`` with its vote (if any) under ``feedback``."""
    if turn["turn_id"] in feedback:
        turn["feedback"] = dict(feedback[turn["turn_id"]])
    return turn


def check_id(conversation_id: str) -> str:
    """The id, if it is a non-empty string of at most MAX_ID_LENGTH characters."""
    if not isinstance(conversation_id, str) or not conversation_id or len(conversation_id) > MAX_ID_LENGTH:
        raise ValueError(f"conversation id must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    return conversation_id


def check_rating(rating: str) -> None:
    if rating not in RATINGS:
        raise ValueError(f"rating must be one of {', '.join(RATINGS)}, got {rating!r}")
