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
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright
from werkzeug.serving import make_server

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
# The element that has focus, looking through open shadow roots (the widget lives in one).
DEEP_FOCUS_JS = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  return el ? el.className || el.tagName.toLowerCase() : null;
}"""


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


class Chatbox:
    """Drives the widget on a page the way a visitor would, through its visible controls."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.launcher = page.locator(".hb-launcher")
        self.panel = page.locator(".hb-panel")
        self.log = page.get_by_role("log")
        self.input = page.get_by_label("Message", exact=True)
        self.send_button = page.get_by_role("button", name="Send message")
        self.user_messages = page.locator(".hb-msg--user")
        self.bot_turns = page.locator(".hb-turn:not(.hb-turn--greeting)")
        self.done_turns = page.locator('.hb-turn[data-state="done"]')
        self.chips = page.locator("button.hb-chip")
        self.error = page.locator(".hb-error")

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def load(self, path: str = "/") -> None:
        self.page.goto(self.base_url + path)
        expect(self.launcher).to_be_visible()

    def open(self) -> None:
        self.launcher.click()
        expect(self.panel).to_be_visible()

    def send(self, text: str) -> None:
        self.input.fill(text)
        self.input.press("Enter")

    def ask(self, text: str) -> Locator:
        """Send ``text`` and wait until its reply is complete; return that bot turn."""
        before = self.done_turns.count()
        self.send(text)
        expect(self.done_turns).to_have_count(before + 1)
        return self.done_turns.last

    def transcript(self) -> list[str]:
        """Visible messages in order, each prefixed with who sent it."""
        return self.page.locator(".hb-msg:visible").evaluate_all(
            "els => els.map(e => (e.classList.contains('hb-msg--user') ? 'you: ' : 'bot: ') + e.textContent)")

    def focused(self) -> str | None:
        return self.page.evaluate(DEEP_FOCUS_JS)

    def conversation_id(self) -> str | None:
        return self.page.evaluate("() => localStorage.getItem('hybridbot:conversation')")


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
