"""The fake OpenAI server speaks the chat-completions wire format byte for byte where it matters."""
from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest

from bot.fake_openai import FakeOpenAI, main, ok, status

MESSAGES = [{"role": "user", "content": "hi there"}]


@pytest.fixture()
def http(fake: FakeOpenAI) -> Iterator[httpx2.Client]:
    fake.reset()
    with httpx2.Client(base_url=fake.base_url, timeout=5) as client:
        yield client


def events(response: httpx2.Response) -> list[str]:
    text = response.text
    assert text.endswith("\n\n")
    return [block for block in text.split("\n\n") if block]


def test_streaming_wire_format_with_usage(http: httpx2.Client, fake: FakeOpenAI) -> None:
    fake.script(ok(chunks=("Hel", "lo"), prompt_tokens=5, completion_tokens=2))
    response = http.post("/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True,
                                                    "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    blocks = events(response)
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks)
    assert blocks[-1] == "data: [DONE]"
    chunks = [json.loads(b[len("data: "):]) for b in blocks[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[3]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[4]["choices"] == [] and chunks[4]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2,
                                                                 "total_tokens": 7}
    assert all(c["usage"] is None for c in chunks[:4])


def test_streaming_without_include_usage_sends_no_usage(http: httpx2.Client) -> None:
    response = http.post("/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True})
    chunks = [json.loads(b[len("data: "):]) for b in events(response)[:-1]]
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "You said: hi there"


def test_plain_json_reply(http: httpx2.Client, fake: FakeOpenAI) -> None:
    fake.script(ok("Hello!", finish_reason="length"))
    body = http.post("/chat/completions", json={"model": "m", "messages": MESSAGES}).json()
    assert body["object"] == "chat.completion" and body["model"] == "m"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                                "logprobs": None, "finish_reason": "length"}]
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_error_status_has_openai_error_body_and_headers(http: httpx2.Client, fake: FakeOpenAI) -> None:
    fake.script(status(429, headers={"retry-after": "3"}, message="slow down", type="rate_limit_exceeded"))
    response = http.post("/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True})
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json() == {"error": {"message": "slow down", "type": "rate_limit_exceeded", "param": None,
                                         "code": None}}


def test_records_requests_and_consumes_scenarios_in_order(http: httpx2.Client, fake: FakeOpenAI) -> None:
    fake.script(ok("one"), ok("two"))
    replies = [http.post("/chat/completions", json={"model": "m", "messages": MESSAGES}).json()
               ["choices"][0]["message"]["content"] for _ in range(3)]
    assert replies == ["one", "two", "You said: hi there"]
    assert fake.pending == 0 and len(fake.requests) == 3
    assert fake.requests[0].body["messages"] == MESSAGES and fake.requests[0].path == "/v1/chat/completions"


def test_bad_requests_and_unknown_paths(http: httpx2.Client) -> None:
    assert http.post("/chat/completions", json={"model": "m"}).status_code == 400
    assert http.post("/embeddings", json={}).status_code == 404
    assert http.get("/models").json()["data"][0]["id"] == "fake-1"


def test_api_key_is_enforced_when_configured() -> None:
    with FakeOpenAI("fixed reply", api_key="right") as fake, httpx2.Client(base_url=fake.base_url) as http:
        request = {"model": "m", "messages": MESSAGES}
        assert http.post("/chat/completions", json=request,
                         headers={"authorization": "Bearer wrong"}).status_code == 401
        good = http.post("/chat/completions", json=request, headers={"authorization": "Bearer right"})
        assert good.json()["choices"][0]["message"]["content"] == "fixed reply"


def test_base_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="start"):
        FakeOpenAI().base_url


def test_dev_server_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--token-delay", "fast"])
    assert "invalid float value" in capsys.readouterr().err
