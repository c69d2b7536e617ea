"""What `mephisto wut` describes: the kinds of plugin a run config chooses, the types of
each, and the arguments one type takes (from its `ArgsClass` dataclass: the field's
type, default and `metadata["help"]`; `metadata["required"]` or omegaconf's `???`
default mark a value the run config must give).

Forms, as in Mephisto: `wut` (the kinds), `wut blueprint` (its types),
`wut blueprint=static_task [arg ...]` (the type's arguments, optionally only the named
ones), and `wut task` (the `mephisto.task.*` arguments, `TaskRunArgs`).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mephisto.errors import ConfigError
from mephisto.operations import registry

__all__ = ["KINDS", "ArgInfo", "Description", "describe", "kinds", "valid_types"]

MISSING = "???"

# kind -> what it decides (the order `mephisto wut` lists them in)
KINDS: dict[str, str] = {
    "blueprint": "what the task is: its data, its page, what is saved",
    "architect": "where the task server runs that workers' browsers reach",
    "provider": "who the workers are and how they are paid (a requester is its account: "
                "`mephisto register`, `mephisto requesters`)",
    "task": "the run itself: title, reward, limits, budget (mephisto.task.*)",
}


@dataclass(frozen=True)
class ArgInfo:
    name: str
    type: str
    default: str  # as shown; "" for a required value
    required: bool
    help: str


@dataclass(frozen=True)
class Description:
    """One plugin type (or the task arguments), described."""

    kind: str
    type_name: str | None  # None for `task`
    summary: str
    args: list[ArgInfo]
    shared_state: list[ArgInfo]  # a blueprint's SharedTaskState fields (run script only)
    shared_state_class: str = ""

    @property
    def config_prefix(self) -> str:
        return f"mephisto.{self.kind}"


def kinds() -> list[tuple[str, str, list[str]]]:
    """`(kind, what it decides, its valid types)`; `task` has none."""
    return [(kind, text, valid_types(kind) if kind != "task" else [])
            for kind, text in KINDS.items()]


def valid_types(kind: str) -> list[str]:
    """The registered types of a plugin kind (blueprint, architect, provider)."""
    if kind not in registry.PLUGIN_KINDS:
        raise ConfigError(f"{kind!r} has no types; kinds with types: "
                          f"{', '.join(registry.PLUGIN_KINDS)}", key="kind")
    return registry.valid_plugin_types(kind)  # type: ignore[arg-type]


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation)


def _default_text(f: dataclasses.Field[Any]) -> tuple[str, bool]:
    """The default as shown, and whether the value is required."""
    if f.default is not dataclasses.MISSING:
        default: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        return "", True
    required = bool(f.metadata.get("required")) or default == MISSING
    if required:
        return "", True
    if callable(default) and not isinstance(default, type):
        default = getattr(default, "__name__", repr(default))
    return repr(default) if isinstance(default, str) else str(default), False


def args_of(cls: type, hide_private: bool = True) -> list[ArgInfo]:
    """The arguments a dataclass declares, in declaration order (names starting with `_`
    are how a config names the plugin type: left out)."""
    if not dataclasses.is_dataclass(cls):
        return []
    out = []
    for f in dataclasses.fields(cls):
        if hide_private and f.name.startswith("_"):
            continue
        default, required = _default_text(f)
        out.append(ArgInfo(f.name, _type_text(f.type), default, required,
                           str(f.metadata.get("help", ""))))
    return out


def _summary(cls: type) -> str:
    """The first paragraph of the class's own docstring, else of its module's."""
    own = cls.__dict__.get("__doc__")
    doc = inspect.cleandoc(own) if own else inspect.getdoc(sys.modules.get(cls.__module__)) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def _check_names(names: Sequence[str], args: Sequence[ArgInfo], where: str) -> None:
    known = {a.name for a in args}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{where} has no argument {', '.join(map(repr, unknown))}; its "
                          f"arguments: {', '.join(sorted(known)) or '(none)'}", key=unknown[0])


def describe(spec: str, only: Sequence[str] = ()) -> Description:
    """`blueprint=static_task`, `architect=local`, `provider=mock` or `task`: its
    arguments (only those named in `only`, if any). An unknown kind or type raises
    `ConfigError` listing the valid ones."""
    kind, eq, type_name = spec.partition("=")
    kind = kind.strip()
    if kind not in KINDS:
        hint = (" (a requester's arguments are its provider's credentials: see `mephisto "
                "register --help`)" if kind == "requester" else "")
        raise ConfigError(f"unknown kind {kind!r}{hint}; valid kinds: {', '.join(KINDS)} "
                          "(e.g. mephisto wut blueprint=static_task)", key="kind")
    if kind == "task":
        if eq:
            raise ConfigError("`task` has no types: use `mephisto wut task`", key="kind")
        from mephisto.data_model.task_run import TaskRunArgs

        args = args_of(TaskRunArgs)
        _check_names(only, args, "mephisto.task")
        return Description("task", None, _summary(TaskRunArgs),
                           [a for a in args if not only or a.name in only], [])
    if not eq or not type_name.strip():
        valid = ", ".join(valid_types(kind))
        raise ConfigError(f"name the {kind} type: mephisto wut {kind}=<type>; valid {kind} "
                          f"types: {valid}", key=kind)
    cls = registry.get_plugin(kind, type_name.strip())  # type: ignore[arg-type]
    args_class = getattr(cls, "ArgsClass", None)
    args = args_of(args_class) if isinstance(args_class, type) else []
    where = f"{kind} {type_name.strip()!r}"
    shared: list[ArgInfo] = []
    shared_name = ""
    state_class = getattr(cls, "SharedStateClass", None) if kind == "blueprint" else None
    if isinstance(state_class, type):
        shared, shared_name = args_of(state_class), state_class.__name__
    if only:
        _check_names(only, [*args, *shared], where)
        args = [a for a in args if a.name in only]
        shared = [a for a in shared if a.name in only]
    return Description(kind, type_name.strip(), _summary(cls), args, shared, shared_name)
