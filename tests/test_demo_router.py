"""The demo bot's router on held-out paraphrases (tests/data/demo_paraphrases.csv)."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from bot.config import OUT_OF_SCOPE, load_config
from bot.router import Router

ROOT = Path(__file__).resolve().parent.parent
PARAPHRASES = ROOT / "tests" / "data" / "demo_paraphrases.csv"
REQUIRED_ACCURACY = 0.95


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(load_config(ROOT).intents)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with PARAPHRASES.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def routed_intent(router: Router, text: str) -> str:
    """The intent a message reaches: ``out_of_scope`` when it goes to the fallback."""
    result = router.route(text)
    return OUT_OF_SCOPE if result.kind == "fallback" or result.intent is None else result.intent


def test_paraphrases_are_held_out_and_cover_every_intent(router: Router, rows: list[dict[str, str]]) -> None:
    examples = {e.strip().lower() for intent in router.config.intents.values() for e in intent.examples}
    assert len(rows) >= 150
    assert [r["text"] for r in rows if r["text"].strip().lower() in examples] == []
    counts = Counter(r["intent"] for r in rows)
    assert set(counts) == set(router.config.intents)
    assert min(counts.values()) >= 5


def test_at_least_95_percent_of_paraphrases_reach_their_intent(router: Router, rows: list[dict[str, str]]) -> None:
    wrong = [(r["text"], r["intent"], routed_intent(router, r["text"])) for r in rows
             if routed_intent(router, r["text"]) != r["intent"]]
    accuracy = 1 - len(wrong) / len(rows)
    assert accuracy >= REQUIRED_ACCURACY, f"accuracy {accuracy:.3f}; misrouted (text, want, got): {wrong}"


def test_no_out_of_scope_paraphrase_starts_a_flow(router: Router, rows: list[dict[str, str]]) -> None:
    started = [(r["text"], routed_intent(router, r["text"])) for r in rows
               if r["intent"] == OUT_OF_SCOPE and routed_intent(router, r["text"]) != OUT_OF_SCOPE]
    assert len(started) <= 1, started


@pytest.mark.parametrize(("text", "intent", "kind"), [
    ("how much is the X3?", "ask_price", "rule"),
    ("X3 vs Sedan S", "compare_models", "rule"),
    ("book a test drive of the E-Volt tomorrow at 3pm", "book_test_drive", "rule"),
    ("what would I pay per month for the X3?", "financing", "rule"),
    ("show me all models", "list_models", "rule"),
])
def test_sure_fire_phrases_are_decided_by_patterns(router: Router, text: str, intent: str, kind: str) -> None:
    result = router.route(text)
    assert (result.intent, result.kind) == (intent, kind)


def test_entities_of_a_filtered_question(router: Router) -> None:
    found = {e.name: e.value for e in router.route("electric SUVs under $50,000").entities}
    assert found == {"fuel_type": "electric", "body_type": "suv", "money": 50000.0}
