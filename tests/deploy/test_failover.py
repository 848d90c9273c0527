"""Instances dying (SIGKILL) or reloading (SIGHUP) behind NGINX: visitors' messages still get answers."""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter

import pytest

from deploystack import MACHINE_REDIS, Stack, chat, request, wait_refused
from gated_llm import GatedLLM

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


def wait_for_log(proc, text: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while proc.log_text().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} did not log {text!r} {count} times:\n{proc.tail()}")
        time.sleep(0.05)


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} still runs {timeout:g} s after the reload")


def test_a_graceful_reload_of_each_instance_under_load_answers_every_message(stack: Stack) -> None:
    stop = threading.Event()
    statuses: Counter[object] = Counter()
    lock = threading.Lock()

    def visitor() -> None:
        cid = None
        while not stop.is_set():
            try:
                reply = chat(stack.nginx_port, "opening hours", cid)
                status: object = reply.status
                cid = reply.json().get("conversation_id", cid)
            except OSError as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=visitor) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for app in stack.apps:  # SIGHUP: gunicorn starts new workers, old ones finish their requests
            booted = app.log_text().count("Booting worker")
            old_worker = int(re.findall(r"Booting worker with pid: (\d+)", app.log_text())[-1])
            os.kill(app.popen.pid, signal.SIGHUP)
            wait_for_log(app, "Booting worker", booted + 1)
            wait_gone(old_worker)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert statuses[200] > 0 and set(statuses) == {200}, statuses
