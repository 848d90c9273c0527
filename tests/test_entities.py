"""Entity extraction: lookup tables, typos, regex entities and the built-in types."""
from __future__ import annotations

from datetime import datetime

import pytest

from bot.config import EntityDef
from bot.entities import EntityExtractor, EntityMatch, UnknownEntityError
from bot.errors import ConfigError

NOW = datetime(2026, 11, 18, 10, 0)  # a Wednesday

ENTITIES = {
    "car_model": EntityDef("car_model", "lookup", {
        "model_x3": ("X3", "x 3"),
        "sedan_s": ("Sedan S", "s sedan"),
        "roadster": ("Roadster", "open top"),
        "golf": ("Golf",),
    }),
    "color": EntityDef("color", "lookup", {"red": ("crimson", "scarlet"), "blue": ("navy",)}),
    "strict": EntityDef("strict", "lookup", {"premium": ("premium package",)}, fuzzy=False),
    "order_id": EntityDef("order_id", "regex", regex=r"\b[A-Z]\d{3,5}\b"),
    "budget": EntityDef("budget", "money"),
}


@pytest.fixture(scope="module")
def extractor() -> EntityExtractor:
    return EntityExtractor(ENTITIES)


def found(extractor: EntityExtractor, text: str, only: list[str] | None = None) -> list[tuple]:
    return [(m.name, m.value) for m in extractor.extract(text, now=NOW, only=only)]


CASES = [
    # lookup tables: canonical key, synonyms, case and punctuation, multi-word
    ("how much is the X3?", [("car_model", "model_x3")]),
    ("price of the x-3", [("car_model", "model_x3")]),
    ("is the x 3 fast", [("car_model", "model_x3")]),
    ("the SEDAN S please", [("car_model", "sedan_s")]),
    ("an s sedan", [("car_model", "sedan_s")]),
    ("I like open-top cars", [("car_model", "roadster")]),
    ("a crimson one", [("color", "red")]),
    ("navy or red", [("color", "blue"), ("color", "red")]),
    # typos (fuzzy) and what must not become a typo match
    ("the roadstr", [("car_model", "roadster")]),
    ("the roasdter", [("car_model", "roadster")]),
    ("a sedna s", [("car_model", "sedan_s")]),
    ("crimsom paint", [("color", "red")]),
    ("gold paint", []),
    ("the model x5", []),
    ("there is a road", []),
    ("the premiun package", []),
    ("the premium package", [("strict", "premium")]),
    # regex entities
    ("where is order A1234", [("order_id", "A1234")]),
    ("order a12", []),
    # numbers
    ("I have 3 kids", [("number", 3)]),
    ("1,250 and 3.5", [("number", 1250), ("number", 3.5)]),
    ("twenty-five seats", [("number", 25)]),
    ("25k miles", [("number", 25000)]),
    ("a dozen", [("number", 12)]),
    ("2 million", [("number", 2000000)]),
    ("that one", []),
    ("the x3i", []),
    # money, with the money alias "budget"
    ("$25k", [("budget", 25000.0)]),
    ("25,000 dollars", [("budget", 25000.0)]),
    ("under 30 grand", [("budget", 30000.0)]),
    ("over $20,000", [("budget", 20000.0)]),
    ("around 25k euros", [("budget", 25000.0)]),
    ("€1.5m", [("budget", 1500000.0)]),
    ("25 bucks", [("budget", 25.0)]),
    # dates relative to Wednesday 2026-11-18
    ("today", [("date", "2026-11-18")]),
    ("tomorrow", [("date", "2026-11-19")]),
    ("the day after tomorrow", [("date", "2026-11-20")]),
    ("friday", [("date", "2026-11-20")]),
    ("next friday", [("date", "2026-11-20")]),
    ("on wednesday", [("date", "2026-11-25")]),
    ("in 3 days", [("date", "2026-11-21")]),
    ("in two weeks", [("date", "2026-12-02")]),
    ("24 december", [("date", "2026-12-24")]),
    ("December 24th, 2027", [("date", "2027-12-24")]),
    ("12/24", [("date", "2026-12-24")]),
    ("24/12/2026", [("date", "2026-12-24")]),
    ("2026-12-24", [("date", "2026-12-24")]),
    ("march 3rd", [("date", "2027-03-03")]),
    ("february 30", [("number", 30)]),
    # times
    ("at 3pm", [("time", "15:00")]),
    ("3:30 p.m.", [("time", "15:30")]),
    ("15:30", [("time", "15:30")]),
    ("noon", [("time", "12:00")]),
    ("12am", [("time", "00:00")]),
    ("7 o'clock", [("time", "07:00")]),
    ("tomorrow at 10am", [("date", "2026-11-19"), ("time", "10:00")]),
    # e-mail and phone
    ("mail Jane.Doe@Example.COM", [("email", "Jane.Doe@example.com")]),
    ("call +1 (555) 123-4567", [("phone", "+15551234567")]),
    ("0044 20 7946 0958", [("phone", "+442079460958")]),
    ("555-123-4567", [("phone", "5551234567")]),
    ("1234567", [("number", 1234567)]),
    # ordinary words that must not match anything
    ("I may come by", []),
    ("the sun is out", []),
    ("hello there", []),
    ("", []),
]


@pytest.mark.parametrize("text, expected", CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_extraction_table(extractor: EntityExtractor, text: str, expected: list[tuple]) -> None:
    assert found(extractor, text) == expected


def test_table_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_match_keeps_span_and_surface_text(extractor: EntityExtractor) -> None:
    text = "Is the Sedan S red?"
    matches = extractor.extract(text, now=NOW)
    assert matches[0] == EntityMatch("car_model", "sedan_s", "Sedan S", 7, 14)
    assert text[matches[1].start:matches[1].end] == "red"


def test_money_qualifier_and_currency(extractor: EntityExtractor) -> None:
    (under,) = extractor.extract("under 30 grand", now=NOW)
    assert (under.value, under.qualifier, under.unit, under.text) == (30000.0, "max", None, "under 30 grand")
    (over,) = extractor.extract("at least €20k", now=NOW)
    assert (over.qualifier, over.unit) == ("min", "EUR")


def test_builtins_are_available_without_declaration() -> None:
    bare = EntityExtractor({})
    assert [(m.name, m.value) for m in bare.extract("$5 on friday", now=NOW)] == [
        ("money", 5.0), ("date", "2026-11-20")]


def test_only_restricts_and_lets_a_shorter_match_through(extractor: EntityExtractor) -> None:
    assert found(extractor, "$25k", only=["number"]) == []
    assert found(extractor, "25k", only=["number"]) == [("number", 25000)]
    assert found(extractor, "the x3 on friday", only=["date"]) == [("date", "2026-11-20")]


def test_only_with_unknown_name_raises(extractor: EntityExtractor) -> None:
    with pytest.raises(UnknownEntityError, match="colour"):
        extractor.extract("red", only=["colour"])


def test_longest_match_wins_and_matches_never_overlap() -> None:
    ex = EntityExtractor({"trim": EntityDef("trim", "lookup", {"s": ("s",), "s_line": ("s line",)}),
                          "line": EntityDef("line", "lookup", {"line": ("line",)})})
    assert [(m.name, m.value) for m in ex.extract("the s line")] == [("trim", "s_line")]


def test_surface_forms_round_robin_over_values_without_duplicates(extractor: EntityExtractor) -> None:
    assert extractor.surface_forms("car_model") == [
        "X3", "Sedan S", "Roadster", "Golf", "model x3", "s sedan", "open top"]
    assert extractor.surface_forms("date") == ["tomorrow", "friday", "24 december"]


def test_unknown_entity_kind_is_rejected() -> None:
    with pytest.raises(UnknownEntityError, match="unknown kind 'colour'"):
        EntityExtractor({"x": EntityDef("x", "colour")})


def test_as_dict_is_json_ready(extractor: EntityExtractor) -> None:
    (m,) = extractor.extract("under $30k", now=NOW)
    assert m.as_dict() == {"name": "budget", "value": 30000.0, "text": "under $30k", "start": 0, "end": 10,
                           "qualifier": "max", "unit": "USD"}


def test_regex_entity_that_can_backtrack_badly_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"regex of entity 'code': nested quantifier"):
        EntityExtractor({"code": EntityDef("code", "regex", regex=r"(\w+-?)+$")})
