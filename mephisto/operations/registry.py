"""Find blueprint, architect and provider classes by their type name.

A plugin class declares its kind and name with one class attribute:
`BLUEPRINT_TYPE`, `ARCHITECT_TYPE` or `PROVIDER_TYPE`. A name is looked up in three
places, first match wins:

1. classes registered at run time with `@register_mephisto_abstraction()`
   (for plugins defined in a run script);
2. Python entry points in the groups `mephisto.blueprints`, `mephisto.architects`,
   `mephisto.providers` (for plugins shipped as separate distributions), read once,
   on the first lookup or listing;
3. the built-in table below, as "module:Class" strings imported on lookup, so
   importing this module imports no plugin.

An unknown name raises UnknownAbstractionError listing the valid names; a plugin whose
module fails to import (or lacks the class) raises ConfigError naming the plugin and
the underlying error. The file system is never walked.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, TypeVar

from mephisto.errors import ConfigError, UnknownAbstractionError

Kind = Literal["blueprint", "architect", "provider"]

BUILTIN_BLUEPRINTS: dict[str, str] = {
    "static_task": "mephisto.abstractions.blueprints.static_task:StaticTaskBlueprint",
    "static_react_task": (
        "mephisto.abstractions.blueprints.static_react_task:StaticReactTaskBlueprint"
    ),
    "chat": "mephisto.abstractions.blueprints.chat:ChatBlueprint",
    "mock": "mephisto.abstractions.blueprints.mock:MockBlueprint",
    "remote_procedure": (
        "mephisto.abstractions.blueprints.remote_procedure:RemoteProcedureBlueprint"
    ),
}
BUILTIN_ARCHITECTS: dict[str, str] = {
    "ec2": "mephisto.abstractions.architects.ec2:EC2Architect",
    "heroku": "mephisto.abstractions.architects.heroku:HerokuArchitect",
    "local": "mephisto.abstractions.architects.local:LocalArchitect",
    "mock": "mephisto.abstractions.architects.mock:MockArchitect",
    "remote": "mephisto.abstractions.architects.remote:RemoteArchitect",
}
BUILTIN_PROVIDERS: dict[str, str] = {
    "inhouse": "mephisto.abstractions.providers.inhouse:InhouseProvider",
    "mock": "mephisto.abstractions.providers.mock:MockProvider",
    "mturk": "mephisto.abstractions.providers.mturk.mturk_provider:MTurkProvider",
    "mturk_sandbox": "mephisto.abstractions.providers.mturk.mturk_provider:SandboxMTurkProvider",
    "prolific": "mephisto.abstractions.providers.prolific:ProlificProvider",
}


@dataclass(frozen=True)
class _KindInfo:
    type_attr: str  # the class attribute naming a plugin's type
    group: str  # the entry point group
    config_key: str  # the key of `mephisto.<kind>` that names the type in a run config
    builtins: dict[str, str]


# The one table of plugin kinds (the config resolver and Hydra's groups read it too).
_KINDS: dict[Kind, _KindInfo] = {
    "blueprint": _KindInfo(
        "BLUEPRINT_TYPE", "mephisto.blueprints", "_blueprint_type", BUILTIN_BLUEPRINTS),
    "architect": _KindInfo(
        "ARCHITECT_TYPE", "mephisto.architects", "_architect_type", BUILTIN_ARCHITECTS),
    "provider": _KindInfo(
        "PROVIDER_TYPE", "mephisto.providers", "_provider_type", BUILTIN_PROVIDERS),
}
PLUGIN_KINDS: tuple[Kind, ...] = tuple(_KINDS)


def config_key(kind: Kind) -> str:
    """The key naming the plugin type in a run config's `mephisto.<kind>` section."""
    return _KINDS[kind].config_key


def get_plugin(kind: Kind, type_name: str) -> type:
    """The plugin class of `kind` named `type_name` (UnknownAbstractionError lists the
    valid names; a plugin failing to import is a ConfigError)."""
    return _get(kind, type_name)


def valid_plugin_types(kind: Kind) -> list[str]:
    """Every known type name of `kind`, sorted."""
    return _valid(kind)

# Classes registered by the decorator, per kind.
_registered: dict[Kind, dict[str, type]] = {kind: {} for kind in _KINDS}

# Called as listener(kind, name, cls) after each registration (see add_registration_listener).
_listeners: list[Callable[[Kind, str, type], None]] = []

# Entry points per kind, filled on first use; None until then.
_entry_point_cache: dict[Kind, dict[str, EntryPoint]] | None = None
_entry_point_lock = threading.Lock()


def _load_entry_points(group: str) -> list[EntryPoint]:
    """The installed entry points of `group`. Tests replace this function."""
    return list(entry_points(group=group))


def _clear_entry_point_cache() -> None:
    """Forget the entry points read so far; the next lookup reads them again."""
    global _entry_point_cache
    with _entry_point_lock:
        _entry_point_cache = None


def _entry_points(kind: Kind) -> dict[str, EntryPoint]:
    global _entry_point_cache
    with _entry_point_lock:
        if _entry_point_cache is None:
            cache: dict[Kind, dict[str, EntryPoint]] = {}
            for each_kind, info in _KINDS.items():
                found: dict[str, EntryPoint] = {}
                for ep in _load_entry_points(info.group):
                    found.setdefault(ep.name, ep)  # first distribution wins
                cache[each_kind] = found
            _entry_point_cache = cache
        return _entry_point_cache[kind]


def _import_target(kind: Kind, name: str, target: str, load: Callable[[], Any]) -> type:
    try:
        obj = load()
    except Exception as exc:
        raise ConfigError(
            f"Cannot load {kind} plugin '{name}' from {target}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, type):
        raise ConfigError(f"The {kind} plugin '{name}' at {target} is not a class: {obj!r}")
    return obj


def _import_builtin(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _get(kind: Kind, name: str) -> type:
    registered = _registered[kind].get(name)
    if registered is not None:
        return registered
    ep = _entry_points(kind).get(name)
    if ep is not None:
        return _import_target(kind, name, f"entry point '{ep.value}'", ep.load)
    spec = _KINDS[kind].builtins.get(name)
    if spec is not None:
        return _import_target(kind, name, f"'{spec}'", lambda: _import_builtin(spec))
    valid = ", ".join(_valid(kind)) or "(none)"
    raise UnknownAbstractionError(f"Unknown {kind} type '{name}'. Valid {kind} types: {valid}")


def _valid(kind: Kind) -> list[str]:
    names = set(_registered[kind]) | set(_entry_points(kind)) | set(_KINDS[kind].builtins)
    return sorted(names)


def _kind_of(cls: type) -> tuple[Kind, str]:
    found = [
        (kind, getattr(cls, info.type_attr))
        for kind, info in _KINDS.items()
        if isinstance(getattr(cls, info.type_attr, None), str) and getattr(cls, info.type_attr)
    ]
    attrs = ", ".join(info.type_attr for info in _KINDS.values())
    if not found:
        raise ConfigError(
            f"Cannot register {cls.__qualname__}: it declares none of {attrs} as a non-empty string"
        )
    if len(found) > 1:
        raise ConfigError(
            f"Cannot register {cls.__qualname__}: it declares more than one of {attrs}"
        )
    return found[0]


_C = TypeVar("_C", bound=type)


def register_mephisto_abstraction() -> Callable[[_C], _C]:
    """Class decorator: make a blueprint, architect or provider findable by its type.

    Use with parentheses: `@register_mephisto_abstraction()`. The kind comes from the
    type attribute the class declares; none (or several) raises ConfigError.
    Registering a name again replaces the earlier class (re-running a script cell).
    """

    def decorator(cls: _C) -> _C:
        kind, name = _kind_of(cls)
        _registered[kind][name] = cls
        for listener in _listeners:
            listener(kind, name, cls)
        return cls

    return decorator


def add_registration_listener(listener: Callable[[Kind, str, type], None]) -> None:
    """Call `listener(kind, name, cls)` for every class registered from now on.

    `hydra_config` uses it to store the config group of a plugin a run script defines
    after the built-in groups were stored. Adding the same listener twice adds it once.
    """
    if listener not in _listeners:
        _listeners.append(listener)


def get_blueprint_from_type(type_name: str) -> type:
    """The blueprint class named `type_name`."""
    return _get("blueprint", type_name)


def get_architect_from_type(type_name: str) -> type:
    """The architect class named `type_name`."""
    return _get("architect", type_name)


def get_crowd_provider_from_type(type_name: str) -> type:
    """The crowd provider class named `type_name`."""
    return _get("provider", type_name)


def get_valid_blueprint_types() -> list[str]:
    """Every known blueprint type name, sorted."""
    return _valid("blueprint")


def get_valid_architect_types() -> list[str]:
    """Every known architect type name, sorted."""
    return _valid("architect")


def get_valid_provider_types() -> list[str]:
    """Every known provider type name, sorted."""
    return _valid("provider")
