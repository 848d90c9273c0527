"""Test-drive booking: validators for day, time, name and contact, and the booking itself."""
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
# "Change something" -> which slot to empty so the flow asks for it again.
CHANGEABLE = {"model": "car_model", "day": "date", "date": "date", "time": "time", "name": "name",
              "contact details": "contact", "contact": "contact"}
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


@action
def check_drive_date(ctx: Context) -> Reply | str | None:
    """Accept a test-drive day (ISO date in ``slots.date``) when the showroom is open on it.

    Refuses days in the past, Sundays and public holidays (closed), and days more than
    BOOKING_HORIZON_DAYS ahead, saying why.
    """
    day = date.fromisoformat(str(ctx.slots["date"]))
    first = today(ctx)
    if day < first:
        return f"{day_label(day)} has already passed. Which day from today on suits you?"
    if day > first + timedelta(days=BOOKING_HORIZON_DAYS):
        return f"We take bookings up to {BOOKING_HORIZON_DAYS} days ahead. Could you pick an earlier day?"
    if opening_hours(day) is None:
        return f"Sorry, we're closed on {day:%A}s. We do test drives Monday to Saturday; which day suits you?"
    return None


@action
def check_drive_time(ctx: Context) -> Reply | str | None:
    """Accept a start time (``slots.time``, HH:MM) inside the test-drive window of the chosen day."""
    start = _clock(ctx.slots["time"])
    chosen = ctx.slots.get("date")
    day = date.fromisoformat(str(chosen)) if chosen else None
    window = test_drive_window(day) if day else (_clock("9:00"), _clock("18:00"))
    if window is None:  # the day was not validated yet; the day check will say why
        return None
    earliest, latest = window
    if not earliest <= start <= latest:
        when = f"on {day:%A}s" if day else "on weekdays"
        return (f"Test drives {when} start between {clock_label(earliest)} and {clock_label(latest)}. "
                f"What time in that window suits you?")
    return None


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
def prepare_booking(ctx: Context) -> Reply:
    """Readable labels for the summary: ``car_label``, ``date_label``, ``contact_kind``."""
    chosen = car(ctx.slots.get("car_model"))
    day = date.fromisoformat(str(ctx.slots["date"]))
    contact = str(ctx.slots.get("contact") or "")
    return Reply(slots={
        "car_label": chosen.name if chosen else str(ctx.slots.get("car_model")),
        "date_label": day_label(day),
        "contact_kind": "email" if "@" in contact else "phone",
    })


@action
def read_confirmation(ctx: Context) -> Reply | str:
    """Turn the answer to 'Shall I book it?' into ``yes``, ``change`` or ``no``."""
    text = str(ctx.slots["confirm"])
    if _CHANGE.search(text):
        answer = "change"
    elif _NO.search(text):
        answer = "no"
    elif _YES.search(text):
        answer = "yes"
    else:
        return "Please answer 'Yes, book it', 'Change something' or 'Cancel'."
    return Reply(slots={"confirm": answer})


@action
def clear_booking_field(ctx: Context) -> Reply:
    """Empty the slot named by ``change_field`` (and the answers after it) and go back to asking."""
    field = CHANGEABLE[str(ctx.slots["change_field"]).lower()]
    cleared = {field: None, "confirm": None, "change_field": None}
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
