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

    def _lane(self, channel: str) -> Path:
        lane = self.directory / channel
        lane.mkdir(mode=0o700, exist_ok=True)
        return lane

    def add(self, channel: str, delivery: str, payload: Mapping[str, Any]) -> Held:
        """Write the event and lock it for this process (it is locked before it has its name)."""
        lane = self._lane(channel)
        created = time.time()
        record = {"delivery": delivery, "created": created, "next_try": 0.0, "payload": payload}
        tmp = lane / f".{delivery}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps(record, ensure_ascii=False, default=str).encode())
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
        held.path.unlink(missing_ok=True)
        os.close(held.fd)

    @staticmethod
    def release(held: Held, next_try: float = 0.0) -> None:
        """Leave the event for a later sweep (any process's), not before ``next_try`` (epoch seconds)."""
        try:
            if next_try:  # a new file over the old one: a crash leaves one or the other, never half
                record = {"delivery": held.delivery, "created": held.created, "next_try": next_try,
                          "payload": held.payload}
                tmp = held.path.with_name(f".{held.delivery}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, json.dumps(record, ensure_ascii=False, default=str).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, held.path)
        finally:
            os.close(held.fd)

    def due(self, channel: str, now: float | None = None, limit: int = 100,
            expired: Callable[[Held], None] | None = None) -> Iterator[Held]:
        """Events of ``channel`` that no process holds and whose next try is due, locked for this one.

        Events older than MAX_AGE are given up here (logged as errors, passed to ``expired``, file
        removed).
        """
        now = time.time() if now is None else now
        taken = 0
        for path in sorted(self._lane(channel).glob("*.json")):
            if taken >= limit:
                return
            held = self._take(path)
            if held is None:
                continue
            if now - held.created > MAX_AGE:
                log.error("handoff of conversation %s was not delivered by %s within %.0f hours; giving up "
                          "(GET /admin/handoffs lists it)", held.payload.get("conversation_id"), channel,
                          MAX_AGE / 3600)
                if expired is not None:
                    expired(held)
                self.finish(held)
                continue
            if held.next_try > now:
                os.close(held.fd)
                continue
            taken += 1
            yield held

    @staticmethod
    def _take(path: Path) -> Held | None:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None  # delivered meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # a live process works on it
        try:
            if os.fstat(fd).st_nlink == 0:  # finished between our open and our lock
                raise FileNotFoundError(path)
            record = json.loads(os.pread(fd, os.fstat(fd).st_size, 0))
            return Held(path, fd, str(record["delivery"]), dict(record["payload"]), float(record["created"]),
                        float(record.get("next_try") or 0.0))
        except FileNotFoundError:
            os.close(fd)
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable handoff spool file %s (%s); moved aside", path, exc)
            os.replace(path, path.with_suffix(".bad"))
            os.close(fd)
            return None


def _sync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
