"""Where handoff events go: a webhook (signed JSON POST) and e-mail (SMTP). See ``bot/handoff.py``.

Each channel's ``send`` returns None when the event was delivered, else what went wrong, and
``retry`` says whether another try could help. Logs name a channel by ``where`` only: scheme
and host, since webhook URLs and SMTP URLs carry secrets.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

TIMEOUT = 5.0                                  # seconds per try
RETRIED_HTTP = ("HTTP 408", "HTTP 429", "HTTP 5")  # answers worth another try; other HTTP answers are final
SMTP_SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
LOOPBACK = ("localhost", "127.0.0.1", "::1")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")

log = logging.getLogger(__name__)


class Channel(Protocol):
    name: str
    where: str

    def send(self, payload: Mapping[str, Any], delivery: str) -> str | None: ...
    def retry(self, problem: str) -> bool: ...


def where(url: str) -> str:
    """A URL as logs may show it: scheme and host, no user, password, path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookChannel:
    """POSTs the event as JSON; signed with ``secret`` when given (``X-Hybridbot-Signature``)."""

    name = "webhook"

    def __init__(self, url: str, secret: str = "") -> None:
        if not url.startswith(("http://", "https://")):  # the value is not shown: it may hold a token
            raise ValueError("BOT_HANDOFF_WEBHOOK must be an http:// or https:// URL")
        self.url, self.secret, self.where = url, secret, where(url)

    def send(self, payload: Mapping[str, Any], delivery: str) -> str | None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "hybridbot-handoff/1",
                   "X-Hybridbot-Event": "handoff", "X-Hybridbot-Delivery": delivery}
        if self.secret:
            headers["X-Hybridbot-Signature"] = signature(self.secret, body)
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=TIMEOUT) as response:
                response.read(65536)
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            note = " (redirects are not followed: set BOT_HANDOFF_WEBHOOK to the final URL)" if exc.code < 400 else ""
            return f"HTTP {exc.code}{note}"
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"

    def retry(self, problem: str) -> bool:
        return not problem.startswith("HTTP ") or problem.startswith(RETRIED_HTTP)


class EmailChannel:
    """Sends the event as a plain-text e-mail through ``smtp_url``.

    ``smtp://host[:25]`` (no TLS: a relay on the same machine or network; a password only to a
    loopback host), ``smtp+starttls://user:password@host[:587]`` or
    ``smtps://user:password@host[:465]``; the user and password are URL-encoded. Certificates
    and host names are checked. Addresses must be ASCII.
    """

    name = "email"

    def __init__(self, smtp_url: str, to: list[str], sender: str = "") -> None:
        parts = urlsplit(smtp_url)
        try:
            port = parts.port
        except ValueError:  # e.g. an unencoded '/' or '?' in the password: do not show any of it
            raise ValueError("BOT_SMTP_URL: the port is not a number; URL-encode '/', '?', '#', ':' and '@' in "
                             "the user name and password") from None
        if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
            raise ValueError("BOT_SMTP_URL must look like smtp://host, smtp+starttls://user:password@host or "
                             f"smtps://user:password@host, got {where(smtp_url)!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = port or SMTP_SCHEMES[parts.scheme]
        self.user, self.password = unquote(parts.username or ""), unquote(parts.password or "")
        if self.password and self.scheme == "smtp" and self.host not in LOOPBACK:
            raise ValueError("BOT_SMTP_URL: a password over smtp:// would cross the network unencrypted; use "
                             "smtp+starttls:// or smtps://")
        if not (self.user + self.password).isascii():
            raise ValueError("BOT_SMTP_URL: the user name and password must be ASCII")
        for address in [*to, sender]:
            if address and not _ADDRESS.fullmatch(address):
                raise ValueError(f"BOT_HANDOFF_EMAIL / BOT_HANDOFF_EMAIL_FROM: {address!r} is not a plain ASCII "
                                 "e-mail address (name@example.com, separated by commas)")
        if not to:
            raise ValueError("BOT_HANDOFF_EMAIL needs at least one address")
        # Relays accept their own organisation's domain as the sender: by default the first recipient's.
        self.to, self.sender = to, sender or f"hybridbot@{to[0].rsplit('@', 1)[1]}"
        self.where = where(smtp_url)

    def send(self, payload: Mapping[str, Any], delivery: str) -> str | None:
        message = self.message(payload, delivery)
        context = ssl.create_default_context()
        try:
            if self.scheme == "smtps":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=TIMEOUT, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=TIMEOUT)
        except (ssl.SSLCertVerificationError, smtplib.SMTPException) as exc:
            return f"refused: {type(exc).__name__}: {exc}"
        except OSError as exc:  # refused, unreachable, timed out
            return f"network: {type(exc).__name__}: {exc}"
        try:
            if self.scheme == "smtp+starttls":
                smtp.starttls(context=context)
            if self.user:
                smtp.login(self.user, self.password)
            refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return f"SMTP {min(codes)} every recipient refused: {', '.join(exc.recipients)}"
        except smtplib.SMTPResponseException as exc:  # 4xx: try again later; 5xx (535: a wrong password): final
            return f"SMTP {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
        except smtplib.SMTPServerDisconnected as exc:
            return f"network: {type(exc).__name__}: {exc}"
        except (ssl.SSLCertVerificationError, smtplib.SMTPException) as exc:  # no STARTTLS, no usable AUTH...
            return f"refused: {type(exc).__name__}: {exc}"
        except OSError as exc:
            return f"network: {type(exc).__name__}: {exc}"
        finally:
            try:
                smtp.quit()  # the mail is accepted already: how the goodbye goes changes nothing
            except (smtplib.SMTPException, OSError):
                smtp.close()
        if refused:
            log.warning("handoff e-mail %s: refused for %s (delivered to the others)", delivery, ", ".join(refused))
        return None

    def retry(self, problem: str) -> bool:
        return problem.startswith(("SMTP 4", "network: "))

    def message(self, payload: Mapping[str, Any], delivery: str) -> EmailMessage:
        slots = {k: v for k, v in (payload.get("slots") or {}).items() if v is not None}
        contact = next((str(v) for k, v in slots.items() if "contact" in k or k in ("email", "phone")), "")
        subject = f"Chat handoff: {payload.get('flow') or 'a visitor'}" + (f" ({contact})" if contact else "")
        msg = EmailMessage()
        msg["Subject"] = " ".join(subject.split())[:150]  # one line: a slot value cannot add headers
        msg["From"], msg["To"] = self.sender, ", ".join(self.to)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(idstring=delivery, domain=self.sender.rsplit("@", 1)[1])  # no DNS lookup
        msg["X-Hybridbot-Delivery"] = delivery
        lines = ["A visitor asked for a person in the chat.", "",
                 f"Conversation: {payload.get('conversation_id')}", f"When: {payload.get('at')}",
                 f"Flow: {payload.get('flow')}"]
        lines += [f"  {name}: {value}" for name, value in slots.items()]
        lines += ["", "The conversation so far:"]
        for turn in payload.get("recent") or ():
            lines.append(_said("Visitor", turn.get("visitor", "")))
            lines += [_said("Bot", text) for text in turn.get("bot") or ()]
        lines += ["", "Every handoff is also listed at GET /admin/handoffs."]
        msg.set_content("\n".join(lines) + "\n")
        return msg


def _said(who: str, text: str) -> str:
    """One speaker's text, later lines indented, so a line break in it cannot pass for another speaker."""
    return f"{who}: " + "\n    ".join(str(text).splitlines() or [""])


def settings(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The handoff settings of ``env``, normalised: what ``channels_from`` reads, and a cache key."""
    to = ",".join(a.strip() for a in (env.get("BOT_HANDOFF_EMAIL") or "").split(",") if a.strip())
    return (("BOT_HANDOFF_WEBHOOK", (env.get("BOT_HANDOFF_WEBHOOK") or "").strip()),
            ("BOT_HANDOFF_WEBHOOK_SECRET", env.get("BOT_HANDOFF_WEBHOOK_SECRET") or ""),
            ("BOT_HANDOFF_EMAIL", to), ("BOT_SMTP_URL", (env.get("BOT_SMTP_URL") or "").strip()),
            ("BOT_HANDOFF_EMAIL_FROM", (env.get("BOT_HANDOFF_EMAIL_FROM") or "").strip()))


def channels_from(env: Mapping[str, str]) -> list[Channel]:
    """The channels the environment configures (none: handoffs are only recorded).

    Raises:
        ValueError: a setting is malformed; the message names the variable, never a secret.
    """
    values = dict(settings(env))
    found: list[Channel] = []
    if values["BOT_HANDOFF_WEBHOOK"]:
        found.append(WebhookChannel(values["BOT_HANDOFF_WEBHOOK"], values["BOT_HANDOFF_WEBHOOK_SECRET"]))
    if values["BOT_HANDOFF_EMAIL"]:
        found.append(EmailChannel(values["BOT_SMTP_URL"] or "smtp://localhost", values["BOT_HANDOFF_EMAIL"].split(","),
                                  values["BOT_HANDOFF_EMAIL_FROM"]))
    return found
