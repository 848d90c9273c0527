"""A fake OpenAI chat-completions server that can hold one streamed reply mid-way, for the SSE test."""
from __future__ import annotations

import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class Gate:
    """Holds one streamed reply after its first token until :meth:`open` (or ``limit`` seconds)."""

    limit: float = 20.0
    reached: threading.Event = field(default_factory=threading.Event)   # first token sent, now waiting
    released: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)  # last token sent

    def open(self) -> None:
        self.released.set()


class _BackloggedServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops the SYNs of a burst; the kernel retries them 1 s later


class GatedLLM:
    """OpenAI chat-completions (streaming) on loopback that replies ``You said: <text>`` word by
    word. ``arm()`` returns a Gate for the next request: that reply pauses after its first word.

    ``bot.fake_openai.FakeOpenAI`` can delay tokens but not hold one reply until the test says
    so; this lets the SSE test prove causally (not by timing) that NGINX passes a delta on
    while the model is still in the middle of its reply.
    """

    def __init__(self) -> None:
        self._gates: list[Gate] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                text = "You said: " + next((m["content"] for m in reversed(body.get("messages", []))
                                            if m.get("role") == "user"), "")
                owner._answer(self, body, text)

        self._server = _BackloggedServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="gated-llm")
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def arm(self, limit: float = 20.0) -> Gate:
        gate = Gate(limit)
        with self._lock:
            self._gates.append(gate)
        return gate

    def stop(self) -> None:
        with self._lock:
            for gate in self._gates:
                gate.open()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, body: Mapping[str, Any], text: str) -> None:
        with self._lock:
            gate = self._gates.pop(0) if self._gates else None
        words = re.findall(r"\s*\S+", text)
        usage = {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}
        base = {"id": "chatcmpl-gated", "object": "chat.completion.chunk", "created": 1700000000,
                "model": body.get("model") or "fake"}
        if not body.get("stream"):
            data = json.dumps({**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(payload: Any) -> None:
            data = b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n"
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        send(chunk({"role": "assistant", "content": ""}))
        for n, word in enumerate(words):
            send(chunk({"content": word}))
            if n == 0 and gate is not None:
                gate.reached.set()
                gate.released.wait(gate.limit)
        if gate is not None:
            gate.finished.set()
        send(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            send({**base, "choices": [], "usage": usage})
        send(b"[DONE]")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
