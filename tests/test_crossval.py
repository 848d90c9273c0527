"""Cross-validation of the router on the intents' own examples (``hybridbot evaluate``)."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.config import IntentDef, Source, load_config
from bot.crossval import Outcome, cross_validate, format_cross_validation, summary
from bot.router import Router
from botdata import MINIMAL


@pytest.fixture(scope="module")
def intents():  # noqa: ANN201 - IntentsConfig
    return load_config(MINIMAL).intents


def test_every_example_is_routed_once_by_a_router_that_never_saw_it(intents, monkeypatch) -> None:
    built: list[set[str]] = []
    real_init = Router.__init__

    def recording(self: Router, config, **kwargs) -> None:  # noqa: ANN001
        built.append({e for i in config.intents.values() for e in i.examples})
        real_init(self, config, **kwargs)

    monkeypatch.setattr(Router, "__init__", recording)
    result = cross_validate(intents, folds=4)
    everything = Counter(e for i in intents.intents.values() for e in i.examples)
    assert len(result.outcomes) == sum(everything.values())
    assert len(built) == 4
    # each example is missing from exactly one router: the one that routed it
    for example in everything:
        assert sum(example not in seen for seen in built) == 1, example
    assert {o.gold for o in result.outcomes} == {n for n in intents.intents if n != "out_of_scope"} | {None}


def test_the_same_config_gives_the_same_report(intents) -> None:
    first, second = cross_validate(intents, folds=3), cross_validate(intents, folds=3)
    assert [(o.text, o.got, o.score) for o in first.outcomes] == [(o.text, o.got, o.score) for o in second.outcomes]
    assert summary(first)["counts"] == summary(second)["counts"]


@pytest.mark.parametrize("gold, got, kind, candidates, verdict", [
    ("greet", "greet", "classifier", (), "right"),
    ("greet", "greet", "rule", (), "right"),
    ("greet", "thanks", "classifier", (), "wrong"),
    ("greet", None, "fallback", (), "fell back"),
    ("greet", "thanks", "ambiguous", ("thanks", "greet"), "ambiguous"),
    ("greet", "thanks", "ambiguous", ("thanks", "bye"), "wrong"),
    (None, None, "fallback", (), "right"),
    (None, "greet", "classifier", (), "wrong"),
])
def test_verdicts(gold, got, kind, candidates, verdict) -> None:  # noqa: ANN001
    assert Outcome("x", gold, got, kind, 0.5, candidates, Source("intents.yaml")).verdict == verdict


def test_a_confusable_intent_shows_up_with_its_examples_file_line_and_col(tmp_path: Path) -> None:
    (tmp_path / "intents.yaml").write_text("""version: 1
router: {threshold: 0.2, margin: 0.0}
intents:
  opening_hours:
    examples:
      - when are you open
      - what are your opening hours
      - are you open on sunday
      - what time do you close
      - when do you open tomorrow
  closing_time:
    examples:
      - what time do you close today
      - when do you close
      - are you closed on sunday
      - closing time please
      - when do you shut
  greet:
    examples: [hi, hello, hey there, good morning, hi there]
""")
    (tmp_path / "flows").mkdir()
    for name in ("opening_hours", "closing_time", "greet"):
        (tmp_path / "flows" / f"{name}.yaml").write_text(f"version: 1\ntrigger: {name}\nsteps:\n  - say: ok\n")
    result = cross_validate(load_config(tmp_path, discover_actions=False).intents, folds=5, base_dir=tmp_path)
    lines = (tmp_path / "intents.yaml").read_text().splitlines()
    for o in result.outcomes:  # every position points at the example itself
        assert lines[o.source.line - 1][o.source.col - 1:].startswith(o.text)
    confused = {(g, w) for g, w, _ in result.confusions()}
    assert confused & {("opening_hours", "closing_time"), ("closing_time", "opening_hours")}
    assert set(result.confusions()[0][:2]) == {"opening_hours", "closing_time"}  # the top confusion
    text = format_cross_validation(result)
    gold, went, found = result.confusions()[0]
    assert f"{gold} -> {went}: {len(found)}, e.g. intents.yaml:{found[0].source.line}:9" in text
    weakest = result.per_intent()[0]
    assert weakest[0] in ("opening_hours", "closing_time") and weakest[1] < weakest[2]


def test_thin_intents_are_named_and_a_one_example_intent_is_still_routed(intents) -> None:
    thin = replace(intents, intents={**intents.intents, "thanks": IntentDef("thanks", ("thank you",))})
    result = cross_validate(thin, folds=3)
    assert "thanks" in result.thin()
    assert [o.gold for o in result.outcomes].count("thanks") == 1
    assert "fewer than 5 examples" in format_cross_validation(result) and "thanks" in format_cross_validation(result)


def test_threshold_and_margin_come_from_held_out_scores(intents) -> None:
    result = cross_validate(intents, folds=4)
    report = result.calibration
    assert report.n_in_scope + report.n_oos == len(result.outcomes)
    assert report.n_oos == len(intents.intents["out_of_scope"].examples)
    assert report.n_training_copies == 0
    assert 0.0 <= report.threshold <= 0.95
    assert "router:\n  threshold:" in format_cross_validation(result)


def test_bad_fold_counts_are_refused(intents) -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate(intents, folds=1)
    empty = replace(intents, intents={n: replace(i, examples=()) for n, i in intents.intents.items()})
    with pytest.raises(ValueError, match="at least 2 different examples"):
        cross_validate(empty)
    one = replace(intents, intents={"greet": IntentDef("greet", ("hi", "Hi ", "HI"))})
    with pytest.raises(ValueError, match="at least 2 different examples"):
        cross_validate(one)  # three spellings of one message: nothing to build a router from


def test_examples_that_read_the_same_are_held_out_together_and_groups_stay_even(intents, monkeypatch) -> None:
    twins = replace(intents, intents={**intents.intents, "greet": replace(
        intents.intents["greet"], examples=intents.intents["greet"].examples + ("Hello  Bot", "HI"))})
    built: list[list[str]] = []
    real_init = Router.__init__

    def recording(self: Router, config, **kwargs) -> None:  # noqa: ANN001
        built.append([e for i in config.intents.values() for e in i.examples])
        real_init(self, config, **kwargs)

    monkeypatch.setattr(Router, "__init__", recording)
    cross_validate(twins, folds=4)
    everything = [e for i in twins.intents.values() for e in i.examples]
    spelled = lambda texts: {" ".join(t.lower().split()) for t in texts}  # noqa: E731
    held_sizes = []
    for trained in built:
        held = list(everything)
        for example in trained:
            held.remove(example)
        held_sizes.append(len(held))
        assert not spelled(held) & spelled(trained)  # "HI" is never routed by a router trained on "hi"
    assert max(held_sizes) - min(held_sizes) <= 2  # even groups (a pair of twins counts once in the dealing)


def test_cli_prints_the_report_json_and_fails_below_min_right() -> None:
    runner = CliRunner()
    text = runner.invoke(cli, ["evaluate", str(MINIMAL), "--folds", "4"])
    assert text.exit_code == 0, text.output
    assert "Cross-validation:" in text.output and "routed by a router built without its group" in text.output
    data = json.loads(runner.invoke(cli, ["evaluate", str(MINIMAL), "--json"]).output)
    assert data["examples"] == sum(data["counts"].values()) == sum(v["routed"] for v in data["per_intent"].values())
    assert set(data["suggested"]) == {"threshold", "margin"}
    assert runner.invoke(cli, ["evaluate", str(MINIMAL), "--min-right", "0"]).exit_code == 0
    demo = Path(__file__).resolve().parents[1]  # its examples are not all routed right (docs/analysts.md)
    strict = runner.invoke(cli, ["evaluate", str(demo), "--min-right", "99.9"])
    assert strict.exit_code == 1 and "below --min-right 99.9 %" in strict.output
    assert runner.invoke(cli, ["evaluate", str(MINIMAL), "--folds", "1"]).exit_code == 2

