"""@action, ActionRegistry, Context/Reply, discovery of the actions/ package."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot import Context, Reply, action
from bot.actions import ActionRegistry, discover
from bot.errors import ConfigError
from bot.schemacheck import suggest


@action
def plain(ctx):
    return "plain"


@action(name="renamed")
def with_name(ctx):
    return None


def test_decorator_with_and_without_parentheses_keeps_the_function() -> None:
    registry = ActionRegistry()
    registry.add(plain)
    registry.add(with_name)
    assert registry.names() == ["plain", "renamed"]
    assert plain(None) == "plain"                     # still a normal function
    assert registry.get("renamed") is with_name


def test_duplicate_name_names_both_places() -> None:
    registry = ActionRegistry()
    registry.add(plain)

    def plain_again(ctx):
        return "x"

    with pytest.raises(ConfigError) as info:
        registry.add(plain_again, "plain")
    message = info.value.message
    assert "action 'plain' is defined twice" in message
    assert f"test_actions.py:{plain.__code__.co_firstlineno}" in message and "rename one with @action(name=...)" in message


def test_wrong_signature_is_a_load_error() -> None:
    registry = ActionRegistry()
    with pytest.raises(ConfigError, match="must take exactly one argument, ctx: Context; it takes 2"):
        registry.add(lambda ctx, other: None, "two")


def test_suggest_nearest_action_name() -> None:
    registry = ActionRegistry()
    registry.add(plain)
    assert suggest("plian", registry.names()) == " (did you mean 'plain'?)"
    assert suggest("zzz", registry.names()) == ""


def test_context_and_reply_are_read_only() -> None:
    ctx = Context("c1", "hi", "greet", {}, {"a": 1}, "greet", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.text = "changed"  # type: ignore[misc]
    reply = Reply("t", slots={"a": 2}, goto="done")
    assert (reply.text, reply.slots, reply.goto, reply.buttons) == ("t", {"a": 2}, "done", ())


def test_discover_imports_actions_package_with_relative_imports(tmp_path: Path) -> None:
    actions = tmp_path / "actions"
    actions.mkdir()
    (actions / "data.py").write_text("PRICES = {'x3': 41900}\n", encoding="utf-8")
    (actions / "prices.py").write_text(
        "from bot import action\nfrom .data import PRICES\n\n\n@action\ndef lookup(ctx):\n"
        "    return str(PRICES['x3'])\n", encoding="utf-8")
    registry = ActionRegistry()
    assert discover(tmp_path, registry) == []
    assert registry.get("lookup")(None) == "41900"


def test_two_loads_of_one_directory_do_not_share_modules(tmp_path: Path) -> None:
    actions = tmp_path / "actions"
    actions.mkdir()
    (actions / "a.py").write_text("from bot import action\n\n\n@action\ndef one(ctx):\n    return 'v1'\n",
                                  encoding="utf-8")
    first = ActionRegistry()
    discover(tmp_path, first)
    (actions / "a.py").write_text("from bot import action\n\n\n@action\ndef one(ctx):\n    return 'v2'\n",
                                  encoding="utf-8")
    second = ActionRegistry()
    discover(tmp_path, second)
    assert (first.get("one")(None), second.get("one")(None)) == ("v1", "v2")
