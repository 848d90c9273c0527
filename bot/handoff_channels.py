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
import smtplib
import socket
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
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"BOT_HANDOFF_WEBHOOK must be an http(s) URL, got {url!r}")
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

    ``smtp://host[:25]`` (no TLS: a relay on the same machine or network),
    ``smtp+starttls://user:password@host[:587]`` or ``smtps://user:password@host[:465]``; the
    user and password are URL-encoded.
    """

    name = "email"

    def __init__(self, smtp_url: str, to: list[str], sender: str = "") -> None:
        parts = urlsplit(smtp_url)
        if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
            raise ValueError(f"BOT_SMTP_URL must look like smtp://host, smtp+starttls://user:password@host or "
                             f"smtps://user:password@host, got {where(smtp_url)!r}")
        if not to or any("@" not in a or any(c in a for c in "\r\n,;<>") for a in to):
            raise ValueError(f"BOT_HANDOFF_EMAIL must be e-mail addresses separated by commas, got {to!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or SMTP_SCHEMES[parts.scheme]
        self.user, self.password = unquote(parts.username or ""), unquote(parts.password or "")
        self.to, self.sender = to, sender or f"hybridbot@{socket.getfqdn()}"
        self.where = where(smtp_url)

    def send(self, payload: Mapping[str, Any], delivery: str) -> str | None:
        try:
            message = self.message(payload, delivery)
            context = ssl.create_default_context()
            smtp_class = smtplib.SMTP_SSL if self.scheme == "smtps" else smtplib.SMTP
            kwargs: dict[str, Any] = {"context": context} if self.scheme == "smtps" else {}
            with smtp_class(self.host, self.port, timeout=TIMEOUT, **kwargs) as smtp:
                if self.scheme == "smtp+starttls":
                    smtp.starttls(context=context)
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(message)
            return None
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return f"SMTP {code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
        except smtplib.SMTPResponseException as exc:
            return f"SMTP {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
        except (smtplib.SMTPException, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    def retry(self, problem: str) -> bool:
        return not problem.startswith("SMTP ") or problem.startswith("SMTP 4")  # 5xx: refused for good

    def message(self, payload: Mapping[str, Any], delivery: str) -> EmailMessage:
        slots = {k: v for k, v in (payload.get("slots") or {}).items() if v is not None}
        contact = next((str(v) for k, v in slots.items() if "contact" in k or k in ("email", "phone")), "")
        subject = f"Chat handoff: {payload.get('flow') or 'a visitor'}" + (f" ({contact})" if contact else "")
        msg = EmailMessage()
        msg["Subject"] = " ".join(subject.split())[:150]  # one line: a slot value cannot add headers
        msg["From"], msg["To"] = self.sender, ", ".join(self.to)
        msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid(idstring=delivery)
        msg["X-Hybridbot-Delivery"] = delivery
        lines = ["A visitor asked for a person in the chat.", "",
                 f"Conversation: {payload.get('conversation_id')}", f"When: {payload.get('at')}",
                 f"Flow: {payload.get('flow')}"]
        lines += [f"  {name}: {value}" for name, value in slots.items()]
        lines += ["", "The conversation so far:"]
        for turn in payload.get("recent") or ():
            lines.append(f"Visitor: {turn.get('visitor', '')}")
            lines += [f"Bot: {text}" for text in turn.get("bot") or ()]
        lines += ["", "Every handoff is also listed at GET /admin/handoffs."]
        msg.set_content("\n".join(lines) + "\n")
        return msg


def channels_from(env: Mapping[str, str]) -> list[Channel]:
    """The channels the environment configures (none: handoffs are only recorded)."""
    found: list[Channel] = []
    url = (env.get("BOT_HANDOFF_WEBHOOK") or "").strip()
    if url:
        found.append(WebhookChannel(url, env.get("BOT_HANDOFF_WEBHOOK_SECRET") or ""))
    to = [a.strip() for a in (env.get("BOT_HANDOFF_EMAIL") or "").split(",") if a.strip()]
    if to:
        found.append(EmailChannel((env.get("BOT_SMTP_URL") or "smtp://localhost").strip(), to,
                                  (env.get("BOT_HANDOFF_EMAIL_FROM") or "").strip()))
    return found
