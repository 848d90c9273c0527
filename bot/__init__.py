"""hybridbot: website chatbots that mix YAML rules with an LLM fallback."""
from __future__ import annotations

from .actions import ActionRegistry, Context, Reply, action
from .app import Bot, Turn
from .config import Button
from .errors import ActionError, BotError, ConfigError, ConfigErrors, LLMError, StoreError, UnknownConversation

__all__ = ["Bot", "Turn", "Button", "action", "ActionRegistry", "Context", "Reply", "BotError", "ConfigError",
           "ConfigErrors", "ActionError", "LLMError", "StoreError", "UnknownConversation"]
__version__ = "0.1.0"
