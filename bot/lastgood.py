"""The last good version of a bot's YAML, so a server that starts while an edit is broken still answers.

gunicorn starts workers from the files on disk: at boot, on ``SIGHUP``, and whenever a worker
dies and is replaced. If an analyst's edit is broken at that moment the new worker cannot load
the bot, and gunicorn stops the whole server ("Worker failed to boot"): one typo would take the
site down. So every successful load keeps the files it read (``Config.sources``: intents, flows,
knowledge) in the cache folder, one file per bot directory, and a web server whose bot does not
load serves that version, with the handlers found on disk today, until the files are fixed.
``/readyz`` shows it, and the errors are logged with their ``file:line:col`` as for any failed load.

Handlers are Python code and are not kept: a broken ``actions/`` package still fails the start,
as it should (developers deploy code through tests, not by editing it live).

Example::

    config, actions, kept = restore(root, cache_dir, errors)  # raises ``errors`` if nothing usable
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from .actions import ActionRegistry, discover
from .config import Config, load_config
from .errors import ConfigErrors

log = logging.getLogger(__name__)

FORMAT = 1


def snapshot_path(cache_dir: Path, root: Path) -> Path:
    """Where the last good version of the bot in ``root`` is kept: one file per bot directory,
    so bots that share a cache folder never restore each other's files."""
    tag = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"last-good-{tag}.json"


@dataclass(frozen=True)
class LastGood:
    """What a bot restored by ``restore`` is serving, and why.

    Attributes:
        digest: the config digest of the version served (as ``/readyz`` shows it).
        saved_at: when that version last loaded clean (Unix time).
        errors: what is wrong with the files on disk now.
    """

    digest: str
    saved_at: float
    errors: ConfigErrors


def save(config: Config, cache_dir: Path | None) -> None:
    """Keep ``config``'s files as the last good version (atomic; nothing to do if it already is).

    Never raises: a read-only cache folder only costs the fallback, and is logged.
    """
    if cache_dir is None or not config.sources:
        return
    path = snapshot_path(cache_dir, config.root)
    kept = _read(path)
    if kept is not None and kept.get("digest") == config.digest:
        return
    body = {"format": FORMAT, "root": str(Path(config.root).resolve()), "digest": config.digest,
            "saved_at": time.time(), "files": dict(config.sources)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep the last good version of the bot in %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def restore(root: Path, cache_dir: Path | None, errors: ConfigErrors) -> tuple[Config, ActionRegistry, LastGood]:
    """The config of the last good version and today's handlers, for a bot whose files have ``errors``.

    Raises:
        ConfigErrors: ``errors`` itself when there is no usable last good version (none kept,
            unreadable, or it no longer fits the handlers on disk).
    """
    kept = _read(snapshot_path(cache_dir, root)) if cache_dir is not None else None
    if (kept is None or kept.get("format") != FORMAT or not isinstance(kept.get("files"), dict)
            or kept.get("root") != str(Path(root).resolve())):
        raise errors
    assert cache_dir is not None
    try:
        folder = _unpack(cache_dir, str(kept["digest"]), kept["files"])
    except (OSError, ValueError) as exc:
        log.error("the last good version of the bot in %s cannot be restored: %s", cache_dir, exc)
        raise errors from None
    actions = ActionRegistry()
    if discover(root, actions):
        raise errors  # the handlers themselves are broken: nothing to fall back to
    try:
        config = load_config(folder, actions, discover_actions=False)
    except ConfigErrors as later:
        log.error("the last good version of the bot no longer loads with today's handlers:\n%s", later.format())
        raise errors from None
    last = LastGood(config.digest, float(kept.get("saved_at") or 0.0), errors)
    log.error("the bot in %s has %d error(s); serving its last good version (config %s, loaded clean at %s) "
              "until they are fixed:\n%s", root, len(errors.errors), config.digest,
              time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.saved_at)), errors.format())
    return replace(config, root=root), actions, last


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable last good version of the bot %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _unpack(cache_dir: Path, digest: str, files: dict[str, Any]) -> Path:
    """The kept files written out as a bot folder (once per digest), for the loader to read."""
    if not digest.isalnum():
        raise ValueError(f"bad digest {digest!r}")
    folder = cache_dir / f"last-good-{digest}"
    if folder.is_dir():
        return folder
    tmp = cache_dir / f".last-good-{digest}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, text in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not isinstance(text, str):
            raise ValueError(f"bad file entry {name!r}")
        target = tmp.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    try:
        os.rename(tmp, folder)
    except OSError:  # another worker unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():
            raise
    return folder
