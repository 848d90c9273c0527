"""Shared fixtures: the minimal test bot, inline bots, a fixed clock, the fake OpenAI server."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bot.actions import ActionRegistry
from bot.app import Bot
from bot.config import load_config
from bot.fake_openai import FakeOpenAI
from bot.store import MemoryStore
from bot.testing import ChatTester, FakeLLM

from botdata import MINIMAL, NOW  # noqa: F401 - NOW is re-exported for fixtures' users


@pytest.fixture(scope="session")
def router_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("router-cache")


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """A local OpenAI-wire server (one per session), with no scripts and no recorded requests."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()


@pytest.fixture
def minimal_bot(router_cache: Path) -> Bot:
    bot = Bot.from_path(MINIMAL, store=MemoryStore(), llm=FakeLLM(), cache_dir=router_cache)
    yield bot
    bot.close()


@pytest.fixture
def chat(minimal_bot: Bot) -> ChatTester:
    return ChatTester(minimal_bot, now=NOW)


@pytest.fixture
def make_bot(tmp_path: Path, router_cache: Path) -> Callable[..., Bot]:
    """Build a bot from inline YAML: make_bot(intents="...", flows={"a": "..."}, actions={...})."""
    bots: list[Bot] = []

    def make(intents: str, flows: dict[str, str] | None = None, actions: dict[str, Callable] | None = None,
             llm: Any = None, **kwargs: Any) -> Bot:
        root = tmp_path / f"bot{len(bots)}"
        (root / "flows").mkdir(parents=True)
        (root / "intents.yaml").write_text(textwrap.dedent(intents), encoding="utf-8")
        for name, text in (flows or {}).items():
            (root / "flows" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        registry = ActionRegistry()
        for name, fn in (actions or {}).items():
            registry.add(fn, name)
        config = load_config(root, registry, discover_actions=False)
        bot = Bot(config, registry, store=MemoryStore(), llm=llm if llm is not None else FakeLLM(),
                  cache_dir=router_cache, **kwargs)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.close()
