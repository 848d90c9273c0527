"""An in-memory stand-in for the hybridbot HTTP API, so the chat widget can be tested in a browser."""
from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from flask import Flask, Response, request, send_from_directory

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
MAX_MESSAGE_CHARS = 2000
# The policy the real app is expected to send with the demo page: no inline script or style.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
FALLBACK_TEXT = (
    'I\'m not sure I understood "{text}". I can help with our **models**, prices, test drives '
    "and service, or you can call the showroom on (555) 010-4477."
)
RULES: list[tuple[re.Pattern[str], str, list[dict[str, Any]]]] = [
    (
        re.compile(r"\b(hi|hello|hey)\b", re.I),
        "greet",
        [{
            "text": "Hello! I'm the Northwind Motors assistant. Ask me about models, prices or test drives.",
            "buttons": [
                {"title": "Which models do you have?", "payload": "which models do you have?"},
                {"title": "Book a test drive", "payload": "book a test drive"},
            ],
        }],
    ),
    (
        re.compile(r"\bmodels?\b", re.I),
        "list_models",
        [
            {"text": "We have three models: the **X3 SUV**, the **Sedan S** and the all-electric **E-Volt**."},
            {
                "text": "Which one would you like to know more about?",
                "buttons": [
                    {"title": "X3 SUV", "payload": "price of the X3"},
                    {"title": "Sedan S", "payload": "price of the Sedan S"},
                    {"title": "E-Volt", "payload": "price of the E-Volt"},
                    {"title": "Brochure", "payload": "brochure", "url": "https://northwind.example/brochure"},
                ],
            },
        ],
    ),
    (
        re.compile(r"\b(price|cost|how much)\b", re.I),
        "ask_price",
        [{"text": "The X3 SUV starts at $41,900, including delivery.",
          "buttons": [{"title": "Book a test drive", "payload": "book a test drive"}]}],
    ),
    (
        re.compile(r"\btest drive\b", re.I),
        "book_test_drive",
        [{"text": "Happy to arrange that. Which day suits you?",
          "buttons": [{"title": "Tomorrow", "payload": "tomorrow"}, {"title": "Saturday", "payload": "saturday"}]}],
    ),
]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, status=status, mimetype="application/json", headers=headers)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _answer(text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    for pattern, intent, replies in RULES:
        if pattern.search(text):
            return {"kind": "rule", "intent": intent, "score": 1.0}, replies
    return {"kind": "fallback", "intent": None, "score": 0.0}, [{"text": FALLBACK_TEXT.format(text=text)}]


def create_stub_app(delta_delay: float = 0.04) -> Flask:
    """Build the stub app: the demo page and widget files from web/, and the chat API in memory.

    Rule messages ("hi", "models", "price", "test drive") get scripted replies with buttons, sent
    as one delta per reply; anything else gets a fallback reply streamed word by word with
    ``delta_delay`` seconds between deltas, so a test can watch it grow.

    Args:
        delta_delay: Pause between the deltas of a streamed (fallback) reply.

    Returns:
        The Flask app. ``app.extensions["stub_conversations"]`` holds the transcripts.
    """
    app = Flask(__name__, static_folder=None)
    conversations: dict[str, list[dict[str, Any]]] = {}
    lock = threading.Lock()
    app.extensions["stub_conversations"] = conversations

    @app.after_request
    def headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if request.path.startswith("/api/") and origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Vary"] = "Origin"
        if response.mimetype == "text/html":
            response.headers["Content-Security-Policy"] = PAGE_CSP
        return response

    @app.get("/")
    def index() -> Response:
        return send_from_directory(WEB_DIR, "index.html")

    @app.get("/<name>")
    def static_file(name: str) -> Response:
        return send_from_directory(WEB_DIR, name)

    @app.route("/api/<path:_rest>", methods=["OPTIONS"])
    def preflight(_rest: str) -> Response:
        return Response(status=204)

    def start_turn() -> tuple[str, dict[str, Any], dict[str, Any]] | Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("message"), str) or not body["message"].strip():
            return _error(400, "bad_request", "Send a JSON object with a non-empty 'message'.")
        text = body["message"]
        if len(text) > MAX_MESSAGE_CHARS:
            return _error(413, "message_too_long", f"Messages can be at most {MAX_MESSAGE_CHARS} characters.")
        cid = body.get("conversation_id")
        with lock:
            if cid is None:
                cid = secrets.token_urlsafe(18)
                conversations[cid] = []
            elif cid not in conversations:
                return _error(404, "unknown_conversation", "This conversation has expired.")
            route, replies = _answer(text)
            turn = {"turn_id": f"t{len(conversations[cid]) + 1}", "text_in": text, "replies": replies}
            conversations[cid].append(turn)
        log.info("stub turn %s in %s: %s", turn["turn_id"], cid, route["kind"])
        return cid, turn, route

    @app.post("/api/chat")
    def chat() -> Response | dict[str, Any]:
        started = start_turn()
        if isinstance(started, Response):
            return started
        cid, turn, route = started
        return {"conversation_id": cid, "turn_id": turn["turn_id"], "replies": turn["replies"], "route": route}

    @app.post("/api/chat/stream")
    def chat_stream() -> Response:
        started = start_turn()
        if isinstance(started, Response):
            return started
        cid, turn, route = started

        def events() -> Iterator[str]:
            yield _sse("meta", {"conversation_id": cid, "turn_id": turn["turn_id"], "route": route})
            if route["kind"] == "rule":
                time.sleep(delta_delay)
                for index, reply in enumerate(turn["replies"]):
                    yield _sse("delta", {"text": reply["text"], "index": index})
            else:
                time.sleep(max(0.3, 3 * delta_delay))  # long enough to see the typing dots
                yield ": ping\n\n"
                for word in re.findall(r"\S+\s*", turn["replies"][0]["text"]):
                    yield _sse("delta", {"text": word, "index": 0})
                    time.sleep(delta_delay)
            done = {"conversation_id": cid, "turn_id": turn["turn_id"], "replies": turn["replies"], "incomplete": False}
            yield _sse("done", done)

        return Response(events(), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/conversations/<cid>")
    def transcript(cid: str) -> Response | dict[str, Any]:
        with lock:
            turns = conversations.get(cid)
            if turns is None:
                return _error(404, "unknown_conversation", "This conversation has expired.")
            return {"conversation_id": cid, "turns": [dict(t) for t in turns]}

    @app.post("/api/feedback")
    def feedback() -> Response | dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or body.get("rating") not in ("up", "down"):
            return _error(400, "bad_request", "rating must be 'up' or 'down'.")
        with lock:
            turns = conversations.get(str(body.get("conversation_id")), [])
            turn = next((t for t in turns if t["turn_id"] == body.get("turn_id")), None)
            if turn is None:
                return _error(404, "unknown_turn", "No such turn.")
            turn["feedback"] = {"rating": body["rating"], "comment": body.get("comment")}
        return {"ok": True}

    return app
