"""The handoff spool: events on disk until a channel takes them, across a killed worker and a long outage."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from bot import handoff
from bot.app import Bot
from bot.handoff import Notifier
from bot.handoff_channels import channels_from
from bot.handoff_spool import MAX_AGE, Spool
from bot.metrics import default_metrics
from bot.store import MemoryStore
from botdata import MINIMAL
from test_handoff import Hook

ROOT = Path(__file__).resolve().parents[1]
EVENT = {"event": "handoff", "conversation_id": "c-1", "flow": "contact_human", "slots": {"phone": "+1 555 0100"}}


def counter(outcome: str) -> float:
    return default_metrics().registry.get_sample_value(
        "bot_handoff_notifications_total", {"channel": "webhook", "outcome": outcome}) or 0.0


class Sender(Notifier):
    """A notifier that keeps its own outcomes (the process-wide counters are shared with other tests)."""

    outcomes: list[str]


def spool_fds(spool: Path) -> list[str]:
    """This process's open files inside the spool (none once every event is settled)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(spool)):
            found.append(target)
    return found


def files(spool: Path) -> list[Path]:
    return sorted((spool / "webhook").glob("*.json"))


def delivery_ids(hook: Hook) -> list[str]:
    return [headers["x-hybridbot-delivery"] for headers, _ in hook.requests]


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    made: list[Notifier] = []
    yield made
    for notifier in made:
        notifier.stop_sweeping()


def notifier(made: list[Notifier], url: str, spool: Path, **options: object) -> Sender:
    outcomes: list[str] = []
    sender = Sender(channels_from({"BOT_HANDOFF_WEBHOOK": url}), spool=Spool(spool),
                    on_result=lambda channel, outcome: outcomes.append(outcome), sleep=lambda s: None,
                    **options)  # type: ignore[arg-type]
    sender.outcomes = outcomes
    made.append(sender)
    return sender


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_event_is_on_disk_until_the_channel_takes_it(tmp_path: Path, notifiers: list[Notifier]) -> None:
    hold = threading.Event()
    hook = Hook(hold=hold)
    try:
        sender = notifier(notifiers, hook.url, tmp_path / "spool")
        sender.notify(EVENT)
        assert hook.arrived.wait(5)
        (kept,) = files(tmp_path / "spool")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
        assert json.loads(kept.read_text())["payload"] == EVENT  # unredacted: it is how staff reach the visitor
        hold.set()
        assert sender.wait_idle(5)
        wait_until(lambda: sender.outcomes == ["delivered"])
        assert files(tmp_path / "spool") == [] and spool_fds(tmp_path / "spool") == []
    finally:
        hook.close()


KILLED_WORKER = """
import sys, time
from pathlib import Path
from bot.handoff import Notifier
from bot.handoff_channels import channels_from
from bot.handoff_spool import Spool
notifier = Notifier(channels_from({"BOT_HANDOFF_WEBHOOK": sys.argv[1]}), spool=Spool(Path(sys.argv[2])))
notifier.notify({"event": "handoff", "conversation_id": "c-9", "slots": {"phone": "+1 555 0199"}})
time.sleep(60)
"""


def test_a_killed_workers_event_is_sent_by_the_next_process(tmp_path: Path, notifiers: list[Notifier]) -> None:
    hold = threading.Event()
    stuck, working = Hook(hold=hold), Hook()
    try:
        worker = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, stuck.url, str(tmp_path / "spool")], cwd=ROOT)
        try:
            assert stuck.arrived.wait(20), "the worker never tried"
        finally:
            worker.send_signal(signal.SIGKILL)  # no atexit, no cleanup: what an OOM kill does
            worker.wait(10)
        hold.set()
        assert len(files(tmp_path / "spool")) == 1
        notifier(notifiers, working.url, tmp_path / "spool")  # the next worker: its first sweep finds it
        wait_until(lambda: working.requests and not files(tmp_path / "spool"))
        assert json.loads(working.requests[0][1])["slots"] == {"phone": "+1 555 0199"}
        assert delivery_ids(working) == delivery_ids(stuck)  # the same event: a receiver can drop the repeat
    finally:
        stuck.close()
        working.close()


def test_an_outage_longer_than_the_tries_delays_the_event_but_loses_nothing(
        tmp_path: Path, notifiers: list[Notifier], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "RETRY_AFTER", 0.2)
    hook = Hook(statuses=[503] * handoff.ATTEMPTS + [204])
    try:
        sender = notifier(notifiers, hook.url, tmp_path / "spool", sweep_every=0.05)
        sender.notify(EVENT)
        wait_until(lambda: sender.outcomes == ["deferred", "delivered"])
        assert len(hook.requests) == handoff.ATTEMPTS + 1 and files(tmp_path / "spool") == []
        assert len(set(delivery_ids(hook))) == 1 and spool_fds(tmp_path / "spool") == []
    finally:
        hook.close()


def test_more_events_than_the_queue_holds_wait_on_disk(tmp_path: Path, notifiers: list[Notifier],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff, "HELD", 1)
    hold = threading.Event()
    hook = Hook(hold=hold)
    try:
        sender = notifier(notifiers, hook.url, tmp_path / "spool", sweep_every=0.05)
        for n in range(4):
            sender.notify({**EVENT, "conversation_id": f"c-{n}"})
        assert len(files(tmp_path / "spool")) == 4
        hold.set()
        wait_until(lambda: len(sender.outcomes) == 4)
        sent = sorted(json.loads(body)["conversation_id"] for _, body in hook.requests)
        assert sent == ["c-0", "c-1", "c-2", "c-3"] and sender.outcomes == ["delivered"] * 4
        assert files(tmp_path / "spool") == [] and spool_fds(tmp_path / "spool") == []
    finally:
        hook.close()


def test_a_refused_event_is_not_kept(tmp_path: Path, notifiers: list[Notifier]) -> None:
    hook = Hook(statuses=[400])
    try:
        sender = notifier(notifiers, hook.url, tmp_path / "spool")
        sender.notify(EVENT)
        wait_until(lambda: sender.outcomes == ["failed"])
        assert files(tmp_path / "spool") == [] and len(hook.requests) == 1 and spool_fds(tmp_path / "spool") == []
    finally:
        hook.close()


def test_an_event_a_live_process_holds_is_not_taken(tmp_path: Path) -> None:
    live, other = Spool(tmp_path / "spool"), Spool(tmp_path / "spool")
    held = live.add("webhook", "d-1", EVENT)
    assert list(other.due("webhook")) == []  # the lock is per open file: another process sees the same
    Spool.release(held)
    (taken,) = list(other.due("webhook"))
    assert taken.delivery == "d-1" and taken.payload == EVENT
    Spool.finish(taken)
    assert files(tmp_path / "spool") == []


def test_a_deferred_event_waits_for_its_next_try(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    held = spool.add("webhook", "d-2", EVENT)
    Spool.release(held, next_try=time.time() + 60)
    assert list(spool.due("webhook")) == []
    (due,) = list(spool.due("webhook", now=time.time() + 61))
    assert due.delivery == "d-2"
    Spool.release(due)


def test_an_event_older_than_a_day_is_given_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool")
    held = spool.add("webhook", "d-3", EVENT)
    Spool.release(held)
    given_up: list[str] = []
    with caplog.at_level(logging.ERROR, logger="bot.handoff_spool"):
        late = held.created + MAX_AGE + 1
        assert list(spool.due("webhook", now=late, expired=lambda h: given_up.append(h.delivery))) == []
    assert files(tmp_path / "spool") == [] and "c-1" in caplog.text and "giving up" in caplog.text
    assert given_up == ["d-3"]  # the notifier counts it as failed


def test_a_damaged_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool")
    (tmp_path / "spool" / "webhook").mkdir(exist_ok=True)
    (tmp_path / "spool" / "webhook" / "broken.json").write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="bot.handoff_spool"):
        assert list(spool.due("webhook")) == []
    assert (tmp_path / "spool" / "webhook" / "broken.bad").exists() and "broken.json" in caplog.text


def test_a_bot_keeps_its_spool_in_var_unless_told(tmp_path: Path, notifiers: list[Notifier]) -> None:
    shutil.copytree(MINIMAL, tmp_path / "bot")
    env = {"BOT_HANDOFF_WEBHOOK": "http://127.0.0.1:9/hooks/a"}
    bot = Bot.from_path(tmp_path / "bot", store=MemoryStore(), env=env)
    assert bot.handoffs is not None and bot.handoffs.spool is not None
    notifiers.append(bot.handoffs)
    assert bot.handoffs.spool.directory == (tmp_path / "bot" / "var" / "handoffs").resolve()
    told = Bot.from_path(tmp_path / "bot", store=MemoryStore(),
                         env={**env, "BOT_HANDOFF_SPOOL": str(tmp_path / "elsewhere")})
    assert told.handoffs is not None and told.handoffs.spool is not None
    notifiers.append(told.handoffs)
    assert told.handoffs.spool.directory == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()


def test_a_spool_that_cannot_be_made_leaves_events_in_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {"BOT_HANDOFF_WEBHOOK": "http://127.0.0.1:9/hooks/b", "BOT_HANDOFF_SPOOL": str(blocker / "spool")}
    with caplog.at_level(logging.ERROR, logger="bot.handoff"):
        notifier_ = handoff.notifier_for(env)
    assert notifier_ is not None and notifier_.spool is None
    assert "BOT_HANDOFF_SPOOL" in caplog.text and os.fspath(blocker / "spool") in caplog.text


def test_deferred_is_an_outcome_the_metrics_count() -> None:
    from bot.metrics import observe_handoff_delivery

    before = counter("deferred")
    observe_handoff_delivery("webhook", "deferred")
    assert counter("deferred") == before + 1


def test_the_sweeper_outlives_a_bad_sweep_and_a_bad_file(tmp_path: Path, notifiers: list[Notifier],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool")
    (tmp_path / "spool" / "webhook").mkdir()
    (tmp_path / "spool" / "webhook" / "0-not-an-event.json").mkdir()  # sorts first; must not block the rest
    Spool.release(spool.add("webhook", "d-5", EVENT))
    calls = {"n": 0}
    due = Spool.due

    def flaky(self: Spool, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in one sweep")
        return due(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Spool, "due", flaky)
    hook = Hook()
    try:
        sender = notifier(notifiers, hook.url, tmp_path / "spool", sweep_every=0.05)
        wait_until(lambda: sender.outcomes == ["delivered"])
        assert delivery_ids(hook) == ["d-5"] and files(tmp_path / "spool") == []
        assert (tmp_path / "spool" / "webhook" / "0-not-an-event.bad").is_dir()  # set aside, not swept again
    finally:
        hook.close()


def test_a_forked_worker_leaves_the_parents_events_to_the_parent(tmp_path: Path) -> None:
    sent_log = tmp_path / "sent.log"
    gate = threading.Event()

    class Slow:
        name, where = "webhook", "test"

        def send(self, payload: dict[str, object], delivery: str) -> None:
            with sent_log.open("a") as fh:
                fh.write(f"{os.getpid()} {payload['conversation_id']}\n")
            gate.wait(10)

        def retry(self, problem: str) -> bool:
            return True

    parent = Notifier([Slow()], spool=Spool(tmp_path / "spool"), sleep=lambda s: None)  # type: ignore[list-item]
    try:
        parent.notify({**EVENT, "conversation_id": "c-0"})  # in flight, held up by the gate
        parent.notify({**EVENT, "conversation_id": "c-1"})  # queued behind it
        wait_until(lambda: sent_log.exists())
        child = os.fork()  # what gunicorn --preload does after the app is built
        if child == 0:
            code = 1
            try:
                inherited = parent._sending or any(q.qsize() for q in parent._queues.values())
                gate.set()  # the child's copy
                parent.notify({**EVENT, "conversation_id": "c-child"})
                code = 0 if not inherited and parent.wait_idle(5) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        gate.set()
        assert parent.wait_idle(5)
        lines = [line.split() for line in sent_log.read_text().splitlines()]
        by_parent = sorted(cid for pid, cid in lines if int(pid) == os.getpid())
        by_child = [cid for pid, cid in lines if int(pid) == child]
        assert by_parent == ["c-0", "c-1"] and by_child == ["c-child"]  # each event sent once, by one process
        wait_until(lambda: not files(tmp_path / "spool"))
    finally:
        gate.set()
        parent.stop_sweeping()
