"""Exception types raised by hybridbot, all deriving from BotError."""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class BotError(Exception):
    """Base class of every error hybridbot raises on purpose."""


@dataclass(frozen=True, eq=True)
class ConfigError(BotError):
    """One mistake in a bot's YAML (or Python) sources, with its position.

    ``line`` and ``col`` are 1-based; 0 means "the whole file".
    ``source_line`` is the text of the offending line, used to draw the caret.
    """

    file: str
    line: int
    col: int
    message: str
    source_line: str = ""

    def __post_init__(self) -> None:
        Exception.__init__(self, self.location + ": " + self.message)

    @property
    def location(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.col, self.message)

    def format(self) -> str:
        """``file:line:col: message`` followed by the source line and a caret."""
        text = f"{self.location}: {self.message}"
        if self.line > 0 and self.source_line.strip():
            shown = self.source_line.rstrip("\n").expandtabs(1)
            caret = " " * max(self.col - 1, 0) + "^"
            text += f"\n{shown}\n{caret}"
        return text

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ConfigErrors(BotError):
    """Every ConfigError found while loading a bot, sorted and de-duplicated."""

    def __init__(self, errors: list[ConfigError]) -> None:
        unique = sorted(set(errors), key=ConfigError.sort_key)
        self.errors: list[ConfigError] = unique
        super().__init__(self.summary())

    def summary(self) -> str:
        n = len(self.errors)
        files = len({e.file for e in self.errors})
        return f"{n} error{'s' if n != 1 else ''} in {files} file{'s' if files != 1 else ''}."

    def format(self) -> str:
        return "\n".join(e.format() for e in self.errors) + "\n" + self.summary()


class ActionError(BotError):
    """An action handler failed (raised, timed out, or returned the wrong type)."""

    def __init__(self, action: str, reason: str, source: str = "") -> None:
        self.action = action
        self.reason = reason
        self.source = source
        super().__init__(f"action {action!r} failed: {reason}" + (f" ({source})" if source else ""))


LLM_ERROR_KINDS = ("timeout", "rate_limit", "unavailable", "bad_request", "refused", "budget", "no_key")


class LLMError(BotError):
    """The language model could not answer; ``kind`` says why, never the provider text."""

    def __init__(self, kind: str, detail: str = "", status_code: int | None = None,
                 request_id: str | None = None) -> None:
        if kind not in LLM_ERROR_KINDS:
            raise ValueError(f"unknown LLMError kind {kind!r}")
        self.kind = kind
        self.detail = detail
        self.status_code = status_code
        self.request_id = request_id
        super().__init__(f"LLM {kind}" + (f": {detail}" if detail else ""))


class StoreError(BotError):
    """The conversation store cannot be used (locked, corrupt, read-only, unreachable)."""


class UnknownConversation(BotError):
    """A message continues a conversation that does not exist, has idle-expired, or belongs to
    another verified user (the three are deliberately indistinguishable)."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__("unknown conversation")
