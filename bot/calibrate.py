"""Choose the router's threshold and margin from labelled messages, and print the trade-off table."""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .config import OUT_OF_SCOPE
from .router import Router, normalize

log = logging.getLogger(__name__)

OOS_LABELS = frozenset({"", "oos", OUT_OF_SCOPE, "none", "null"})
THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.0, 0.96, 0.01))
MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2)
MAX_AMBIGUOUS = 0.05   # the margin may send at most this share of in-scope messages to "did you mean"


@dataclass(frozen=True)
class CalibrationRow:
    """How the router does at one threshold (margin does not change who is answered)."""

    threshold: float
    in_scope_accuracy: float   # in-scope messages answered with the right intent
    oos_recall: float          # out-of-scope messages sent to the fallback
    in_scope_rejected: float   # in-scope messages wrongly sent to the fallback


@dataclass(frozen=True)
class CalibrationReport:
    """The chosen threshold and margin, the numbers behind them, and the whole curve."""

    threshold: float
    margin: float
    in_scope_accuracy: float
    oos_recall: float
    ambiguous_rate: float
    n_in_scope: int
    n_oos: int
    rule: str
    rows: tuple[CalibrationRow, ...]
    n_training_copies: int = 0   # labelled texts that are also training examples (flatter the curve)


def read_labelled(path: str | Path) -> list[tuple[str, str | None]]:
    """Read ``text,intent`` CSV rows; an empty, ``oos`` or ``out_of_scope`` label means out of scope.

    A first row ``text,intent`` is taken as a header.
    """
    rows: list[tuple[str, str | None]] = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or (i == 0 and [c.strip().lower() for c in row[:2]] == ["text", "intent"]):
                continue
            label = row[1].strip() if len(row) > 1 else ""
            rows.append((row[0], None if label.lower() in OOS_LABELS else label))
    return rows


def score_arrays(ranked: Sequence[Sequence[tuple[str, float]]]) -> tuple[np.ndarray, ...]:
    """Per message (``Router.scores_batch`` rows): best in-scope intent, its score, the runner-up's
    score, out_of_scope on top."""
    names, top, second, oos_top = [], [], [], []
    for row in ranked:
        in_scope = [(n, s) for n, s in row if n != OUT_OF_SCOPE]
        names.append(in_scope[0][0] if in_scope else "")
        top.append(in_scope[0][1] if in_scope else 0.0)
        second.append(in_scope[1][1] if len(in_scope) > 1 else 0.0)
        oos_top.append(bool(row) and row[0][0] == OUT_OF_SCOPE)
    return np.array(names, dtype=object), np.array(top), np.array(second), np.array(oos_top, dtype=bool)


def calibrate(router: Router | Callable[[], Router], labelled: Sequence[tuple[str, str | None]], *,
              max_accuracy_loss: float = 0.01, target_oos_recall: float | None = None) -> CalibrationReport:
    """Pick a threshold and a margin from labelled messages.

    Threshold: by default, among the thresholds whose in-scope accuracy is within
    ``max_accuracy_loss`` (1 point) of the best, the one with the best OOS recall, the lowest on
    ties: it refuses as much out-of-scope traffic as it can while giving up at most that much
    in-scope accuracy. Without out-of-scope examples, the highest of those thresholds. With
    ``target_oos_recall``, the lowest threshold whose OOS recall reaches it instead. Margin: the widest of MARGINS
    that makes at most 5 % of the answered in-scope messages ambiguous. Patterns are not
    consulted: this calibrates the classifier.

    Args:
        router: a Router, or a function building one.
        labelled: (text, intent) pairs; intent None for out of scope.
        max_accuracy_loss: in-scope accuracy (0-1) the threshold may cost, from the best.
        target_oos_recall: wanted share (0-1) of out-of-scope messages sent to the fallback.

    Raises:
        ValueError: ``labelled`` is empty.
    """
    if callable(router) and not isinstance(router, Router):
        router = router()
    if not labelled:
        raise ValueError("calibration needs at least one labelled message")
    texts = [t for t, _ in labelled]
    report = choose([label for _, label in labelled], score_arrays(router.scores_batch(texts)),
                    max_accuracy_loss=max_accuracy_loss, target_oos_recall=target_oos_recall)
    seen = set(router.training_data()[0])
    copies = sum(1 for t in texts if normalize(t) in seen)
    return replace(report, n_training_copies=copies)


def choose(labels: Sequence[str | None], arrays: tuple[np.ndarray, ...], *, max_accuracy_loss: float = 0.01,
           target_oos_recall: float | None = None) -> CalibrationReport:
    """``calibrate``'s choice from the messages' gold labels (None: out of scope) and ``score_arrays``."""
    gold = np.array([label if label is not None else "" for label in labels], dtype=object)
    names, top, second, oos_top = arrays
    ins = gold != ""
    n_in, n_oos = int(ins.sum()), int((~ins).sum())
    rows = []
    for th in THRESHOLDS:
        answered = (~oos_top) & (top >= th) & (top > 0)
        acc = float((answered & ins & (names == gold)).sum() / n_in) if n_in else 0.0
        rec = float((~answered & ~ins).sum() / n_oos) if n_oos else 0.0
        rej = float((~answered & ins).sum() / n_in) if n_in else 0.0
        rows.append(CalibrationRow(th, acc, rec, rej))
    if target_oos_recall is not None and n_oos:
        reaching = [r for r in rows if r.oos_recall >= target_oos_recall]
        chosen = reaching[0] if reaching else rows[-1]
        rule = f"lowest threshold with OOS recall >= {target_oos_recall:.0%}"
    else:
        best = max(r.in_scope_accuracy for r in rows)
        allowed = [r for r in rows if r.in_scope_accuracy >= best - max_accuracy_loss - 1e-9]
        if n_oos:
            chosen = max(allowed, key=lambda r: (r.oos_recall, -r.threshold))
            rule = (f"best OOS recall within {max_accuracy_loss:.0%} of the best in-scope accuracy "
                    "(lowest such threshold)")
        else:
            chosen = allowed[-1]
            rule = f"no out-of-scope examples: highest threshold within {max_accuracy_loss:.0%} of the best accuracy"
    answered = (~oos_top) & (top >= chosen.threshold) & (top > 0) & ins
    margin, amb_rate = 0.0, 0.0
    for m in MARGINS:
        rate = float((answered & (top - second < m)).sum() / max(int(answered.sum()), 1))
        if rate <= MAX_AMBIGUOUS:
            margin, amb_rate = m, rate
    return CalibrationReport(chosen.threshold, margin, chosen.in_scope_accuracy, chosen.oos_recall, amb_rate,
                             n_in, n_oos, rule, tuple(rows))


def format_calibration(report: CalibrationReport, step: float = 0.05) -> str:
    """The threshold table (every ``step``, plus the chosen row marked ``*``) and the choice."""
    lines = [f"{report.n_in_scope} in-scope and {report.n_oos} out-of-scope messages"]
    if report.n_training_copies:
        lines.append(f"warning: {report.n_training_copies} of them are also training examples; scores on "
                     "those are too good, so the threshold comes out too high. Label messages the bot has not "
                     "been trained on (e.g. from transcripts).")
    lines += ["", "  threshold  in-scope acc  OOS recall  in-scope rejected"]
    every = max(int(round(step * 100)), 1)
    for r in report.rows:
        mark = "*" if r.threshold == report.threshold else " "
        if mark == "*" or int(round(r.threshold * 100)) % every == 0:
            lines.append(f"{mark} {r.threshold:9.2f}  {r.in_scope_accuracy:11.1%}  {r.oos_recall:10.1%}  "
                         f"{r.in_scope_rejected:17.1%}")
    lines += ["", f"chosen: threshold {report.threshold:.2f} ({report.rule}), margin {report.margin:.2f} "
                  f"(asks to clarify {report.ambiguous_rate:.1%} of answered in-scope messages)",
              f"router:\n  threshold: {report.threshold:.2f}\n  margin: {report.margin:.2f}"]
    return "\n".join(lines)
