"""A server that starts while an edit is broken serves the last version that loaded clean (bot.lastgood)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import jsonschema
import pytest

from bot.app import Bot
from bot.errors import ConfigErrors
from bot.lastgood import snapshot_path
from bot.testing import FakeLLM
from bot.web import create_app
from botdata import MINIMAL
from webbot import write_bot

ENV = {"BOT_STORE": "memory://"}
BROKEN_INTENTS = "version: 1\nintents:\n  greet:\n    examples: [hi\n"  # an unclosed flow sequence


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    return write_bot(tmp_path / "bot")


def start(bot_dir: Path):
    return create_app(bot_dir, env=ENV, llm=FakeLLM(), rate_limits="off").test_client()


def say(client, text: str) -> dict:
    resp = client.post("/api/chat", json={"message": text})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_a_start_with_broken_yaml_serves_the_last_clean_version_and_says_so(
        bot_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = start(bot_dir)
    digest = good.get("/readyz").get_json()["config_digest"]
    assert "last_good" not in good.get("/readyz").get_json()
    assert snapshot_path(bot_dir / "var" / "cache", bot_dir).is_file()

    (bot_dir / "intents.yaml").write_text(BROKEN_INTENTS, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="bot.lastgood"):
        client = start(bot_dir)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["config_digest"] == digest
    assert body["last_good"]["serving"] is True and body["last_good"]["file_error_count"] == 1
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    jsonschema.validate(body, {**schemas["Readiness"], "components": {"schemas": schemas}})
    assert say(client, "hello")["replies"][0]["text"] == "Hello! How can I help?"
    logged = "\n".join(caplog.messages)
    assert "serving its last good version" in logged and "intents.yaml:4:" in logged  # file:line:col of the typo


def test_the_last_good_version_is_left_once_the_files_are_fixed(bot_dir: Path) -> None:
    start(bot_dir)
    written = (bot_dir / "intents.yaml").read_text(encoding="utf-8")
    (bot_dir / "intents.yaml").write_text(BROKEN_INTENTS, encoding="utf-8")
    app = create_app(bot_dir, env=ENV, llm=FakeLLM(), rate_limits="off", admin_token="t" * 24)
    client = app.test_client()
    assert client.get("/readyz").get_json()["last_good"]["serving"] is True
    (bot_dir / "intents.yaml").write_text(written.replace("good evening", "good evening, good night"),
                                          encoding="utf-8")
    resp = client.post("/admin/reload", headers={"Authorization": "Bearer " + "t" * 24})
    assert resp.status_code == 200, resp.get_json()
    assert "last_good" not in client.get("/readyz").get_json()


def test_without_a_clean_load_before_a_broken_start_still_fails_with_the_errors(bot_dir: Path) -> None:
    (bot_dir / "intents.yaml").write_text(BROKEN_INTENTS, encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        start(bot_dir)
    assert [e.location.split(":")[:2] for e in info.value.errors] == [["intents.yaml", "4"]]


def test_broken_handler_code_is_not_papered_over(tmp_path: Path) -> None:
    bot_dir = tmp_path / "bot"
    shutil.copytree(MINIMAL, bot_dir, ignore=shutil.ignore_patterns("var"))
    start(bot_dir)
    (bot_dir / "actions" / "cars.py").write_text("def broken(:\n", encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        start(bot_dir)
    assert any(e.location.startswith("actions/cars.py") for e in info.value.errors)


def test_tools_other_than_the_server_report_errors_and_never_fall_back(bot_dir: Path) -> None:
    start(bot_dir)
    (bot_dir / "intents.yaml").write_text(BROKEN_INTENTS, encoding="utf-8")
    with pytest.raises(ConfigErrors):
        Bot.from_path(bot_dir, llm=FakeLLM(), env=ENV)  # hybridbot validate / test / route load like this


@pytest.mark.parametrize("name", ["../escape.yaml", "/etc/passwd"])
def test_a_tampered_snapshot_is_refused(bot_dir: Path, name: str) -> None:
    start(bot_dir)
    path = snapshot_path(bot_dir / "var" / "cache", bot_dir)
    kept = json.loads(path.read_text(encoding="utf-8"))
    kept["files"][name] = "x: 1\n"
    kept["digest"] = "0123456789abcdef"
    path.write_text(json.dumps(kept), encoding="utf-8")
    (bot_dir / "intents.yaml").write_text(BROKEN_INTENTS, encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        start(bot_dir)
    assert info.value.errors[0].location.startswith("intents.yaml:4:")
    assert not (bot_dir / "var" / "escape.yaml").exists()


def test_knowledge_files_are_part_of_the_digest_and_of_the_kept_version(tmp_path: Path) -> None:
    bot_dir = tmp_path / "bot"
    shutil.copytree(MINIMAL, bot_dir, ignore=shutil.ignore_patterns("var"))
    first = Bot.from_path(bot_dir, llm=FakeLLM(), env=ENV)
    kept = json.loads(snapshot_path(bot_dir / "var" / "cache", bot_dir).read_text(encoding="utf-8"))
    knowledge = bot_dir / "knowledge" / "dealer.yaml"
    assert kept["files"]["knowledge/dealer.yaml"] == knowledge.read_text(encoding="utf-8")
    knowledge.write_text(knowledge.read_text(encoding="utf-8") + "parking: free for visitors\n", encoding="utf-8")
    second = Bot.from_path(bot_dir, llm=FakeLLM(), env=ENV)
    assert second.config.digest != first.config.digest  # /readyz shows a knowledge edit too
    first.close()
    second.close()


def test_an_unwritable_cache_folder_only_costs_the_fallback(bot_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (bot_dir / "var").mkdir()
    (bot_dir / "var" / "cache").write_text("not a folder", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bot.lastgood"):
        bot = Bot.from_path(bot_dir, llm=FakeLLM(), env=ENV, cache_dir=bot_dir / "var" / "cache")
    bot.close()
    assert any("cannot keep the last good version" in m for m in caplog.messages)


def test_bots_sharing_a_cache_folder_each_get_their_own_last_good_version(tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    env = {**ENV, "BOT_CACHE_DIR": str(cache)}
    first, second = write_bot(tmp_path / "first"), write_bot(tmp_path / "second")
    greet = second / "flows" / "greet.yaml"
    greet.write_text(greet.read_text(encoding="utf-8").replace("Hello! How can I help?", "Welcome to the second bot."),
                     encoding="utf-8")
    for root in (first, second):
        create_app(root, env=env, llm=FakeLLM(), rate_limits="off")
    (first / "intents.yaml").write_text(BROKEN_INTENTS, encoding="utf-8")
    client = create_app(first, env=env, llm=FakeLLM(), rate_limits="off").test_client()
    assert say(client, "hello")["replies"][0]["text"] == "Hello! How can I help?"  # its own, not the second bot's
    # the second bot's file copied over the first's is refused: it names the other folder
    shutil.copyfile(snapshot_path(cache, second), snapshot_path(cache, first))
    with pytest.raises(ConfigErrors):
        create_app(first, env=env, llm=FakeLLM(), rate_limits="off")
