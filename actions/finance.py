"""Money matters: finance estimates (down payment, term, annuity) and trade-ins of the visitor's car.

Every handler here only reads data loaded at import or computes, so it is marked
``@action(timeout=None)``: it runs in the request's own thread, with no time limit and no
thread switch. A handler that calls a network service keeps a limit (see ``booking.py``).
"""
from __future__ import annotations

import logging
import re
from datetime import date
from typing import Any

from bot.actions import Context, Reply, action
from bot.builtin_entities import extract

from .facts import FACTS, financing_terms, today
from .inventory import Car, car, money

log = logging.getLogger(__name__)

_NOTHING = re.compile(r"\b(nothing|none|zero|no (deposit|down payment|money down)|nil)\b", re.IGNORECASE)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*(%|percent|per cent)", re.IGNORECASE)
_YEARS = re.compile(r"\byears?\b|\byrs?\b", re.IGNORECASE)
MAX_MILEAGE_KM = 1_000_000
_LEADING = re.compile(r"^\s*(it's|it is|i have|i've got|i drive)?\s*(a|an|my|the)?\s+", re.IGNORECASE)
_YEAR = re.compile(r"\b(19[5-9]\d|20\d\d)\b")


def apr_for(chosen: Car) -> float:
    """The APR in percent for a car: electric models get the reduced rate."""
    terms = financing_terms()
    if chosen.fuel == "electric":
        return float(terms["electric_apr_percent"])
    return float(terms["apr_percent"])


def monthly_payment(principal: float, apr_percent: float, months: int) -> float:
    """Monthly instalment of an annuity loan: P * r / (1 - (1 + r) ** -n), r = APR / 12.

    Args:
        principal: the amount borrowed.
        apr_percent: yearly rate in percent, e.g. 5.9.
        months: number of monthly payments.

    Returns:
        The payment rounded to cents (principal / months when the rate is 0).
    """
    if principal <= 0:
        return 0.0
    rate = apr_percent / 100 / 12
    if rate == 0:
        return round(principal / months, 2)
    return round(principal * rate / (1 - (1 + rate) ** -months), 2)


def _amount(text: str, price: int) -> float | None:
    if _NOTHING.search(text):
        return 0.0
    percent = _PERCENT.search(text)
    if percent:
        return round(price * float(percent.group(1)) / 100, 2)
    for kind in ("money", "number"):
        found = extract(kind, text)
        if found:
            return float(found[0][0])  # type: ignore[arg-type]
    return None


@action(timeout=None)
def check_down_payment(ctx: Context) -> Reply | str:
    """Read the down payment ('5000', '$5k', '10%', 'nothing') for the car in ``car_model``.

    It must be at least the minimum percentage in knowledge/financing.yaml and below the price.
    """
    chosen = car(ctx.slots.get("car_model"))
    if chosen is None:
        raise LookupError(f"no car chosen: {ctx.slots.get('car_model')!r}")
    amount = _amount(str(ctx.slots["down_payment"]), chosen.price)
    minimum = chosen.price * float(financing_terms()["minimum_down_payment_percent"]) / 100
    if amount is None:
        return f"How much would you like to put down? For example {money(minimum)} or 20%."
    if amount >= chosen.price:
        return (f"That covers the whole {money(chosen.price)}, so no finance is needed! "
                f"If you'd still like an estimate, tell me a smaller down payment.")
    if amount < minimum:
        pct = financing_terms()["minimum_down_payment_percent"]
        return (f"The minimum down payment is {pct}% of the price, {money(minimum)} for the {chosen.name}. "
                f"How much would you like to put down?")
    return Reply(slots={"down_payment": amount})


@action(timeout=None)
def check_term(ctx: Context) -> Reply | str:
    """Read a loan term in months ('48', '60 months', '5 years') that we offer."""
    text = str(ctx.slots["term_months"])
    terms = [int(t) for t in financing_terms()["terms_months"]]
    numbers = [n for n, *_ in extract("number", text)]
    offered = ", ".join(str(t) for t in terms[:-1]) + f" or {terms[-1]} months"
    if not numbers:
        return f"Over how many months? We offer {offered}."
    months = int(float(numbers[0]) * (12 if _YEARS.search(text) else 1))  # type: ignore[arg-type]
    if months not in terms:
        return f"We offer terms of {offered}. Which would you like?"
    return Reply(slots={"term_months": months})


@action(timeout=None)
def estimate_payment(ctx: Context) -> Reply:
    """Monthly payment for ``car_model`` with ``down_payment`` over ``term_months``.

    ``result`` holds name, price, down, financed, apr, months, monthly, total (all payments plus
    the down payment) and interest.
    """
    chosen = car(ctx.slots.get("car_model"))
    if chosen is None:
        raise LookupError(f"no car chosen: {ctx.slots.get('car_model')!r}")
    down = float(ctx.slots.get("down_payment") or 0)
    months = int(ctx.slots.get("term_months") or financing_terms()["default_term_months"])
    apr = apr_for(chosen)
    financed = chosen.price - down
    monthly = monthly_payment(financed, apr, months)
    result: dict[str, Any] = {
        "name": chosen.name, "price": chosen.price, "down": down, "financed": financed, "apr": apr,
        "months": months, "monthly": monthly, "total": round(monthly * months + down, 2),
        "interest": round(monthly * months - financed, 2),
        "disclaimer": financing_terms()["disclaimer"],
    }
    return Reply(result=result, slots={"car_label": chosen.name})


# -- trade-in ----------------------------------------------------------------------------------
def _this_year(ctx: Context) -> int:
    return (today(ctx) or date.today()).year


def _max_age() -> int:
    return int(FACTS["trade_in"]["max_age_years"])


@action(timeout=None)
def read_current_car(ctx: Context) -> Reply:
    """Tidy the ``current_car`` answer and take a model year out of it.

    'a 2016 Ford Focus' -> current_car 'Ford Focus', year 2016, so the flow does not ask for
    the year again. A year that is not plausible is left for the year question.
    """
    text = str(ctx.slots["current_car"])
    found = _YEAR.search(text)
    slots: dict[str, object] = {}
    if found and ctx.slots.get("year") is None and int(found.group()) <= _this_year(ctx):
        slots["year"] = int(found.group())
        text = (text[:found.start()] + text[found.end():])
    text = " ".join(_LEADING.sub(" ", " " + text).split()).strip(" ,.")
    slots["current_car"] = text or str(ctx.slots["current_car"])
    return Reply(slots=slots)


@action(timeout=None)
def check_year(ctx: Context) -> Reply | str:
    """Accept a model year between 1950 and this year ('18' means 2018)."""
    year = int(float(ctx.slots["year"]))
    this_year = _this_year(ctx)
    if 0 <= year < 100:
        year += 2000 if 2000 + year <= this_year else 1900
    if not 1950 <= year <= this_year:
        return f"Hmm, {year} doesn't look like a model year. Which year is the car from, e.g. 2018?"
    return Reply(slots={"year": year})


@action(timeout=None)
def check_mileage(ctx: Context) -> Reply | str:
    """Accept a mileage in kilometres from 0 to MAX_MILEAGE_KM."""
    km = int(float(ctx.slots["mileage"]))
    if not 0 <= km <= MAX_MILEAGE_KM:
        return "That mileage looks off. Roughly how many kilometres has it done, e.g. 85000?"
    return Reply(slots={"mileage": km})


@action(timeout=None)
def trade_in_info(ctx: Context) -> Reply:
    """The trade-in policy as ``result``, plus ``result.eligible`` for the car in slot ``year``.

    ``eligible`` is None when no year is known and False for cars older than the
    ``max_age_years`` of knowledge/trade_in.yaml; ``oldest_year`` is the oldest year taken.
    """
    policy = dict(FACTS["trade_in"])
    year = ctx.slots.get("year")
    oldest = _this_year(ctx) - _max_age()
    policy["oldest_year"] = oldest
    policy["eligible"] = None if year in (None, "") else int(year) >= oldest
    mileage = ctx.slots.get("mileage")
    policy["mileage_label"] = f"{int(mileage):,} km" if mileage not in (None, "") else None
    return Reply(result=policy)
