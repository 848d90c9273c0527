"""Data retention: delete transcripts idle for longer than ``privacy.retention_days``, by command or daily."""
from __future__ import annotations

import logging
import os
import random
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import click

from .errors import ConfigError, ConfigErrors, StoreError
from .redaction import PrivacySettings, PrivacySettingsError

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
FIRST_RUN_DELAY = 60.0  # seconds after start, plus up to as much again at random (workers spread out)


def purge_command(store: Any, days: float, *, now: datetime | None = None) -> int:
    """Delete every conversation last active more than ``days`` days ago; returns how many.

    Args:
        store: a ConversationStore.
        days: the retention period (0 deletes every conversation not active right now).
        now: the reference time (default: now, UTC).
    """
    if days < 0:
        raise ValueError(f"the retention period must be >= 0 days, got {days}")
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    count = store.purge(older_than=cutoff)
    log.info("retention: deleted %d conversation(s) idle since before %s", count,
             cutoff.isoformat(timespec="seconds"))
    return count


def retention_days_of(bot: Any) -> int | None:
    """The bot's ``privacy.retention_days`` (None: keep transcripts until deleted)."""
    privacy = getattr(bot.config, "privacy", None)
    return privacy.retention_days if isinstance(privacy, PrivacySettings) else None


def privacy_from_dir(root: Path) -> PrivacySettings:
    """The ``privacy:`` block of ``root/intents.yaml``, read without loading the whole bot.

    Raises:
        ConfigErrors: the file is missing, not YAML, or its privacy block is wrong (with file:line:col).
    """
    from .yamlfile import read

    path = Path(root) / "intents.yaml"
    if not path.is_file():
        raise ConfigErrors([ConfigError(str(path), 0, 0, "no intents.yaml here: is this a bot directory?")])
    try:
        doc = read(path, "intents.yaml")
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    data = doc.data if isinstance(doc.data, dict) else {}
    try:
        return PrivacySettings.from_mapping(data.get("privacy"))
    except PrivacySettingsError as exc:
        raise ConfigErrors([doc.error(exc.path, str(exc))]) from None


class RetentionWorker:
    """A daemon thread that purges old conversations once a day while the server runs.

    ``days_of`` is asked before every run, so a hot reload that changes ``retention_days``
    applies from the next run; None skips the run. Store errors are logged and retried the
    next day. Every worker process of a server may run one: purging twice is harmless.

    Example::

        worker = RetentionWorker(lambda: holder.bot.store, lambda: retention_days_of(holder.bot))
        worker.start()
        ...
        worker.stop()
    """

    def __init__(self, store_of: Callable[[], Any], days_of: Callable[[], float | None], *,
                 interval: float = DAY, first_delay: float | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        self.store_of = store_of
        self.days_of = days_of
        self.interval = interval
        self.first_delay = (FIRST_RUN_DELAY * (1 + random.random())) if first_delay is None else first_delay
        self.runs = 0
        self.purged = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (again after ``stop``); a no-op while it runs."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hybridbot-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait up to ``timeout`` seconds for a purge in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> int | None:
        """Purge now; the number deleted, or None when no retention period is set or the store failed."""
        days = self.days_of()
        if days is None:
            return None
        try:
            count = purge_command(self.store_of(), days)
        except StoreError as exc:
            log.error("retention: purge failed, trying again in %.0f s: %s", self.interval, exc)
            return None
        self.purged += count
        return count

    def _loop(self) -> None:
        delay = self.first_delay
        while not self._stop.wait(delay):
            self.run_once()
            self.runs += 1
            delay = self.interval


def start_retention(holder_or_bot: Any, *, interval: float = DAY, first_delay: float | None = None
                    ) -> RetentionWorker:
    """Start the daily purge for a served bot (a ``BotHolder`` or a ``Bot``); stop it with ``.stop()``."""
    bot_of: Callable[[], Any] = ((lambda: holder_or_bot.bot) if hasattr(holder_or_bot, "reload")
                                 else (lambda: holder_or_bot))
    worker = RetentionWorker(lambda: bot_of().store, lambda: retention_days_of(bot_of()), interval=interval,
                             first_delay=first_delay)
    worker.start()
    return worker


@click.command("purge")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--older-than", "days", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Delete conversations idle for more than DAYS days (default: privacy.retention_days).")
def purge(directory: Path, days: float | None) -> None:
    """Delete transcripts older than the retention period, from the store BOT_STORE names."""
    from .store import open_store

    if days is None:
        try:
            days = privacy_from_dir(directory).retention_days
        except ConfigErrors as exc:
            click.echo(exc.format(), err=True)
            raise SystemExit(1) from None
        if days is None:
            click.echo("error: no retention period: pass --older-than DAYS or set privacy.retention_days "
                       "in intents.yaml", err=True)
            raise SystemExit(2)
    try:
        store = open_store(os.environ.get("BOT_STORE"), root=directory.resolve())
        try:
            count = purge_command(store, days)
        finally:
            store.close()
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"deleted {count} conversation(s) idle for more than {days:g} day(s)")
