"""A page object for the chat widget: the controls a visitor uses, found by role and label."""
from __future__ import annotations

import logging
from typing import Any

from playwright.sync_api import Locator, Page, expect

log = logging.getLogger(__name__)

# The element that has focus, looking through open shadow roots (the widget lives in one).
DEEP_FOCUS_JS = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  return el ? el.className || el.tagName.toLowerCase() : null;
}"""


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
        self.panel.evaluate("el => Promise.all(el.getAnimations().map(a => a.finished))")

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
