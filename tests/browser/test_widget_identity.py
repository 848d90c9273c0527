"""The widget for a signed-in visitor: the host page's token, history on a second device, no history for others."""
from __future__ import annotations

import html
import logging
import time
from typing import Any, Iterator

import jwt
import pytest
from flask import Response
from playwright.sync_api import Browser, BrowserContext, expect

from bot.identity import IdentitySettings
from bot.store import MemoryStore
from bot.testing import FakeLLM
from bot.web import create_app
from bot.web_identity import EXTENSION, register_identity
from chatbox import Chatbox
from liveserver import serving
from webbot import load_bot, write_bot

log = logging.getLogger(__name__)
pytestmark = pytest.mark.browser

SECRET = "b" * 16 + "-browser-identity-secret-for-tests"
HELLO = "Hello! How can I help?"
HOURS = "We're open Monday to Saturday, 9:00 to 18:00."
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop account of {name}</title></head>
<body><h1>Signed in as {name}</h1>
<script src="/widget.js" data-title="Shop" data-identity-token="{token}" defer></script>
</body></html>
"""


def sign(user: str) -> str:
    """What the host site's server does on every page view: a fresh, short-lived token."""
    now = int(time.time())
    return jwt.encode({"sub": user, "name": user.title(), "aud": "hybridbot", "iat": now, "exp": now + 600},
                      SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def identity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bot plus a stand-in host page at /account/<user> that embeds the widget with a token."""
    bot = load_bot(write_bot(tmp_path_factory.mktemp("identity-widget")), store=MemoryStore(), llm=FakeLLM())
    env = {"BOT_IDENTITY_SECRET": SECRET}
    app = create_app(bot, env=env, rate_limits="off", conversation_rate_limits="off")
    if EXTENSION not in app.extensions:
        register_identity(app, app.extensions["hybridbot"].holder, IdentitySettings.from_env(env))

    def account(user: str) -> Response:
        return Response(PAGE.format(name=html.escape(user), token=html.escape(sign(user))), mimetype="text/html")

    app.add_url_rule("/account/<user>", "account", account)
    try:
        with serving(app, "identity-live-server") as url:
            yield url
    finally:
        bot.close()


@pytest.fixture
def device(browser: Browser) -> Iterator[Any]:
    """device(): a fresh browser context (its own storage), as another laptop or phone would be."""
    contexts: list[BrowserContext] = []
    chats: list[Chatbox] = []

    def new(server: str) -> Chatbox:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(8000)
        contexts.append(context)
        chat = Chatbox(context.new_page(), server)
        chats.append(chat)
        return chat

    yield new
    for context in contexts:
        context.close()
    for chat in chats:
        assert chat.errors == [], f"uncaught errors in the page: {chat.errors}"


def test_a_signed_in_visitor_finds_their_conversation_on_a_second_device(identity_server: str, device: Any) -> None:
    laptop = device(identity_server)
    laptop.load("/account/alice")
    laptop.open()
    laptop.ask("hello")
    laptop.ask("opening hours")
    expect(laptop.user_messages).to_have_text(["hello", "opening hours"])
    cid = laptop.conversation_id()

    phone = device(identity_server)  # a new browser: empty localStorage, same user
    phone.load("/account/alice")
    phone.open()
    expect(phone.user_messages).to_have_text(["hello", "opening hours"])
    expect(phone.page.locator(".hb-msg--bot")).to_have_text([HELLO, HOURS])
    assert phone.conversation_id() == cid

    phone.ask("book a visit")  # the conversation goes on from the phone...
    laptop.page.reload()  # ...and the laptop sees it after a reload (the panel stays open)
    expect(laptop.panel).to_be_visible()
    expect(laptop.user_messages).to_have_text(["hello", "opening hours", "book a visit"])


def test_another_user_and_an_anonymous_visitor_see_none_of_it(identity_server: str, device: Any) -> None:
    alice = device(identity_server)
    alice.load("/account/alice")
    alice.open()
    alice.ask("opening hours")
    alice_cid = alice.conversation_id()

    bob = device(identity_server)
    bob.load("/account/bob")
    bob.open()
    expect(bob.log).to_be_visible()
    expect(bob.page.locator(".hb-status")).to_have_count(0)  # done looking for bob's history
    expect(bob.user_messages).to_have_count(0)
    bob.ask("hello")
    assert bob.conversation_id() not in (None, alice_cid)

    stranger = device(identity_server)  # no token, but alice's conversation id planted in its storage
    stranger.load("/")
    stranger.page.evaluate("id => localStorage.setItem('hybridbot:conversation', id)", alice_cid)
    stranger.page.reload()
    stranger.open()
    expect(stranger.page.locator(".hb-status")).to_have_count(0)
    expect(stranger.user_messages).to_have_count(0)
    assert stranger.conversation_id() is None  # the widget dropped the id it may not use
