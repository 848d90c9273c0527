"""Dealership facts from knowledge/*.yaml for the scripted answers (hours, address, warranty).

Every handler here only reads data loaded at import or computes, so it is marked
``@action(timeout=None)``: it runs in the request's own thread, with no time limit and no
thread switch. A handler that calls a network service keeps a limit (see ``booking.py``).
"""
from __future__ import annotations

import logging
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from bot.actions import Context, Reply, action

log = logging.getLogger(__name__)

KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "knowledge"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def load_facts(folder: Path = KNOWLEDGE_DIR) -> Mapping[str, Any]:
    """All knowledge files merged into one mapping (top-level keys are unique across files)."""
    facts: dict[str, Any] = {}
    for path in sorted(folder.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        data.pop("version", None)
        facts.update(data)
    return MappingProxyType(facts)


FACTS: Mapping[str, Any] = load_facts()


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def clock_label(moment: time) -> str:
    """'9:00', '17:30': hours without a leading zero, as in the knowledge files."""
    return f"{moment.hour}:{moment.minute:02d}"


def opening_hours(day: date) -> tuple[time, time] | None:
    """(open, close) on ``day``'s weekday, or None when the showroom is closed."""
    spec = str(FACTS["opening_hours"][WEEKDAYS[day.weekday()]])
    if spec == "closed":
        return None
    start, end = spec.split("-")
    return _clock(start), _clock(end)


def test_drive_window(day: date) -> tuple[time, time] | None:
    """Earliest and latest start of a test drive on ``day``, or None when there are none."""
    if opening_hours(day) is None:
        return None
    drives = FACTS["test_drives"]
    latest = drives["latest_saturday"] if WEEKDAYS[day.weekday()] == "saturday" else drives["latest_weekday"]
    return _clock(drives["earliest"]), _clock(latest)


def financing_terms() -> Mapping[str, Any]:
    """The ``financing`` section of knowledge/financing.yaml."""
    return FACTS["financing"]


@action(timeout=None)
def dealership_info(ctx: Context) -> Reply:
    """Contact details, address and opening hours as ``result`` for the scripted answers.

    ``result.hours`` is the one-line summary. When the message names a day ('are you open on
    Saturday?'), ``result.day`` is its weekday name and ``result.day_hours`` its hours, e.g.
    '9:00-17:00', or None when closed; otherwise both are None.
    """
    result = dict(FACTS["dealership"])
    result["hours"] = FACTS["opening_hours"]["summary"]
    result["day"] = result["day_hours"] = None
    asked = ctx.entities.get("date")
    if asked:
        day = date.fromisoformat(str(asked))
        span = opening_hours(day)
        result["day"] = f"{day:%A}"
        result["day_hours"] = f"{clock_label(span[0])}-{clock_label(span[1])}" if span else None
    return Reply(result=result)


@action(timeout=None)
def warranty_info(ctx: Context) -> Reply:
    """The warranty facts as ``result`` (new_cars, battery, roadside_assistance, ...)."""
    return Reply(result=dict(FACTS["warranty"]))


def today(ctx: Context) -> date | None:
    """The conversation's 'today' from the engine's clock (``ctx.now``), or None without one.

    The date entity resolves "tomorrow" against the engine's clock, which tests fix; checks
    such as "that day has passed" must use the same clock, so without it they are skipped.
    """
    now = getattr(ctx, "now", None)
    if isinstance(now, datetime):
        return now.date()
    if isinstance(now, date):
        return now
    return None


@action(timeout=None)
def current_offers(ctx: Context) -> Reply:
    """The offers of knowledge/offers.yaml: ``result.valid_until``, ``result.lines`` (one
    '• offer' line each), ``result.conditions``."""
    offers = FACTS["offers"]
    return Reply(result={"valid_until": offers["valid_until"], "conditions": offers["conditions"],
                         "lines": "\n".join(f"• {o}" for o in offers["list"])})
