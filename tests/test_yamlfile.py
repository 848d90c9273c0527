"""YAML reading keeps positions; syntax problems become ConfigErrors naming the real file."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import ConfigError
from bot.yamlfile import parse, read


def test_positions_of_keys_and_values() -> None:
    doc = parse("version: 1\nintents:\n  greet:\n    examples: [hi, hello]\n", "intents.yaml")
    assert doc.data == {"version": 1, "intents": {"greet": {"examples": ["hi", "hello"]}}}
    assert doc.keys[("intents", "greet")] == (3, 3)
    assert doc.values[("intents", "greet", "examples", 1)] == (4, 20)
    assert doc.position(("intents", "greet", "nothing", "deeper")) == (4, 5)


def test_syntax_error_names_the_file_and_points_at_the_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse("a: b: c\n", "flows/x.yaml")
    assert str(info.value) == ("flows/x.yaml:1:5: YAML syntax error: mapping values are not allowed here "
                               "(a value containing ': ' must be quoted)")


def test_control_character_is_reported_with_its_position() -> None:
    with pytest.raises(ConfigError) as info:
        parse("x: 1\nb: \x07\n", "a.yaml")
    assert (info.value.line, info.value.col) == (2, 4)


def test_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes("\ufeffversion: 1\n".encode("utf-8"))
    assert read(path, "a.yaml").data == {"version": 1}


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        read(tmp_path / "missing.yaml", "missing.yaml")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_config_error(text: str) -> None:
    try:
        parse(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.file == "fuzz.yaml" and exc.line >= 1
