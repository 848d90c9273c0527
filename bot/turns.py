"""One turn from message to recorded transcript: route, advance the flow, say or stream, save."""
from __future__ import annotations

import logging
import secrets
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .errors import LLMError, UnknownConversation
from .flows import CallLLM, Handoff, Say
from .handoff import RECENT_TURNS, event
from .metrics import observe_turn

if TYPE_CHECKING:
    from .app import Bot

log = logging.getLogger(__name__)
turn_log = logging.getLogger("bot.turn")


def _reply(text: str, buttons: Any = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text}
    if buttons:
        out["buttons"] = [{"title": b.title, "payload": b.payload, **({"url": b.url} if b.url else {})}
                          for b in buttons]
    return out


def history_pairs(turns: list[dict]) -> list[tuple[str, str]]:
    """(role, text) pairs of earlier turns, rule and LLM replies alike, for the LLM's history."""
    pairs: list[tuple[str, str]] = []
    for t in turns:
        pairs.append(("user", t.get("text_in", "")))
        said = "\n".join(r.get("text", "") for r in t.get("replies", ()) if r.get("text"))
        if said:
            pairs.append(("assistant", said))
    return pairs


@contextmanager
def _opened(store: Any, cid: str, must_exist: bool) -> Iterator[Any]:
    """``store.open(cid)``; with ``must_exist`` an unknown or idle-expired id is UnknownConversation."""
    with ExitStack() as stack:
        try:
            conv = stack.enter_context(store.open(cid, create=not must_exist))
        except KeyError:
            raise UnknownConversation(cid) from None
        yield conv


class TurnRunner:
    def __init__(self, bot: "Bot") -> None:
        self.bot = bot
        self._knowledge_text: str | None = None

    @property
    def knowledge_text(self) -> str:
        if self._knowledge_text is None:
            from .prompting import format_knowledge
            self._knowledge_text = format_knowledge(self.bot.config.knowledge) if self.bot.config.knowledge else ""
        return self._knowledge_text

    def run(self, cid: str, text: str, user: Mapping[str, Any] | None, now: datetime | None,
            must_exist: bool = False) -> Iterator[tuple[str, Any]]:
        from .app import Turn

        bot = self.bot
        started = time.perf_counter()
        turn = Turn(conversation_id=cid, turn_id=secrets.token_hex(8), text_in=text)
        closed = False
        user_id = str(user["id"]) if user and user.get("id") else None
        with _opened(bot.store, cid, must_exist) as conv:
            if conv.user_id is None:
                conv.user_id = user_id  # a verified visitor owns the conversation from now on
            elif conv.user_id != user_id and must_exist:
                raise UnknownConversation(cid)  # another user's: the same answer as an unknown id
            route = self.assisted(bot.router.route(text, now=now), text)
            outcome = bot.engine.advance(conv.state, text, route, conversation_id=cid, user=user, now=now)
            turn.kind, turn.intent, turn.flow, turn.slots = outcome.kind, outcome.intent, outcome.flow, outcome.slots
            # slots taken from memory go in the stored trace, not in the reply's (it shows the public keys)
            trace = {**route.trace, "recalled": outcome.recalled} if outcome.recalled else route.trace
            turn.route = {"kind": outcome.kind, "intent": outcome.intent, "score": round(float(route.score), 4),
                          "flow": outcome.flow, "trace": trace}
            if outcome.errors:
                turn.error = "action"
            for effect in outcome.effects:  # before anything is said: a visitor who leaves mid-reply still handed over
                if isinstance(effect, Handoff):
                    turn.handoff = {"flow": effect.flow, "slots": effect.slots}
            try:
                yield "meta", {"conversation_id": cid, "turn_id": turn.turn_id, "route": turn.route}
                for effect in outcome.effects:
                    if isinstance(effect, Say):
                        turn.replies.append(_reply(effect.text, effect.buttons))
                        yield "delta", {"text": effect.text, "index": len(turn.replies) - 1}
                    elif isinstance(effect, CallLLM):
                        yield from self.llm_reply(conv, turn, effect)
            except GeneratorExit:  # the visitor went away mid-stream: keep what was said
                turn.incomplete = closed = True
            turn.latency_ms = round((time.perf_counter() - started) * 1000, 2)
            record = self.record(turn)
            stored = bot.redactor.for_transcript(record)
            conv.add_turn(stored)
            handoff = self.handoff_event(conv, stored, turn) if turn.handoff and bot.handoffs is not None else None
        if handoff is not None:  # saved: now the people who take over may hear of it
            try:
                bot.handoffs.notify(handoff)
            except Exception:  # the turn is saved and listed at /admin/handoffs: never fail the reply over it
                log.exception("handoff of conversation %s: could not queue the webhook event", cid)
        self.log_turn(turn)
        observe_turn(record, known_intents=bot.config.intents.intents)
        if closed:
            return
        yield "done", {"conversation_id": cid, "turn_id": turn.turn_id, "replies": turn.replies,
                       "incomplete": turn.incomplete, "route": turn.route}
        yield "turn", turn

    def assisted(self, route: Any, text: str) -> Any:
        """LLM-assisted routing (off by default): only when the router is unsure, let the model
        pick one of the top candidates or none."""
        settings = self.bot.config.intents.router
        llm = self.bot.llm
        if not settings.llm_assist or llm is None or not getattr(llm, "available", False) or not route.candidates:
            return route
        top = route.candidates[0][1]
        unsure = route.kind == "ambiguous" or (
            route.kind == "fallback" and settings.threshold - settings.llm_band <= top < settings.threshold)
        if not unsure:
            return route
        intents = self.bot.config.intents.intents
        names = [name for name, _ in route.candidates[:3] if name in intents]
        choice = llm.choose_intent(text, [(n, intents[n].description or n) for n in names],
                                   max_tokens=settings.llm_max_tokens)
        trace = {**route.trace, "llm_assist": {"asked": names, "chose": choice}}
        if choice in names:
            score = dict(route.candidates)[choice]
            return replace(route, intent=choice, kind="classifier", score=score, trace=trace)
        return replace(route, trace=trace)

    def llm_reply(self, conv: Any, turn: Any, effect: CallLLM) -> Iterator[tuple[str, Any]]:
        bot = self.bot
        settings = bot.config.fallback
        index = len(turn.replies)
        turn.replies.append({"text": ""})
        if bot.llm is None or settings is None:
            text = self.scripted("fallback")
            turn.replies[index] = _reply(text)
            yield "delta", {"text": text, "index": index}
            return
        from .llm_guards import check_budget
        from .prompting import build_messages

        used = int(conv.state.get("llm_tokens", 0))
        parts: list[str] = []
        try:
            if not getattr(bot.llm, "available", True):
                raise LLMError("no_key")
            check_budget(settings, used, bot.store.tokens_today())
            messages = build_messages(settings, knowledge_text=self.knowledge_text,
                                      history=history_pairs(conv.history(limit=settings.history_turns)), user_text=turn.text_in,
                                      prompt=effect.prompt)
            stream = bot.llm.stream(bot.redactor.for_llm(messages), max_tokens=effect.max_tokens)
            for delta in stream:
                parts.append(delta)
                turn.replies[index]["text"] = "".join(parts)
                yield "delta", {"text": delta, "index": index}
            usage = stream.usage
        except LLMError as exc:
            turn.error = exc.kind
            # No key is a configured state (announced once at start-up), not an incident.
            log.log(logging.DEBUG if exc.kind == "no_key" else logging.WARNING,
                    "LLM %s for conversation turn %s (status %s, request %s)", exc.kind, turn.turn_id,
                    exc.status_code, exc.request_id)
            if not parts:
                text = "\n".join(settings.unavailable[:1]) if settings.unavailable else self.scripted("fallback")
                turn.replies[index] = _reply(text, settings.buttons)
                turn.llm = {"model": getattr(bot.llm, "model", ""), "error": exc.kind}
                yield "delta", {"text": text, "index": index}
                return
            usage = None
        if usage is not None:
            turn.llm = {"model": usage.model, "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens, "latency_s": round(usage.latency_s, 4),
                        "first_token_s": usage.first_token_s, "finish_reason": usage.finish_reason,
                        "error": usage.error}
            spent = usage.prompt_tokens + usage.completion_tokens
            conv.state["llm_tokens"] = used + spent
            bot.store.add_tokens_today(spent)
            if usage.incomplete:
                turn.incomplete = True
                turn.error = usage.error or "incomplete"

    def scripted(self, key: str) -> str:
        texts = self.bot.config.message(key)
        return texts[0] if texts else ""

    def record(self, turn: Any) -> dict[str, Any]:
        out = {"turn_id": turn.turn_id, "text_in": turn.text_in, "replies": turn.replies, "route": turn.route,
               "kind": turn.kind, "intent": turn.intent, "flow": turn.flow, "latency_ms": turn.latency_ms,
               "llm": turn.llm, "error": turn.error, "incomplete": turn.incomplete, "created_at": time.time()}
        if turn.handoff:
            out["handoff"] = turn.handoff
        return out

    @staticmethod
    def handoff_event(conv: Any, stored: dict[str, Any], turn: Any) -> dict[str, Any]:
        """The webhook body for this turn's handoff: the recent turns as stored (redacted as they
        are), the slots as given (the webhook is how the team reaches the visitor)."""
        try:
            earlier = [t for t in conv.history(limit=RECENT_TURNS) if t.get("turn_id") != stored["turn_id"]]
        except Exception:  # the store could not read the earlier turns: send this one alone
            log.warning("handoff of conversation %s: earlier turns unreadable, sending this turn only", conv.id,
                        exc_info=True)
            earlier = []
        return event(conv.id, stored, turn.handoff, earlier)

    def log_turn(self, turn: Any) -> None:
        turn_log.info("turn", extra={"conversation_id": turn.conversation_id, "turn_id": turn.turn_id,
                                     "route_kind": turn.kind, "intent": turn.intent, "flow": turn.flow,
                                     "score": turn.route.get("score"), "latency_ms": turn.latency_ms,
                                     "llm": turn.llm, "error_kind": turn.error, "incomplete": turn.incomplete})
