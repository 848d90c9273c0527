"""Regex patterns of intents: `{entity}` placeholders, validation, and a guard against catastrophic backtracking."""
from __future__ import annotations

import logging
import re
from typing import Any, Callable, Collection

try:  # the regex parser behind `re`; private, so the check degrades to compile-only without it
    import re._parser as _sre_parse  # type: ignore[import-not-found]
    import re._constants as _sre_const  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre_const  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REPEATS = {_sre_const.MAX_REPEAT, _sre_const.MIN_REPEAT}
_UNBOUNDED = _sre_const.MAXREPEAT


class PatternError(ValueError):
    """A pattern that cannot be used; ``pos`` is the 0-based offset of the problem in it."""

    def __init__(self, message: str, pos: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


def _placeholders_masked(pattern: str, entities: Collection[str] | None) -> str:
    """Replace each `{name}` by a group of the same length, so error offsets stay true."""
    def mask(m: re.Match[str]) -> str:
        name = m.group(1)
        if entities is not None and name not in entities:
            hint = ", ".join(sorted(entities)) or "none declared"
            raise PatternError(f"unknown entity {name!r} in pattern (entities: {hint})", m.start())
        return "(" + "x" * (len(m.group()) - 2) + ")"
    return PLACEHOLDER.sub(mask, pattern)


def _nested_quantifier(items: Any, inside_repeat: bool = False) -> bool:
    """True when an unbounded repeat sits inside another repeat (``(a+)+``, ``(.*)*``...)."""
    for op, av in items:
        if op in _REPEATS:
            lo, hi, body = av
            if inside_repeat and hi == _UNBOUNDED:
                return True
            if _nested_quantifier(body, inside_repeat or hi > 1):
                return True
        elif op == _sre_const.SUBPATTERN:
            if _nested_quantifier(av[-1], inside_repeat):
                return True
        elif op == _sre_const.BRANCH:
            if any(_nested_quantifier(b, inside_repeat) for b in av[1]):
                return True
        elif op in (_sre_const.ASSERT, _sre_const.ASSERT_NOT):
            if _nested_quantifier(av[1], inside_repeat):
                return True
        # ATOMIC_GROUP and POSSESSIVE_REPEAT never backtrack into themselves: safe
    return False


def _outer_quantifier_pos(pattern: str) -> int:
    """Best guess at where the offending outer quantifier is: a ')' followed by a quantifier."""
    m = re.search(r"\)(?:[*+]|\{\d*,\d*\})", pattern)
    return m.start() + 1 if m else 0


def check_pattern(pattern: str, entities: Collection[str] | None = None) -> str | None:
    """Why ``pattern`` cannot be used, or None when it is fine.

    Args:
        pattern: an intent pattern; ``{entity}`` placeholders stand for an entity's surface forms.
        entities: known entity names; when given, an unknown placeholder is an error.

    Returns:
        A message that starts with ``at position N:`` (0-based offset into ``pattern``), e.g.
        ``"at position 4: missing ), unterminated subpattern"``; the config loader turns the
        offset into ``file:line:col``.
    """
    try:
        validate_pattern(pattern, entities)
    except PatternError as exc:
        return f"at position {exc.pos}: {exc.message}"
    return None


def validate_pattern(pattern: str, entities: Collection[str] | None = None) -> None:
    """Raise PatternError (with the offset) when ``pattern`` is invalid or can backtrack badly."""
    masked = _placeholders_masked(pattern, entities)
    try:
        parsed = _sre_parse.parse(masked, re.IGNORECASE)
    except re.error as exc:
        raise PatternError(f"invalid regular expression: {exc.msg}", exc.pos or 0) from None
    if _nested_quantifier(list(parsed)):
        raise PatternError(
            "nested quantifier (like '(a+)+' or '(.*)*') can take exponential time on some messages; "
            "rewrite it without a repeat inside a repeat, or make the inner part atomic "
            "('(?>...)') or possessive ('a++')", _outer_quantifier_pos(masked))


def compile_pattern(pattern: str, expand: Callable[[str], str],
                    entities: Collection[str] | None = None) -> re.Pattern[str]:
    """Validate, replace `{entity}` by ``expand(entity)`` (a regex for its surface forms) and compile.

    Raises:
        PatternError: see validate_pattern.
    """
    validate_pattern(pattern, entities)
    source = PLACEHOLDER.sub(lambda m: expand(m.group(1)), pattern)
    try:
        parsed = _sre_parse.parse(source, re.IGNORECASE)
        compiled = re.compile(source, re.IGNORECASE)
    except re.error as exc:  # only an entity's own regex can still be wrong here
        raise PatternError(f"invalid regular expression after expanding entities: {exc.msg}") from None
    if _nested_quantifier(list(parsed)):
        first = PLACEHOLDER.search(pattern)
        raise PatternError("an entity placeholder inside a repeated group can take exponential time; "
                           "match the entity once, without '*' or '+' around it", first.start() if first else 0)
    return compiled
