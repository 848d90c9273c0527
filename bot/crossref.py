"""Second loading pass: every name a file refers to must exist, every flow must be reachable."""
from __future__ import annotations

import logging
import re
from typing import Iterable, Mapping

from .actions import ActionRegistry
from .config import BUILTIN_ENTITIES, OUT_OF_SCOPE, Flow, IntentDef, IntentsConfig, LLMSettings, Source, Step, texts
from .errors import ConfigError
from .patterns import check_pattern
from .router import normalize
from .schemacheck import suggest
from .templates import TEMPLATE_NAMES, Templates
from .yamlfile import YamlDoc

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"(?<!\{)\{([a-z][a-z0-9_]*)\}(?!\})")


class _Checker:
    def __init__(self, intents: IntentsConfig, flows: Mapping[str, Flow], registry: ActionRegistry,
                 docs: Mapping[str, YamlDoc]) -> None:
        self.intents = intents
        self.flows = flows
        self.registry = registry
        self.docs = docs
        self.templates = Templates()
        self.errors: list[ConfigError] = []

    def error(self, source: Source, message: str, col: int | None = None) -> None:
        doc = self.docs.get(source.file)
        line_text = doc.line_text(source.line) if doc else ""
        self.errors.append(ConfigError(source.file, source.line, col or source.col, message, line_text))

    def value_col(self, source: Source, value: object) -> int:
        """Column of ``value`` on the source line (so the caret points at the wrong name)."""
        doc = self.docs.get(source.file)
        text = doc.line_text(source.line) if doc else ""
        index = text.find(str(value), max(source.col - 1, 0))
        return index + 1 if index >= 0 else source.col

    # -- intents.yaml --------------------------------------------------------------------
    def check_intents(self) -> None:
        entity_names = set(self.intents.entities) | set(BUILTIN_ENTITIES)
        for entity in self.intents.entities.values():
            if entity.kind == "regex" and entity.regex:
                self.check_regex(entity.regex, self.item_source(entity.source, ("entities", entity.name, "regex")),
                                 f"entity {entity.name!r}: regex")
        for intent in self.intents.intents.values():
            for key in ("examples", "patterns"):
                for index, text in enumerate(getattr(intent, key)):
                    for name in _PLACEHOLDER.findall(text):
                        if name not in entity_names:
                            src = self.item_source(intent.source, ("intents", intent.name, key, index))
                            self.error(src, f"intent {intent.name!r} uses unknown entity {{{name}}} in {text!r}"
                                       f"{suggest(name, entity_names)}", self.value_col(src, "{" + name + "}"))
            for index, pattern in enumerate(intent.patterns):
                self.check_regex(pattern, self.item_source(intent.source, ("intents", intent.name, "patterns", index)),
                                 f"intent {intent.name!r}: pattern", entity_names)
        self.check_shared_examples()
        for key, values in self.intents.messages.items():
            self.check_texts(values, Source("intents.yaml", *self.docs["intents.yaml"].position(("messages", key))),
                             None, allowed=("options", "flow", "user", "slot", "value"))

    def check_shared_examples(self) -> None:
        """An example under two intents (as the router sees it: case and spacing aside) teaches
        the classifier that one message means both; it is an error at the second place."""
        def source(intent: IntentDef, index: int) -> Source:
            return self.item_source(intent.source, ("intents", intent.name, "examples", index))

        first: dict[str, tuple[IntentDef, int]] = {}
        for intent in self.intents.intents.values():
            for index, text in enumerate(intent.examples):
                other, other_index = first.setdefault(normalize(text), (intent, index))
                if other.name != intent.name:
                    seen = source(other, other_index)
                    self.error(source(intent, index), f"example {text!r} of intent {intent.name!r} is also an "
                               f"example of intent {other.name!r} ({seen.file}:{seen.line}:{seen.col}); a message "
                               "can mean only one intent: keep it under one of them")

    def item_source(self, owner: Source, path: tuple, *, key: bool = False) -> Source:
        """Where ``path`` is in ``owner``'s file: its value, or with ``key`` its key."""
        doc = self.docs.get(owner.file)
        if doc is None:
            return owner
        line, col = doc.position(path, key=key)
        return Source(owner.file, line, col)

    def check_regex(self, pattern: str, src: Source, what: str, entities: Iterable[str] | None = None) -> None:
        problem = check_pattern(pattern, set(entities) if entities is not None else None)
        if not problem:
            return
        found = re.match(r"at position (\d+): (.*)", problem, flags=re.S)
        offset, message = (int(found.group(1)), found.group(2)) if found else (0, problem)
        start = self.value_col(src, pattern) if src.line else src.col
        self.error(src, f"{what} {pattern!r}: {message}", start + offset)

    # -- flows ---------------------------------------------------------------------------------
    def check_flow(self, flow: Flow) -> None:
        intent_names = [n for n in self.intents.intents if n != OUT_OF_SCOPE]
        doc = self.docs.get(flow.source.file)
        for trigger in flow.triggers:
            if trigger not in self.intents.intents or trigger == OUT_OF_SCOPE:
                line, col = doc.position(("trigger",)) if doc else (1, 1)
                src = Source(flow.source.file, line, col)
                self.error(src, f"unknown intent {trigger!r} in 'trigger'{suggest(trigger, intent_names)}",
                           self.value_col(src, trigger))
        entity_names = set(self.intents.entities) | set(BUILTIN_ENTITIES)
        for slot in flow.slots.values():
            if slot.entity and slot.entity not in entity_names:
                self.error(slot.source, f"slot {slot.name!r} uses unknown entity {slot.entity!r}"
                           f"{suggest(slot.entity, entity_names)}; declare it under 'entities:' in intents.yaml "
                           f"or use a built-in one ({', '.join(BUILTIN_ENTITIES)})")
            if slot.validate:
                self.check_action(slot.validate, slot.source)
            if slot.regex:
                self.check_regex(slot.regex, self.item_source(flow.source, ("slots", slot.name, "regex")),
                                 f"slot {slot.name!r}: regex")
            if slot.on_fail:
                self.check_target(flow, slot.on_fail, slot.source)
            if slot.remember and not slot.entity:
                self.error(self.item_source(flow.source, ("slots", slot.name, "remember"), key=True),
                           f"slot {slot.name!r}: 'remember' reuses a value of the slot's entity the visitor named "
                           "earlier, so it needs 'entity:' too (e.g. entity: car_model)")
            self.check_texts(slot.ask + slot.reprompt, slot.source, flow)
        seen: dict[str, Source] = {}
        for step in _all_steps(flow.steps):
            if step.id:
                if step.id in seen:
                    self.error(step.source, f"step id {step.id!r} is used twice in this flow (first at line "
                               f"{seen[step.id].line})")
                seen[step.id] = step.source
        for step in _all_steps(flow.steps):
            self.check_step(flow, step)
        self.check_texts(flow.error, flow.source, flow)

    def check_step(self, flow: Flow, step: Step) -> None:
        src = step.source
        if step.kind == "action":
            self.check_action(step.value, src)
        elif step.kind == "ask":
            if step.value not in flow.slots:
                self.error(src, f"unknown slot {step.value!r} in 'ask'{suggest(step.value, flow.slots)}; declare it "
                           f"under 'slots:' at the top of this flow", self.value_col(src, step.value))
        elif step.kind == "goto":
            self.check_target(flow, step.value, src)
        elif step.kind == "set":
            for name, value in step.value.items():
                if name not in flow.slots:
                    self.error(src, f"unknown slot {name!r} in 'set'{suggest(name, flow.slots)}; declare it under "
                               f"'slots:' at the top of this flow", self.value_col(src, name))
                if isinstance(value, str):
                    self.check_template(value, src, flow)
        elif step.kind == "if":
            self.check_template(step.value, src, flow, expression=True)
        elif step.kind in ("say", "handoff", "end"):
            self.check_texts(texts(step.value), src, flow)
        elif step.kind == "llm":
            prompt = step.value if isinstance(step.value, str) else step.value.get("prompt", "")
            self.check_template(prompt, src, flow)

    def check_action(self, name: str, src: Source) -> None:
        if name not in self.registry:
            hint = suggest(name, self.registry.names())
            known = ", ".join(self.registry.names()) or "none yet"
            self.error(src, f"unknown action {name!r}{hint}; registered actions: {known}", self.value_col(src, name))

    def check_target(self, flow: Flow, target: str, src: Source) -> None:
        steps = flow.step_ids()
        if target in steps or target in self.flows:
            return
        choices = list(steps) + list(self.flows)
        self.error(src, f"goto target {target!r} is neither a step id in this flow nor a flow"
                   f"{suggest(target, choices)}", self.value_col(src, target))

    def check_texts(self, texts: Iterable[str], src: Source, flow: Flow | None,
                    allowed: tuple[str, ...] = TEMPLATE_NAMES) -> None:
        for text in texts:
            self.check_template(text, src, flow, allowed=allowed)

    def check_template(self, text: str, src: Source, flow: Flow | None, *, expression: bool = False,
                       allowed: tuple[str, ...] = TEMPLATE_NAMES) -> None:
        if not expression and "{" not in text:
            return
        error, line_offset, used = self.templates.check(text, expression=expression)
        if error:
            self.error(Source(src.file, src.line + line_offset, src.col), error)
            return
        for name, attr in sorted(used, key=lambda u: (u[0], u[1] or "")):
            if name not in allowed:
                self.error(src, f"undefined template variable {name!r}{suggest(name, allowed)}; "
                           f"available: {', '.join(allowed)}", self.value_col(src, name))
            elif name == "slots" and attr and flow is not None and attr not in flow.slots:
                self.error(src, f"undefined slot {attr!r} in template{suggest(attr, flow.slots)}; declare it under "
                           f"'slots:' at the top of this flow", self.value_col(src, attr))

    def check_reachable(self, every_flow_loaded: bool) -> None:
        targets = set()
        for flow in self.flows.values():
            for step in _all_steps(flow.steps):
                if step.kind == "goto":
                    targets.add(step.value)
            targets.update(s.on_fail for s in flow.slots.values() if s.on_fail)
        for flow in self.flows.values():
            if not flow.triggers and flow.id not in targets:
                self.error(flow.source, f"flow {flow.id!r} can never start: add 'trigger: <intent>' or a "
                           f"'goto: {flow.id}' step in another flow")
        if not every_flow_loaded:  # a flow file with errors may well be the one that starts it
            return
        triggered = {t for f in self.flows.values() for t in f.triggers}
        for intent in self.intents.intents.values():
            if intent.name != OUT_OF_SCOPE and intent.name not in triggered:
                self.error(intent.source, f"intent {intent.name!r} starts no flow: add a flow file "
                           f"flows/{intent.name}.yaml with 'trigger: {intent.name}'")


def _all_steps(steps: tuple[Step, ...]) -> Iterable[Step]:
    for step in steps:
        yield step
        yield from _all_steps(step.then)
        yield from _all_steps(step.orelse)


def check_references(intents: IntentsConfig, flows: Mapping[str, Flow], fallback: LLMSettings | None,
                     registry: ActionRegistry, docs: Mapping[str, YamlDoc], *,
                     every_flow_loaded: bool = True) -> list[ConfigError]:
    """All cross-reference errors of a loaded bot."""
    checker = _Checker(intents, flows, registry, docs)
    checker.check_intents()
    for flow in flows.values():
        checker.check_flow(flow)
    checker.check_reachable(every_flow_loaded)
    if fallback is not None:
        checker.check_texts(fallback.unavailable, fallback.source, None)
    return checker.errors
