"""Chat widget in a real browser: keyboard use, phone layout, reduced motion, and screenshots."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from chatbox import Chatbox

pytestmark = pytest.mark.browser

IS_FOCUSED_JS = "el => el.getRootNode().activeElement === el"


def test_keyboard_only_visitor_can_chat_and_get_back_to_the_page(chat: Chatbox) -> None:
    chat.load()
    for _ in range(60):
        chat.page.keyboard.press("Tab")
        if chat.launcher.evaluate(IS_FOCUSED_JS):
            break
    expect(chat.launcher).to_be_focused()
    assert chat.launcher.evaluate("el => getComputedStyle(el).outlineStyle") == "solid"  # visible ring

    chat.page.keyboard.press("Enter")
    expect(chat.panel).to_be_visible()
    expect(chat.input).to_be_focused()

    chat.page.keyboard.type("hi")
    chat.page.keyboard.press("Shift+Enter")
    expect(chat.input).to_have_value("hi\n")
    expect(chat.user_messages).to_have_count(0)
    chat.page.keyboard.press("Backspace")
    chat.page.keyboard.press("Enter")
    expect(chat.done_turns).to_have_count(1)
    expect(chat.user_messages).to_have_text(["hi"])

    chat.page.keyboard.press("Tab")
    expect(chat.send_button).to_be_focused()
    chat.page.keyboard.press("Escape")
    expect(chat.panel).to_be_hidden()
    expect(chat.launcher).to_be_focused()
    expect(chat.launcher).to_have_attribute("aria-expanded", "false")


def test_every_control_has_an_accessible_name(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    chat.ask("which models do you have?")

    unnamed = chat.page.locator("#hybridbot").evaluate("""host => [...host.shadowRoot.querySelectorAll(
        'button, a, textarea, input')].filter(el => !(el.getAttribute('aria-label') || el.labels?.length
        || el.textContent.trim())).map(el => el.outerHTML)""")
    assert unnamed == []
    expect(chat.page.get_by_role("button", name="Close chat")).to_be_visible()
    expect(chat.page.get_by_role("button", name="Start a new conversation")).to_be_visible()
    expect(chat.log).to_have_attribute("role", "log")


def test_phone_panel_covers_the_whole_screen(phone_chat: Chatbox, artifacts: Path) -> None:
    chat = phone_chat
    chat.load()
    chat.page.screenshot(path=str(artifacts / "phone-page.png"))

    chat.open()

    assert chat.panel.bounding_box() == {"x": 0, "y": 0, "width": 390, "height": 844}
    expect(chat.launcher).to_be_hidden()
    chat.ask("hi")
    chat.ask("which models do you have?")
    chat.page.screenshot(path=str(artifacts / "phone-chat.png"))
    chat.page.get_by_role("button", name="Close chat").click()
    expect(chat.panel).to_be_hidden()
    expect(chat.launcher).to_be_visible()


def test_desktop_panel_sits_above_the_launcher(chat: Chatbox, artifacts: Path) -> None:
    chat.load()
    chat.page.screenshot(path=str(artifacts / "desktop-page.png"), full_page=True)
    chat.open()
    chat.ask("hi")
    chat.ask("which models do you have?")
    chat.ask("Is the showroom open on public holidays?")

    panel = chat.panel.bounding_box()
    launcher = chat.launcher.bounding_box()
    assert panel is not None and launcher is not None
    assert panel["y"] >= 0 and panel["y"] + panel["height"] <= launcher["y"]
    assert panel["x"] + panel["width"] <= 1280 and panel["x"] > 1280 / 2
    assert 320 <= panel["width"] <= 420
    chat.page.screenshot(path=str(artifacts / "desktop-chat.png"))


def test_reduced_motion_turns_animations_off(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    assert chat.panel.evaluate("el => getComputedStyle(el).animationName") == "hb-in"

    chat.page.emulate_media(reduced_motion="reduce")
    chat.page.reload()

    expect(chat.panel).to_be_visible()
    assert chat.panel.evaluate("el => getComputedStyle(el).animationName") == "none"
    assert chat.launcher.evaluate("el => getComputedStyle(el).transitionDuration") == "0s"
