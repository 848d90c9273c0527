"""Visitor identity: verify the short-lived JWT a host site signs for its logged-in user."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import jwt

from .errors import BotError

log = logging.getLogger(__name__)

DEFAULT_AUDIENCE = "hybridbot"
DEFAULT_LEEWAY = 30.0
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash output
MAX_TOKEN_CHARS = 8192
MAX_ID_CHARS = 256
MAX_FIELD_CHARS = 320
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")

ERROR_MESSAGES: Mapping[str, str] = {
    "expired": "the token has expired",
    "not_yet_valid": "the token is not valid yet (nbf or iat lies in the future)",
    "bad_signature": "the signature does not match",
    "wrong_audience": "the token is meant for another audience",
    "wrong_issuer": "the token comes from another issuer",
    "missing_claim": "a required claim is missing",
    "malformed": "the token is not a well-formed JWT",
    "algorithm": "the token is signed with an algorithm this server does not accept",
}


class IdentityError(BotError):
    """A token that does not prove who the visitor is.

    Attributes:
        code: ``expired``, ``not_yet_valid``, ``bad_signature``, ``wrong_audience``,
            ``wrong_issuer``, ``missing_claim``, ``malformed`` or ``algorithm``.
        detail: what exactly was wrong (never contains the token).
    """

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail or ERROR_MESSAGES.get(code, code)
        super().__init__(f"{code}: {self.detail}")


@dataclass(frozen=True)
class User:
    """A visitor the host site vouched for. ``id`` is the token's ``sub`` claim."""

    id: str
    name: str | None = None
    email: str | None = None

    def as_context(self) -> dict[str, Any]:
        """The mapping handlers see as ``ctx.user`` and templates as ``user``."""
        return {"id": self.id, "name": self.name, "email": self.email}


@dataclass(frozen=True)
class IdentitySettings:
    """How identity tokens are checked. Built by ``from_env`` from ``BOT_IDENTITY_*`` variables.

    Attributes:
        secret: the HS256 key shared with the host site (at least 32 bytes).
        public_key: PEM text of the host site's RSA public key, for RS256.
        audience: the ``aud`` every token must carry.
        issuer: the ``iss`` every token must carry, when set.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        required: refuse ``/api/*`` requests that carry no token.
    """

    secret: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    audience: str = DEFAULT_AUDIENCE
    issuer: str | None = None
    leeway: float = DEFAULT_LEEWAY
    required: bool = False

    def __post_init__(self) -> None:
        if self.secret is not None and len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"BOT_IDENTITY_SECRET must be at least {MIN_SECRET_BYTES} bytes long; generate one "
                             "with: python -c 'import secrets; print(secrets.token_urlsafe(48))'")
        if self.public_key is not None and "PUBLIC KEY" not in self.public_key:
            raise ValueError("BOT_IDENTITY_PUBLIC_KEY must name a PEM file holding the host site's RSA "
                             "public key (-----BEGIN PUBLIC KEY-----)")
        if not self.leeway >= 0:
            raise ValueError(f"BOT_IDENTITY_LEEWAY must be a number of seconds >= 0, got {self.leeway!r}")
        if self.required and not self.enabled:
            raise ValueError("BOT_REQUIRE_IDENTITY is on but no key is configured: set BOT_IDENTITY_SECRET "
                             "(HS256) or BOT_IDENTITY_PUBLIC_KEY (RS256)")

    @property
    def enabled(self) -> bool:
        """True when a key is configured, so tokens can be verified."""
        return bool(self.secret or self.public_key)

    def keys(self) -> dict[str, Any]:
        """Algorithm -> key. Each key only ever verifies its own algorithm (no HS/RS confusion)."""
        keys: dict[str, Any] = {}
        if self.secret:
            keys["HS256"] = self.secret
        if self.public_key:
            keys["RS256"] = _rsa_key(self.public_key)
        return keys

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "IdentitySettings":
        """Settings from ``BOT_IDENTITY_SECRET``, ``BOT_IDENTITY_PUBLIC_KEY`` (a PEM file),
        ``BOT_IDENTITY_AUDIENCE``, ``BOT_IDENTITY_ISSUER``, ``BOT_IDENTITY_LEEWAY`` and
        ``BOT_REQUIRE_IDENTITY``.

        Raises:
            ValueError: a variable holds something unusable (the message names it and the fix).
        """
        env = os.environ if env is None else env
        public_key = None
        if env.get("BOT_IDENTITY_PUBLIC_KEY"):
            path = Path(env["BOT_IDENTITY_PUBLIC_KEY"])
            try:
                public_key = path.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"BOT_IDENTITY_PUBLIC_KEY: cannot read the PEM file {path}: {exc}") from None
        try:
            leeway = float(env.get("BOT_IDENTITY_LEEWAY") or DEFAULT_LEEWAY)
        except ValueError:
            raise ValueError(f"BOT_IDENTITY_LEEWAY must be a number of seconds, "
                             f"got {env['BOT_IDENTITY_LEEWAY']!r}") from None
        required = (env.get("BOT_REQUIRE_IDENTITY") or "").strip().lower()
        if required not in TRUE + FALSE:
            raise ValueError(f"BOT_REQUIRE_IDENTITY must be 1 or 0, got {required!r}")
        settings = cls(secret=env.get("BOT_IDENTITY_SECRET") or None, public_key=public_key,
                       audience=env.get("BOT_IDENTITY_AUDIENCE") or DEFAULT_AUDIENCE,
                       issuer=env.get("BOT_IDENTITY_ISSUER") or None, leeway=leeway, required=required in TRUE)
        settings.keys()  # a PEM that does not parse fails at start, not at the first visitor
        return settings


def _rsa_key(pem: str) -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        raise ValueError("RS256 identity tokens need the cryptography package: "
                         "pip install 'pyjwt[crypto]'") from None
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except ValueError as exc:
        raise ValueError(f"BOT_IDENTITY_PUBLIC_KEY is not a readable PEM public key: {exc}") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("BOT_IDENTITY_PUBLIC_KEY must be an RSA public key (for RS256)")
    return key


_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "algorithm"),
    (jwt.InvalidKeyError, "algorithm"),
)


def verify_token(token: str, settings: IdentitySettings) -> User:
    """Check a host-signed JWT and return the user it names.

    The algorithm is pinned per key (HS256 with ``secret``, RS256 with ``public_key``);
    ``none`` and every other algorithm are refused before any key is touched. ``exp`` and
    ``sub`` are required, ``aud`` must equal ``settings.audience``, ``iss`` must equal
    ``settings.issuer`` when one is set, and ``nbf``/``iat`` may not lie in the future
    (all with ``settings.leeway`` seconds of tolerance).

    Raises:
        IdentityError: with ``code`` saying what was wrong.

    Example::

        user = verify_token(request_token, IdentitySettings.from_env())
        user.id, user.name
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise IdentityError("malformed", f"a token is a non-empty string of at most {MAX_TOKEN_CHARS} characters")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise IdentityError("malformed") from None
    alg = header.get("alg")
    keys = settings.keys()
    if not isinstance(alg, str) or alg not in keys:
        accepted = ", ".join(keys) or "none configured"
        raise IdentityError("algorithm", f"the token is signed with {alg!r}; this server accepts {accepted}")
    required = ["exp", "sub", "aud"] + (["iss"] if settings.issuer else [])
    try:
        claims = jwt.decode(token, keys[alg], algorithms=[alg], audience=settings.audience, issuer=settings.issuer,
                            leeway=settings.leeway, options={"require": required})
    except jwt.InvalidTokenError as exc:
        for kind, code in _ERRORS:
            if isinstance(exc, kind):
                raise IdentityError(code, str(exc)) from None
        raise IdentityError("malformed", str(exc)) from None
    return _user(claims)


def _user(claims: Mapping[str, Any]) -> User:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_ID_CHARS or not sub.isprintable():
        raise IdentityError("malformed", f"'sub' must be a printable string of 1-{MAX_ID_CHARS} characters")
    extra: dict[str, str | None] = {}
    for name in ("name", "email"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_FIELD_CHARS):
            raise IdentityError("malformed", f"'{name}' must be a string of at most {MAX_FIELD_CHARS} characters")
        extra[name] = (value.strip() or None) if isinstance(value, str) else None
    return User(id=sub, **extra)
