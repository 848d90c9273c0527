"""WebSettings: the web server's settings, from keyword arguments or BOT_* environment variables."""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def _int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise ValueError


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())


def _limits(text: str) -> str:
    text = text.strip()
    if text.lower() in ("", "off", "none"):
        return ""
    from limits import parse_many

    parse_many(text)  # raises ValueError on a typo, so the server does not start with no limits
    return text


def _header_value(text: str) -> str:
    if any(c in text for c in ";\r\n,") or not text.strip():
        raise ValueError
    return text.strip()


# field -> (environment variable, parser, what a good value looks like)
ENV: Mapping[str, tuple[str, Callable[[str], Any], str]] = {
    "admin_token": ("BOT_ADMIN_TOKEN", str, "a long random string"),
    "allowed_origins": ("BOT_ALLOWED_ORIGINS", _origins, "a comma list like https://www.example.com"),
    "max_message_chars": ("BOT_MAX_MESSAGE_CHARS", _positive_int, "a whole number of characters, e.g. 2000"),
    "max_body_bytes": ("BOT_MAX_BODY_BYTES", _positive_int, "a whole number of bytes, e.g. 16384"),
    "rate_limits": ("BOT_RATE_LIMITS", _limits, "limits like '30/minute;300/hour', or 'off'"),
    "conversation_rate_limits": ("BOT_CONVERSATION_RATE_LIMITS", _limits, "limits like '20/minute', or 'off'"),
    "ratelimit_storage": ("BOT_RATELIMIT_STORAGE", str, "memory:// or redis://host:6379/1"),
    "proxies": ("BOT_PROXIES", _int, "the number of reverse proxies in front of the app, e.g. 1"),
    "frame_ancestors": ("BOT_FRAME_ANCESTORS", _header_value,
                        "CSP sources separated by spaces, e.g. 'self' https://www.example.com"),
    "store": ("BOT_STORE", str, "memory://, sqlite:///path or redis://host:6379/0"),
    "reload": ("BOT_RELOAD", _bool, "1 or 0"),
    "reload_interval": ("BOT_RELOAD_INTERVAL", _positive_float, "seconds between file checks, e.g. 1"),
    "reload_follow_interval": ("BOT_RELOAD_FOLLOW_INTERVAL", _positive_float,
                               "seconds between checks for a reload another worker asked for, e.g. 2"),
    "heartbeat_seconds": ("BOT_HEARTBEAT_SECONDS", _positive_float, "seconds between SSE pings, e.g. 15"),
    "static_dir": ("BOT_STATIC_DIR", Path, "the folder holding index.html, widget.js and widget.css"),
}


@dataclass(frozen=True)
class WebSettings:
    """Everything ``create_app`` can be told; see docs/http-api.md for each setting.

    ``rate_limits`` apply per client IP to all ``/api/*`` requests together;
    ``conversation_rate_limits`` apply per conversation id to chat messages.
    """

    admin_token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_message_chars: int = 2000
    max_body_bytes: int = 16 * 1024
    rate_limits: str = "30/minute;300/hour"
    conversation_rate_limits: str = "20/minute"
    ratelimit_storage: str = "memory://"
    proxies: int = 0
    frame_ancestors: str = "'self'"
    store: str | None = None
    reload: bool = False
    reload_interval: float = 1.0
    reload_follow_interval: float = 2.0
    heartbeat_seconds: float = 15.0
    static_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "WebSettings":
        """Settings from ``overrides`` first, then ``BOT_*`` variables of ``env``, then defaults.

        Raises:
            TypeError: an override names no setting.
            ValueError: a variable or override holds a value that cannot be used.
        """
        env = os.environ if env is None else env
        unknown = sorted(set(overrides) - set(ENV))
        if unknown:
            raise TypeError(f"unknown web setting(s) {', '.join(unknown)}; known: {', '.join(ENV)}")
        values: dict[str, Any] = {}
        for name, (var, parse, expected) in ENV.items():
            if name in overrides:
                raw, origin = overrides[name], f"setting {name}"
            elif env.get(var) not in (None, ""):
                raw, origin = env[var], var
            else:
                continue
            if raw is None:
                values[name] = None
                continue
            if isinstance(raw, str):
                try:
                    raw = parse(str(raw))
                except ValueError:
                    raise ValueError(f"{origin} must be {expected}, got {raw!r}") from None
            elif name == "allowed_origins":
                raw = tuple(str(o).rstrip("/") for o in raw)
            values[name] = raw
        if values.get("admin_token") == "":
            values["admin_token"] = None
        return cls(**values)

    def replace(self, **changes: Any) -> "WebSettings":
        return dataclasses.replace(self, **changes)
