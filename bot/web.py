"""Flask app factory create_app(bot): chat API, server-sent events, chatbox files, health and admin."""
from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from flask import Flask, Response, jsonify, request, send_from_directory
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter

from .app import Bot
from .errors import StoreError, UnknownConversation
from .identity import IdentitySettings
from .openapi import PUBLIC_TRACE, document
from .redaction import install_log_redaction
from .reload import BotHolder
from .retention import start_retention
from .sse import EventPump
from .web_security import (ASSET_NAME, LANGUAGE, ApiError, conversation_id, conversation_key, chat_request, check_admin,
                           feedback_request, install_error_handlers, install_headers, make_limiter)
from .web_identity import add_to_openapi, current_user, may_access, register_identity, user_context
from .web_settings import WebSettings

log = logging.getLogger(__name__)

ADMIN_TRANSCRIPTS_LIMIT = 50


class AssetConverter(BaseConverter):
    """Matches the chatbox folder's other files at the site root: ``demo.css``, ``logo.svg``..."""

    regex = ASSET_NAME


class LanguageConverter(BaseConverter):
    """A language code of the widget's texts (``de``, ``fr``...)."""

    regex = LANGUAGE


@dataclass
class WebState:
    """What the views share, kept in ``app.extensions["hybridbot"]``."""

    holder: BotHolder
    settings: WebSettings
    limiter: Limiter
    static_dir: Path | None


def iso(seconds: float | None) -> str | None:
    """UNIX seconds as ISO 8601 UTC (``2026-01-31T12:00:00.123Z``)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def find_static_dir() -> Path | None:
    """The chatbox folder: ``bot/static`` in an installed wheel, else the repository's ``web/``."""
    candidates = [Path(str(importlib.resources.files("bot") / "static")),
                  Path(__file__).resolve().parent.parent / "web"]
    for folder in candidates:
        if (folder / "widget.js").is_file():
            return folder
    return None


def create_app(bot_or_path: Bot | str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
               llm: Any = None, **settings: Any) -> Flask:
    """Build the Flask app serving a bot: the chat API, SSE, the chatbox, health and admin routes.

    Args:
        bot_or_path: a loaded Bot, or the bot directory to load (ConfigErrors propagate, so a
            server never starts half-configured).
        env: where ``BOT_*`` settings are read (default ``os.environ``).
        llm: an LLM client for a bot loaded from a path (tests pass a FakeLLM).
        **settings: any WebSettings field; overrides the environment.

    Example::

        app = create_app(".", admin_token="s3cret", allowed_origins=["https://shop.example"])
        app.run(threaded=True)
    """
    config = WebSettings.from_env(env, **settings)
    if isinstance(bot_or_path, Bot):
        bot = bot_or_path
    else:
        bot_env = dict(os.environ if env is None else env)
        if config.store is not None:
            bot_env["BOT_STORE"] = config.store
        bot = Bot.from_path(bot_or_path, llm=llm, env=bot_env, last_good=True)  # a broken edit never stops a start
    holder = BotHolder(bot, env=env)

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    if config.proxies:
        n = config.proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)  # type: ignore[method-assign]
    limiter = make_limiter(app, config)
    state = WebState(holder, config, limiter, config.static_dir or find_static_dir())
    app.extensions["hybridbot"] = state
    install_error_handlers(app, limiter)
    install_headers(app, config)
    _api_routes(app, state)
    _site_routes(app, state)
    _admin_routes(app, state)
    register_identity(app, holder, IdentitySettings.from_env(env))
    install_log_redaction(lambda: holder.bot.redactor)
    if importlib.util.find_spec("bot.metrics") is not None:  # /metrics, by bot.metrics.init_app(app)
        from . import metrics
        if hasattr(metrics, "init_app"):
            metrics.init_app(app)
    if config.reload:
        holder.watch(config.reload_interval)
    return app


def _limit(limiter: Limiter, limits: str, scope: str, **options: Any) -> Callable[[Callable], Callable]:
    if not limits:
        return lambda view: view
    return limiter.shared_limit(limits, scope=scope, **options)


def _known_conversation(bot: Bot, cid: str) -> str:
    """``cid`` if the store knows it; 404 ``unknown_conversation`` otherwise."""
    if not bot.store.exists(cid):
        raise UnknownConversation(cid)
    return cid


def _public_turn(turn: Mapping[str, Any]) -> dict[str, Any]:
    out = {"turn_id": turn["turn_id"], "text_in": turn.get("text_in", ""), "replies": turn.get("replies", []),
           "created_at": iso(turn.get("created_at"))}
    feedback = turn.get("feedback")
    if feedback:
        out["feedback"] = {"rating": feedback["rating"], "comment": feedback.get("comment") or ""}
    return out


def public_route(route: Mapping[str, Any]) -> dict[str, Any]:
    """A turn's route as a visitor sees it: the trace keeps which stage decided, the top
    candidates, the entities found and why it fell back; patterns, thresholds and the
    normalised text stay in the transcript and the logs."""
    trace = route.get("trace") or {}
    return {**route, "trace": {key: trace[key] for key in PUBLIC_TRACE if key in trace}}


def public_events(events: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """``Bot.stream`` events with ``public_route`` routes; closing it closes the turn too."""
    try:
        for name, data in events:
            yield name, ({**data, "route": public_route(data["route"])} if name in ("meta", "done") else data)
    finally:
        events.close()  # type: ignore[attr-defined]


def _api_routes(app: Flask, state: WebState) -> None:
    settings, holder = state.settings, state.holder
    per_ip = _limit(state.limiter, settings.rate_limits, "api")
    per_conversation = _limit(state.limiter, settings.conversation_rate_limits, "conversation",
                              key_func=conversation_key, exempt_when=lambda: not conversation_key())

    def turn_arguments() -> tuple[str | None, str]:
        """(conversation id or None, message) of a chat request, checked; both chat endpoints take
        them and pass ``must_exist=True``: a named conversation must exist and be the visitor's
        (checked inside the turn, under its lock)."""
        req = chat_request(settings.max_message_chars)
        return req.conversation_id, req.message

    @app.post("/api/chat")
    @per_ip
    @per_conversation
    def chat() -> Response:
        turn = holder.bot.handle(*turn_arguments(), user=user_context(), must_exist=True)
        return jsonify(conversation_id=turn.conversation_id, turn_id=turn.turn_id, replies=turn.replies,
                       route=public_route(turn.route))

    @app.post("/api/chat/stream")
    @per_ip
    @per_conversation
    def chat_stream() -> Response:
        pump = EventPump(public_events(holder.bot.stream(*turn_arguments(), user=user_context(), must_exist=True)),
                         settings.heartbeat_seconds)
        first = pump.first()  # errors before the first event become a normal JSON error
        return Response(pump.sse(first), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/conversations/<cid>")
    @per_ip
    def conversation(cid: str) -> Response:
        cid = conversation_id(cid)
        bot = holder.bot
        _known_conversation(bot, cid)
        turns = bot.transcript(cid) or []
        return jsonify(conversation_id=cid, turns=[_public_turn(t) for t in turns])

    @app.post("/api/feedback")
    @per_ip
    def feedback() -> Response:
        req = feedback_request(settings.max_message_chars)
        if not may_access(holder.bot.store, req.conversation_id, current_user()):
            raise UnknownConversation(req.conversation_id)  # another user's: the same answer as an unknown id
        if not holder.bot.feedback(req.conversation_id, req.turn_id, req.rating, req.comment):
            raise ApiError(404, "unknown_turn", "There is no such reply in this conversation.")
        return jsonify(ok=True)


def _site_routes(app: Flask, state: WebState) -> None:
    holder = state.holder
    spec = add_to_openapi(document(state.settings))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        bot = holder.bot
        body: dict[str, Any] = {
            "status": "ready", "store": "ok", "config_digest": bot.config.digest,
            "loaded_at": iso(holder.loaded_at),
            "reload": {"watching": holder.watching, "reloads": holder.reloads, "generation": holder.generation,
                       "last_attempt_at": iso(holder.last_attempt_at),
                       "last_error_count": len(holder.last_errors.errors) if holder.last_errors else 0}}
        if bot.last_good is not None:  # the files had errors at start: the last clean version is serving
            body["last_good"] = {"serving": True, "loaded_clean_at": iso(bot.last_good.saved_at),
                                 "file_error_count": len(bot.last_good.errors.errors)}
        try:
            bot.store.ping()
        except StoreError as exc:
            log.warning("readiness: store unavailable: %s", exc)
            body.update(status="unavailable", store="unavailable",
                        error={"code": "store_unavailable", "message": "The conversation store is unavailable."})
            return jsonify(body), 503
        return jsonify(body), 200

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(spec)

    def static_file(name: str) -> Response:
        if state.static_dir is None:
            raise ApiError(404, "not_found", f"{name} is not installed with this server.")
        return send_from_directory(state.static_dir, name)

    app.add_url_rule("/", "index", lambda: static_file("index.html"), methods=["GET"])
    app.add_url_rule("/widget.js", "widget_js", lambda: static_file("widget.js"), methods=["GET"])
    app.add_url_rule("/widget.css", "widget_css", lambda: static_file("widget.css"), methods=["GET"])
    app.url_map.converters["asset"] = AssetConverter
    app.add_url_rule("/<asset:name>", "asset", static_file, methods=["GET"])  # demo.css, images

    app.url_map.converters["language"] = LanguageConverter

    @app.get("/i18n/<language:lang>.json")
    def widget_texts(lang: str) -> Response:
        """The widget's texts in one language. Public data any site embedding the widget fetches."""
        response = static_file(f"i18n/{lang}.json")
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response


def _admin_routes(app: Flask, state: WebState) -> None:
    holder, token = state.holder, state.settings.admin_token
    per_ip = _limit(state.limiter, state.settings.rate_limits, "admin")

    @app.post("/admin/reload")
    @per_ip
    def admin_reload() -> Response:
        check_admin(token)
        result = holder.reload_everywhere()
        if result.errors is not None:
            raise ApiError(422, "config_invalid", result.errors.format())
        return jsonify(ok=True, digest=result.digest, generation=holder.generation)

    @app.get("/admin/transcripts")
    @per_ip
    def admin_transcripts() -> Response:
        limit, since = _admin_window(token)
        conversations: dict[str, list[dict[str, Any]]] = {}
        for turn in holder.bot.store.iter_turns(since=since):
            turn = dict(turn)
            cid = turn.pop("conversation_id")
            turn["created_at"] = iso(turn.get("created_at"))
            conversations.setdefault(cid, []).append(turn)
        newest = sorted(conversations.items(), key=lambda kv: kv[1][-1]["created_at"] or "", reverse=True)
        return jsonify(conversations=[{"conversation_id": cid, "updated_at": turns[-1]["created_at"], "turns": turns}
                                      for cid, turns in newest[:limit]])

    @app.get("/admin/handoffs")
    @per_ip
    def admin_handoffs() -> Response:
        """Conversations a ``handoff`` step gave to a person, newest first (the webhook's events, kept)."""
        limit, since = _admin_window(token)
        found = [{"conversation_id": t["conversation_id"], "turn_id": t.get("turn_id"), "at": iso(t.get("created_at")),
                  "flow": t["handoff"].get("flow"), "slots": t["handoff"].get("slots") or {},
                  "message": t.get("text_in", "")}
                 for t in holder.bot.store.iter_turns(since=since) if isinstance(t.get("handoff"), dict)]
        return jsonify(handoffs=found[::-1][:limit])


def _admin_window(token: str | None) -> tuple[int, datetime | None]:
    """The admin token checked, then the ``limit`` and ``since`` of an admin list."""
    check_admin(token)
    return _query_int("limit", ADMIN_TRANSCRIPTS_LIMIT, 1, 500), _query_time("since")


def _query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, f"invalid_{name}", f"'{name}' must be a whole number from {low} to {high}.")
    return value


def _query_time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"'{name}' must be an ISO 8601 date-time, "
                                               f"e.g. 2026-01-31T00:00:00Z.") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def serve(path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, reload: bool = True,
          **settings: Any) -> None:
    """Run the bot in ``path`` on Werkzeug's threaded development server (``hybridbot run``).

    For production use gunicorn: ``gunicorn -k gthread 'bot.web:create_app(".")'``.
    """
    from werkzeug.serving import run_simple

    app = create_app(path, reload=reload, **settings)
    retention = start_retention(app.extensions["hybridbot"].holder)
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        retention.stop()
        app.extensions["hybridbot"].holder.stop()
