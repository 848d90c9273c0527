"""Bot end to end: thread safety, transcripts, streaming events, LLM-assisted routing."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bot.app import Bot
from bot.store import MemoryStore, open_store
from bot.testing import FakeLLM
from botdata import MINIMAL, NOW


def test_fifty_threads_on_one_conversation_are_all_recorded_in_order(tmp_path: Path, router_cache: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'bot.sqlite3'}", root=tmp_path)
    bot = Bot.from_path(MINIMAL, store=store, llm=FakeLLM(), cache_dir=router_cache)
    cid = bot.handle(None, "hello", now=NOW).conversation_id
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            bot.handle(cid, f"when are you open {i}", now=NOW)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    turns = bot.transcript(cid)
    assert len(turns) == 51
    assert [t["seq"] for t in turns] == list(range(1, 52))
    assert sorted(int(t["text_in"].rsplit(" ", 1)[1]) for t in turns[1:]) == list(range(50))
    with store.open(cid) as conv:
        assert conv.state["n"] == 51          # every read-modify-write of the state was kept
    bot.close()


def test_transcript_records_route_latency_and_replies(minimal_bot: Bot) -> None:
    turn = minimal_bot.handle(None, "price of the X3", now=NOW)
    (record,) = minimal_bot.transcript(turn.conversation_id)
    assert record["turn_id"] == turn.turn_id and record["text_in"] == "price of the X3"
    assert record["replies"] == [{"text": "The X3 costs $41,900 and is in stock."}]
    assert record["route"]["kind"] == "rule" and record["route"]["intent"] == "ask_price"
    assert record["latency_ms"] > 0 and record["error"] is None


def test_stream_events_in_order(minimal_bot: Bot) -> None:
    minimal_bot.llm = FakeLLM(["Our address is 1 Main Street."])
    events = list(minimal_bot.stream(None, "what is the meaning of life?", now=NOW))
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-2:] == ["done", "turn"]
    deltas = "".join(data["text"] for name, data in events if name == "delta")
    assert deltas == "Our address is 1 Main Street."
    done = events[-2][1]
    assert done["replies"] == [{"text": "Our address is 1 Main Street."}] and done["incomplete"] is False
    turn = events[-1][1]
    assert turn.llm["model"] == "fake-llm" and turn.llm["completion_tokens"] > 0


def test_visitor_leaving_mid_stream_keeps_a_partial_turn(minimal_bot: Bot) -> None:
    minimal_bot.llm = FakeLLM(["one two three four five"])
    stream = minimal_bot.stream(None, "tell me about the meaning of life", now=NOW)
    meta = next(stream)
    next(stream)                       # the first delta
    stream.close()                     # the browser went away
    (record,) = minimal_bot.transcript(meta[1]["conversation_id"])
    assert record["incomplete"] is True
    assert record["replies"][0]["text"] == "one "


def test_knowledge_is_sent_as_quoted_data(minimal_bot: Bot) -> None:
    llm = FakeLLM(["Sure."])
    minimal_bot.llm = llm
    minimal_bot.handle(None, "what is the meaning of life?", now=NOW)
    system = llm.calls[0][0]
    assert system["role"] == "system" and "1 Main Street, Springfield" in system["content"]
    assert "meaning of life" not in system["content"]


INTENTS = """\
    version: 1
    router:
      threshold: 0.9
      llm_assist: {enabled: true, band: 0.9}
    intents:
      weather:
        description: Ask about the weather
        examples: [what's the weather, is it raining, weather forecast, will it be sunny]
      greet:
        description: Say hello
        examples: [hello, hi there, good morning, hey]
"""
FLOWS = {"weather": "version: 1\ntrigger: weather\nsteps:\n  - say: Sunny.\n",
         "greet": "version: 1\ntrigger: greet\nsteps:\n  - say: Hello!\n"}


def test_llm_assisted_routing_only_when_unsure(make_bot) -> None:
    llm = FakeLLM(intents={"do I need an umbrella": "weather", "sdfsdf": None})
    bot = make_bot(INTENTS, FLOWS, llm=llm)
    turn = bot.handle(None, "do I need an umbrella")
    assert turn.text == "Sunny." and turn.route["trace"]["llm_assist"]["chose"] == "weather"
    assert bot.handle(None, "sdfsdf").kind == "fallback"
    assert [text for text, _ in llm.intent_calls] == ["do I need an umbrella", "sdfsdf"]


def test_store_failure_is_raised_not_hidden(make_bot) -> None:
    from bot.errors import StoreError

    class DownStore(MemoryStore):
        def open(self, conversation_id, *, create=True):
            raise StoreError("redis is down")

    bot = make_bot(INTENTS.replace("enabled: true", "enabled: false"), FLOWS)
    bot.store = DownStore()
    with pytest.raises(StoreError):
        bot.handle(None, "hello")
