"""HTTP side of visitor identity: Bearer tokens on /api/*, conversations kept with their owner, export and erasure."""
from __future__ import annotations

import logging
from typing import Any, Callable

from flask import Blueprint, Flask, Response, g, jsonify, request

from .errors import UnknownConversation
from .identity import IdentityError, IdentitySettings, User, verify_token
from .ownership import check_user_id
from .reload import BotHolder
from .web_security import CONVERSATION_ID, ApiError, check_admin, conversation_id, error_response

log = logging.getLogger(__name__)

USER_KEY = "hybridbot_user"
EXTENSION = "hybridbot_identity"
INVALID_IDENTITY = "Your sign-in could not be verified ({reason}). Reload the page or sign in again."
IDENTITY_REQUIRED = "Please sign in on the site to chat: this assistant needs to know who you are."
CHALLENGE = 'Bearer realm="hybridbot", error="invalid_token"'


def current_user() -> User | None:
    """The verified user of the current request (None for an anonymous visitor)."""
    return g.get(USER_KEY)


def user_context() -> dict[str, Any] | None:
    """What ``Bot.stream(..., user=...)`` takes for the current request: id, name, email; or None."""
    user = current_user()
    return user.as_context() if user is not None else None


def register_identity(app: Flask, holder_or_bot: Any, settings: IdentitySettings | None = None) -> None:
    """Verify identity tokens on ``/api/*`` and add the identity routes to ``app``.

    * ``Authorization: Bearer <JWT>`` on any ``/api/*`` request is verified; a bad, expired or
      tampered token is answered 401 ``invalid_identity`` before the view runs. With
      ``settings.required`` a request without a token is 401 ``identity_required``.
    * A conversation owned by a user answers only that user's requests: any other request
      naming it (path ``<cid>`` or body ``conversation_id``) gets the same 404
      ``unknown_conversation`` as an id that does not exist.
    * ``GET /api/me/conversation``: the signed-in user's latest live conversation and its turns.
    * ``DELETE /api/conversations/<cid>``: the visitor deletes their conversation (204).
    * ``GET``/``DELETE /admin/users/<user_id>``: export or erase a user's data (admin token).

    Args:
        app: the app built by ``bot.web.create_app`` (its limiter and admin token are reused).
        holder_or_bot: the ``BotHolder`` serving the app, or a ``Bot``.
        settings: token settings; default ``IdentitySettings.from_env()``.
    """
    if EXTENSION in app.extensions:
        raise RuntimeError("register_identity was already called for this app")
    settings = settings if settings is not None else IdentitySettings.from_env()
    bot_of: Callable[[], Any] = ((lambda: holder_or_bot.bot) if isinstance(holder_or_bot, BotHolder)
                                 else (lambda: holder_or_bot))
    app.extensions[EXTENSION] = settings
    warned: list[bool] = []

    @app.before_request
    def identify() -> Response | None:
        if not request.path.startswith("/api/") or request.method == "OPTIONS":
            return None
        user = None
        header = request.headers.get("Authorization")
        if header is not None and not settings.enabled:
            if not warned:
                warned.append(True)
                log.warning("a request carried an identity token but BOT_IDENTITY_SECRET / BOT_IDENTITY_PUBLIC_KEY "
                            "is not set: visitors are treated as anonymous")
        elif header is not None:
            scheme, _, token = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise IdentityError("malformed", "the Authorization header is not 'Bearer <token>'")
                user = verify_token(token.strip(), settings)
            except IdentityError as exc:
                log.warning("identity token rejected on %s %s: %s (%s)", request.method, request.path, exc.code,
                            exc.detail)
                return error_response(401, "invalid_identity", INVALID_IDENTITY.format(reason=_reason(exc.code)),
                                      {"WWW-Authenticate": CHALLENGE})
        elif settings.required:
            return error_response(401, "identity_required", IDENTITY_REQUIRED,
                                  {"WWW-Authenticate": 'Bearer realm="hybridbot"'})
        setattr(g, USER_KEY, user)
        cid = (request.view_args or {}).get("cid")  # ids in a body are checked by their view (chat: in the turn)
        if isinstance(cid, str) and CONVERSATION_ID.fullmatch(cid) and not may_access(bot_of().store, cid, user):
            log.info("%s %s names a conversation of another user: answered as unknown", request.method, request.path)
            raise UnknownConversation(cid)
        return None

    app.register_blueprint(_blueprint(app, bot_of))


def may_access(store: Any, cid: str, user: User | None) -> bool:
    """True if ``user`` (None: anonymous) may read and write conversation ``cid``: it is
    anonymous (the id is the key) or owned by this very user."""
    owner = store.owner_of(cid)
    return owner is None or (user is not None and user.id == owner)


def _reason(code: str) -> str:
    return {"expired": "it has expired", "not_yet_valid": "it is not valid yet"}.get(code, "it is not valid")


def _blueprint(app: Flask, bot_of: Callable[[], Any]) -> Blueprint:
    from .web import iso  # web.py registers this blueprint: import at call time

    web_state = app.extensions.get("hybridbot")
    admin_token = getattr(getattr(web_state, "settings", None), "admin_token", None)
    limits = getattr(getattr(web_state, "settings", None), "rate_limits", "")
    limiter = getattr(web_state, "limiter", None)

    def per_ip(scope: str) -> Callable[[Callable], Callable]:
        if limiter is None or not limits:
            return lambda view: view
        return limiter.shared_limit(limits, scope=scope)

    bp = Blueprint("identity", __name__)

    @bp.get("/api/me/conversation")
    @per_ip("api")
    def my_conversation() -> Response:
        from .web import _public_turn

        user = current_user()
        if user is None:
            raise ApiError(401, "identity_required", IDENTITY_REQUIRED,
                           {"WWW-Authenticate": 'Bearer realm="hybridbot"'})
        bot = bot_of()
        latest = next((c.id for c in bot.store.conversations_of(user.id) if bot.store.exists(c.id)), None)
        turns = (bot.transcript(latest) or []) if latest else []
        return jsonify(conversation_id=latest, turns=[_public_turn(t) for t in turns])

    @bp.delete("/api/conversations/<cid>")
    @per_ip("api")
    def delete_conversation(cid: str) -> Response:
        cid = conversation_id(cid)  # ownership was checked before the view ran
        if not bot_of().store.delete(cid):
            raise UnknownConversation(cid)
        log.info("a visitor deleted their conversation")
        return Response(status=204)

    @bp.get("/admin/users/<path:user_id>")
    @per_ip("admin")
    def export_user(user_id: str) -> Response:
        check_admin(admin_token)
        data = bot_of().store.export_user(_user_id(user_id))
        for conv in data["conversations"]:
            conv["created_at"], conv["updated_at"] = iso(conv["created_at"]), iso(conv["updated_at"])
            for turn in conv["turns"]:
                turn["created_at"] = iso(turn.get("created_at"))
        data["exported_at"] = iso(data["exported_at"])
        log.info("admin exported the data of a user (%d conversation(s))", len(data["conversations"]))
        return jsonify(data)

    @bp.delete("/admin/users/<path:user_id>")
    @per_ip("admin")
    def delete_user(user_id: str) -> Response:
        check_admin(admin_token)
        count = bot_of().store.delete_user(_user_id(user_id))
        return jsonify(user_id=user_id, deleted_conversations=count)

    return bp


def _user_id(raw: str) -> str:
    try:
        return check_user_id(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_user_id", str(exc)) from None


def add_to_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Describe the identity routes and the visitor's Bearer token in an OpenAPI document (in place)."""
    def error_refs(*statuses: int) -> dict[str, Any]:
        return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}

    cid_param = [{"name": "conversation_id", "in": "path", "required": True,
                  "schema": {"$ref": "#/components/schemas/ConversationId"}}]
    user_param = [{"name": "user_id", "in": "path", "required": True,
                   "schema": {"type": "string", "minLength": 1, "maxLength": 256}}]
    visitor = [{}, {"identityToken": []}]
    admin = [{"adminToken": []}]
    paths = doc.setdefault("paths", {})
    paths.setdefault("/api/conversations/{conversation_id}", {})["delete"] = {
        "operationId": "deleteConversation", "summary": "Delete the visitor's own conversation (state and transcript).",
        "description": "Anonymous conversations: the id is the key. A signed-in user's conversation: only with "
                       "that user's token; for anyone else it does not exist (404).",
        "parameters": cid_param, "security": visitor,
        "responses": {"204": {"description": "Deleted."}, **error_refs(400, 401, 404, 429, 500, 503)}}
    paths["/api/me/conversation"] = {"get": {
        "operationId": "myConversation", "summary": "The signed-in user's latest conversation, on any device.",
        "security": [{"identityToken": []}],
        "responses": {"200": {"description": "conversation_id is null when the user has none yet.", "content": {
            "application/json": {"schema": {"type": "object", "required": ["conversation_id", "turns"],
                                            "properties": {"conversation_id": {"type": ["string", "null"]},
                                                           "turns": {"type": "array", "items": {"type": "object"}}}}}}},
                      **error_refs(401, 429, 500, 503)}}}
    paths["/admin/users/{user_id}"] = {
        "get": {"operationId": "exportUser", "summary": "Every conversation and turn of one user (data export).",
                "parameters": user_param, "security": admin,
                "responses": {"200": {"description": "The user's data, oldest conversation first.",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **error_refs(400, 401, 404, 500, 503)}},
        "delete": {"operationId": "deleteUser", "summary": "Erase every conversation of one user.",
                   "parameters": user_param, "security": admin,
                   "responses": {"200": {"description": "How many conversations were deleted.",
                                         "content": {"application/json": {"schema": {"type": "object"}}}},
                                 **error_refs(400, 401, 404, 500, 503)}}}
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["identityToken"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                "description": "A short-lived JWT the host site signs for its signed-in user "
                                               "(sub, name, email, aud, exp); see docs/security.md."}
    return doc
