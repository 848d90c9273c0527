"""PII redaction: what is replaced, what must survive (prices, years, models), settings, LLM/transcript/log use."""
from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from bot.app import Bot
from bot.errors import ConfigErrors
from bot.redaction import (PrivacySettings, PrivacySettingsError, Redactor, install_log_redaction, luhn_ok)
from bot.store import MemoryStore
from bot.testing import FakeLLM

log = logging.getLogger(__name__)

REDACTED = [
    ("write to jane.doe@example.com please", "write to [email] please"),
    ("JANE+cars@Example.CO.UK", "[email]"),
    ("mail: a_b-c@mail-server.example.org.", "mail: [email]."),
    ("two: x@y.io, z@w.dev", "two: [email], [email]"),
    ("call +44 20 7946 0958", "call [phone]"),
    ("+1 (555) 123-4567 is my cell", "[phone] is my cell"),
    ("+33 6 12 34 56 78", "[phone]"),
    ("+4915112345678", "[phone]"),
    ("0049 170 1234567", "[phone]"),
    ("(555) 123-4567", "[phone]"),
    ("555-123-4567", "[phone]"),
    ("555.123.4567", "[phone]"),
    ("1-800-555-0199", "[phone]"),
    ("5551234567", "[phone]"),
    ("020 7946 0958", "[phone]"),
    ("07700 900123", "[phone]"),
    ("07700900123", "[phone]"),
    ("in 2026 call 020 7946 0958", "in 2026 call [phone]"),
    ("my number: 0170-1234567.", "my number: [phone]."),
    ("card 4111 1111 1111 1111 exp 12/29", "card [card] exp 12/29"),
    ("4111111111111111", "[card]"),
    ("5500-0000-0000-0004", "[card]"),
    ("amex 3782 822463 10005", "amex [card]"),
    ("6011000990139424!", "[card]!"),
    ("X3 for jo@x.com, +44 20 7946 0958, 4111 1111 1111 1111",
     "X3 for [email], [phone], [card]"),
]

KEPT = [
    "I'd like the X3",
    "is the Sedan S available",
    "the E-Volt 500 has 500 km range",
    "it costs $41,900",
    "budget 41900",
    "between 35000 and 41900 dollars",
    "41.900,00 EUR",
    "€41 900",
    "the 2026 model",
    "models from 2019-2026",
    "Sedan S 2026 41900",
    "on 2026-05-01 at 14:30",
    "01/05/2026 10:30",
    "12.05.2026",
    "order NW-2026-00042",
    "order #48213",
    "ref A12345678",
    "3 seats",
    "7 seats and 2 rows",
    "1,250,000 km",
    "4111 1111 1111 1112",  # a 16-digit number that fails the Luhn check
    "1234567890123",  # 13 digits, not Luhn-valid
    "tracking 1Z999AA10123456784",
    "version 1.2.3",
    "192.168.1.10",
    "call me at 3pm",
    "555-1234",  # a local number without area code: too ambiguous, kept
    "unix time 1767225600",
    "about @home",
    "100% sure",
]


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(PrivacySettings())


@pytest.mark.parametrize("text, expected", REDACTED)
def test_personal_data_is_replaced_by_placeholders(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_numbers_and_names_are_left_alone(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == text


def test_the_table_covers_at_least_thirty_cases() -> None:
    assert len(REDACTED) + len(KEPT) >= 30 and len(KEPT) >= 20


@pytest.mark.parametrize("digits, ok", [("4111111111111111", True), ("4111111111111112", False),
                                        ("79927398713", True), ("79927398710", False), ("0", True)])
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_ok(digits) is ok


def test_custom_patterns_get_their_own_placeholder() -> None:
    settings = PrivacySettings.from_mapping({"redact": {"patterns": {"licence_plate": r"\b[A-Z]{2}-\d{3}-[A-Z]{2}\b",
                                                                     "vin": r"\b[A-HJ-NPR-Z0-9]{17}\b"}}})
    redactor = Redactor(settings)
    assert redactor.redact("plate AB-123-CD, VIN 1HGCM82633A004352, price $41,900") == (
        "plate [licence_plate], VIN [vin], price $41,900")


def test_redact_value_walks_json_like_data(redactor: Redactor) -> None:
    value = {"slots": {"email": "jo@example.com", "seats": 3}, "notes": ["call 555-123-4567", None]}
    assert redactor.redact_value(value) == {"slots": {"email": "[email]", "seats": 3},
                                            "notes": ["call [phone]", None]}


def test_llm_messages_are_redacted_only_when_asked_and_never_the_system_prompt() -> None:
    messages = [{"role": "system", "content": "Support line: 020 7946 0958"},
                {"role": "user", "content": "I am jo@example.com"},
                {"role": "assistant", "content": "Thanks jo@example.com"}]
    assert Redactor(PrivacySettings()).for_llm(messages) == messages
    sent = Redactor(PrivacySettings(redact_llm=True)).for_llm(messages)
    assert [m["content"] for m in sent] == ["Support line: 020 7946 0958", "I am [email]", "Thanks [email]"]
    assert messages[1]["content"] == "I am jo@example.com"  # the caller's list is not changed


def test_transcript_turns_are_redacted_only_when_asked() -> None:
    turn = {"turn_id": "t1", "text_in": "mail jo@example.com", "replies": [{"text": "Got jo@example.com",
                                                                            "buttons": [{"title": "OK"}]}]}
    assert Redactor(PrivacySettings()).for_transcript(turn) == turn
    stored = Redactor(PrivacySettings(redact_transcripts=True)).for_transcript(turn)
    assert stored["text_in"] == "mail [email]"
    assert stored["replies"] == [{"text": "Got [email]", "buttons": [{"title": "OK"}]}]
    assert turn["text_in"] == "mail jo@example.com"


# -- settings -------------------------------------------------------------------------------------------
def test_settings_default_to_redacting_logs_only() -> None:
    for raw in (None, {}):
        settings = PrivacySettings.from_mapping(raw)
        assert (settings.redact_logs, settings.redact_llm, settings.redact_transcripts) == (True, False, False)
        assert settings.retention_days is None and dict(settings.patterns) == {}


def test_settings_from_a_full_block() -> None:
    settings = PrivacySettings.from_mapping({"redact": {"logs": False, "llm": True, "transcripts": True,
                                                        "patterns": {"order_ref": r"NW-\d+"}},
                                             "retention_days": 90})
    assert (settings.redact_logs, settings.redact_llm, settings.redact_transcripts) == (False, True, True)
    assert dict(settings.patterns) == {"order_ref": r"NW-\d+"} and settings.retention_days == 90


@pytest.mark.parametrize("raw, path, fragment", [
    ([], ("privacy",), "must be a mapping"),
    ({"redact": {"log": True}}, ("privacy", "redact", "log"), "unknown key 'log'"),
    ({"keep": 3}, ("privacy", "keep"), "unknown key"),
    ({"redact": {"llm": "yes"}}, ("privacy", "redact", "llm"), "true or false"),
    ({"redact": {"patterns": {"bad": "(unclosed"}}}, ("privacy", "redact", "patterns", "bad"),
     "not a valid regular expression"),
    ({"redact": {"patterns": {"everything": "x*"}}}, ("privacy", "redact", "patterns", "everything"),
     "matches the empty string"),
    ({"redact": {"patterns": {"Bad Name": "x"}}}, ("privacy", "redact", "patterns", "Bad Name"), "lower case"),
    ({"redact": {"patterns": {"email": "x"}}}, ("privacy", "redact", "patterns", "email"), "built in"),
    ({"redact": {"patterns": ["x"]}}, ("privacy", "redact", "patterns"), "map a name"),
    ({"retention_days": 0}, ("privacy", "retention_days"), "at least 1"),
    ({"retention_days": True}, ("privacy", "retention_days"), "whole number"),
])
def test_mistakes_in_the_block_name_their_place(raw: object, path: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(PrivacySettingsError, match=fragment) as info:
        PrivacySettings.from_mapping(raw)  # type: ignore[arg-type]
    assert info.value.path == path


# -- logs -----------------------------------------------------------------------------------------------
@pytest.fixture
def redacted_logs() -> Iterator[None]:
    undo = install_log_redaction(Redactor(PrivacySettings()))
    yield
    undo()


def test_log_messages_are_redacted_before_any_handler_sees_them(redacted_logs: None,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("bot.test").info("visitor wrote %s about %s", "jo@example.com", "the X3 at $41,900")
    assert caplog.messages == ["visitor wrote [email] about the X3 at $41,900"]


def test_gunicorn_access_records_keep_their_fields_with_visitor_data_redacted(redacted_logs: None) -> None:
    from bot.metrics import JsonFormatter

    atoms = {"h": "127.0.0.1", "m": "GET", "U": "/api/conversations/abc", "q": "email=jo@example.com",
             "r": "GET /api/conversations/abc?email=jo@example.com HTTP/1.1", "s": "200", "B": 80, "M": 3,
             "f": "https://shop.example/?phone=+44 20 7946 0958", "a": "Mozilla/5.0 (X11; Linux x86_64) 537.36"}
    record = logging.getLogRecordFactory()("gunicorn.access", logging.INFO, __file__, 1,
                                           '%(h)s "%(r)s" %(s)s "%(f)s" "%(a)s"', (atoms,), None)
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["message"] == "request" and data["path"] == "/api/conversations/abc" and data["status"] == 200
    assert data["query"] == "email=[email]" and data["referer"] == "https://shop.example/?phone=[phone]"
    assert data["user_agent"] == atoms["a"]
    assert "jo@example.com" not in line and "7946" not in line
    assert record.getMessage().startswith('127.0.0.1 "GET /api/conversations/abc?email=[email] HTTP/1.1" 200')


def test_log_redaction_follows_the_source_and_can_be_undone(caplog: pytest.LogCaptureFixture) -> None:
    before = logging.getLogRecordFactory()  # a served app may have installed one already
    before_source = getattr(before, "source", None)
    current: list[Redactor | None] = [Redactor(PrivacySettings(redact_logs=False))]
    with caplog.at_level(logging.INFO):
        undo = install_log_redaction(lambda: current[0])
        try:
            log.info("a jo@example.com")
            current[0] = Redactor(PrivacySettings())
            log.info("b jo@example.com")
            again = install_log_redaction(Redactor(PrivacySettings(redact_logs=False)))  # replaces, no stacking
            log.info("c jo@example.com")
            again()
            log.info("d jo@example.com")
        finally:
            undo()
    assert caplog.messages == ["a jo@example.com", "b [email]", "c jo@example.com", "d [email]"]
    assert logging.getLogRecordFactory() is before and getattr(before, "source", None) is before_source


BOT = {
    "intents.yaml": """\
        version: 1
        router: {threshold: 0.3}
        intents:
          callback:
            examples: [call me back, I want a callback, please contact me, get in touch with me]
            patterns: ['\\bcall me back\\b']
          out_of_scope:
            examples: [tell me a joke, what's the weather]
    """,
    "flows/callback.yaml": """\
        version: 1
        trigger: callback
        slots:
          contact: {entity: email, ask: "Which email address should we use?"}
        steps:
          - ask: contact
          - action: remember_contact
          - say: "We will write to {{ result.seen }}."
    """,
    "actions/contact.py": """\
        from bot import Reply, action

        @action
        def remember_contact(ctx):
            ctx.log.info("callback requested, contact slot %s", ctx.slots["contact"])
            return Reply(result={"seen": ctx.slots["contact"]})
    """,
}


def test_a_slot_filled_from_pii_keeps_its_value_for_handlers_but_logs_redacted(
        tmp_path: Path, redacted_logs: None, caplog: pytest.LogCaptureFixture) -> None:
    for name, text in BOT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    bot = Bot.from_path(tmp_path, store=MemoryStore(), llm=FakeLLM(), env={})
    try:
        first = bot.handle(None, "call me back")
        with caplog.at_level(logging.INFO, logger="bot.actions"):
            turn = bot.handle(first.conversation_id, "it's jo@example.com")
    finally:
        bot.close()
    assert turn.text == "We will write to jo@example.com."  # what the handler saw in ctx.slots
    assert "callback requested, contact slot [email]" in caplog.messages
    assert not any("jo@example.com" in m for m in caplog.messages)


# -- the privacy block of a bot (needs Config.privacy, Bot.redactor and the turns.py calls) ------------------
PRIVATE_BOT = {
    "intents.yaml": """\
        version: 1
        router: {threshold: 0.95}
        privacy:
          redact:
            llm: true
            transcripts: true
            patterns: {order_ref: 'NW-\\d{4}-\\d{5}'}
          retention_days: 30
        intents:
          greet:
            examples: [hello, hi there, good morning]
            patterns: ['^hello$']
          out_of_scope:
            examples: [tell me a joke, what's the weather]
    """,
    "flows/greet.yaml": "version: 1\ntrigger: greet\nsteps:\n  - say: Hello!\n",
    "flows/fallback.yaml": "version: 1\nsystem_prompt: Support line 020 7946 0958.\nmodel: fake\nunavailable: Sorry.\n",
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_a_bot_with_a_privacy_block_sends_and_stores_redacted_text(tmp_path: Path) -> None:
    llm = FakeLLM(["Noted, we will mail you."])
    bot = Bot.from_path(write(tmp_path, PRIVATE_BOT), store=MemoryStore(), llm=llm, env={})
    try:
        assert bot.config.privacy.retention_days == 30
        turn = bot.handle(None, "my order NW-2026-00042 never came, write to jo@example.com")
        assert turn.text == "Noted, we will mail you."
        assert bot.feedback(turn.conversation_id, turn.turn_id, "down", "still nothing, call +44 20 7946 0958")
        stored = bot.transcript(turn.conversation_id)
    finally:
        bot.close()
    sent = llm.calls[0]
    assert sent[0]["role"] == "system" and "020 7946 0958" in sent[0]["content"]  # configuration is not touched
    assert sent[-1] == {"role": "user", "content": "my order [order_ref] never came, write to [email]"}
    assert stored[0]["text_in"] == "my order [order_ref] never came, write to [email]"
    assert stored[0]["feedback"]["comment"] == "still nothing, call [phone]"  # a comment is transcript too
    assert stored[0]["route"]["trace"]["normalized"] == "my order [order_ref] never came, write to [email]"
    kept = json.dumps(stored)  # the route trace (normalized text, entities) held the message too
    assert "jo@example.com" not in kept and "NW-2026-00042" not in kept.upper() and "7946" not in kept


def test_a_pattern_matched_turn_stores_its_trace_redacted(tmp_path: Path) -> None:
    files = dict(PRIVATE_BOT)
    files["intents.yaml"] = files["intents.yaml"].replace("patterns: ['^hello$']", "patterns: ['^hello']")
    bot = Bot.from_path(write(tmp_path, files), store=MemoryStore(), llm=FakeLLM(), env={})
    try:
        turn = bot.handle(None, "hello, I am jo@example.com")
        stored = bot.transcript(turn.conversation_id)
    finally:
        bot.close()
    assert turn.route["trace"]["normalized"] == "hello, i am jo@example.com"  # the visitor sees their own text
    assert stored[0]["route"]["trace"]["stage"] == "pattern"
    assert "jo@example.com" not in json.dumps(stored)


def test_a_mistake_in_the_privacy_block_is_a_load_error_with_its_position(tmp_path: Path) -> None:
    files = dict(PRIVATE_BOT)
    files["intents.yaml"] = files["intents.yaml"].replace("'NW-\\d{4}-\\d{5}'", "'NW-(\\d{4}'")
    with pytest.raises(ConfigErrors) as info:
        Bot.from_path(write(tmp_path, files), store=MemoryStore(), llm=FakeLLM(), env={})
    assert [e.location for e in info.value.errors] == ["intents.yaml:7:27"]
    assert "pattern 'order_ref' is not a valid regular expression" in info.value.errors[0].message
