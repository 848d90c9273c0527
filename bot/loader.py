"""Load a bot directory: each file against its schema, then build the frozen Config."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import schemacheck, yamlfile
from .actions import ActionRegistry, discover
from .config import (DEFAULT_MESSAGES, FALLBACK_FLOW, REMEMBER_TURNS, STEP_KINDS, Button, Config, EntityDef, Flow,
                     IntentDef, IntentsConfig, LLMSettings, RouterSettings, SlotDef, Source, Step, texts)
from .errors import ConfigError, ConfigErrors
from .redaction import PrivacySettings, PrivacySettingsError
from .yamlfile import YamlDoc

log = logging.getLogger(__name__)


def _buttons(raw: Any) -> tuple[Button, ...]:
    out = []
    for b in raw or ():
        if isinstance(b, dict):
            out.append(Button(str(b["title"]), str(b.get("payload") or b["title"]), b.get("url")))
        else:
            out.append(Button(str(b), str(b)))
    return tuple(out)


def remember_turns(raw: Any) -> int:
    """A slot's ``remember``: true is REMEMBER_TURNS, a number that many turns, false or absent 0."""
    if raw is True:
        return REMEMBER_TURNS
    return int(raw) if raw else 0


def _source(doc: YamlDoc, path: tuple, key: bool = True) -> Source:
    line, col = doc.position(path, key=key)
    return Source(doc.name, line, col)


class Loader:
    """Collects every error of every file; ``load()`` raises them all at once."""

    def __init__(self, root: Path, actions: ActionRegistry) -> None:
        self.root = root
        self.errors: list[ConfigError] = []
        self.docs: dict[str, YamlDoc] = {}
        self.knowledge_texts: dict[str, str] = {}
        self.registry = actions

    # -- reading ------------------------------------------------------------------------
    def read(self, path: Path, schema: str) -> YamlDoc | None:
        name = path.relative_to(self.root).as_posix()
        try:
            doc = yamlfile.read(path, name)
        except ConfigError as exc:
            self.errors.append(exc)
            return None
        problems = schemacheck.check(doc, schema)
        if problems:
            self.errors.extend(problems)
            return None
        self.docs[name] = doc
        return doc

    # -- intents --------------------------------------------------------------------------
    def intents(self) -> IntentsConfig | None:
        main = self.root / "intents.yaml"
        if not main.is_file():
            self.errors.append(ConfigError(
                "intents.yaml", 0, 0, f"no intents.yaml in {self.root.as_posix()!r}; a bot directory needs "
                f"at least an intents.yaml (run 'hybridbot validate DIR' on the bot's folder)"))
            return None
        paths = [main] + sorted((self.root / "intents").glob("*.yaml"))
        docs = [self.read(p, "intents") for p in paths]
        if any(d is None for d in docs):
            return None
        first = docs[0]
        assert first is not None
        try:
            self.privacy = PrivacySettings.from_mapping(first.data.get("privacy"))
        except PrivacySettingsError as exc:
            self.errors.append(first.error(exc.path, str(exc)))
        raw_router = first.data.get("router") or {}
        assist = raw_router.get("llm_assist") or {}
        router = RouterSettings(
            threshold=float(raw_router.get("threshold", RouterSettings.threshold)),
            margin=float(raw_router.get("margin", RouterSettings.margin)),
            classifier=raw_router.get("classifier", RouterSettings.classifier),
            word_vectors=None if raw_router.get("word_vectors", "auto") == "auto" else bool(raw_router["word_vectors"]),
            llm_assist=bool(assist.get("enabled", False)),
            llm_band=float(assist.get("band", RouterSettings.llm_band)),
            llm_max_tokens=int(assist.get("max_tokens", RouterSettings.llm_max_tokens)))
        messages = dict(DEFAULT_MESSAGES)
        for key, value in (first.data.get("messages") or {}).items():
            messages[key] = texts(value)
        entities: dict[str, EntityDef] = {}
        intents: dict[str, IntentDef] = {}
        for doc in docs:
            assert doc is not None
            for name, raw in (doc.data.get("entities") or {}).items():
                src = _source(doc, ("entities", name))
                if name in entities:
                    self.errors.append(doc.error(("entities", name), f"entity {name!r} is defined twice: "
                                                 f"also at {entities[name].source}", key=True))
                    continue
                entities[name] = self._entity(doc, name, raw or {}, src)
            for name, raw in (doc.data.get("intents") or {}).items():
                if name in intents:
                    self.errors.append(doc.error(("intents", name), f"intent {name!r} is defined twice: "
                                                 f"also at {intents[name].source}", key=True))
                    continue
                raw = raw or {}
                if not raw.get("examples") and not raw.get("patterns"):
                    self.errors.append(doc.error(("intents", name), f"intent {name!r} has no examples; "
                                                 f"add 'examples:' with a few messages visitors would send", key=True))
                intents[name] = IntentDef(name, tuple(raw.get("examples") or ()), tuple(raw.get("patterns") or ()),
                                          raw.get("description", ""), _source(doc, ("intents", name)))
        return IntentsConfig(router, MappingProxyType(entities), MappingProxyType(intents),
                             MappingProxyType(messages))

    def _entity(self, doc: YamlDoc, name: str, raw: dict, src: Source) -> EntityDef:
        given = [k for k in ("values", "regex", "type") if k in raw]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            self.errors.append(doc.error(("entities", name), f"entity {name!r} needs exactly one of 'values', "
                                         f"'regex' or 'type'; it has {what}", key=True))
        if "values" in raw:
            values = {str(k): tuple(str(s) for s in (v or ())) for k, v in raw["values"].items()}
            return EntityDef(name, "lookup", MappingProxyType(values), None, raw.get("fuzzy", True),
                             raw.get("description", ""), src)
        if "regex" in raw:
            return EntityDef(name, "regex", {}, raw["regex"], False, raw.get("description", ""), src)
        return EntityDef(name, raw.get("type", "lookup"), {}, None, False, raw.get("description", ""), src)

    # -- flows --------------------------------------------------------------------------------
    def flows(self) -> tuple[dict[str, Flow], LLMSettings | None]:
        flows: dict[str, Flow] = {}
        fallback = None
        folder = self.root / "flows"
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            if path.stem == FALLBACK_FLOW:
                doc = self.read(path, "fallback")
                if doc is not None:
                    fallback = self._fallback(doc)
                continue
            doc = self.read(path, "flow")
            if doc is not None:
                flows[path.stem] = self._flow(path.stem, doc)
        return flows, fallback

    def _flow(self, flow_id: str, doc: YamlDoc) -> Flow:
        data = doc.data
        trigger = data.get("trigger") or ()
        triggers = (trigger,) if isinstance(trigger, str) else tuple(trigger)
        slots = {}
        for name, raw in (data.get("slots") or {}).items():
            raw = raw or {}
            slots[name] = SlotDef(name, raw.get("entity"), texts(raw.get("ask")), texts(raw.get("reprompt")),
                                  tuple(str(c) for c in raw.get("choices") or ()), raw.get("regex"),
                                  raw.get("validate"), int(raw.get("max_attempts", 3)), raw.get("on_fail"),
                                  _source(doc, ("slots", name)), remember_turns(raw.get("remember")))
        steps = self._steps(doc, ("steps",), data["steps"])
        return Flow(flow_id, steps, triggers, MappingProxyType(slots), data.get("description", ""),
                    texts(data.get("error")), Source(doc.name, 1, 1))

    def _steps(self, doc: YamlDoc, path: tuple, raw_steps: list) -> tuple[Step, ...]:
        steps = []
        for index, raw in enumerate(raw_steps):
            here = path + (index,)
            kinds = [k for k in STEP_KINDS if k in raw]
            if len(kinds) != 1:
                found = ", ".join(kinds) if kinds else "none"
                self.errors.append(doc.error(here, f"{schemacheck.describe(here)} needs exactly one of "
                                                   f"{', '.join(STEP_KINDS)}; found {found}"))
                continue
            kind = kinds[0]
            if kind != "if" and ("then" in raw or "else" in raw):
                self.errors.append(doc.error(here + ("then" if "then" in raw else "else",),
                                             f"'then'/'else' belong to an 'if' step, not to a {kind!r} step", key=True))
            if kind == "if" and "then" not in raw:
                self.errors.append(doc.error(here + ("if",), "an 'if' step needs 'then:' steps", key=True))
            if "buttons" in raw and kind not in ("say", "ask", "end", "handoff"):
                self.errors.append(doc.error(here + ("buttons",), f"'buttons' go with a 'say' step, not with {kind!r}",
                                             key=True))
            steps.append(Step(kind, raw[kind], _source(doc, here + (kind,)), raw.get("id"), _buttons(raw.get("buttons")),
                              self._steps(doc, here + ("then",), raw.get("then") or []),
                              self._steps(doc, here + ("else",), raw.get("else") or [])))
        return tuple(steps)

    def _fallback(self, doc: YamlDoc) -> LLMSettings:
        d = doc.data
        history, timeouts, budgets = d.get("history") or {}, d.get("timeouts") or {}, d.get("budgets") or {}
        temperature = d.get("temperature", LLMSettings.temperature)  # null: send none
        return LLMSettings(
            system_prompt=d["system_prompt"], unavailable=texts(d["unavailable"]),
            model=d.get("model", LLMSettings.model),
            temperature=None if temperature is None else float(temperature),
            max_tokens=int(d.get("max_tokens", LLMSettings.max_tokens)),
            history_turns=int(history.get("turns", LLMSettings.history_turns)),
            history_tokens=int(history.get("tokens", LLMSettings.history_tokens)),
            knowledge=tuple(d.get("knowledge", LLMSettings.knowledge)),
            timeout_total=float(timeouts.get("total", LLMSettings.timeout_total)),
            timeout_first_token=float(timeouts.get("first_token", LLMSettings.timeout_first_token)),
            timeout_connect=float(timeouts.get("connect", LLMSettings.timeout_connect)),
            max_retries=int(d.get("max_retries", LLMSettings.max_retries)),
            conversation_tokens=int(budgets.get("conversation_tokens", LLMSettings.conversation_tokens)),
            daily_tokens=int(budgets.get("daily_tokens", LLMSettings.daily_tokens)),
            buttons=_buttons(d.get("buttons")), source=Source(doc.name, 1, 1))

    # -- knowledge ------------------------------------------------------------------------------
    def knowledge(self, fallback: LLMSettings | None) -> dict[str, Any]:
        globs = fallback.knowledge if fallback else ("knowledge/*.yaml",)
        from .prompting import load_knowledge
        return dict(load_knowledge(self.root, globs, self.errors, texts=self.knowledge_texts))


def load(root: Path, actions: ActionRegistry | None = None, *, discover_actions: bool = True) -> Config:
    """Build the Config of the bot in ``root``; raise ConfigErrors with every problem found.

    Handlers found in ``root/actions/`` and in entry points are added to ``actions`` (a new
    registry when None) unless ``discover_actions`` is False (tests that register fakes).
    """
    from .crossref import check_references

    root = root.resolve() if root.exists() else root
    if not root.is_dir():
        raise ConfigErrors([ConfigError(root.as_posix(), 0, 0, "no such directory; give the folder that holds "
                                        "intents.yaml")])
    loader = Loader(root, actions if actions is not None else ActionRegistry())
    if discover_actions:
        loader.errors.extend(discover(root, loader.registry))
    intents = loader.intents()
    before = len(loader.errors)
    flows, fallback = loader.flows()
    every_flow_loaded = len(loader.errors) == before
    knowledge = loader.knowledge(fallback)
    if intents is not None:
        loader.errors.extend(check_references(intents, flows, fallback, loader.registry, loader.docs,
                                              every_flow_loaded=every_flow_loaded))
    if loader.errors or intents is None:
        raise ConfigErrors(loader.errors)
    sources = {**{name: doc.text for name, doc in loader.docs.items()}, **loader.knowledge_texts}
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode())
    digest.update(repr(loader.registry.names()).encode())
    return Config(root, intents, MappingProxyType(flows), fallback, MappingProxyType(knowledge),
                  tuple(loader.registry.names()), digest.hexdigest()[:16],
                  privacy=getattr(loader, "privacy", PrivacySettings()), sources=MappingProxyType(sources))
