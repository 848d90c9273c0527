"""Handoff events waiting for delivery, one file each, so a worker that stops or a channel that is
down for a while loses none.

Each event for each channel is written (``<spool>/<channel>/<delivery id>.json``, mode 0600)
before it is queued, and removed once the channel took it or refused it. While a process works
on an event it holds an exclusive ``flock`` on the file: the kernel drops the lock when the
process dies, however it dies. Every process sweeps the spool at start and every
``SWEEP_SECONDS``, and takes the files nobody holds whose next try is due: a stopped worker's
events, and events whose tries all failed (they wait ``RETRY_AFTER`` seconds between rounds).
After ``MAX_AGE`` an event is given up and logged; ``GET /admin/handoffs`` still lists it.

The spool holds what the webhook and the mail carry, slots unredacted (that is how staff reach
the visitor), only until delivery; docs/security.md lists it with the other data at rest.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

log = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0
RETRY_AFTER = 300.0
MAX_AGE = 24 * 3600.0


@dataclass
class Held:
    """An event this process has locked: deliver it, then ``finish`` or ``defer`` it."""

    path: Path
    fd: int
    delivery: str
    payload: dict[str, Any]
    created: float
    next_try: float = 0.0


class Spool:
    """The spool directory (made, mode 0700, if missing)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{directory} is not writable")

    def _lane(self, channel: str) -> Path:
        lane = self.directory / channel
        lane.mkdir(mode=0o700, parents=True, exist_ok=True)  # parents: the spool may have been removed
        return lane

    def add(self, channel: str, delivery: str, payload: Mapping[str, Any]) -> Held:
        """Write the event and lock it for this process (it is locked before it has its name)."""
        lane = self._lane(channel)
        created = time.time()
        tmp = lane / f".{delivery}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _encoded(delivery, created, 0.0, payload))
            os.fsync(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = lane / f"{delivery}.json"
            os.replace(tmp, path)
            _sync_dir(lane)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return Held(path, fd, delivery, dict(payload), created)

    @staticmethod
    def finish(held: Held) -> None:
        """Delivered or refused: the file goes."""
        try:
            held.path.unlink(missing_ok=True)
        finally:
            os.close(held.fd)

    @staticmethod
    def release(held: Held, next_try: float = 0.0) -> None:
        """Leave the event for a later sweep (any process's), not before ``next_try`` (epoch seconds)."""
        try:
            if next_try:  # a new file over the old one: a crash leaves one or the other, never half
                tmp = held.path.with_name(f".{held.delivery}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, _encoded(held.delivery, held.created, next_try, held.payload))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, held.path)
                _sync_dir(held.path.parent)
        finally:
            os.close(held.fd)

    def due(self, channel: str, now: float | None = None, limit: int = 100,
            expired: Callable[[Held], None] | None = None) -> Iterator[Held]:
        """Events of ``channel`` that no process holds and whose next try is due, locked for this one.

        At most ``limit`` are handed out, but every file is looked at: events older than MAX_AGE
        are given up (logged as errors, passed to ``expired``, file removed) and temp files an
        interrupted write left behind for an hour are removed.
        """
        now = time.time() if now is None else now
        lane = self._lane(channel)
        self._clear_temp_files(lane, now)
        taken = 0
        for path in sorted(lane.glob("*.json")):
            held = self._take(path)
            if held is None:
                continue
            if now - held.created > MAX_AGE:
                log.error("handoff of conversation %s was not delivered by %s within %.0f hours; giving up "
                          "(GET /admin/handoffs lists it)", held.payload.get("conversation_id"), channel,
                          MAX_AGE / 3600)
                try:
                    if expired is not None:
                        expired(held)
                finally:
                    self.finish(held)
                continue
            if held.next_try > now or taken >= limit:
                os.close(held.fd)
                continue
            taken += 1
            yield held

    @staticmethod
    def _clear_temp_files(lane: Path, now: float) -> None:
        for tmp in lane.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > 3600:
                    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live ``add`` holds its temp file
                        tmp.unlink()
                    finally:
                        os.close(fd)
            except OSError:
                continue

    @staticmethod
    def _take(path: Path) -> Held | None:
        """The event in ``path`` locked for this process, or None: gone, held elsewhere, or not an event
        (set aside as ``.bad`` when it can be)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None  # delivered meanwhile
        except OSError as exc:  # a directory, a symbolic link, no permission...
            log.error("handoff spool file %s cannot be opened (%s); moved aside", path, exc)
            _set_aside(path)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info = os.fstat(fd)
            if info.st_nlink == 0 or not stat.S_ISREG(info.st_mode):  # finished meanwhile / not a file
                os.close(fd)
                return None
            record = json.loads(os.pread(fd, info.st_size, 0))
            return Held(path, fd, str(record["delivery"]), dict(record["payload"]), float(record["created"]),
                        float(record.get("next_try") or 0.0))
        except BlockingIOError:
            os.close(fd)
            return None  # a live process works on it
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("unreadable handoff spool file %s (%s); moved aside", path, exc)
            _set_aside(path)
            os.close(fd)
            return None


def _encoded(delivery: str, created: float, next_try: float, payload: Mapping[str, Any]) -> bytes:
    """An event's file content (``Spool._take`` reads it back)."""
    record = {"delivery": delivery, "created": created, "next_try": next_try, "payload": payload}
    return json.dumps(record, ensure_ascii=False, default=str).encode()


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(path: Path) -> None:
    """Rename ``path`` to ``*.bad`` so sweeps stop tripping over it (an operator can look at it)."""
    try:
        os.replace(path, path.with_suffix(".bad"))
    except OSError as exc:
        log.error("could not move %s aside: %s", path, exc)
