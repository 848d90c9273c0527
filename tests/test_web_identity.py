"""Identity over HTTP: Bearer tokens, owned conversations on any device, no cross-user leaks, deletion and export."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from bot.app import Bot
from bot.identity import IdentitySettings
from bot.store import MemoryStore
from bot.testing import FakeLLM
from bot.web import create_app
from bot.web_identity import EXTENSION, register_identity
from webbot import load_bot, parse_sse, write_bot

log = logging.getLogger(__name__)

SECRET = "s" * 20 + "-identity-secret-for-tests"
ADMIN = "admin-token-for-identity-tests"
ENV = {"BOT_IDENTITY_SECRET": SECRET}
UNKNOWN = {"error": {"code": "unknown_conversation", "message": (
    "This conversation has ended or does not exist. Send the message without "
    "'conversation_id' to start a new one.")}}
WHOAMI = {
    "whoami": """\
        version: 1
        trigger: whoami
        steps:
          - action: who_is_it
          - say: "You are {{ user.get('name') or 'a guest' }} ({{ result.id }})."
    """,
}
WHOAMI_INTENTS = """\
  whoami:
    examples: [who am i, do you know me, what is my name, who do you think I am]
    patterns: ['\\bwho am i\\b']
"""
ACTION = """\
from bot import Reply, action


@action
def who_is_it(ctx):
    return Reply(result={"id": (ctx.user or {}).get("id") or "anonymous"})
"""


def token(sub: str = "alice", *, secret: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": sub, "name": sub.title(), "aud": "hybridbot", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def auth(sub: str = "alice", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **claims)}"}


@pytest.fixture(scope="module")
def bot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_bot(tmp_path_factory.mktemp("identitybot"), WHOAMI)
    intents = (root / "intents.yaml").read_text(encoding="utf-8")
    (root / "intents.yaml").write_text(intents.replace("  out_of_scope:", WHOAMI_INTENTS + "  out_of_scope:"),
                                       encoding="utf-8")
    (root / "actions").mkdir()
    (root / "actions" / "who.py").write_text(ACTION, encoding="utf-8")
    return root


@pytest.fixture
def bot(bot_dir: Path) -> Iterator[Bot]:
    bot = load_bot(bot_dir, store=MemoryStore(), llm=FakeLLM(["An LLM answer."] * 5))
    yield bot
    bot.close()


def make_app(bot: Bot, env: dict[str, str] | None = None, **settings: Any) -> Flask:
    """The app as served: create_app, then the identity layer (unless create_app already added it)."""
    env = {**ENV, **(env or {})}
    settings = {"rate_limits": "off", "conversation_rate_limits": "off", "admin_token": ADMIN, **settings}
    app = create_app(bot, env=env, **settings)
    if EXTENSION not in app.extensions:
        register_identity(app, app.extensions["hybridbot"].holder, IdentitySettings.from_env(env))
    return app


@pytest.fixture
def client(bot: Bot) -> FlaskClient:
    return make_app(bot).test_client()


def owned_conversation(bot: Bot, user: str | None, text: str = "hello") -> str:
    """A conversation with one turn, owned by ``user``, written straight into the store."""
    cid = Bot.new_conversation_id()
    with bot.store.open(cid) as conv:
        conv.user_id = user
        conv.add_turn({"turn_id": "t1", "text_in": text, "replies": [{"text": "Hello! How can I help?"}]})
    return cid


# -- tokens ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [
    f"Bearer {token(secret='another-secret-that-is-long-enough-to-sign')}",
    f"Bearer {token(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000)}",
    f"Bearer {token(aud='another-app')}",
    f"Bearer {token()[:-4]}AAAA",
    "Bearer not-a-jwt",
    "Bearer ",
    f"Basic {token()}",
])
def test_a_bad_token_is_401_and_nothing_is_stored(bot: Bot, client: FlaskClient, header: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        for resp in (client.post("/api/chat", json={"message": "hello"}, headers={"Authorization": header}),
                     client.post("/api/chat/stream", json={"message": "hello"}, headers={"Authorization": header}),
                     client.get("/api/me/conversation", headers={"Authorization": header})):
            assert resp.status_code == 401 and resp.mimetype == "application/json"
            assert resp.get_json()["error"]["code"] == "invalid_identity"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert list(bot.store.iter_turns()) == []
    secret_part = header.partition(" ")[2]
    assert "identity token rejected" in caplog.text
    assert not secret_part or secret_part not in caplog.text


def test_an_expired_token_says_so(client: FlaskClient) -> None:
    resp = client.post("/api/chat", json={"message": "hello"},
                       headers=auth(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000))
    assert "has expired" in resp.get_json()["error"]["message"]


def test_a_token_is_not_needed_unless_required(bot: Bot) -> None:
    assert make_app(bot).test_client().post("/api/chat", json={"message": "hello"}).status_code == 200
    strict = make_app(bot, env={"BOT_REQUIRE_IDENTITY": "1"}).test_client()
    resp = strict.post("/api/chat", json={"message": "hello"})
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "identity_required"
    assert strict.get(f"/api/conversations/{Bot.new_conversation_id()}").status_code == 401
    assert strict.get("/healthz").status_code == 200  # only /api/* is gated
    assert strict.post("/api/chat", json={"message": "hello"}, headers=auth()).status_code == 200


def test_without_a_configured_key_tokens_are_ignored_and_the_visitor_is_anonymous(
        bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    client = make_app(bot, env={"BOT_IDENTITY_SECRET": ""}).test_client()
    with caplog.at_level(logging.WARNING, logger="bot.web_identity"):
        for _ in range(2):
            resp = client.post("/api/chat", json={"message": "who am i"}, headers=auth())
            assert resp.status_code == 200
            assert resp.get_json()["replies"][0]["text"] == "You are a guest (anonymous)."
    assert caplog.text.count("visitors are treated as anonymous") == 1


# -- who the handlers and templates see -----------------------------------------------------------------
def test_handlers_and_templates_see_the_verified_user(client: FlaskClient) -> None:
    resp = client.post("/api/chat", json={"message": "who am i"}, headers=auth("alice"))
    assert resp.get_json()["replies"][0]["text"] == "You are Alice (alice)."
    events = parse_sse(client.post("/api/chat/stream", json={"message": "who am i"}, headers=auth("bob")).response)
    assert events[-1][1]["replies"][0]["text"] == "You are Bob (bob)."


def test_an_unsigned_claim_in_the_body_is_not_trusted(client: FlaskClient) -> None:
    resp = client.post("/api/chat", json={"message": "who am i", "user": {"id": "alice", "name": "Alice"}},
                       headers={"X-User-Id": "alice"})
    assert resp.get_json()["replies"][0]["text"] == "You are a guest (anonymous)."


# -- ownership ------------------------------------------------------------------------------------------
def test_a_conversation_started_by_a_user_is_theirs_and_follows_them_to_another_device(
        bot: Bot, client: FlaskClient) -> None:
    first = client.post("/api/chat", json={"message": "hello"}, headers=auth("alice")).get_json()
    cid = first["conversation_id"]
    assert bot.store.owner_of(cid) == "alice"
    phone = make_app(bot).test_client()  # another device: nothing but the token in common
    mine = phone.get("/api/me/conversation", headers=auth("alice")).get_json()
    assert mine["conversation_id"] == cid
    assert [t["text_in"] for t in mine["turns"]] == ["hello"]
    resp = phone.post("/api/chat", json={"message": "opening hours", "conversation_id": cid}, headers=auth("alice"))
    assert resp.status_code == 200 and resp.get_json()["conversation_id"] == cid
    again = client.get("/api/me/conversation", headers=auth("alice")).get_json()
    assert [t["text_in"] for t in again["turns"]] == ["hello", "opening hours"]


def test_a_streamed_conversation_is_owned_too(bot: Bot, client: FlaskClient) -> None:
    events = parse_sse(client.post("/api/chat/stream", json={"message": "hello"}, headers=auth("alice")).response)
    cid = events[0][1]["conversation_id"]
    assert bot.store.owner_of(cid) == "alice"
    assert client.get("/api/me/conversation", headers=auth("alice")).get_json()["conversation_id"] == cid


def test_me_conversation_needs_a_token_and_is_empty_for_a_new_user(client: FlaskClient) -> None:
    resp = client.get("/api/me/conversation")
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "identity_required"
    assert client.get("/api/me/conversation", headers=auth("newcomer")).get_json() == {
        "conversation_id": None, "turns": []}


def test_me_conversation_is_the_latest_one(bot: Bot, client: FlaskClient) -> None:
    owned_conversation(bot, "alice", "older")
    latest = owned_conversation(bot, "alice", "newer")
    owned_conversation(bot, "bob", "not hers")
    body = client.get("/api/me/conversation", headers=auth("alice")).get_json()
    assert body["conversation_id"] == latest and [t["text_in"] for t in body["turns"]] == ["newer"]


def test_nobody_else_can_read_or_write_a_users_conversation(bot: Bot, client: FlaskClient) -> None:
    cid = owned_conversation(bot, "alice", "my secret plans")
    unknown = Bot.new_conversation_id()
    assert client.get(f"/api/conversations/{unknown}").get_json() == UNKNOWN
    for headers in ({}, auth("bob"), auth("alice", secret="another-secret-that-is-long-enough-to-sign")):
        attempts = [
            client.get(f"/api/conversations/{cid}", headers=headers),
            client.post("/api/chat", json={"message": "hi", "conversation_id": cid}, headers=headers),
            client.post("/api/chat/stream", json={"message": "hi", "conversation_id": cid}, headers=headers),
            client.post("/api/feedback", json={"conversation_id": cid, "turn_id": "t1", "rating": "down"},
                        headers=headers),
            client.delete(f"/api/conversations/{cid}", headers=headers),
        ]
        for resp in attempts:
            if resp.status_code == 401:  # the forged token
                assert resp.get_json()["error"]["code"] == "invalid_identity"
                continue
            assert resp.status_code == 404 and resp.get_json() == UNKNOWN  # exactly as if it did not exist
            assert "my secret plans" not in resp.get_data(as_text=True)
    turns = bot.transcript(cid)
    assert [t["text_in"] for t in turns] == ["my secret plans"] and "feedback" not in turns[0]
    assert bot.store.owner_of(cid) == "alice"
    bob = client.get("/api/me/conversation", headers=auth("bob")).get_json()
    assert bob == {"conversation_id": None, "turns": []}
    own = client.get(f"/api/conversations/{cid}", headers=auth("alice"))
    assert own.status_code == 200 and own.get_json()["turns"][0]["text_in"] == "my secret plans"


def test_a_token_swap_on_a_live_conversation_gets_nothing(bot: Bot, client: FlaskClient) -> None:
    cid = client.post("/api/chat", json={"message": "book a visit"}, headers=auth("alice")).get_json()["conversation_id"]
    resp = client.post("/api/chat", json={"message": "Mallory", "conversation_id": cid}, headers=auth("mallory"))
    assert resp.status_code == 404 and resp.get_json() == UNKNOWN
    resp = client.post("/api/chat", json={"message": "Alice", "conversation_id": cid}, headers=auth("alice"))
    assert resp.get_json()["replies"][0]["text"] == "See you soon, Alice."


def test_anonymous_visitors_keep_their_per_browser_conversation(bot: Bot, client: FlaskClient) -> None:
    cid = client.post("/api/chat", json={"message": "hello"}).get_json()["conversation_id"]
    assert bot.store.owner_of(cid) is None
    resp = client.post("/api/chat", json={"message": "opening hours", "conversation_id": cid})
    assert resp.status_code == 200
    assert [t["text_in"] for t in client.get(f"/api/conversations/{cid}").get_json()["turns"]] == [
        "hello", "opening hours"]


def test_signing_in_adopts_the_browsers_anonymous_conversation(bot: Bot, client: FlaskClient) -> None:
    cid = client.post("/api/chat", json={"message": "hello"}).get_json()["conversation_id"]
    client.post("/api/chat", json={"message": "opening hours", "conversation_id": cid}, headers=auth("alice"))
    assert bot.store.owner_of(cid) == "alice"
    assert client.get(f"/api/conversations/{cid}").get_json() == UNKNOWN  # signed out: no longer readable


# -- deletion -------------------------------------------------------------------------------------------
def test_visitors_delete_their_own_conversation(bot: Bot, client: FlaskClient) -> None:
    anon = client.post("/api/chat", json={"message": "hello"}).get_json()["conversation_id"]
    resp = client.delete(f"/api/conversations/{anon}")
    assert resp.status_code == 204 and resp.get_data() == b""
    assert bot.transcript(anon) is None
    assert client.get(f"/api/conversations/{anon}").get_json() == UNKNOWN
    mine = owned_conversation(bot, "alice")
    assert client.delete(f"/api/conversations/{mine}", headers=auth("alice")).status_code == 204
    assert bot.transcript(mine) is None and bot.store.conversations_of("alice") == []
    assert client.delete(f"/api/conversations/{mine}", headers=auth("alice")).get_json() == UNKNOWN
    assert client.delete("/api/conversations/x").get_json()["error"]["code"] == "invalid_conversation_id"


# -- admin ----------------------------------------------------------------------------------------------
def test_admin_user_routes_are_absent_without_an_admin_token(bot: Bot) -> None:
    client = make_app(bot, admin_token=None).test_client()
    for resp in (client.get("/admin/users/alice", headers={"Authorization": "Bearer x"}),
                 client.delete("/admin/users/alice", headers={"Authorization": "Bearer x"})):
        assert resp.status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN}"},
                                     {"Authorization": f"Bearer {ADMIN}x"}])
def test_admin_user_routes_need_the_admin_token(client: FlaskClient, headers: dict[str, str]) -> None:
    for resp in (client.get("/admin/users/alice", headers=headers),
                 client.delete("/admin/users/alice", headers=headers)):
        assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "unauthorized"


def test_admin_exports_then_erases_everything_of_one_user(bot: Bot, client: FlaskClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    first = owned_conversation(bot, "alice", "first question")
    second = owned_conversation(bot, "alice", "second question")
    other = owned_conversation(bot, "bob", "bob's question")
    assert bot.feedback(first, "t1", "up")
    data = client.get("/admin/users/alice", headers=admin).get_json()
    assert data["user_id"] == "alice" and data["exported_at"].endswith("Z")
    assert [c["conversation_id"] for c in data["conversations"]] == [first, second]
    turn = data["conversations"][0]["turns"][0]
    assert turn["text_in"] == "first question" and turn["created_at"].endswith("Z")
    assert turn["feedback"]["rating"] == "up"
    assert "bob's question" not in str(data)
    resp = client.delete("/admin/users/alice", headers=admin)
    assert resp.get_json() == {"user_id": "alice", "deleted_conversations": 2}
    assert bot.transcript(first) is None and bot.transcript(second) is None
    assert bot.transcript(other) is not None
    assert client.get("/admin/users/alice", headers=admin).get_json()["conversations"] == []


def test_admin_user_ids_may_hold_slashes_and_are_checked(bot: Bot, client: FlaskClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    owned_conversation(bot, "org/42", "hi")
    assert len(client.get("/admin/users/org/42", headers=admin).get_json()["conversations"]) == 1
    resp = client.get("/admin/users/" + "x" * 300, headers=admin)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_user_id"


def test_identity_routes_share_the_per_ip_limits_and_preflights_pass_untouched(bot: Bot) -> None:
    client = make_app(bot, env={"BOT_REQUIRE_IDENTITY": "1"}, rate_limits="2/minute",
                      allowed_origins=("https://shop.example",)).test_client()
    assert client.get("/api/me/conversation", headers=auth()).status_code == 200
    assert client.delete(f"/api/conversations/{Bot.new_conversation_id()}", headers=auth()).status_code == 404
    resp = client.get("/api/me/conversation", headers=auth())
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    preflight = client.options("/api/chat", headers={"Origin": "https://shop.example",
                                                     "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
