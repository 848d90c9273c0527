"""Conversations owned by verified users: ConversationInfo and the per-user export and delete every store offers."""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_USER_ID = 256


@dataclass(frozen=True)
class ConversationInfo:
    """One conversation of a user (times are UNIX seconds; ``created_at`` None if unknown)."""

    id: str
    user_id: str | None
    created_at: float | None
    updated_at: float


def check_user_id(user_id: str) -> str:
    """``user_id`` if it is a non-empty string of at most MAX_USER_ID characters."""
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID:
        raise ValueError(f"user id must be a non-empty string of at most {MAX_USER_ID} characters")
    return user_id


class UserData(ABC):
    """What a store knows per user. A conversation belongs to the user whose id is in its
    ``user_id`` (set by the turn that serves a verified visitor); ownership outlives the idle
    expiry and goes only with the conversation itself (``delete``, ``purge``, ``delete_user``).
    """

    @abstractmethod
    def owner_of(self, conversation_id: str) -> str | None:
        """The user id owning the conversation, None when it is anonymous or unknown."""

    @abstractmethod
    def conversations_of(self, user_id: str) -> list[ConversationInfo]:
        """The user's conversations, most recently active first (idle-expired ones included)."""

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything stored about a user: each conversation with its whole transcript.

        Returns:
            ``{"user_id", "exported_at", "conversations": [{"conversation_id", "created_at",
            "updated_at", "turns": [...]}]}``, oldest conversation first; times are UNIX seconds.
        """
        conversations = []
        for info in reversed(self.conversations_of(check_user_id(user_id))):
            turns = self.transcript(info.id) or []  # type: ignore[attr-defined]
            conversations.append({"conversation_id": info.id, "created_at": info.created_at,
                                  "updated_at": info.updated_at, "turns": turns})
        return {"user_id": user_id, "exported_at": time.time(), "conversations": conversations}

    def delete_user(self, user_id: str) -> int:
        """Delete every conversation of the user (state, transcript, feedback); returns how many."""
        count = sum(1 for info in self.conversations_of(check_user_id(user_id))
                    if self.delete(info.id))  # type: ignore[attr-defined]
        log.info("deleted %d conversation(s) of a user on request", count)
        return count
