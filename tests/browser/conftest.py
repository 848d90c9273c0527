"""Browser-test fixtures: the app on a live loopback server, Debian's Chromium driven by Playwright.

The app under test is the real one: ``bot.web.create_app`` serving the repository's demo bot,
with its LLM fallback pointed at a local server that speaks the OpenAI wire format
(``bot.fake_openai``, streaming 40 ms per word) so streamed replies arrive the way a visitor
sees them. Tests only assert what a visitor can see.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from bot.fake_openai import FakeOpenAI
from bot.web import create_app
from chatbox import Chatbox
from liveserver import serving

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 8000


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server; its default reply echoes the visitor, word by word."""
    with FakeOpenAI(token_delay=0.04) as fake:
        yield fake


@pytest.fixture(scope="session")
def browser_app(fake_llm_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real app on the demo bot. Rate limits are off (the suite sends more than a visitor
    would) and any origin may embed it (the embed tests use a second host name)."""
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_llm_server.base_url,
           "BOT_CACHE_DIR": str(tmp_path_factory.mktemp("router-cache"))}
    return create_app(ROOT, env=env, store="memory://", allowed_origins=("*",), rate_limits="off",
                      conversation_rate_limits="off", reload=False)


@pytest.fixture(scope="session")
def live_server(browser_app: Any) -> Iterator[str]:
    """Serve ``browser_app`` on 127.0.0.1 and a free port; yield its base URL."""
    with serving(browser_app) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium for the whole session (never a Playwright-downloaded one)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Directory for screenshots (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _new_context(browser: Browser, **options: Any) -> BrowserContext:
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    return context


def _chatbox(context: BrowserContext, live_server: str) -> Iterator[Chatbox]:
    chat = Chatbox(context.new_page(), live_server)
    yield chat
    assert chat.errors == [], f"uncaught errors in the page: {chat.errors}"
    assert chat.dialogs == [], f"the page opened dialogs: {chat.dialogs}"


@pytest.fixture
def desktop(browser: Browser) -> Iterator[BrowserContext]:
    context = _new_context(browser, viewport=DESKTOP)
    yield context
    context.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    context = _new_context(browser, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    yield context
    context.close()


@pytest.fixture
def chat(desktop: BrowserContext, live_server: str) -> Iterator[Chatbox]:
    """A visitor on the demo page, desktop size."""
    yield from _chatbox(desktop, live_server)


@pytest.fixture
def phone_chat(phone: BrowserContext, live_server: str) -> Iterator[Chatbox]:
    """A visitor on the demo page, on a 390x844 phone."""
    yield from _chatbox(phone, live_server)
