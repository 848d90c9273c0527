"""Chat widget in a real browser: what the visitor sees when the network or the server fails."""
from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Request, Route, expect

from chatbox import Chatbox

pytestmark = pytest.mark.browser

STREAM = "**/api/chat/stream"
EXPIRED = "expiredOnLoad0000000000"  # looks like a server-issued id, but no server knows it


def _sse(*events: tuple[str, dict[str, object]]) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


def _stream_requests(chat: Chatbox) -> list[Request]:
    sent: list[Request] = []
    chat.page.on("request", lambda r: sent.append(r) if r.url.endswith("/api/chat/stream") else None)
    return sent


def test_network_failure_shows_an_error_and_retry_sends_the_same_text(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    sent = _stream_requests(chat)
    chat.page.route(STREAM, lambda route: route.abort("internetdisconnected"))

    chat.send("hi")

    expect(chat.error).to_contain_text("Can't reach the assistant")
    expect(chat.send_button).to_be_enabled()
    assert len(sent) == 1  # never replayed on its own

    chat.page.unroute(STREAM)
    chat.error.get_by_role("button", name="Retry").click()

    expect(chat.done_turns).to_have_count(1)
    expect(chat.error).to_have_count(0)
    expect(chat.user_messages).to_have_text(["hi"])
    assert [json.loads(r.post_data or "{}")["message"] for r in sent] == ["hi", "hi"]


def test_stream_cut_off_midway_keeps_the_partial_answer_and_offers_retry(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    cut = _sse(("meta", {"conversation_id": "c-cut", "turn_id": "t1", "route": {}}),
               ("delta", {"text": "The E-Volt charges ", "index": 0}))
    chat.page.route(STREAM, lambda route: route.fulfill(status=200, content_type="text/event-stream", body=cut))

    chat.send("how fast does the E-Volt charge?")

    expect(chat.error).to_contain_text("interrupted")
    expect(chat.page.locator('.hb-turn[data-state="error"] .hb-msg--bot')).to_have_text("The E-Volt charges ")
    chat.page.unroute(STREAM)
    chat.page.evaluate("() => localStorage.removeItem('hybridbot:conversation')")  # c-cut was fake
    chat.error.get_by_role("button", name="Retry").click()

    expect(chat.done_turns).to_have_count(1)
    expect(chat.page.locator('.hb-turn[data-state="error"]')).to_have_count(0)


def test_error_event_in_the_stream_is_shown_with_retry(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    body = _sse(("meta", {"conversation_id": "c-err", "turn_id": "t1", "route": {}}),
                ("error", {"code": "unavailable", "message": "The assistant is busy right now."}))
    chat.page.route(STREAM, lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body))

    chat.send("hi")

    expect(chat.error).to_contain_text("The assistant is busy right now.")
    expect(chat.error.get_by_role("button", name="Retry")).to_be_enabled()
    expect(chat.error).to_have_attribute("role", "alert")


def test_server_error_never_shows_internal_details(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    body = json.dumps({"error": {"code": "internal", "message": "Traceback: KeyError in bot/app.py"}})
    chat.page.route(STREAM, lambda route: route.fulfill(status=500, content_type="application/json", body=body))

    chat.send("hi")

    expect(chat.error).to_contain_text("Something went wrong on our side")
    expect(chat.error).not_to_contain_text("Traceback")


def test_too_long_message_shows_the_server_message_and_gives_the_text_back(chat: Chatbox) -> None:
    chat.load()
    chat.open()
    expect(chat.input).to_have_attribute("maxlength", "2000")
    long_text = "a" * 2500

    chat.page.evaluate("text => HybridBot.send(text)", long_text)

    expect(chat.error).to_be_visible()
    expect(chat.error).to_have_text(re.compile(r"\w"))
    expect(chat.error.get_by_role("button", name="Retry")).to_have_count(0)
    expect(chat.input).to_have_value(long_text)
    expect(chat.send_button).to_be_enabled()


def test_rate_limit_asks_to_wait_before_retrying(chat: Chatbox) -> None:
    chat.load()
    chat.open()

    def limited(route: Route) -> None:
        route.fulfill(status=429, headers={"Retry-After": "1"}, content_type="application/json",
                      body=json.dumps({"error": {"code": "rate_limited", "message": "Slow down a little."}}))

    chat.page.route(STREAM, limited)
    chat.send("hi")

    expect(chat.error).to_contain_text("Slow down a little. Please wait 1 s.")
    retry = chat.error.get_by_role("button", name="Retry")
    expect(retry).to_be_disabled()
    expect(retry).to_be_enabled(timeout=5000)
    chat.page.unroute(STREAM)
    retry.click()
    expect(chat.done_turns).to_have_count(1)


def test_expired_conversation_starts_a_new_one_silently(chat: Chatbox) -> None:
    chat.page.add_init_script(f"try {{ localStorage.setItem('hybridbot:conversation', '{EXPIRED}') }} catch {{}}")
    chat.load()
    chat.open()

    expect(chat.page.locator(".hb-status")).to_have_count(0)  # done loading
    expect(chat.error).to_have_count(0)
    expect(chat.bot_turns).to_have_count(0)
    chat.ask("hi")
    assert chat.conversation_id() not in (None, EXPIRED)

    # Expired between two messages: the server answers 404 and nothing was applied.
    chat.page.evaluate("() => localStorage.setItem('hybridbot:conversation', 'expiredMidway0000000000')")
    chat.ask("which models do you have?")
    expect(chat.error).to_have_count(0)
    expect(chat.user_messages).to_have_text(["hi", "which models do you have?"])
    assert chat.conversation_id() not in (None, "expiredMidway0000000000")
