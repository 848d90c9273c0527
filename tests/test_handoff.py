"""Handing a conversation to a person: recorded on the turn, listed for staff, sent to a real webhook."""
from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bot import handoff
from bot.app import Bot
from bot.handoff import Notifier, notifier_for
from bot.handoff_channels import EmailChannel, WebhookChannel, channels_from
from bot.metrics import default_metrics
from bot.redaction import PrivacySettings, Redactor
from bot.store import MemoryStore
from bot.web import create_app

ROOT = Path(__file__).resolve().parents[1]
CALL_ME = ("can I talk to a human please", "yes please", "you can call me on +1 555 123 4567")


class Hook:
    """A local HTTP server standing in for a helpdesk's webhook: records requests, answers ``statuses``."""

    def __init__(self, statuses: list[int] | None = None, hold: threading.Event | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.methods: list[str] = []
        self.statuses = list(statuses or [204])
        self.hold = hold
        self.arrived = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - a followed redirect would arrive here
                hook.methods.append("GET")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                hook.methods.append("POST")
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                hook.arrived.set()
                if hook.hold is not None:
                    hook.hold.wait(10)
                status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/handoff"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def talk(bot: Bot, *messages: str) -> tuple[str, Any]:
    cid, turn = None, None
    for text in messages:
        turn = bot.handle(cid, text)
        cid = turn.conversation_id
    assert cid is not None
    return cid, turn


def demo(env: dict[str, str]) -> Bot:
    """The demo bot with events in memory only (tests/test_handoff_spool.py covers the spool)."""
    return Bot.from_path(ROOT, store=MemoryStore(), env=env, handoff_spool=None)


def counter(name: str, **labels: str) -> float:
    return default_metrics().registry.get_sample_value(name, labels) or 0.0


def test_the_demo_hands_over_with_the_contact_and_records_it_on_the_turn() -> None:
    bot = demo({})
    assert bot.handoffs is None  # no webhook configured: nothing is sent, the transcript still says it
    before = counter("bot_handoffs_total")
    cid, turn = talk(bot, *CALL_ME)
    assert turn.handoff == {"flow": "contact_human", "slots": {"callback": "yes", "contact": "+15551234567"}}
    stored = bot.store.transcript(cid)
    assert [t.get("handoff") is not None for t in stored] == [False, False, True]
    assert counter("bot_handoffs_total") == before + 1


def test_the_webhook_gets_the_event_signed_after_the_turn_is_saved(hook: Hook) -> None:
    bot = demo({"BOT_HANDOFF_WEBHOOK": hook.url, "BOT_HANDOFF_WEBHOOK_SECRET": "s3cret"})
    delivered = counter("bot_handoff_notifications_total", channel="webhook", outcome="delivered")
    cid, turn = talk(bot, *CALL_ME)
    assert bot.handoffs is not None and bot.handoffs.wait_idle()
    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-hybridbot-signature"], expected)
    assert headers["x-hybridbot-event"] == "handoff" and headers["content-type"] == "application/json"
    assert len(headers["x-hybridbot-delivery"]) == 36
    sent = json.loads(body)
    assert sent["event"] == "handoff" and sent["conversation_id"] == cid and sent["turn_id"] == turn.turn_id
    assert sent["flow"] == "contact_human" and sent["slots"]["contact"] == "+15551234567"
    assert [r["visitor"] for r in sent["recent"]] == list(CALL_ME)
    assert sent["recent"][-1]["bot"] == [turn.text]
    assert sent["at"].endswith("+00:00")
    assert counter("bot_handoff_notifications_total", channel="webhook", outcome="delivered") == delivered + 1


def test_a_slow_webhook_never_holds_up_the_visitors_reply() -> None:
    held = threading.Event()
    slow = Hook(hold=held)
    try:
        bot = demo({"BOT_HANDOFF_WEBHOOK": slow.url})
        _, turn = talk(bot, *CALL_ME)
        assert slow.arrived.wait(10)  # the webhook has the request and has not answered yet...
        assert "passed our conversation on" in turn.text  # ...while the visitor already has the reply
        assert not held.is_set()
        held.set()
        assert bot.handoffs is not None and bot.handoffs.wait_idle()
    finally:
        slow.close()


def run_notifier(hook: Hook) -> tuple[list[str], list[float]]:
    outcomes: list[str] = []
    waits: list[float] = []
    notifier = Notifier([WebhookChannel(hook.url)], on_result=lambda channel, outcome: outcomes.append(outcome),
                        sleep=waits.append)
    notifier.notify({"event": "handoff", "conversation_id": "c1"})
    assert notifier.wait_idle()
    return outcomes, waits


@pytest.mark.parametrize("statuses, tries, outcome", [
    ([500, 503, 204], 3, "delivered"),   # server errors: tried again
    ([429, 200], 2, "delivered"),        # too many requests: tried again
    ([408, 201], 2, "delivered"),        # request timeout: tried again
    ([400], 1, "failed"),                # the receiver refuses the payload: no point trying again
    ([502], handoff.ATTEMPTS, "failed"),  # never recovers: gives up after every try
])
def test_delivery_tries_again_only_when_it_can_help(statuses: list[int], tries: int, outcome: str) -> None:
    server = Hook(statuses)
    try:
        outcomes, waits = run_notifier(server)
    finally:
        server.close()
    assert len(server.requests) == tries
    assert outcomes == [outcome]
    assert waits == list(handoff.BACKOFF[:tries - 1])
    assert len({h["x-hybridbot-delivery"] for h, _ in server.requests}) == 1  # one id: receivers can drop repeats


def test_an_unreachable_webhook_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    server = Hook()
    url = server.url
    server.close()  # nothing listens there any more
    outcomes: list[str] = []
    notifier = Notifier([WebhookChannel(url)], on_result=lambda channel, outcome: outcomes.append(outcome),
                        sleep=lambda s: None)
    notifier.notify({"conversation_id": "c9"})
    assert notifier.wait_idle()
    assert outcomes == ["failed"]
    assert "c9 was not delivered" in caplog.text and "GET /admin/handoffs" in caplog.text
    assert "/hooks/handoff" not in caplog.text  # logs name scheme and host: a webhook path can hold its secret


def test_a_redirect_is_not_followed_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    server = Hook([302], headers={"Location": "/elsewhere"})
    try:
        outcomes, waits = run_notifier(server)
    finally:
        server.close()
    assert server.methods == ["POST"]  # urllib would have turned it into a GET without the body
    assert outcomes == ["failed"] and waits == []
    assert "HTTP 302 (redirects are not followed" in caplog.text


def test_a_visitor_who_leaves_mid_reply_is_still_handed_over() -> None:
    bot = demo({})
    cid, _ = talk(bot, *CALL_ME[:2])
    events = bot.stream(cid, CALL_ME[2])
    assert next(events)[0] == "meta"
    assert next(events)[0] == "delta"
    events.close()  # the browser went away while the handoff text was on its way
    last = bot.store.transcript(cid)[-1]
    assert last["incomplete"] is True
    assert last["handoff"] == {"flow": "contact_human", "slots": {"callback": "yes", "contact": "+15551234567"}}


def test_with_redacted_transcripts_the_webhook_still_gets_the_contact(tmp_path: Path, hook: Hook) -> None:
    shutil.copytree(ROOT, tmp_path / "bot", ignore=shutil.ignore_patterns("var", ".git", ".venv", "__pycache__",
                                                                          "tests", "docs", "bench", "web"))
    intents = tmp_path / "bot" / "intents.yaml"
    intents.write_text(intents.read_text() + "privacy:\n  redact:\n    transcripts: true\n")
    bot = Bot.from_path(tmp_path / "bot", store=MemoryStore(), env={"BOT_HANDOFF_WEBHOOK": hook.url})
    cid, _ = talk(bot, *CALL_ME)
    assert bot.handoffs is not None and bot.handoffs.wait_idle()
    stored = bot.store.transcript(cid)[-1]
    assert stored["handoff"]["slots"]["contact"] == "[phone]"  # the transcript keeps no phone number
    sent = json.loads(hook.requests[0][1])
    assert sent["slots"]["contact"] == "+15551234567"  # the team needs it to call back
    assert sent["recent"][-1]["visitor"] == "you can call me on [phone]"  # the text, as stored


def test_settings_are_checked_and_one_notifier_serves_a_process() -> None:
    assert notifier_for({}) is None and notifier_for({"BOT_HANDOFF_WEBHOOK": " "}) is None
    with pytest.raises(ValueError, match="must be an http"):
        notifier_for({"BOT_HANDOFF_WEBHOOK": "ftp://example.com/x"})
    env = {"BOT_HANDOFF_WEBHOOK": "https://helpdesk.example/hook"}
    assert notifier_for(env) is notifier_for(dict(env))  # a reloaded bot keeps the same queue


def test_redacted_transcripts_redact_the_handed_over_slots_too() -> None:
    turn = {"turn_id": "t1", "text_in": "call me", "replies": [],
            "handoff": {"flow": "contact_human", "slots": {"contact": "jo@example.com", "callback": "yes"}}}
    assert Redactor(PrivacySettings()).for_transcript(turn) == turn
    stored = Redactor(PrivacySettings(redact_transcripts=True)).for_transcript(turn)
    assert stored["handoff"] == {"flow": "contact_human", "slots": {"contact": "[email]", "callback": "yes"}}


def admin(bot: Bot) -> Callable[..., Any]:
    client = create_app(bot, env={"BOT_ADMIN_TOKEN": "t0ken"}).test_client()
    return lambda path, token="t0ken": client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})


def test_staff_list_handoffs_newest_first_with_the_admin_token() -> None:
    bot = demo({})
    first, _ = talk(bot, *CALL_ME)
    talk(bot, "hi", "what are your opening hours")
    second, _ = talk(bot, "talk to a person", "yes", "jo@example.com")
    get = admin(bot)
    assert get("/admin/handoffs", token="").status_code == 401
    assert get("/admin/handoffs", token="wrong").status_code == 401
    listed = get("/admin/handoffs").get_json()["handoffs"]
    assert [h["conversation_id"] for h in listed] == [second, first]
    assert listed[0]["slots"] == {"callback": "yes", "contact": "jo@example.com"}
    assert listed[0]["message"] == "jo@example.com" and listed[0]["flow"] == "contact_human"
    assert [h["conversation_id"] for h in get("/admin/handoffs?limit=1").get_json()["handoffs"]] == [second]
    assert get("/admin/handoffs?limit=0").status_code == 400


# -- e-mail ---------------------------------------------------------------------------------------------
class Mailbox:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: keeps what it accepts, answers DATA with ``replies`` in turn."""

    def __init__(self, replies: list[str] | None = None, logins: dict[str, str] | None = None,
                 quit_reply: str | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.envelopes: list[Any] = []
        self.replies = list(replies or ["250 OK"])
        self.logins: list[str] = []
        box = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                reply = box.replies.pop(0) if len(box.replies) > 1 else box.replies[0]
                if reply.startswith("250"):
                    box.envelopes.append(envelope)
                return reply

            if quit_reply:
                async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                    return quit_reply

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            user, password = data.login.decode(), data.password.decode()
            box.logins.append(user)
            return AuthResult(success=(logins or {}).get(user) == password, handled=False)

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # AUTH PLAIN only, so that one refused login is one attempt (smtplib tries each mechanism)
        extra = ({"authenticator": authenticate, "auth_require_tls": False, "auth_exclude_mechanism": ["LOGIN"]}
                 if logins else {})
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port, **extra)
        self.controller.start()
        self.url = f"smtp://127.0.0.1:{port}"

    def message(self, index: int = 0) -> Any:
        return email.message_from_bytes(self.envelopes[index].content, policy=email.policy.default)

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    yield box
    box.close()


def test_the_team_gets_an_email_with_the_contact_and_the_conversation(mailbox: Mailbox, hook: Hook) -> None:
    bot = demo({"BOT_HANDOFF_EMAIL": "sales@northwind.example, boss@northwind.example", "BOT_SMTP_URL": mailbox.url,
                "BOT_HANDOFF_EMAIL_FROM": "chat@northwind.example", "BOT_HANDOFF_WEBHOOK": hook.url})
    sent = counter("bot_handoff_notifications_total", channel="email", outcome="delivered")
    cid, _ = talk(bot, *CALL_ME)
    assert bot.handoffs is not None and bot.handoffs.wait_idle()
    assert len(hook.requests) == 1 and len(mailbox.envelopes) == 1  # every channel gets it once
    envelope, mail = mailbox.envelopes[0], mailbox.message()
    assert envelope.rcpt_tos == ["sales@northwind.example", "boss@northwind.example"]
    assert mail["From"] == "chat@northwind.example"
    assert mail["Subject"] == "Chat handoff: contact_human (+15551234567)"
    assert mail["X-Hybridbot-Delivery"] == hook.requests[0][0]["x-hybridbot-delivery"]
    body = mail.get_content()
    assert f"Conversation: {cid}" in body and "  contact: +15551234567" in body
    assert "Visitor: can I talk to a human please" in body and "Bot: What phone number" in body
    assert counter("bot_handoff_notifications_total", channel="email", outcome="delivered") == sent + 1


@pytest.mark.parametrize("replies, tries, outcome", [
    (["451 4.3.0 try again later", "250 OK"], 2, "delivered"),  # a temporary refusal: tried again
    (["550 5.1.1 no such mailbox"], 1, "failed"),                # refused for good
])
def test_email_tries_again_only_after_a_temporary_refusal(replies: list[str], tries: int, outcome: str) -> None:
    box = Mailbox(replies)
    outcomes: list[str] = []
    waits: list[float] = []
    try:
        notifier = Notifier(channels_from({"BOT_HANDOFF_EMAIL": "sales@example.com", "BOT_SMTP_URL": box.url}),
                            on_result=lambda channel, result: outcomes.append(f"{channel} {result}"), sleep=waits.append)
        notifier.notify({"conversation_id": "c1", "flow": "contact_human", "slots": {}, "recent": []})
        assert notifier.wait_idle()
    finally:
        box.close()
    assert outcomes == [f"email {outcome}"] and len(waits) == tries - 1
    assert len(box.envelopes) == (1 if outcome == "delivered" else 0)


def test_a_slot_value_cannot_add_headers_or_recipients(mailbox: Mailbox) -> None:
    channel = EmailChannel(mailbox.url, ["sales@example.com"])
    sneaky = {"conversation_id": "c2", "flow": "contact_human",
              "slots": {"contact": "jo@example.com\r\nBcc: thief@example.net"}, "recent": []}
    assert channel.send(sneaky, "d1") is None
    mail = mailbox.message()
    assert mailbox.envelopes[0].rcpt_tos == ["sales@example.com"]
    assert mail["Bcc"] is None and "\n" not in mail["Subject"]
    assert mail["Subject"].startswith("Chat handoff: contact_human (jo@example.com Bcc: thief@example.net")


def test_smtp_login_takes_the_url_encoded_user_and_password() -> None:
    box = Mailbox(logins={"bot@example.com": "p@ss:word"})
    try:
        url = box.url.replace("smtp://", "smtp://bot%40example.com:p%40ss%3Aword@")
        assert EmailChannel(url, ["sales@example.com"]).send({"conversation_id": "c3", "slots": {}}, "d2") is None
        wrong = box.url.replace("smtp://", "smtp://bot%40example.com:nope@")
        problem = EmailChannel(wrong, ["sales@example.com"]).send({"conversation_id": "c4", "slots": {}}, "d3")
    finally:
        box.close()
    assert box.logins == ["bot@example.com", "bot@example.com"] and len(box.envelopes) == 1
    assert problem is not None and problem.startswith("SMTP 535")
    assert not EmailChannel(wrong, ["sales@example.com"]).retry(problem)  # a wrong password stays wrong


@pytest.mark.parametrize("env, message", [
    ({"BOT_HANDOFF_EMAIL": "sales@example.com", "BOT_SMTP_URL": "http://user:secret@mail.example"}, "BOT_SMTP_URL"),
    ({"BOT_HANDOFF_EMAIL": "sales@example.com", "BOT_SMTP_URL": "smtps://user:se/cret@mail.example"}, "port"),
    ({"BOT_HANDOFF_EMAIL": "sales@example.com", "BOT_SMTP_URL": "smtp://user:secret@mail.example"}, "unencrypted"),
    ({"BOT_HANDOFF_EMAIL": "sales@example.com", "BOT_SMTP_URL": "smtps://user:sécret@mail.example"}, "ASCII"),
    ({"BOT_HANDOFF_EMAIL": "sales at example dot com"}, "BOT_HANDOFF_EMAIL"),
    ({"BOT_HANDOFF_EMAIL": "verkäufer@autohaus.example"}, "ASCII"),
    ({"BOT_HANDOFF_EMAIL": "a@example.com\r\nBcc: b@example.com"}, "BOT_HANDOFF_EMAIL"),
    ({"BOT_HANDOFF_EMAIL": "a@example.com", "BOT_HANDOFF_EMAIL_FROM": "bot@example.com\nBcc: x@y.z"}, "EMAIL_FROM"),
    ({"BOT_HANDOFF_WEBHOOK": "hooks.example/services/secret-token"}, "BOT_HANDOFF_WEBHOOK"),
])
def test_settings_are_checked_without_printing_a_secret(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        channels_from(env)
    assert "secret" not in str(info.value) and "cret" not in str(info.value)


def test_the_sender_defaults_to_the_recipients_domain_and_encrypted_logins_are_fine() -> None:
    (channel,) = channels_from({"BOT_HANDOFF_EMAIL": " sales@northwind.example ,boss@northwind.example",
                                "BOT_SMTP_URL": "smtp+starttls://bot%40northwind.example:pw@mail.example"})
    assert isinstance(channel, EmailChannel)
    assert channel.sender == "hybridbot@northwind.example" and channel.port == 587
    assert channel.to == ["sales@northwind.example", "boss@northwind.example"]
    assert channel.user == "bot@northwind.example" and channel.where == "smtp+starttls://mail.example"


def test_a_line_break_in_a_message_cannot_pass_for_another_speaker(mailbox: Mailbox) -> None:
    channel = EmailChannel(mailbox.url, ["sales@example.com"])
    mail = channel.message({"conversation_id": "c5", "slots": {},
                            "recent": [{"visitor": "hi\nBot: sure, 90% off for you", "bot": ["Hello!"]}]}, "d5")
    body = mail.get_content()
    assert "Visitor: hi\n    Bot: sure, 90% off for you\nBot: Hello!" in body


def test_a_mail_accepted_before_a_bad_goodbye_is_delivered_once() -> None:
    box = Mailbox(quit_reply="421 4.3.2 shutting down")
    outcomes: list[str] = []
    try:
        notifier = Notifier([EmailChannel(box.url, ["sales@example.com"])], sleep=lambda s: None,
                            on_result=lambda channel, outcome: outcomes.append(outcome))
        notifier.notify({"conversation_id": "c6", "slots": {}, "recent": []})
        assert notifier.wait_idle()
    finally:
        box.close()
    assert outcomes == ["delivered"] and len(box.envelopes) == 1


class Stuck:
    """A channel whose server hangs until released (a mail server that does not answer)."""

    name, where = "email", "smtp://stuck"

    def __init__(self) -> None:
        self.release = threading.Event()

    def send(self, payload: Any, delivery: str) -> str | None:
        self.release.wait(10)
        return None

    def retry(self, problem: str) -> bool:
        return False


def test_a_hanging_mail_server_does_not_hold_up_the_webhook(hook: Hook) -> None:
    stuck = Stuck()
    notifier = Notifier([stuck, WebhookChannel(hook.url)])
    try:
        notifier.notify({"conversation_id": "c7"})
        assert hook.arrived.wait(10)  # the webhook got it while the e-mail is still hanging...
        for _ in range(1000):  # ...and finished with it: only the e-mail is left
            if notifier.pending() == 1:
                break
            time.sleep(0.01)
        assert notifier.pending() == 1 and not stuck.release.is_set()
    finally:
        stuck.release.set()
    assert notifier.wait_idle()


def test_handoff_steps_without_a_channel_are_announced_once(caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch, hook: Hook) -> None:
    import bot.app

    monkeypatch.setattr(bot.app, "_WARNED", set())
    demo({})
    demo({})  # a reload: said once is enough
    said = [r.getMessage() for r in caplog.records if "hand conversations to a person" in r.getMessage()]
    assert len(said) == 1 and "contact_human" in said[0] and "BOT_HANDOFF_EMAIL" in said[0]
    caplog.clear()
    monkeypatch.setattr(bot.app, "_WARNED", set())
    demo({"BOT_HANDOFF_WEBHOOK": hook.url})
    assert not [r for r in caplog.records if "hand conversations to a person" in r.getMessage()]
