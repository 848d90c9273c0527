"""Overhead of the LLM fallback path over the bare openai client, against one local fake server.

Both sides stream the same reply from the same :class:`bot.fake_openai.FakeOpenAI` in the same
run, interleaved request by request so drift hits both equally. "bare" is
``openai.OpenAI().chat.completions.create(stream=True)`` on prebuilt messages; "hybridbot" builds
the messages (system prompt, demo knowledge, history window) and streams through
``OpenAIChat.stream`` (reader thread, deadlines, usage); "Bot.stream" is a whole fallback turn of
the demo bot (store lock, routing, dialogue engine, message building with history and knowledge,
the client, recording the turn).

Usage: ``python -m bench.run llm`` (or ``python -m bench.llm_overhead``).
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

import openai

from bot.config import LLMSettings
from bot.fake_openai import FakeOpenAI
from bot.llm import OpenAIChat
from bot.prompting import build_messages, format_knowledge, load_knowledge

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 200
WARMUP = 20
REPLY = ("We have three models in stock right now: the compact X3, the Sedan S and the Tourer, "
         "each available for a test drive this week.")
HISTORY = [("user", "hi"), ("assistant", "Hello! How can I help you today?"),
           ("user", "do you sell electric cars"), ("assistant", "Yes, the X3 comes as an electric model.")]
SETTINGS = LLMSettings(system_prompt="You are the assistant of Northwind Motors, a car dealership. "
                                     "Answer briefly and only about the dealership.",
                       unavailable=("Sorry, I can't answer that right now.",), model="fake-1")

QUESTION = "what is the meaning of life, question {n}?"  # goes to the demo bot's LLM fallback
Reply = Callable[[str], Iterable[str]]


def hybridbot_reply(base_url: str, settings: LLMSettings = SETTINGS) -> Reply:
    """Our path: build messages (with the demo bot's knowledge) and stream via OpenAIChat."""
    llm = OpenAIChat(settings, api_key="bench", base_url=base_url, env={})
    knowledge = format_knowledge(load_knowledge(ROOT, settings.knowledge))

    def reply(text: str) -> Iterable[str]:
        messages = build_messages(settings, knowledge_text=knowledge, history=HISTORY, user_text=text)
        return llm.stream(messages)
    return reply


def bot_reply(base_url: str) -> Reply:
    """A whole turn of the demo bot through ``Bot.stream``, answered by its LLM fallback."""
    from bot.app import Bot
    from bot.store import MemoryStore

    bot = Bot.from_path(ROOT, store=MemoryStore(), env={"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": base_url})

    def reply(text: str) -> Iterable[str]:
        for name, data in bot.stream(None, text):
            if name == "delta":
                yield data["text"]
    return reply


def bare_reply(base_url: str, settings: LLMSettings = SETTINGS) -> Reply:
    """The openai client alone, on the same messages built once up front."""
    client = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=0, timeout=settings.timeout_total)
    knowledge = format_knowledge(load_knowledge(ROOT, settings.knowledge))
    prebuilt = build_messages(settings, knowledge_text=knowledge, history=HISTORY, user_text="")

    def reply(text: str) -> Iterable[str]:
        messages = prebuilt[:-1] + [{"role": "user", "content": text}]
        stream = client.chat.completions.create(model=settings.model, messages=messages, stream=True,
                                                stream_options={"include_usage": True},
                                                max_tokens=settings.max_tokens, temperature=settings.temperature)
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    yield choice.delta.content
    return reply


def measure(reply: Reply, text: str) -> tuple[float, float, str]:
    """(seconds to first delta, seconds to the end, the text) of one reply."""
    start = time.perf_counter()
    first = None
    parts = []
    for delta in reply(text):
        if first is None:
            first = time.perf_counter()
        parts.append(delta)
    end = time.perf_counter()
    return (first or end) - start, end - start, "".join(parts)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(*, requests: int = REQUESTS) -> str:
    """Measure and return the ``## LLM fallback overhead`` section of bench/RESULTS.md."""
    quiet = [logging.getLogger(name) for name in ("httpx2", "bot.turn", "bot.app")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # one log line per request would be measured too
        logger.setLevel(logging.ERROR)
    try:
        return _run(requests)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def _run(requests: int) -> str:
    with FakeOpenAI(REPLY) as fake:
        paths = {"bare openai client": bare_reply(fake.base_url), "OpenAIChat.stream": hybridbot_reply(fake.base_url),
                 "Bot.stream (whole turn)": bot_reply(fake.base_url)}
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        names = list(paths)
        for n in range(WARMUP + requests):
            shift = n % len(names)  # rotate the order so drift hits every path equally
            for name in names[shift:] + names[:shift]:
                ttft, total, text = measure(paths[name], QUESTION.format(n=n))
                if text != REPLY:
                    raise RuntimeError(f"{name} returned {text!r}, expected the scripted reply")
                if n >= WARMUP:
                    results[name].append((ttft, total))
        chunks = len(fake.requests[-1].body["messages"])
    rows = []
    stats: dict[str, dict[str, float]] = {}
    for name, values in results.items():
        ttfts, totals = [v[0] * 1000 for v in values], [v[1] * 1000 for v in values]
        stats[name] = {"ttft50": statistics.median(ttfts), "ttft99": percentile(ttfts, 99),
                       "total50": statistics.median(totals), "total99": percentile(totals, 99)}
        s = stats[name]
        rows.append(f"| {name} | {s['ttft50']:.2f} | {s['ttft99']:.2f} | {s['total50']:.2f} | {s['total99']:.2f} |")
    bare = stats[names[0]]
    lines = []
    for name in names[1:]:
        ttft_over = stats[name]["ttft50"] - bare["ttft50"]
        total_over = stats[name]["total50"] - bare["total50"]
        verdict = "meets" if ttft_over <= 10 else "MISSES"
        lines.append(f"- `{name}`: **{ttft_over:+.2f} ms to first token** at p50, {total_over:+.2f} ms in total "
                     f"({verdict} the <= 10 ms target); ratio of p50 totals {stats[name]['total50'] / bare['total50']:.2f}.")
    return "\n".join([
        "## LLM fallback overhead",
        "",
        f"{requests} streamed replies per path ({WARMUP} warm-up), order rotated every round, from one local "
        f"`FakeOpenAI` (`bot/fake_openai.py`, no token delay, {len(REPLY.split())} words in "
        f"{len(REPLY.split())} SSE chunks, {chunks} messages in the last request). Times in ms.",
        "",
        "| path | first token p50 | first token p99 | total p50 | total p99 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Overhead over the bare client:",
        *lines,
    ])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(run())
