"""Entity extraction: lookup tables with synonyms and typo tolerance, regex entities, built-ins."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Collection, Iterator, Mapping

from .config import BUILTIN_ENTITIES, EntityDef
from .errors import BotError, ConfigError
from .patterns import PatternError, validate_pattern
from . import builtin_entities

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[^\W_]+")
# Fuzzy matching never turns these ordinary words into an entity value.
_COMMON_WORDS = frozenset("""
about above after again also another because been before being below between both cannot
could does doing down during each from further have having here how into just like made make
many more most much need only other over same should some such than that their them then there
these they this those through under until very want were what when where which while will with
would your yours hello thanks thank please price cost much cheap week today time good great
""".split())


@dataclass(frozen=True)
class EntityMatch:
    """One entity found in a text.

    Attributes:
        name: the entity's name (``car_model``, ``money``...).
        value: the canonical value: a lookup table's canonical key, a number, an ISO date
            ``YYYY-MM-DD``, a time ``HH:MM``, a normalised phone number or e-mail address, or
            the whole match of a regex entity.
        text: the surface form as written in the text.
        start: offset of the first character in the text given to ``extract``.
        end: offset just past the last character.
        qualifier: for ``money``, ``"max"`` ("under 30 grand"), ``"min"`` ("over $20k") or
            ``"approx"`` ("around 25k"); otherwise None.
        unit: for ``money``, the ISO currency code when one was written ("$" -> ``USD``).
    """

    name: str
    value: str | int | float
    text: str
    start: int
    end: int
    qualifier: str | None = None
    unit: str | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable form, used in route traces."""
        data: dict[str, object] = {"name": self.name, "value": self.value, "text": self.text,
                                   "start": self.start, "end": self.end}
        if self.qualifier:
            data["qualifier"] = self.qualifier
        if self.unit:
            data["unit"] = self.unit
        return data


class UnknownEntityError(BotError):
    """An entity name that is neither declared nor built in."""


def _tokens(text: str) -> Iterator[tuple[str, int, int]]:
    for m in _TOKEN.finditer(text):
        yield m.group().lower(), m.start(), m.end()


def _compact(text: str) -> str:
    return "".join(t for t, _, _ in _tokens(text))


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (a swap of neighbours counts 1), stopping past ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _digits(word: str) -> str:
    return "".join(ch for ch in word if ch.isdigit())


def fuzzy_limit(word: str) -> int:
    """Edits a typo of ``word`` may have: similarity 1 - edits/len must stay >= 0.8.

    So 4-letter words must be exact ("gold" is not "golf"), 5-9 letters allow one edit
    (a swap of two neighbours counts as one), 10 and more allow two.
    """
    if len(word) < 5:
        return 0
    return 1 if len(word) < 10 else 2


@dataclass(frozen=True)
class _Lookup:
    entity: str
    canonical: str
    compact: str  # synonym tokens joined without separators
    n_tokens: int


class EntityExtractor:
    """Finds entities in text: declared lookup and regex entities plus the built-in types.

    Args:
        entity_defs: the declared entities by name. ``number``, ``money``, ``date``, ``time``,
            ``email`` and ``phone`` are always available; a declared entity whose kind is one
            of these is an alias of that built-in under its own name.

    Overlaps are resolved over all entities at once: the longest match wins, then declared
    entities before built-ins (in the order e-mail, date, time, phone, money, number), then
    the leftmost. A match never overlaps another.
    """

    def __init__(self, entity_defs: Mapping[str, EntityDef]) -> None:
        self.defs = dict(entity_defs)
        self._regexes: dict[str, re.Pattern[str]] = {}
        self._aliases: dict[str, str] = {b: b for b in BUILTIN_ENTITIES}
        self._lookup: dict[str, list[_Lookup]] = {}  # compact form -> entries
        self._fuzzy: dict[tuple[int, str], list[_Lookup]] = {}  # (words, first letter) -> typo candidates
        self._max_tokens = 1
        self._surface: dict[str, list[str]] = {}
        self._spellings: dict[str, list[str]] = {}  # regex per distinct token sequence, for patterns
        for name, edef in self.defs.items():
            if edef.kind in BUILTIN_ENTITIES:
                self._aliases[name] = edef.kind
            elif edef.kind == "regex":
                try:
                    validate_pattern(edef.regex or "(?!)")
                except PatternError as exc:  # it runs on every message: refuse what can hang
                    raise ConfigError(edef.source.file, edef.source.line, edef.source.col,
                                      f"regex of entity {name!r}: {exc.message}") from None
                self._regexes[name] = re.compile(edef.regex or "(?!)", re.IGNORECASE)
            elif edef.kind == "lookup":
                self._add_lookup(edef)
            else:
                raise UnknownEntityError(f"entity {name!r} has unknown kind {edef.kind!r}")

    def _add_lookup(self, edef: EntityDef) -> None:
        per_value: list[list[str]] = []
        seen: set[str] = set()
        for canonical, synonyms in edef.values.items():
            forms: list[str] = []
            for surface in (*synonyms, canonical.replace("_", " ")):
                toks = [t for t, _, _ in _tokens(surface)]
                if not toks:
                    continue
                entry = _Lookup(edef.name, canonical, "".join(toks), len(toks))
                bucket = self._lookup.setdefault(entry.compact, [])
                if not any(e.entity == edef.name for e in bucket):
                    bucket.append(entry)
                    if edef.fuzzy and fuzzy_limit(entry.compact) > 0:
                        self._fuzzy.setdefault((entry.n_tokens, entry.compact[0]), []).append(entry)
                self._max_tokens = max(self._max_tokens, len(toks))
                spelled = r"[\W_]*".join(re.escape(t) for t in toks)
                if spelled not in self._spellings.setdefault(edef.name, []):
                    self._spellings[edef.name].append(spelled)
                if entry.compact not in seen:
                    seen.add(entry.compact)
                    forms.append(surface)
            per_value.append(forms)
        # round robin over values, so the first few forms name different values
        depth = max((len(f) for f in per_value), default=0)
        self._surface[edef.name] = [f[i] for i in range(depth) for f in per_value if i < len(f)]

    @property
    def names(self) -> list[str]:
        """Every entity name this extractor answers to (declared and built-in)."""
        return sorted(set(self.defs) | set(BUILTIN_ENTITIES))

    def surface_forms(self, name: str) -> list[str]:
        """Example surface forms of an entity, in a stable order (for example expansion)."""
        if name in self._surface:
            return list(self._surface[name])
        if name in self._aliases:
            return list(builtin_entities.SAMPLES[self._aliases[name]])
        if name in self._regexes:
            return [name.replace("_", " ")]
        raise UnknownEntityError(f"unknown entity {name!r}")

    def surface_pattern(self, name: str) -> str:
        """A regex (no capturing groups) matching the entity's surface forms, for patterns."""
        if name in self._surface:
            return "(?:" + "|".join(sorted(self._spellings[name], key=len, reverse=True)) + ")"
        if name in self._regexes:
            return "(?:" + self._regexes[name].pattern + ")"
        if name in self._aliases:
            return "(?:" + builtin_entities.PATTERNS[self._aliases[name]] + ")"
        raise UnknownEntityError(f"unknown entity {name!r}")

    def extract(self, text: str, *, now: datetime | None = None,
                only: Collection[str] | None = None) -> list[EntityMatch]:
        """Find entities in ``text``.

        Args:
            text: the message (any case; offsets refer to this string).
            now: reference time for relative dates ("tomorrow", "friday"); defaults to now.
            only: restrict to these entity names (e.g. the slot being asked for).

        Returns:
            Non-overlapping matches sorted by position.

        Raises:
            UnknownEntityError: ``only`` names an entity that does not exist.
        """
        wanted = set(self.names) if only is None else set(only)
        unknown = wanted - set(self.names)
        if unknown:
            raise UnknownEntityError(f"unknown entit{'y' if len(unknown) == 1 else 'ies'} {sorted(unknown)}")
        found: list[tuple[int, EntityMatch]] = []  # (priority, match)
        found += [(0, m) for m in self._extract_lookup(text, wanted)]
        for name, rx in self._regexes.items():
            if name in wanted:
                found += [(0, EntityMatch(name, m.group(), m.group(), m.start(), m.end()))
                          for m in rx.finditer(text) if m.end() > m.start()]
        for name, kind in self._aliases.items():
            if name in wanted:
                prio = 1 + BUILTIN_PRIORITY.index(kind)
                found += [(prio, EntityMatch(name, v, text[s:e], s, e, q, u))
                          for v, s, e, q, u in builtin_entities.extract(kind, text, now)]
        return _resolve(found)

    def _extract_lookup(self, text: str, wanted: set[str]) -> list[EntityMatch]:
        toks = list(_tokens(text))
        words = [t for t, _, _ in toks]
        out: list[EntityMatch] = []
        i = 0
        while i < len(toks):
            hit = self._lookup_at(words, i, wanted)
            if hit is None:
                i += 1
                continue
            entry, j = hit
            start, end = toks[i][1], toks[j - 1][2]
            out.append(EntityMatch(entry.entity, entry.canonical, text[start:end], start, end))
            i = j
        return out

    def _lookup_at(self, words: list[str], i: int, wanted: set[str]) -> tuple[_Lookup, int] | None:
        span = min(len(words) - i, self._max_tokens + 1)
        compacts = ["".join(words[i:i + n]) for n in range(span + 1)]  # compacts[n]: n words from i
        for n in range(span, 0, -1):  # longest window first
            for entry in self._lookup.get(compacts[n], ()):
                if entry.entity in wanted:
                    return entry, i + n
        for n in range(min(len(words) - i, self._max_tokens), 0, -1):
            compact = compacts[n]
            if len(compact) < 5 or (n == 1 and compact in _COMMON_WORDS) or compact.isdigit():
                continue
            best: tuple[int, _Lookup] | None = None
            for entry in self._fuzzy.get((n, compact[0]), ()):  # same word count and first letter
                if entry.entity not in wanted:
                    continue
                if _digits(compact) != _digits(entry.compact):  # "x5" is never a typo of "x3"
                    continue
                limit = fuzzy_limit(entry.compact)
                dist = _edit_distance(compact, entry.compact, limit)
                if dist <= limit and (best is None or dist < best[0]):
                    best = (dist, entry)
            if best is not None:
                return best[1], i + n
        return None


BUILTIN_PRIORITY = ("email", "date", "time", "phone", "money", "number")


def _resolve(found: list[tuple[int, EntityMatch]]) -> list[EntityMatch]:
    """Keep the longest matches (then higher priority, then leftmost) that do not overlap."""
    ranked = sorted(found, key=lambda pm: (-(pm[1].end - pm[1].start), pm[0], pm[1].start, pm[1].name))
    kept: list[EntityMatch] = []
    for _, m in ranked:
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: (m.start, m.name))
