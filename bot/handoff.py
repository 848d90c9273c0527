"""Handing a conversation to a person: the event a ``handoff`` step makes, and its delivery.

A ``handoff`` step records ``handoff`` on its turn (flow and slots at that moment), so the
transcript and ``GET /admin/handoffs`` always show it. The environment may name channels
(``bot/handoff_channels.py``): ``BOT_HANDOFF_WEBHOOK`` (JSON POST, signed with
``BOT_HANDOFF_WEBHOOK_SECRET``, as GitHub signs its webhooks) and ``BOT_HANDOFF_EMAIL``
(through ``BOT_SMTP_URL``). Each handoff goes to each channel from a background thread, after
the turn is saved and without delaying the visitor's reply.

Delivery is at least once per process lifetime and per channel: up to ``ATTEMPTS`` tries,
again only where it can help (webhook: 5xx, 408, 429, network; e-mail: 4xx, network), never
after a refusal (another 4xx or a redirect, which is not followed: a POST redirected becomes a
GET without its body; an SMTP 5xx). Events go one at a time. Every try of one event carries the
same delivery id (``X-Hybridbot-Delivery``), so a receiver can drop repeats.
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Callable

from .handoff_channels import Channel, channels_from, settings

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF = (1.0, 5.0, 25.0)   # seconds before the 2nd, 3rd and 4th try
QUEUE_SIZE = 1000            # handoffs waiting for delivery; more are dropped (and logged)
RECENT_TURNS = 10            # turns of the conversation sent with the event
EXIT_WAIT = 5.0              # seconds a stopping process waits for events still queued


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


class Notifier:
    """Sends handoff events to its channels, each from its own daemon thread (a mail server that
    is down does not hold up the webhook); see the module docstring.

    Args:
        channels: where events go (``handoff_channels.channels_from(env)``).
        on_result: called with (channel name, ``"delivered"`` or ``"failed"``) per event (metrics).
        sleep: waits between tries (tests pass a fake).
    """

    def __init__(self, channels: list[Channel], *, on_result: Callable[[str, str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.channels = channels
        self.on_result = on_result or (lambda channel, outcome: None)
        self.sleep = sleep
        self._queues = {channel.name: queue.Queue(QUEUE_SIZE) for channel in channels}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Queue one event for every channel; returns at once. A full queue drops it (logged)."""
        delivery = str(uuid.uuid4())
        for channel in self.channels:
            try:
                self._queues[channel.name].put_nowait((delivery, payload))
            except queue.Full:
                log.error("handoff of conversation %s not sent by %s: %d handoffs already wait",
                          payload.get("conversation_id"), channel.name, QUEUE_SIZE)
                self.on_result(channel.name, "failed")
                continue
            with self._lock:
                thread = self._threads.get(channel.name)
                if thread is None or not thread.is_alive():
                    thread = threading.Thread(target=self._run, args=(channel,), daemon=True,
                                              name=f"hybridbot-handoff-{channel.name}")
                    self._threads[channel.name] = thread
                    thread.start()

    def pending(self) -> int:
        return sum(q.unfinished_tasks for q in self._queues.values())

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every queued event was delivered or given up (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def drain(self) -> None:
        """At process exit (a worker restart): give queued events EXIT_WAIT seconds, then say what is left."""
        if not self.wait_idle(EXIT_WAIT):
            log.error("%d handoff notification(s) not sent before this process stopped; GET /admin/handoffs "
                      "lists them", self.pending())

    def _run(self, channel: Channel) -> None:
        lane = self._queues[channel.name]
        while True:
            delivery, payload = lane.get()
            try:
                outcome = "delivered" if self._deliver(channel, delivery, payload) else "failed"
            except Exception:  # never let one bad event stop the thread
                log.exception("handoff of conversation %s: delivery by %s crashed", payload.get("conversation_id"),
                              channel.name)
                outcome = "failed"
            finally:
                lane.task_done()
            self.on_result(channel.name, outcome)

    def _deliver(self, channel: Channel, delivery: str, payload: Mapping[str, Any]) -> bool:
        cid = payload.get("conversation_id")
        for attempt in range(ATTEMPTS):
            if attempt:
                self.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
            problem = channel.send(payload, delivery)
            if problem is None:
                log.info("handoff of conversation %s delivered by %s to %s", cid, channel.name, channel.where)
                return True
            log.warning("handoff of conversation %s: %s try %d of %d to %s failed: %s", cid, channel.name,
                        attempt + 1, ATTEMPTS, channel.where, problem)
            if not channel.retry(problem):
                break
        log.error("handoff of conversation %s was not delivered by %s to %s; it is listed at GET /admin/handoffs",
                  cid, channel.name, channel.where)
        return False


_NOTIFIERS: dict[tuple[tuple[str, str], ...], Notifier] = {}
_NOTIFIERS_LOCK = threading.Lock()


def notifier_for(env: Mapping[str, str]) -> Notifier | None:
    """The process's notifier for the channels ``env`` configures (shared by the bots a reload
    makes, so queued events survive it), or None without any.

    Raises:
        ValueError: a channel setting is malformed (the message names the variable).
    """
    key = settings(env)
    with _NOTIFIERS_LOCK:
        if key not in _NOTIFIERS:
            channels = channels_from(dict(key))
            if not channels:
                return None
            from .metrics import observe_handoff_delivery

            notifier = _NOTIFIERS[key] = Notifier(channels, on_result=observe_handoff_delivery)
            atexit.register(notifier.drain)
        return _NOTIFIERS[key]
