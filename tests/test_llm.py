"""OpenAIChat against a local fake OpenAI server: streaming, deadlines, retries, error mapping."""
from __future__ import annotations

import json
import logging
import shutil
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest

from bot.config import LLMSettings, load_config
from bot.errors import LLMError
from bot.fake_openai import (FakeOpenAI, drop, eof, error_event, hang, ok, slow_first_byte,
                             slow_first_token, stall, status)
from bot.llm import LLMStream, LLMUsage, OpenAIChat
from bot.llm_guards import check_budget
from bot.prompting import build_messages, estimate_message_tokens, estimate_tokens
from botdata import MINIMAL

KEY = "sk-test-DO-NOT-LEAK-4f9a2c"
PROVIDER_TEXT = "provider internal detail 7781"
SETTINGS = LLMSettings(system_prompt="You are the dealership's assistant.", unavailable=("Sorry.",),
                       model="test-model", temperature=0.2, max_tokens=50,
                       timeout_total=5.0, timeout_first_token=2.0, timeout_connect=1.0, max_retries=1)
FAST = {"first_token_s": 0.3, "deadline_s": 1.0}  # for the tests that wait for a deadline
MESSAGES = build_messages(SETTINGS, knowledge_text="", history=[], user_text="which models do you have?")


@pytest.fixture(scope="module")
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client() as client:  # one connection pool and TLS context for the whole module
        yield client


@pytest.fixture()
def llm(fake: FakeOpenAI, http: httpx2.Client) -> OpenAIChat:
    return OpenAIChat(SETTINGS, api_key=KEY, base_url=fake.base_url, env={}, backoff_s=0.01, http_client=http)


def fails(stream: LLMStream) -> LLMError:
    with pytest.raises(LLMError) as info:
        list(stream)
    return info.value


def test_complete_returns_the_reply_and_the_servers_usage(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok("We have the X3 and the Sedan S.", prompt_tokens=21, completion_tokens=9))
    text, usage = llm.complete(MESSAGES)
    assert text == "We have the X3 and the Sedan S."
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (21, 9, 30)
    assert usage.model == "test-model" and usage.finish_reason == "stop"
    assert not usage.incomplete and usage.error is None and not usage.estimated
    assert usage.request_id is not None and usage.request_id.startswith("req_")
    assert usage.first_token_s is not None and 0 <= usage.first_token_s <= usage.latency_s


def test_stream_yields_deltas_in_order(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok(chunks=("The ", "X3 ", "starts ", "at ", "$40k.")))
    stream = llm.stream(MESSAGES)
    assert list(stream) == ["The ", "X3 ", "starts ", "at ", "$40k."]
    assert stream.usage is not None and stream.usage.finish_reason == "stop"


def test_request_carries_model_messages_limits_key_and_usage_option(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    llm.complete(MESSAGES, max_tokens=7)
    [request] = fake.requests
    body = request.body
    assert body["model"] == "test-model" and body["messages"] == MESSAGES
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2 and body["max_tokens"] == 7
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-stainless-retry-count"] == "0"


def test_a_null_temperature_is_never_sent_for_models_that_accept_only_their_own(fake: FakeOpenAI) -> None:
    llm = OpenAIChat(replace(SETTINGS, temperature=None), api_key=KEY, base_url=fake.base_url, env={})
    llm.complete(MESSAGES)
    llm.complete(MESSAGES, temperature=0.0)  # what LLM-assisted routing asks for
    assert [("temperature" in r.body) for r in fake.requests] == [False, False]


def test_fallback_yaml_temperature_null_loads_as_none(tmp_path: Path) -> None:
    shutil.copytree(MINIMAL, tmp_path / "bot", ignore=shutil.ignore_patterns("var"))
    path = tmp_path / "bot" / "flows" / "fallback.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.rstrip("\n") + "\ntemperature: null\n", encoding="utf-8")
    assert load_config(tmp_path / "bot").fallback.temperature is None


def test_official_endpoint_gets_max_completion_tokens_through_a_given_http_client() -> None:
    seen: list[dict] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        body = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                '[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    llm = OpenAIChat(SETTINGS, api_key=KEY, env={}, http_client=client)
    assert llm.complete(MESSAGES)[0] == "hi"
    assert seen[0]["max_completion_tokens"] == 50 and "max_tokens" not in seen[0]
    client.close()


def test_environment_supplies_key_base_url_and_model_override(fake: FakeOpenAI) -> None:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake.base_url, "OPENAI_MODEL": "env-model"}
    llm = OpenAIChat(SETTINGS, env=env)
    assert llm.available and llm.model == "env-model"
    text, usage = llm.complete(MESSAGES)
    assert text == "You said: which models do you have?"
    assert fake.requests[0].body["model"] == "env-model" and usage.model == "env-model"


def test_without_a_key_it_is_unavailable_and_sends_nothing(fake: FakeOpenAI) -> None:
    llm = OpenAIChat(SETTINGS, base_url=fake.base_url, env={"OPENAI_API_KEY": " "})
    assert not llm.available
    with pytest.raises(LLMError) as info:
        llm.stream(MESSAGES)
    assert info.value.kind == "no_key"
    assert llm.choose_intent("price of the x3", [("ask_price", "")]) is None
    assert fake.requests == []


def test_slow_first_token_past_the_deadline_is_a_timeout(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(slow_first_token(3.0, "too late"))
    stream = llm.stream(MESSAGES, **FAST)
    assert fails(stream).kind == "timeout"
    assert stream.usage is not None and stream.usage.error == "timeout" and stream.usage.first_token_s is None


def test_slow_first_byte_is_a_timeout_and_is_not_retried_past_the_deadline(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(slow_first_byte(3.0))
    assert fails(llm.stream(MESSAGES, **FAST)).kind == "timeout"
    assert len(fake.requests) == 1


def test_server_that_never_answers_hits_the_deadline(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(hang())
    stream = llm.stream(MESSAGES, deadline_s=0.4, first_token_s=0.4)
    assert fails(stream).kind == "timeout"
    assert stream.usage is not None and stream.usage.error == "timeout"


def test_total_deadline_ends_a_slow_reply_keeping_what_arrived(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    full = "one two three four five six seven eight"
    fake.script(ok(full, token_delay=0.15))
    stream = llm.stream(MESSAGES, first_token_s=0.3, deadline_s=0.4)
    text = stream.text()
    assert text and full.startswith(text) and text != full
    assert stream.usage is not None and stream.usage.incomplete and stream.usage.error == "timeout"


def test_stall_after_the_first_chunk_ends_cleanly_as_incomplete(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(stall(1, 3.0, "Hello there friend"))
    stream = llm.stream(MESSAGES, **FAST)
    assert stream.text() == "Hello"
    assert stream.usage is not None and stream.usage.incomplete and stream.usage.error == "timeout"


def test_429_with_retry_after_is_retried_once_then_succeeds(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(status(429, headers={"retry-after-ms": "20"}), ok("second time lucky"))
    text, usage = llm.complete(MESSAGES)
    assert text == "second time lucky" and usage.retries == 1
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1"]


def test_429_twice_is_a_rate_limit_after_exactly_one_retry(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(status(429, headers={"retry-after": "0.01"}), status(429, headers={"retry-after": "0.01"}))
    error = fails(llm.stream(MESSAGES))
    assert (error.kind, error.status_code) == ("rate_limit", 429)
    assert error.request_id is not None
    assert len(fake.requests) == 2


def test_retry_after_beyond_the_deadline_is_not_waited_for(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(status(429, headers={"retry-after": "30"}))
    assert fails(llm.stream(MESSAGES)).kind == "rate_limit"
    assert len(fake.requests) == 1


@pytest.mark.parametrize("code", [500, 503])
def test_server_errors_are_retried_then_unavailable(llm: OpenAIChat, fake: FakeOpenAI, code: int) -> None:
    fake.script(status(code), status(code))
    error = fails(llm.stream(MESSAGES))
    assert (error.kind, error.status_code) == ("unavailable", code)
    assert len(fake.requests) == 2


def test_503_then_ok_recovers(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(status(503), ok("back again"))
    assert llm.complete(MESSAGES)[0] == "back again"


@pytest.mark.parametrize(("code", "kind"), [(400, "bad_request"), (404, "bad_request"), (422, "bad_request"),
                                            (401, "unavailable"), (403, "unavailable")])
def test_client_errors_map_to_kinds_without_retry(llm: OpenAIChat, fake: FakeOpenAI, code: int, kind: str) -> None:
    fake.script(status(code, message=PROVIDER_TEXT))
    error = fails(llm.stream(MESSAGES))
    assert (error.kind, error.status_code) == (kind, code)
    assert PROVIDER_TEXT not in str(error)
    assert len(fake.requests) == 1


def test_provider_content_filter_error_is_refused(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(status(400, code_name="content_filter", type="invalid_request_error"))
    assert fails(llm.stream(MESSAGES)).kind == "refused"


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = OpenAIChat(SETTINGS, api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", env={}, backoff_s=0.01)
    assert fails(llm.stream(MESSAGES)).kind == "unavailable"


def test_dropped_connection_after_first_chunk_keeps_the_text(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(drop(1, "Hello there friend"))
    stream = llm.stream(MESSAGES)
    assert stream.text() == "Hello"
    usage = stream.usage
    assert usage is not None and usage.incomplete and usage.error == "unavailable"
    assert usage.estimated and usage.completion_tokens >= 1
    assert usage.prompt_tokens == estimate_message_tokens(MESSAGES)


def test_drop_before_any_text_raises(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(drop(0), drop(0))
    assert fails(llm.stream(MESSAGES)).kind == "unavailable"
    assert len(fake.requests) == 1  # streaming had begun: never retried


def test_stream_ending_without_finish_or_done_is_incomplete(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(eof(2, "one two three"))
    stream = llm.stream(MESSAGES)
    assert stream.text() == "one two"
    assert stream.usage is not None and stream.usage.incomplete and stream.usage.finish_reason is None


@pytest.mark.parametrize(("type_", "kind"), [("server_error", "unavailable"), ("rate_limit_exceeded", "rate_limit")])
def test_error_event_mid_stream(llm: OpenAIChat, fake: FakeOpenAI, type_: str, kind: str) -> None:
    fake.script(error_event(1, PROVIDER_TEXT, type=type_, text="partial reply"), error_event(0, type=type_))
    stream = llm.stream(MESSAGES)
    assert stream.text() == "partial"
    assert stream.usage is not None and stream.usage.incomplete and stream.usage.error == kind
    assert fails(llm.stream(MESSAGES)).kind == kind


def test_empty_choices_chunks_are_skipped(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok("still fine", empty_choices=True))
    assert llm.complete(MESSAGES)[0] == "still fine"


def test_finish_reason_length_is_complete_but_reported(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok("cut short", finish_reason="length"))
    text, usage = llm.complete(MESSAGES)
    assert text == "cut short"
    assert usage.finish_reason == "length" and not usage.incomplete and usage.error is None


def test_content_filter_before_text_is_refused(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok(chunks=(), finish_reason="content_filter"))
    assert fails(llm.stream(MESSAGES)).kind == "refused"


def test_content_filter_after_text_ends_incomplete(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok("some text", finish_reason="content_filter"))
    stream = llm.stream(MESSAGES)
    assert stream.text() == "some text"
    assert stream.usage is not None and stream.usage.incomplete and stream.usage.error == "refused"


def test_refusal_delta_is_refused(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok(refusal="I can't help with that."))
    assert fails(llm.stream(MESSAGES)).kind == "refused"


def test_empty_reply_is_unavailable(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok(""))
    assert fails(llm.stream(MESSAGES)).kind == "unavailable"


def test_missing_usage_falls_back_to_estimates(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok("an estimated reply", usage=False))
    _, usage = llm.complete(MESSAGES)
    assert usage.estimated and not usage.incomplete
    assert usage.prompt_tokens == estimate_message_tokens(MESSAGES)
    assert usage.completion_tokens == estimate_tokens("an estimated reply")


def test_closing_the_stream_early_marks_it_incomplete(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok("a b c d e f", token_delay=0.02))
    stream = llm.stream(MESSAGES)
    deltas = iter(stream)
    assert next(deltas) == "a"
    deltas.close()  # type: ignore[attr-defined]
    assert stream.usage is not None and stream.usage.incomplete and stream.usage.error is None


def test_a_stream_is_iterated_once(llm: OpenAIChat) -> None:
    stream = llm.stream(MESSAGES)
    stream.text()
    with pytest.raises(RuntimeError):
        list(stream)


def test_stream_from_text_serves_fakes() -> None:
    usage = LLMUsage("m", 1, 2, 0.0, 0.0, "stop", False, None)
    stream = LLMStream.from_text(["a", "b"], usage)
    assert stream.text() == "ab" and stream.usage is usage


def test_key_and_provider_text_never_reach_logs_or_errors(llm: OpenAIChat, fake: FakeOpenAI,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script(status(401, message=PROVIDER_TEXT), status(500, message=PROVIDER_TEXT),
                status(500, message=PROVIDER_TEXT), error_event(0, PROVIDER_TEXT), drop(1), ok("fine"))
    shown = [repr(llm)]
    for _ in range(3):  # 401; 500 retried; an error event
        error = fails(llm.stream(MESSAGES))
        shown += [str(error), repr(error), error.detail]
    assert llm.stream(MESSAGES).text() == "You"  # the drop, after the first word of the echo
    assert llm.complete(MESSAGES)[0] == "fine"
    everything = caplog.text + "\n".join(shown)
    assert "status=401" in caplog.text and "request_id=req_" in caplog.text
    assert KEY not in everything
    assert PROVIDER_TEXT not in everything


def test_budget_caps() -> None:
    check_budget(SETTINGS, SETTINGS.conversation_tokens - 1, SETTINGS.daily_tokens - 1)
    for used in ((SETTINGS.conversation_tokens, 0), (0, SETTINGS.daily_tokens)):
        with pytest.raises(LLMError) as info:
            check_budget(SETTINGS, *used)
        assert info.value.kind == "budget"


CANDIDATES = [("ask_price", "Visitor asks what a car model costs"), ("book_test_drive", "Visitor wants a test drive")]


def test_choose_intent_parses_validates_and_caches(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(ok("`ask_price`"))
    seen: list[LLMUsage] = []
    assert llm.choose_intent("How much is the X3?", CANDIDATES, on_usage=seen.append) == "ask_price"
    assert llm.choose_intent("  how much is the x3 ", CANDIDATES) == "ask_price"  # cached
    assert len(fake.requests) == 1 and len(seen) == 1
    body = fake.requests[0].body
    assert body["max_tokens"] == 20 and body["temperature"] == 0.0
    system, user = body["messages"]
    assert "ask_price" in system["content"] and "How much" not in system["content"]
    assert user == {"role": "user", "content": "How much is the X3?"}


@pytest.mark.parametrize("answer", ["none", "sell_car", "ask_price or book_test_drive", '{"intent": "none"}'])
def test_choose_intent_rejects_none_and_unknown_answers(llm: OpenAIChat, fake: FakeOpenAI, answer: str) -> None:
    fake.script(ok(answer))
    assert llm.choose_intent("something odd", CANDIDATES) is None


def test_choose_intent_failure_is_none_and_not_cached(llm: OpenAIChat, fake: FakeOpenAI) -> None:
    fake.script(status(400), ok('{"intent": "book_test_drive"}'))
    assert llm.choose_intent("can I drive one", CANDIDATES) is None
    assert llm.choose_intent("can I drive one", CANDIDATES) == "book_test_drive"
    assert len(fake.requests) == 2
