"""The JSON Schemas: valid draft-07, documented in docs/yaml-reference.md, referenced by every demo file."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from bot.schemacheck import SCHEMA_NAMES, schema
from bot.schemadoc import markdown

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_07(name: str) -> None:
    jsonschema.Draft7Validator.check_schema(schema(name))


def test_yaml_reference_is_in_step_with_the_schemas() -> None:
    written = (REPO / "docs" / "yaml-reference.md").read_text(encoding="utf-8")
    assert written == markdown(), "run: hybridbot schema --markdown docs/yaml-reference.md"


def test_every_key_of_every_schema_is_documented() -> None:
    text = markdown()

    def keys(node: dict) -> set[str]:
        found = set(node.get("properties", {}))
        for sub in node.get("properties", {}).values():
            found |= keys(sub)
            if isinstance(sub.get("additionalProperties"), dict):
                found |= keys(sub["additionalProperties"])
        for sub in node.get("definitions", {}).values():
            found |= keys(sub)
        return found

    for name in SCHEMA_NAMES:
        for key in keys(schema(name)):
            assert f"{key}`" in text, f"{name}: key {key!r} missing from the YAML reference"


def demo_files() -> list[Path]:
    return [REPO / "intents.yaml", *sorted((REPO / "flows").glob("*.yaml"))]


@pytest.mark.parametrize("path", demo_files(), ids=lambda p: p.name)
def test_demo_files_carry_a_schema_modeline_that_resolves(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (path.parent / first.split("$schema=", 1)[1].strip()).resolve()
    assert target.is_file() and target.parent == REPO / "bot" / "schema"
