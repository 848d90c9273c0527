"""Trade-in: validators for the car's year and mileage, and the policy answer."""
from __future__ import annotations

import logging
import re
from datetime import date

from bot.actions import Context, Reply, action

from .facts import FACTS, today

log = logging.getLogger(__name__)

MAX_MILEAGE_KM = 1_000_000
_LEADING = re.compile(r"^\s*(it's|it is|i have|i've got|i drive)?\s*(a|an|my|the)?\s+", re.IGNORECASE)
_YEAR = re.compile(r"\b(19[5-9]\d|20\d\d)\b")


def _this_year(ctx: Context) -> int:
    return (today(ctx) or date.today()).year


def _max_age() -> int:
    return int(FACTS["trade_in"]["max_age_years"])


@action
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


@action
def check_year(ctx: Context) -> Reply | str:
    """Accept a model year between 1950 and this year ('18' means 2018)."""
    year = int(float(ctx.slots["year"]))
    this_year = _this_year(ctx)
    if 0 <= year < 100:
        year += 2000 if 2000 + year <= this_year else 1900
    if not 1950 <= year <= this_year:
        return f"Hmm, {year} doesn't look like a model year. Which year is the car from, e.g. 2018?"
    return Reply(slots={"year": year})


@action
def check_mileage(ctx: Context) -> Reply | str:
    """Accept a mileage in kilometres from 0 to MAX_MILEAGE_KM."""
    km = int(float(ctx.slots["mileage"]))
    if not 0 <= km <= MAX_MILEAGE_KM:
        return "That mileage looks off. Roughly how many kilometres has it done, e.g. 85000?"
    return Reply(slots={"mileage": km})


@action
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
