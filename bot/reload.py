"""Hot reload: a holder of the serving Bot that swaps in a freshly loaded one only if it loads clean."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .app import Bot
from .errors import ConfigErrors, StoreError

log = logging.getLogger(__name__)

WATCHED_FILES = ("intents.yaml",)
WATCHED_DIRS = ("intents", "flows", "actions", "knowledge")
WATCHED_SUFFIXES = (".yaml", ".yml", ".py", ".json")


@dataclass(frozen=True)
class ReloadResult:
    """What one reload attempt did: ``errors`` is None when the new bot is serving."""

    ok: bool
    digest: str
    errors: ConfigErrors | None = None


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file a reload would read, keyed by path relative to ``root``."""
    found: dict[str, tuple[int, int]] = {}
    paths = [root / name for name in WATCHED_FILES]
    for folder in WATCHED_DIRS:
        if (root / folder).is_dir():
            paths.extend(p for p in (root / folder).rglob("*")
                         if p.suffix in WATCHED_SUFFIXES and "__pycache__" not in p.parts)
    for path in paths:
        try:
            stat = path.stat()
        except OSError:  # deleted between listing and stat: it will show as gone
            continue
        found[path.relative_to(root).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return found


class BotHolder:
    """The Bot that answers requests, replaced atomically by ``reload()``.

    A new bot is built off to the side with the same store (so conversations continue) and,
    when the LLM client was injected (tests, FakeLLM), the same LLM client; a default OpenAI
    client is rebuilt so edits to flows/fallback.yaml take effect. If loading fails the old bot
    keeps serving and the errors are logged.

    Example::

        holder = BotHolder(Bot.from_path("."))
        result = holder.reload()
        if not result.ok:
            print(result.errors.format())
    """

    def __init__(self, bot: Bot, *, env: Mapping[str, str] | None = None,
                 loader: Callable[..., Bot] | None = None) -> None:
        self._bot = bot
        self.root = Path(bot.config.root)
        self.env = env
        self.loader = loader or Bot.from_path
        self.loaded_at = time.time()
        self.reloads = 0
        self.last_attempt_at: float | None = None
        self.last_errors: ConfigErrors | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._follower: threading.Thread | None = None
        self.generation = bot.loaded_generation  # the store's reload generation this process has acted on
        self._stop = threading.Event()

    @property
    def bot(self) -> Bot:
        return self._bot

    @property
    def watching(self) -> bool:
        return self._watcher is not None and self._watcher.is_alive()

    def _shared_llm(self) -> Any:
        llm = self._bot.llm
        if llm is None:
            return None
        from .llm import OpenAIChat

        return None if type(llm) is OpenAIChat else llm

    def reload(self) -> ReloadResult:
        """Load the bot directory again and swap it in if it has no errors."""
        with self._lock:
            self.last_attempt_at = time.time()
            old = self._bot
            started = time.perf_counter()
            try:
                new = self.loader(self.root, store=old.store, llm=self._shared_llm(), env=self.env,
                                  action_pool=old.action_pool)
            except ConfigErrors as exc:
                self.last_errors = exc
                log.error("reload of %s failed; the previous bot keeps serving:\n%s", self.root, exc.format())
                return ReloadResult(False, old.config.digest, exc)
            self._bot = new
            self.generation = new.loaded_generation if new.loaded_generation is not None else self.generation
            self.loaded_at = time.time()
            self.reloads += 1
            self.last_errors = None
            log.info("reloaded %s in %.0f ms (config %s -> %s)", self.root,
                     (time.perf_counter() - started) * 1000, old.config.digest[:12], new.config.digest[:12])
            return ReloadResult(True, new.config.digest)

    def reload_everywhere(self) -> ReloadResult:
        """``reload()`` here and, if it worked, ask every process on the same store to reload too
        (each one that ``follow``s: every gunicorn worker of every instance, see ``bot.wsgi``)."""
        result = self.reload()
        if result.ok:
            try:
                self.generation = self._bot.store.request_reload()
            except StoreError as exc:
                log.warning("reloaded here, but could not ask the other workers through the store: %s", exc)
        return result

    def follow(self, interval: float = 2.0) -> None:
        """Poll the store's reload generation every ``interval`` seconds in a daemon thread, and
        reload when another process asked for it (``reload_everywhere``)."""
        if self._follower is not None and self._follower.is_alive():
            return
        self._stop.clear()
        self._follower = threading.Thread(target=self._follow, args=(interval,), name="hybridbot-follow", daemon=True)
        self._follower.start()

    def _follow(self, interval: float) -> None:
        while True:
            try:
                seen = self._bot.store.reload_generation()
            except StoreError as exc:  # the store is down for now: the turns report it; try again
                log.debug("cannot read the reload generation: %s", exc)
                seen = self.generation
            if self.generation is None:
                self.generation = seen
            elif seen is not None and seen != self.generation:
                self.generation = seen
                log.info("another worker asked for a reload (generation %d)", seen)
                try:
                    self.reload()
                except Exception:  # never let the follower die on an unexpected loader error
                    log.exception("reload of %s raised", self.root)
            if self._stop.wait(interval):
                return

    # -- file watching -----------------------------------------------------------------------------
    def watch(self, interval: float = 1.0) -> None:
        """Poll the bot's files every ``interval`` seconds in a daemon thread; reload on change."""
        if self.watching:
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._poll, args=(interval, snapshot(self.root)),
                                         name="hybridbot-reload", daemon=True)
        self._watcher.start()
        log.info("watching %s for changes every %g s", self.root, interval)

    def stop(self) -> None:
        """Stop watching (returns once the thread has ended)."""
        self._stop.set()
        for thread in (self._watcher, self._follower):
            if thread is not None:
                thread.join()
        self._watcher = self._follower = None

    def _poll(self, interval: float, seen: dict[str, tuple[int, int]]) -> None:
        pending: dict[str, tuple[int, int]] | None = None
        while not self._stop.wait(interval):
            try:
                now = snapshot(self.root)
            except OSError as exc:
                log.warning("cannot scan %s for changes: %s", self.root, exc)
                continue
            if now == seen:
                pending = None
                continue
            if now != pending:  # still being written: wait until two polls agree
                pending = now
                continue
            changed = sorted(k for k in now.keys() | seen.keys() if now.get(k) != seen.get(k))
            log.info("files changed: %s", ", ".join(changed))
            seen, pending = now, None
            try:
                self.reload()
            except Exception:  # never let the watcher die on an unexpected loader error
                log.exception("reload of %s raised", self.root)
