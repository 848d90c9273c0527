"""The dialogue engine: runs compiled flows over a JSON state, one visitor message at a time."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Mapping

from .actions import Reply
from .config import OUT_OF_SCOPE, Button, Config, SlotDef, Source
from .program import Program, compile_flow
from .slotfill import SlotFiller
from .templates import Templates

log = logging.getLogger(__name__)

MAX_STEPS_PER_TURN = 200
MAX_STACK = 4
INTERRUPT_SCORE = 0.5  # mid-flow, a classifier match must be at least this sure to interrupt
COMMANDS = {
    "cancel": {"cancel", "stop", "never mind", "nevermind", "forget it", "quit", "abort"},
    "restart": {"restart", "start over", "reset", "start again"},
    "help": {"help", "/help", "help me"},
}
YES = {"yes", "y", "yeah", "yep", "yup", "sure", "ok", "okay", "please", "yes please", "continue",
       "sure thing", "of course", "go on", "let's continue", "lets continue", "resume"}
# Words that say "change what I told you before" rather than "new question".
CORRECTION_CUE = re.compile(r"\b(actually|instead|rather|make (?:it|that)|change (?:it|that|the|to)|switch (?:it|to)|"
                            r"i meant|i mean|not the)\b", re.IGNORECASE)
NO = {"no", "n", "nope", "nah", "no thanks", "not now", "no thank you", "don't", "dont"}


@dataclass(frozen=True)
class Say:
    text: str
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True)
class CallLLM:
    """Let the language model answer; ``prompt`` None means the fallback's system prompt."""

    prompt: str | None = None
    max_tokens: int | None = None
    source: Source | None = None


@dataclass(frozen=True)
class Handoff:
    """The conversation goes to a person: the flow that said so and its slots at that moment."""

    flow: str
    slots: dict[str, Any]


@dataclass
class Outcome:
    effects: list[Any] = field(default_factory=list)
    kind: str = "fallback"
    intent: str | None = None
    flow: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    recalled: dict[str, Any] = field(default_factory=dict)  # slots filled from memory (`remember:`)


def normalise_command(text: str) -> str:
    return re.sub(r"[^\w\s'/]", "", text.lower()).strip()


class Engine:
    """Pure apart from handlers: ``advance(state, ...)`` mutates the JSON state and returns effects."""

    def __init__(self, config: Config, run_action: Callable[..., Reply], extract: Callable[..., list]) -> None:
        self.config = config
        self.programs: dict[str, Program] = {fid: compile_flow(f) for fid, f in config.flows.items()}
        self.templates = Templates()
        self.run_action = run_action  # (name, ctx_fields: dict, source: Source) -> Reply; raises ActionError
        self.filler = SlotFiller(extract, run_action)
        # entities some slot may take from memory (`remember:`): only these are kept in the state
        self.remembered = frozenset(s.entity for f in config.flows.values() for s in f.slots.values()
                                    if s.remember and s.entity)

    def still_known(self, entity: str, value: Any) -> bool:
        """Whether a remembered value is still one of the entity's values (a reload may have removed
        it); values of built-in and regex entities always are."""
        definition = self.config.intents.entities.get(entity)
        return definition is None or definition.kind != "lookup" or value in definition.values

    # -- entry point ------------------------------------------------------------------------
    def advance(self, state: dict, text: str, route: Any, *, conversation_id: str = "",
                user: Mapping[str, Any] | None = None, now: datetime | None = None) -> Outcome:
        state.setdefault("stack", [])
        state["n"] = state.get("n", 0) + 1
        turn = _Turn(self, state, text, route, conversation_id, user, now)
        turn.process()
        turn.remember()
        top = state["stack"][-1] if state["stack"] else None
        turn.out.flow = top["flow"] if top else None
        turn.out.slots = dict(top["slots"]) if top else {}
        return turn.out


class _Turn:
    """The work of one message; split out so the engine itself holds no per-turn state."""

    def __init__(self, engine: Engine, state: dict, text: str, route: Any, cid: str,
                 user: Mapping[str, Any] | None, now: datetime | None) -> None:
        self.e, self.state, self.text, self.route = engine, state, text, route
        self.cid, self.user, self.now = cid, user, now
        self.out = Outcome(kind=route.kind, intent=route.intent)
        self.steps = 0
        self.answered: list[tuple[str, Any]] = []  # (entity, value) of slots answered this turn

    @property
    def threshold(self) -> float:
        return self.e.config.intents.router.threshold

    @property
    def stack(self) -> list[dict]:
        return self.state["stack"]

    def message(self, key: str, **variables: Any) -> str:
        texts = self.e.config.message(key)
        return self.render(self.pick(texts), variables)

    def pick(self, texts: tuple[str, ...] | list[str] | str) -> str:
        if isinstance(texts, str):
            return texts
        return texts[(self.state["n"] - 1) % len(texts)] if texts else ""

    def say(self, text: str, buttons: tuple[Button, ...] = ()) -> None:
        if text or buttons:
            self.out.effects.append(Say(text, buttons))

    def remember(self) -> None:
        """Keep the value of each remembered entity the visitor named this turn, in the message
        or as a slot's answer, with the turn number, for ``SlotFiller.recall`` later; a turn that
        named two values of one entity leaves none to recall."""
        names = self.e.remembered
        if not names:
            return
        memory = self.state.setdefault("memory", {})
        named: dict[str, list[Any]] = {}
        for name, value in [(m.name, m.value) for m in getattr(self.route, "entities", ()) or ()] + self.answered:
            if name in names and value not in named.setdefault(name, []):
                named[name].append(value)
        for name, values in named.items():
            if len(values) == 1:
                memory[name] = [values[0], self.state["n"]]
            else:  # "compare the X3 and the X5": a later "it" could be either, so ask
                memory.pop(name, None)

    def variables(self, frame: dict | None) -> dict[str, Any]:
        slots: dict[str, Any] = {}
        if frame is not None:
            flow = self.e.programs[frame["flow"]].flow
            slots = {name: None for name in flow.slots}
            slots.update(frame["slots"])
        entities: dict[str, Any] = {}
        for m in getattr(self.route, "entities", ()) or ():
            entities.setdefault(m.name, m.value)
        return {"slots": slots, "result": (frame or {}).get("result", {}), "entities": entities, "text": self.text,
                "intent": self.route.intent,
                "user": {"id": None, "name": None, "email": None, **dict(self.user or {})},
                "flow": self.e.programs[frame["flow"]].flow.description if frame else ""}

    def render(self, source: str, variables: Mapping[str, Any]) -> str:
        return self.e.templates.render(source, variables)

    # -- dispatch ---------------------------------------------------------------------------
    def process(self) -> None:
        command = next((c for c, words in COMMANDS.items() if normalise_command(self.text) in words), None)
        if command:
            self.command(command)
            return
        pending = self.state.pop("pending", None)
        if pending and pending.get("kind") == "resume" and self.resume(pending):
            return
        if pending and pending.get("kind") == "clarify":
            chosen = pending["options"].get(self.text.strip()) or pending["options"].get(self.text.strip().lower())
            if chosen:
                self.route = replace(self.route, intent=chosen, kind="rule", score=1.0)
                self.out.intent, self.out.kind = chosen, "rule"
        frame = self.stack[-1] if self.stack else None
        if frame and frame.get("asking"):
            self.answer(frame)
        else:
            self.routed()

    def command(self, command: str) -> None:
        self.out.kind, self.out.intent = "command", command
        if command == "cancel":
            self.stack.clear()
            self.state.pop("pending", None)
            self.say(self.message("cancelled"))
        elif command == "restart":
            self.state.clear()
            self.state.update({"stack": [], "n": 1})
            self.say(self.message("cancelled"))
        else:
            self.say(self.message("help"))
            frame = self.stack[-1] if self.stack else None
            if frame and frame.get("asking"):
                self.ask_again(frame)

    def resume(self, pending: dict) -> bool:
        answer = normalise_command(self.text)
        if answer in YES and self.stack:
            self.out.kind, self.out.intent = "command", "resume"
            self.ask_again(self.stack[-1])
            return True
        if answer in NO:
            self.out.kind, self.out.intent = "command", "decline_resume"
            if self.stack:
                self.stack.pop()
            self.say(self.message("resumed"))
            return True
        if self.stack:  # something else entirely: the paused flow is dropped
            self.stack.pop()
        return False

    def routed(self) -> None:
        route = self.route
        if route.kind == "ambiguous" and len(route.candidates) >= 2:
            options = {}
            buttons = []
            for name, _score in route.candidates[:2]:
                intent = self.e.config.intents.intents.get(name)
                title = (intent.description if intent and intent.description else name.replace("_", " "))
                options[title] = name
                options[title.lower()] = name
                buttons.append(Button(title, title))
            self.state["pending"] = {"kind": "clarify", "options": options}
            self.say(self.message("clarify", options=" or ".join(b.title for b in buttons)), tuple(buttons))
            return
        flows = self.e.config.flows_for_intent(route.intent) if route.intent and route.intent != OUT_OF_SCOPE else []
        if not flows:
            self.out.kind, self.out.intent = "fallback", None
            self.out.effects.append(CallLLM())
            return
        self.start(flows[0].id)

    # -- flows ----------------------------------------------------------------------------------
    def start(self, flow_id: str, carry: Mapping[str, Any] | None = None) -> None:
        program = self.e.programs[flow_id]
        frame = {"flow": flow_id, "pc": 0, "slots": {}, "result": {}, "asking": None, "attempts": 0}
        for name in program.flow.slots:
            if carry and carry.get(name) is not None:
                frame["slots"][name] = carry[name]
        self.e.filler.prefill(program.flow, frame, self.route, self.context_fields(frame))
        memory = self.state.get("memory")
        if memory and any(slot.remember for slot in program.flow.slots.values()):
            known = {name: entry for name, entry in memory.items() if self.e.still_known(name, entry[0])}
            self.out.recalled.update(
                self.e.filler.recall(program.flow, frame, known, self.state["n"], self.context_fields(frame)))
        if self.stack and self.stack[-1]["flow"] == flow_id:
            self.stack.pop()  # asked for the same thing again: start it afresh
        self.stack.append(frame)
        del self.stack[:-MAX_STACK]
        self.run(frame)

    def answer(self, frame: dict) -> None:
        program = self.e.programs[frame["flow"]]
        slot = program.flow.slots[frame["asking"]]
        route = self.route
        strong_other = (route.intent not in (None, OUT_OF_SCOPE) and route.intent not in program.flow.triggers
                        and (route.kind == "rule" or (route.kind == "classifier"
                                                      and route.score >= max(INTERRUPT_SCORE, self.threshold))))
        filled = self.e.filler.fill(slot, self.text, route, frame, self.context_fields(frame), self.now)
        if filled.error is not None:
            self.handler_failed(frame, filled.error)
            return
        checked = bool(slot.entity or slot.choices or slot.regex or slot.validate)
        if filled.ok and not (strong_other and (route.kind == "rule" or not checked)):
            self.out.kind, self.out.intent = "flow", (program.flow.triggers or (None,))[0]
            frame["slots"][slot.name] = filled.value
            if slot.entity in self.e.remembered:
                self.answered.append((slot.entity, filled.value))
            self.e.filler.correct(program.flow, frame, route, self.context_fields(frame), skip=slot.name)
            frame["asking"], frame["attempts"] = None, 0
            if self.asked_at_pc(program, frame, slot.name):
                frame["pc"] += 1  # otherwise it answered a side question; the step at pc asks its own again
            self.run(frame)
            return
        if strong_other and not CORRECTION_CUE.search(self.text):
            self.routed()
            return
        fixes = self.e.filler.correct(program.flow, frame, route, self.context_fields(frame), skip=slot.name)
        if strong_other and not fixes.changed:
            self.routed()
            return
        self.out.kind, self.out.intent = "flow", (program.flow.triggers or (None,))[0]
        if fixes.changed:
            name, value = fixes.changed[0]
            self.say(self.message("corrected", slot=name, value=value))
            self.ask_again(frame)
            return
        if fixes.refused and not filled.ok:
            # "actually make it Sunday" at the time question: say why not (the check's own words
            # ask for another day), take the answer for that slot, then the open question again.
            name, reason = fixes.refused[0]
            self.say(reason, self.slot_buttons(program.flow.slots[name]))
            frame["asking"], frame["attempts"] = name, 0
            return
        frame["attempts"] += 1
        if frame["attempts"] >= slot.max_attempts:
            frame["asking"], frame["attempts"] = None, 0
            if not self.asked_at_pc(program, frame, slot.name):  # a side question: the slot keeps its value
                self.say(self.message("kept", slot=slot.name))
                self.run(frame)
                return
            if slot.on_fail:
                from .steps import jump  # the same goto as a step's

                if jump(self, frame, program, slot.on_fail):
                    self.run(frame)
            else:
                self.stack.pop()
                self.say(self.message("gave_up"))
            return
        if filled.reprompt:  # a handler's words are said as they are, like an action's text: never a template
            self.say(filled.reprompt, self.slot_buttons(slot))
            return
        text = self.pick(slot.reprompt) if slot.reprompt else self.pick(slot.ask)
        self.say(self.render(text, self.variables(frame)), self.slot_buttons(slot))

    @staticmethod
    def asked_at_pc(program: Any, frame: dict, slot: str) -> bool:
        """Whether the step the flow stands on asks ``slot`` (else the slot is a side question)."""
        ins = program.code[frame["pc"]] if frame["pc"] < len(program.code) else None
        return ins is not None and ins.op == "ask" and ins.value == slot

    def ask_again(self, frame: dict) -> None:
        frame["asking"] = None
        self.run(frame)

    def slot_buttons(self, slot: SlotDef, extra: tuple[Button, ...] = ()) -> tuple[Button, ...]:
        return extra or tuple(Button(c, c) for c in slot.choices)

    def context_fields(self, frame: dict) -> dict[str, Any]:
        variables = self.variables(frame)
        return {"conversation_id": self.cid, "text": self.text, "intent": self.route.intent,
                "entities": variables["entities"], "slots": dict(frame["slots"]), "flow": frame["flow"],
                "step": None, "user": dict(self.user) if self.user else None, "result": dict(frame["result"]),
                "now": self.now or datetime.now()}

    def finish(self, frame: dict, *, offer_resume: bool = True) -> None:
        if frame in self.stack:
            self.stack.remove(frame)
        if offer_resume and self.stack and self.stack[-1].get("asking"):
            paused = self.e.programs[self.stack[-1]["flow"]].flow
            self.state["pending"] = {"kind": "resume"}
            self.say(self.message("resume", flow=paused.description or paused.id.replace("_", " ")),
                     (Button("Yes", "Yes"), Button("No", "No")))

    def handler_failed(self, frame: dict, error: Exception) -> None:
        flow = self.e.programs[frame["flow"]].flow
        self.out.errors.append(str(error))
        self.say(self.render(self.pick(flow.error), {}) if flow.error else self.message("error"))
        self.finish(frame, offer_resume=False)

    def run(self, frame: dict) -> None:
        from .steps import execute  # one module per concern: the step kinds live in steps.py

        while frame in self.stack:
            program = self.e.programs[frame["flow"]]
            if frame["pc"] >= len(program.code):
                self.finish(frame)
                return
            self.steps += 1
            ins = program.code[frame["pc"]]
            if self.steps > MAX_STEPS_PER_TURN:
                log.error("%s: more than %d steps in one turn (a goto loop?); flow %r stopped",
                          ins.source, MAX_STEPS_PER_TURN, frame["flow"])
                self.handler_failed(frame, RuntimeError("step limit"))
                return
            if not execute(self, frame, program, ins):
                return
