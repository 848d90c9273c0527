"""Jinja2 sandbox for flow texts and conditions: rendering, and static checks at load time."""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger(__name__)

# Names a template may use; anything else is a load error.
TEMPLATE_NAMES = ("slots", "result", "entities", "text", "intent", "user", "flow", "options")


def _money(value: Any, currency: str = "$") -> str:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return str(value)
    if amount == int(amount):
        return f"{currency}{int(amount):,}"
    return f"{currency}{amount:,.2f}"


def _join_and(values: Iterable[Any], word: str = "and") -> str:
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


class Templates:
    """One sandboxed environment per bot; compiled templates are cached by source text."""

    def __init__(self) -> None:
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                            keep_trailing_newline=False)
        env.filters["money"] = _money
        env.filters["join_and"] = _join_and
        self.env = env
        self._cache: dict[str, Any] = {}

    # -- load-time checks -------------------------------------------------------------
    def check(self, source: str, *, expression: bool = False) -> tuple[str | None, int, set[tuple[str, str | None]]]:
        """Parse a template (or a bare expression); returns (error, line offset, used names).

        Used names are (top-level name, first attribute or None), e.g. ("slots", "car_model").
        """
        text = _as_template(source) if expression else source
        try:
            tree = self.env.parse(text)
        except TemplateSyntaxError as exc:
            return f"template error: {exc.message}", (exc.lineno or 1) - 1, set()
        used: set[tuple[str, str | None]] = set()
        assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            base = node.node
            if isinstance(base, nodes.Name) and base.ctx == "load":
                attr = node.attr if isinstance(node, nodes.Getattr) else (
                    node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
                used.add((base.name, attr))
        for node in tree.find_all(nodes.Name):
            if node.ctx == "load" and node.name not in assigned:
                used.add((node.name, None))
        return None, 0, used

    # -- run time -----------------------------------------------------------------------
    def _compiled(self, source: str) -> Any:
        template = self._cache.get(source)
        if template is None:
            template = self.env.from_string(source)
            # Jinja merges a template's globals (a ChainMap over the environment's) into every
            # render's context; a plain dict of the same (fixed) globals halves a render's cost.
            template.globals = dict(template.globals)
            self._cache[source] = template
        return template

    def render(self, source: str, variables: Mapping[str, Any]) -> str:
        if "{" not in source:
            return source
        return self._compiled(source).render(**variables).strip()

    def truthy(self, condition: str, variables: Mapping[str, Any]) -> bool:
        value = self._compiled(_as_template(condition)).render(**variables).strip()
        return value not in ("", "False", "None", "0", "false", "[]", "{}")


def _as_template(condition: str) -> str:
    stripped = condition.strip()
    if stripped.startswith("{{") and stripped.endswith("}}"):
        return stripped
    return "{{ " + stripped + " }}"
