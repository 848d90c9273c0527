"""The demo bot's action handlers (actions/*.py) called as plain functions on a Context."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bot.actions import ActionRegistry, Context, Reply, discover
from bot.config import Button

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 25, 10, 0)  # a Wednesday


@dataclass(frozen=True)
class ClockedContext(Context):
    """A Context carrying the engine's clock, as handlers read it with getattr(ctx, 'now')."""

    now: datetime | None = None


@pytest.fixture(scope="module")
def actions() -> ActionRegistry:
    registry = ActionRegistry()
    assert discover(ROOT, registry) == []
    return registry


def module(actions: ActionRegistry, handler: str) -> ModuleType:
    """The module a handler lives in, for its helper functions and constants."""
    return sys.modules[actions.get(handler).__module__]


def ctx(text: str = "", slots: dict[str, Any] | None = None, entities: dict[str, Any] | None = None,
        now: datetime | None = None) -> Context:
    fields: dict[str, Any] = dict(conversation_id="conv-1", text=text, intent=None, entities=entities or {},
                                  slots=slots or {}, flow=None, step=None)
    return ClockedContext(**fields, now=now) if now is not None else Context(**fields)


def call(actions: ActionRegistry, name: str, context: Context) -> Reply:
    result = actions.get(name)(context)
    if result is None:
        return Reply()
    return Reply(text=result) if isinstance(result, str) else result


# -- inventory ---------------------------------------------------------------------------------
def test_inventory_has_the_models_the_widget_page_shows(actions: ActionRegistry) -> None:
    cars = module(actions, "list_models").CARS
    names = {c.name for c in cars.values()}
    assert len(cars) >= 12
    assert {"Northwind X3", "Northwind Sedan S", "Northwind E-Volt"} <= names
    for car in cars.values():
        assert car.body in ("suv", "sedan", "hatchback", "pickup", "van", "coupe", "wagon")
        assert car.fuel in ("petrol", "diesel", "hybrid", "electric")
        assert (car.range_km is not None) == (car.fuel == "electric")
        assert car.price > 0 and car.seats >= 2 and car.stock >= 0 and car.colours


def test_car_aliases_match_the_car_model_entity_in_intents_yaml(actions: ActionRegistry) -> None:
    cars = module(actions, "list_models").CARS
    entity = yaml.safe_load((ROOT / "intents.yaml").read_text())["entities"]["car_model"]["values"]
    assert {car_id: list(car.aliases) for car_id, car in cars.items()} == entity


# -- catalogue ------------------------------------------------------------------------------------
def test_list_models_filters_by_fuel_and_gives_a_button_per_car(actions: ActionRegistry) -> None:
    reply = call(actions, "list_models", ctx("electric ones", entities={"fuel_type": "electric"}))
    assert reply.text.splitlines()[0] == "We have 3 electric models:"
    assert [b.title for b in reply.buttons] == ["Northwind E-Volt", "Northwind Arc", "Northwind Aurora"]
    assert reply.buttons[0] == Button("Northwind E-Volt", "Tell me about the Northwind E-Volt")
    assert reply.result == {"count": 3}


def test_list_models_reads_a_plain_number_as_a_maximum_price(actions: ActionRegistry) -> None:
    reply = call(actions, "list_models", ctx("SUVs under 40k", entities={"body_type": "suv", "number": 40000}))
    assert reply.text == ("We have one SUV under $40,000:\n"
                          "• Northwind Scout: $31,900, petrol SUV, 5 seats, 6.6 l/100 km")


def test_list_models_reads_over_as_a_minimum_price(actions: ActionRegistry) -> None:
    reply = call(actions, "list_models", ctx("anything over $50,000?", entities={"money": 50000.0}))
    assert reply.text.startswith("We have 2 models over $50,000:")
    assert [b.title for b in reply.buttons] == ["Northwind X5", "Northwind Stratos"]


def test_list_models_reads_a_seat_count(actions: ActionRegistry) -> None:
    reply = call(actions, "list_models", ctx("a car with 7 seats", entities={"number": 7}))
    assert reply.text.startswith("We have 3 models with 7+ seats:")
    assert [b.title for b in reply.buttons] == ["Northwind Voyager", "Northwind X3", "Northwind X5"]


def test_list_models_without_a_match_offers_the_closest(actions: ActionRegistry) -> None:
    reply = call(actions, "list_models", ctx("vans under 20k", entities={"body_type": "van", "number": 20000}))
    assert reply.text.startswith("Sorry, we have no vans under $20,000. The closest are:")
    assert reply.result == {"count": 0}
    assert [b.title for b in reply.buttons] == ["Northwind Cargo Pro", "Northwind Voyager"]


def test_list_models_without_filters_lists_everything_cheapest_first(actions: ActionRegistry) -> None:
    reply = call(actions, "list_models", ctx("which models do you have?"))
    lines = reply.text.splitlines()
    assert lines[0] == "Here is our full range of 14 models, cheapest first:"
    assert lines[1].startswith("• Northwind City: $19,900") and lines[-1].startswith("• Northwind Stratos")


def test_describe_model_gives_the_car_as_result(actions: ActionRegistry) -> None:
    reply = call(actions, "describe_model", ctx(slots={"car_model": "e_volt"}))
    assert reply.result["name"] == "Northwind E-Volt"
    assert reply.result["kind"] == "an electric hatchback"
    assert reply.result["efficiency"] == "420 km range"
    assert reply.slots == {"car_label": "Northwind E-Volt"}


def test_lookup_price_of_a_sold_out_car(actions: ActionRegistry) -> None:
    reply = call(actions, "lookup_price", ctx(slots={"car_model": "aurora"}))
    assert (reply.result["price"], reply.result["in_stock"]) == (48900, False)


def test_handlers_refuse_a_missing_car_instead_of_guessing(actions: ActionRegistry) -> None:
    with pytest.raises(LookupError):
        actions.get("describe_model")(ctx(slots={"car_model": None}))


def test_check_stock_suggests_in_stock_cars_of_the_same_body(actions: ActionRegistry) -> None:
    reply = call(actions, "check_stock", ctx(slots={"car_model": "cargo_pro"}))
    assert reply.result["in_stock"] is False
    assert reply.result["alternatives"] == ["Northwind Voyager"]
    assert reply.result["delivery_weeks"] == "6-10"


@pytest.mark.parametrize(("text", "asked", "has", "match"), [
    ("does it come in lime green?", "lime", True, "Electric Lime"),
    ("is there a red one", "red", False, None),
    ("which colours?", None, False, None),
])
def test_model_colours_reads_the_colour_asked_for(actions: ActionRegistry, text: str, asked: str | None,
                                                  has: bool, match: str | None) -> None:
    result = call(actions, "model_colours", ctx(text, slots={"car_model": "e_volt"})).result
    assert (result["asked"], result["has_asked"], result["match"]) == (asked, has, match)


def test_compare_models_names_the_cheaper_and_the_more_economical_car(actions: ActionRegistry) -> None:
    reply = call(actions, "compare_models", ctx(slots={"car_model": "x3", "other_model": "x5"}))
    assert reply.text.splitlines()[1] == "The Northwind X3 is $13,000 cheaper ($41,900 vs $54,900)."
    assert reply.text.endswith("The Northwind X5 uses less fuel (6.1 vs 7.8 l/100 km).")
    assert "more room" not in reply.text  # both have 7 seats
    assert reply.result == {"cheaper": "Northwind X3", "price_gap": 13000}
    assert reply.buttons == ("Test drive the Northwind X3", "Test drive the Northwind X5")


def test_compare_models_of_electric_cars_compares_range_and_room(actions: ActionRegistry) -> None:
    text = call(actions, "compare_models", ctx(slots={"car_model": "e_volt", "other_model": "arc"})).text
    assert text.endswith("The Northwind Arc goes further on a charge (560 vs 420 km).")
    seats = call(actions, "compare_models", ctx(slots={"car_model": "voyager", "other_model": "cargo_pro"})).text
    assert "The Northwind Voyager has more room with 8 seats." in seats


def test_check_other_model_refuses_the_same_car_twice(actions: ActionRegistry) -> None:
    assert call(actions, "check_other_model", ctx(slots={"car_model": "x3", "other_model": "x3"})).text == \
        "That's the Northwind X3 again! Which other model should I compare it with?"
    assert call(actions, "check_other_model", ctx(slots={"car_model": "x3", "other_model": "x5"})) == Reply()


# -- test-drive booking ------------------------------------------------------------------------
def test_check_drive_date_refuses_sundays(actions: ActionRegistry) -> None:
    assert call(actions, "check_drive_date", ctx(slots={"date": "2026-11-29"})).text == (
        "Sorry, we're closed on Sundays; we do test drives Monday to Saturday. Which other day suits you?")
    assert call(actions, "check_drive_date", ctx(slots={"date": "2026-11-28"})) == Reply()


def test_check_drive_date_uses_the_engine_clock_for_past_and_far_days(actions: ActionRegistry) -> None:
    past = call(actions, "check_drive_date", ctx(slots={"date": "2026-11-24"}, now=NOW))
    assert past.text == "Tuesday 24 November has already passed. Which other day suits you?"
    far = (NOW + timedelta(days=120)).date()
    while far.weekday() == 6:
        far += timedelta(days=1)
    late = call(actions, "check_drive_date", ctx(slots={"date": far.isoformat()}, now=NOW))
    assert late.text == "Sorry, we take bookings up to 90 days ahead. Which other day suits you?"
    assert call(actions, "check_drive_date", ctx(slots={"date": "2026-11-26"}, now=NOW)) == Reply()


@pytest.mark.parametrize(("day", "time", "ok"), [
    ("2026-11-28", "16:00", True), ("2026-11-28", "16:30", False),  # Saturday: 9:00-16:00
    ("2026-11-26", "18:00", True), ("2026-11-26", "08:30", False),  # Thursday: 9:00-18:00
])
def test_check_drive_time_keeps_to_the_day_window(actions: ActionRegistry, day: str, time: str, ok: bool) -> None:
    reply = call(actions, "check_drive_time", ctx(slots={"date": day, "time": time}))
    assert (reply == Reply()) is ok
    if not ok:
        assert reply.text.endswith("What time in that window suits you?")


@pytest.mark.parametrize(("answer", "name"), [
    ("my name is jane doe", "Jane Doe"), ("I'm Ana María", "Ana María"), ("O'Neil", "O'Neil"),
])
def test_check_name_cleans_a_name(actions: ActionRegistry, answer: str, name: str) -> None:
    assert call(actions, "check_name", ctx(slots={"name": answer})).slots == {"name": name}


@pytest.mark.parametrize("answer", ["R2D2", "x", "jane@example.com", "!!!"])
def test_check_name_refuses_what_is_not_a_name(actions: ActionRegistry, answer: str) -> None:
    reply = call(actions, "check_name", ctx(slots={"name": answer}))
    assert reply.slots == {} and reply.text.startswith("Sorry, I need a name with letters only")


@pytest.mark.parametrize(("answer", "value"), [
    ("Jane@Example.COM", "Jane@example.com"), ("it's +1 555 123 4567", "+15551234567"),
    ("(555) 010-9999", "5550109999"),
])
def test_check_contact_accepts_an_email_or_a_phone(actions: ActionRegistry, answer: str, value: str) -> None:
    assert call(actions, "check_contact", ctx(slots={"contact": answer})).slots == {"contact": value}


@pytest.mark.parametrize("answer", ["jane@example", "12", "call me maybe"])
def test_check_contact_refuses_anything_else(actions: ActionRegistry, answer: str) -> None:
    reply = call(actions, "check_contact", ctx(slots={"contact": answer}))
    assert reply.text.startswith("That doesn't look like an e-mail address or a phone number.")


BOOKING = {"car_model": "x3", "date": "2026-11-26", "time": "15:00", "name": "Jane", "contact": "jane@example.com"}


def test_prepare_booking_sets_the_summary_labels(actions: ActionRegistry) -> None:
    reply = call(actions, "prepare_booking", ctx(slots=BOOKING))
    assert reply.slots == {"car_label": "Northwind X3", "date_label": "Thursday 26 November", "contact_kind": "email"}
    assert reply.goto is None


def test_prepare_booking_sends_a_corrected_bad_time_back_to_the_questions(actions: ActionRegistry) -> None:
    reply = call(actions, "prepare_booking", ctx(slots={**BOOKING, "date": "2026-11-28", "time": "17:00"}))
    assert reply.text == "Test drives on Saturdays start between 9:00 and 16:00."
    assert reply.slots == {"time": None, "confirm": None} and reply.goto == "collect"


@pytest.mark.parametrize(("answer", "entities", "value"), [
    ("Yes, book it", {}, "yes"), ("sure", {}, "yes"), ("no", {}, "no"), ("nope, not now", {}, "no"),
    ("change the time", {}, "change_time"), ("no, wrong day", {}, "change_date"), ("my e-mail", {}, "change_contact"),
    ("make it friday", {"date": "2026-11-27"}, "recheck"), ("the X5 instead", {"car_model": "x5"}, "recheck"),
    ("use 555 0100 instead", {"phone": "5550100"}, "change_contact"), ("banana", {}, None),
])
def test_read_confirmation(actions: ActionRegistry, answer: str, entities: dict, value: str | None) -> None:
    reply = call(actions, "read_confirmation", ctx(answer, slots={**BOOKING, "confirm": answer}, entities=entities))
    assert reply.slots == {"confirm": value}


def test_read_confirmation_asks_what_to_change(actions: ActionRegistry) -> None:
    reply = call(actions, "read_confirmation", ctx("change", slots={**BOOKING, "confirm": "change"}))
    assert reply.slots == {"confirm": None} and reply.text.startswith("Sure. What would you like to change")


def test_clear_booking_field_empties_the_slot_and_goes_back(actions: ActionRegistry) -> None:
    assert call(actions, "clear_booking_field", ctx(slots={**BOOKING, "confirm": "change_date"})) == \
        Reply(slots={"confirm": None, "date": None, "time": None}, goto="collect")
    assert call(actions, "clear_booking_field", ctx(slots={**BOOKING, "confirm": "recheck"})) == \
        Reply(slots={"confirm": None}, goto="collect")


def test_create_booking_reference_is_stable_per_booking(actions: ActionRegistry) -> None:
    first = call(actions, "create_booking", ctx(slots=BOOKING)).result["reference"]
    again = call(actions, "create_booking", ctx(slots=BOOKING)).result["reference"]
    other = call(actions, "create_booking", ctx(slots={**BOOKING, "time": "16:00"})).result["reference"]
    assert first == again != other
    assert first.startswith("TD-") and len(first) == 9 and not set(first[3:]) & set("01IO")


# -- finance -----------------------------------------------------------------------------------
def test_monthly_payment_is_the_annuity_formula(actions: ActionRegistry) -> None:
    payment = module(actions, "estimate_payment").monthly_payment
    assert payment(10000, 12.0, 12) == 888.49
    assert payment(12000, 0.0, 24) == 500.0
    assert payment(0, 5.9, 48) == 0.0


@pytest.mark.parametrize(("answer", "value"), [("5000", 5000.0), ("$6,500", 6500.0), ("5k", 5000.0),
                                               ("20%", 8380.0), ("10 percent", 4190.0)])
def test_check_down_payment_reads_amounts_and_percentages(actions: ActionRegistry, answer: str, value: float) -> None:
    reply = call(actions, "check_down_payment", ctx(slots={"car_model": "x3", "down_payment": answer}))
    assert reply.slots == {"down_payment": value}


@pytest.mark.parametrize(("answer", "start"), [
    ("nothing", "The minimum down payment is 10% of the price, $4,190"),
    ("1000", "The minimum down payment is 10% of the price, $4,190"),
    ("50000", "That covers the whole $41,900"),
    ("not sure", "How much would you like to put down?"),
])
def test_check_down_payment_refuses_with_a_reason(actions: ActionRegistry, answer: str, start: str) -> None:
    reply = call(actions, "check_down_payment", ctx(slots={"car_model": "x3", "down_payment": answer}))
    assert reply.text.startswith(start)


@pytest.mark.parametrize(("answer", "months"), [("48", 48), ("60 months", 60), ("5 years", 60), ("two years", 24)])
def test_check_term_reads_months_and_years(actions: ActionRegistry, answer: str, months: int) -> None:
    assert call(actions, "check_term", ctx(slots={"term_months": answer})).slots == {"term_months": months}


def test_check_term_refuses_terms_not_offered(actions: ActionRegistry) -> None:
    assert call(actions, "check_term", ctx(slots={"term_months": "100"})).text == \
        "We offer terms of 24, 36, 48, 60 or 72 months. Which would you like?"


def test_estimate_payment_uses_the_electric_rate(actions: ActionRegistry) -> None:
    result = call(actions, "estimate_payment", ctx(slots={"car_model": "aurora", "down_payment": 4890.0,
                                                          "term_months": 48})).result
    assert (result["apr"], result["financed"], result["monthly"]) == (3.9, 44010.0, 991.74)
    assert result["total"] == round(991.74 * 48 + 4890, 2)
    assert result["interest"] == round(991.74 * 48 - 44010, 2)


# -- trade-in, facts -----------------------------------------------------------------------------
def test_read_current_car_takes_the_year_out(actions: ActionRegistry) -> None:
    reply = call(actions, "read_current_car", ctx(slots={"current_car": "a 2016 Ford Focus"}))
    assert reply.slots == {"year": 2016, "current_car": "Ford Focus"}
    assert call(actions, "read_current_car", ctx(slots={"current_car": "my Honda"})).slots == {"current_car": "Honda"}


@pytest.mark.parametrize(("answer", "value"), [(2018, 2018), ("18", 2018), (99, 1999)])
def test_check_year_accepts_short_years(actions: ActionRegistry, answer: Any, value: int) -> None:
    assert call(actions, "check_year", ctx(slots={"year": answer}, now=NOW)).slots == {"year": value}


def test_check_year_and_mileage_refuse_impossible_values(actions: ActionRegistry) -> None:
    assert call(actions, "check_year", ctx(slots={"year": 2099}, now=NOW)).text.startswith("Hmm, 2099")
    assert call(actions, "check_mileage", ctx(slots={"mileage": 5_000_000})).text.startswith("That mileage looks off")


def test_trade_in_info_says_whether_the_car_is_young_enough(actions: ActionRegistry) -> None:
    young = call(actions, "trade_in_info", ctx(slots={"year": 2015, "mileage": 90000}, now=NOW)).result
    old = call(actions, "trade_in_info", ctx(slots={"year": 2010}, now=NOW)).result
    assert (young["eligible"], young["mileage_label"], young["oldest_year"]) == (True, "90,000 km", 2011)
    assert old["eligible"] is False


@pytest.mark.parametrize(("day", "name", "hours"), [("2026-11-28", "Saturday", "9:00-17:00"),
                                                    ("2026-11-29", "Sunday", None),
                                                    ("2026-11-30", "Monday", "9:00-19:00")])
def test_dealership_info_gives_the_hours_of_a_named_day(actions: ActionRegistry, day: str, name: str,
                                                        hours: str | None) -> None:
    result = call(actions, "dealership_info", ctx(entities={"date": day})).result
    assert (result["day"], result["day_hours"]) == (name, hours)
    assert result["phone"] == "+1 555 0142" and result["hours"].startswith("Monday to Friday 9:00-19:00")


def test_facts_come_from_the_knowledge_files(actions: ActionRegistry) -> None:
    facts = module(actions, "dealership_info")
    assert facts.FACTS["financing"]["apr_percent"] == 5.9
    assert facts.opening_hours(date(2026, 11, 29)) is None
    assert call(actions, "warranty_info", ctx()).result["new_cars"].startswith("5 years")


def test_current_offers_lists_the_knowledge_file(actions: ActionRegistry) -> None:
    result = call(actions, "current_offers", ctx()).result
    assert result["valid_until"] == "31 December 2026"
    assert result["lines"].splitlines()[0] == "• Electric models: 3.9% APR finance instead of 5.9%"
    assert len(result["lines"].splitlines()) == 4
