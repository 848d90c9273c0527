"""What each step kind does when the engine reaches it."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .config import Button, texts
from .errors import ActionError
from .flows import CallLLM, Handoff
from .program import Instruction, Program

if TYPE_CHECKING:
    from .flows import _Turn

log = logging.getLogger(__name__)


def execute(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    """Run one instruction; True to go on with the next, False when the turn waits or the flow left."""
    try:
        return _STEP[ins.op](turn, frame, program, ins)
    except ActionError as exc:  # already logged where it happened, with the step's file:line
        turn.handler_failed(frame, exc)
    except Exception as exc:  # a template that fails at run time: log it, never show it
        log.error("%s: step %r failed in flow %r: %s: %s", ins.source, ins.op, frame["flow"],
                  type(exc).__name__, exc)
        turn.handler_failed(frame, exc)
    return False


def _say(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    turn.say(turn.render(turn.pick(texts(ins.value)), turn.variables(frame)), ins.buttons)
    frame["pc"] += 1
    return True


def _ask(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    slot = program.flow.slots[ins.value]
    if frame["slots"].get(slot.name) is not None:
        frame["pc"] += 1
        return True
    frame["asking"], frame["attempts"] = slot.name, 0
    question = turn.render(turn.pick(slot.ask), turn.variables(frame)) if slot.ask else \
        f"What is the {slot.name.replace('_', ' ')}?"
    turn.say(question, turn.slot_buttons(slot, ins.buttons))
    return False


def _action(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    fields = turn.context_fields(frame)
    fields["step"] = ins.step_id
    reply = turn.e.run_action(ins.value, fields, ins.source)
    frame["slots"].update(reply.slots)
    frame["result"] = dict(reply.result)
    if reply.text:
        buttons = tuple(Button(b, b) if isinstance(b, str) else b for b in reply.buttons)
        turn.say(reply.text, buttons)
    if reply.goto:
        return jump(turn, frame, program, reply.goto)
    frame["pc"] += 1
    return True


def _set(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    variables = turn.variables(frame)
    for name, value in ins.value.items():
        frame["slots"][name] = turn.render(value, variables) if isinstance(value, str) else value
    frame["pc"] += 1
    return True


def _jump_unless(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    if turn.e.templates.truthy(ins.value, turn.variables(frame)):
        frame["pc"] += 1
    else:
        frame["pc"] = ins.target
    return True


def _jump_to(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    frame["pc"] = ins.target
    return True


def jump(turn: "_Turn", frame: dict, program: Program, target: str) -> bool:
    """Go to a step of this flow (True: carry on running) or start another flow (False)."""
    if target in program.labels:
        frame["pc"] = program.labels[target]
        return True
    if target not in turn.e.programs:
        raise ActionError(frame["flow"], f"goto target {target!r} is neither a step nor a flow")
    turn.stack.remove(frame)
    turn.start(target, carry=frame["slots"])
    return False


def _goto(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    return jump(turn, frame, program, ins.value)


def _llm(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    value = ins.value if isinstance(ins.value, dict) else {"prompt": ins.value}
    prompt = turn.render(value["prompt"], turn.variables(frame))
    turn.out.effects.append(CallLLM(prompt, value.get("max_tokens"), ins.source))
    frame["pc"] += 1
    return True


def _handoff(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    said = texts(ins.value)
    text = turn.render(turn.pick(said), turn.variables(frame)) if said else turn.message("handoff")
    turn.say(text, ins.buttons)
    turn.out.effects.append(Handoff(frame["flow"], dict(frame["slots"])))
    turn.finish(frame, offer_resume=False)
    return False


def _end(turn: "_Turn", frame: dict, program: Program, ins: Instruction) -> bool:
    said = texts(ins.value)
    if said:
        turn.say(turn.render(turn.pick(said), turn.variables(frame)), ins.buttons)
    turn.finish(frame)
    return False


_STEP = {"say": _say, "ask": _ask, "action": _action, "set": _set, "jump_unless": _jump_unless,
         "jump": _jump_to, "goto": _goto, "llm": _llm, "handoff": _handoff, "end": _end}
