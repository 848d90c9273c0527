"""A bot's configuration as frozen dataclasses, loaded from intents.yaml and flows/*.yaml."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from .redaction import PrivacySettings

log = logging.getLogger(__name__)

BUILTIN_ENTITIES = ("number", "money", "date", "time", "email", "phone")
OUT_OF_SCOPE = "out_of_scope"
FALLBACK_FLOW = "fallback"
STEP_KINDS = ("say", "ask", "action", "set", "if", "goto", "llm", "handoff", "end")

DEFAULT_MESSAGES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "fallback": ("Sorry, I can't help with that here. Could you rephrase, or ask about something else?",),
    "error": ("Sorry, something went wrong on our side. Let's try that again in a moment.",),
    "clarify": ("Did you mean {{ options }}?",),
    "resume": ("Shall we get back to {{ flow }}?",),
    "cancelled": ("OK, I've stopped that. What else can I do for you?",),
    "help": ("I can answer questions and help with a few tasks. Say 'cancel' at any time to stop.",),
    "handoff": ("I'm passing you to a colleague.",),
    "gave_up": ("Sorry, I still couldn't use that answer, so let's leave it there. What else can I do for you?",),
    "resumed": ("No problem. What else can I do for you?",),
    "corrected": ("Got it, I've changed that.",),
    "kept": ("OK, let's keep it as it was.",),
})


def texts(value: Any) -> tuple[str, ...]:
    """A text-or-list value from YAML (``say``, ``ask``, ``end: true``...) as a tuple of texts."""
    if value is None or value is True:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


@dataclass(frozen=True)
class Source:
    """Where a config element was written: file relative to the bot directory, 1-based line/col."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class RouterSettings:
    threshold: float = 0.45
    margin: float = 0.05
    classifier: str = "tfidf"
    word_vectors: bool | None = None   # None: auto (classifier.wants_vectors: big bots in English)
    llm_assist: bool = False
    llm_band: float = 0.15
    llm_max_tokens: int = 20


@dataclass(frozen=True)
class EntityDef:
    """An entity: ``kind`` is 'lookup' (values), 'regex', or a built-in type name."""

    name: str
    kind: str
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # canonical -> synonyms
    regex: str | None = None
    fuzzy: bool = True
    description: str = ""
    source: Source = Source("intents.yaml")


@dataclass(frozen=True)
class IntentDef:
    name: str
    examples: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    description: str = ""
    source: Source = Source("intents.yaml")


@dataclass(frozen=True)
class IntentsConfig:
    router: RouterSettings
    entities: Mapping[str, EntityDef]
    intents: Mapping[str, IntentDef]  # includes out_of_scope when given (the negative class)
    messages: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_MESSAGES)

    def digest(self) -> str:
        """Stable hash of everything the router's model depends on."""
        h = hashlib.sha256()
        for name in sorted(self.intents):
            intent = self.intents[name]
            h.update(repr((name, intent.examples, intent.patterns)).encode())
        for name in sorted(self.entities):
            e = self.entities[name]
            h.update(repr((name, e.kind, sorted((k, v) for k, v in e.values.items()), e.regex, e.fuzzy)).encode())
        h.update(repr((self.router.classifier, self.router.word_vectors)).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class Button:
    title: str
    payload: str
    url: str | None = None


REMEMBER_TURNS = 5  # a slot's `remember: true`: reuse what the visitor named in the last 5 turns


@dataclass(frozen=True)
class SlotDef:
    name: str
    entity: str | None = None
    ask: tuple[str, ...] = ()
    reprompt: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    regex: str | None = None
    validate: str | None = None
    max_attempts: int = 3
    on_fail: str | None = None
    source: Source = Source("")
    remember: int = 0  # turns a value of the slot's entity named earlier stays usable (0: never)


@dataclass(frozen=True)
class Step:
    """One step of a flow. ``kind`` is one of STEP_KINDS; ``value`` is the value of that key."""

    kind: str
    value: Any
    source: Source
    id: str | None = None
    buttons: tuple[Button, ...] = ()
    then: tuple["Step", ...] = ()
    orelse: tuple["Step", ...] = ()


@dataclass(frozen=True)
class Flow:
    id: str
    steps: tuple[Step, ...]
    triggers: tuple[str, ...] = ()
    slots: Mapping[str, SlotDef] = field(default_factory=dict)
    description: str = ""
    error: tuple[str, ...] = ()
    source: Source = Source("")

    def step_ids(self) -> dict[str, Step]:
        found: dict[str, Step] = {}

        def walk(steps: tuple[Step, ...]) -> None:
            for s in steps:
                if s.id:
                    found[s.id] = s
                walk(s.then)
                walk(s.orelse)
        walk(self.steps)
        return found


@dataclass(frozen=True)
class LLMSettings:
    """flows/fallback.yaml: the model that answers what the rules don't."""

    system_prompt: str
    unavailable: tuple[str, ...]
    model: str = "gpt-4o-mini"
    temperature: float | None = 0.3  # None: not sent (reasoning models accept only their own)
    max_tokens: int = 400
    history_turns: int = 10
    history_tokens: int = 2000
    knowledge: tuple[str, ...] = ("knowledge/*.yaml",)
    timeout_total: float = 20.0
    timeout_first_token: float = 5.0
    timeout_connect: float = 3.0
    max_retries: int = 1
    conversation_tokens: int = 20000
    daily_tokens: int = 2_000_000
    buttons: tuple[Button, ...] = ()
    source: Source = Source("flows/fallback.yaml")


@dataclass(frozen=True)
class Config:
    """Everything loaded from a bot directory. Built by ``load_config``; never mutated."""

    root: Path
    intents: IntentsConfig
    flows: Mapping[str, Flow]
    fallback: LLMSettings | None = None
    knowledge: Mapping[str, Any] = field(default_factory=dict)  # file stem -> parsed YAML facts
    action_names: tuple[str, ...] = ()
    digest: str = ""
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    # {path relative to root: text} of every YAML file read (intents, flows, knowledge); the
    # digest covers them and the action names. Kept so a good version can be restored (lastgood).
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def flows_for_intent(self, intent: str) -> list[Flow]:
        return [f for f in self.flows.values() if intent in f.triggers]

    def message(self, key: str) -> tuple[str, ...]:
        return self.intents.messages.get(key) or DEFAULT_MESSAGES[key]


def load_config(root: str | Path, actions: Any = None, *, discover_actions: bool = True) -> Config:
    """Load and check a bot directory; raises ConfigErrors listing every mistake found."""
    from .loader import load  # the loader needs these dataclasses; keep the import one-way

    return load(Path(root), actions, discover_actions=discover_actions)
