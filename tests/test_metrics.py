"""Prometheus metrics from turns, feedback and HTTP requests; multiprocess sums; JSON log lines."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask, Response
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics as metrics_module
from bot.app import Bot
from bot.metrics import JsonFormatter, Metrics, configure_logging, init_app
from bot.testing import FakeLLM
from bot.web import create_app

INTENTS = ("greet", "ask_price", "book_test_drive", "opening_hours", "out_of_scope")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def value(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def llm_turn(**llm: Any) -> dict[str, Any]:
    return {"turn_id": "t1", "kind": "fallback", "intent": None, "latency_ms": 850.0, "error": llm.get("error"),
            "incomplete": False, "llm": {"model": "fake", **llm}}


def test_a_rule_turn_and_an_llm_turn_of_the_minimal_bot_are_counted(minimal_bot: Bot, metrics: Metrics) -> None:
    minimal_bot.llm = FakeLLM(["We're a small dealership."])
    greet = minimal_bot.handle(None, "hi")
    fallback = minimal_bot.handle(greet.conversation_id, "tell me something about the moon")
    for turn in (greet, fallback):
        metrics.observe_turn(turn, INTENTS)
    assert value(metrics, "bot_turns_total", kind="classifier", intent="greet") == 1
    assert value(metrics, "bot_turns_total", kind="fallback", intent="none") == 1
    assert value(metrics, "bot_fallback_total") == 1
    assert value(metrics, "bot_turn_duration_seconds_count") == 2
    assert value(metrics, "bot_llm_request_duration_seconds_count") == 1
    assert value(metrics, "bot_llm_tokens_total", type="completion") == fallback.llm["completion_tokens"] > 0
    assert value(metrics, "bot_llm_tokens_total", type="prompt") == fallback.llm["prompt_tokens"] > 0


def test_llm_timings_tokens_and_errors_come_from_the_turns_llm_record(metrics: Metrics) -> None:
    metrics.observe_turn(llm_turn(latency_s=1.2, first_token_s=0.3, prompt_tokens=120, completion_tokens=40))
    metrics.observe_turn(llm_turn(error="timeout"))
    metrics.observe_turn(llm_turn(error="something new"))
    assert value(metrics, "bot_llm_request_duration_seconds_sum") == pytest.approx(1.2)
    assert value(metrics, "bot_llm_time_to_first_token_seconds_bucket", le="0.3") == 1
    assert value(metrics, "bot_llm_time_to_first_token_seconds_bucket", le="0.2") == 0
    assert value(metrics, "bot_llm_tokens_total", type="prompt") == 120
    assert value(metrics, "bot_llm_errors_total", kind="timeout") == 1
    assert value(metrics, "bot_llm_errors_total", kind="other") == 1
    assert value(metrics, "bot_turn_duration_seconds_sum") == pytest.approx(3 * 0.85)


def test_handler_errors_and_cut_short_replies_are_counted(metrics: Metrics) -> None:
    metrics.observe_turn({"kind": "flow", "intent": "ask_price", "error": "action", "latency_ms": 3})
    metrics.observe_turn({"kind": "fallback", "intent": None, "incomplete": True, "latency_ms": 3})
    assert value(metrics, "bot_handler_errors_total") == 1
    assert value(metrics, "bot_incomplete_turns_total") == 1


def test_intent_labels_stay_bounded(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    assert metrics.intent_label("greet", "classifier", INTENTS) == "greet"
    assert metrics.intent_label("made_up", "classifier", INTENTS) == "other"  # not in the config
    assert metrics.intent_label("cancel", "command", INTENTS) == "cancel"  # built-in commands
    assert metrics.intent_label(None, "fallback", INTENTS) == "none"
    assert metrics.intent_label("Robert'); DROP", "rule") == "other"  # not an intent name at all
    monkeypatch.setattr(metrics_module, "MAX_INTENT_LABELS", 3)
    labels = [metrics.intent_label(f"intent_{n}", "rule") for n in range(5)]
    assert labels == ["intent_0", "other", "other", "other", "other"]  # greet and cancel came first
    metrics.observe_turn({"kind": "something_else", "intent": "greet"}, INTENTS)
    assert value(metrics, "bot_turns_total", kind="other", intent="greet") == 1


def test_feedback_votes_are_counted_by_rating(metrics: Metrics) -> None:
    for rating in ("up", "down", "down", "sideways"):
        metrics.observe_feedback(rating)
    assert [value(metrics, "bot_feedback_total", rating=r) for r in ("up", "down", "other")] == [1, 2, 1]


@pytest.fixture
def flask_app(metrics: Metrics) -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:n>")
    def item(n: int) -> Response:
        return Response(str(n))

    @app.post("/api/feedback")
    def feedback() -> Response:
        return Response("{}", mimetype="application/json")

    @app.get("/stream")
    def stream() -> Response:
        return Response((f"data: {n}\n\n" for n in range(3)), mimetype="text/event-stream")

    init_app(app, metrics)
    return app


def test_requests_are_timed_by_route_template_method_and_status(flask_app: Flask, metrics: Metrics) -> None:
    client = flask_app.test_client()
    for n in (1, 2):
        client.get(f"/items/{n}").close()
    client.get("/nowhere").close()
    assert value(metrics, "bot_http_request_duration_seconds_count", endpoint="/items/<int:n>", method="GET",
                 status="200") == 2
    assert value(metrics, "bot_http_request_duration_seconds_count", endpoint="unmatched", method="GET",
                 status="404") == 1
    body = client.get("/metrics")
    assert body.content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.get_data(as_text=True))}
    assert {"bot_turns", "bot_fallback", "bot_http_request_duration_seconds", "bot_active_streams"} <= names
    assert value(metrics, "bot_http_request_duration_seconds_count", endpoint="/metrics", method="GET",
                 status="200") == 0  # scrapes are not counted


def test_an_open_sse_stream_is_an_active_stream_until_it_closes(flask_app: Flask, metrics: Metrics) -> None:
    resp = flask_app.test_client().get("/stream", buffered=False)
    assert next(resp.response) == b"data: 0\n\n"
    assert value(metrics, "bot_active_streams") == 1
    resp.close()
    assert value(metrics, "bot_active_streams") == 0


def test_a_successful_feedback_post_counts_its_rating(flask_app: Flask, metrics: Metrics) -> None:
    flask_app.test_client().post("/api/feedback", json={"rating": "down"}).close()
    assert value(metrics, "bot_feedback_total", rating="down") == 1


def test_create_app_serves_metrics_and_counts_feedback(minimal_bot: Bot) -> None:
    app = create_app(minimal_bot, env={}, rate_limits="off", conversation_rate_limits="off")
    metrics = app.extensions["hybridbot_metrics"]
    client = app.test_client()
    before = value(metrics, "bot_feedback_total", rating="up")
    with client.post("/api/chat", json={"message": "hi"}) as resp:  # a WSGI server closes every response
        turn = resp.get_json()
    vote = client.post("/api/feedback", json={"conversation_id": turn["conversation_id"],
                                              "turn_id": turn["turn_id"], "rating": "up"})
    assert vote.status_code == 200
    assert value(metrics, "bot_feedback_total", rating="up") == before + 1
    scrape = client.get("/metrics").get_data(as_text=True)
    assert 'bot_http_request_duration_seconds_count{endpoint="/api/chat",method="POST",status="200"}' in scrape


def test_multiprocess_mode_sums_the_values_of_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = textwrap.dedent("""
        import sys
        from bot.metrics import default_metrics, multiprocess_mode
        assert multiprocess_mode()
        m = default_metrics()
        for _ in range(int(sys.argv[1])):
            m.observe_turn({"kind": "rule", "intent": "greet", "latency_ms": 1.0})
        m.observe_feedback("up")
    """)
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", worker, str(n)], env=env, check=True, timeout=60)
    render = "from bot.metrics import default_metrics; print(default_metrics().render()[0].decode())"
    out = subprocess.run([sys.executable, "-c", render], env=env, check=True, timeout=60, capture_output=True,
                         text=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(out) for s in f.samples}
    assert samples[("bot_turns_total", (("intent", "greet"), ("kind", "rule")))] == 7
    assert samples[("bot_feedback_total", (("rating", "up"),))] == 2


# -- logs -------------------------------------------------------------------------------------------
def record(name: str = "bot.turn", msg: str = "turn", args: Any = (), **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_turn_log_line_is_one_json_object_with_the_turn_fields() -> None:
    line = JsonFormatter(log_text=False).format(record(
        conversation_id="c1", turn_id="t1", route_kind="classifier", intent="greet", flow=None, score=0.94,
        latency_ms=2.1, llm=None, error_kind=None, incomplete=False, text_in="my email is jo@example.com"))
    assert "\n" not in line
    data = json.loads(line)
    assert data["ts"].endswith("Z") and data["level"] == "info" and data["logger"] == "bot.turn"
    assert {k: data[k] for k in ("message", "conversation_id", "intent", "score", "latency_ms", "flow")} == {
        "message": "turn", "conversation_id": "c1", "intent": "greet", "score": 0.94, "latency_ms": 2.1,
        "flow": None}
    assert "text_in" not in data  # message text stays out of logs by default


def test_message_text_is_logged_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_LOG_TEXT", "1")
    data = json.loads(JsonFormatter().format(record(text_in="hello", reply="Hi!")))
    assert (data["text_in"], data["reply"]) == ("hello", "Hi!")


def test_exceptions_are_kept_in_the_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("bot.app", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    data = json.loads(JsonFormatter().format(rec))
    assert data["message"] == "failed x" and data["level"] == "error"
    assert "ValueError: boom" in data["exc"]


def test_gunicorn_access_records_become_structured_fields() -> None:
    atoms = {"h": "127.0.0.1", "m": "POST", "U": "/api/chat", "q": "", "s": "200", "B": 412, "M": 7,
             "a": 'curl "7"', "f": "-", "{x-forwarded-for}i": "203.0.113.9"}
    rec = record("gunicorn.access", '%(h)s "%(r)s"', ())
    rec.args = atoms  # gunicorn passes its atoms mapping as the record's args
    data = json.loads(JsonFormatter().format(rec))
    assert {k: data[k] for k in ("message", "method", "path", "status", "bytes", "duration_ms", "forwarded_for")} == {
        "message": "request", "method": "POST", "path": "/api/chat", "status": 200, "bytes": 412,
        "duration_ms": 7, "forwarded_for": "203.0.113.9"}
    assert "query" not in data and "referer" not in data


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_installs_one_json_handler(root_logger: logging.Logger) -> None:
    first, out = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first)
    configure_logging("INFO", stream=out)  # replaces, never stacks
    logging.getLogger("bot.turn").info("turn", extra={"turn_id": "t9", "intent": "greet"})
    assert first.getvalue() == ""
    data = json.loads(out.getvalue())
    assert (data["turn_id"], data["intent"]) == ("t9", "greet")
    configure_logging("WARNING", json=False, stream=out)
    logging.getLogger("bot.app").warning("plain %s", "text")
    assert out.getvalue().splitlines()[-1].endswith("WARNING bot.app: plain text")
