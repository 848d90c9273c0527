"""A small bot directory, gated fake LLM, failing stores and SSE parsing for the web tests."""
from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from bot.app import Bot
from bot.errors import StoreError
from bot.llm import LLMStream
from bot.store import MemoryStore
from bot.testing import FakeLLM

INTENTS = """\
    version: 1
    router: {threshold: 0.3, margin: 0.02}
    intents:
      greet:
        examples: [hi, hello, hey there, good morning, hello bot, hi there, hey, good evening]
        patterns: ['^(hi|hello|hey)[!. ]*$']
      opening_hours:
        examples: [when are you open, opening hours, what time do you close, are you open on sunday,
                   hours today, when do you open, business hours, closing time]
        patterns: ['\\bopening hours\\b']
      book_visit:
        examples: [book a visit, I want to visit, schedule a visit, can I come by, arrange a visit,
                   visit the showroom, plan a visit, book an appointment]
        patterns: ['\\bbook a visit\\b']
      out_of_scope:
        examples: ["what's the weather", tell me a joke, who won the game, recipe for pancakes,
                   what is the capital of france, play some music, how tall is mount everest, write a poem]
"""
FLOWS = {
    "greet": """\
        version: 1
        trigger: greet
        steps:
          - say: "Hello! How can I help?"
            buttons: ["Opening hours", "Book a visit"]
    """,
    "opening_hours": """\
        version: 1
        trigger: opening_hours
        steps:
          - say: "We're open Monday to Saturday, 9:00 to 18:00."
    """,
    "book_visit": """\
        version: 1
        trigger: book_visit
        slots:
          visitor: {ask: "What's your name?"}
        steps:
          - ask: visitor
          - say: "See you soon, {{ slots.visitor }}."
    """,
    "fallback": """\
        version: 1
        system_prompt: You are the assistant of a small shop. Answer briefly.
        model: fake-model
        unavailable: "I can only help with opening hours and visits right now."
    """,
}


def write_bot(root: Path, flows: dict[str, str] | None = None) -> Path:
    """Write the test bot into ``root`` (``flows`` replaces or adds flow files) and return it."""
    (root / "flows").mkdir(parents=True, exist_ok=True)
    (root / "intents.yaml").write_text(textwrap.dedent(INTENTS), encoding="utf-8")
    for name, text in {**FLOWS, **(flows or {})}.items():
        (root / "flows" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def load_bot(root: Path, *, store: Any = None, llm: Any = None) -> Bot:
    return Bot.from_path(root, store=store if store is not None else MemoryStore(),
                         llm=llm if llm is not None else FakeLLM(), env={})


class GatedLLM(FakeLLM):
    """A FakeLLM that stops before chunk ``wait_before`` until the test sets ``gate``."""

    def __init__(self, replies: Iterable[str], *, wait_before: int = 0) -> None:
        super().__init__(list(replies))
        self.wait_before = wait_before
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def stream(self, messages: list[dict], **kw: Any) -> LLMStream:
        inner = super().stream(messages, **kw)

        def produce(stream: LLMStream) -> Iterator[str]:
            for i, chunk in enumerate(inner):
                if i == self.wait_before:
                    self.waiting.set()
                    if not self.gate.wait(10):
                        raise AssertionError("the test never opened the gate")
                yield chunk
            stream.usage = inner.usage
        return LLMStream(produce)


class FlakyStore(MemoryStore):
    """A MemoryStore that raises StoreError everywhere while ``down`` is set."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreError("connection refused (test)")

    def _load(self, cid: str) -> Any:
        self._check()
        return super()._load(cid)

    def transcript(self, conversation_id: str, **kw: Any) -> Any:
        self._check()
        return super().transcript(conversation_id, **kw)

    def add_feedback(self, *args: Any, **kw: Any) -> bool:
        self._check()
        return super().add_feedback(*args, **kw)

    def iter_turns(self, **kw: Any) -> Any:
        self._check()
        return super().iter_turns(**kw)

    def ping(self) -> None:
        self._check()


def parse_sse(chunks: Iterable[bytes | str]) -> list[tuple[str, Any]]:
    """(event, data) pairs of an SSE body; comments come back as ("comment", text)."""
    text = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            events.append(("comment", block[1:].strip()))
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


class EndlessLLM(FakeLLM):
    """A FakeLLM that always has a reply (for fuzzing, where the number of calls is unknown)."""

    def stream(self, messages: list[dict], **kw: Any) -> LLMStream:
        self.replies.append("I am a fake model.")
        return super().stream(messages, **kw)
