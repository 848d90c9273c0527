"""A local server speaking OpenAI's chat-completions wire format, scriptable per request.

Tests, benchmarks and browser runs point the real ``openai`` client at it::

    with FakeOpenAI() as fake:
        fake.script(status(429, headers={"retry-after-ms": "10"}), ok("Hello!"))
        client = OpenAIChat(settings, api_key="test", base_url=fake.base_url)

Each request takes the next scripted :class:`Scenario`; with the queue empty it answers with
``default`` (by default an echo of the last user message), so it doubles as a dev server:
``python -m bot.fake_openai --port 8001 --token-delay 0.05``.
"""
from __future__ import annotations

import argparse
import http.server
import itertools
import json
import logging
import re
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .prompting import estimate_message_tokens, estimate_tokens

log = logging.getLogger(__name__)

_WORDS = re.compile(r"\s*\S+|\s+")


@dataclass(frozen=True)
class Scenario:
    """How the server answers one request. Build them with the functions below.

    ``text`` None means the default reply. Delays are seconds. ``chunks`` None splits the
    text into words (one "token" per SSE event).
    """

    text: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    error: Mapping[str, Any] | None = None   # JSON error object for a non-2xx status
    first_byte_delay: float = 0.0            # before the status line
    first_token_delay: float = 0.0           # after the role chunk, before the first text
    token_delay: float | None = None         # between text chunks (None: the server's default)
    chunks: tuple[str, ...] | None = None
    finish_reason: str | None = "stop"
    refusal: str | None = None
    empty_choices: bool = False              # send a chunk with "choices": [] before the text
    stall_after: int | None = None           # chunks of text sent before stalling ...
    stall_s: float = 0.0                     # ... for this long (then carry on)
    drop_after: int | None = None            # chunks of text sent before the socket is cut
    eof_after: int | None = None             # chunks of text sent before the body ends cleanly
    error_after: int | None = None           # chunks of text sent before an error event
    hang: bool = False                       # never answer (until the server stops)
    usage: bool = True                       # send the usage chunk when the request asks
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def ok(text: str | None = None, **kw: Any) -> Scenario:
    """A normal reply (streamed if the request asks), e.g. ``ok("Hi", token_delay=0.05)``."""
    return Scenario(text=text, **kw)


def status(code: int, *, headers: Mapping[str, str] | None = None, message: str = "fake provider error",
           type: str = "server_error", code_name: str | None = None) -> Scenario:
    """An HTTP error with OpenAI's JSON error body, e.g. ``status(429, headers={"retry-after": "1"})``."""
    return Scenario(status=code, headers=dict(headers or {}),
                    error={"message": message, "type": type, "param": None, "code": code_name})


def slow_first_byte(seconds: float, text: str | None = None) -> Scenario:
    """Send nothing, not even headers, for ``seconds``."""
    return Scenario(text=text, first_byte_delay=seconds)


def slow_first_token(seconds: float, text: str | None = None) -> Scenario:
    """Send headers and the role chunk at once, then wait ``seconds`` before the text."""
    return Scenario(text=text, first_token_delay=seconds)


def stall(after: int, seconds: float, text: str | None = None) -> Scenario:
    """Stop sending for ``seconds`` after ``after`` text chunks."""
    return Scenario(text=text, stall_after=after, stall_s=seconds)


def drop(after: int = 1, text: str | None = None) -> Scenario:
    """Cut the connection mid-body after ``after`` text chunks."""
    return Scenario(text=text, drop_after=after)


def eof(after: int = 1, text: str | None = None) -> Scenario:
    """End the body cleanly after ``after`` text chunks, with no finish_reason and no [DONE]."""
    return Scenario(text=text, eof_after=after)


def error_event(after: int = 1, message: str = "fake stream error", type: str = "server_error",
                text: str | None = None) -> Scenario:
    """Send ``data: {"error": {...}}`` after ``after`` text chunks."""
    return Scenario(text=text, error_after=after, error={"message": message, "type": type,
                                                         "param": None, "code": None})


def hang() -> Scenario:
    """Accept the request and never answer (until the server stops)."""
    return Scenario(hang=True)


def echo(request: Mapping[str, Any]) -> str:
    """The default reply: a deterministic echo of the last user message."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return f"You said: {content}"
    return "Hello from the fake model."


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: Mapping[str, str]  # lower-case names
    body: Any


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: "FakeOpenAI"

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fake openai: connection from %s ended abruptly", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60  # idle keep-alive connections close after this

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fake openai: " + format, *args)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            model = self.server.fake.model
            self._json(200, {"object": "list", "data": [
                {"id": model, "object": "model", "created": 1700000000, "owned_by": "fake"}]})
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error",
                                       "param": None, "code": None}})

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        chat = self.path.rstrip("/").endswith("/chat/completions")
        scenario = fake._record(Recorded(self.path, headers, body), take=chat)
        if not chat:
            return self._json(404, {"error": {"message": "not found", "type": "invalid_request_error",
                                              "param": None, "code": None}})
        if fake.api_key is not None and headers.get("authorization") != f"Bearer {fake.api_key}":
            return self._json(401, {"error": {"message": "Incorrect API key provided",
                                              "type": "invalid_request_error", "param": None,
                                              "code": "invalid_api_key"}})
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._json(400, {"error": {"message": "'messages' is required",
                                              "type": "invalid_request_error", "param": "messages",
                                              "code": None}})
        if scenario.hang:
            fake._stopping.wait()
            self.close_connection = True
            return
        if scenario.first_byte_delay and fake._stopping.wait(scenario.first_byte_delay):
            return
        if scenario.status >= 400:
            return self._json(scenario.status, {"error": dict(scenario.error or {})}, scenario.headers)
        text = scenario.text if scenario.text is not None else fake.default(body)
        chunks = list(scenario.chunks) if scenario.chunks is not None else _WORDS.findall(text) or [text]
        usage = {"prompt_tokens": scenario.prompt_tokens if scenario.prompt_tokens is not None
                 else estimate_message_tokens(body["messages"]),
                 "completion_tokens": scenario.completion_tokens if scenario.completion_tokens is not None
                 else estimate_tokens(text)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        rid = next(fake._ids)
        if body.get("stream"):
            self._stream(fake, scenario, body, chunks, usage, rid)
        else:
            message = {"role": "assistant", "content": None if scenario.refusal else text,
                       "refusal": scenario.refusal}
            self._json(200, {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": 1700000000,
                             "model": body.get("model") or fake.model,
                             "choices": [{"index": 0, "message": message, "logprobs": None,
                                          "finish_reason": scenario.finish_reason}],
                             "usage": usage}, scenario.headers, rid=rid)

    def _json(self, code: int, payload: Any, headers: Mapping[str, str] | None = None,
              rid: int | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{rid if rid is not None else next(self.server.fake._ids)}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, fake: "FakeOpenAI", sc: Scenario, body: Mapping[str, Any], chunks: list[str],
                usage: Mapping[str, int], rid: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", f"req_{rid}")
        for name, value in sc.headers.items():
            self.send_header(name, value)
        self.end_headers()
        base = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": 1700000000,
                "model": body.get("model") or fake.model}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        delay = sc.token_delay if sc.token_delay is not None else fake.token_delay

        def event(choices: list[Any] | None = None, **extra: Any) -> None:
            data = dict(base, choices=choices if choices is not None else [], **extra)
            if include_usage and "usage" not in data:
                data["usage"] = None
            self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

        def choice(delta: Mapping[str, Any], finish: str | None = None) -> list[Any]:
            return [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}]

        try:
            event(choice({"role": "assistant", "content": ""}))
            if sc.empty_choices:
                event([])
            if sc.first_token_delay and fake._stopping.wait(sc.first_token_delay):
                return
            if sc.refusal is not None:
                event(choice({"refusal": sc.refusal}))
                chunks = []
            for n, piece in enumerate(chunks):
                if n == sc.drop_after:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if n == sc.eof_after:
                    self._chunk(b"")
                    return
                if n == sc.error_after:
                    self._chunk(b"data: " + json.dumps({"error": dict(sc.error or {})}).encode() + b"\n\n")
                    self._chunk(b"")
                    return
                if n == sc.stall_after and fake._stopping.wait(sc.stall_s):
                    return
                if n and delay and fake._stopping.wait(delay):
                    return
                event(choice({"content": piece}))
            event(choice({}, sc.finish_reason))
            if include_usage and sc.usage:
                event([], usage=dict(usage))
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except OSError:  # the client went away
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


class FakeOpenAI:
    """A threaded loopback server for ``POST /v1/chat/completions`` (JSON and SSE).

    Args:
        default: reply text, or a function of the request body giving it, used when no
            scenario is queued (default: :func:`echo`).
        token_delay: default seconds between streamed text chunks (e.g. 0.05 for 50 ms/token).
        api_key: if set, requests without ``Authorization: Bearer <api_key>`` get a 401.
        model: the model name reported when the request names none.
        host, port: where to listen; port 0 picks a free port.
    """

    def __init__(self, default: str | Callable[[Mapping[str, Any]], str] = echo, *,
                 token_delay: float = 0.0, api_key: str | None = None, model: str = "fake-1",
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.default: Callable[[Mapping[str, Any]], str] = (
            default if callable(default) else (lambda request, text=default: text))
        self.token_delay = token_delay
        self.api_key = api_key
        self.model = model
        self.requests: list[Recorded] = []
        self._host, self._port = host, port
        self._queue: deque[Scenario] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (only valid once started)."""
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAI":
        """Bind and serve in a daemon thread; returns self."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server((self._host, self._port), _Handler)
            self._server.fake = self
            self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai",
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging requests, stop serving and close the socket."""
        if self._server is not None:
            self._stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *scenarios: Scenario) -> "FakeOpenAI":
        """Queue scenarios for the next requests, in order."""
        with self._lock:
            self._queue.extend(scenarios)
        return self

    def reset(self) -> None:
        """Forget queued scenarios and recorded requests, and release hanging requests."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
        self._stopping.set()  # waiters already notified return True even after clear()
        self._stopping.clear()

    @property
    def pending(self) -> int:
        """Scenarios queued and not yet used."""
        with self._lock:
            return len(self._queue)

    def _record(self, request: Recorded, *, take: bool) -> Scenario:
        with self._lock:
            self.requests.append(request)
            return self._queue.popleft() if take and self._queue else Scenario()


def main(argv: list[str] | None = None) -> int:
    """Run the fake as a dev server until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m bot.fake_openai", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed words")
    parser.add_argument("--reply", default=None, help="fixed reply text (default: echo)")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(args.reply if args.reply is not None else echo, token_delay=args.token_delay,
                      host=args.host, port=args.port).start()
    print(f"fake OpenAI server at {fake.base_url}  (OPENAI_BASE_URL={fake.base_url} OPENAI_API_KEY=fake)",
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["FakeOpenAI", "Recorded", "Scenario", "drop", "echo", "eof", "error_event", "hang", "ok",
           "slow_first_byte", "slow_first_token", "stall", "status"]
