"""The @action decorator, ActionRegistry, and the Context/Reply types handlers use."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import linecache
import logging
import sys
import types
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from .config import Button
from .errors import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hybridbot.actions"
_MARK = "__hybridbot_action__"
DEFAULT_TIMEOUT: Any = type("DefaultTimeout", (), {"__repr__": lambda self: "DEFAULT_TIMEOUT"})()  # the bot's limit


@dataclass(frozen=True)
class Context:
    """What a handler may read about the current turn. Read-only: change state through Reply."""

    conversation_id: str
    text: str
    intent: str | None
    entities: Mapping[str, Any]
    slots: Mapping[str, Any]
    flow: str | None
    step: str | None
    user: Mapping[str, Any] | None = None
    result: Mapping[str, Any] = field(default_factory=dict)
    now: datetime | None = None  # the turn's clock (tests fix it); None means "now"
    log: logging.Logger = field(default=log, repr=False, compare=False)


@dataclass(frozen=True)
class Reply:
    """What a handler returns besides plain text.

    ``text`` is said to the visitor; ``slots`` are merged into the flow's slots; ``result`` is
    available to the following steps as ``{{ result.x }}``; ``goto`` jumps to a step or flow;
    ``buttons`` are quick replies shown with the text.
    """

    text: str | None = None
    slots: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] = field(default_factory=dict)
    goto: str | None = None
    buttons: tuple[str | Button, ...] = ()


Handler = Callable[[Context], Union[str, Reply, None]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fn: Handler
    origin: str  # "file:line" of the definition, used in errors
    timeout: float | None | object = DEFAULT_TIMEOUT  # seconds; None: no limit, runs in the request's thread


def _origin(fn: Callable) -> str:
    """``file:line`` of the handler's definition, relative to the working directory when inside it."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    path = Path(code.co_filename)
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = path.as_posix()
    return f"{shown}:{code.co_firstlineno}"


def _error_at(origin: str, message: str) -> ConfigError:
    file, _, line = origin.rpartition(":")
    if not line.isdigit():
        return ConfigError(origin, 0, 0, message)
    return ConfigError(file, int(line), 1, message)


def action(fn: Handler | None = None, *, name: str | None = None, timeout: float | None | object = DEFAULT_TIMEOUT
           ) -> Any:
    """Mark a function as an action handler; works with and without parentheses.

    A handler runs on the bot's handler threads with a time limit (the bot's, 10 s by default,
    or ``timeout`` seconds): past it the visitor gets the flow's error text and the turn goes on.
    ``timeout=None`` is for handlers that only compute (no network, disk or locks): they run in
    the request's own thread with no limit, which saves two thread switches per call.

    Example::

        @action
        def lookup_price(ctx: Context) -> Reply:
            return Reply(result={"price": 41900})

        @action(name="handoff", timeout=3)
        def hand_off(ctx: Context) -> str:
            return crm.create_ticket(ctx.slots)  # a network call: keep a limit

        @action(timeout=None)
        def monthly_payment(ctx: Context) -> str:
            return f"{annuity(ctx.slots['price'], 0.059, 48):.2f}"  # arithmetic only
    """
    if timeout is not DEFAULT_TIMEOUT and timeout is not None and not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
        raise TypeError(f"@action(timeout=...) takes seconds > 0 or None, got {timeout!r}")

    def mark(f: Handler) -> Handler:
        if not callable(f):
            raise TypeError(f"@action needs a function, got {f!r}")
        setattr(f, _MARK, ActionSpec(name or f.__name__, f, _origin(f), timeout))
        return f

    return mark(fn) if fn is not None else mark


class ActionRegistry:
    """Name -> handler map. ``add`` is the primitive; ``@action`` + ``collect`` build on it."""

    def __init__(self) -> None:
        self._specs: dict[str, ActionSpec] = {}

    def add(self, fn: Handler, name: str | None = None, *, origin: str | None = None) -> None:
        spec = getattr(fn, _MARK, None)
        name = name or (spec.name if spec else fn.__name__)
        origin = origin or _origin(fn)
        if name in self._specs:
            other = self._specs[name].origin
            raise _error_at(origin, f"action {name!r} is defined twice: at {other} and at {origin}; "
                                    f"rename one with @action(name=...)")
        _check_signature(fn, name, origin)
        self._specs[name] = ActionSpec(name, fn, origin, spec.timeout if spec else DEFAULT_TIMEOUT)

    def get(self, name: str) -> Handler:
        return self._specs[name].fn

    def spec(self, name: str) -> ActionSpec:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def collect(self, module: Any) -> int:
        """Register every @action-marked function defined in ``module``; returns how many."""
        count = 0
        for value in vars(module).values():
            spec = getattr(value, _MARK, None)
            if spec is not None and getattr(value, "__module__", None) == module.__name__:
                self.add(value, spec.name, origin=spec.origin)
                count += 1
        return count


def _check_signature(fn: Handler, name: str, origin: str) -> None:
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.default is inspect.Parameter.empty
                  and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return
    if len(params) != 1:
        raise _error_at(origin, f"action {name!r} must take exactly one argument, ctx: Context; "
                                f"it takes {len(params)}")


_loads = itertools.count(1)


def discover(root: Path, registry: ActionRegistry) -> list[ConfigError]:
    """Import the bot directory's ``actions/`` package and the entry-point plugins."""
    errors: list[ConfigError] = []
    folder = root / "actions"
    if folder.is_dir():
        errors.extend(_relative(e, root) for e in _import_package(root, folder, registry))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", "?")
        try:
            registry.collect(ep.load())
        except ConfigError as exc:
            errors.append(exc)
        except Exception as exc:  # a broken plugin must not hide the bot's own errors
            errors.append(ConfigError(f"<entry point {ep.name} from {dist}>", 0, 0,
                                      f"cannot import action plugin {ep.value!r}: {exc}"))
    return errors


def _relative(error: ConfigError, root: Path) -> ConfigError:
    """Name files relative to the bot directory, as every other loading error does."""
    prefix = root.resolve().as_posix().rstrip("/") + "/"
    file = error.file[len(prefix):] if error.file.startswith(prefix) else error.file
    line_text = error.source_line
    if not line_text and error.line > 0:
        line_text = linecache.getline(str(root / file), error.line)
    return ConfigError(file, error.line, error.col, error.message.replace(prefix, ""), line_text)


def _import_package(root: Path, folder: Path, registry: ActionRegistry) -> list[ConfigError]:
    """Import actions/ as a fresh package (a new name on every load, so a reload sees new code
    and two bots never share modules); its modules may import each other relatively."""
    package = f"hybridbot_actions_{next(_loads)}"
    init = folder / "__init__.py"
    if init.exists():
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(folder)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        error = _run(root, init, lambda: spec.loader.exec_module(module))  # type: ignore[union-attr]
        if error:
            return [error]
    else:
        module = types.ModuleType(package)
        module.__path__ = [str(folder)]
        sys.modules[package] = module
    errors: list[ConfigError] = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        loaded: list[Any] = []
        error = _run(root, path, lambda: loaded.append(importlib.import_module(f"{package}.{path.stem}")))
        if error:
            errors.append(error)
            continue
        try:
            registry.collect(loaded[0])
        except ConfigError as exc:
            errors.append(exc)
    return errors


def _run(root: Path, path: Path, load: Callable[[], Any]) -> ConfigError | None:
    rel = path.relative_to(root).as_posix()
    try:
        load()
    except SyntaxError as exc:
        return ConfigError(rel, exc.lineno or 0, exc.offset or 0, f"Python syntax error: {exc.msg}",
                           exc.text or "")
    except ConfigError as exc:
        return exc
    except Exception as exc:
        line = 0
        tb = exc.__traceback__
        while tb is not None:
            if Path(tb.tb_frame.f_code.co_filename) == path:
                line = tb.tb_lineno
            tb = tb.tb_next
        return ConfigError(rel, line, 1 if line else 0,
                           f"importing this file failed: {type(exc).__name__}: {exc}")
    return None
