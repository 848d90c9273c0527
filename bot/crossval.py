"""Cross-validation of the router on the intents' own examples: what it confuses, and where.

Each intent's examples are dealt into ``folds`` groups; for each group a router is built from the
other groups (same entities, patterns and router settings) and routes the group's examples as a
visitor would send them. Every example is thus routed by a router that never saw it, which is
what a visitor's new wording meets. The held-out scores also calibrate threshold and margin
without a labelled file (``calibrate.choose``).
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from .calibrate import CalibrationReport, choose, score_arrays
from .classifier import wants_vectors
from .config import OUT_OF_SCOPE, IntentsConfig, Source
from .router import Router, normalize
from .yamlfile import read as read_yaml

FOLDS = 5
THIN = 5           # intents with fewer examples than this are listed as thin
VERDICTS = ("right", "ambiguous", "fell back", "wrong")


@dataclass(frozen=True)
class Outcome:
    """How one held-out example was routed.

    Attributes:
        text: the message routed (the example, with the first surface form of each ``{entity}``).
        gold: the example's intent; None for an ``out_of_scope`` example.
        got: the intent it was routed to; None for the fallback.
        kind: the route kind (``rule``, ``classifier``, ``ambiguous``, ``fallback``).
        score: the route's score.
        candidates: for ``ambiguous``, the intents the bot would offer.
        source: where the example is written.
    """

    text: str
    gold: str | None
    got: str | None
    kind: str
    score: float
    candidates: tuple[str, ...]
    source: Source

    @property
    def verdict(self) -> str:
        """``right``, ``ambiguous`` (the bot asks, and offers the right intent), ``fell back`` or ``wrong``."""
        if self.gold is None:
            return "right" if self.got is None else "wrong"
        if self.kind == "ambiguous" and self.gold in self.candidates:
            return "ambiguous"
        if self.got == self.gold and self.kind != "ambiguous":
            return "right"
        return "fell back" if self.got is None else "wrong"


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    outcomes: tuple[Outcome, ...]
    examples: Counter[str]          # examples per intent, out_of_scope included
    calibration: CalibrationReport  # threshold and margin picked from the held-out scores
    threshold: float                # the bot's own settings, as routed
    margin: float
    seconds: float

    def counts(self) -> dict[str, int]:
        found = Counter(o.verdict for o in self.outcomes)
        return {v: found[v] for v in VERDICTS}

    def share_right(self) -> float:
        return self.counts()["right"] / len(self.outcomes) if self.outcomes else 0.0

    def confusions(self) -> list[tuple[str, str, list[Outcome]]]:
        """(intent, what it went to, the examples), most examples first; ``(fallback)`` for fell back."""
        pairs: dict[tuple[str, str], list[Outcome]] = {}
        for o in self.outcomes:
            if o.verdict in ("wrong", "fell back"):
                pairs.setdefault((o.gold or OUT_OF_SCOPE, o.got or "(fallback)"), []).append(o)
        return sorted(((g, w, found) for (g, w), found in pairs.items()), key=lambda p: (-len(p[2]), p[0], p[1]))

    def per_intent(self) -> list[tuple[str, int, int]]:
        """(intent, routed right, routed) for every intent, the weakest share first."""
        right, total = Counter(), Counter()
        for o in self.outcomes:
            name = o.gold or OUT_OF_SCOPE
            total[name] += 1
            right[name] += o.verdict == "right"
        return sorted(((n, right[n], total[n]) for n in total), key=lambda r: (r[1] / r[2], r[0]))

    def thin(self) -> list[str]:
        return sorted(n for n, count in self.examples.items() if count < THIN)


def cross_validate(intents: IntentsConfig, *, folds: int = FOLDS, base_dir: Path | None = None) -> CrossValidation:
    """Route every example with a router built without its group; see the module docstring.

    Args:
        intents: the bot's ``intents.yaml`` config.
        folds: number of groups (at least 2).
        base_dir: the bot directory, to name each example's ``file:line:col``.

    Raises:
        ValueError: fewer than 2 folds, or fewer than 2 different examples.
    """
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    started = time.perf_counter()
    groups: dict[str, list[list[tuple[int, str]]]] = {}
    dealt = 0  # dealing goes on from intent to intent, so the groups stay even
    for name, intent in intents.intents.items():
        alike: dict[str, list[tuple[int, str]]] = {}  # examples the router reads the same way stay together
        for index, example in enumerate(intent.examples):
            alike.setdefault(normalize(example), []).append((index, example))
        groups[name] = [[] for _ in range(folds)]
        for _, members in sorted(alike.items(), key=lambda kv: hashlib.sha256(kv[0].encode()).hexdigest()):
            groups[name][dealt % folds].extend(members)  # hash order: deterministic
            dealt += 1
    if dealt < 2:
        raise ValueError("cross-validation needs at least 2 different examples (a router is built without each)")
    where = _positions(intents, base_dir)
    if intents.router.word_vectors is None:  # decided on the whole bot, not on a fold
        wanted = wants_vectors(Router.examples_of(intents)[0])
        intents = replace(intents, router=replace(intents.router, word_vectors=wanted))
    outcomes: list[Outcome] = []
    labels: list[str | None] = []
    ranked: list[list[tuple[str, float]]] = []
    for fold in range(folds):
        held = [(name, index, example) for name in groups for index, example in groups[name][fold]]
        if not held:
            continue
        kept = {name: replace(intent, examples=tuple(e for f, part in enumerate(groups[name]) if f != fold
                                                     for _, e in sorted(part)))
                for name, intent in intents.intents.items()}
        router = Router(replace(intents, intents=kept))
        texts = [router.expand_example(example)[0] for _, _, example in held]
        for (name, index, _), text, result in zip(held, texts, router.route_many(texts)):
            gold = None if name == OUT_OF_SCOPE else name
            candidates = tuple(n for n, _ in result.candidates) if result.kind == "ambiguous" else ()
            outcomes.append(Outcome(text, gold, result.intent, result.kind, float(result.score), candidates,
                                    where(name, index)))
            labels.append(gold)
        ranked += router.scores_batch(texts)
    calibration = choose(labels, score_arrays(ranked))
    return CrossValidation(folds, tuple(outcomes), Counter({n: len(i.examples) for n, i in intents.intents.items()}),
                           calibration, intents.router.threshold, intents.router.margin,
                           time.perf_counter() - started)


def _positions(intents: IntentsConfig, base_dir: Path | None):  # noqa: ANN202 - a small closure
    """A function giving an example's Source: its line and column when the YAML can be read again."""
    docs: dict[str, object] = {}

    def where(name: str, index: int) -> Source:
        owner = intents.intents[name].source
        if base_dir is None:
            return owner
        if owner.file not in docs:
            try:
                docs[owner.file] = read_yaml(base_dir / owner.file, owner.file)
            except Exception:  # the file changed since it was loaded: the intent's line will do
                docs[owner.file] = None
        doc = docs[owner.file]
        if doc is None:
            return owner
        try:
            line, col = doc.position(("intents", name, "examples", index))  # type: ignore[attr-defined]
        except (KeyError, IndexError, TypeError):
            return owner
        return Source(owner.file, line, col)

    return where


def format_cross_validation(cv: CrossValidation, *, show: int = 15) -> str:
    """The text ``hybridbot evaluate`` prints."""
    from .calibrate import format_calibration

    n = len(cv.outcomes)
    lines = [f"Cross-validation: {n} examples of {len(cv.examples)} intents in {cv.folds} groups; each routed "
             f"by a router built without its group ({cv.seconds:.1f} s).", ""]
    notes = {"ambiguous": "the bot asks which one was meant, offering the right one",
             "fell back": f"below the threshold {cv.threshold:.2f}, or out_of_scope won",
             "wrong": "answered as another intent (out_of_scope examples: answered at all)"}
    for verdict, count in cv.counts().items():
        lines.append(f"  {verdict:<10} {count:6d}  {count / max(n, 1):6.1%}  {notes.get(verdict, '')}".rstrip())
    confusions = cv.confusions()
    if confusions:
        lines += ["", "Most confused (intent -> where its examples went):"]
        for gold, got, found in confusions[:show]:
            lines.append(f"  {gold} -> {got}: {len(found)}, e.g. {_at(found[0].source)}: {found[0].text!r}")
    weak = [(name, right, total) for name, right, total in cv.per_intent() if right < total]
    if weak:
        lines += ["", "Weakest intents (examples routed right):"]
        lines += [f"  {name:<28} {right}/{total}  {right / total:5.0%}" for name, right, total in weak[:show]]
    thin = cv.thin()
    if thin:
        lines += ["", f"Intents with fewer than {THIN} examples (add some; with so few, a new wording is a guess): "
                  + ", ".join(thin)]
    missed = [o for o in cv.outcomes if o.verdict in ("wrong", "fell back")]
    if missed:
        lines += ["", f"Examples not routed right ({min(show, len(missed))} of {len(missed)}; --show N for more):"]
        for o in missed[:show]:
            where = f"{o.got} {o.score:.2f}" if o.got else f"fallback ({o.kind}, {o.score:.2f})"
            lines.append(f"  {_at(o.source)}: {o.text!r} ({o.gold or OUT_OF_SCOPE}) -> {where}")
    lines += ["", "Threshold and margin from these held-out scores (patterns not consulted):",
              format_calibration(cv.calibration)]
    return "\n".join(lines)


def _at(source: Source) -> str:
    return f"{source.file}:{source.line}:{source.col}" if source.line else source.file


def summary(cv: CrossValidation) -> dict[str, object]:
    """A JSON-ready summary (``hybridbot evaluate --json``)."""
    return {"folds": cv.folds, "examples": len(cv.outcomes), "counts": cv.counts(),
            "share_right": round(cv.share_right(), 4),
            "per_intent": {n: {"right": r, "routed": t} for n, r, t in cv.per_intent()},
            "confusions": [{"intent": g, "went_to": w, "count": len(f), "examples": [o.text for o in f]}
                           for g, w, f in cv.confusions()],
            "suggested": {"threshold": cv.calibration.threshold, "margin": cv.calibration.margin},
            "seconds": round(cv.seconds, 2)}
