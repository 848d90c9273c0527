"""The widget's texts: every language file has every English text, and nothing else."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "web"
WIDGET = (WEB / "widget.js").read_text(encoding="utf-8")
FILES = sorted((WEB / "i18n").glob("*.json"))
ERROR_CODES = {"message_too_long", "comment_too_long", "conversation_busy", "identity_required"}


def english() -> dict[str, str]:
    block = re.search(r"const STRINGS = \{(.*?)\n  \};", WIDGET, re.S)
    assert block, "widget.js has no STRINGS table"
    pairs = re.findall(r"(\w+): (?:'([^']*)'|\"([^\"]*)\")", block.group(1))
    return {key: single or double for key, single, double in pairs}


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_the_widget_lists_exactly_the_shipped_languages() -> None:
    listed = re.search(r"const LANGS = \[([^\]]*)\]", WIDGET)
    assert listed is not None
    assert re.findall(r"'([a-z]+)'", listed.group(1)) == [f.stem for f in FILES]


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_a_language_file_translates_every_text_and_keeps_its_placeholders(path: Path) -> None:
    texts = json.loads(path.read_text(encoding="utf-8"))
    base = english()
    assert len(base) > 30 and all(base.values())  # every English text was read, quotes of either kind
    assert set(texts) - {f"error_{c}" for c in ERROR_CODES} == set(base)
    for key, value in texts.items():
        assert isinstance(value, str) and value.strip(), key
        if key in base:
            assert placeholders(value) == placeholders(base[key]), key
    # the error codes it names are ones the server sends
    server = "".join(p.read_text() for p in (WEB.parent / "bot").glob("web*.py"))
    for key in texts:
        if key.startswith("error_"):
            assert f'"{key[len("error_"):]}"' in server, key
