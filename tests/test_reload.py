"""Hot reload: good edits swap the bot in, bad edits keep the old one serving, conversations continue."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from bot.app import Bot
from bot.reload import BotHolder, snapshot
from bot.testing import FakeLLM
from bot.web import create_app
from webbot import load_bot, wait_for, write_bot

TOKEN = "reload-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GREET = """\
    version: 1
    trigger: greet
    steps:
      - say: "{text}"
"""
BROKEN_GREET = """\
    version: 1
    trigger: greet
    steps:
      - say: "Hi"
      - action: lookup_nothing
"""


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    return write_bot(tmp_path / "bot")


@pytest.fixture
def bot(bot_dir: Path) -> Bot:
    bot = load_bot(bot_dir)
    yield bot
    bot.close()


@pytest.fixture
def client(bot: Bot) -> FlaskClient:
    return create_app(bot, env={}, admin_token=TOKEN, rate_limits="off").test_client()


def edit(bot_dir: Path, name: str, text: str) -> None:
    path = bot_dir / "flows" / f"{name}.yaml"
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a visible change even on coarse clocks


def say(client: FlaskClient, text: str, cid: str | None = None) -> dict:
    body = {"message": text, **({"conversation_id": cid} if cid else {})}
    resp = client.post("/api/chat", json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_good_edit_is_swapped_in_by_admin_reload(client: FlaskClient, bot_dir: Path, bot: Bot) -> None:
    assert say(client, "hello")["replies"][0]["text"] == "Hello! How can I help?"
    edit(bot_dir, "greet", GREET.format(text="Welcome back!"))
    resp = client.post("/admin/reload", headers=AUTH)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["ok"] is True and body["digest"] != bot.config.digest
    assert say(client, "hello")["replies"][0]["text"] == "Welcome back!"
    ready = client.get("/readyz").get_json()
    assert ready["config_digest"] == body["digest"]
    assert ready["reload"]["reloads"] == 1 and ready["reload"]["last_error_count"] == 0


def test_bad_edit_keeps_the_old_bot_and_reports_file_line(client: FlaskClient, bot_dir: Path, bot: Bot) -> None:
    edit(bot_dir, "greet", BROKEN_GREET)
    resp = client.post("/admin/reload", headers=AUTH)
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "config_invalid"
    assert "flows/greet.yaml:5:" in err["message"] and "lookup_nothing" in err["message"]
    assert err["message"].endswith("1 error in 1 file.")
    assert say(client, "hello")["replies"][0]["text"] == "Hello! How can I help?"
    ready = client.get("/readyz").get_json()
    assert ready["config_digest"] == bot.config.digest
    assert ready["reload"]["last_error_count"] == 1 and ready["reload"]["last_attempt_at"] is not None


def test_conversation_continues_across_a_swap(client: FlaskClient, bot_dir: Path) -> None:
    first = say(client, "book a visit")
    assert first["replies"][0]["text"] == "What's your name?"
    edit(bot_dir, "greet", GREET.format(text="Welcome back!"))
    assert client.post("/admin/reload", headers=AUTH).status_code == 200
    answer = say(client, "Grace", first["conversation_id"])
    assert answer["replies"][0]["text"] == "See you soon, Grace."
    turns = client.get(f"/api/conversations/{first['conversation_id']}").get_json()["turns"]
    assert [t["text_in"] for t in turns] == ["book a visit", "Grace"]


def test_reload_keeps_the_store_and_an_injected_llm(bot: Bot, bot_dir: Path) -> None:
    holder = BotHolder(bot, env={})
    edit(bot_dir, "greet", GREET.format(text="Howdy"))
    result = holder.reload()
    assert result.ok and result.errors is None
    assert holder.bot is not bot
    assert holder.bot.store is bot.store and holder.bot.llm is bot.llm
    assert holder.bot.handle(None, "hello").text == "Howdy"


def test_reload_rebuilds_the_default_openai_client(bot_dir: Path) -> None:
    bot = Bot.from_path(bot_dir, env={"BOT_STORE": "memory://"})  # no key: the default client, switched off
    holder = BotHolder(bot, env={"BOT_STORE": "memory://"})
    assert holder.reload().ok
    assert type(holder.bot.llm) is type(bot.llm) and holder.bot.llm is not bot.llm
    assert holder.bot.store is bot.store


def test_watcher_swaps_good_edits_and_ignores_bad_ones(bot: Bot, bot_dir: Path) -> None:
    app = create_app(bot, env={}, reload=True, reload_interval=0.02, rate_limits="off")
    holder = app.extensions["hybridbot"].holder
    client = app.test_client()
    try:
        assert client.get("/readyz").get_json()["reload"]["watching"] is True
        edit(bot_dir, "greet", GREET.format(text="Edited on disk"))
        wait_for(lambda: say(client, "hello")["replies"][0]["text"] == "Edited on disk")
        serving = holder.bot
        edit(bot_dir, "greet", BROKEN_GREET)
        wait_for(lambda: holder.last_errors is not None)
        assert holder.bot is serving
        assert say(client, "hello")["replies"][0]["text"] == "Edited on disk"
        reloads = holder.reloads
        edit(bot_dir, "greet", GREET.format(text="Fixed"))
        # > not ==: the watcher may see the write and edit()'s utime as two changes and reload twice
        wait_for(lambda: holder.last_errors is None and holder.reloads > reloads)
        assert say(client, "hello")["replies"][0]["text"] == "Fixed"
    finally:
        holder.stop()
    assert client.get("/readyz").get_json()["reload"]["watching"] is False


def test_snapshot_covers_the_files_a_reload_reads(bot_dir: Path) -> None:
    (bot_dir / "actions").mkdir()
    (bot_dir / "actions" / "shop.py").write_text("", encoding="utf-8")
    (bot_dir / "knowledge").mkdir()
    (bot_dir / "knowledge" / "hours.yaml").write_text("version: 1\n", encoding="utf-8")
    (bot_dir / "notes.txt").write_text("not part of the bot", encoding="utf-8")
    assert set(snapshot(bot_dir)) == {"intents.yaml", "actions/shop.py", "knowledge/hours.yaml",
                                      "flows/greet.yaml", "flows/opening_hours.yaml", "flows/book_visit.yaml",
                                      "flows/fallback.yaml"}


def test_create_app_with_a_broken_directory_raises_config_errors(bot_dir: Path) -> None:
    from bot.errors import ConfigErrors

    edit(bot_dir, "greet", BROKEN_GREET)
    with pytest.raises(ConfigErrors, match="1 error in 1 file"):
        create_app(bot_dir, env={"BOT_STORE": "memory://"}, llm=FakeLLM())


@pytest.mark.parametrize("url", ["sqlite", "redis://127.0.0.1:6379/13"])
def test_admin_reload_on_one_worker_reaches_the_others_through_the_store(bot_dir: Path, tmp_path: Path,
                                                                         url: str) -> None:
    from bot.store import open_store

    if url == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    else:
        url += f"?prefix=test-follow-{os.getpid()}-{id(tmp_path)}:"
    workers = []
    for _ in range(2):  # two gunicorn workers: each its own Bot, store connection and holder
        bot = Bot.from_path(bot_dir, store=open_store(url, root=bot_dir), llm=FakeLLM(), env={})
        app = create_app(bot, env={}, admin_token=TOKEN, rate_limits="off")
        app.extensions["hybridbot"].holder.follow(0.05)
        workers.append((bot, app, app.test_client()))
    try:
        first, second = workers[0][2], workers[1][2]
        wait_for(lambda: second.get("/readyz").get_json()["reload"]["generation"] is not None)
        edit(bot_dir, "greet", GREET.format(text="Welcome back!"))
        resp = first.post("/admin/reload", headers=AUTH)
        assert resp.status_code == 200 and resp.get_json()["generation"] >= 1
        assert say(first, "hello")["replies"][0]["text"] == "Welcome back!"
        wait_for(lambda: say(second, "hello")["replies"][0]["text"] == "Welcome back!")
        ready = second.get("/readyz").get_json()
        assert ready["config_digest"] == resp.get_json()["digest"]
        assert ready["reload"]["reloads"] == 1 and ready["reload"]["generation"] == resp.get_json()["generation"]
    finally:
        for bot, app, _ in workers:
            app.extensions["hybridbot"].holder.stop()
        if url.startswith("redis"):
            workers[0][0].store.clear()
        for bot, _, _ in workers:
            bot.close()


def test_a_failed_reload_asks_nobody_else(client: FlaskClient, bot_dir: Path, bot: Bot) -> None:
    edit(bot_dir, "greet", BROKEN_GREET)
    assert client.post("/admin/reload", headers=AUTH).status_code == 422
    assert bot.store.reload_generation() == 0
