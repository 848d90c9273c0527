"""Redis goes away: the service answers 503 in JSON at once (no hang, no traceback) and recovers.

The test runs its own redis-server on a free port; the machine's Redis is never stopped.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from deploystack import Proc, Stack, chat, open_stream, request, start_redis, wait_for_port
from gated_llm import GatedLLM

pytestmark = pytest.mark.deploy


@pytest.fixture
def redis_server(tmp_path: Path) -> tuple[Proc, int, Path]:
    proc, port = start_redis("redis", tmp_path / "redis")
    yield proc, port, tmp_path / "redis"
    proc.stop()


def texts(reply) -> str:
    return "\n".join(r["text"] for r in reply.json()["replies"])


def assert_store_unavailable(reply) -> None:
    assert reply.status == 503, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == "store_unavailable"
    assert b"Traceback" not in reply.body and b"redis" not in reply.body.lower()


def test_redis_down_gives_503_json_and_the_conversation_resumes_when_redis_is_back(
        make_stack, llm: GatedLLM, redis_server: tuple[Proc, int, Path]) -> None:
    redis_proc, redis_port, redis_dir = redis_server
    stack: Stack = make_stack(f"redis://127.0.0.1:{redis_port}/0?prefix=outage:", llm.base_url, instances=1)
    port = stack.nginx_port
    first = chat(port, "book a test drive for the X3")
    assert first.status == 200 and texts(first) == "Which day suits you?"
    cid = first.json()["conversation_id"]

    redis_proc.stop()  # SIGTERM: Redis writes its append-only file and exits

    assert_store_unavailable(chat(port, "friday", cid, timeout=10))
    assert_store_unavailable(chat(port, "hi", timeout=10))
    conn, resp = open_stream(port, "friday", cid, timeout=10)
    try:
        assert resp.status == 503 and resp.getheader("Content-Type") == "application/json"
        assert b'"store_unavailable"' in resp.read()
    finally:
        conn.close()
    ready = request(port, "GET", "/readyz", timeout=10)
    assert ready.status == 503 and ready.json()["store"] == "unavailable"
    assert request(port, "GET", "/healthz", timeout=10).status == 200  # alive, just not ready

    restarted = Proc.start("redis-restarted", [*redis_proc.popen.args], redis_dir)
    try:
        wait_for_port(redis_port, restarted)
        assert request(port, "GET", "/readyz", timeout=10).status == 200
        reply = chat(port, "friday", cid, timeout=10)
        assert reply.status == 200, reply.body
        assert texts(reply) == "What's your email address?"  # the slot filled before the outage is still there
        turns = request(port, "GET", f"/api/conversations/{cid}").json()["turns"]
        assert [t["text_in"] for t in turns] == ["book a test drive for the X3", "friday"]
    finally:
        restarted.stop()
    assert "Traceback" not in stack.apps[0].log_text()
