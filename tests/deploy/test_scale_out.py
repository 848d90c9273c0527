"""Two gunicorn instances (2 workers each) behind NGINX, sharing conversations through Redis."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.store import open_store
from botdata import MINIMAL
from deploystack import MACHINE_REDIS, ROOT, Stack, chat, metric_samples, open_stream, request, sse_events
from gated_llm import GatedLLM

pytestmark = pytest.mark.deploy

# One conversation of the minimal bot: (message, the reply it must get).
SCRIPT = [
    ("hi", "Hello! How can I help?"),
    ("opening hours", "We're open Monday to Saturday, 9:00 to 18:00."),
    ("book a test drive for the X3", "Which day suits you?"),
    ("friday", "What's your email address?"),
    ("jo@example.com", "Shall I book it?"),
    ("yes", "Booked! Your reference is TD-X3."),
    ("how much is the X5", "The X5 costs $61,900; it is sold out right now."),
    ("tell me something about the moon", "You said: tell me something about the moon"),  # LLM fallback
    ("when do you open", "We're open Monday to Saturday, 9:00 to 18:00."),
    ("hello", "Hi there! What can I do for you?"),
]


@pytest.fixture(scope="module")
def stack(make_stack, redis_prefix: str, llm: GatedLLM) -> Stack:
    return make_stack(f"{MACHINE_REDIS}?prefix={redis_prefix}", llm.base_url, instances=2, workers=2, threads=4)


@pytest.fixture(scope="module")
def store(redis_prefix: str):
    store = open_store(f"{MACHINE_REDIS}?prefix={redis_prefix}", root=MINIMAL)
    yield store
    store.close()


def texts(reply) -> str:
    return "\n".join(r["text"] for r in reply.json()["replies"])


def run_script(port: int) -> tuple[str, list[str]]:
    """Send SCRIPT as one conversation to ``port``; check each reply; return (id, turn ids)."""
    cid, turn_ids = None, []
    for message, expected in SCRIPT:
        reply = chat(port, message, cid)
        assert reply.status == 200, reply.body
        assert texts(reply) == expected, (message, reply.body)
        cid = reply.json()["conversation_id"]
        turn_ids.append(reply.json()["turn_id"])
    return cid, turn_ids


def test_a_conversation_switching_instances_mid_flow_keeps_its_slots(stack: Stack) -> None:
    a, b = stack.ports
    hops = [a, b, stack.nginx_port, a, b, stack.nginx_port]
    steps = SCRIPT[2:6] + SCRIPT[6:8]
    cid = None
    for port, (message, expected) in zip(hops, steps):
        reply = chat(port, message, cid)
        assert reply.status == 200, reply.body
        assert texts(reply) == expected, (port, message)
        cid = reply.json()["conversation_id"]
    transcript = request(stack.nginx_port, "GET", f"/api/conversations/{cid}").json()
    assert [t["text_in"] for t in transcript["turns"]] == [m for m, _ in steps]


def test_fifty_concurrent_conversations_record_every_turn_once_and_in_order(stack: Stack, store) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: run_script(stack.nginx_port), range(50)))
    assert len({cid for cid, _ in results}) == 50
    for cid, turn_ids in results:
        public = request(stack.nginx_port, "GET", f"/api/conversations/{cid}").json()["turns"]
        assert [t["text_in"] for t in public] == [m for m, _ in SCRIPT]
        assert [t["turn_id"] for t in public] == turn_ids
        stored = store.transcript(cid)
        assert [t["seq"] for t in stored] == list(range(1, len(SCRIPT) + 1))
        assert [t["turn_id"] for t in stored] == turn_ids


def test_simultaneous_messages_of_one_conversation_on_both_instances_are_all_applied(stack: Stack, store) -> None:
    a, b = stack.ports
    first = chat(a, "hi").json()
    cid = first["conversation_id"]
    messages = [(port, text) for port in (a, b) for text in ("opening hours", "hello", "when do you open")]
    with ThreadPoolExecutor(max_workers=len(messages)) as pool:
        replies = list(pool.map(lambda pm: chat(pm[0], pm[1], cid), messages))
    assert [r.status for r in replies] == [200] * len(messages)
    stored = store.transcript(cid)
    assert [t["seq"] for t in stored] == list(range(1, len(messages) + 2))
    assert {t["turn_id"] for t in stored} == {first["turn_id"], *(r.json()["turn_id"] for r in replies)}
    assert sorted(t["text_in"] for t in stored[1:]) == sorted(text for _, text in messages)


def test_sse_delta_passes_nginx_while_the_model_is_still_in_the_middle_of_its_reply(stack: Stack,
                                                                                      llm: GatedLLM) -> None:
    gate = llm.arm()
    conn, resp = open_stream(stack.nginx_port, "tell me something about the moon", timeout=10)
    try:
        assert resp.status == 200
        assert resp.getheader("Content-Type").startswith("text/event-stream")
        events = sse_events(resp)
        name, meta = next(events)
        assert name == "meta"
        name, delta = next(events)  # a buffering proxy would hold this until the model finished
        assert (name, delta["text"]) == ("delta", "You")
        assert gate.reached.is_set() and not gate.finished.is_set()
        gate.open()
        rest = list(events)
    finally:
        gate.open()
        conn.close()
    assert gate.finished.is_set()
    name, done = rest[-1]
    assert name == "done" and done["incomplete"] is False
    assert done["replies"][0]["text"] == "You said: tell me something about the moon"
    assert "".join(d["text"] for n, d in [("delta", delta), *rest] if n == "delta") == done["replies"][0]["text"]


def test_hundreds_of_streamed_replies_never_run_the_store_out_of_connections(stack: Stack) -> None:
    """Every SSE reply runs in a thread of its own: the store must not keep a Redis connection per
    thread (redis-py allows 100 per pool), or streams start failing with 503 after a few hundred."""
    def stream_once(_: int) -> tuple[int, str]:
        conn, resp = open_stream(stack.nginx_port, "tell me something about the moon", timeout=30)
        try:
            events = list(sse_events(resp)) if resp.status == 200 else []
        finally:
            conn.close()
        return resp.status, events[-1][0] if events else ""

    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(stream_once, range(480)))  # 120 per worker process, 4 of them
    assert outcomes.count((200, "done")) == len(outcomes), sorted(set(outcomes))


def test_nginx_serves_the_chatbox_files_and_proxies_everything_else(stack: Stack) -> None:
    port = stack.nginx_port
    widget = request(port, "GET", "/widget.js")
    assert widget.status == 200
    assert widget.body == (ROOT / "web" / "widget.js").read_bytes()
    assert widget.headers["cache-control"] == "max-age=3600"
    assert widget.headers["x-content-type-options"] == "nosniff"
    assert "etag" in widget.headers
    texts = request(port, "GET", "/i18n/de.json")  # fetched by the widget from other sites: any origin
    assert texts.status == 200 and texts.json()["send"] == "Senden"
    assert texts.headers["access-control-allow-origin"] == "*"
    assert texts.headers["x-content-type-options"] == "nosniff" and texts.headers["cache-control"] == "max-age=3600"
    assert request(port, "GET", "/i18n/xx.json").json()["error"]["code"] == "not_found"
    page = request(port, "GET", "/")
    assert page.status == 200 and "frame-ancestors" in page.headers["content-security-policy"]
    assert request(port, "GET", "/index.html").status == 301
    assert request(port, "GET", "/.git/config").status == 404
    assert request(port, "GET", "/healthz").json() == {"status": "ok"}
    missing = request(port, "GET", "/no/such/page")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    huge = request(port, "POST", "/api/chat", {"message": "x" * 100_000})
    assert huge.status == 413 and huge.json()["error"]["code"] == "body_too_large"
    assert huge.headers["content-type"] == "application/json"
    assert b"bot_http_request_duration_seconds" in request(port, "GET", "/metrics").body


def test_metrics_of_an_instance_with_two_workers_count_every_turn_sent(stack: Stack, store) -> None:
    port = stack.ports[0]

    def scrape() -> dict[str, float]:
        reply = request(port, "GET", "/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/plain")
        return metric_samples(reply.body.decode())

    def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    before = scrape()
    messages = ["hi"] * 6 + ["opening hours"] * 2 + ["tell me something about the moon"] * 4
    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda m: chat(port, m), messages))
    assert [r.status for r in replies] == [200] * len(messages)
    down = replies[0].json()
    vote = request(port, "POST", "/api/feedback", {"conversation_id": down["conversation_id"],
                                                    "turn_id": down["turn_id"], "rating": "down"})
    assert vote.status == 200
    recorded = [store.transcript(r.json()["conversation_id"])[-1] for r in replies]
    prompt_tokens = sum(t["llm"]["prompt_tokens"] for t in recorded if t["llm"])
    completion_tokens = sum(t["llm"]["completion_tokens"] for t in recorded if t["llm"])
    assert completion_tokens > 0
    for _ in range(4):  # any worker answers, and each must show the sum of both
        after = scrape()
        turns = sum(delta(after, before, k) for k in after if k.startswith("bot_turns_total{"))
        assert turns == len(messages)
        assert delta(after, before, 'bot_turns_total{intent="greet",kind="classifier"}') == 6
        assert delta(after, before, 'bot_turns_total{intent="opening_hours",kind="classifier"}') == 2
        assert delta(after, before, 'bot_turns_total{intent="none",kind="fallback"}') == 4
        assert delta(after, before, "bot_fallback_total") == 4
        assert delta(after, before, "bot_llm_request_duration_seconds_count") == 4
        assert delta(after, before, 'bot_llm_tokens_total{type="completion"}') == completion_tokens
        assert delta(after, before, 'bot_llm_tokens_total{type="prompt"}') == prompt_tokens
        assert delta(after, before, 'bot_feedback_total{rating="down"}') == 1
        assert delta(after, before, "bot_turn_duration_seconds_count") == len(messages)
        assert delta(after, before, 'bot_http_request_duration_seconds_count'
                                    '{endpoint="/api/chat",method="POST",status="200"}') == len(messages)
        assert after["bot_active_streams"] == 0
