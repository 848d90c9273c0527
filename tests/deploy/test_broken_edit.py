"""A broken YAML edit on disk while gunicorn starts workers (SIGHUP, a worker dying) never stops the server."""
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
