"""Flows compiled to flat instruction lists, so a conversation's position is one integer."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from .config import Button, Flow, Source, Step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Instruction:
    """``op`` is a step kind, or 'jump_unless' (value = condition, target = index) / 'jump'."""

    op: str
    value: Any
    source: Source
    buttons: tuple[Button, ...] = ()
    target: int = -1
    step_id: str | None = None


@dataclass(frozen=True)
class Program:
    flow: Flow
    code: tuple[Instruction, ...]
    labels: Mapping[str, int]  # step id -> index


def compile_flow(flow: Flow) -> Program:
    """Flatten ``if/then/else`` into conditional jumps; step ids become labels."""
    code: list[Instruction] = []
    labels: dict[str, int] = {}

    def emit(steps: tuple[Step, ...]) -> None:
        for step in steps:
            if step.id:
                labels[step.id] = len(code)
            if step.kind == "if":
                branch = len(code)
                code.append(Instruction("jump_unless", step.value, step.source, step_id=step.id))
                emit(step.then)
                if step.orelse:
                    skip = len(code)
                    code.append(Instruction("jump", None, step.source))
                    code[branch] = _retarget(code[branch], len(code))
                    emit(step.orelse)
                    code[skip] = _retarget(code[skip], len(code))
                else:
                    code[branch] = _retarget(code[branch], len(code))
            else:
                code.append(Instruction(step.kind, step.value, step.source, step.buttons, step_id=step.id))

    emit(flow.steps)
    return Program(flow, tuple(code), labels)


def _retarget(ins: Instruction, target: int) -> Instruction:
    return Instruction(ins.op, ins.value, ins.source, ins.buttons, target, ins.step_id)
