"""Trade-in: validators for the car's year and mileage, and the policy answer."""
from __future__ import annotations

import logging

from bot.actions import Context, Reply, action

from .facts import FACTS, today

log = logging.getLogger(__name__)

MAX_MILEAGE_KM = 1_000_000


def _max_age() -> int:
    return int(FACTS["trade_in"]["max_age_years"])


@action
def check_year(ctx: Context) -> Reply | str:
    """Accept a model year between 1950 and this year ('18' means 2018)."""
    year = int(float(ctx.slots["year"]))
    this_year = today(ctx).year
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
    oldest = today(ctx).year - _max_age()
    policy["oldest_year"] = oldest
    policy["eligible"] = None if year in (None, "") else int(year) >= oldest
    return Reply(result=policy)
