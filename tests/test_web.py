"""The web API end to end through Flask's test client: chat, streaming, transcripts, feedback, health."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bot.app import Bot
from bot.store import MemoryStore
from bot.testing import FakeLLM
from bot.web import create_app, find_static_dir, serve
from webbot import FlakyStore, GatedLLM, load_bot, parse_sse, wait_for, write_bot

HELLO = "Hello! How can I help?"


@pytest.fixture(scope="module")
def bot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bot(tmp_path_factory.mktemp("webbot"))


@pytest.fixture
def bot(bot_dir: Path) -> Bot:
    bot = load_bot(bot_dir, llm=FakeLLM(["We sell bikes too."]))
    yield bot
    bot.close()


@pytest.fixture
def app(bot: Bot) -> Flask:
    return create_app(bot, env={}, rate_limits="off", conversation_rate_limits="off")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def stream(client: FlaskClient, body: dict[str, Any]) -> Any:
    return client.post("/api/chat/stream", json=body, buffered=False)


def test_chat_starts_a_conversation_and_answers_with_replies_and_route(client: FlaskClient, bot: Bot) -> None:
    resp = client.post("/api/chat", json={"message": "hello"})
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"conversation_id", "turn_id", "replies", "route"}
    assert body["replies"] == [{"text": HELLO, "buttons": [
        {"title": "Opening hours", "payload": "Opening hours"}, {"title": "Book a visit", "payload": "Book a visit"}]}]
    assert body["route"]["intent"] == "greet" and body["route"]["kind"] == "rule"
    assert len(body["conversation_id"]) >= 22 and bot.store.exists(body["conversation_id"])


def test_chat_continues_a_known_conversation_through_a_flow(client: FlaskClient) -> None:
    cid = client.post("/api/chat", json={"message": "book a visit"}).get_json()["conversation_id"]
    resp = client.post("/api/chat", json={"message": "Ada", "conversation_id": cid})
    assert resp.get_json()["replies"][0]["text"] == "See you soon, Ada."
    assert resp.get_json()["conversation_id"] == cid


def test_chat_strips_control_characters_before_the_bot_sees_them(client: FlaskClient, bot: Bot) -> None:
    body = client.post("/api/chat", json={"message": "\x00hello\x1b\x07"}).get_json()
    assert body["route"]["intent"] == "greet"
    assert bot.transcript(body["conversation_id"])[0]["text_in"] == "hello"


def test_unknown_conversation_id_is_404_so_the_widget_starts_afresh(client: FlaskClient) -> None:
    resp = client.post("/api/chat", json={"message": "hi", "conversation_id": Bot.new_conversation_id()})
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "unknown_conversation"
    resp = stream(client, {"message": "hi", "conversation_id": Bot.new_conversation_id()})
    assert resp.status_code == 404 and resp.mimetype == "application/json"


def test_replies_carry_the_routing_trace_but_not_patterns_or_thresholds(client: FlaskClient, bot: Bot) -> None:
    body = client.post("/api/chat", json={"message": "hello"}).get_json()
    events = parse_sse(stream(client, {"message": "opening hours please", "conversation_id": body["conversation_id"]}
                              ).response)
    routes = [body["route"]] + [data["route"] for name, data in events if name in ("meta", "done")]
    assert len(routes) == 3
    for route in routes:
        assert set(route["trace"]) <= {"stage", "candidates", "entities", "reason"} and route["trace"]["stage"]
        assert route["trace"]["candidates"]  # which intents it weighed, with scores
    stored = bot.transcript(body["conversation_id"])
    assert stored[0]["route"]["trace"]["pattern"] and "threshold" in stored[1]["route"]["trace"]  # kept for analysts
    assert "pattern" not in routes[0]["trace"] and "normalized" not in routes[0]["trace"]


def test_stream_sends_meta_one_delta_per_rule_reply_then_done(client: FlaskClient) -> None:
    resp = stream(client, {"message": "hello"})
    assert resp.status_code == 200
    assert resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["X-Accel-Buffering"] == "no"
    events = parse_sse(resp.response)
    resp.close()
    assert [name for name, _ in events] == ["meta", "delta", "done"]
    meta, delta, done = (data for _, data in events)
    assert set(meta) == {"conversation_id", "turn_id", "route"}
    assert delta == {"text": HELLO, "index": 0}
    assert done["turn_id"] == meta["turn_id"] and done["incomplete"] is False
    assert done["replies"][0]["text"] == HELLO and len(done["replies"][0]["buttons"]) == 2


def test_stream_of_an_llm_answer_arrives_in_several_deltas(client: FlaskClient) -> None:
    resp = stream(client, {"message": "what's the weather like on mars"})
    events = parse_sse(resp.response)
    resp.close()
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) > 1 and "".join(deltas) == "We sell bikes too."
    assert events[-1][1]["replies"] == [{"text": "We sell bikes too."}]


def test_stream_sends_heartbeats_while_the_llm_is_silent(bot_dir: Path) -> None:
    llm = GatedLLM(["Slow answer."])
    bot = load_bot(bot_dir, llm=llm)
    client = create_app(bot, env={}, heartbeat_seconds=0.02, rate_limits="off").test_client()
    resp = stream(client, {"message": "tell me about the moon landing"})
    chunks = iter(resp.response)
    assert next(chunks).startswith(b"event: meta")
    assert next(chunks) == b": ping\n\n"  # the LLM is waiting on the gate
    llm.gate.set()
    events = parse_sse(chunks)
    resp.close()
    names = [name for name, _ in events]
    assert names[-1] == "done" and "delta" in names
    assert all(data == "ping" for name, data in events if name == "comment")
    bot.close()


def test_client_disconnect_mid_stream_records_an_incomplete_turn(bot_dir: Path) -> None:
    llm = GatedLLM(["one two three four"], wait_before=1)
    bot = load_bot(bot_dir, llm=llm)
    client = create_app(bot, env={}, rate_limits="off").test_client()
    resp = stream(client, {"message": "tell me about the moon landing"})
    chunks = iter(resp.response)
    meta = parse_sse([next(chunks)])[0][1]
    assert parse_sse([next(chunks)]) == [("delta", {"text": "one ", "index": 0})]
    resp.close()  # the visitor closes the tab
    llm.gate.set()
    turns = wait_for(lambda: bot.transcript(meta["conversation_id"]))
    assert turns[0]["turn_id"] == meta["turn_id"]
    assert turns[0]["incomplete"] is True
    assert turns[0]["replies"][0]["text"].startswith("one ")
    bot.close()


def test_error_after_the_stream_started_is_an_error_event(client: FlaskClient, bot: Bot,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    def broken(cid: str | None, text: str, **kw: Any) -> Any:
        yield "meta", {"conversation_id": "c" * 32, "turn_id": "t1", "route": {}}
        raise RuntimeError("provider said: sk-secret-details")

    monkeypatch.setattr(bot, "stream", broken)
    with caplog.at_level(logging.ERROR, logger="bot.web_security"):
        resp = stream(client, {"message": "hello"})
        events = parse_sse(resp.response)
        resp.close()
    assert [name for name, _ in events] == ["meta", "error"]
    assert events[1][1]["code"] == "internal_error"
    assert "secret" not in events[1][1]["message"]
    assert "sk-secret-details" in caplog.text  # the details go to the server log only


def test_transcript_lists_turns_for_rehydrating_the_widget(client: FlaskClient) -> None:
    first = client.post("/api/chat", json={"message": "hello"}).get_json()
    cid = first["conversation_id"]
    client.post("/api/chat", json={"message": "opening hours", "conversation_id": cid})
    resp = client.get(f"/api/conversations/{cid}")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["conversation_id"] == cid
    assert [t["text_in"] for t in body["turns"]] == ["hello", "opening hours"]
    assert set(body["turns"][0]) == {"turn_id", "text_in", "replies", "created_at"}
    assert body["turns"][0]["turn_id"] == first["turn_id"]
    assert body["turns"][0]["created_at"].endswith("Z")
    assert body["turns"][1]["replies"][0]["text"].startswith("We're open")


def test_transcript_of_unknown_or_malformed_ids(client: FlaskClient) -> None:
    resp = client.get(f"/api/conversations/{Bot.new_conversation_id()}")
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "unknown_conversation"
    resp = client.get("/api/conversations/short")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_conversation_id"


def test_feedback_is_stored_and_shown_in_the_transcript(client: FlaskClient) -> None:
    turn = client.post("/api/chat", json={"message": "hello"}).get_json()
    cid = turn["conversation_id"]
    resp = client.post("/api/feedback", json={"conversation_id": cid, "turn_id": turn["turn_id"],
                                              "rating": "down", "comment": "too short"})
    assert resp.status_code == 200 and resp.get_json() == {"ok": True}
    shown = client.get(f"/api/conversations/{cid}").get_json()["turns"][0]
    assert shown["feedback"] == {"rating": "down", "comment": "too short"}


def test_feedback_errors(client: FlaskClient) -> None:
    turn = client.post("/api/chat", json={"message": "hello"}).get_json()
    good = {"conversation_id": turn["conversation_id"], "turn_id": turn["turn_id"], "rating": "up"}
    cases = [({**good, "turn_id": "0123456789abcdef"}, 404, "unknown_turn"),
             ({**good, "conversation_id": Bot.new_conversation_id()}, 404, "unknown_turn"),
             ({**good, "rating": "meh"}, 400, "invalid_rating"),
             ({**good, "turn_id": "../x"}, 400, "invalid_turn_id"),
             ({**good, "conversation_id": None}, 400, "invalid_conversation_id"),
             ({**good, "comment": 5}, 400, "invalid_comment"),
             ({**good, "comment": "x" * 2001}, 400, "comment_too_long")]
    for body, status, code in cases:
        resp = client.post("/api/feedback", json=body)
        assert (resp.status_code, resp.get_json()["error"]["code"]) == (status, code), body


def test_healthz_and_readyz(client: FlaskClient, bot: Bot) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ready" and body["store"] == "ok"
    assert body["config_digest"] == bot.config.digest
    assert body["loaded_at"].endswith("Z")
    assert body["reload"] == {"watching": False, "reloads": 0, "last_attempt_at": None, "last_error_count": 0,
                              "generation": 0}  # the store's reload generation when the files were read


@pytest.fixture
def flaky(bot_dir: Path) -> tuple[FlaskClient, FlakyStore]:
    store = FlakyStore()
    bot = load_bot(bot_dir, store=store)
    yield create_app(bot, env={}, rate_limits="off").test_client(), store
    bot.close()


def test_store_down_gives_503_json_everywhere(flaky: tuple[FlaskClient, FlakyStore]) -> None:
    client, store = flaky
    turn = client.post("/api/chat", json={"message": "hello"}).get_json()
    cid = turn["conversation_id"]
    store.down = True
    requests = [("post", "/api/chat", {"message": "hello"}),
                ("post", "/api/chat", {"message": "hello", "conversation_id": cid}),
                ("post", "/api/chat/stream", {"message": "hello"}),
                ("post", "/api/feedback", {"conversation_id": cid, "turn_id": turn["turn_id"], "rating": "up"}),
                ("get", f"/api/conversations/{cid}", None)]
    for method, path, body in requests:
        resp = getattr(client, method)(path, json=body)
        assert resp.status_code == 503, path
        assert resp.get_json()["error"] == {
            "code": "store_unavailable",
            "message": "The assistant cannot reach its storage right now. Please try again shortly."}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "unavailable" and ready.get_json()["error"]["code"] == "store_unavailable"
    store.down = False
    assert client.get("/readyz").status_code == 200


def test_busy_conversation_is_409_still_answering(bot_dir: Path) -> None:
    bot = load_bot(bot_dir, store=MemoryStore(lock_timeout=0.01))
    client = create_app(bot, env={}, rate_limits="off").test_client()
    cid = client.post("/api/chat", json={"message": "hello"}).get_json()["conversation_id"]
    with bot.store.open(cid):  # another request is still answering this conversation
        for path in ("/api/chat", "/api/chat/stream"):
            resp = client.post(path, json={"message": "hello", "conversation_id": cid})
            assert resp.status_code == 409
            assert resp.get_json()["error"]["code"] == "conversation_busy"
            assert "still answering" in resp.get_json()["error"]["message"]
    bot.close()


def test_unexpected_error_is_a_generic_500_and_logged(client: FlaskClient, bot: Bot,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def explode(*args: Any, **kw: Any) -> Any:
        raise KeyError("internal detail")

    monkeypatch.setattr(bot, "handle", explode)
    with caplog.at_level(logging.ERROR, logger="bot.web_security"):
        resp = client.post("/api/chat", json={"message": "hello"})
    assert resp.status_code == 500
    assert resp.get_json() == {"error": {"code": "internal_error",
                                         "message": "Something went wrong on our side. Please try again."}}
    assert "internal detail" in caplog.text and "Traceback" in caplog.text


def test_demo_page_and_widget_files_are_served(client: FlaskClient) -> None:
    static = find_static_dir()
    assert static is not None and (static / "widget.js").is_file()
    for path, mimetype in (("/widget.js", "text/javascript"), ("/widget.css", "text/css")):
        with client.get(path) as resp:
            assert resp.status_code == 200 and resp.mimetype == mimetype
            assert resp.data == (static / path[1:]).read_bytes()


def test_other_chatbox_files_are_served_at_the_root_by_name(client: FlaskClient, tmp_path: Path, bot: Bot) -> None:
    (tmp_path / "demo.css").write_text("body { color: black }", encoding="utf-8")
    (tmp_path / "secret.py").write_text("KEY = 1", encoding="utf-8")
    client = create_app(bot, env={}, static_dir=tmp_path).test_client()
    with client.get("/demo.css") as resp:
        assert resp.status_code == 200 and resp.mimetype == "text/css" and b"color: black" in resp.data
    for path in ("/secret.py", "/missing.css", "/..%2Fsecret.css", "/.hidden.css"):
        with client.get(path) as resp:
            assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found", path


def test_demo_page_from_a_configured_folder(bot: Bot, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>demo</title>", encoding="utf-8")
    client = create_app(bot, env={}, static_dir=tmp_path).test_client()
    with client.get("/") as resp:
        assert resp.status_code == 200 and resp.mimetype == "text/html"
        assert b"<title>demo</title>" in resp.data
    with client.get("/widget.js") as resp:
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_create_app_loads_a_directory_with_settings_from_the_environment(bot_dir: Path) -> None:
    env = {"BOT_STORE": "memory://", "BOT_MAX_MESSAGE_CHARS": "10", "BOT_RATE_LIMITS": "off"}
    app = create_app(bot_dir, env=env, llm=FakeLLM())
    state = app.extensions["hybridbot"]
    assert isinstance(state.holder.bot.store, MemoryStore)
    assert state.settings.max_message_chars == 10
    resp = app.test_client().post("/api/chat", json={"message": "hello there, how are you"})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == {"code": "message_too_long",
                                        "message": "Your message is too long: the limit is 10 characters."}
    state.holder.bot.close()


def test_bad_settings_fail_at_startup_with_a_clear_message(bot: Bot) -> None:
    with pytest.raises(ValueError, match="BOT_RATE_LIMITS must be limits like"):
        create_app(bot, env={"BOT_RATE_LIMITS": "30 per fortnight"})
    with pytest.raises(ValueError, match="BOT_MAX_BODY_BYTES must be a whole number of bytes"):
        create_app(bot, env={"BOT_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ValueError, match="BOT_RELOAD_FOLLOW_INTERVAL must be seconds between checks"):
        create_app(bot, env={"BOT_RELOAD_FOLLOW_INTERVAL": "soon"})
    with pytest.raises(TypeError, match="unknown web setting"):
        create_app(bot, env={}, max_mesage_chars=5)


def test_real_server_streams_and_notices_a_dropped_connection(bot_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import http.client
    import json
    import threading

    from werkzeug.serving import make_server

    from bot.sse import EventPump

    stopped = threading.Event()
    original_stop = EventPump.stop

    def stop(self: EventPump) -> None:
        original_stop(self)
        stopped.set()

    monkeypatch.setattr(EventPump, "stop", stop)
    llm = GatedLLM(["one two three"], wait_before=1)
    bot = load_bot(bot_dir, llm=llm)
    server = make_server("127.0.0.1", 0, create_app(bot, env={}, heartbeat_seconds=0.02), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/api/chat/stream", body=json.dumps({"message": "tell me about the moon landing"}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("X-Accel-Buffering") == "no"
        received = b""
        while b": ping" not in received:  # meta and the first delta arrived before the LLM finished
            received += resp.read1(4096)
        events = parse_sse([received.decode()])
        assert [name for name, _ in events][:2] == ["meta", "delta"]
        resp.close()  # the visitor goes away while the model is still thinking
        conn.close()
        wait_for(stopped.is_set)  # the server's next ping failed and it closed the response
        llm.gate.set()
        cid = events[0][1]["conversation_id"]
        turns = wait_for(lambda: bot.transcript(cid))
        assert turns[0]["incomplete"] is True  # closed after at most one more delta, not at the end
        assert turns[0]["replies"][0]["text"] in ("one ", "one two ")
    finally:
        server.shutdown()
        thread.join()
        bot.close()


def test_unreachable_redis_store_answers_503_at_once(bot_dir: Path) -> None:
    app = create_app(bot_dir, env={"BOT_STORE": "redis://127.0.0.1:1/0"}, llm=FakeLLM())
    client = app.test_client()
    resp = client.post("/api/chat", json={"message": "hello"})
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "store_unavailable"
    assert client.get("/readyz").status_code == 503


def test_chunked_body_is_read_within_the_cap(client: FlaskClient) -> None:
    import io

    small = b'{"message": "hello"}'
    resp = client.post("/api/chat", input_stream=io.BytesIO(small), content_type="application/json",
                       environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 200
    big = b'{"message": "' + b"x" * 20000 + b'"}'
    resp = client.post("/api/chat", input_stream=io.BytesIO(big), content_type="application/json",
                       environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "body_too_large"


def test_serve_runs_a_threaded_server_that_watches_files(bot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import werkzeug.serving

    seen: dict[str, Any] = {}

    def run_simple(host: str, port: int, app: Flask, **options: Any) -> None:
        seen.update(host=host, port=port, options=options, watching=app.extensions["hybridbot"].holder.watching,
                    holder=app.extensions["hybridbot"].holder)

    monkeypatch.setattr(werkzeug.serving, "run_simple", run_simple)
    serve(bot_dir, "127.0.0.1", 8765, store="memory://", env={})
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8765)
    assert seen["options"] == {"threaded": True, "use_reloader": False}
    assert seen["watching"] is True and seen["holder"].watching is False  # stopped when the server returns
