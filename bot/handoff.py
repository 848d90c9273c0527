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

With a spool (``bot/handoff_spool.py``; ``BOT_HANDOFF_SPOOL``, by default ``<bot>/var/handoffs``)
every event is on disk before it is queued: events of a worker that stopped are sent by the
next process to sweep, and an event whose tries all failed is tried again every
``RETRY_AFTER`` seconds for up to a day, with the same delivery id.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .handoff_channels import Channel, channels_from, settings
from .handoff_spool import RETRY_AFTER, SWEEP_SECONDS, Held, Spool

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF = (1.0, 5.0, 25.0)   # seconds before the 2nd, 3rd and 4th try
QUEUE_SIZE = 1000            # handoffs waiting for delivery; more are dropped (and logged)
HELD = 100                   # with a spool, events queued per channel (each holds a file); more wait on disk
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
                 sleep: Callable[[float], None] = time.sleep, spool: Spool | None = None,
                 sweep_every: float = SWEEP_SECONDS) -> None:
        self.channels = channels
        self.on_result = on_result or (lambda channel, outcome: None)
        self.sleep = sleep
        self.spool = spool
        self._sweep_every = sweep_every
        self._fresh_state()
        self._ensure_sweeper()  # at start: a stopped worker's events; then every sweep_every seconds
        this = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (method := this()) is not None and method())

    def _fresh_state(self) -> None:
        size = HELD if self.spool is not None else QUEUE_SIZE
        self._queues: dict[str, queue.Queue[tuple[str, Mapping[str, Any], Held | None]]] = {
            channel.name: queue.Queue(size) for channel in self.channels}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._sending: dict[str, Held] = {}  # per channel: the event its thread works on

    def _after_fork(self) -> None:
        """In a forked child (gunicorn --preload): the parent's queued and in-flight events stay the
        parent's. The child closes its copies of their files (the parent keeps the locks), and starts
        afresh: no threads were copied, and a lock copied while held would never be released."""
        if self.spool is not None:
            for lane in self._queues.values():
                for _, _, held in list(lane.queue):
                    if held is not None:
                        os.close(held.fd)
            for held in list(self._sending.values()):
                os.close(held.fd)
        self._fresh_state()

    def _ensure_sweeper(self) -> None:
        """Start the sweeper thread if there is a spool and it is not running (a fork does not copy threads)."""
        if self.spool is None or self._stopped.is_set() or (self._sweeper is not None and self._sweeper.is_alive()):
            return
        self._sweeper = threading.Thread(target=self._sweep_forever, args=(self._sweep_every,), daemon=True,
                                         name="hybridbot-handoff-sweep")
        self._sweeper.start()

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Queue one event for every channel (on disk first, with a spool); returns at once."""
        delivery = str(uuid.uuid4())
        with self._lock:
            self._ensure_sweeper()
        for channel in self.channels:
            held = None
            if self.spool is not None:
                try:
                    held = self.spool.add(channel.name, delivery, payload)
                except OSError as exc:
                    log.error("handoff spool %s cannot take an event (%s); sending it from memory only",
                              self.spool.directory, exc)
            self._enqueue(channel, delivery, payload, held)

    def _enqueue(self, channel: Channel, delivery: str, payload: Mapping[str, Any], held: Held | None) -> bool:
        with self._lock:  # the thread first: a full queue must have someone emptying it
            thread = self._threads.get(channel.name)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._run, args=(channel,), daemon=True,
                                          name=f"hybridbot-handoff-{channel.name}")
                self._threads[channel.name] = thread
                thread.start()
        try:
            self._queues[channel.name].put_nowait((delivery, payload, held))
        except queue.Full:
            if held is not None:
                Spool.release(held)  # a later sweep sends it
                log.warning("handoff of conversation %s waits in the spool: %d events are queued for %s",
                            payload.get("conversation_id"), HELD, channel.name)
            else:
                log.error("handoff of conversation %s not sent by %s: %d handoffs already wait",
                          payload.get("conversation_id"), channel.name, QUEUE_SIZE)
                self.on_result(channel.name, "failed")
            return False
        return True

    def sweep(self) -> int:
        """Queue the spool's due events that no process holds; returns how many."""
        if self.spool is None:
            return 0
        taken = 0
        for channel in self.channels:
            room = HELD - self._queues[channel.name].qsize()

            def given_up(_: Held, name: str = channel.name) -> None:  # an event a day old
                self.on_result(name, "failed")

            try:
                for held in self.spool.due(channel.name, limit=max(room, 0), expired=given_up):
                    taken += self._enqueue(channel, held.delivery, held.payload, held)
            except OSError as exc:
                log.error("cannot read the handoff spool %s: %s", self.spool.directory, exc)
        return taken

    def _sweep_forever(self, every: float) -> None:
        stopped = self._stopped
        while not stopped.is_set():
            try:
                self.sweep()
            except Exception:  # the sweeper must outlive any one bad sweep
                log.exception("sweeping the handoff spool failed")
            stopped.wait(every)

    def stop_sweeping(self) -> None:
        """End the sweeper thread (tests; a process's notifier sweeps until it exits)."""
        self._stopped.set()

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
        self.stop_sweeping()
        if self.wait_idle(EXIT_WAIT):
            return
        if self.spool is not None:
            log.warning("%d handoff notification(s) wait in the spool %s; the next process to sweep it sends them",
                        self.pending(), self.spool.directory)
        else:
            log.error("%d handoff notification(s) not sent before this process stopped; GET /admin/handoffs "
                      "lists them", self.pending())

    def _run(self, channel: Channel) -> None:
        lane = self._queues[channel.name]
        while True:
            delivery, payload, held = lane.get()
            if held is not None:
                self._sending[channel.name] = held
            try:
                try:
                    outcome = self._deliver(channel, delivery, payload, kept=held is not None)
                except Exception:  # never let one bad event stop the thread
                    log.exception("handoff of conversation %s: delivery by %s crashed",
                                  payload.get("conversation_id"), channel.name)
                    outcome = "failed"
                if held is None and outcome == "deferred":
                    outcome = "failed"
                elif held is not None:
                    outcome = self._settle(held, outcome, payload)
            finally:
                self._sending.pop(channel.name, None)
                lane.task_done()
            try:
                self.on_result(channel.name, outcome)
            except Exception:
                log.exception("counting a handoff outcome failed")

    @staticmethod
    def _settle(held: Held, outcome: str, payload: Mapping[str, Any]) -> str:
        """Remove the event's file, or keep it for a later round; the outcome to count."""
        try:
            if outcome == "deferred":
                Spool.release(held, time.time() + RETRY_AFTER)
            else:
                Spool.finish(held)
            return outcome
        except OSError as exc:
            if outcome != "deferred":
                log.error("handoff spool file %s could not be removed (%s); it may be sent again", held.path, exc)
                return outcome
            log.error("handoff of conversation %s is lost: the spool cannot keep it for later (%s)",
                      payload.get("conversation_id"), exc)
            return "failed"

    def _deliver(self, channel: Channel, delivery: str, payload: Mapping[str, Any], *, kept: bool) -> str:
        """``delivered``, ``failed`` (refused: never tried again) or ``deferred`` (every try failed in a
        way that may pass)."""
        cid = payload.get("conversation_id")
        for attempt in range(ATTEMPTS):
            if attempt:
                self.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
            problem = channel.send(payload, delivery)
            if problem is None:
                log.info("handoff of conversation %s delivered by %s to %s", cid, channel.name, channel.where)
                return "delivered"
            log.warning("handoff of conversation %s: %s try %d of %d to %s failed: %s", cid, channel.name,
                        attempt + 1, ATTEMPTS, channel.where, problem)
            if not channel.retry(problem):
                log.error("handoff of conversation %s was refused by %s at %s; it is listed at GET /admin/handoffs",
                          cid, channel.name, channel.where)
                return "failed"
        if kept:
            log.error("handoff of conversation %s not yet delivered by %s to %s; trying again in %.0f minutes",
                      cid, channel.name, channel.where, RETRY_AFTER / 60)
        else:
            log.error("handoff of conversation %s was not delivered by %s to %s; it is listed at GET /admin/handoffs",
                      cid, channel.name, channel.where)
        return "deferred"


_NOTIFIERS: dict[tuple[tuple[str, str], ...], Notifier] = {}
_NOTIFIERS_LOCK = threading.Lock()


def notifier_for(env: Mapping[str, str], spool_dir: Path | None = None) -> Notifier | None:
    """The process's notifier for the channels ``env`` configures (shared by the bots a reload
    makes, so queued events survive it), or None without any.

    ``BOT_HANDOFF_SPOOL`` names the spool directory, else ``spool_dir`` (``Bot.load`` gives
    ``<bot>/var/handoffs``); without either, events live in memory only. A spool that cannot be
    made is logged, and events then live in memory only.

    Raises:
        ValueError: a channel setting is malformed (the message names the variable).
    """
    spool_path = Path(env["BOT_HANDOFF_SPOOL"]) if env.get("BOT_HANDOFF_SPOOL") else spool_dir
    key = (*settings(env), ("spool", str(spool_path or "")))
    with _NOTIFIERS_LOCK:
        if key not in _NOTIFIERS:
            channels = channels_from(dict(key))
            if not channels:
                return None
            from .metrics import observe_handoff_delivery

            spool = None
            if spool_path is not None:
                try:
                    spool = Spool(spool_path)
                except OSError as exc:
                    log.error("cannot use %s as the handoff spool (%s); handoff notifications live in memory "
                              "only (set BOT_HANDOFF_SPOOL to a writable directory)", spool_path, exc)
            notifier = _NOTIFIERS[key] = Notifier(channels, on_result=observe_handoff_delivery, spool=spool)
            atexit.register(notifier.drain)
        return _NOTIFIERS[key]
