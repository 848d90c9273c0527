"""Chat widget embedded on another site: options, isolation from host CSS, and safe rendering."""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import Request, Route, expect

from chatbox import Chatbox

pytestmark = pytest.mark.browser

HOSTILE_CSS = """
  * { font-family: "Times New Roman", serif !important; color: #f0f !important; }
  button { background: lime !important; border: 5px dashed red !important; }
  div { padding: 30px !important; }
"""


def _host_page(script: str) -> str:
    return (f"<!doctype html><html><head><style>{HOSTILE_CSS}</style></head>"
            f"<body><h1>Shop</h1><p>Welcome.</p>{script}</body></html>")


def _host_origin(chat: Chatbox) -> str:
    """Another origin for the host site: same loopback server, other host name.

    Chromium lets a page reach loopback addresses only from a secure context (localhost is one)
    with the local-network-access permission. The real app must allow this origin in CORS.
    """
    chat.page.context.grant_permissions(["local-network-access"])
    return chat.base_url.replace("127.0.0.1", "localhost")


def _serve(chat: Chatbox, url: str, html: str) -> None:
    chat.page.route(url, lambda route: route.fulfill(status=200, content_type="text/html", body=html))


def test_embedded_widget_uses_its_own_origin_options_and_styles(chat: Chatbox) -> None:
    sent: list[Request] = []
    chat.page.on("request", lambda r: sent.append(r) if "/api/" in r.url else None)
    script = (f'<script src="{chat.base_url}/widget.js" data-title="Shop helper" data-position="left" '
              'data-greeting="Hi! I can help with **orders**." data-identity-token="tok-123" defer></script>')
    host = f"{_host_origin(chat)}/shop"
    _serve(chat, host, _host_page(script))

    chat.page.goto(host)
    expect(chat.launcher).to_be_visible()
    launcher = chat.launcher.bounding_box()
    assert launcher is not None and launcher["x"] < 100  # data-position="left"
    chat.open()

    expect(chat.page.get_by_role("dialog", name="Shop helper")).to_be_visible()
    expect(chat.page.locator(".hb-turn--greeting")).to_have_text("Assistant saidHi! I can help with orders.")
    expect(chat.page.locator(".hb-turn--greeting strong")).to_have_text("orders")
    chat.ask("hi")
    assert sent and all(r.url.startswith(f"{chat.base_url}/api/") for r in sent)
    assert sent[-1].headers.get("authorization") == "Bearer tok-123"

    styles = chat.page.locator(".hb-msg--user").evaluate(
        "el => [getComputedStyle(el).fontFamily, getComputedStyle(el).color]")
    assert "Times" not in styles[0]
    assert styles[1] == "rgb(255, 255, 255)"
    assert chat.launcher.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(36, 87, 214)"

    chat.page.evaluate("() => HybridBot.identify('tok-456')")
    chat.ask("which models do you have?")
    assert sent[-1].headers.get("authorization") == "Bearer tok-456"


def test_data_api_sends_calls_elsewhere_and_data_open_starts_open(chat: Chatbox) -> None:
    cdn = "http://cdn.test"
    fetched: list[str] = []

    def from_live_server(route: Route) -> None:
        path = route.request.url[len(cdn):]
        fetched.append(path)
        route.fulfill(response=route.fetch(url=chat.base_url + path))

    chat.page.route(f"{cdn}/**", from_live_server)
    host = f"{_host_origin(chat)}/shop"
    _serve(chat, host, _host_page(
        f'<script src="{cdn}/widget.js" data-api="{chat.base_url}/" data-open defer></script>'))

    chat.page.goto(host)
    expect(chat.panel).to_be_visible()  # data-open: open on load ...
    assert chat.page.evaluate("() => document.activeElement === document.body")  # ... without taking focus
    chat.ask("hi")

    assert fetched == ["/widget.js", "/widget.css"]  # the stylesheet comes from next to the script
    assert chat.conversation_id()


def test_bot_formatting_is_built_from_elements_and_markup_stays_text(chat: Chatbox) -> None:
    text = ("**Bold** and *calm* words, see https://example.com/offers. "
            "<b>tag</b> <img src=x onerror=alert(1)>")
    buttons = [
        {"title": "Evil", "payload": "x", "url": "javascript:alert(1)"},
        {"title": "Offers", "payload": "offers", "url": "https://example.com/offers"},
        {"title": "Call me back", "payload": "call me back"},
    ]
    reply = {"conversation_id": "fmtConversation000000", "turn_id": "t1"}
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in [
        ("meta", {**reply, "route": {"kind": "rule"}}),
        ("delta", {"text": text, "index": 0}),
        ("done", {**reply, "replies": [{"text": text, "buttons": buttons}], "incomplete": False}),
    ])
    chat.page.route("**/api/chat/stream",
                    lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body))
    chat.load()
    chat.open()

    turn = chat.ask("anything")

    bubble = turn.locator(".hb-msg--bot")
    expect(bubble).to_contain_text("<b>tag</b> <img src=x onerror=alert(1)>")
    expect(bubble.locator("strong")).to_have_text("Bold")
    expect(bubble.locator("em")).to_have_text("calm")
    link = bubble.get_by_role("link")
    expect(link).to_have_attribute("href", "https://example.com/offers")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    assert chat.page.locator(".hb-log b, .hb-log img").count() == 0
    chip_link = turn.locator("a.hb-chip")
    expect(chip_link).to_have_count(1)
    expect(chip_link).to_have_attribute("href", "https://example.com/offers")
    expect(chip_link).to_have_attribute("rel", "noopener noreferrer")
    expect(turn.get_by_text("Evil")).to_have_count(0)
    expect(turn.get_by_role("button", name="Call me back")).to_be_visible()
    assert chat.dialogs == []


def test_data_bot_keeps_one_conversation_per_bot_on_a_site(chat: Chatbox) -> None:
    origin = _host_origin(chat)
    pages = {name: f"{origin}/{name}" for name in ("sales", "service")}
    for name, url in pages.items():
        _serve(chat, url, _host_page(f'<script src="{chat.base_url}/widget.js" data-bot="{name}" defer></script>'))
    bad = f"{origin}/bad"
    _serve(chat, bad, _host_page(f'<script src="{chat.base_url}/widget.js" data-bot="no spaces!" defer></script>'))
    warnings: list[str] = []
    chat.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    saved = "name => localStorage.getItem(`hybridbot:${name}:conversation`)"

    chat.page.goto(pages["sales"])
    chat.open()
    chat.ask("how much is the X3")
    chat.page.goto(pages["service"])
    expect(chat.panel).to_be_hidden()  # the open state is per bot too
    chat.open()
    expect(chat.page.locator(".hb-msg--user")).to_have_count(0)  # not the sales conversation
    chat.ask("what are your opening hours")
    sales, service = (chat.page.evaluate(saved, name) for name in pages)
    assert sales and service and sales != service
    assert chat.conversation_id() is None  # the shared key stays unused

    chat.page.goto(pages["sales"])
    expect(chat.panel).to_be_visible()  # this bot's panel was open in this tab: it opens again by itself
    expect(chat.page.locator(".hb-msg--user")).to_have_text(["how much is the X3"])  # restored, its own

    chat.page.goto(bad)
    chat.open()
    chat.ask("hi")
    assert chat.conversation_id()  # an invalid name falls back to the shared keys
    assert any("data-bot" in w for w in warnings)
