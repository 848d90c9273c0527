"""Filling, validating and correcting slots from what the visitor wrote."""
from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from .actions import Reply
from .config import Flow, SlotDef
from .errors import ActionError

log = logging.getLogger(__name__)


@dataclass
class Corrections:
    changed: list[tuple[str, Any]] = field(default_factory=list)   # (slot, new value)
    refused: list[tuple[str, str]] = field(default_factory=list)   # (slot, its checks' own words why)


@dataclass(frozen=True)
class Filled:
    ok: bool
    value: Any = None
    reprompt: str | None = None      # a validator's own words for why the answer was refused
    error: Exception | None = None   # the validator itself failed


def _matches_for(flow: Flow, route: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for m in getattr(route, "entities", ()) or ():
        found.setdefault(m.name, []).append(m.value)
    return found


class SlotFiller:
    def __init__(self, extract: Callable[..., list], run_action: Callable[..., Reply]) -> None:
        self.extract = extract          # (text, only=[names], now=) -> [EntityMatch]
        self.run_action = run_action    # (name, ctx_fields, source) -> Reply

    def prefill(self, flow: Flow, frame: dict, route: Any, fields: dict) -> None:
        """Slots take entities from the message that started the flow: the n-th slot of an
        entity gets the n-th mention of it ("compare the X3 and the Sedan S"). A value the
        slot's checks refuse is left for the question to ask again."""
        found = _matches_for(flow, route)
        for slot in flow.slots.values():
            values = found.get(slot.entity or "", [])
            if slot.entity and values and frame["slots"].get(slot.name) is None:
                checked = self.accept(slot, values.pop(0), fields)
                if checked.ok and checked.error is None:
                    frame["slots"][slot.name] = checked.value

    def recall(self, flow: Flow, frame: dict, memory: dict, turn: int, fields: dict) -> dict[str, Any]:
        """Slots with ``remember`` that are still empty take the value of their entity the visitor
        named in the last ``remember`` turns ("is it electric?" after "what about the Arc"), if
        their checks accept it and no other slot of the flow already holds it; returns them."""
        recalled: dict[str, Any] = {}
        for slot in flow.slots.values():
            if not slot.remember or frame["slots"].get(slot.name) is not None:  # the loader ensures an entity
                continue
            value, named = memory.get(slot.entity) or (None, 0)
            if value is None or turn - named > slot.remember or value in frame["slots"].values():
                continue
            checked = self.accept(slot, value, fields)
            if checked.ok and checked.error is None:
                frame["slots"][slot.name] = recalled[slot.name] = checked.value
                log.debug("slot %r of flow %r: %r from turn %d", slot.name, flow.id, checked.value, named)
        return recalled

    def correct(self, flow: Flow, frame: dict, route: Any, fields: dict, *, skip: str) -> Corrections:
        """Change filled slots whose entity the message mentions with a new, valid value; a new
        value the slot's checks refuse with a reason is listed with that reason."""
        out = Corrections()
        found = _matches_for(flow, route)
        for slot in flow.slots.values():
            if slot.name == skip or not slot.entity or frame["slots"].get(slot.name) is None:
                continue
            siblings = [s for s in flow.slots.values() if s.entity == slot.entity]
            values = found.get(slot.entity, [])
            if len(siblings) == 1 and len(values) == 1 and values[0] != frame["slots"][slot.name]:
                checked = self.accept(slot, values[0], fields)
                if checked.ok and checked.error is None:
                    frame["slots"][slot.name] = checked.value
                    out.changed.append((slot.name, checked.value))
                elif checked.reprompt:
                    out.refused.append((slot.name, checked.reprompt))
        return out

    def fill(self, slot: SlotDef, text: str, route: Any, frame: dict, fields: dict, now: datetime | None) -> Filled:
        value: Any
        if slot.entity:
            values = [m.value for m in self.extract(text, only=[slot.entity], now=now)]
            if not values:
                return Filled(False)
            others = {v for k, v in frame["slots"].items() if k != slot.name}
            value = next((v for v in values if v not in others), values[0])
        else:
            value = text.strip()
            if not value:
                return Filled(False)
        return self.accept(slot, value, fields)

    def accept(self, slot: SlotDef, value: Any, fields: dict) -> Filled:
        """Run the slot's checks (choices, regex, validate handler) on a candidate value."""
        if slot.choices:
            chosen = _choice(str(value), slot.choices)
            if chosen is None:
                return Filled(False)
            value = chosen
        if slot.regex:
            found = re.search(slot.regex, str(value), flags=re.IGNORECASE)
            if not found:
                return Filled(False)
            value = found.group(0)
        if slot.validate:
            return self._validate(slot, value, fields)
        return Filled(True, value)

    def _validate(self, slot: SlotDef, value: Any, fields: dict) -> Filled:
        fields = dict(fields)
        fields["slots"] = {**fields["slots"], slot.name: value}
        try:
            reply = self.run_action(slot.validate, fields, slot.source)
        except ActionError as exc:
            return Filled(False, error=exc)
        if slot.name in reply.slots:
            accepted = reply.slots[slot.name]
            return Filled(accepted is not None, accepted, reply.text)
        if reply.text:
            return Filled(False, reprompt=reply.text)
        return Filled(True, value)


def _choice(value: str, choices: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    key = value.strip().lower()
    if key in lowered:
        return lowered[key]
    contained = [c for c in choices if re.search(rf"\b{re.escape(c.lower())}\b", key)]
    if len(contained) == 1:
        return contained[0]
    close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.8)
    return lowered[close[0]] if close else None
