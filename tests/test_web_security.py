"""Web security: input validation, JSON errors, rate limits, CORS, security headers, admin auth."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from bot.app import Bot
from bot.web import create_app
from bot.web_settings import WebSettings
from webbot import load_bot, write_bot

TOKEN = "test-admin-token-0123456789"
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors https://shop.example; base-uri 'none'; form-action 'none'")


@pytest.fixture(scope="module")
def bot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bot(tmp_path_factory.mktemp("securebot"))


@pytest.fixture
def bot(bot_dir: Path) -> Bot:
    bot = load_bot(bot_dir)
    yield bot
    bot.close()


def make_client(bot: Bot, **settings: Any) -> FlaskClient:
    settings.setdefault("rate_limits", "off")
    settings.setdefault("conversation_rate_limits", "off")
    return create_app(bot, env={}, **settings).test_client()


@pytest.fixture
def client(bot: Bot) -> FlaskClient:
    return make_client(bot)


def error(resp: Any) -> tuple[int, str]:
    assert resp.mimetype == "application/json", resp.data
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return resp.status_code, body["error"]["code"]


# -- input validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"data": "hello", "content_type": "text/plain"}, (415, "unsupported_media_type")),
    ({"data": "message=hello", "content_type": "application/x-www-form-urlencoded"},
     (415, "unsupported_media_type")),
    ({"data": "{not json", "content_type": "application/json"}, (400, "invalid_json")),
    ({"data": b'{"message": "caf\xe9"}', "content_type": "application/json"}, (400, "invalid_json")),
    ({"data": '{"message": "\\ud800"}', "content_type": "application/json"}, (400, "invalid_message")),
    ({"json": ["hello"]}, (400, "invalid_body")),
    ({"json": {}}, (400, "missing_message")),
    ({"json": {"message": 42}}, (400, "invalid_message")),
    ({"json": {"message": ["hi"]}}, (400, "invalid_message")),
    ({"json": {"message": "   \n\t "}}, (400, "empty_message")),
    ({"json": {"message": "\x00\x01\x1b\u200b"}}, (400, "empty_message")),
    ({"json": {"message": "x" * 2001}}, (400, "message_too_long")),
    ({"json": {"message": "hi", "conversation_id": "../../etc/passwd"}}, (400, "invalid_conversation_id")),
    ({"json": {"message": "hi", "conversation_id": 12345678901234567890}}, (400, "invalid_conversation_id")),
    ({"json": {"message": "hi", "conversation_id": "a" * 129}}, (400, "invalid_conversation_id")),
])
def test_bad_chat_requests_get_json_errors(client: FlaskClient, path: str, kwargs: dict, expected: tuple) -> None:
    assert error(client.post(path, **kwargs)) == expected


def test_message_too_long_names_the_limit(client: FlaskClient) -> None:
    resp = client.post("/api/chat", json={"message": "x" * 2001})
    assert resp.get_json()["error"]["message"] == "Your message is too long: the limit is 2000 characters."
    assert client.post("/api/chat", json={"message": "hi " * 666}).status_code == 200


def test_body_over_the_cap_is_413(bot: Bot) -> None:
    client = make_client(bot, max_body_bytes=1024, max_message_chars=5000)
    resp = client.post("/api/chat", json={"message": "x" * 2000})
    assert error(resp) == (413, "body_too_large")
    assert "1024 bytes" in resp.get_json()["error"]["message"]


def test_errors_are_json_for_unknown_routes_and_wrong_methods(client: FlaskClient) -> None:
    assert error(client.get("/nope")) == (404, "not_found")
    assert error(client.get("/api/nope")) == (404, "not_found")
    resp = client.get("/api/chat")
    assert error(resp) == (405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert error(client.put("/api/conversations/" + Bot.new_conversation_id())) == (405, "method_not_allowed")


# -- rate limits ---------------------------------------------------------------------------------------
def test_per_ip_limit_answers_429_with_an_honest_retry_after(bot: Bot) -> None:
    client = make_client(bot, rate_limits="2/minute")
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 200
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 200
    resp = client.post("/api/chat", json={"message": "hi"})
    assert error(resp) == (429, "rate_limited")
    wait = int(resp.headers["Retry-After"])
    assert 1 <= wait <= 60
    assert f"Please wait {wait} s." in resp.get_json()["error"]["message"]
    assert error(client.get("/api/conversations/" + Bot.new_conversation_id())) == (429, "rate_limited")
    other_ip = client.post("/api/chat", json={"message": "hi"}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other_ip.status_code == 200
    assert client.get("/healthz").status_code == 200  # health checks are never limited


def test_per_conversation_limit_leaves_other_conversations_alone(bot: Bot) -> None:
    client = make_client(bot, conversation_rate_limits="2/minute")
    cid = client.post("/api/chat", json={"message": "hi"}).get_json()["conversation_id"]
    for _ in range(2):
        assert client.post("/api/chat", json={"message": "hi", "conversation_id": cid}).status_code == 200
    resp = client.post("/api/chat/stream", json={"message": "hi", "conversation_id": cid})
    assert error(resp) == (429, "rate_limited") and int(resp.headers["Retry-After"]) >= 1
    assert client.post("/api/chat", json={"message": "hi"}).status_code == 200


def test_proxy_count_decides_which_address_is_limited(bot: Bot) -> None:
    direct = make_client(bot, rate_limits="1/minute")
    assert direct.post("/api/chat", json={"message": "hi"}, headers={"X-Forwarded-For": "1.1.1.1"}).status_code == 200
    spoofed = direct.post("/api/chat", json={"message": "hi"}, headers={"X-Forwarded-For": "2.2.2.2"})
    assert spoofed.status_code == 429  # without BOT_PROXIES the header is not trusted
    proxied = make_client(bot, rate_limits="1/minute", proxies=1)
    for ip in ("1.1.1.1", "2.2.2.2"):
        resp = proxied.post("/api/chat", json={"message": "hi"}, headers={"X-Forwarded-For": ip})
        assert resp.status_code == 200


# -- CORS and headers -------------------------------------------------------------------------------------
def test_cors_allows_listed_origins_only(bot: Bot) -> None:
    client = make_client(bot, allowed_origins=("https://shop.example",))
    ok = client.post("/api/chat", json={"message": "hi"}, headers={"Origin": "https://shop.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Origin" in ok.headers.get_all("Vary")
    assert ok.headers["Access-Control-Expose-Headers"] == "Retry-After"
    other = client.post("/api/chat", json={"message": "hi"}, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    health = client.get("/healthz", headers={"Origin": "https://shop.example"})
    assert "Access-Control-Allow-Origin" not in health.headers  # CORS is for /api/* only


def test_cors_preflight(bot: Bot) -> None:
    client = make_client(bot, allowed_origins=("https://shop.example",), rate_limits="1/minute")
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    for _ in range(3):  # preflights are not counted by the rate limits
        resp = client.options("/api/chat", headers={"Origin": "https://shop.example", **preflight})
        assert resp.status_code == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
    denied = client.options("/api/chat", headers={"Origin": "https://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in denied.headers
    assert "Access-Control-Allow-Methods" not in denied.headers


def test_cors_from_the_environment(bot: Bot) -> None:
    app = create_app(bot, env={"BOT_ALLOWED_ORIGINS": "https://a.example, https://b.example/"})
    assert app.extensions["hybridbot"].settings.allowed_origins == ("https://a.example", "https://b.example")
    resp = app.test_client().post("/api/chat", json={"message": "hi"}, headers={"Origin": "https://b.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://b.example"


def test_security_headers_on_every_response_and_csp_on_the_page(bot: Bot, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>demo</title>", encoding="utf-8")
    client = make_client(bot, frame_ancestors="https://shop.example", static_dir=tmp_path)
    with client.get("/") as page:
        assert page.headers["Content-Security-Policy"] == PAGE_CSP
    responses = [client.post("/api/chat", json={"message": "hi"}), client.get("/nope"),
                 client.post("/api/chat", data="x", content_type="text/plain"), client.get("/healthz")]
    for resp in responses:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert resp.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_frame_ancestors_setting_cannot_inject_directives() -> None:
    with pytest.raises(ValueError, match="BOT_FRAME_ANCESTORS"):
        WebSettings.from_env({"BOT_FRAME_ANCESTORS": "'self'; script-src *"})


# -- admin --------------------------------------------------------------------------------------------------
def test_admin_routes_do_not_exist_without_a_token(client: FlaskClient) -> None:
    assert error(client.post("/admin/reload")) == (404, "not_found")
    assert error(client.get("/admin/transcripts", headers={"Authorization": "Bearer "})) == (404, "not_found")


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"])
def test_admin_needs_the_right_bearer_token(bot: Bot, header: str | None) -> None:
    client = make_client(bot, admin_token=TOKEN)
    headers = {"Authorization": header} if header else {}
    for resp in (client.post("/admin/reload", headers=headers), client.get("/admin/transcripts", headers=headers)):
        assert error(resp) == (401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_admin_transcripts_lists_recent_conversations(bot: Bot) -> None:
    client = make_client(bot, admin_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    first = client.post("/api/chat", json={"message": "hello"}).get_json()["conversation_id"]
    second = client.post("/api/chat", json={"message": "opening hours"}).get_json()["conversation_id"]
    client.post("/api/chat", json={"message": "book a visit", "conversation_id": second})
    resp = client.get("/admin/transcripts", headers=auth)
    assert resp.status_code == 200
    convs = resp.get_json()["conversations"]
    assert [c["conversation_id"] for c in convs] == [second, first]
    assert [t["text_in"] for t in convs[0]["turns"]] == ["opening hours", "book a visit"]
    assert convs[0]["turns"][1]["route"]["intent"] == "book_visit"
    assert convs[0]["updated_at"] == convs[0]["turns"][1]["created_at"]
    limited = client.get("/admin/transcripts?limit=1", headers=auth).get_json()["conversations"]
    assert [c["conversation_id"] for c in limited] == [second]
    assert client.get("/admin/transcripts?since=2999-01-01T00:00:00Z", headers=auth).get_json() == {
        "conversations": []}
    assert error(client.get("/admin/transcripts?limit=0", headers=auth)) == (400, "invalid_limit")
    assert error(client.get("/admin/transcripts?since=yesterday", headers=auth)) == (400, "invalid_since")
