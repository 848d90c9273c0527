"""Web security: JSON errors, request validation, CORS, security headers and rate limits."""
from __future__ import annotations

import hmac
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

from flask import Flask, Response, current_app, jsonify, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException

from .app import clean_text
from .errors import StoreError, UnknownConversation
from .store import StoreBusyError
from .web_settings import WebSettings

log = logging.getLogger(__name__)

CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{16,128}")  # what Bot.new_conversation_id() issues
TURN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ASSET_NAME = r"[A-Za-z0-9_-]+\.(?:css|js|svg|png)"  # other chatbox files served at the site root
LANGUAGE = r"[a-z]{2,3}"  # the widget's texts: /i18n/<language>.json
RATINGS = ("up", "down")

# status -> (code, message) used when nothing more precise is known
STATUS_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("bad_request", "The request is not valid."),
    401: ("unauthorized", "This needs a valid 'Authorization: Bearer <token>' header."),
    403: ("forbidden", "This is not allowed."),
    404: ("not_found", "There is nothing here."),
    405: ("method_not_allowed", "This address does not accept that method."),
    409: ("conflict", "The request conflicts with the current state."),
    413: ("body_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as JSON with 'Content-Type: application/json'."),
    422: ("unprocessable", "The request could not be processed."),
    429: ("rate_limited", "You are sending messages too quickly."),
    500: ("internal_error", "Something went wrong on our side. Please try again."),
    503: ("unavailable", "The service is temporarily unavailable. Please try again shortly."),
}
STORE_DOWN = "The assistant cannot reach its storage right now. Please try again shortly."
BUSY = "The assistant is still answering your previous message. Please wait a moment."
UNKNOWN_CONVERSATION = ("This conversation has ended or does not exist. Send the message without "
                        "'conversation_id' to start a new one.")


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_payload(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) for any exception; logs the ones that are our fault."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, UnknownConversation):
        return 404, "unknown_conversation", UNKNOWN_CONVERSATION
    if isinstance(exc, StoreBusyError):
        return 409, "conversation_busy", BUSY
    if isinstance(exc, StoreError):
        log.error("store unavailable: %s", exc)
        return 503, "store_unavailable", STORE_DOWN
    if isinstance(exc, HTTPException) and exc.code and exc.code < 500:
        code, message = STATUS_ERRORS.get(exc.code, ("error", exc.name))
        return exc.code, code, message
    log.error("unhandled error: %s: %s", type(exc).__name__, exc, exc_info=(type(exc), exc, exc.__traceback__))
    return 500, *STATUS_ERRORS[500]


def install_error_handlers(app: Flask, limiter: Limiter) -> None:
    """Every error becomes JSON with the right status; tracebacks stay in the server log."""

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded) -> Response:
        wait = retry_after(limiter)
        message = f"You are sending messages too quickly (limit: {exc.description}). Please wait {wait} s."
        return error_response(429, "rate_limited", message, {"Retry-After": str(wait)})

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status, code, message = error_payload(exc)
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    def any_error(exc: Exception) -> Response:
        return error_response(*error_payload(exc))


def retry_after(limiter: Limiter) -> int:
    """Whole seconds until the breached limit lets a request through again (at least 1)."""
    current = limiter.current_limit
    if current is None:
        return 1
    return max(1, math.ceil(current.window[0] - time.time()))


# -- request validation ------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatRequest:
    message: str
    conversation_id: str | None


@dataclass(frozen=True)
class FeedbackRequest:
    conversation_id: str
    turn_id: str
    rating: str
    comment: str


def json_body() -> dict[str, Any]:
    """The request's JSON object; 415 unless the body is JSON, 413 when too large, 400 otherwise."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", STATUS_ERRORS[415][1])
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and (request.content_length or 0) > limit:
        raise ApiError(413, "body_too_large", f"The request body is too large: the limit is {limit} bytes.")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "The body is not valid UTF-8 JSON.")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.")
    return body


def _string(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"missing_{name}", f"The body needs a '{name}' string.")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"invalid_{name}", f"'{name}' must be a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
        raise ApiError(400, f"invalid_{name}", f"'{name}' is not valid Unicode text.") from None
    return value


def conversation_id(value: Any) -> str:
    """``value`` if it looks like an id the server issued; 400 otherwise."""
    if not isinstance(value, str) or not CONVERSATION_ID.fullmatch(value):
        raise ApiError(400, "invalid_conversation_id",
                       "'conversation_id' must be an id this server issued (16-128 letters, digits, '-' or '_').")
    return value


def chat_request(max_chars: int) -> ChatRequest:
    body = json_body()
    raw = _string(body, "message", required=True)
    assert raw is not None
    if len(raw) > max_chars:
        raise ApiError(400, "message_too_long",
                       f"Your message is too long: the limit is {max_chars} characters.")
    message = clean_text(raw)
    if not message:
        raise ApiError(400, "empty_message", "The message is empty.")
    cid = body.get("conversation_id")
    return ChatRequest(message, None if cid is None else conversation_id(cid))


def feedback_request(max_chars: int) -> FeedbackRequest:
    body = json_body()
    cid = conversation_id(body.get("conversation_id"))
    turn_id = _string(body, "turn_id", required=True)
    if not TURN_ID.fullmatch(turn_id or ""):
        raise ApiError(400, "invalid_turn_id", "'turn_id' must be the turn_id of one of the bot's replies.")
    rating = body.get("rating")
    if rating not in RATINGS:
        raise ApiError(400, "invalid_rating", "'rating' must be \"up\" or \"down\".")
    comment = _string(body, "comment", required=False) or ""
    if len(comment) > max_chars:
        raise ApiError(400, "comment_too_long", f"The comment is too long: the limit is {max_chars} characters.")
    assert turn_id is not None
    return FeedbackRequest(cid, turn_id, rating, clean_text(comment))


def check_admin(token: str | None) -> None:
    """404 when no admin token is configured, 401 unless the request carries it."""
    if not token:
        raise ApiError(404, "not_found", STATUS_ERRORS[404][1])
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", STATUS_ERRORS[401][1],
                       {"WWW-Authenticate": 'Bearer realm="hybridbot admin"'})


# -- headers -------------------------------------------------------------------------------------
def page_csp(frame_ancestors: str) -> str:
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; frame-ancestors {frame_ancestors}; base-uri 'none'; form-action 'none'")


def install_headers(app: Flask, settings: WebSettings) -> None:
    """Security headers on every response; CORS on /api/* for the allowed origins."""
    html_policy = page_csp(settings.frame_ancestors)
    origins = settings.allowed_origins
    any_origin = "*" in origins

    @app.after_request
    def secure(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        if response.mimetype == "text/html":
            headers["Content-Security-Policy"] = html_policy
            headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        else:
            headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        if origins and request.path.startswith("/api/"):
            headers.add("Vary", "Origin")
            origin = request.headers.get("Origin", "")
            if origin and (any_origin or origin in origins):
                headers["Access-Control-Allow-Origin"] = origin
                headers["Access-Control-Expose-Headers"] = "Retry-After"
                if request.method == "OPTIONS":
                    headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
                    headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
                    headers["Access-Control-Max-Age"] = "600"
        return response


# -- rate limits ---------------------------------------------------------------------------------
def conversation_key() -> str:
    """The chat body's conversation id ('' for a new conversation or a body the view will reject)."""
    if not request.is_json:
        return ""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and (request.content_length or 0) > limit:
        return ""
    try:
        body = request.get_json(silent=True)
    except HTTPException:  # a chunked body over the cap: the view answers 413
        return ""
    cid = body.get("conversation_id") if isinstance(body, dict) else None
    return cid if isinstance(cid, str) and CONVERSATION_ID.fullmatch(cid) else ""


def make_limiter(app: Flask, settings: WebSettings) -> Limiter:
    """A Flask-Limiter bound to ``app``; the views pick their limits with ``limits_for``."""
    memory = settings.ratelimit_storage.startswith("memory://")
    limiter = Limiter(get_remote_address, app=app, storage_uri=settings.ratelimit_storage,
                      strategy="moving-window", key_prefix="hybridbot", headers_enabled=False,
                      in_memory_fallback_enabled=not memory,
                      enabled=bool(settings.rate_limits or settings.conversation_rate_limits))  # off: no hooks
    limiter.request_filter(lambda: request.method == "OPTIONS")
    return limiter
