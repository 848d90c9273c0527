"""Browser-test fixtures: the app on a live loopback server, Debian's Chromium driven by Playwright.

The app under test comes from the session fixture ``browser_app``. Here it is the in-memory stub
in ``stub_app.py``; to run the same tests against the real bot, override it (session scope), e.g.
``return bot.web.create_app(Bot.from_path(ROOT))``. Tests only assert what a visitor can see.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright
from werkzeug.serving import make_server

from chatbox import Chatbox
from stub_app import create_stub_app

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


@pytest.fixture(scope="session")
def browser_app() -> Any:
    """The WSGI app the browser talks to. Override with session scope to test another app."""
    return create_stub_app()


@pytest.fixture(scope="session")
def live_server(browser_app: Any) -> Iterator[str]:
    """Serve ``browser_app`` on 127.0.0.1 and a free port; yield its base URL."""
    server = make_server("127.0.0.1", 0, browser_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="browser-live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


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
