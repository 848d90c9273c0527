"""Handing a conversation to a person: the event a ``handoff`` step makes, and its webhook.

A ``handoff`` step records ``handoff`` on its turn (flow and slots at that moment), so the
transcript and ``GET /admin/handoffs`` always show it. With ``BOT_HANDOFF_WEBHOOK`` set, each
handoff is also POSTed there as JSON by a background thread, after the turn is saved and
without delaying the visitor's reply: a helpdesk, a chat channel or a CRM creates the ticket.

Delivery is at least once per process lifetime: up to ``ATTEMPTS`` tries, again after 5xx, 408,
429, timeouts and broken connections, never after another 4xx (the receiver rejects the
payload; trying again would not change that) nor a redirect (not followed: a POST redirected
becomes a GET without its body; configure the final URL). Events go one at a time. Every try of
one event carries the same ``X-Hybridbot-Delivery`` id, so a receiver can drop repeats. Logs
name the webhook by scheme and host only: an incoming-webhook URL often holds its secret in
the path. With
``BOT_HANDOFF_WEBHOOK_SECRET`` the body is signed: ``X-Hybridbot-Signature: sha256=<hex>``,
HMAC-SHA256 of the exact body bytes with the secret, as GitHub signs its webhooks.
"""
from __future__ import annotations

import atexit
import hashlib
import hmac
import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF = (1.0, 5.0, 25.0)   # seconds before the 2nd, 3rd and 4th try
TIMEOUT = 5.0                # seconds per try
QUEUE_SIZE = 1000            # handoffs waiting for delivery; more are dropped (and logged)
RECENT_TURNS = 10            # turns of the conversation sent with the event
EXIT_WAIT = 5.0              # seconds a stopping process waits for events still queued
RETRIED = ("HTTP 408", "HTTP 429", "HTTP 5")  # answers worth another try; other HTTP answers are final


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


def where(url: str) -> str:
    """The webhook as logs may show it: scheme and host, no path or query (they can hold secrets)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


def event(conversation_id: str, record: Mapping[str, Any], handoff: Mapping[str, Any],
          history: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The webhook's JSON body for the handoff made by the turn ``record`` (as stored).

    ``history`` is the conversation's stored turns before this one; the last RECENT_TURNS - 1
    of them and this turn go in ``recent``, each with the visitor's text and the bot's replies.
    """
    turns = [*history[-(RECENT_TURNS - 1):], record] if RECENT_TURNS > 1 else [record]
    return {"event": "handoff", "conversation_id": conversation_id, "turn_id": record.get("turn_id"),
            "at": datetime.fromtimestamp(float(record.get("created_at") or time.time()), timezone.utc).isoformat(),
            "flow": handoff.get("flow"), "slots": dict(handoff.get("slots") or {}),
            "recent": [{"visitor": t.get("text_in", ""),
                        "bot": [r.get("text", "") for r in t.get("replies") or () if r.get("text")]} for t in turns]}


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """POSTs handoff events to one URL from a daemon thread; see the module docstring.

    Args:
        url: the webhook (http or https).
        secret: signs each body when given.
        on_result: called with ``"delivered"`` or ``"failed"`` per event (metrics).
        sleep: waits between tries (tests pass a fake).
    """

    def __init__(self, url: str, secret: str = "", *, on_result: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"BOT_HANDOFF_WEBHOOK must be an http(s) URL, got {url!r}")
        self.url, self.secret = url, secret
        self.where = where(url)
        self.on_result = on_result or (lambda outcome: None)
        self.sleep = sleep
        self._queue: queue.Queue[tuple[str, bytes, str]] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Queue one event; returns at once. A full queue drops it with an error in the log."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        cid = str(payload.get("conversation_id", ""))
        try:
            self._queue.put_nowait((str(uuid.uuid4()), body, cid))
        except queue.Full:
            log.error("handoff of conversation %s not sent: %d handoffs already wait for %s", cid, QUEUE_SIZE,
                      self.where)
            self.on_result("failed")
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hybridbot-handoff", daemon=True)
                self._thread.start()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every queued event was delivered or given up (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def drain(self) -> None:
        """At process exit (a worker restart): give queued events EXIT_WAIT seconds, then say what is left."""
        if not self.wait_idle(EXIT_WAIT):
            log.error("%d handoff event(s) not sent to %s before this process stopped; GET /admin/handoffs lists "
                      "them", self._queue.unfinished_tasks, self.where)

    def _run(self) -> None:
        while True:
            delivery, body, cid = self._queue.get()
            try:
                self.on_result("delivered" if self._deliver(delivery, body, cid) else "failed")
            except Exception:  # never let one bad event stop the thread
                log.exception("handoff of conversation %s: delivery crashed", cid)
                self.on_result("failed")
            finally:
                self._queue.task_done()

    def _deliver(self, delivery: str, body: bytes, cid: str) -> bool:
        headers = {"Content-Type": "application/json", "User-Agent": "hybridbot-handoff/1",
                   "X-Hybridbot-Event": "handoff", "X-Hybridbot-Delivery": delivery}
        if self.secret:
            headers["X-Hybridbot-Signature"] = signature(self.secret, body)
        for attempt in range(ATTEMPTS):
            if attempt:
                self.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
            problem = self._post(body, headers)
            if problem is None:
                log.info("handoff of conversation %s delivered to %s", cid, self.where)
                return True
            final = problem.startswith("HTTP ") and not problem.startswith(RETRIED)
            if problem.startswith("HTTP 3"):
                problem += " (redirects are not followed: set BOT_HANDOFF_WEBHOOK to the final URL)"
            log.warning("handoff of conversation %s: try %d of %d to %s failed: %s", cid, attempt + 1, ATTEMPTS,
                        self.where, problem)
            if final:
                break
        log.error("handoff of conversation %s was not delivered to %s; it is listed at GET /admin/handoffs",
                  cid, self.where)
        return False

    def _post(self, body: bytes, headers: dict[str, str]) -> str | None:
        """None on a 2xx answer, else what went wrong."""
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=TIMEOUT) as response:
                response.read(65536)
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


_NOTIFIERS: dict[tuple[str, str], Notifier] = {}
_NOTIFIERS_LOCK = threading.Lock()


def notifier_for(env: Mapping[str, str]) -> Notifier | None:
    """The process's notifier for ``BOT_HANDOFF_WEBHOOK`` (shared by the bots a reload makes), or None."""
    url = (env.get("BOT_HANDOFF_WEBHOOK") or "").strip()
    if not url:
        return None
    key = (url, env.get("BOT_HANDOFF_WEBHOOK_SECRET") or "")
    with _NOTIFIERS_LOCK:
        if key not in _NOTIFIERS:
            from .metrics import observe_handoff_delivery

            notifier = _NOTIFIERS[key] = Notifier(url, key[1], on_result=observe_handoff_delivery)
            atexit.register(notifier.drain)
        return _NOTIFIERS[key]
