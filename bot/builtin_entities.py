"""Built-in entity types: number, money, date, time, email and phone, with canonical values."""
from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta
from typing import Callable, Iterator

log = logging.getLogger(__name__)

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_WORD_VALUE = {w: i for i, w in enumerate(_UNITS)} | _TENS | {"a": 1, "an": 1, "a dozen": 12, "dozen": 12}
_WORD_NUM = (r"(?:(?:" + "|".join(_TENS) + r")(?:[- ](?:" + "|".join(_UNITS[1:10]) + r"))?|"
             + "|".join(sorted(_UNITS, key=len, reverse=True)) + r"|a\s+dozen)")
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_SCALE = {"k": 1e3, "thousand": 1e3, "grand": 1e3, "m": 1e6, "mn": 1e6, "mil": 1e6,
          "million": 1e6, "bn": 1e9, "billion": 1e9}

NUMBER = (r"(?<![\w.,$€£-])(-?" + _DIGITS + r")(?:(k)\b|\s+(thousand|million|billion)\b)?(?![\w.]\w|\w)"
          r"|\b(" + _WORD_NUM + r")\b")
_CUR = {"$": "USD", "us$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD", "bucks": "USD",
        "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR",
        "£": "GBP", "gbp": "GBP", "pound": "GBP", "pounds": "GBP"}
_QUALIFIERS = {"under": "max", "below": "max", "less than": "max", "max": "max", "maximum": "max",
               "up to": "max", "at most": "max", "no more than": "max", "not more than": "max",
               "over": "min", "above": "min", "more than": "min", "at least": "min", "min": "min",
               "minimum": "min", "around": "approx", "about": "approx", "approximately": "approx",
               "approx": "approx", "roughly": "approx", "~": "approx"}
_QUAL_RX = "|".join(re.escape(q).replace(r"\ ", r"\s+") for q in sorted(_QUALIFIERS, key=len, reverse=True))
_MONEY_SCALE = r"(?:(k|m|mn|bn)\b|\s*(thousand|million|billion|grand|mil)\b)"
MONEY = (r"(?:(?<!\w)(" + _QUAL_RX + r")\s*)?(?:"
         r"(us\$|\$|€|£|(?<!\w)usd|(?<!\w)eur|(?<!\w)gbp)\s?(" + _DIGITS + r")" + _MONEY_SCALE + r"?"
         r"|(?<![\w.,])(" + _DIGITS + r")" + _MONEY_SCALE + r"?\s*(dollars?|bucks|usd|euros?|eur|pounds?|gbp|\$|€|£)(?!\w)"
         r"|(?<![\w.,])(" + _DIGITS + r")\s*(grand)\b)")

_MONTHS = ("january february march april may june july august september october november december").split()
_MONTH_ABBR = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
               "sept": 9, "oct": 10, "nov": 11, "dec": 12}
_MONTH_NUM = {m: i for i, m in enumerate(_MONTHS, 1)} | _MONTH_ABBR
_MONTH_RX = "(" + "|".join(sorted(_MONTH_NUM, key=len, reverse=True)) + r")\.?"
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_ORD = r"(?:st|nd|rd|th)?"
DATE_PATTERNS = {
    "after_tomorrow": r"\b(?:the\s+)?day\s+after\s+tomorrow\b",
    "relative": r"\b(today|tonight|tomorrow|tmrw|yesterday)\b",
    "weekday": r"\b(?:(this|next|on)\s+)?(" + "|".join(_WEEKDAYS) + r")\b",
    "in_n": r"\bin\s+(\d{1,3}|a|an|" + "|".join(_UNITS[1:11]) + r")\s+(days?|weeks?)\b",
    "iso": r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b",
    "dotted": r"\b(\d{1,2})\.(\d{1,2})\.(\d{4})\b",
    "slashed": r"(?<![\d/])(\d{1,2})/(\d{1,2})(?:/(\d{4}|\d{2}))?(?![\d/])",
    "day_month": r"\b(\d{1,2})" + _ORD + r"\s+(?:of\s+)?" + _MONTH_RX + r"(?:,?\s+(\d{4}))?\b",
    "month_day": r"\b" + _MONTH_RX + r"\s+(?:the\s+)?(\d{1,2})" + _ORD + r"\b(?:,?\s+(\d{4})\b)?",
}
TIME_PATTERNS = {
    "named": r"\b(noon|midday|midnight)\b",
    "ampm": r"\b(\d{1,2})(?:[:.](\d{2}))?\s*([ap])\.?m\b\.?",
    "clock24": r"\b([01]?\d|2[0-3]):([0-5]\d)\b",
    "oclock": r"\b(\d{1,2})\s*o'?clock\b",
}
EMAIL = r"(?<![\w.+-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b"
PHONE = r"(?<![\w+])(?:\+|00)?\s?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,5}\)?){1,5}(?!\w)"

PATTERNS = {
    "number": NUMBER,
    "money": MONEY,
    "date": "|".join(DATE_PATTERNS.values()),
    "time": "|".join(TIME_PATTERNS.values()),
    "email": EMAIL,
    "phone": PHONE,
}
SAMPLES = {
    "number": ("2", "10", "three"),
    "money": ("$25,000", "30k dollars", "20 grand"),
    "date": ("tomorrow", "friday", "24 december"),
    "time": ("3pm", "10:30", "noon"),
    "email": ("jane@example.com",),
    "phone": ("+1 555 123 4567",),
}

Found = tuple[object, int, int, str | None, str | None]  # value, start, end, qualifier, unit


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _as_number(value: float) -> int | float:
    return int(value) if value == int(value) else value


def _numbers(text: str, now: datetime) -> Iterator[Found]:
    for m in _compiled("number").finditer(text):
        if m.group(1) is not None:
            value = _num(m.group(1)) * _SCALE.get((m.group(2) or m.group(3) or "").lower(), 1)
            if "." in m.group(1) and not (m.group(2) or m.group(3)):
                yield value, m.start(), m.end(), None, None
            else:
                yield _as_number(value), m.start(), m.end(), None, None
        else:
            words = re.sub(r"\s+", " ", m.group(4).lower())
            if words in ("a", "an") or (words == "one" and _pronoun_one(text, m.start(), m.end())):
                continue
            value = _WORD_VALUE.get(words)
            if value is None:  # "twenty-five", "thirty two"
                value = sum(_WORD_VALUE.get(part, 0) for part in re.split(r"[- ]", words))
            yield value, m.start(), m.end(), None, None


def _pronoun_one(text: str, start: int, end: int) -> bool:
    """'one' closing a phrase after another word ("the red one", "that one") is a pronoun."""
    before = text[:start].rstrip()
    after = text[end:].lstrip()
    return bool(before) and before[-1].isalpha() and (not after or not after[0].isalnum())


def _money(text: str, now: datetime) -> Iterator[Found]:
    for m in _compiled("money").finditer(text):
        qual = _QUALIFIERS[re.sub(r"\s+", " ", m.group(1).lower())] if m.group(1) else None
        if m.group(3) is not None:
            amount, scale, cur = m.group(3), m.group(4) or m.group(5), m.group(2)
        elif m.group(6) is not None:
            amount, scale, cur = m.group(6), m.group(7) or m.group(8), m.group(9)
        else:
            amount, scale, cur = m.group(10), m.group(11), None
        value = _num(amount) * _SCALE.get((scale or "").lower(), 1)
        yield float(value), m.start(), m.end(), qual, _CUR.get(cur.lower()) if cur else None


def _next_on_or_after(month: int, day: int, today: date) -> date | None:
    for year in (today.year, today.year + 1):
        try:
            d = date(year, month, day)
        except ValueError:
            continue
        if d >= today:
            return d
    return None


def _make(year: int | None, month: int, day: int, today: date) -> date | None:
    if year is None:
        return _next_on_or_after(month, day, today)
    if year < 100:
        year += 2000
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _date_of(kind: str, m: re.Match[str], today: date) -> date | None:
    g = [x.lower() if x else x for x in m.groups()]
    if kind == "after_tomorrow":
        return today + timedelta(days=2)
    if kind == "relative":
        return today + timedelta(days={"yesterday": -1, "tomorrow": 1, "tmrw": 1}.get(g[0], 0))
    if kind == "weekday":  # the next such day after today; "this"/"next"/"on" do not shift it
        ahead = (_WEEKDAYS.index(g[1]) - today.weekday()) % 7 or 7
        return today + timedelta(days=ahead)
    if kind == "in_n":
        n = int(g[0]) if g[0].isdigit() else _WORD_VALUE[g[0]]
        return today + timedelta(days=n * (7 if g[1].startswith("week") else 1))
    if kind == "iso":
        return _make(int(g[0]), int(g[1]), int(g[2]), today)
    if kind == "dotted":  # day.month.year, as written in most of Europe
        return _make(int(g[2]), int(g[1]), int(g[0]), today)
    if kind == "slashed":  # month/day as in the US, unless the first number cannot be a month
        a, b = int(g[0]), int(g[1])
        month, day = (b, a) if a > 12 else (a, b)
        return _make(int(g[2]) if g[2] else None, month, day, today)
    if kind == "day_month":
        return _make(int(g[2]) if g[2] else None, _MONTH_NUM[g[1]], int(g[0]), today)
    return _make(int(g[2]) if g[2] else None, _MONTH_NUM[g[0]], int(g[1]), today)  # month_day


def _dates(text: str, now: datetime) -> Iterator[Found]:
    today = now.date()
    for kind in DATE_PATTERNS:
        for m in _compiled("date:" + kind).finditer(text):
            d = _date_of(kind, m, today)
            if d is not None:
                yield d.isoformat(), m.start(), m.end(), None, None


def _times(text: str, now: datetime) -> Iterator[Found]:
    for kind in TIME_PATTERNS:
        for m in _compiled("time:" + kind).finditer(text):
            g = m.groups()
            if kind == "named":
                hour, minute = (0 if g[0].lower() == "midnight" else 12), 0
            elif kind == "ampm":
                hour, minute = int(g[0]), int(g[1] or 0)
                if not 1 <= hour <= 12 or minute > 59:
                    continue
                hour = hour % 12 + (12 if g[2].lower() == "p" else 0)
            elif kind == "clock24":
                hour, minute = int(g[0]), int(g[1])
            else:
                hour, minute = int(g[0]), 0
                if not 1 <= hour <= 12:
                    continue
            yield f"{hour:02d}:{minute:02d}", m.start(), m.end(), None, None


def _emails(text: str, now: datetime) -> Iterator[Found]:
    for m in _compiled("email").finditer(text):
        local, _, domain = m.group().rpartition("@")
        yield f"{local}@{domain.lower()}", m.start(), m.end(), None, None


def _phones(text: str, now: datetime) -> Iterator[Found]:
    for m in _compiled("phone").finditer(text):
        raw = m.group().strip()
        digits = re.sub(r"\D", "", raw)
        plus = raw.startswith("+") or raw.startswith("00")
        if raw.startswith("00"):
            digits = digits[2:]
        separated = bool(re.search(r"[ .()-]", raw))
        if not 7 <= len(digits) <= 15 or (not plus and not separated and len(digits) < 10):
            continue
        if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}\.\d{1,2}\.\d{4}", raw):
            continue  # a date, not a phone number
        start = m.start() + (len(m.group()) - len(m.group().lstrip()))
        yield ("+" if plus else "") + digits, start, m.end(), None, None


_EXTRACTORS: dict[str, Callable[[str, datetime], Iterator[Found]]] = {
    "number": _numbers, "money": _money, "date": _dates, "time": _times,
    "email": _emails, "phone": _phones,
}
_COMPILED = {
    **{kind: re.compile(src, re.IGNORECASE) for kind, src in PATTERNS.items()},
    **{"date:" + k: re.compile(src, re.IGNORECASE) for k, src in DATE_PATTERNS.items()},
    **{"time:" + k: re.compile(src, re.IGNORECASE) for k, src in TIME_PATTERNS.items()},
}


def _compiled(key: str) -> re.Pattern[str]:
    return _COMPILED[key]


def extract(kind: str, text: str, now: datetime | None = None) -> list[Found]:
    """All matches of built-in ``kind`` in ``text`` as (value, start, end, qualifier, unit).

    Matches of one kind may overlap (e.g. two date spellings); the caller resolves overlaps.
    """
    return list(_EXTRACTORS[kind](text, now or datetime.now()))
