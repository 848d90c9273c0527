"""The LLM fallback client: the only module that imports openai (streaming, deadlines, errors, budgets)."""
from __future__ import annotations

import email.utils
import logging
import os
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

import httpx2
import openai

from .config import LLMSettings
from .errors import LLMError
from .llm_guards import CircuitBreaker
from .prompting import estimate_message_tokens, estimate_tokens, normalise, parse_choice, routing_messages

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx
MAX_BACKOFF_S = 2.0
INTENT_CACHE_SIZE = 1024


@dataclass(frozen=True)
class LLMUsage:
    """What one call cost and how it ended.

    ``error`` is an LLMError kind or None. ``incomplete`` means text had started and then the
    stream broke (``error`` says why) or was abandoned. ``estimated`` means the server sent
    no usage and the token counts come from :func:`bot.prompting.estimate_tokens`.
    """

    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    first_token_s: float | None
    finish_reason: str | None
    incomplete: bool
    error: str | None
    estimated: bool = False
    request_id: str | None = None
    retries: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LLMStream:
    """An iterable of text deltas; ``usage`` is set once iteration ends (however it ends).

    Iterating raises :class:`LLMError` if the call fails before any text arrived; a failure
    after that ends the iteration quietly with ``usage.incomplete`` set. A stream can be
    iterated once.
    """

    def __init__(self, produce: Callable[["LLMStream"], Iterator[str]]) -> None:
        self._produce = produce
        self._started = False
        self.usage: LLMUsage | None = None

    @classmethod
    def from_text(cls, chunks: Iterable[str], usage: LLMUsage) -> "LLMStream":
        """A stream that yields ``chunks`` then sets ``usage`` (for fakes such as FakeLLM)."""
        def produce(stream: LLMStream) -> Iterator[str]:
            yield from chunks
            stream.usage = usage
        return cls(produce)

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("an LLMStream can be iterated only once")
        self._started = True
        return self._produce(self)

    def text(self) -> str:
        """Consume the whole stream and return the joined text."""
        return "".join(self)


class LLMClient(Protocol):
    """What the dialogue engine needs from a language model (OpenAIChat, bot.testing.FakeLLM)."""

    available: bool
    model: str

    def stream(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None,
               deadline_s: float | None = None, first_token_s: float | None = None) -> LLMStream: ...

    def complete(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, LLMUsage]: ...

    def choose_intent(self, text: str, candidates: list[tuple[str, str]], *,
                      max_tokens: int = 20) -> str | None: ...


def _error_kind(status: int | None, body: Any) -> str:
    fields = body if isinstance(body, Mapping) else {}
    marker = f"{fields.get('code') or ''} {fields.get('type') or ''}".lower()
    if "content_filter" in marker or "content_policy" in marker:
        return "refused"
    if status is None:  # an error event in the middle of a stream
        status = 429 if "rate_limit" in marker else 400 if "invalid_request" in marker else 500
    by_status = {408: "timeout", 429: "rate_limit", 401: "unavailable", 403: "unavailable", 409: "unavailable"}
    return by_status.get(status, "unavailable" if status >= 500 else "bad_request")


def to_llm_error(exc: BaseException) -> LLMError:
    """Map an openai (or any) exception to an LLMError without the provider's text."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return LLMError("timeout", "the request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return LLMError("unavailable", "cannot connect to the model server")
    if isinstance(exc, openai.APIStatusError):
        return LLMError(_error_kind(exc.status_code, exc.body), f"HTTP {exc.status_code}",
                        status_code=exc.status_code, request_id=exc.request_id)
    if isinstance(exc, openai.APIError):
        return LLMError(_error_kind(None, exc.body), "error event in the stream")
    return LLMError("unavailable", f"unexpected {type(exc).__name__}")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, or ``retry-after`` as seconds or a date)."""
    ms, value = headers.get("retry-after-ms"), headers.get("retry-after") or ""
    try:
        return float(ms) / 1000 if ms else float(value) if value else None
    except ValueError:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None


def _should_retry(exc: openai.APIError) -> bool:
    if isinstance(exc, openai.APIStatusError):
        hint = exc.response.headers.get("x-should-retry")
        if hint in ("true", "false"):
            return hint == "true"
        return exc.status_code in RETRY_STATUSES or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)  # includes timeouts


class OpenAIChat:
    """The real :class:`LLMClient`: chat completions over the openai SDK.

    Every reply streams (``complete`` joins the stream). The SDK gets
    ``Timeout(total, connect=connect, read=first_token)`` and no retries of its own; this
    class retries ``settings.max_retries`` times before the first byte only, honouring
    ``Retry-After`` when it fits the deadline, and enforces its own first-token and total
    deadlines on a reader thread, so a stalled server never holds a visitor past them.

    Args:
        settings: the fallback's settings (model, temperature, timeouts, retries).
        api_key: overrides ``OPENAI_API_KEY``; with neither, ``available`` is False.
        base_url: overrides ``OPENAI_BASE_URL`` (any OpenAI-compatible server).
        http_client: an ``httpx2.Client`` to share, e.g. with a custom transport.
        env: where to read the variables (default ``os.environ``); ``OPENAI_MODEL`` overrides
            ``settings.model``.
        backoff_s: first retry delay when the server gives no ``Retry-After``.
        breaker: stops calling a failing provider (default: 5 failures in a row, 30 s; bot.llm_guards).
    """

    def __init__(self, settings: LLMSettings, *, api_key: str | None = None, base_url: str | None = None,
                 http_client: httpx2.Client | None = None, env: Mapping[str, str] = os.environ,
                 backoff_s: float = 0.5, breaker: CircuitBreaker | None = None) -> None:
        self.settings = settings
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.model = env.get("OPENAI_MODEL") or settings.model
        key = api_key if api_key is not None else env.get("OPENAI_API_KEY", "")
        self.base_url = (base_url or env.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self.available = bool(key and key.strip())
        self.backoff_s = backoff_s
        # OpenAI itself wants max_completion_tokens; compatible servers widely know only max_tokens.
        self._max_tokens_param = "max_completion_tokens" if "api.openai.com" in self.base_url else "max_tokens"
        self._client = (openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0,
                                      timeout=self._timeout(settings.timeout_total, settings.timeout_first_token),
                                      http_client=http_client)
                        if self.available else None)
        self._intents: OrderedDict[tuple[str, tuple[str, ...]], str | None] = OrderedDict()
        self._intents_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIChat(model={self.model!r}, base_url={self.base_url!r}, available={self.available})"

    def _timeout(self, total: float, first_token: float) -> httpx2.Timeout:
        return httpx2.Timeout(total, connect=min(self.settings.timeout_connect, total), read=first_token)

    def stream(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None,
               deadline_s: float | None = None, first_token_s: float | None = None,
               temperature: float | None = None) -> LLMStream:
        """Start a reply; iterate the result for text deltas (see :class:`LLMStream`).

        ``messages`` usually come from :func:`bot.prompting.build_messages`. ``max_tokens``,
        ``temperature``, ``deadline_s`` (the whole reply) and ``first_token_s`` (until the first
        text) default to the settings' ``max_tokens``, ``temperature``, ``timeout_total`` and
        ``timeout_first_token`` (a settings temperature of None sends none, whatever is passed here).

        Raises:
            LLMError: ``no_key`` at once when no API key is configured (no request is made).
        """
        if self._client is None:
            raise LLMError("no_key", "OPENAI_API_KEY is not set")
        s = self.settings
        total = deadline_s if deadline_s is not None else s.timeout_total
        first = min(first_token_s if first_token_s is not None else s.timeout_first_token, total)
        heat = temperature if temperature is not None and s.temperature is not None else s.temperature
        request = {"model": self.model, "messages": messages, "stream": True,
                   "stream_options": {"include_usage": True}, **({} if heat is None else {"temperature": heat}),
                   self._max_tokens_param: max_tokens or s.max_tokens,
                   "timeout": self._timeout(total, first)}
        return LLMStream(lambda stream: self._run(stream, request, total, first))

    def complete(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, LLMUsage]:
        """The whole reply at once: ``stream(messages, **kw)`` joined. Same errors as stream()."""
        stream = self.stream(messages, **kw)
        text = stream.text()
        assert stream.usage is not None
        return text, stream.usage

    def _run(self, stream: LLMStream, request: dict[str, Any], total: float, first: float) -> Iterator[str]:
        start = time.monotonic()
        hard, first_by = start + total, start + first
        events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        cancel = threading.Event()
        parts: list[str] = []
        first_at: float | None = None
        finish: str | None = None
        error: LLMError | None = None
        counted: tuple[int, int] | None = None
        request_id, retries = None, 0
        allowed = self.breaker.allow()
        if allowed:
            threading.Thread(target=self._produce, args=(request, events, cancel, min(hard, first_by)),
                             name="llm-stream", daemon=True).start()
        else:
            wait = self.breaker.retry_in()
            error = LLMError("unavailable", f"circuit open after repeated failures, next try in {wait:.0f} s")
        try:
            while error is None:
                limit = hard if first_at is not None else min(hard, first_by)
                try:
                    event = events.get(timeout=max(limit - time.monotonic(), 0.0))
                except queue.Empty:
                    waited = "the first token" if first_at is None else "the end of the reply"
                    error = LLMError("timeout", f"no {waited} within {limit - start:.1f} s")
                    break
                tag = event[0]
                if tag == "text":
                    if first_at is None:
                        first_at = time.monotonic()
                    parts.append(event[1])
                    yield event[1]
                elif tag == "finish":
                    finish = event[1]
                elif tag == "usage":
                    counted = (event[1], event[2])
                elif tag == "meta":
                    request_id, retries = event[1], event[2]
                else:  # "error" or "end"
                    if tag == "error":
                        error, retries = event[1], event[2]
                        request_id = request_id or error.request_id
                    break
        finally:
            cancel.set()
            text = "".join(parts)
            failed = error is not None and first_at is None
            estimated = counted is None and not failed
            if counted is None:
                counted = (0, 0) if failed else (estimate_message_tokens(request["messages"]), estimate_tokens(text))
            stream.usage = LLMUsage(
                model=self.model, prompt_tokens=counted[0], completion_tokens=counted[1],
                latency_s=time.monotonic() - start,
                first_token_s=None if first_at is None else first_at - start,
                finish_reason=finish, incomplete=first_at is not None and (finish is None or error is not None),
                error=error.kind if error else None, estimated=estimated, request_id=request_id, retries=retries)
            self._log(stream.usage, error)
            if allowed:
                self.breaker.record(error.kind if error is not None else None)
        if error is not None and first_at is None:
            error.request_id = error.request_id or request_id
            raise error

    def _log(self, usage: LLMUsage, error: LLMError | None) -> None:
        """One line per call: status code and request id, never the key or the provider's text."""
        fine = error is None and not usage.incomplete
        what = "LLM reply" if fine else "LLM reply incomplete" if usage.first_token_s is not None else "LLM call failed"
        log.log(logging.DEBUG if fine else logging.WARNING,
                "%s: kind=%s status=%s request_id=%s model=%s tokens=%d+%d retries=%d first_token=%s latency=%.3fs",
                what, usage.error or ("ok" if fine else "abandoned"), error.status_code if error else None,
                usage.request_id, usage.model, usage.prompt_tokens, usage.completion_tokens, usage.retries,
                None if usage.first_token_s is None else round(usage.first_token_s, 3), usage.latency_s)

    def _produce(self, request: dict[str, Any], events: queue.SimpleQueue[tuple[Any, ...]],
                 cancel: threading.Event, retry_by: float) -> None:
        """Reader thread: call the API (retrying before the first byte) and queue what arrives."""
        assert self._client is not None
        retries = 0
        try:
            while True:
                try:
                    chunks = self._client.chat.completions.create(
                        **request, extra_headers={"x-stainless-retry-count": str(retries)})
                    break
                except openai.APIError as exc:
                    delay = self._retry_delay(exc, retries)
                    if delay is None or time.monotonic() + delay >= retry_by or cancel.is_set():
                        raise
                    log.info("LLM request failed (status=%s); retry %d in %.2fs",
                             getattr(exc, "status_code", None), retries + 1, delay)
                    retries += 1
                    if cancel.wait(delay):
                        return
            with chunks:
                events.put(("meta", chunks.response.headers.get("x-request-id"), retries))
                texts, finish = 0, None
                for chunk in chunks:
                    if cancel.is_set():
                        return
                    usage = getattr(chunk, "usage", None)
                    if usage is not None:
                        events.put(("usage", usage.prompt_tokens or 0, usage.completion_tokens or 0))
                    for choice in getattr(chunk, "choices", None) or ():
                        delta = choice.delta if getattr(choice, "index", 0) == 0 else None
                        if delta is not None and getattr(delta, "refusal", None):
                            raise LLMError("refused", "the model refused")
                        if delta is not None and delta.content:
                            texts += 1
                            events.put(("text", delta.content))
                            if texts == 1:
                                time.sleep(0)  # hand the GIL to the consumer: the first token goes out at once
                        if getattr(choice, "index", 0) == 0 and choice.finish_reason:
                            finish = choice.finish_reason
                            events.put(("finish", finish))
                            if finish == "content_filter":
                                raise LLMError("refused", "stopped by the provider's content filter")
            if finish is None:
                raise LLMError("unavailable", "the stream ended without a finish reason")
            if not texts:
                raise LLMError("unavailable", "the model returned no text")
            events.put(("end",))
        except Exception as exc:  # every failure reaches the consumer as an LLMError
            if not isinstance(exc, openai.OpenAIError):
                log.error("unexpected error in the LLM reader thread", exc_info=True)
            events.put(("error", to_llm_error(exc), retries))

    def _retry_delay(self, exc: openai.APIError, retries: int) -> float | None:
        """Seconds to wait before retrying, or None when this failure is not retried."""
        if retries >= self.settings.max_retries or not _should_retry(exc):
            return None
        if isinstance(exc, openai.APIStatusError):
            asked = _retry_after(exc.response.headers)
            if asked is not None and asked >= 0:
                return asked
        return min(self.backoff_s * 2 ** retries, MAX_BACKOFF_S) * (1 - 0.25 * random.random())

    def choose_intent(self, text: str, candidates: list[tuple[str, str]], *, max_tokens: int = 20,
                      deadline_s: float | None = None, on_usage: Callable[[LLMUsage], None] | None = None) -> str | None:
        """Ask the model which of ``(name, description)`` candidates ``text`` means, or None.

        None stands for "none", an answer naming no single candidate, and any LLMError. Answers
        are cached per normalised text and candidate set (bounded LRU); failures are not.
        ``deadline_s`` defaults to ``settings.timeout_first_token``; ``on_usage`` receives the
        usage of each real call (for budgets).
        """
        if not self.available or not candidates:
            return None
        names = tuple(name for name, _ in candidates)
        key = (normalise(text), names)
        with self._intents_lock:
            if key in self._intents:
                self._intents.move_to_end(key)
                return self._intents[key]
        messages = routing_messages(text, candidates)
        deadline = deadline_s if deadline_s is not None else self.settings.timeout_first_token
        try:
            answer, usage = self.complete(messages, max_tokens=max_tokens, deadline_s=deadline, temperature=0.0)
        except LLMError as exc:
            log.info("LLM routing gave no answer: kind=%s", exc.kind)
            return None
        if on_usage is not None:
            on_usage(usage)
        if usage.incomplete:
            return None
        choice = parse_choice(answer, names)
        with self._intents_lock:
            self._intents[key] = choice
            while len(self._intents) > INTENT_CACHE_SIZE:
                self._intents.popitem(last=False)
        return choice

