"""WSGI entry point for production servers: ``gunicorn -c deploy/gunicorn.conf.py bot.wsgi:app``.

The bot directory comes from ``BOT_DIR`` (default: the working directory); every other
setting from the ``BOT_*`` variables ``create_app`` reads (``BOT_STORE``, ``BOT_PROXIES``...).
When nothing configured logging yet (gunicorn's ``logconfig_dict`` does), logs go to stderr
as JSON lines, or as text with ``BOT_LOG_FORMAT=text``, at ``BOT_LOG_LEVEL`` (default INFO).
"""
from __future__ import annotations

import logging
import os

from .metrics import configure_logging
from .web import create_app

log = logging.getLogger(__name__)

if not logging.getLogger().handlers:
    configure_logging(os.environ.get("BOT_LOG_LEVEL", "INFO"),
                      json=os.environ.get("BOT_LOG_FORMAT", "json").strip().lower() != "text")

app = create_app(os.environ.get("BOT_DIR", "."))
# POST /admin/reload on any worker of any instance reaches the others through the shared store.
_state = app.extensions["hybridbot"]
_state.holder.follow(_state.settings.reload_follow_interval)
