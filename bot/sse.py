"""Server-sent events for /api/chat/stream: run Bot.stream in a worker thread, frame events, ping."""
from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any, Iterator

from .web_security import error_payload

log = logging.getLogger(__name__)

PING = ": ping\n\n"
_END = ("end", None)


def frame(event: str, data: Any) -> str:
    """One SSE event: ``event: NAME`` and one ``data:`` line of compact JSON."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {payload}\n\n"


class EventPump:
    """Drives ``bot.stream(...)`` in a daemon thread and hands its events over a queue.

    The response can then send a heartbeat comment every ``heartbeat`` seconds while the
    engine waits (for the LLM's first token, say). When the client goes away the response
    generator is closed; the worker notices after the engine's next event and closes the
    engine's generator, which records the partial turn as incomplete.

    Example::

        pump = EventPump(bot.stream(cid, text), heartbeat=15)
        first = pump.first()           # raises what the engine raised before its first event
        return Response(pump.sse(first), mimetype="text/event-stream")
    """

    def __init__(self, events: Iterator[tuple[str, Any]], heartbeat: float) -> None:
        self.heartbeat = heartbeat
        self._events = events
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hybridbot-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for name, data in self._events:
                if name != "turn":  # the Turn object is for Python callers, not the wire
                    self._queue.put((name, data))
                if self._stop.is_set():
                    break
        except BaseException as exc:  # handed to the response, which logs and reports it
            self._queue.put(("exception", exc))
        finally:
            try:
                close = getattr(self._events, "close", None)
                if close is not None:
                    close()  # after a disconnect: GeneratorExit inside the engine records the partial turn
            except Exception:
                log.exception("closing an interrupted stream failed")
            self._queue.put(_END)

    def first(self) -> tuple[str, Any]:
        """The first event; re-raises an exception the engine raised before it."""
        item = self._queue.get()
        if item[0] == "exception":
            raise item[1]
        if item is _END:
            raise RuntimeError("the bot's stream ended without any event")
        return item

    def stop(self) -> None:
        """Ask the worker to close the engine's stream after its next event."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def sse(self, first: tuple[str, Any]) -> Iterator[str]:
        """The response body: the events as SSE frames, ``: ping`` while waiting, ``error`` on failure."""
        try:
            yield frame(*first)
            while True:
                try:
                    item = self._queue.get(timeout=self.heartbeat)
                except queue.Empty:
                    yield PING
                    continue
                if item is _END:
                    return
                name, data = item
                if name == "exception":
                    _, code, message = error_payload(data)
                    yield frame("error", {"code": code, "message": message})
                    return
                yield frame(name, data)
        finally:  # also when the server closes the body because the client went away
            self.stop()
