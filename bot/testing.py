"""Test helpers for bots: FakeLLM, ChatTester, YAML conversation tests and their pytest plugin."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import ConfigError, LLMError
from .yamlfile import read

log = logging.getLogger(__name__)


class FakeLLM:
    """A scripted LLM: each call takes the next reply; a call with none left fails loudly.

    A reply may be a string (streamed word by word) or an ``LLMError`` instance (raised).
    ``calls`` keeps the messages of every call so tests can check what the model was sent.
    """

    model = "fake-llm"

    def __init__(self, replies: Sequence[str | LLMError] = (), *, available: bool = True,
                 intents: dict[str, str | None] | None = None) -> None:
        self.replies = list(replies)
        self.available = available
        self.intents = dict(intents or {})  # text -> intent that choose_intent answers
        self.calls: list[list[dict]] = []
        self.intent_calls: list[tuple[str, list[str]]] = []

    def stream(self, messages: list[dict], *, max_tokens: int | None = None, **_: Any) -> Any:
        from .llm import LLMStream, LLMUsage
        from .prompting import estimate_message_tokens, estimate_tokens

        self.calls.append(messages)
        if not self.replies:
            raise AssertionError(f"unexpected LLM call #{len(self.calls)}: the FakeLLM has no reply left "
                                 f"(last user message: {messages[-1]['content'][:80]!r})")
        reply = self.replies.pop(0)
        if isinstance(reply, LLMError):
            raise reply
        chunks = re.findall(r"\S+\s*|\s+", reply)
        usage = LLMUsage(self.model, estimate_message_tokens(messages), estimate_tokens(reply), 0.0, 0.0,
                         "stop", False, None, estimated=True)
        return LLMStream.from_text(chunks, usage)

    def complete(self, messages: list[dict], **kw: Any) -> tuple[str, Any]:
        stream = self.stream(messages, **kw)
        return stream.text(), stream.usage

    def choose_intent(self, text: str, candidates: list[tuple[str, str]], *, max_tokens: int = 20) -> str | None:
        self.intent_calls.append((text, [name for name, _ in candidates]))
        if text not in self.intents:
            raise AssertionError(f"unexpected LLM routing call for {text!r}")
        return self.intents[text]


class ChatTester:
    """Talk to a bot in a test: ``ChatTester(bot).say("hi").text``; keeps one conversation."""

    def __init__(self, bot: Any, *, now: datetime | None = None, user: dict | None = None) -> None:
        self.bot = bot
        self.now = now
        self.user = user
        self.conversation_id: str | None = None

    def say(self, text: str) -> Any:
        turn = self.bot.handle(self.conversation_id, text, user=self.user, now=self.now)
        self.conversation_id = turn.conversation_id
        return turn


# -- YAML conversation tests ---------------------------------------------------------------------
CHECKS = ("bot", "bot_contains", "bot_matches", "intent", "flow", "slots", "route", "buttons")
TURN_KEYS = ("user",) + CHECKS
TEST_KEYS = ("name", "now", "llm", "offline", "turns", "user_profile")


@dataclass
class ConversationCase:
    name: str
    file: str
    line: int
    turns: list[tuple[int, dict]]
    now: datetime | None = None
    llm: list[str] | None = None
    offline: bool = False
    user: dict | None = None


@dataclass
class CaseResult:
    case: ConversationCase
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(path: Path, root: Path) -> list[ConversationCase]:
    """Read one conversation-test file; shape mistakes are ConfigErrors with file:line:col."""
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
    doc = read(path, name)
    data = doc.data
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("tests"), list):
        raise ConfigError(name, 1, 1, "a conversation-test file needs 'version: 1' and a 'tests:' list", doc.line_text(1))
    cases = []
    for i, raw in enumerate(data["tests"]):
        if not isinstance(raw, dict):
            raise doc.error(("tests", i), "each test must be a mapping with 'name' and 'turns'")
        for key in raw:
            if key not in TEST_KEYS:
                raise doc.error(("tests", i, key), f"unknown key {key!r} in a test; allowed: {', '.join(TEST_KEYS)}",
                                key=True)
        if not isinstance(raw.get("turns"), list) or not raw["turns"]:
            raise doc.error(("tests", i), "a test needs a non-empty 'turns:' list", key=True)
        turns = []
        for j, t in enumerate(raw["turns"]):
            if not isinstance(t, dict) or "user" not in t:
                raise doc.error(("tests", i, "turns", j), "each turn needs 'user:' (what the visitor says)")
            for key in t:
                if key not in TURN_KEYS:
                    raise doc.error(("tests", i, "turns", j, key), f"unknown key {key!r} in a turn; allowed: "
                                    f"{', '.join(TURN_KEYS)}", key=True)
            turns.append((doc.position(("tests", i, "turns", j))[0], t))
        now = raw.get("now")
        cases.append(ConversationCase(
            str(raw.get("name") or f"test {i + 1}"), name, doc.position(("tests", i))[0], turns,
            datetime.fromisoformat(str(now)) if now else None,
            [str(r) for r in raw["llm"]] if raw.get("llm") is not None else None,
            bool(raw.get("offline", False)), raw.get("user_profile")))
    return cases


def _check(turn: Any, expect: dict) -> list[str]:
    problems = []
    texts = [r["text"] for r in turn.replies]
    if "bot" in expect:
        want = expect["bot"]
        got: Any = texts if isinstance(want, list) else turn.text
        if got != want:
            problems.append(f"expected bot {want!r}, got {got!r}")
    if "bot_contains" in expect and str(expect["bot_contains"]) not in turn.text:
        problems.append(f"expected the reply to contain {expect['bot_contains']!r}, got {turn.text!r}")
    if "bot_matches" in expect and not re.search(str(expect["bot_matches"]), turn.text):
        problems.append(f"expected the reply to match /{expect['bot_matches']}/, got {turn.text!r}")
    for key, got in (("intent", turn.intent), ("flow", turn.flow), ("route", turn.kind)):
        if key in expect and expect[key] != got:
            problems.append(f"expected {key} {expect[key]!r}, got {got!r}")
    if "slots" in expect:
        for name, want in (expect["slots"] or {}).items():
            if turn.slots.get(name) != want:
                problems.append(f"expected slot {name!r} = {want!r}, got {turn.slots.get(name)!r}")
    if "buttons" in expect and list(expect["buttons"] or []) != turn.buttons:
        problems.append(f"expected buttons {expect['buttons']!r}, got {turn.buttons!r}")
    return problems


def run_case(bot: Any, case: ConversationCase) -> CaseResult:
    """Play one conversation against ``bot`` (its LLM is replaced for the duration)."""
    result = CaseResult(case)
    saved = bot.llm
    bot.llm = FakeLLM([], available=False) if case.offline else FakeLLM(case.llm or [])
    try:
        chat = ChatTester(bot, now=case.now, user=case.user)
        for line, expect in case.turns:
            try:
                turn = chat.say(str(expect["user"]))
            except AssertionError as exc:
                result.failures.append(f"{case.file}:{line}: {expect['user']!r}: {exc}")
                break
            result.failures.extend(f"{case.file}:{line}: {expect['user']!r}: {p}" for p in _check(turn, expect))
            if result.failures:
                break
    finally:
        bot.llm = saved
    return result


def conversation_files(root: Path) -> list[Path]:
    return sorted((root / "tests" / "conversations").glob("*.yaml"))


def run_all(bot: Any, root: Path) -> Iterator[CaseResult]:
    for path in conversation_files(root):
        for case in load_cases(path, root):
            yield run_case(bot, case)


# -- pytest plugin (entry point pytest11 = hybridbot) ----------------------------------------------
_BOTS: dict[Path, Any] = {}


def _bot_for(root: Path) -> Any:
    if root not in _BOTS:
        from .app import Bot
        from .store import MemoryStore

        _BOTS[root] = Bot.from_path(root, store=MemoryStore(), llm=FakeLLM())
    return _BOTS[root]


def pytest_collect_file(parent: Any, file_path: Path) -> Any:
    if file_path.suffix == ".yaml" and file_path.parent.name == "conversations" and file_path.parent.parent.name == "tests":
        return ConversationFile.from_parent(parent, path=file_path)
    return None


try:
    import pytest

    class ConversationFile(pytest.File):
        def collect(self) -> Iterator[Any]:
            root = self.path.parent.parent.parent
            for case in load_cases(self.path, root):
                yield ConversationItem.from_parent(self, name=case.name, case=case, root=root)

    class ConversationItem(pytest.Item):
        def __init__(self, *, case: ConversationCase, root: Path, **kw: Any) -> None:
            super().__init__(**kw)
            self.case, self.root = case, root

        def runtest(self) -> None:
            result = run_case(_bot_for(self.root), self.case)
            if not result.passed:
                raise ConversationFailure("\n".join(result.failures))

        def repr_failure(self, excinfo: Any, style: Any = None) -> str:
            if isinstance(excinfo.value, ConversationFailure):
                return str(excinfo.value)
            return super().repr_failure(excinfo)

        def reportinfo(self) -> tuple[Path, int, str]:
            return self.path, self.case.line - 1, f"conversation: {self.case.name}"

    class ConversationFailure(AssertionError):
        pass
except ImportError:  # pragma: no cover - pytest is only needed to run tests
    pass
