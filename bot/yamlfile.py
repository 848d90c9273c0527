"""Read YAML keeping the line and column of every key and value."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class YamlDoc:
    """A parsed YAML file: plain Python data plus 1-based positions of its nodes."""

    name: str
    text: str
    data: Any
    values: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    keys: dict[tuple, tuple[int, int]] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def line_text(self, line: int) -> str:
        lines = self.lines
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def position(self, path: tuple, *, key: bool = False) -> tuple[int, int]:
        """Position of the node at ``path`` (its key if ``key``), else of its nearest parent."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if key and probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), (1, 1))

    def error(self, path: tuple, message: str, *, key: bool = False) -> ConfigError:
        line, col = self.position(path, key=key)
        return ConfigError(self.name, line, col, message, self.line_text(line))

    def error_at(self, line: int, col: int, message: str) -> ConfigError:
        return ConfigError(self.name, line, col, message, self.line_text(line))


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first})",
                key_node.start_mark)
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _walk(node: yaml.Node, path: tuple, doc: YamlDoc) -> None:
    doc.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = path + (key,)
            doc.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, child, doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), doc)


_HINTS = (
    ("found character '\\t'", "YAML indentation must use spaces, not tabs"),
    ("could not find expected ':'", "each key needs a ':' after it; check the line above for a missing ':' or quote"),
    ("expected ',' or ']'", "a '[' list is not closed with ']'"),
    ("expected ',' or '}'", "a '{' mapping is not closed with '}'"),
    ("found unexpected end of stream", "a quote or bracket is never closed"),
    ("mapping values are not allowed here", "a value containing ': ' must be quoted"),
    ("found undefined alias", "an '*alias' refers to an anchor that does not exist"),
)


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or str(exc)
    message = f"YAML syntax error: {problem}"
    for needle, hint in _HINTS:
        if needle in problem or needle in (exc.context or ""):
            message += f" ({hint})"
            break
    return message


def parse(text: str, name: str) -> YamlDoc:
    """Parse YAML text; any syntax problem becomes a ConfigError naming ``name``."""
    doc = YamlDoc(name=name, text=text, data=None)
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return doc
        _walk(node, (), doc)
        loader = _Loader(text)
        try:
            doc.data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = _syntax_message(exc)
        if exc.context_mark and "flow" in (exc.context or ""):
            mark = exc.context_mark  # point at the bracket that is never closed
            message += f"; it was opened on line {mark.line + 1}"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise doc.error_at(line, col, message) from None
    except yaml.YAMLError as exc:  # a reader error: a control character in the text
        position = getattr(exc, "position", 0) or 0
        before = text[:position]
        line = before.count("\n") + 1
        col = position - (before.rfind("\n") + 1) + 1
        reason = getattr(exc, "reason", "unacceptable character")
        raise doc.error_at(line, col, f"YAML syntax error: {reason}; remove the invisible "
                                      f"control character") from None
    return doc


def read(path: Path, name: str | None = None) -> YamlDoc:
    """Read and parse a file; unreadable or non-UTF-8 files become ConfigErrors."""
    shown = name or path.as_posix()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(shown, 0, 0, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        bad = raw.splitlines()[line - 1].decode("utf-8", "replace") if raw.splitlines() else ""
        raise ConfigError(shown, line, col,
                          f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8",
                          bad) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return parse(text, shown)
