"""The YAML reference (docs/yaml-reference.md), generated from the JSON Schemas so it never drifts."""
from __future__ import annotations

import json
import logging
from typing import Iterator

from .schemacheck import schema

log = logging.getLogger(__name__)

TITLES = {"intents": "intents.yaml (and intents/*.yaml)", "flow": "flows/<flow_id>.yaml",
          "fallback": "flows/fallback.yaml"}
INTRO = """# YAML reference

Generated from the JSON Schemas in `bot/schema/` by `hybridbot schema --markdown
docs/yaml-reference.md`; a test keeps the two in step. Every file starts with `version: 1`;
unknown keys are errors. Put `# yaml-language-server: $schema=<path to the schema>` on the first
line and VS Code (YAML extension) completes and checks keys as you type.
"""


def _kind(node: dict, root: dict) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return "list of steps" if name == "steps" else name
    if "const" in node:
        return f"always {json.dumps(node['const'])}"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v) if isinstance(v, bool) else v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(_kind(option, root) for option in node["oneOf"])
    kind = node.get("type", "mapping" if "properties" in node else "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of ({_kind(node.get('items', {}), root)})"
    if kind == "object":
        return "mapping"
    if kind == "string" and node.get("pattern") == "^[a-z][a-z0-9_]*$":
        return "name (lower_snake_case)"
    return {"string": "text", "integer": "whole number", "boolean": "true/false"}.get(kind, kind)


def _rows(node: dict, root: dict, prefix: str) -> Iterator[str]:
    required = set(node.get("required", ()))
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        default = f" Default: `{json.dumps(sub['default'])}`." if "default" in sub else ""
        need = "**required**. " if key in required else ""
        description = sub.get("description", "").replace("|", "\\|")
        yield f"| `{path}` | {_kind(sub, root)} | {need}{description}{default} |"
        if "properties" in sub:
            yield from _rows(sub, root, path + ".")
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in extra:
            yield from _rows(extra, root, f"{path}.<name>.")


def markdown() -> str:
    parts = [INTRO]
    for name, title in TITLES.items():
        root = schema(name)
        parts.append(f"\n## {title}\n\n{root.get('description', '')}\n")
        parts.append("| key | value | meaning |\n|---|---|---|")
        parts.extend(_rows(root, root, ""))
        if "definitions" in root and "step" in root["definitions"]:
            parts.append("\n### Steps\n\nEach step has exactly one of `say`, `ask`, `action`, `set`, `if`, "
                         "`goto`, `llm`, `handoff`, `end`, and may have an `id`.\n")
            parts.append("| key | value | meaning |\n|---|---|---|")
            parts.extend(_rows(root["definitions"]["step"], root, ""))
    return "\n".join(parts) + "\n"
