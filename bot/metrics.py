"""Prometheus metrics (prefix ``bot_``) for turns, the LLM, feedback and HTTP, and JSON log lines."""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Collection, TextIO

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess, values

from .errors import LLM_ERROR_KINDS

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

ROUTE_KINDS = ("rule", "classifier", "flow", "ambiguous", "fallback", "command")
MAX_INTENT_LABELS = 500  # a hard stop on label cardinality, whatever callers pass
INTENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
LLM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
TEXT_FIELDS = ("text", "text_in", "reply", "replies", "message")  # dropped from logs unless BOT_LOG_TEXT=1


def multiprocess_mode() -> bool:
    """True when prometheus_client writes values to ``PROMETHEUS_MULTIPROC_DIR`` (decided at its import)."""
    return values.ValueClass is not values.MutexValue


def _field(turn: Any, name: str, default: Any = None) -> Any:
    if isinstance(turn, Mapping):
        return turn.get(name, default)
    return getattr(turn, name, default)


class Metrics:
    """The bot's Prometheus metrics, in their own registry.

    Under several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (``deploy/gunicorn.conf.py``
    does): every process then writes its values to files there and :meth:`render` sums them,
    so any worker's ``/metrics`` shows the whole instance.

    Example::

        metrics = Metrics()
        metrics.observe_turn(bot.handle(None, "hi"))
        body, content_type = metrics.render()
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_mode()
        self._intents: set[str] = set()
        self._intents_lock = threading.Lock()
        r = self.registry
        self.turns = Counter("bot_turns", "Turns answered, by route kind and intent.", ["kind", "intent"], registry=r)
        self.fallbacks = Counter("bot_fallback", "Turns no intent matched (the LLM fallback or its scripted text).",
                                 registry=r)
        self.turn_duration = Histogram("bot_turn_duration_seconds", "Time to answer a turn, LLM streaming included.",
                                       buckets=TURN_BUCKETS, registry=r)
        self.incomplete = Counter("bot_incomplete_turns", "Turns whose reply was cut short (disconnect, broken "
                                                          "LLM stream).", registry=r)
        self.llm_duration = Histogram("bot_llm_request_duration_seconds", "Duration of LLM requests that answered.",
                                      buckets=LLM_BUCKETS, registry=r)
        self.llm_ttft = Histogram("bot_llm_time_to_first_token_seconds", "Time from the LLM request to its first "
                                                                          "text.", buckets=TTFT_BUCKETS, registry=r)
        self.llm_tokens = Counter("bot_llm_tokens", "LLM tokens used, by type (prompt or completion).", ["type"],
                                  registry=r)
        self.llm_errors = Counter("bot_llm_errors", "LLM requests that failed, by error kind.", ["kind"], registry=r)
        self.handler_errors = Counter("bot_handler_errors", "Turns where an action handler failed.", registry=r)
        self.feedback = Counter("bot_feedback", "Thumbs up/down votes on replies.", ["rating"], registry=r)
        self.handoffs = Counter("bot_handoffs", "Conversations handed to a person (handoff steps).", registry=r)
        self.handoff_notifications = Counter("bot_handoff_notifications", "Handoff events sent, by channel "
                                             "(webhook, email) and outcome (delivered, or failed after every try).",
                                             ["channel", "outcome"], registry=r)
        self.http_duration = Histogram("bot_http_request_duration_seconds", "HTTP requests by route template, "
                                       "method and status (streams: until the last byte).",
                                       ["endpoint", "method", "status"], buckets=HTTP_BUCKETS, registry=r)
        self.active_streams = Gauge("bot_active_streams", "SSE replies being streamed right now.", registry=r,
                                    multiprocess_mode="livesum")

    # -- turns ------------------------------------------------------------------------------------
    def intent_label(self, intent: Any, kind: str, known: Collection[str] | None = None) -> str:
        """A bounded label for ``intent``: its name if it is one of ``known`` (or a built-in command),
        ``none`` without an intent, ``other`` for anything else."""
        if not intent:
            return "none"
        if not isinstance(intent, str) or not INTENT_NAME.fullmatch(intent):
            return "other"
        if known is not None and intent not in known and kind != "command":
            return "other"
        with self._intents_lock:
            if intent not in self._intents:
                if len(self._intents) >= MAX_INTENT_LABELS:
                    return "other"
                self._intents.add(intent)
        return intent

    def observe_turn(self, turn: Any, known_intents: Collection[str] | None = None) -> None:
        """Count one recorded turn: a ``bot.app.Turn`` or a transcript dict (see docs/monitoring.md).

        Args:
            turn: the turn; ``kind``, ``intent``, ``latency_ms``, ``llm``, ``error``, ``incomplete``
                are read.
            known_intents: the bot's intent names (``bot.config.intents.intents``); other names
                are counted as ``other``.
        """
        kind = _field(turn, "kind") or "fallback"
        kind = kind if kind in ROUTE_KINDS else "other"
        self.turns.labels(kind=kind, intent=self.intent_label(_field(turn, "intent"), kind, known_intents)).inc()
        if kind == "fallback":
            self.fallbacks.inc()
        latency_ms = _field(turn, "latency_ms")
        if isinstance(latency_ms, (int, float)) and latency_ms >= 0:
            self.turn_duration.observe(latency_ms / 1000.0)
        if _field(turn, "incomplete"):
            self.incomplete.inc()
        if _field(turn, "error") == "action":
            self.handler_errors.inc()
        if _field(turn, "handoff"):
            self.handoffs.inc()
        llm = _field(turn, "llm")
        if isinstance(llm, Mapping):
            self._observe_llm(llm)

    def _observe_llm(self, llm: Mapping[str, Any]) -> None:
        error = llm.get("error")
        if error:
            self.llm_errors.labels(kind=error if error in LLM_ERROR_KINDS else "other").inc()
        for name, metric in (("latency_s", self.llm_duration), ("first_token_s", self.llm_ttft)):
            seconds = llm.get(name)
            if isinstance(seconds, (int, float)) and seconds >= 0:
                metric.observe(seconds)
        for kind in ("prompt", "completion"):
            tokens = llm.get(f"{kind}_tokens")
            if isinstance(tokens, int) and tokens > 0:
                self.llm_tokens.labels(type=kind).inc(tokens)

    def observe_feedback(self, rating: str) -> None:
        """Count a thumbs vote (``up`` or ``down``; anything else is ``other``)."""
        self.feedback.labels(rating=rating if rating in ("up", "down") else "other").inc()

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.http_duration.labels(endpoint=endpoint, method=method, status=str(status)).observe(seconds)

    # -- exposition -------------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type; in multiprocess mode, all processes summed."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@functools.lru_cache(maxsize=None)
def default_metrics() -> Metrics:
    """The process's metrics: Prometheus counts per process, so there is one set per process."""
    return Metrics()


def observe_turn(turn: Any, known_intents: Collection[str] | None = None) -> None:
    """Count a recorded turn in the process's metrics (see :meth:`Metrics.observe_turn`)."""
    default_metrics().observe_turn(turn, known_intents)


def observe_feedback(rating: str) -> None:
    """Count a thumbs vote in the process's metrics."""
    default_metrics().observe_feedback(rating)


def observe_handoff_delivery(channel: str, outcome: str) -> None:
    """Count one handoff event sent by ``channel``: ``delivered``, ``failed`` (refused, or given up), or
    ``deferred`` (every try failed; the spool tries again later)."""
    default_metrics().handoff_notifications.labels(
        channel=channel, outcome=outcome if outcome in ("delivered", "failed", "deferred") else "other").inc()


def init_app(app: "Flask", metrics: Metrics | None = None) -> Metrics:
    """Add ``GET /metrics``, time every request, track open SSE streams and count feedback votes.

    ``create_app`` calls this. Feedback is counted here (from successful ``POST
    /api/feedback``); turns are counted where they are recorded (``observe_turn``).
    """
    from flask import Response, g, request

    metrics = metrics if metrics is not None else default_metrics()
    app.extensions["hybridbot_metrics"] = metrics

    @app.before_request
    def _start_timer() -> None:
        g.hybridbot_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        if request.endpoint == "metrics":
            return response
        started = g.get("hybridbot_started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method, status = request.method, response.status_code
        streaming = response.mimetype == "text/event-stream" and response.is_streamed
        if streaming:
            metrics.active_streams.inc()

        def finished() -> None:
            if streaming:
                metrics.active_streams.dec()
            metrics.observe_request(endpoint, method, status, time.perf_counter() - started)

        response.call_on_close(finished)
        if request.endpoint == "feedback" and status == 200:
            body = request.get_json(silent=True)
            if isinstance(body, dict):
                metrics.observe_feedback(str(body.get("rating")))
        return response

    def metrics_view() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    return metrics


register_metrics = init_app


# -- JSON logging ---------------------------------------------------------------------------------
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime",
                                                                                       "taskName"}
_ACCESS_FIELDS = {"h": "remote_addr", "m": "method", "U": "path", "q": "query", "s": "status", "B": "bytes",
                  "M": "duration_ms", "a": "user_agent", "f": "referer", "{x-forwarded-for}i": "forwarded_for"}


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` and the record's extras.

    Extras named like message text (``text``, ``text_in``, ``reply``, ``replies``, ``message``)
    are dropped unless ``log_text`` (default: ``BOT_LOG_TEXT=1``). gunicorn's access records
    become structured fields (``method``, ``path``, ``status``, ``duration_ms``...).
    """

    def __init__(self, log_text: bool | None = None) -> None:
        super().__init__()
        self.log_text = _truthy(os.environ.get("BOT_LOG_TEXT")) if log_text is None else log_text

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name}
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            out["message"] = "request"
            for atom, name in _ACCESS_FIELDS.items():
                value = record.args.get(atom)
                if value in (None, "-", ""):
                    continue
                if isinstance(value, str):
                    value = int(value) if name == "status" and value.isdigit() else value.replace('\\"', '"')
                out[name] = value
        else:
            out["message"] = record.getMessage()
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS or key.startswith("_") or key in out:
                continue
            if key in TEXT_FIELDS and not self.log_text:
                continue
            out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str, separators=(",", ":"))


def configure_logging(level: str | int = "INFO", json: bool = True, stream: TextIO | None = None,
                      log_text: bool | None = None) -> logging.Handler:
    """Send all logs to ``stream`` (default stderr), as JSON lines or plain text.

    Replaces the handler an earlier call installed; returns the new one. ``bot.turn`` logs one
    line per turn at INFO, so use ``level="INFO"`` (or lower) to keep them.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_hybridbot", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(log_text) if json else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._hybridbot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
