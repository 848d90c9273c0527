"""Calibration of the router's threshold and margin from labelled messages."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.calibrate import CalibrationReport, calibrate, format_calibration, read_labelled
from bot.router import Router
from test_router import make_config

LABELLED = [
    ("hello there", "greet"), ("hey you", "greet"), ("good morning to you", "greet"),
    ("how much is that roadster", "ask_price"), ("what does it cost", "ask_price"),
    ("is the x3 expensive", "ask_price"), ("book me a test drive", "book_test_drive"),
    ("i would like to drive the sedan s", "book_test_drive"), ("when do you close today", "opening_hours"),
    ("are you open on saturday", "opening_hours"),
    ("what's the weather tomorrow", None), ("tell me a funny joke", None), ("write a poem about cats", None),
    ("who won the football game", None), ("how do I make pancakes", None), ("play music", None),
]


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(make_config())


def test_calibrate_picks_the_highest_threshold_within_one_point(router: Router) -> None:
    report = calibrate(router, LABELLED)
    assert isinstance(report, CalibrationReport)
    assert (report.n_in_scope, report.n_oos, report.n_training_copies) == (10, 6, 0)
    assert 0.0 <= report.threshold <= 0.95 and report.margin in (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2)
    row = next(r for r in report.rows if r.threshold == report.threshold)
    assert (row.in_scope_accuracy, row.oos_recall) == (report.in_scope_accuracy, report.oos_recall)
    best = max(r.in_scope_accuracy for r in report.rows)
    assert report.in_scope_accuracy == best  # 1 point of 10 messages: no loss allowed
    allowed = [r for r in report.rows if r.in_scope_accuracy == best]
    assert report.oos_recall == max(r.oos_recall for r in allowed)
    assert all(r.oos_recall < report.oos_recall for r in allowed if r.threshold < report.threshold)
    assert report.in_scope_accuracy >= 0.8 and report.oos_recall >= 0.8
    assert report.ambiguous_rate <= 0.05


def test_without_out_of_scope_a_larger_budget_raises_the_threshold(router: Router) -> None:
    in_scope = [pair for pair in LABELLED if pair[1] is not None]
    strict = calibrate(router, in_scope)
    loose = calibrate(router, in_scope, max_accuracy_loss=0.3)
    assert loose.threshold > strict.threshold
    assert loose.in_scope_accuracy >= max(r.in_scope_accuracy for r in loose.rows) - 0.3
    assert "within 30%" in loose.rule


def test_curve_is_monotonic_in_the_threshold(router: Router) -> None:
    rows = calibrate(router, LABELLED).rows
    assert rows[0].threshold == 0.0 and rows[-1].threshold == 0.95
    for lo, hi in zip(rows, rows[1:]):
        assert hi.oos_recall >= lo.oos_recall and hi.in_scope_accuracy <= lo.in_scope_accuracy
        assert hi.in_scope_rejected >= lo.in_scope_rejected


def test_target_recall_takes_the_lowest_threshold_reaching_it(router: Router) -> None:
    report = calibrate(router, LABELLED, target_oos_recall=1.0)
    assert report.oos_recall == 1.0
    lower = [r for r in report.rows if r.threshold < report.threshold]
    assert all(r.oos_recall < 1.0 for r in lower)
    assert "OOS recall >= 100%" in report.rule


def test_without_out_of_scope_examples_keeps_accuracy_near_best(router: Router) -> None:
    report = calibrate(lambda: router, [pair for pair in LABELLED if pair[1] is not None])
    assert report.n_oos == 0 and report.oos_recall == 0.0
    assert report.in_scope_accuracy >= max(r.in_scope_accuracy for r in report.rows) - 0.01
    assert report.rule == "no out-of-scope examples: highest threshold within 1% of the best accuracy"


def test_training_copies_are_counted_and_warned_about(router: Router) -> None:
    report = calibrate(router, [("hello", "greet"), ("opening hours", "opening_hours"), ("yo there", "greet")])
    assert report.n_training_copies == 2
    assert "warning: 2 of them are also training examples" in format_calibration(report)


def test_calibrate_needs_data(router: Router) -> None:
    with pytest.raises(ValueError, match="at least one"):
        calibrate(router, [])


def test_format_calibration_prints_table_and_choice(router: Router) -> None:
    report = calibrate(router, LABELLED)
    text = format_calibration(report)
    assert text.startswith("10 in-scope and 6 out-of-scope messages")
    assert "threshold  in-scope acc  OOS recall" in text
    starred = [line for line in text.splitlines() if line.startswith("*")]
    assert len(starred) == 1 and f"{report.threshold:.2f}" in starred[0]
    assert f"  threshold: {report.threshold:.2f}\n  margin: {report.margin:.2f}" in text
    assert sum(1 for line in text.splitlines() if line.strip().startswith("0.")) >= 19


def test_read_labelled_csv(tmp_path: Path) -> None:
    path = tmp_path / "labelled.csv"
    path.write_text('text,intent\nhello,greet\n"price, please",ask_price\nweather?,oos\njoke,\n'
                    "poem,out_of_scope\n\n", encoding="utf-8")
    assert read_labelled(path) == [("hello", "greet"), ("price, please", "ask_price"), ("weather?", None),
                                   ("joke", None), ("poem", None)]
