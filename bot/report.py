"""``hybridbot report``: top intents, fallback rate, weak routes, thumbs-down turns, candidate intents."""
from __future__ import annotations

import collections
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Collection

from .report_clusters import Cluster, cluster_messages

log = logging.getLogger(__name__)

LOW_CONFIDENCE_KINDS = ("classifier", "ambiguous")  # the router acted, but on a score, not a rule
_RELATIVE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")


@dataclass(frozen=True)
class TurnLine:
    """One turn as the report shows it."""

    conversation_id: str
    turn_id: str
    created_at: float
    text: str
    reply: str
    kind: str
    intent: str | None
    score: float | None

    @classmethod
    def of(cls, turn: Mapping[str, Any]) -> "TurnLine":
        route = turn.get("route") or {}
        score = route.get("score")
        return cls(conversation_id=str(turn.get("conversation_id", "")), turn_id=str(turn.get("turn_id", "")),
                   created_at=float(turn.get("created_at") or 0.0), text=str(turn.get("text_in", "")),
                   reply="\n".join(r.get("text", "") for r in turn.get("replies") or () if r.get("text")),
                   kind=str(turn.get("kind") or route.get("kind") or "fallback"),
                   intent=turn.get("intent") or route.get("intent"),
                   score=float(score) if isinstance(score, (int, float)) else None)


@dataclass(frozen=True)
class DayStats:
    day: str  # YYYY-MM-DD, UTC
    turns: int
    fallbacks: int

    @property
    def rate(self) -> float:
        return self.fallbacks / self.turns if self.turns else 0.0


@dataclass(frozen=True)
class LowConfidence:
    turn: TurnLine  # the weakest of the repeats
    candidates: tuple[tuple[str, float], ...]  # the router's top candidates
    count: int = 1  # how often this message got this intent


@dataclass(frozen=True)
class ThumbsDown:
    turn: TurnLine
    comment: str
    context: tuple[TurnLine, ...]  # the turns before it in the conversation, oldest first


@dataclass(frozen=True)
class HandedOver:
    turn: TurnLine
    flow: str | None
    slots: Mapping[str, Any]  # the flow's slots when it handed over (how to reach the visitor)

    @property
    def slot_text(self) -> str:
        """``name=value`` for each filled slot, comma-separated (both report formats show this)."""
        return ", ".join(f"{k}={v}" for k, v in self.slots.items() if v is not None)


@dataclass(frozen=True)
class Report:
    since: datetime | None
    first_at: float | None
    last_at: float | None
    turns: int
    conversations: int
    fallbacks: int
    kinds: tuple[tuple[str, int], ...]
    top_intents: tuple[tuple[str, int], ...]
    days: tuple[DayStats, ...]
    low_confidence: tuple[LowConfidence, ...]
    thumbs_down: tuple[ThumbsDown, ...]
    votes: Mapping[str, int]
    llm_turns: int
    llm_errors: tuple[tuple[str, int], ...]
    clusters: tuple[Cluster, ...]
    unclustered: int  # fallback messages that grouped with no other
    handoffs: tuple[HandedOver, ...] = ()  # newest last, at most max_handoffs
    handoff_count: int = 0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.turns if self.turns else 0.0


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``24h``, ``30m`` (ago), or an ISO date / date-time (UTC when no zone is given)."""
    now = now or datetime.now(timezone.utc)
    match = _RELATIVE.match(text)
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        return now - timedelta(**{unit: int(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected 7d, 24h, 30m, 2026-11-01 or 2026-11-01T08:00, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).date().isoformat()


def build_report(store: Any, since: datetime | None = None, *, known_intents: Collection[str] = (),
                 top: int = 15, low_confidence: int = 20, context_turns: int = 3,
                 max_thumbs_down: int = 50, max_handoffs: int = 50) -> Report:
    """Read every turn since ``since`` from ``store.iter_turns`` and summarise them.

    Args:
        store: a ConversationStore (``bot.store.open_store(...)``).
        since: only turns created at or after this time.
        known_intents: the bot's intent names; suggested intent names avoid them.
        top, low_confidence, max_thumbs_down, max_handoffs: how many rows those sections keep
            (the latest handoffs).
        context_turns: earlier turns shown with each thumbs-down turn.
    """
    turns = conversations = fallbacks = llm_turns = 0
    first_at: float | None = None
    last_at = None
    kinds: collections.Counter[str] = collections.Counter()
    intents: collections.Counter[str] = collections.Counter()
    days: dict[str, list[int]] = {}
    weak: dict[tuple[str, str | None], LowConfidence] = {}
    downs: list[ThumbsDown] = []
    votes: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    fallback_texts: collections.Counter[str] = collections.Counter()
    recent: dict[str, collections.deque[TurnLine]] = {}
    handoffs: collections.deque[HandedOver] = collections.deque(maxlen=max(max_handoffs, 0))
    handoff_count = 0
    for raw in store.iter_turns(since=since):
        line = TurnLine.of(raw)
        turns += 1
        first_at = line.created_at if first_at is None else first_at
        last_at = line.created_at
        history = recent.get(line.conversation_id)
        if history is None:
            conversations += 1
            history = recent[line.conversation_id] = collections.deque(maxlen=max(context_turns, 0) or 1)
        kinds[line.kind] += 1
        if line.intent:
            intents[line.intent] += 1
        day = days.setdefault(_day(line.created_at), [0, 0])
        day[0] += 1
        if line.kind == "fallback":
            fallbacks += 1
            day[1] += 1
            if line.text.strip():
                fallback_texts[" ".join(line.text.split())] += 1
        if line.kind in LOW_CONFIDENCE_KINDS and line.score is not None:
            trace = (raw.get("route") or {}).get("trace") or {}
            candidates = tuple((str(n), float(s)) for n, s in (trace.get("candidates") or ())[:3])
            key = (" ".join(line.text.lower().split()), line.intent)
            seen = weak.get(key)
            if seen is None or line.score < (seen.turn.score or 0.0):
                weak[key] = LowConfidence(line, candidates, seen.count + 1 if seen else 1)
            else:
                weak[key] = LowConfidence(seen.turn, seen.candidates, seen.count + 1)
        llm = raw.get("llm")
        if isinstance(llm, Mapping):
            llm_turns += 1
            if llm.get("error"):
                errors[str(llm["error"])] += 1
        feedback = raw.get("feedback")
        if isinstance(feedback, Mapping) and feedback.get("rating"):
            votes[str(feedback["rating"])] += 1
            if feedback["rating"] == "down" and len(downs) < max_thumbs_down:
                context = tuple(history) if context_turns > 0 else ()
                downs.append(ThumbsDown(line, str(feedback.get("comment") or ""), context))
        handoff = raw.get("handoff")
        if isinstance(handoff, Mapping):
            handoff_count += 1
            handoffs.append(HandedOver(line, handoff.get("flow"), dict(handoff.get("slots") or {})))
        history.append(line)
    clusters, unclustered = cluster_messages(fallback_texts, known_intents)
    return Report(
        since=since, first_at=first_at, last_at=last_at, turns=turns, conversations=conversations,
        fallbacks=fallbacks, kinds=tuple(kinds.most_common()), top_intents=tuple(intents.most_common(top)),
        days=tuple(DayStats(d, n, f) for d, (n, f) in sorted(days.items())),
        low_confidence=tuple(sorted(weak.values(), key=lambda w: (w.turn.score, -w.count, w.turn.created_at))
                             [:low_confidence]),
        thumbs_down=tuple(downs), votes=dict(votes), llm_turns=llm_turns, llm_errors=tuple(errors.most_common()),
        clusters=tuple(clusters), unclustered=unclustered, handoffs=tuple(handoffs), handoff_count=handoff_count)


# -- text ------------------------------------------------------------------------------------------
def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def format_text(report: Report) -> str:
    """The report as plain text for a terminal or an e-mail."""
    out = [f"hybridbot report: {report.turns} turns in {report.conversations} "
           f"conversation{'' if report.conversations == 1 else 's'}, "
           f"{_when(report.first_at)} to {_when(report.last_at)}"
           + (f" (since {report.since.isoformat()})" if report.since else "")]
    if not report.turns:
        return out[0] + "\n\nNo turns recorded in this period.\n"
    out += ["", f"Fallback rate: {report.fallback_rate:.1%} ({report.fallbacks} of {report.turns} turns)",
            "Route kinds: " + ", ".join(f"{k} {n}" for k, n in report.kinds),
            f"Feedback: {report.votes.get('up', 0)} up, {report.votes.get('down', 0)} down",
            f"LLM turns: {report.llm_turns}" + ("; errors: " + ", ".join(f"{k} {n}" for k, n in report.llm_errors)
                                             if report.llm_errors else ""),
            "", "Top intents"]
    out += [f"  {n:6d}  {name}" for name, n in report.top_intents] or ["  (none)"]
    out += ["", "Fallback rate per day (UTC)"]
    out += [f"  {d.day}  {d.rate:6.1%}  {d.fallbacks:5d} / {d.turns:<5d} {'#' * round(d.rate * 40)}" for d in report.days]
    out += ["", "Lowest-confidence routes (the bot acted on a weak score)"]
    for w in report.low_confidence:
        others = ", ".join(f"{n} {s:.2f}" for n, s in w.candidates[1:])
        out.append(f"  {w.turn.score:.2f}  {w.turn.intent or '-':<20} {_short(w.turn.text, 50)!r}"
                   + (f" x{w.count}" if w.count > 1 else "") + (f"  (then: {others})" if others else ""))
    if not report.low_confidence:
        out.append("  (none)")
    out += ["", f"Thumbs down ({len(report.thumbs_down)})"]
    for down in report.thumbs_down:
        out.append(f"  conversation {down.turn.conversation_id}, {_when(down.turn.created_at)}"
                   + (f", comment: {_short(down.comment)!r}" if down.comment else ""))
        for ctx in down.context:
            out += [f"      visitor: {_short(ctx.text)}", f"      bot:     {_short(ctx.reply)}"]
        out += [f"    > visitor: {_short(down.turn.text)}", f"    > bot:     {_short(down.turn.reply)}"]
    if not report.thumbs_down:
        out.append("  (none)")
    out += ["", f"Handed to a person ({report.handoff_count})"]
    for h in report.handoffs:
        out.append(f"  conversation {h.turn.conversation_id}, {_when(h.turn.created_at)}, flow {h.flow or '-'}"
                   + (f": {_short(h.slot_text)}" if h.slot_text else ""))
    if not report.handoffs:
        out.append("  (none)")
    out += ["", f"Candidate new intents from fallback messages ({len(report.clusters)} groups, "
                f"{report.unclustered} messages left ungrouped)"]
    for cluster in report.clusters:
        out += ["", f"  {cluster.name}: {cluster.size} messages, about {', '.join(cluster.terms) or '-'}",
                "  intents.yaml (under 'intents:'):", _indent(cluster.intent_yaml, 4),
                f"  flows/{cluster.name}.yaml:", _indent(cluster.flow_yaml, 4)]
    return "\n".join(out) + "\n"


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else line for line in text.rstrip("\n").split("\n"))


def format_html(report: Report) -> str:
    """The report as one self-contained HTML page with inline SVG charts (``bot.report_html``)."""
    from .report_html import format_html as render

    return render(report)


def run_report(directory: str | Path, *, since: str | None = None, html: str | Path | None = None,
               store_url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """What ``hybridbot report`` does: open the bot's store, summarise, optionally write the HTML page.

    The store is ``store_url``, else ``BOT_STORE`` from ``env``, else the bot's SQLite file. The
    intents of ``directory`` are read (when it loads) so suggested names avoid existing ones.
    Returns the text report. Raises ValueError for a bad ``since``, StoreError for the store.
    """
    from .config import load_config
    from .errors import ConfigErrors
    from .store import open_store

    env = os.environ if env is None else env
    start = parse_since(since) if since else None
    try:
        known: Collection[str] = tuple(load_config(directory).intents.intents)
    except ConfigErrors as exc:
        log.warning("report: %s does not load (%d errors); suggested names may repeat existing intents",
                    directory, len(exc.errors))
        known = ()
    store = open_store(store_url or env.get("BOT_STORE"), root=Path(directory))
    try:
        report = build_report(store, start, known_intents=known)
    finally:
        store.close()
    if html is not None:
        Path(html).write_text(format_html(report), encoding="utf-8")
    return format_text(report)
