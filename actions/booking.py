"""Test-drive booking: validators for day, time, name and contact, and the booking itself.

These keep the bot's default time limit (plain ``@action``): a real dealership's
``create_booking`` calls its calendar or CRM, and a hung call must not hang the visitor.
"""
from __future__ import annotations

import hashlib
import logging
import re
from datetime import date, time, timedelta

from bot.actions import Context, Reply, action
from bot.builtin_entities import extract

from .facts import clock_label, opening_hours, test_drive_window, today
from .inventory import car

log = logging.getLogger(__name__)

BOOKING_HORIZON_DAYS = 90
# Words in "change the time" -> the slot to empty so the flow asks for it again.
CHANGEABLE = {"car": "car_model", "model": "car_model", "day": "date", "date": "date", "time": "time",
              "name": "name", "contact": "contact", "phone": "contact", "e-mail": "contact", "email": "contact",
              "number": "contact"}
WHAT_TO_CHANGE = "Sure. What would you like to change: the car, the day, the time, your name or your contact details?"
_NAME_PREFIX = re.compile(r"^\s*(my name is|my name's|name is|i am|i'm|im|it's|its|this is|call me)\s+",
                          re.IGNORECASE)
_NAME = re.compile(r"^[^\W\d_]+(?:[ '\-.][^\W\d_]+)*\.?$")
_YES = re.compile(r"\b(yes|yeah|yep|yup|sure|ok|okay|book it|book|confirm|confirmed|correct|perfect|"
                  r"sounds good|go ahead|do it|please)\b", re.IGNORECASE)
_CHANGE = re.compile(r"\b(change|edit|modify|wrong|different|fix|update)\b", re.IGNORECASE)
_NO = re.compile(r"^\s*(no|nope|nah|don't|do not|not now)\b", re.IGNORECASE)


def day_label(day: date) -> str:
    """'Thursday 26 November'."""
    return f"{day:%A} {day.day} {day:%B}"


def _clock(value: str) -> time:
    hours, minutes = str(value).split(":")[:2]
    return time(int(hours), int(minutes))


def _day_problem(day: date, ctx: Context) -> str | None:
    first = today(ctx)
    if first is not None and day < first:
        return f"{day_label(day)} has already passed."
    if first is not None and day > first + timedelta(days=BOOKING_HORIZON_DAYS):
        return f"Sorry, we take bookings up to {BOOKING_HORIZON_DAYS} days ahead."
    if opening_hours(day) is None:
        return f"Sorry, we're closed on {day:%A}s; we do test drives Monday to Saturday."
    return None


def _time_problem(start: time, day: date | None) -> str | None:
    window = test_drive_window(day) if day else (time(9, 0), time(18, 0))
    if window is None:  # a closed day: the day check says why
        return None
    earliest, latest = window
    if not earliest <= start <= latest:
        when = f"on {day:%A}s" if day else "on weekdays"
        return f"Test drives {when} start between {clock_label(earliest)} and {clock_label(latest)}."
    return None


@action
def check_drive_date(ctx: Context) -> str | None:
    """Accept a test-drive day (ISO date in ``slots.date``) when the showroom is open on it.

    Refuses Sundays (closed) and, when the engine gives its clock (``ctx.now``), days in the
    past or more than BOOKING_HORIZON_DAYS ahead, saying why.
    """
    problem = _day_problem(date.fromisoformat(str(ctx.slots["date"])), ctx)
    return f"{problem} Which other day suits you?" if problem else None


@action
def check_drive_time(ctx: Context) -> str | None:
    """Accept a start time (``slots.time``, HH:MM) inside the test-drive window of the chosen day."""
    chosen = ctx.slots.get("date")
    problem = _time_problem(_clock(ctx.slots["time"]), date.fromisoformat(str(chosen)) if chosen else None)
    return f"{problem} What time in that window suits you?" if problem else None


@action
def check_name(ctx: Context) -> Reply | str:
    """Accept a person's name ('my name is jane doe' -> 'Jane Doe'); refuse digits and symbols."""
    raw = _NAME_PREFIX.sub("", str(ctx.slots["name"])).strip().rstrip(".!")
    if not 2 <= len(raw) <= 60 or not _NAME.match(raw):
        return "Sorry, I need a name with letters only, e.g. Jane Doe. What name should I put on the booking?"
    name = " ".join(part[:1].upper() + part[1:] for part in raw.split())
    return Reply(slots={"name": name})


@action
def check_contact(ctx: Context) -> Reply | str:
    """Accept an e-mail address or a phone number, normalised ('+15550142', 'jane@example.com')."""
    text = str(ctx.slots["contact"])
    emails = extract("email", text)
    if emails:
        return Reply(slots={"contact": emails[0][0]})
    phones = extract("phone", text)
    if phones and "@" not in text:
        return Reply(slots={"contact": phones[0][0]})
    return ("That doesn't look like an e-mail address or a phone number. Could you type it again, "
            "e.g. jane@example.com or +1 555 123 4567?")


@action
def read_callback(ctx: Context) -> Reply:
    """The answer to "Would you like an adviser to get back to you?" as ``yes`` or ``no``
    ("yes please", "no thanks"); anything else empties the slot, so the flow asks again."""
    text = str(ctx.slots.get("callback") or "")
    if _NO.search(text):
        return Reply(slots={"callback": "no"})
    if _YES.search(text):
        return Reply(slots={"callback": "yes"})
    return Reply(slots={"callback": None})


@action
def prepare_booking(ctx: Context) -> Reply:
    """Check the collected answers again and set the summary labels.

    Sets ``car_label``, ``date_label`` and ``contact_kind``. Each slot's validator saw its own
    value only (a time checked for Friday, then the day corrected to Saturday), so day and
    time are checked together here; a bad one is emptied (with the confirmation), with the
    reason, and the flow goes back to step ``collect`` to ask for it again.
    """
    day = date.fromisoformat(str(ctx.slots["date"]))
    problem = _day_problem(day, ctx)
    if problem:
        return Reply(problem, slots={"date": None, "confirm": None}, goto="collect")
    problem = _time_problem(_clock(ctx.slots["time"]), day)
    if problem:
        return Reply(problem, slots={"time": None, "confirm": None}, goto="collect")
    chosen = car(ctx.slots.get("car_model"))
    contact = str(ctx.slots.get("contact") or "")
    return Reply(slots={
        "car_label": chosen.name if chosen else str(ctx.slots.get("car_model")),
        "date_label": day_label(day),
        "contact_kind": "email" if "@" in contact else "phone",
    })


@action
def read_confirmation(ctx: Context) -> Reply:
    """Turn the answer to 'Shall I book it?' into ``yes``, ``no``, ``change_<slot>`` or ``recheck``.

    ``recheck`` means the answer carries a new car, day or time ("make it Friday"): the engine
    applies that correction, and the flow shows the summary again. An answer that is none of
    these leaves the slot empty, so the flow says the slot's reprompt.
    """
    text = str(ctx.slots["confirm"])
    for entity, slot in (("car_model", "car_model"), ("date", "date"), ("time", "time")):
        value = ctx.entities.get(entity)
        if value is not None and value != ctx.slots.get(slot):
            return Reply(slots={"confirm": "recheck"})
    if ctx.entities.get("email") or ctx.entities.get("phone"):
        return Reply(slots={"confirm": "change_contact"})
    named = [slot for word, slot in CHANGEABLE.items() if re.search(rf"\b{word}\b", text, re.IGNORECASE)]
    if _CHANGE.search(text) or (named and not _YES.search(text)):
        return Reply(slots={"confirm": f"change_{named[0]}" if named else None},
                     text=None if named else WHAT_TO_CHANGE)
    if _NO.search(text):
        return Reply(slots={"confirm": "no"})
    if _YES.search(text):
        return Reply(slots={"confirm": "yes"})
    return Reply(slots={"confirm": None})


@action
def clear_booking_field(ctx: Context) -> Reply:
    """Empty the slot named in ``confirm`` (``change_time`` -> ``time``) and the confirmation,
    then go back to the first question; ``recheck`` only empties the confirmation."""
    answer = str(ctx.slots["confirm"])
    cleared: dict[str, None] = {"confirm": None}
    if answer.startswith("change_"):
        field = answer.removeprefix("change_")
        cleared[field] = None
        if field == "date":
            cleared["time"] = None  # the time window depends on the day
    return Reply(slots=cleared, goto="collect")


@action
def create_booking(ctx: Context) -> Reply:
    """Book the test drive; ``result.reference`` is a stable booking reference like 'TD-7K2M9Q'.

    The demo keeps no calendar: the reference is derived from the conversation and the booking
    details, so the same booking always gets the same reference.
    """
    key = "|".join(str(ctx.slots.get(k)) for k in ("car_model", "date", "time", "name", "contact"))
    digest = hashlib.sha256(f"{ctx.conversation_id}|{key}".encode()).hexdigest()
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    reference = "TD-" + "".join(alphabet[int(digest[i:i + 2], 16) % len(alphabet)] for i in range(0, 12, 2))
    ctx.log.info("test drive booked: %s", reference)
    return Reply(result={"reference": reference})
