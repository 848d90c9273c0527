"""Intent router: normalise -> entities -> patterns -> classifier -> threshold and margin -> RouteResult."""
from __future__ import annotations

import functools
import logging
import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .classifier import IntentModel, build_model, cache_path, load_cached, save_cached
from .config import OUT_OF_SCOPE, IntentsConfig
from .entities import EntityExtractor, EntityMatch
from .errors import ConfigError, ConfigErrors
from .patterns import PLACEHOLDER, PatternError, compile_pattern

log = logging.getLogger(__name__)

CLASSIFY_CHARS = 1000   # the classifier and patterns read at most this much of a message
EXTRACT_CHARS = 2000    # entity extraction reads at most this much
CACHE_ENTRIES = 2048    # routed messages remembered per router (per worker), least recently used out
CACHE_CHARS = 200       # longer messages are routed afresh each time: they rarely come twice
MAX_VARIANTS = 6        # concrete examples made from one example with {entity} placeholders
TOP_K = 3
KINDS = ("rule", "classifier", "ambiguous", "fallback", "flow")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class RouteResult:
    """Where a message goes.

    Attributes:
        intent: the intent chosen, or None for ``fallback``.
        score: the classifier's probability for ``intent`` (1.0 for a pattern match).
        entities: entities found in the message.
        kind: ``rule`` (a pattern matched), ``classifier``, ``ambiguous`` (the top two are within
            the margin; ``intent`` is the top one), ``fallback`` (below the threshold, or
            out_of_scope won), or ``flow`` (set by the dialogue engine, never by the router).
        candidates: the best in-scope intents with their scores, best first; for ``ambiguous``
            the ones within the margin of the top (two or three).
        trace: JSON-serialisable record of the decision (see ``format_trace``). Results are
            shared by ``Router.route``'s cache: treat the trace as read-only (copy it to change it).
    """

    intent: str | None
    score: float
    entities: tuple[EntityMatch, ...]
    kind: str
    candidates: tuple[tuple[str, float], ...]
    trace: dict[str, Any] = field(default_factory=dict, compare=False)


def clean(text: str) -> str:
    """NFKC, control and zero-width characters removed, whitespace collapsed; case kept."""
    text = unicodedata.normalize("NFKC", text)
    return _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip()


def normalize(text: str) -> str:
    """What the classifier and patterns see: ``clean`` + lowercase, capped at CLASSIFY_CHARS."""
    return clean(text).lower()[:CLASSIFY_CHARS]


class Router:
    """Routes messages to intents. The model is built (or loaded from the cache) at construction.

    Args:
        intents: the ``intents.yaml`` part of a bot's config.
        cache_dir: where to keep the fitted model, keyed by ``intents.digest()``; None: no cache.

    Raises:
        ConfigErrors: a pattern is invalid or could backtrack catastrophically.
        ConfigError: the classifier is unknown or needs an extra that is not installed.

    Example:
        >>> router = Router(config.intents, cache_dir=Path("var/cache"))
        >>> router.route("how much is the X3?").intent
        'ask_price'
    """

    def __init__(self, intents: IntentsConfig, *, cache_dir: Path | None = None) -> None:
        self.config = intents
        self.settings = intents.router
        self.extractor = EntityExtractor(intents.entities)
        self.patterns = self._compile_patterns()
        self.from_cache = False
        started = time.perf_counter()
        self.model = self._load_model(cache_dir)
        self.load_seconds = time.perf_counter() - started
        self._route_cached = functools.lru_cache(maxsize=CACHE_ENTRIES)(self._route_on)
        log.info("router: %s", self.describe())

    def describe(self) -> str:
        """One line on the model: classifier, word vectors or not, intents, and how it was loaded."""
        kind = self.settings.classifier + (" + word vectors" if getattr(self.model, "vectors", None) is not None else "")
        how = "loaded from the cache" if self.from_cache else "built"
        return f"{kind}, {len(self.intent_names)} intents; {how} in {self.load_seconds:.1f} s"

    def _compile_patterns(self) -> list[tuple[str, str, re.Pattern[str]]]:
        """(intent, pattern as written, compiled with entities expanded), in YAML order."""
        compiled: list[tuple[str, str, re.Pattern[str]]] = []
        errors: list[ConfigError] = []
        for name, intent in self.config.intents.items():
            if name == OUT_OF_SCOPE:
                continue
            for pattern in intent.patterns:
                try:
                    rx = compile_pattern(pattern, self.extractor.surface_pattern, self.extractor.names)
                    compiled.append((name, pattern, rx))
                except PatternError as exc:
                    errors.append(ConfigError(intent.source.file, intent.source.line, intent.source.col,
                                              f"pattern {pattern!r} of intent {name!r}: {exc}"))
        if errors:
            raise ConfigErrors(errors)
        return compiled

    @classmethod
    def examples_of(cls, intents: IntentsConfig) -> tuple[list[str], list[str]]:
        """``training_data`` of a router for ``intents``, without building its model."""
        plain = cls.__new__(cls)
        plain.config, plain.extractor = intents, EntityExtractor(intents.entities)
        return plain.training_data()

    def training_data(self) -> tuple[list[str], list[str]]:
        """The (normalised) examples and labels the classifier is fitted on, placeholders expanded."""
        texts: list[str] = []
        labels: list[str] = []
        for name, intent in self.config.intents.items():
            for example in intent.examples:
                for variant in self.expand_example(example):
                    text = normalize(variant)
                    if text:
                        texts.append(text)
                        labels.append(name)
        return texts, labels

    def expand_example(self, example: str) -> list[str]:
        """Concrete examples from one with ``{entity}`` placeholders (at most MAX_VARIANTS).

        Variant i takes the i-th surface form of each placeholder's entity (wrapping around),
        so the expansion is bounded and the same on every run.
        """
        entity_names = set(self.extractor.names)
        known = [m.group(1) for m in PLACEHOLDER.finditer(example) if m.group(1) in entity_names]
        if not known:
            return [_fill(example, {})]
        forms = {n: self.extractor.surface_forms(n) for n in known}
        count = min(MAX_VARIANTS, max(len(f) for f in forms.values()))
        return [_fill(example, {n: f[i % len(f)] for n, f in forms.items()}) for i in range(count)]

    def _load_model(self, cache_dir: Path | None) -> IntentModel:
        digest = self.config.digest()
        path = cache_path(cache_dir, digest) if cache_dir is not None else None
        if path is not None:
            model = load_cached(path, digest)
            if model is not None:
                self.from_cache = True
                return model
        texts, labels = self.training_data()
        if not texts:
            raise ConfigError("intents.yaml", 0, 0, "no intent has an example; add 'examples' to at least one intent")
        model = build_model(self.settings.classifier, texts, labels, cache_dir, self.settings.word_vectors)
        if path is not None:
            save_cached(path, digest, model)
        return model

    @property
    def intent_names(self) -> list[str]:
        """The intents this router can return (out_of_scope excluded), in YAML order."""
        return [n for n in self.config.intents if n != OUT_OF_SCOPE]

    def scores(self, text: str) -> list[tuple[str, float]]:
        """Classifier probabilities for one message, best first (out_of_scope included)."""
        return self.scores_batch([text])[0]

    def scores_batch(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """``scores`` for many messages at once (much faster per message)."""
        norm = [normalize(t) for t in texts]
        probs = self.model.predict_proba(norm) if norm else np.zeros((0, len(self.model.classes)))
        classes = self.model.classes
        out = []
        for text, row in zip(norm, probs):
            if not text:
                out.append([])
                continue
            order = np.argsort(-row, kind="stable")
            out.append(list(zip([classes[i] for i in order], np.round(row[order], 6).tolist())))
        return out

    def decide(self, ranked: Sequence[tuple[str, float]], threshold: float | None = None,
               margin: float | None = None) -> tuple[str | None, str, float, tuple[tuple[str, float], ...]]:
        """Apply threshold and margin to classifier scores: (intent, kind, score, candidates)."""
        threshold = self.settings.threshold if threshold is None else threshold
        margin = self.settings.margin if margin is None else margin
        in_scope = [(n, s) for n, s in ranked if n != OUT_OF_SCOPE]
        if not ranked or not in_scope:
            return None, "fallback", 0.0, ()
        top_name, top = in_scope[0]
        if top <= 0.0:  # no known word at all (emoji only, another script...)
            return None, "fallback", 0.0, ()
        if ranked[0][0] == OUT_OF_SCOPE or top < threshold:
            return None, "fallback", top, tuple(in_scope[:TOP_K])
        if len(in_scope) > 1 and top - in_scope[1][1] < margin:
            close = tuple(c for c in in_scope[:TOP_K] if top - c[1] < margin)
            return top_name, "ambiguous", top, close
        return top_name, "classifier", top, tuple(in_scope[:TOP_K])

    def match_pattern(self, text: str) -> str | None:
        """The first intent (YAML order) one of whose patterns matches the normalised text."""
        norm = normalize(text)
        for name, _, rx in self.patterns:
            if rx.search(norm):
                return name
        return None

    def route(self, text: str, *, now: datetime | None = None) -> RouteResult:
        """Route one message. Never raises on odd input: empty text is a fallback.

        The result depends only on the text and the day of ``now`` (relative dates such as
        "friday" are the only input that changes with time), so results are remembered per
        (cleaned text, day) for messages up to CACHE_CHARS: greetings, button payloads and
        "thanks" come again and again, and a repeat costs a dictionary lookup.

        Args:
            text: the visitor's message.
            now: the time relative dates are resolved against (default: now).
        """
        cleaned = clean(text or "")
        today = (now or datetime.now()).date()
        if len(cleaned) > CACHE_CHARS:
            return self._route_on(cleaned, today)
        return self._route_cached(cleaned, today)

    def forget(self) -> None:
        """Empty the cache of ``route`` (benchmarks measure the cost of unseen messages with it)."""
        self._route_cached.cache_clear()

    def _route_on(self, cleaned: str, today: date) -> RouteResult:
        now = datetime.combine(today, datetime.min.time())
        return self._route(cleaned, self.extractor.extract(cleaned[:EXTRACT_CHARS], now=now), None)

    def _route(self, cleaned: str, entities: list[EntityMatch],
               ranked: list[tuple[str, float]] | None) -> RouteResult:
        norm = cleaned.lower()[:CLASSIFY_CHARS]
        trace: dict[str, Any] = {"stage": "", "normalized": norm, "candidates": [],
                                 "entities": [e.as_dict() for e in entities],
                                 "threshold": self.settings.threshold, "margin": self.settings.margin}
        if not norm:
            trace["stage"] = "empty"
            return RouteResult(None, 0.0, tuple(entities), "fallback", (), trace)
        for name, written, rx in self.patterns:
            m = rx.search(norm)
            if m:
                trace.update(stage="pattern", pattern=written, matched=m.group(), candidates=[[name, 1.0]])
                return RouteResult(name, 1.0, tuple(entities), "rule", ((name, 1.0),), trace)
        if ranked is None:
            ranked = self.scores(norm)
        intent, kind, score, candidates = self.decide(ranked)
        trace["stage"] = "classifier"
        trace["candidates"] = [[n, s] for n, s in ranked[:TOP_K]]
        if kind == "fallback":
            trace["reason"] = "out_of_scope" if ranked and ranked[0][0] == OUT_OF_SCOPE else "below_threshold"
        return RouteResult(intent, round(score, 6), tuple(entities), kind, candidates, trace)

    def route_many(self, texts: Sequence[str], *, now: datetime | None = None) -> list[RouteResult]:
        """``route`` for many messages, classifying them in one batch."""
        cleaned = [clean(t or "") for t in texts]
        ranked = self.scores_batch(cleaned)
        return [self._route(c, self.extractor.extract(c[:EXTRACT_CHARS], now=now), r)
                for c, r in zip(cleaned, ranked)]


def _fill(example: str, picks: dict[str, str]) -> str:
    """Put the picked surface forms in; an unknown {name} (the loader reports it) becomes its words."""
    return PLACEHOLDER.sub(lambda m: picks.get(m.group(1), m.group(1).replace("_", " ")), example)


def route_lines(router: Router, lines: Iterable[str], *, batch: int = 512) -> Iterator[dict[str, Any]]:
    """One ``{"text", "intent", "score", "kind"}`` per input line, for ``hybridbot route``.

    Lines are classified in batches of ``batch``; the trailing newline is not part of the text.
    """
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) >= batch:
            yield from _route_chunk(router, chunk)
            chunk = []
    if chunk:
        yield from _route_chunk(router, chunk)


def _route_chunk(router: Router, texts: list[str]) -> Iterator[dict[str, Any]]:
    for text, result in zip(texts, router.route_many(texts)):
        yield {"text": text, "intent": result.intent, "score": result.score, "kind": result.kind}


def format_trace(result: RouteResult) -> str:
    """A human-readable account of a routing decision, for ``hybridbot explain``."""
    t = result.trace
    lines = [f"text:       {t.get('normalized', '')!r}",
             f"decision:   {result.kind} -> {result.intent or '(fallback)'} (score {result.score:.3f})",
             f"stage:      {t.get('stage', '?')}"
             + (f" (pattern `{t['pattern']}` matched {t['matched']!r})" if t.get("stage") == "pattern" else "")
             + (f" ({t['reason'].replace('_', ' ')})" if t.get("reason") else ""),
             f"thresholds: threshold {t.get('threshold', 0):.2f}, margin {t.get('margin', 0):.2f}",
             "candidates:"]
    cands = t.get("candidates") or []
    lines += [f"  {i}. {name:<28} {score:.3f}" for i, (name, score) in enumerate(cands, 1)] or ["  (none)"]
    lines.append("entities:" if result.entities else "entities:   (none)")
    for e in result.entities:
        extra = "".join(f" {k}={v}" for k, v in (("qualifier", e.qualifier), ("unit", e.unit)) if v)
        lines.append(f"  {e.name:<12} {e.value!r:<24} {e.text!r} [{e.start}:{e.end}]{extra}")
    return "\n".join(lines)
