"""The OpenAPI 3.1 document of the web API, served at /openapi.json."""
from __future__ import annotations

import logging
from typing import Any

from .web_security import ASSET_NAME, CONVERSATION_ID, LANGUAGE, STATUS_ERRORS, TURN_ID
from .web_settings import WebSettings

log = logging.getLogger(__name__)

NULLABLE_STRING = {"type": ["string", "null"]}
# The part of a route trace every reply carries (DESIGN.md), with its schema; ``web.public_route``
# keeps these keys and drops the rest (patterns, thresholds, the normalised text).
PUBLIC_TRACE: dict[str, dict[str, str]] = {"stage": {"type": "string"}, "candidates": {"type": "array"},
                                           "entities": {"type": "array"}, "reason": {"type": "string"}}
# at least one character that is neither white space nor removed as a control/format character
VISIBLE = "[^\\s\\x00-\\x1f\\x7f-\\x9f\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\ufeff]"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _event(name: str, payload: str) -> dict[str, Any]:
    """One server-sent event as parsed by a client: its name and its JSON ``data`` line."""
    return {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref(payload)}}}


def _schemas(settings: WebSettings) -> dict[str, Any]:
    cid = {"type": "string", "pattern": f"^{CONVERSATION_ID.pattern}$",
           "description": "An id issued by this server in an earlier reply."}
    button = {"type": "object", "required": ["title", "payload"], "properties": {
        "title": {"type": "string"}, "payload": {"type": "string"}, "url": {"type": "string"}}}
    reply = {"type": "object", "required": ["text"], "properties": {
        "text": {"type": "string"}, "buttons": {"type": "array", "items": _ref("Button")}}}
    route = {"type": "object", "description": "How the message was answered, with the router's trace.",
             "properties": {"kind": {"type": "string"}, "intent": NULLABLE_STRING, "score": {"type": "number"},
                            "flow": NULLABLE_STRING, "trace": {"type": "object", "properties": PUBLIC_TRACE}}}
    turn = {"type": "object", "required": ["turn_id", "text_in", "replies", "created_at"], "properties": {
        "turn_id": {"type": "string"}, "text_in": {"type": "string"},
        "replies": {"type": "array", "items": _ref("Reply")},
        "feedback": _ref("Feedback"), "created_at": {"type": "string", "format": "date-time"}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "ConversationId": cid,
        "ChatRequest": {"type": "object", "required": ["message"], "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": settings.max_message_chars,
                        "pattern": VISIBLE, "description": "The visitor's text; control characters are removed."},
            "conversation_id": {"oneOf": [_ref("ConversationId"), {"type": "null"}],
                                "description": "Omit (or null) to start a new conversation."}}},
        "Button": button,
        "Reply": reply,
        "Route": route,
        "ChatResponse": {"type": "object", "required": ["conversation_id", "turn_id", "replies", "route"],
                         "properties": {"conversation_id": cid, "turn_id": {"type": "string"},
                                        "replies": {"type": "array", "items": _ref("Reply")},
                                        "route": _ref("Route")}},
        "StreamEvent": {"oneOf": [_event("meta", "StreamMeta"), _event("delta", "StreamDelta"),
                                  _event("done", "StreamDone"),
                                  _event("error", "Error/properties/error")]},
        "StreamMeta": {"type": "object", "required": ["conversation_id", "turn_id", "route"], "properties": {
            "conversation_id": cid, "turn_id": {"type": "string"}, "route": _ref("Route")}},
        "StreamDelta": {"type": "object", "required": ["text", "index"], "properties": {
            "text": {"type": "string"}, "index": {"type": "integer", "minimum": 0,
                                                  "description": "Which reply of the turn the text belongs to."}}},
        "StreamDone": {"type": "object", "required": ["conversation_id", "turn_id", "replies", "incomplete", "route"],
                       "properties": {"conversation_id": cid, "turn_id": {"type": "string"},
                                      "replies": {"type": "array", "items": _ref("Reply")},
                                      "incomplete": {"type": "boolean"}, "route": _ref("Route")}},
        "Feedback": {"type": "object", "required": ["rating"], "properties": {
            "rating": {"enum": ["up", "down"]}, "comment": {"type": "string"}}},
        "TranscriptTurn": turn,
        "Transcript": {"type": "object", "required": ["conversation_id", "turns"], "properties": {
            "conversation_id": cid, "turns": {"type": "array", "items": _ref("TranscriptTurn")}}},
        "FeedbackRequest": {"type": "object", "required": ["conversation_id", "turn_id", "rating"], "properties": {
            "conversation_id": _ref("ConversationId"),
            "turn_id": {"type": "string", "pattern": f"^{TURN_ID.pattern}$"},
            "rating": {"enum": ["up", "down"]},
            "comment": {"type": "string", "maxLength": settings.max_message_chars}}},
        "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        "Readiness": {"type": "object", "required": ["status", "store", "config_digest", "loaded_at", "reload"],
                      "properties": {
                          "status": {"enum": ["ready", "unavailable"]}, "store": {"enum": ["ok", "unavailable"]},
                          "config_digest": {"type": "string"},
                          "loaded_at": {"type": "string", "format": "date-time"},
                          "reload": _ref("ReloadStatus"),
                          "last_good": {"type": "object", "required": ["serving", "loaded_clean_at", "file_error_count"],
                                        "properties": {"serving": {"const": True},
                                                       "loaded_clean_at": {"type": "string", "format": "date-time"},
                                                       "file_error_count": {"type": "integer", "minimum": 1}}},
                          "error": {"$ref": "#/components/schemas/Error/properties/error"}}},
        "ReloadStatus": {"type": "object", "required": ["watching", "reloads", "last_error_count"], "properties": {
            "watching": {"type": "boolean"}, "reloads": {"type": "integer", "minimum": 0},
            "last_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "generation": {"type": ["integer", "null"], "minimum": 0},
            "last_error_count": {"type": "integer", "minimum": 0}}},
        "ReloadResult": {"type": "object", "required": ["ok", "digest"], "properties": {
            "ok": {"const": True}, "digest": {"type": "string"},
            "generation": {"type": ["integer", "null"], "description": "The store's reload generation: every "
                           "worker and instance on the same store reloads when it changes (null: the store "
                           "could not be told)."}}},
        "AdminTranscripts": {"type": "object", "required": ["conversations"], "properties": {
            "conversations": {"type": "array", "items": {
                "type": "object", "required": ["conversation_id", "updated_at", "turns"], "properties": {
                    "conversation_id": {"type": "string"}, "updated_at": {"type": "string", "format": "date-time"},
                    "turns": {"type": "array", "items": {"type": "object"}}}}}}},
        "AdminHandoffs": {"type": "object", "required": ["handoffs"], "properties": {
            "handoffs": {"type": "array", "items": {
                "type": "object", "required": ["conversation_id", "turn_id", "at", "flow", "slots", "message"],
                "properties": {
                    "conversation_id": {"type": "string"}, "turn_id": {"type": "string"},
                    "at": {"type": ["string", "null"], "format": "date-time"}, "flow": {"type": ["string", "null"]},
                    "slots": {"type": "object"}, "message": {"type": "string"}}}}}},
    }


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, (code, message) in STATUS_ERRORS.items():
        headers = None
        if status == 429:
            headers = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                       "schema": {"type": "integer", "minimum": 1}}}
        out[f"E{status}"] = _json(_ref("Error"), f"{message} (error code '{code}' or a more precise one)", headers)
    return out


def _admin_list(operation: str, summary: str, schema: str, order: str) -> dict[str, Any]:
    """An admin GET that lists stored turns: ``limit`` and ``since`` in the query."""
    return {"get": {
        "operationId": operation, "summary": summary, "security": [{"adminToken": []}],
        "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
            {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}}],
        "responses": {"200": _json(_ref(schema), order), **_errors(400, 401, 404, 500, 503)}}}


def document(settings: WebSettings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every route, with the limits of ``settings`` filled in."""
    chat_body = {"required": True, "content": {"application/json": {"schema": _ref("ChatRequest")}}}
    chat_errors = _errors(400, 404, 409, 413, 415, 429, 500, 503)
    admin = [{"adminToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "hybridbot HTTP API", "version": "1",
                 "description": "Chat with the bot, rehydrate the chatbox, rate replies, and check health. "
                                "Every error is JSON {\"error\": {\"code\", \"message\"}}."},
        "paths": {
            "/api/chat": {"post": {
                "operationId": "chat", "summary": "Send a message; get the bot's whole answer.",
                "requestBody": chat_body,
                "responses": {"200": _json(_ref("ChatResponse"), "The bot's replies."), **chat_errors}}},
            "/api/chat/stream": {"post": {
                "operationId": "chatStream",
                "summary": "Send a message; get the answer as server-sent events.",
                "description": "Events: meta {conversation_id, turn_id, route}, delta {text, index}..., then "
                               "done {conversation_id, turn_id, replies, incomplete, route} or error {code, "
                               "message}. Lines starting with ':' are heartbeats.",
                "requestBody": chat_body,
                "responses": {"200": {"description": "An event stream; the schema describes one event.",
                                      "content": {"text/event-stream": {"schema": _ref("StreamEvent")}}},
                              **chat_errors}}},
            "/api/conversations/{conversation_id}": {"get": {
                "operationId": "getConversation", "summary": "A conversation's transcript, oldest turn first.",
                "parameters": [{"name": "conversation_id", "in": "path", "required": True,
                                "schema": _ref("ConversationId")}],
                "responses": {"200": _json(_ref("Transcript"), "The transcript."),
                              **_errors(400, 404, 429, 500, 503)}}},
            "/api/feedback": {"post": {
                "operationId": "feedback", "summary": "Rate one of the bot's replies (thumbs up or down).",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": _ref("FeedbackRequest")}}},
                "responses": {"200": _json(_ref("Ok"), "Recorded."), **_errors(400, 404, 413, 415, 429, 500, 503)}}},
            "/healthz": {"get": {"operationId": "health", "summary": "The process is alive.",
                                 "responses": {"200": _json(_ref("Health"), "Alive.")}}},
            "/readyz": {"get": {"operationId": "ready", "summary": "The store answers and a bot is loaded.",
                                "responses": {"200": _json(_ref("Readiness"), "Ready."),
                                              "503": _json(_ref("Readiness"), "The store is unavailable.")}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics (bot_* and HTTP).",
                                 "responses": {"200": {"description": "Prometheus text format.", "content": {
                                     "text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document.",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")}}},
            "/": {"get": {"operationId": "demoPage", "summary": "The demo page with the chatbox.",
                          "responses": {"200": {"description": "HTML.",
                                                "content": {"text/html": {"schema": {"type": "string"}}}},
                                        **_errors(404)}}},
            "/widget.js": {"get": {"operationId": "widgetScript", "summary": "The embeddable chatbox script.",
                                   "responses": {"200": {"description": "JavaScript.", "content": {
                                       "text/javascript": {"schema": {"type": "string"}}}}, **_errors(404)}}},
            "/widget.css": {"get": {"operationId": "widgetStyle", "summary": "The chatbox styles.",
                                    "responses": {"200": {"description": "CSS.", "content": {
                                        "text/css": {"schema": {"type": "string"}}}}, **_errors(404)}}},
            "/{asset}": {"get": {
                "operationId": "asset", "summary": "Other files of the chatbox folder (the demo page's CSS, images).",
                "parameters": [{"name": "asset", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": f"^{ASSET_NAME}$"}}],
                "responses": {"200": {"description": "The file.", "content": {
                    "text/css": {"schema": {"type": "string"}}, "text/javascript": {"schema": {"type": "string"}},
                    "image/svg+xml": {"schema": {"type": "string"}}, "image/png": {"schema": {}}}},
                    **_errors(404)}}},
            "/i18n/{lang}.json": {"get": {
                "operationId": "widgetTexts", "summary": "The chatbox's texts in one language (CORS: any origin).",
                "parameters": [{"name": "lang", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": f"^{LANGUAGE}$"}}],
                "responses": {"200": _json({"type": "object", "additionalProperties": {"type": "string"}},
                                           "Text by key, as widget.js's English table."),
                              **_errors(404)}}},
            "/admin/reload": {"post": {
                "operationId": "reload", "summary": "Reload the bot's files; keep the old bot if they have errors.",
                "security": admin,
                "responses": {"200": _json(_ref("ReloadResult"), "The new bot is serving."),
                              "422": _json(_ref("Error"), "The files have errors (code 'config_invalid'); the "
                                                          "message lists them as file:line:col."),
                              **_errors(401, 404, 500)}}},
            "/admin/transcripts": _admin_list("transcripts", "Recent conversations with all their turns.",
                                              "AdminTranscripts", "Newest conversation first."),
            "/admin/handoffs": _admin_list("handoffs", "Conversations handed to a person (handoff steps).",
                                           "AdminHandoffs", "Newest first."),
        },
        "components": {
            "schemas": _schemas(settings),
            "responses": _responses(),
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                               "description": "The value of BOT_ADMIN_TOKEN."}},
        },
    }
