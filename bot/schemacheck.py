"""Check a parsed YAML file against its JSON Schema and word each problem for a business analyst."""
from __future__ import annotations

import difflib
import json
import logging
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator

import jsonschema
from jsonschema.exceptions import ValidationError

from .errors import ConfigError
from .yamlfile import YamlDoc

log = logging.getLogger(__name__)

SCHEMA_NAMES = ("intents", "flow", "fallback")


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    """The JSON Schema ``name`` (intents, flow or fallback) shipped in bot/schema/."""
    text = resources.files("bot.schema").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema(name))


def suggest(name: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(path: tuple) -> str:
    """Human name of the place ``path`` points to, e.g. "intent 'greet'" or "step 2"."""
    if not path:
        return "the file"
    parents = {"intents": "intent", "entities": "entity", "slots": "slot"}
    if len(path) >= 2 and isinstance(path[-2], str) and path[-2] in parents:
        return f"{parents[path[-2]]} {path[-1]!r}"
    if isinstance(path[-1], int):
        owner = path[-2] if len(path) >= 2 else ""
        if owner in ("steps", "then", "else"):
            return f"step {path[-1] + 1}" + (f" of '{owner}'" if owner != "steps" else "")
        return f"item {path[-1] + 1} of {owner!r}"
    return repr(path[-1])


_TYPE_WORDS = {"string": "a text", "number": "a number", "integer": "a whole number",
               "boolean": "true or false", "array": "a list", "object": "a mapping of keys to values"}


def _yaml(value: Any) -> str:
    """A choice as the YAML file writes it: true and false rather than Python's True and False."""
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return _yaml(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (an empty value)"
    return repr(value)


def _leaf(path: tuple) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return repr(part)
    return "this value"


def _properties(sub: dict) -> list[str]:
    return sorted(sub.get("properties", {}))


def _word(error: ValidationError, doc: YamlDoc) -> Iterator[ConfigError]:
    path = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = _properties(error.schema)
        for key in value:
            if key not in allowed:
                yield doc.error(path + (key,), f"unknown key {key!r} in {describe(path)}"
                                f"{suggest(key, allowed)}; allowed: {', '.join(allowed)}", key=True)
    elif kind == "required":
        missing = [k for k in error.validator_value if k not in (value or {})]
        for key in missing:
            if key == "version" and not path:
                yield doc.error_at(1, 1, "missing required key 'version'; add 'version: 1' at the top of the file")
            else:
                yield doc.error(path, f"missing required key {key!r} in {describe(path)}", key=True)
    elif kind == "const" and path[-1:] == ("version",):
        yield doc.error(path, f"'version' must be 1, got {_got(value)}")
    elif kind == "type":
        expected = error.validator_value
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in (expected if isinstance(expected, list) else [expected]))
        yield doc.error(path, f"{_leaf(path)} must be {words}, got {_got(value)}")
    elif kind == "enum":
        options = error.validator_value
        yield doc.error(path, f"{_leaf(path)} must be one of {', '.join(map(_yaml, options))}, got {_got(value)}"
                        f"{suggest(value, options)}")
    elif kind in ("minItems", "minProperties", "minLength"):
        yield doc.error(path, f"{_leaf(path)} must not be empty")
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        yield doc.error(path, f"{_leaf(path)} must be {sign} {error.validator_value}, got {_got(value)}")
    elif kind == "pattern" and "propertyNames" in error.schema_path:
        yield doc.error(path + (value,), f"{value!r} is not a valid name in {describe(path)}: use lower_snake_case "
                        f"(small letters, digits and '_', starting with a letter)", key=True)
    elif kind == "pattern":
        yield doc.error(path, f"{value!r} is not a valid name: use lower_snake_case "
                        f"(small letters, digits and '_', starting with a letter)")
    elif kind == "propertyNames":
        bad = error.instance
        yield doc.error(path + (bad,), f"{bad!r} is not a valid name in {describe(path)}: use lower_snake_case "
                        f"(small letters, digits and '_', starting with a letter)", key=True)
    elif kind == "oneOf":
        description = error.schema.get("description", "")
        forms = sorted({_TYPE_WORDS.get(s.get("type"), "true") if "type" in s or "const" in s else "a mapping"
                        for s in error.validator_value})
        hint = f" ({description})" if description else ""
        yield doc.error(path, f"{_leaf(path)} must be {' or '.join(forms)}, got {_got(value)}{hint}")
    else:
        yield doc.error(path, f"{_leaf(path)}: {error.message}")


def check(doc: YamlDoc, schema_name: str) -> list[ConfigError]:
    """Every schema problem of ``doc``, worded, positioned, without duplicates."""
    if not isinstance(doc.data, dict):
        what = "empty" if doc.data is None else f"{_got(doc.data)}"
        return [doc.error_at(1, 1, f"the file is {what}; it must be a mapping that starts with 'version: 1'")]
    errors: list[ConfigError] = []
    for error in _validator(schema_name).iter_errors(doc.data):
        errors.extend(_word(error, doc))
    return errors
