"""Bot: loads a bot directory and answers messages, wiring router, engine, actions, LLM and store."""
from __future__ import annotations

import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Mapping

from .actions import DEFAULT_TIMEOUT, ActionRegistry, Context, Reply
from .config import Config, Source, load_config
from .errors import ActionError, ConfigErrors, StoreError
from .flows import Engine
from .handoff import notifier_for
from .redaction import Redactor
from .router import clean as clean_text
from .turns import TurnRunner

log = logging.getLogger(__name__)

DEFAULT_ACTION_TIMEOUT = 10.0


_WARNED: set[tuple[str, ...]] = set()


def _warn_unannounced_handoffs(engine: Engine) -> None:
    """Once per process and set of flows: handoff steps with no channel to tell anyone."""
    flows = tuple(sorted(name for name, program in engine.programs.items()
                         if any(ins.op == "handoff" for ins in program.code)))
    if flows and flows not in _WARNED:
        _WARNED.add(flows)
        log.warning("flows %s hand conversations to a person, but neither BOT_HANDOFF_EMAIL nor "
                    "BOT_HANDOFF_WEBHOOK is set: handoffs are only listed at GET /admin/handoffs and in "
                    "`hybridbot report` (docs/monitoring.md)", ", ".join(flows))


@dataclass
class Turn:
    """The bot's answer to one message."""

    conversation_id: str
    turn_id: str
    text_in: str
    replies: list[dict[str, Any]] = field(default_factory=list)   # [{"text", "buttons"?}]
    route: dict[str, Any] = field(default_factory=dict)
    kind: str = "fallback"
    intent: str | None = None
    flow: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0
    llm: dict[str, Any] | None = None
    error: str | None = None
    incomplete: bool = False
    handoff: dict[str, Any] | None = None   # {"flow", "slots"} when a handoff step ran

    @property
    def text(self) -> str:
        return "\n".join(r["text"] for r in self.replies if r.get("text"))

    @property
    def buttons(self) -> list[str]:
        return [b["title"] for r in self.replies for b in r.get("buttons", ())]


class Bot:
    """A loaded bot. Thread-safe: conversations are serialised by the store's per-conversation lock.

    Example::

        bot = Bot.from_path(".")
        turn = bot.handle(None, "how much is the X3?")
        print(turn.conversation_id, turn.text)
    """

    def __init__(self, config: Config, actions: ActionRegistry, *, store: Any = None, llm: Any = None,
                 router: Any = None, action_timeout: float = DEFAULT_ACTION_TIMEOUT,
                 cache_dir: Path | None = None, env: Mapping[str, str] | None = None,
                 action_pool: ThreadPoolExecutor | None = None, handoff_spool: Path | None = None) -> None:
        from .router import Router
        from .store import MemoryStore

        self.config = config
        self.actions = actions
        self.env = os.environ if env is None else env
        self.store = store if store is not None else MemoryStore()
        self.router = router if router is not None else Router(config.intents, cache_dir=cache_dir)
        self.action_timeout = action_timeout
        # Shared with the Bot that replaces this one on a reload, so turns in flight keep working.
        self.action_pool = action_pool or ThreadPoolExecutor(max_workers=8, thread_name_prefix="hybridbot-action")
        self.llm = llm if llm is not None else self._default_llm()
        # Slot answers are read with the router's own extractor (built once, with its compiled tables).
        self.engine = Engine(config, self.run_action, self.router.extractor.extract)
        self.turns = TurnRunner(self)
        self.handoffs = notifier_for(self.env, handoff_spool)  # None without BOT_HANDOFF_EMAIL or _WEBHOOK
        if self.handoffs is None:
            _warn_unannounced_handoffs(self.engine)
        self.redactor = Redactor(config.privacy)
        self.last_good: Any = None  # a lastgood.LastGood while serving the last good version of broken files
        self.loaded_generation: int | None = None  # the store's reload generation when from_path read the files

    @classmethod
    def from_path(cls, path: str | Path, *, store: Any = None, llm: Any = None,
                  env: Mapping[str, str] | None = None, last_good: bool = False, **kwargs: Any) -> "Bot":
        """Load the bot in ``path``; raises ConfigErrors listing every mistake in its files.

        A clean load keeps its YAML in the cache folder. With ``last_good`` (what a web server
        does at start) files with errors make it serve the last version that loaded clean
        instead, with ``bot.last_good`` saying so (see ``bot.lastgood``); the errors are still
        raised when there is no such version.
        """
        from . import lastgood
        from .store import open_store

        env = os.environ if env is None else env
        root = Path(path).resolve()
        cache = Path(env["BOT_CACHE_DIR"]) if env.get("BOT_CACHE_DIR") else root / "var" / "cache"
        kwargs.setdefault("cache_dir", cache)
        kwargs.setdefault("handoff_spool", root / "var" / "handoffs")  # BOT_HANDOFF_SPOOL wins
        actions = ActionRegistry()
        kept, opened = None, store is None
        store = open_store(env.get("BOT_STORE"), root=root) if store is None else store
        generation = _reload_generation(store)  # before the files are read: a reload asked later is seen
        try:
            try:
                config = load_config(root, actions)
            except ConfigErrors as errors:
                if not last_good:
                    raise
                config, actions, kept = lastgood.restore(root, kwargs["cache_dir"], errors)
            else:
                lastgood.save(config, kwargs["cache_dir"])
            bot = cls(config, actions, store=store, llm=llm, env=env, **kwargs)
        except BaseException:
            if opened:  # the store this call opened is nobody else's to close
                store.close()
            raise
        bot.last_good, bot.loaded_generation = kept, generation
        return bot

    def _default_llm(self) -> Any:
        settings = self.config.fallback
        if settings is None:
            return None
        from .llm import OpenAIChat

        client = OpenAIChat(settings, env=self.env)
        if not client.available:
            log.warning("LLM fallback is off: no OPENAI_API_KEY is set, so unmatched messages get the scripted "
                        "'unavailable' text of %s. Set OPENAI_API_KEY (and OPENAI_BASE_URL for an "
                        "OpenAI-compatible server) to enable it.", settings.source.file)
        return client

    # -- public API -----------------------------------------------------------------------------
    @staticmethod
    def new_conversation_id() -> str:
        """A server-issued, unguessable id (192 random bits)."""
        return secrets.token_urlsafe(24)

    def handle(self, conversation_id: str | None, text: str, *, user: Mapping[str, Any] | None = None,
               now: datetime | None = None, must_exist: bool = False) -> Turn:
        """Answer one message and return the whole turn (the streamed events, collected)."""
        turn = None
        for name, data in self.stream(conversation_id, text, user=user, now=now, must_exist=must_exist):
            if name == "turn":
                turn = data
        assert turn is not None
        return turn

    def stream(self, conversation_id: str | None, text: str, *, user: Mapping[str, Any] | None = None,
               now: datetime | None = None, must_exist: bool = False) -> Iterator[tuple[str, Any]]:
        """Answer one message as events: ("meta", {...}), ("delta", {"text", "index"})..., then
        ("done", {...}) and finally ("turn", Turn). Rule replies arrive as one delta each.

        ``conversation_id`` None starts a new conversation. With ``must_exist`` (what the web
        API does) an id that is unknown, idle-expired or owned by another verified user raises
        UnknownConversation before any event, and nothing is stored; without it such an id
        starts a new conversation under that id."""
        if conversation_id is None:
            conversation_id, must_exist = self.new_conversation_id(), False
        return self.turns.run(conversation_id, clean_text(text), user, now, must_exist)

    def transcript(self, conversation_id: str) -> list[dict] | None:
        return self.store.transcript(conversation_id)

    def feedback(self, conversation_id: str, turn_id: str, rating: str, comment: str = "") -> bool:
        return self.store.add_feedback(conversation_id, turn_id, rating, self.redactor.for_feedback(comment))

    def close(self) -> None:
        self.action_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    # -- handlers ---------------------------------------------------------------------------------
    def run_action(self, name: str, fields: dict[str, Any], source: Source) -> Reply:
        """Call a handler with a time limit; every failure becomes an ActionError naming the step."""
        if name not in self.actions:
            log.error("%s: no action %r is registered", source, name)
            raise ActionError(name, "no handler with this name is registered", str(source))
        ctx = Context(**fields, log=logging.getLogger(f"bot.actions.{name}"))
        spec = self.actions.spec(name)
        limit = self.action_timeout if spec.timeout is DEFAULT_TIMEOUT else spec.timeout
        started = time.perf_counter()
        try:
            if limit is None:  # @action(timeout=None): computes only, so no thread switch
                result = spec.fn(ctx)
            else:
                result = self.action_pool.submit(spec.fn, ctx).result(timeout=limit)
        except FutureTimeout:
            log.error("%s: action %r took longer than %g s; the visitor got the flow's error text", source, name,
                      limit)
            raise ActionError(name, f"took longer than {limit:g} s", str(source)) from None
        except Exception as exc:
            log.error("%s: action %r raised %s: %s", source, name, type(exc).__name__, exc,
                      exc_info=(type(exc), exc, exc.__traceback__))
            raise ActionError(name, f"raised {type(exc).__name__}", str(source)) from None
        log.debug("action %r took %.1f ms", name, (time.perf_counter() - started) * 1000)
        if result is None:
            return Reply()
        if isinstance(result, str):
            return Reply(text=result)
        if isinstance(result, Reply):
            return result
        log.error("%s: action %r returned %s; a handler returns str, Reply or None", source, name,
                  type(result).__name__)
        raise ActionError(name, f"returned {type(result).__name__}; a handler returns str, Reply or None",
                          str(source))


def _reload_generation(store: Any) -> int | None:
    try:
        return int(store.reload_generation())
    except (StoreError, AttributeError):  # down for now, or a store without reloads (a test double)
        return None
