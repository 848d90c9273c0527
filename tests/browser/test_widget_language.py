"""Chat widget in the host page's language: built-in texts, per-site overrides, failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chatbox import Chatbox

pytestmark = pytest.mark.browser

I18N = Path(__file__).resolve().parents[2] / "web" / "i18n"
STREAM = "**/api/chat/stream"


def _texts(lang: str) -> dict[str, str]:
    return json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8"))


def _site(chat: Chatbox, path: str, html_lang: str, attributes: str = "") -> str:
    """A page of another site (its own origin) in ``html_lang`` that embeds the widget."""
    chat.page.context.grant_permissions(["local-network-access"])
    url = chat.base_url.replace("127.0.0.1", "localhost") + path
    html = (f'<!doctype html><html lang="{html_lang}"><head><title>Shop</title></head><body><h1>Shop</h1>'
            f'<script src="{chat.base_url}/widget.js" {attributes} defer></script></body></html>')
    chat.page.route(url, lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    return url


def _console(chat: Chatbox) -> list[str]:
    warnings: list[str] = []
    chat.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    return warnings


def test_a_german_page_gets_the_widget_in_german_from_another_origin(chat: Chatbox) -> None:
    de = _texts("de")
    chat.page.goto(_site(chat, "/autohaus", "de-AT", 'data-title="Autohaus Nord"'))
    launcher = chat.page.get_by_role("button", name="Chat mit Autohaus Nord")
    expect(launcher).to_be_visible()
    launcher.click()
    expect(chat.panel).to_be_visible()
    expect(chat.page.locator(".hb-root")).to_have_attribute("lang", "de")
    expect(chat.page.locator(".hb-sub")).to_have_text(de["subtitle"])
    box = chat.page.get_by_label(de["message"], exact=True)
    expect(box).to_have_attribute("placeholder", de["placeholder"])
    expect(chat.page.get_by_role("button", name=de["newConversation"])).to_be_visible()
    box.fill("what are your opening hours")
    chat.page.get_by_role("button", name=de["sendMessage"]).click()
    expect(chat.done_turns).to_have_count(1)
    turn = chat.done_turns.last
    expect(turn.get_by_role("group", name=de["rate"])).to_be_visible()
    turn.get_by_role("button", name=de["notHelpful"]).click()
    expect(turn.locator(".hb-fb-status")).to_have_text(de["thanksFeedback"])
    expect(turn.get_by_label(de["whatWrongLabel"])).to_be_visible()
    assert chat.errors == []


def test_data_lang_wins_and_data_strings_replace_single_texts(chat: Chatbox) -> None:
    fr = _texts("fr")
    warnings = _console(chat)
    own = {"placeholder": "Une question sur nos voitures ?", "bogus": "x", "retry": 3, "constructor": "x"}
    chat.page.goto(_site(chat, "/boutique", "de", f"data-lang=\"fr\" data-strings='{json.dumps(own)}'"))
    chat.launcher.click()
    expect(chat.page.locator(".hb-root")).to_have_attribute("lang", "fr")
    box = chat.page.get_by_label(fr["message"], exact=True)
    expect(box).to_have_attribute("placeholder", own["placeholder"])  # the site's own text
    expect(chat.page.get_by_role("button", name=fr["closeChat"])).to_be_visible()  # the rest: French
    assert any("data-strings" in w and "bogus" in w and "retry" in w and "constructor" in w for w in warnings), warnings


def test_a_language_without_texts_is_english_and_fetches_nothing(chat: Chatbox) -> None:
    fetched: list[str] = []
    chat.page.on("request", lambda r: fetched.append(r.url) if "/i18n/" in r.url else None)
    chat.page.goto(_site(chat, "/sklep", "pl"))
    expect(chat.page.get_by_role("button", name="Chat with Chat")).to_be_visible()
    chat.open()
    expect(chat.input).to_have_attribute("placeholder", "Type your message…")
    assert fetched == []


def test_texts_that_fail_to_load_leave_a_working_english_widget(chat: Chatbox) -> None:
    warnings = _console(chat)
    chat.page.route("**/i18n/nl.json", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                    body="[not json"))
    chat.page.goto(_site(chat, "/winkel", "nl"))
    chat.open()
    expect(chat.input).to_have_attribute("placeholder", "Type your message…")
    expect(chat.page.locator(".hb-root")).to_have_attribute("lang", "en")  # what is shown, not what was asked
    chat.ask("hi")
    assert any("nl texts did not load" in w for w in warnings), warnings
    assert chat.errors == []


def test_a_page_button_clicked_while_the_texts_load_still_opens_and_sends(chat: Chatbox) -> None:
    release = []
    chat.page.route("**/i18n/de.json", lambda route: release.append(route))  # held until the click is in
    url = _site(chat, "/laden", "de")
    chat.page.route(url, lambda route: route.fulfill(status=200, content_type="text/html", body=(
        '<!doctype html><html lang="de"><body><button id=ask data-hybridbot-send="what are your opening hours">'
        f'Fragen</button><script src="{chat.base_url}/widget.js" defer></script></body></html>')))
    chat.page.goto(url)
    chat.page.click("#ask")
    for route in release:
        route.continue_()
    expect(chat.done_turns).to_have_count(1)
    expect(chat.user_messages).to_have_text(["what are your opening hours"])


def test_errors_are_said_in_the_page_language_not_in_the_servers(chat: Chatbox) -> None:
    es = _texts("es")
    chat.page.goto(_site(chat, "/tienda", "es"))
    chat.launcher.click()
    box = chat.page.get_by_label(es["message"], exact=True)

    def reply(status: int, code: str, message: str, headers: dict[str, str] | None = None):  # noqa: ANN202
        cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After"}  # as the app's
        return lambda route: route.fulfill(status=status, content_type="application/json",
                                           headers={**cors, **(headers or {})},
                                           body=json.dumps({"error": {"code": code, "message": message}}))

    cases = [
        (400, "message_too_long", "Your message is too long: the limit is 2000 characters.", None,
         es["error_message_too_long"]),
        (400, "some_new_code", "Something English.", None, es["errorRejected"]),
        (429, "rate_limited", "You are sending messages too quickly.", {"Retry-After": "7"},
         f"{es['errorRate']} {es['errorWait'].replace('{seconds}', '7')}"),
        (503, "store_unavailable", "The assistant cannot reach its storage right now.", None, es["errorServer"]),
    ]
    for status, code, message, headers, expected in cases:
        chat.page.route(STREAM, reply(status, code, message, headers))
        box.fill(f"hola {code}")
        box.press("Enter")
        expect(chat.error.last).to_contain_text(expected)
        expect(chat.error.last).not_to_contain_text(message)
        chat.page.unroute(STREAM)
        chat.page.get_by_role("button", name=es["newConversation"]).click()
        box.fill("")
