"""An app instance killed with SIGKILL mid-conversation: NGINX sends the next messages to the other."""
from __future__ import annotations

import pytest

from deploystack import MACHINE_REDIS, GatedLLM, Stack, chat, request, wait_refused

pytestmark = pytest.mark.deploy

BOOKING = [("book a test drive for the X3", "Which day suits you?"), ("friday", "What's your email address?"),
           ("jo@example.com", "Shall I book it?"), ("yes", "Booked! Your reference is TD-X3.")]


@pytest.fixture
def stack(make_stack, redis_prefix: str, llm: GatedLLM) -> Stack:
    return make_stack(f"{MACHINE_REDIS}?prefix={redis_prefix}", llm.base_url, instances=2, workers=1, threads=4)


def texts(reply) -> str:
    return "\n".join(r["text"] for r in reply.json()["replies"])


def test_after_kill_9_of_one_instance_the_other_answers_with_the_conversation_intact(stack: Stack) -> None:
    """POSTs are retried on the next instance only when they could not be sent (connection
    refused), which is what a dead instance gives; see the top of deploy/nginx.conf."""
    port = stack.nginx_port
    cid = None
    for message, expected in BOOKING[:2]:
        reply = chat(port, message, cid)
        assert reply.status == 200 and texts(reply) == expected
        cid = reply.json()["conversation_id"]

    stack.apps[0].kill()  # SIGKILL to the gunicorn master and its worker
    wait_refused(stack.ports[0])  # the worker may outlive the master by a moment

    for message, expected in BOOKING[2:]:
        reply = chat(port, message, cid)
        assert reply.status == 200, reply.body
        assert texts(reply) == expected
    others = [chat(port, "opening hours", cid) for _ in range(4)]  # round robin tries the dead one too
    assert [r.status for r in others] == [200] * 4
    assert "Connection refused" in stack.nginx_error_log()  # NGINX did meet the dead instance ...
    turns = request(port, "GET", f"/api/conversations/{cid}").json()["turns"]
    assert [t["text_in"] for t in turns] == [m for m, _ in BOOKING] + ["opening hours"] * 4  # ... and lost nothing


def test_with_every_instance_down_nginx_answers_503_in_json(stack: Stack) -> None:
    for app, app_port in zip(stack.apps, stack.ports):
        app.kill()
        wait_refused(app_port)
    reply = chat(stack.nginx_port, "hi")
    assert reply.status == 503
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["retry-after"] == "5"
    assert reply.json()["error"]["code"] == "unavailable"
