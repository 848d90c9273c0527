"""`hybridbot report`: summaries of stored transcripts, candidate intents, text and HTML output."""
from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.config import load_config
from bot.report import build_report, cluster_messages, format_html, format_text, parse_since, run_report
from bot.store import MemoryStore, open_store
from bot.testing import FakeLLM
from botdata import MINIMAL

DAY1 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc).timestamp()
DAY = 24 * 3600
FINANCE = ["do you offer financing", "can I finance a car", "financing options?", "what financing do you have",
           "is there a finance plan for the X3"]
WEATHER = ["what's the weather today", "weather tomorrow", "will it rain today", "is the weather nice"]
ODD = ["tell me a joke", "asdfgh", "who won the game"]


def turn(text: str, kind: str = "classifier", intent: str | None = "greet", score: float = 0.9,
         at: float = DAY1, reply: str = "ok", candidates: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    route = {"kind": kind, "intent": intent, "score": score, "flow": None,
             "trace": {"candidates": candidates or [[intent or "out_of_scope", score]]}}
    return {"turn_id": f"t{abs(hash((text, at))) % 10**9}", "text_in": text, "replies": [{"text": reply}],
            "route": route, "kind": kind, "intent": intent, "flow": None, "latency_ms": 3.0, "llm": None,
            "error": None, "incomplete": False, "created_at": at, **extra}


def fill(store: MemoryStore, conversations: dict[str, list[dict[str, Any]]]) -> None:
    for cid, turns in conversations.items():
        with store.open(cid) as conv:
            for t in turns:
                conv.add_turn(t)


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    fallbacks = [turn(text, "fallback", None, 0.2, at=DAY1 + DAY + n, reply="Let me think.",
                      llm={"model": "m", "prompt_tokens": 50, "completion_tokens": 9, "error": None})
                 for n, text in enumerate(FINANCE + WEATHER + ODD)]
    fill(store, {
        "conv-day-one-aaaaaaaaaa": [turn("hi"), turn("opening hours", intent="opening_hours", at=DAY1 + 1),
                                    turn("when is the shop closed", intent="opening_hours", score=0.41, at=DAY1 + 2,
                                         candidates=[["opening_hours", 0.41], ["ask_price", 0.33]])],
        "conv-day-two-bbbbbbbbbb": fallbacks,
        "conv-day-three-cccccccc": [turn("hello", at=DAY1 + 2 * DAY),
                                    turn("price of the X5", "rule", "ask_price", 1.0, at=DAY1 + 2 * DAY + 1,
                                         reply="The X5 costs $61,900."),
                                    turn("that's too much for <b>me</b>", "fallback", None, 0.1,
                                         at=DAY1 + 2 * DAY + 2, reply="Sorry, I can't help with that."),
                                    turn("bye", intent="greet", score=0.35, at=DAY1 + 2 * DAY + 3)],
    })
    store.add_feedback("conv-day-three-cccccccc", store.transcript("conv-day-three-cccccccc")[2]["turn_id"], "down",
                       "it did not <i>understand</i>")
    store.add_feedback("conv-day-one-aaaaaaaaaa", store.transcript("conv-day-one-aaaaaaaaaa")[0]["turn_id"], "up")
    return store


def test_totals_route_kinds_top_intents_and_fallback_rate_per_day(store: MemoryStore) -> None:
    report = build_report(store)
    assert (report.turns, report.conversations, report.fallbacks) == (19, 3, 13)
    assert report.fallback_rate == pytest.approx(13 / 19)
    assert dict(report.kinds) == {"classifier": 5, "fallback": 13, "rule": 1}
    assert report.top_intents == (("greet", 3), ("opening_hours", 2), ("ask_price", 1))
    assert [(d.day, d.turns, d.fallbacks) for d in report.days] == [
        ("2026-11-02", 3, 0), ("2026-11-03", 12, 12), ("2026-11-04", 4, 1)]
    assert report.days[1].rate == 1.0
    assert report.votes == {"down": 1, "up": 1}
    assert report.llm_turns == 12


def test_since_keeps_only_the_turns_from_then_on(store: MemoryStore) -> None:
    report = build_report(store, since=datetime(2026, 11, 4, tzinfo=timezone.utc))
    assert (report.turns, report.conversations, [d.day for d in report.days]) == (4, 1, ["2026-11-04"])


def test_lowest_confidence_routes_come_weakest_first_and_repeats_are_merged(store: MemoryStore) -> None:
    fill(store, {"conv-repeats-dddddddddddd": [turn("bye", score=0.5, at=DAY1 + 3 * DAY),
                                                turn("bye", score=0.36, at=DAY1 + 3 * DAY + 1)]})
    weak = build_report(store, low_confidence=2).low_confidence
    assert [(w.turn.text, w.turn.score, w.count) for w in weak] == [("bye", 0.35, 3),
                                                                    ("when is the shop closed", 0.41, 1)]
    assert weak[1].candidates == (("opening_hours", 0.41), ("ask_price", 0.33))
    assert all(w.turn.kind in ("classifier", "ambiguous") for w in weak)  # rules and fallbacks are not "weak"


def test_a_thumbs_down_turn_comes_with_the_turns_before_it(store: MemoryStore) -> None:
    (down,) = build_report(store, context_turns=2).thumbs_down
    assert down.turn.text == "that's too much for <b>me</b>"
    assert down.comment == "it did not <i>understand</i>"
    assert [(c.text, c.reply) for c in down.context] == [("hello", "ok"), ("price of the X5", "The X5 costs $61,900.")]


def test_handoffs_are_counted_and_listed_latest_with_their_slots(store: MemoryStore) -> None:
    handed = MemoryStore()
    fill(handed, {f"conv-handoff-{n:02d}-aaaaaaaa": [
        turn("hi", at=DAY1 + n * 10),
        turn("call me", "flow", None, at=DAY1 + n * 10 + 1,
             handoff={"flow": "contact_human", "slots": {"contact": f"+1555000{n:04d}", "callback": "yes",
                                                         "unset": None}})] for n in range(4)})
    report = build_report(handed, max_handoffs=3)
    assert report.handoff_count == 4
    assert [h.turn.conversation_id for h in report.handoffs] == [f"conv-handoff-{n:02d}-aaaaaaaa" for n in (1, 2, 3)]
    assert report.handoffs[-1].slots["contact"] == "+15550000003" and report.handoffs[-1].flow == "contact_human"
    text = format_text(report)
    assert "Handed to a person (4)" in text
    assert "conv-handoff-03-aaaaaaaa" in text and "contact=+15550000003, callback=yes" in text and "unset" not in text
    page = format_html(report)
    assert "Handed to a person (4)" in page and "contact=+15550000003" in page
    assert "Handed to a person (0)\n  (none)" in format_text(build_report(store))  # the fixture has none


def test_fallback_messages_group_into_named_candidate_intents(store: MemoryStore) -> None:
    report = build_report(store, known_intents=("greet", "ask_price"))
    groups = {c.name: set(c.examples) for c in report.clusters}
    assert any(set(FINANCE[:4]) <= examples for examples in groups.values())
    weather = next(c for c in report.clusters if "weather" in c.terms)
    assert set(weather.examples) == set(WEATHER) and weather.size == 4
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in groups)
    assert report.unclustered == report.fallbacks - sum(c.size for c in report.clusters) > 0


def test_clustering_is_deterministic_and_counts_repeats() -> None:
    counts = {text: 1 for text in FINANCE + WEATHER + ODD}
    counts["Weather tomorrow"] = 2  # same message, other case: one example, three messages
    first = cluster_messages(counts)
    again = cluster_messages(dict(reversed(list(counts.items()))))
    assert first == again
    weather = next(c for c in first[0] if "weather" in c.terms)
    assert weather.size == 6 and len(weather.examples) == 4


def test_suggested_names_never_repeat_an_existing_intent() -> None:
    counts = {"weather today": 1, "the weather today": 1, "weather today please": 1}
    (plain,), _ = cluster_messages(counts)
    (renamed,), _ = cluster_messages(counts, known_intents={plain.name})
    assert renamed.name == f"{plain.name}_2"


def test_the_suggested_yaml_pastes_into_a_bot_that_then_routes_those_messages(tmp_path: Path,
                                                                             router_cache: Path) -> None:
    counts = {text: 1 for text in WEATHER + ["is it going to rain", "weather forecast for {tomorrow}"]}
    cluster = max(cluster_messages(counts)[0], key=lambda c: c.size)
    root = shutil.copytree(MINIMAL, tmp_path / "bot", ignore=shutil.ignore_patterns("var"))
    with open(root / "intents.yaml", "a", encoding="utf-8") as intents:  # intents: is the last section
        intents.write(cluster.intent_yaml)
    (root / "flows" / f"{cluster.name}.yaml").write_text(cluster.flow_yaml, encoding="utf-8")
    config = load_config(root)
    assert cluster.name in config.intents.intents
    bot = Bot.from_path(root, store=MemoryStore(), llm=FakeLLM(), cache_dir=router_cache)
    try:
        assert bot.handle(None, "what's the weather today").intent == cluster.name
    finally:
        bot.close()


def test_text_report_lists_every_section(store: MemoryStore) -> None:
    text = format_text(build_report(store))
    for heading in ("Fallback rate: 68.4% (13 of 19 turns)", "Top intents", "Fallback rate per day (UTC)",
                    "2026-11-03  100.0%", "Lowest-confidence routes", "Thumbs down (1)",
                    "Candidate new intents", "intents.yaml (under 'intents:'):", "examples:"):
        assert heading in text
    assert "comment: 'it did not <i>understand</i>'" in text


def test_an_empty_store_gives_a_short_report() -> None:
    report = build_report(MemoryStore())
    assert (report.turns, report.clusters, report.fallback_rate) == (0, (), 0.0)
    assert "No turns recorded" in format_text(report)
    assert "<svg" not in format_html(report) and "No turns." in format_html(report)


def test_html_report_is_self_contained_with_charts_and_escaped_text(store: MemoryStore) -> None:
    page = format_html(build_report(store))
    assert page.startswith("<!doctype html>") and page.count("<svg") == 2
    assert "<script" not in page and "<b>me</b>" not in page and "<i>understand" not in page
    assert "that&#x27;s too much for &lt;b&gt;me&lt;/b&gt;" in page
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", page)  # nothing is fetched from anywhere
    assert '<rect x="' in page and "2026-11-03: 100.0% (12 of 12 turns)" in page


@pytest.mark.parametrize("text, expected", [
    ("7d", datetime(2026, 11, 18, 12, tzinfo=timezone.utc)), ("36h", datetime(2026, 11, 24, tzinfo=timezone.utc)),
    ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc)),
    ("2026-11-01T08:30:00+01:00", datetime(2026, 11, 1, 7, 30, tzinfo=timezone.utc))])
def test_since_accepts_relative_and_iso_times(text: str, expected: datetime) -> None:
    assert parse_since(text, now=datetime(2026, 11, 25, 12, tzinfo=timezone.utc)) == expected


def test_since_rejects_anything_else_with_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="7d, 24h, 30m"):
        parse_since("last week")


def test_run_report_reads_the_bots_store_and_writes_the_html_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    store = open_store(url, root=MINIMAL)
    fill(store, {"conv-sqlite-eeeeeeeeeeeee": [turn(t, "fallback", None, 0.1) for t in WEATHER]})
    store.close()
    text = run_report(MINIMAL, store_url=url, html=tmp_path / "report.html", since="2026-11-01", env={})
    assert "4 turns in 1 conversation," in text and "Fallback rate: 100.0%" in text
    assert "<svg" in (tmp_path / "report.html").read_text(encoding="utf-8")
