"""Edits under real gunicorn: a broken one never stops the server; /admin/reload reaches every worker."""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from botdata import MINIMAL
from conftest import app_env
from deploystack import Proc, chat, request, start_gunicorn

pytestmark = pytest.mark.deploy

BROKEN_INTENTS = "version: 1\nintents:\n  greet:\n    examples: [hi\n"


def workers_booted(app: Proc) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", app.log_text())]


def wait_for_new_worker(app: Proc, known: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert app.alive, f"gunicorn stopped:\n{app.tail()}"
        booted = workers_booted(app)
        if len(booted) > known:
            return booted[-1]
        time.sleep(0.05)
    raise AssertionError(f"no new worker after {timeout:g} s:\n{app.tail()}")


def answers(app: Proc, port: int, timeout: float = 30.0) -> dict:
    """The reply to 'opening hours' once the new worker has loaded the bot."""
    deadline = time.monotonic() + timeout
    while True:
        assert app.alive, f"gunicorn stopped:\n{app.tail()}"
        try:
            reply = chat(port, "opening hours")
            if reply.status == 200:
                return reply.json()
        except OSError:
            pass
        assert time.monotonic() < deadline, "no answer from the new worker"
        time.sleep(0.1)


def test_workers_started_on_a_broken_edit_serve_the_last_good_version(
        tmp_path: Path, warm_router_cache: Path, llm) -> None:
    bot_dir, cache = tmp_path / "bot", tmp_path / "cache"
    shutil.copytree(MINIMAL, bot_dir, ignore=shutil.ignore_patterns("var"))
    shutil.copytree(warm_router_cache, cache)
    env = {**app_env("memory://", llm.base_url, cache), "BOT_DIR": str(bot_dir)}
    app, port = start_gunicorn("app", "bot.wsgi:app", tmp_path, env, workers=1, threads=4)
    try:
        before = answers(app, port)["replies"]
        digest = request(port, "GET", "/readyz").json()["config_digest"]
        (bot_dir / "intents.yaml").write_text(BROKEN_INTENTS, encoding="utf-8")

        # SIGHUP without `hybridbot validate` first (what systemctl reload does): new workers load the files
        os.kill(app.popen.pid, signal.SIGHUP)
        worker = wait_for_new_worker(app, 1)
        assert answers(app, port)["replies"] == before
        ready = request(port, "GET", "/readyz")
        assert ready.status == 200
        assert ready.json()["config_digest"] == digest and ready.json()["last_good"]["serving"] is True

        os.kill(worker, signal.SIGKILL)  # a worker dying and being replaced reads the broken files too
        wait_for_new_worker(app, 2)
        assert answers(app, port)["replies"] == before
        assert app.alive
        log = app.log_text()
        assert "serving its last good version" in log and "intents.yaml:4:" in log
        assert "Worker failed to boot" not in log
    finally:
        app.stop()


def test_admin_reload_received_by_one_worker_reloads_every_worker(tmp_path: Path, warm_router_cache: Path,
                                                                    llm, redis_prefix: str) -> None:
    from deploystack import MACHINE_REDIS

    bot_dir, cache = tmp_path / "bot", tmp_path / "cache"
    shutil.copytree(MINIMAL, bot_dir, ignore=shutil.ignore_patterns("var"))
    shutil.copytree(warm_router_cache, cache)
    token = "admin-" + "x" * 24
    env = {**app_env(f"{MACHINE_REDIS}?prefix={redis_prefix}edits:", llm.base_url, cache), "BOT_DIR": str(bot_dir),
           "BOT_ADMIN_TOKEN": token, "BOT_RELOAD_FOLLOW_INTERVAL": "0.2"}
    app, port = start_gunicorn("app", "bot.wsgi:app", tmp_path, env, workers=2, threads=4)
    try:
        wait_for_new_worker(app, 1)
        old = answers(app, port)["replies"][0]["text"]
        hours = bot_dir / "flows" / "opening_hours.yaml"
        hours.write_text(hours.read_text(encoding="utf-8").replace(old, "Open every day, 8:00 to 20:00."),
                         encoding="utf-8")
        resp = request(port, "POST", "/admin/reload", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200, resp.body
        time.sleep(1.0)  # five polls of the other worker
        generations, texts = set(), set()
        for _ in range(40):  # new connections: gunicorn hands them to both workers
            reply = chat(port, "opening hours")
            texts.add(reply.json()["replies"][0]["text"])
            generations.add(request(port, "GET", "/readyz").json()["reload"]["generation"])
        assert texts == {"Open every day, 8:00 to 20:00."}
        assert generations == {resp.json()["generation"]}
        log = app.log_text()
        assert "another worker asked for a reload" in log
    finally:
        app.stop()
