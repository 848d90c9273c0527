"""What stops an LLM call before it is made: token budgets, and a circuit breaker that stops
calling a provider that keeps failing.

Budgets: :func:`check_budget` (per conversation and per day, from ``flows/fallback.yaml``).

The circuit breaker (:class:`CircuitBreaker`): without one, an outage costs every fallback
turn the whole first-token deadline (and a retry) before the visitor gets the scripted text,
and each of those turns holds a server thread meanwhile, so rule turns start queueing behind
them. With it, after ``failures`` provider failures in a row the circuit *opens*: calls fail
at once for ``cooldown_s`` seconds. Then it is *half-open*: one trial call goes through (the
others still fail at once); its success closes the circuit, its failure opens it again.

Only failures that say the provider is unwell count: ``timeout``, ``unavailable`` and
``rate_limit``. A ``bad_request`` or ``refused`` is an answer, so it counts as a success.

pybreaker was considered and not used: it holds its lock for the whole wrapped call (which
would serialise concurrent streams) and learns outcomes only from exceptions, while a stream
that broke after its first token ends without one.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from .errors import LLMError

if TYPE_CHECKING:
    from .config import LLMSettings

log = logging.getLogger(__name__)

PROVIDER_FAILURES = frozenset({"timeout", "unavailable", "rate_limit"})
DEFAULT_FAILURES = 5
DEFAULT_COOLDOWN_S = 30.0


def check_budget(settings: "LLMSettings", conversation_tokens_used: int, daily_tokens_used: int) -> None:
    """Raise ``LLMError("budget")`` when the conversation's or the day's token cap is reached."""
    if conversation_tokens_used >= settings.conversation_tokens:
        raise LLMError("budget", f"conversation token cap of {settings.conversation_tokens} reached")
    if daily_tokens_used >= settings.daily_tokens:
        raise LLMError("budget", f"daily token cap of {settings.daily_tokens} reached")


class CircuitBreaker:
    """Thread-safe; one per LLM client (so per bot and process).

    Args:
        failures: consecutive provider failures that open the circuit (0 disables the breaker).
        cooldown_s: seconds the circuit stays open before one trial call is let through.
        clock: monotonic seconds (tests pass a fake clock).
    """

    def __init__(self, failures: int = DEFAULT_FAILURES, cooldown_s: float = DEFAULT_COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 0 or cooldown_s <= 0:
            raise ValueError("failures must be >= 0 and cooldown_s > 0")
        self.failures = failures
        self.cooldown_s = float(cooldown_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._streak = 0                      # consecutive provider failures
        self._opened_at: float | None = None  # set while open or half-open
        self._trial = False                   # a half-open trial call is in flight

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "open" if self._clock() - self._opened_at < self.cooldown_s else "half_open"

    def retry_in(self) -> float:
        """Seconds until the next trial call is allowed (0 when calls may go through now)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go to the provider now? In the half-open state only one at a time does;
        whoever is allowed must report the outcome with :meth:`record`."""
        if not self.failures:
            return True
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial:
                self._trial = True
                return True
            return False

    def record(self, error_kind: str | None) -> None:
        """Report the outcome of an allowed call: ``None`` for success, else the LLMError kind."""
        if not self.failures:
            return
        failed = error_kind in PROVIDER_FAILURES
        with self._lock:
            was_open = self._opened_at is not None
            self._trial = False
            if not failed:
                self._streak, self._opened_at = 0, None
                if was_open:
                    log.info("LLM provider answered again: the circuit is closed, fallback calls resume")
                return
            self._streak += 1
            if was_open or self._streak >= self.failures:
                self._opened_at = self._clock()
                log.warning("LLM provider failed %d time(s) in a row (last: %s): not calling it for %g s; "
                            "visitors get the scripted fallback text meanwhile", self._streak, error_kind,
                            self.cooldown_s)
