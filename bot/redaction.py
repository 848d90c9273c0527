"""PII redaction: emails, phone numbers, payment cards (Luhn) and custom patterns, for logs, LLM and transcripts."""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, MutableMapping

log = logging.getLogger(__name__)

PATTERN_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
BUILT_IN = ("email", "card", "phone")

EMAIL = re.compile(r"(?<![\w.%+-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?![\w-])", re.IGNORECASE)
# 13-19 digits in one run or in the printed groups (4-4-4-4..7, Amex 4-6-5); kept unless the Luhn sum holds.
CARD = re.compile(r"(?<![\w#+.,/-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5})"
                  r"(?![\w/-]|[.,]\d)")
PHONES = (
    # international: +CC or 00CC, then groups (an area code may be in parentheses)
    re.compile(r"(?<![\w+])(?:\+|00)\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}(?![\w/-]|[.,]\d)"),
    # (area) 123 4567
    re.compile(r"(?<![\w(])\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,4}(?![\w/-]|[.,]\d)"),
    # national with separators: 020 7946 0958, 07700-900123, 555.123.4567, 1-800-555-0199
    re.compile(r"(?<![\w#/.:,-])\d{1,5}(?:[ .-]\d{2,8}){1,4}(?![\w/:-]|[.,]\d)"),
    # national, one run of digits: 07700900123, 5551234567
    re.compile(r"(?<![\w#/.:,-])(?:0\d{9,12}|[2-9]\d{9})(?![\w/:-]|[.,]\d)"),
)
US_GROUPS = re.compile(r"(?:1[ .-])?\d{3}[ .-]\d{3}[ .-]\d{4}")
FIRST_GROUP = re.compile(r"[^ .()-]*[ .()-]+")


class PrivacySettingsError(ValueError):
    """A mistake in the ``privacy:`` block; ``path`` is the key path of the bad value."""

    def __init__(self, message: str, path: tuple[str, ...] = ("privacy",)) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class PrivacySettings:
    """The ``privacy:`` block of intents.yaml.

    Attributes:
        redact_logs: redact log messages (default on).
        redact_llm: redact visitor and bot text before it is sent to the LLM.
        redact_transcripts: store transcripts redacted (the live turn still sees the real text).
        patterns: extra ``name -> regex``; matches become ``[name]``.
        retention_days: transcripts idle for longer are deleted by ``hybridbot purge`` and the
            server's daily purge; None keeps them until deleted.
    """

    redact_logs: bool = True
    redact_llm: bool = False
    redact_transcripts: bool = False
    patterns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    retention_days: int | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "PrivacySettings":
        """Settings from the parsed ``privacy:`` mapping (None or {} gives the defaults).

        Example YAML::

            privacy:
              redact: {logs: true, llm: true, transcripts: false, patterns: {order_ref: 'NW-\\d{6}'}}
              retention_days: 90

        Raises:
            PrivacySettingsError: a wrong type, an unknown key or a pattern that does not compile;
                ``path`` locates it, e.g. ``("privacy", "redact", "patterns", "order_ref")``.
        """
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise PrivacySettingsError("'privacy' must be a mapping with 'redact' and 'retention_days'")
        _known(raw, ("redact", "retention_days"), ("privacy",))
        redact = raw.get("redact") or {}
        if not isinstance(redact, Mapping):
            raise PrivacySettingsError("'redact' must be a mapping of logs/llm/transcripts/patterns",
                                       ("privacy", "redact"))
        _known(redact, ("logs", "llm", "transcripts", "patterns"), ("privacy", "redact"))
        flags = {}
        for name, default in (("logs", True), ("llm", False), ("transcripts", False)):
            value = redact.get(name, default)
            if not isinstance(value, bool):
                raise PrivacySettingsError(f"'{name}' must be true or false", ("privacy", "redact", name))
            flags[name] = value
        patterns = redact.get("patterns") or {}
        if not isinstance(patterns, Mapping):
            raise PrivacySettingsError("'patterns' must map a name to a regular expression",
                                       ("privacy", "redact", "patterns"))
        for name, source in patterns.items():
            _check_pattern(name, source)
        days = raw.get("retention_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
            raise PrivacySettingsError("'retention_days' must be a whole number of days, at least 1",
                                       ("privacy", "retention_days"))
        return cls(redact_logs=flags["logs"], redact_llm=flags["llm"], redact_transcripts=flags["transcripts"],
                   patterns=MappingProxyType(dict(patterns)), retention_days=days)


def _known(raw: Mapping[str, Any], keys: tuple[str, ...], path: tuple[str, ...]) -> None:
    for key in raw:
        if key not in keys:
            raise PrivacySettingsError(f"unknown key '{key}'; use one of {', '.join(keys)}", (*path, str(key)))


def _check_pattern(name: Any, source: Any) -> None:
    path = ("privacy", "redact", "patterns", str(name))
    if not isinstance(name, str) or not PATTERN_NAME.fullmatch(name):
        raise PrivacySettingsError(f"pattern name {name!r} must be lower case letters, digits and '_' "
                                   "(it becomes the placeholder [name])", path)
    if name in BUILT_IN:
        raise PrivacySettingsError(f"'{name}' is built in; give the pattern another name", path)
    if not isinstance(source, str) or not source:
        raise PrivacySettingsError(f"pattern '{name}' must be a non-empty regular expression string", path)
    try:
        compiled = re.compile(source)
    except re.error as exc:
        raise PrivacySettingsError(f"pattern '{name}' is not a valid regular expression: {exc}", path) from None
    if compiled.fullmatch(""):
        raise PrivacySettingsError(f"pattern '{name}' matches the empty string, so it would match everywhere", path)


def luhn_ok(digits: str) -> bool:
    """True if the digit string passes the Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else match.group()


def _phone_ok(raw: str) -> bool:
    digits = re.sub(r"\D", "", raw)
    if raw.startswith("+"):
        return 8 <= len(digits) <= 15
    if raw.startswith("00"):
        return 8 <= len(digits) - 2 <= 15
    if raw.startswith("("):
        return 9 <= len(digits) <= 13
    if not raw.isdigit():  # groups: a trunk prefix 0 or the North American 3-3-4 shape
        return 10 <= len(digits) <= 13 and (raw.startswith("0") or bool(US_GROUPS.fullmatch(raw)))
    return True  # one run: the pattern already pinned its length and first digit


def _phone_replacer(pattern: re.Pattern[str]) -> Callable[[re.Match[str]], str]:
    """A ``sub`` callback for ``pattern``; a match that is no phone number (a year followed by a
    number, say) is searched again without its first group, so a greedy match hides no number."""
    def replace(match: re.Match[str]) -> str:
        raw = match.group()
        if _phone_ok(raw):
            return "[phone]"
        first = FIRST_GROUP.match(raw)
        if first is None or first.end() >= len(raw):
            return raw
        return raw[:first.end()] + pattern.sub(replace, raw[first.end():])
    return replace


class Redactor:
    """Replaces personal data in text with placeholders: ``[email]``, ``[card]``, ``[phone]``, ``[name]``.

    Cards need 13-19 digits and a valid Luhn checksum; phone numbers need an international
    prefix, parentheses, a trunk ``0`` or the 3-3-4 shape, so prices, years, dates, times,
    model names and order references stay as they are.

    Example::

        Redactor(PrivacySettings()).redact("mail jo@example.com or call +44 20 7946 0958")
        # 'mail [email] or call [phone]'
    """

    def __init__(self, settings: PrivacySettings | None = None) -> None:
        self.settings = settings if settings is not None else PrivacySettings()
        rules: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]] = [
            (EMAIL, "[email]"), (CARD, _card), *((p, _phone_replacer(p)) for p in PHONES)]
        custom = self.settings.patterns.items()
        self._rules = tuple(rules + [(re.compile(src), f"[{name}]") for name, src in custom])
        # for lower-cased copies of a message (the route trace): custom patterns match in any case
        self._folded = tuple(rules + [(re.compile(src, re.IGNORECASE), f"[{name}]") for name, src in custom])

    def redact(self, text: str, *, folded: bool = False) -> str:
        """``text`` with every match replaced by its placeholder; ``folded`` for lower-cased
        text, so that a custom pattern written in capitals (``NW-\\d+``) still matches."""
        if not text:
            return text
        for pattern, replacement in self._folded if folded else self._rules:
            text = pattern.sub(replacement, text)
        return text

    def redact_value(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted (keys are kept)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(v) for v in value]
        return value

    def for_llm(self, messages: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
        """The chat messages to send to the LLM: visitor and bot text redacted when
        ``redact_llm`` is on; the system message (configuration) is left as written."""
        out = [dict(m) for m in messages]
        if self.settings.redact_llm:
            for message in out:
                if message.get("role") != "system" and isinstance(message.get("content"), str):
                    message["content"] = self.redact(message["content"])
        return out

    def for_transcript(self, turn: Mapping[str, Any]) -> dict[str, Any]:
        """The turn record to store: ``text_in``, reply texts, the route trace and a handoff's slots
        redacted when ``redact_transcripts`` is on."""
        out = dict(turn)
        if self.settings.redact_transcripts:
            out["text_in"] = self.redact(str(out.get("text_in") or ""))
            out["replies"] = [{**r, "text": self.redact(r["text"])} if isinstance(r.get("text"), str) else r
                              for r in out.get("replies") or ()]
            route = out.get("route")
            if isinstance(route, Mapping) and isinstance(route.get("trace"), Mapping):
                out["route"] = {**route, "trace": self._trace(route["trace"])}
            handoff = out.get("handoff")
            if isinstance(handoff, Mapping):  # the slots a handoff hands over: contact details, often
                out["handoff"] = {**handoff, "slots": self.redact_value(handoff.get("slots") or {})}
        return out

    def _trace(self, trace: Mapping[str, Any]) -> dict[str, Any]:
        """A route trace to store: it repeats the message (``normalized``, lower-cased, and the
        part a pattern ``matched``) and the entities found in it (text and value)."""
        out = self.redact_value(trace)
        for key in ("normalized", "matched"):
            if isinstance(trace.get(key), str):
                out[key] = self.redact(trace[key], folded=True)
        return out

    def for_feedback(self, comment: str) -> str:
        """A thumbs comment to store: redacted like the transcript it belongs to."""
        return self.redact(comment) if self.settings.redact_transcripts and comment else comment

    def for_log(self, text: str) -> str:
        """``text`` as a log line may show it (unchanged when ``redact_logs`` is off)."""
        return self.redact(text) if self.settings.redact_logs else text


class RedactingRecordFactory:
    """A ``logging`` record factory that redacts each record's message before any handler sees it.

    ``source`` returns the Redactor in force (None: leave records alone), so a hot-reloaded bot's
    settings apply at once. Extras and tracebacks are not rewritten: never put message text in them.
    """

    def __init__(self, previous: Callable[..., logging.LogRecord],
                 source: Callable[[], Redactor | None]) -> None:
        self.previous = previous
        self.source = source

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        try:
            redactor = self.source()
            if redactor is None or not redactor.settings.redact_logs:
                return record
            if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
                record.args = _redacted_atoms(redactor, record.args)  # structured fields stay, just redacted
                return record
            message = record.getMessage()
        except Exception:  # a broken format string is the handler's to report, as usual
            return record
        redacted = redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return record


ACCESS_ATOMS_WITH_VISITOR_DATA = ("r", "U", "q", "f")  # request line, path, query string, referer


def _redacted_atoms(redactor: Redactor, atoms: Any) -> Any:
    """gunicorn's access-log atoms with the ones a visitor can fill redacted, in place (gunicorn
    builds the mapping for this one record, and its class answers '-' for absent headers)."""
    if not isinstance(atoms, MutableMapping):
        atoms = dict(atoms)
    for key in ACCESS_ATOMS_WITH_VISITOR_DATA:
        value = atoms.get(key)
        if isinstance(value, str) and len(value) > 1:
            atoms[key] = redactor.redact(value)
    return atoms


def install_log_redaction(source: Redactor | Callable[[], Redactor | None]) -> Callable[[], None]:
    """Redact every log message of this process from now on; returns a function that undoes it.

    Installing again replaces the source instead of stacking factories.

    Args:
        source: a Redactor, or a callable returning the current one (e.g. ``lambda: holder.bot.redactor``).
    """
    getter = source if callable(source) and not isinstance(source, Redactor) else (lambda: source)
    current = logging.getLogRecordFactory()
    if isinstance(current, RedactingRecordFactory):
        before = current.source
        current.source = getter  # type: ignore[assignment]

        def restore_source() -> None:
            current.source = before
        return restore_source
    factory = RedactingRecordFactory(current, getter)  # type: ignore[arg-type]
    logging.setLogRecordFactory(factory)

    def uninstall() -> None:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(current)
    return uninstall
