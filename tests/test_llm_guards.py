"""The LLM circuit breaker: a state machine on a fake clock, and OpenAIChat against a failing fake server."""
from __future__ import annotations

import threading
import time

import pytest

from bot.config import LLMSettings
from bot.errors import LLMError
from bot.fake_openai import FakeOpenAI, ok, status
from bot.llm import OpenAIChat
from bot.llm_guards import CircuitBreaker
from bot.prompting import build_messages

SETTINGS = LLMSettings(system_prompt="You are the dealership's assistant.", unavailable=("Sorry.",),
                       model="test-model", temperature=0.2, max_tokens=50,
                       timeout_total=5.0, timeout_first_token=2.0, timeout_connect=1.0, max_retries=0)
MESSAGES = build_messages(SETTINGS, knowledge_text="", history=[], user_text="tell me a joke")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def opened(clock: Clock, cooldown_s: float) -> CircuitBreaker:
    """A breaker that one provider failure has just opened."""
    breaker = CircuitBreaker(failures=1, cooldown_s=cooldown_s, clock=clock)
    assert breaker.allow()
    breaker.record("timeout")
    assert breaker.state == "open"
    return breaker


def test_it_opens_after_the_given_number_of_provider_failures_in_a_row() -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=30, clock=Clock())
    for kind in ("timeout", "unavailable"):
        assert breaker.allow()
        breaker.record(kind)
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record("rate_limit")
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.retry_in() == 30


def test_a_success_or_an_answer_that_is_not_an_outage_resets_the_streak() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=30, clock=Clock())
    for outcome in ("timeout", None, "timeout", "bad_request", "timeout", "refused", "unavailable"):
        assert breaker.allow()
        breaker.record(outcome)
    assert breaker.state == "closed"  # never two provider failures in a row


def test_after_the_cooldown_one_trial_call_goes_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = opened(clock, cooldown_s=10)
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state == "half_open"
    assert breaker.allow()          # the trial
    assert not breaker.allow()      # everyone else still fails fast while it runs
    breaker.record("unavailable")   # the trial failed: open for another cooldown
    assert breaker.state == "open" and breaker.retry_in() == 10
    clock.now += 10
    assert breaker.allow()
    breaker.record(None)            # the trial succeeded: closed, calls flow again
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()


def test_zero_failures_disables_it_and_bad_settings_are_refused() -> None:
    breaker = CircuitBreaker(failures=0)
    for _ in range(10):
        assert breaker.allow()
        breaker.record("timeout")
    assert breaker.state == "closed"
    with pytest.raises(ValueError):
        CircuitBreaker(failures=-1)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=0)


def test_only_one_of_many_threads_gets_the_half_open_trial() -> None:
    clock = Clock()
    breaker = opened(clock, cooldown_s=5)
    clock.now += 5
    allowed: list[bool] = []
    threads = [threading.Thread(target=lambda: allowed.append(breaker.allow())) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1


# -- OpenAIChat with a breaker, against a local OpenAI-wire server -------------------------------------
def test_an_outage_is_stopped_calling_after_the_streak_and_probed_after_the_cooldown(fake: FakeOpenAI) -> None:
    llm = OpenAIChat(SETTINGS, api_key="sk-test", base_url=fake.base_url, env={},
                     breaker=CircuitBreaker(failures=3, cooldown_s=0.5))
    fake.script(status(500), status(503), status(502))
    for code in (500, 503, 502):
        with pytest.raises(LLMError) as info:
            llm.complete(MESSAGES)
        assert (info.value.kind, info.value.status_code) == ("unavailable", code)
    assert len(fake.requests) == 3

    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        llm.complete(MESSAGES)
    assert info.value.kind == "unavailable" and "circuit open" in str(info.value)
    assert time.monotonic() - started < 0.2 and len(fake.requests) == 3  # failed at once, nothing was sent

    time.sleep(0.55)
    fake.script(ok("Back again."))
    assert llm.complete(MESSAGES)[0] == "Back again."  # the trial call reached the server and closed it
    assert len(fake.requests) == 4 and llm.breaker.state == "closed"


def test_a_short_circuited_stream_reports_its_usage_like_any_failure(fake: FakeOpenAI) -> None:
    llm = OpenAIChat(SETTINGS, api_key="sk-test", base_url=fake.base_url, env={},
                     breaker=CircuitBreaker(failures=1, cooldown_s=60))
    fake.script(status(500))
    with pytest.raises(LLMError):
        llm.complete(MESSAGES)
    stream = llm.stream(MESSAGES)
    with pytest.raises(LLMError):
        list(stream)
    assert stream.usage is not None
    assert (stream.usage.error, stream.usage.prompt_tokens, stream.usage.first_token_s) == ("unavailable", 0, None)
    assert len(fake.requests) == 1
