"""Chat widget in a real browser: sending, streaming, history, quick replies and feedback."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from chatbox import Chatbox

pytestmark = pytest.mark.browser

FALLBACK_QUESTION = "Do you sell winter tyres for the E-Volt?"


def test_launcher_opens_the_panel_and_focuses_the_input(chat: Chatbox) -> None:
    chat.load()
    expect(chat.panel).to_be_hidden()
    expect(chat.launcher).to_have_attribute("aria-expanded", "false")

    chat.open()

    expect(chat.launcher).to_have_attribute("aria-expanded", "true")
    expect(chat.input).to_be_focused()
    expect(chat.log).to_have_attribute("aria-live", "polite")
    expect(chat.page.get_by_role("dialog", name="Northwind Motors assistant")).to_be_visible()


def test_rule_message_gets_its_reply_with_feedback_buttons(chat: Chatbox) -> None:
    chat.load()
    chat.open()

    turn = chat.ask("hi")

    expect(chat.user_messages).to_have_text(["hi"])
    expect(turn.locator(".hb-msg--bot").first).to_have_text(re.compile(r"\w"))
    expect(turn.get_by_role("button", name="Helpful", exact=True)).to_have_attribute("aria-pressed", "false")
    expect(turn.get_by_role("button", name="Not helpful")).to_have_attribute("aria-pressed", "false")
    expect(chat.send_button).to_be_enabled()
    expect(chat.input).to_have_value("")
    assert chat.conversation_id()


def test_streamed_reply_is_shown_while_it_grows(chat: Chatbox) -> None:
    chat.load()
    chat.open()

    chat.send(FALLBACK_QUESTION)
    expect(chat.page.locator(".hb-typing")).to_be_visible()
    chat.input.fill("next question")
    expect(chat.send_button).to_be_disabled()  # one reply at a time
    streaming = chat.page.locator('.hb-turn[data-state="streaming"] .hb-msg--bot')
    expect(streaming).to_have_text(re.compile(r"\S"))
    partial = streaming.first.text_content() or ""
    expect(chat.page.locator(".hb-typing")).to_have_count(0)

    expect(chat.done_turns).to_have_count(1)
    final = chat.done_turns.last.locator(".hb-msg--bot").first.text_content() or ""
    assert len(final) > len(partial.strip()) > 0
    assert final.startswith(partial.strip())
    expect(chat.send_button).to_be_enabled()
    expect(chat.input).to_have_value("next question")


def test_history_is_restored_after_a_reload(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    chat.ask("hi")
    chat.ask("which models do you have?")
    before = chat.transcript()
    conversation = chat.conversation_id()

    chat.page.reload()

    expect(chat.panel).to_be_visible()  # stays open across page loads in this tab
    expect(chat.done_turns).to_have_count(2)
    assert chat.transcript() == before
    assert chat.conversation_id() == conversation
    chat.ask("hello again")
    assert chat.conversation_id() == conversation


def test_quick_reply_sends_its_payload_and_retires_older_buttons(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    chat.ask("which models do you have?")
    turn = chat.done_turns.nth(0)
    first = turn.locator("button.hb-chip").first
    title = first.text_content()

    first.click()

    expect(chat.done_turns).to_have_count(2)
    expect(chat.user_messages.last).to_have_text(title or "")
    expect(turn.locator("button.hb-chip")).to_have_count(0)


def test_thumbs_down_is_recorded_by_the_server(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    turn = chat.ask("hi")
    down = turn.get_by_role("button", name="Not helpful")
    up = turn.get_by_role("button", name="Helpful", exact=True)

    down.click()

    expect(down).to_have_attribute("aria-pressed", "true")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(turn.get_by_role("status")).to_have_text(re.compile("Thanks"))
    transcript = chat.page.request.get(f"{chat.base_url}/api/conversations/{chat.conversation_id()}").json()
    assert transcript["turns"][-1]["feedback"]["rating"] == "down"

    chat.page.reload()
    restored = chat.done_turns.last
    expect(restored.get_by_role("button", name="Not helpful")).to_have_attribute("aria-pressed", "true")


def test_a_thumbs_down_can_carry_a_comment_for_the_analysts(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    turn = chat.ask("hi")
    down = turn.get_by_role("button", name="Not helpful")
    down.focus()
    chat.page.keyboard.press("Enter")
    box = turn.get_by_role("textbox", name="What was wrong with this answer? (optional)")
    expect(box).to_be_visible()
    expect(down).to_be_focused()  # the field appears next in tab order; focus is not taken
    chat.page.keyboard.press("Tab")
    expect(box).to_be_focused()
    box.fill("It did not say the opening hours")
    box.press("Enter")
    expect(turn.get_by_role("status")).to_have_text(re.compile("helps us improve"))
    expect(box).to_have_count(0)
    transcript = chat.page.request.get(f"{chat.base_url}/api/conversations/{chat.conversation_id()}").json()
    assert transcript["turns"][-1]["feedback"] == {"rating": "down", "comment": "It did not say the opening hours"}
    turn.get_by_role("button", name="Helpful", exact=True).click()  # changing the vote hides nothing it should not
    expect(turn.get_by_role("textbox")).to_have_count(0)


def test_markup_in_messages_is_shown_as_text(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    attack = "<img src=x onerror=alert(1)><script>alert(2)</script>"

    chat.ask(attack)

    expect(chat.user_messages.last).to_have_text(attack)
    assert chat.page.locator("img").count() == 0
    assert chat.page.locator(".hb-log script").count() == 0
    assert chat.dialogs == []


def test_page_buttons_and_the_javascript_api_talk_to_the_widget(chat: Chatbox) -> None:
    chat.load()

    chat.page.get_by_role("button", name="Get a price").first.click()

    expect(chat.panel).to_be_visible()
    expect(chat.user_messages).to_have_text(["How much is the X3?"])
    expect(chat.done_turns).to_have_count(1)

    chat.page.evaluate("() => HybridBot.close()")
    expect(chat.panel).to_be_hidden()
    chat.page.evaluate("() => HybridBot.send('hi')")
    expect(chat.panel).to_be_visible()
    expect(chat.done_turns).to_have_count(2)
    expect(chat.user_messages.last).to_have_text("hi")


def test_new_conversation_button_forgets_the_old_one(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    chat.ask("hi")
    old = chat.conversation_id()

    chat.page.get_by_role("button", name="Start a new conversation").click()

    expect(chat.user_messages).to_have_count(0)
    expect(chat.bot_turns).to_have_count(0)
    expect(chat.input).to_be_focused()
    assert chat.conversation_id() is None
    chat.ask("hi")
    assert chat.conversation_id() not in (None, old)
