"""Hydra at the edge: the structured configs of run scripts, and their validation.

A run script's config is a `RunScriptConfig` dataclass (usually built by
`build_default_task_config("example")`, whose defaults list selects
`hydra_configs/conf/example.yaml` next to the script). Its `mephisto` section has one
node per plugin kind, filled from Hydra config groups:

    /mephisto/blueprint/<type>   the blueprint's ArgsClass, at package mephisto.blueprint
    /mephisto/architect/<type>   the architect's ArgsClass, at package mephisto.architect
    /mephisto/provider/<type>    the provider's ArgsClass, at package mephisto.provider

`initialize_named_configs()` stores a group entry for every type the registry can load
(built-in table, entry points, and classes registered with
`@register_mephisto_abstraction()`, also those registered later). A type whose module
fails to import is left out, so choosing it gives the registry's error.

`compose_run_config()` composes a script's config with Hydra's compose API: Hydra never
changes the working directory, writes no `outputs/` folder and configures no logging.
`resolve_run_config()` is the one resolver of a run config (`cfg.mephisto`, a dict or a
dataclass): it checks it before anything is launched, raising `ConfigError` naming the
offending key, and returns it resolved as plain `Args` with the plugin classes it names.
`Operator.launch_task_run` calls it; `check_run_config()` runs it for its errors. Below
this module no configuration is OmegaConf.

The root of a run config accepts keys its dataclass does not declare, when they come
from a YAML file (a script may read `cfg.correct_answer` set only in its YAML);
on the command line a new key needs Hydra's `+key=value`. Everything under `mephisto.`
is typed and strict: an unknown key or a value of the wrong type is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from mephisto.data_model.task_run import MISSING, TaskRunArgs
from mephisto.errors import ConfigError, UnknownAbstractionError
from mephisto.operations import registry
from mephisto.operations.registry import PLUGIN_KINDS, Kind
from mephisto.utils.args import Args

logger = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# The name a run script's config class is stored under in Hydra's ConfigStore.
SCRIPT_CONFIG_NAME = "mephisto_run_script"


@dataclass
class MephistoConfig:
    """The `mephisto` section of a run config: what `Operator.launch_task_run` takes."""

    blueprint: Any = field(default=MISSING, metadata={"help": "Blueprint args (BlueprintArgs)."})
    architect: Any = field(default=MISSING, metadata={"help": "Architect args (ArchitectArgs)."})
    provider: Any = field(default=MISSING, metadata={"help": "Provider args (ProviderArgs)."})
    task: TaskRunArgs = field(default_factory=TaskRunArgs)
    log_level: str = field(
        default="info", metadata={"help": "Log level of mephisto's loggers: " + ", ".join(LOG_LEVELS)}
    )


@dataclass
class RunScriptConfig:
    """The whole config of a run script. Subclass it to add your own fields."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_"])
    mephisto: MephistoConfig = field(default_factory=MephistoConfig)
    task_dir: str = field(
        default=MISSING, metadata={"help": "The run script's directory (set by task_script)."}
    )
    num_tasks: int = 5


def register_script_config(name: str, module: type) -> None:
    """Store a run script's config dataclass in Hydra's ConfigStore under `name`."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=module)


def build_default_task_config(conf_name: str) -> type:
    """A `RunScriptConfig` subclass whose defaults select `conf/<conf_name>.yaml` from
    the script's `hydra_configs/` folder. Subclass it (as a dataclass) to add fields."""
    if not isinstance(conf_name, str) or not conf_name.strip():
        raise ConfigError(f"the config file name must be a non-empty string, got {conf_name!r}")
    name = conf_name.strip().removesuffix(".yaml")

    @dataclass
    class TaskConfig(RunScriptConfig):
        defaults: list[Any] = field(default_factory=lambda: ["_self_", {"conf": name}])

    TaskConfig.__doc__ = f"Run config whose defaults select conf/{name}.yaml."
    return TaskConfig


# -- config groups of the plugins ---------------------------------------------------------


def _store_plugin(kind: Kind, name: str, cls: type) -> None:
    """Store `cls.ArgsClass` as the config group entry `mephisto/<kind>/<name>`."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    args_class = getattr(cls, "ArgsClass", None)
    if args_class is None or not is_dataclass(args_class):
        logger.warning("%s %r has no dataclass ArgsClass; not stored as a config", kind, name)
        return
    try:
        node = OmegaConf.structured(args_class)
        with open_dict(node):  # the group's name is the type, whatever the class default says
            node[registry.config_key(kind)] = name  # type: ignore[arg-type]
    except OmegaConfBaseException as exc:
        logger.warning("%s %r: its ArgsClass is not a valid config: %s", kind, name, exc)
        return
    ConfigStore.instance().store(
        group=f"mephisto/{kind}", name=name, node=node, package=f"mephisto.{kind}"
    )


def initialize_named_configs() -> None:
    """Store the config groups `mephisto/{blueprint,architect,provider}/<type>` for
    every type the registry can load, and keep storing classes registered later.
    Idempotent; cheap enough to call before every composition."""
    for kind in PLUGIN_KINDS:
        for name in registry.valid_plugin_types(kind):
            try:
                cls = registry.get_plugin(kind, name)
            except ConfigError as exc:
                logger.debug("not storing %s config %r: %s", kind, name, exc)
                continue
            _store_plugin(kind, name, cls)
    registry.add_registration_listener(_store_plugin)


# -- composing ----------------------------------------------------------------------------


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~").strip()


def compose_run_config(
    config: type = RunScriptConfig,
    config_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    task_dir: str | Path | None = None,
) -> Any:
    """Compose the run config of `config` (a RunScriptConfig dataclass) with Hydra.

    `config_dir` is the script's `hydra_configs/` folder (may be absent); `overrides`
    are command-line overrides (`mephisto.architect.port=3001`, `num_tasks=3`);
    `task_dir`, when given, becomes `cfg.task_dir` unless an override sets it.
    Returns an unresolved DictConfig (interpolations such as `${task_dir}` resolve on
    access). Raises `ConfigError` naming the key for every composition error.
    """
    import yaml
    from hydra import compose, initialize, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (isinstance(config, type) and is_dataclass(config)):
        raise ConfigError(f"a run config must be a dataclass type, got {config!r}")
    warn_str_fields_with_bool_defaults(config)
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    initialize_named_configs()
    # struct explicitly off at the root only: a YAML file may add top-level keys of its
    # own; the typed nodes below (mephisto.*) stay closed.
    root = OmegaConf.structured(config)
    OmegaConf.set_struct(root, False)
    ConfigStore.instance().store(name=SCRIPT_CONFIG_NAME, node=root)
    directory = Path(config_dir).resolve() if config_dir is not None else None
    try:
        if directory is not None and directory.is_dir():
            context: Any = initialize_config_dir(
                config_dir=str(directory), version_base=None, job_name="mephisto"
            )
        else:
            context = initialize(config_path=None, version_base=None, job_name="mephisto")
        with context:
            cfg = compose(config_name=SCRIPT_CONFIG_NAME, overrides=list(overrides))
        if task_dir is not None and "task_dir" not in {_override_key(o) for o in overrides}:
            cfg.task_dir = str(task_dir)
    except (HydraException, OmegaConfBaseException) as exc:
        raise config_error_from(exc, directory) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read a YAML config file: {_one_line(str(exc))}") from None
    return cfg


def warn_str_fields_with_bool_defaults(config: type) -> list[str]:
    """Log a warning for each field of a run config annotated `str` whose default is a
    bool: OmegaConf turns `flag: str = False` into the string "False", which is true in
    `if cfg.flag:`. Returns the names of such fields."""
    found = []
    for f in fields(config):  # type: ignore[arg-type]
        if f.type in (str, "str") and isinstance(f.default, bool):
            found.append(f.name)
            logger.warning(
                "run config field %s is annotated `str` but defaults to %r: its value will be "
                "the string %r, which is true in `if cfg.%s:`; annotate it `bool` (or give "
                "it a str default)",
                f.name, f.default, str(f.default), f.name,
            )
    return found


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _public_fields(cls: Any) -> list[str]:
    if not (isinstance(cls, type) and is_dataclass(cls)):
        return []
    return [f.name for f in fields(cls) if not f.name.startswith("_") and f.name != "defaults"]


def _unknown_key_error(key: str, object_type: Any) -> ConfigError:
    valid = _public_fields(object_type)
    where = key.rpartition(".")[0] or "the top level"
    hint = f"; valid keys of {where}: {', '.join(valid)}" if valid else ""
    if "." not in key:
        hint += f" (to add a new top-level key on the command line use +{key}=...)"
    return ConfigError(f"unknown key {key}{hint}", key=key)


def config_error_from(exc: BaseException, config_dir: Path | None = None) -> ConfigError:
    """A `ConfigError` with a one-line message and the offending key for a Hydra or
    OmegaConf exception raised while composing or reading a run config."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    chain = _causes(exc)
    for err in chain:
        if isinstance(err, ConfigError):
            return err
    for err in chain:
        if isinstance(err, MissingConfigException):
            return _missing_config_error(err, config_dir)
        if isinstance(err, OverrideParseException):
            return ConfigError(
                f"cannot parse the override '{err.override}': {_one_line(err.message)}",
                key=_override_key(err.override),
            )
    override = re.search(r"override '([^']+)'", str(exc))
    for err in chain:
        if isinstance(err, OmegaConfBaseException):
            key = getattr(err, "full_key", None) or (override.group(1) if override else None)
            if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key:
                return _unknown_key_error(key, getattr(err, "object_type", None))
            message = _first_line(err)
            return ConfigError(f"{key}: {message}" if key else message, key=key)
    if override and str(exc).startswith("Could not override"):
        return _unknown_key_error(override.group(1), None)
    argument = re.search(r"argument '([^'=]+)=", str(exc))
    return ConfigError(_one_line(str(exc)), key=argument.group(1) if argument else None)


def _missing_config_error(err: Any, config_dir: Path | None) -> ConfigError:
    missing = str(err.missing_cfg_file or "")
    group, _, name = missing.rpartition("/")
    for kind in PLUGIN_KINDS:
        if group == f"mephisto/{kind}":
            key = f"mephisto.{kind}"
            try:
                registry.get_plugin(kind, name)
            except UnknownAbstractionError as exc:
                return UnknownAbstractionError(str(exc), key=key)
            except ConfigError as exc:
                return ConfigError(str(exc), key=key)
            return ConfigError(f"the {kind} type '{name}' has no config group", key=key)
    options = list(err.options or [])
    where = f"{config_dir}/{missing}.yaml" if config_dir is not None else f"{missing}.yaml"
    message = f"config file not found: {where}"
    if options:
        message += f" (available in {group or 'the config folder'}: {', '.join(options)})"
    elif config_dir is not None and not config_dir.is_dir():
        message += f" (the folder {config_dir} does not exist)"
    return ConfigError(message, key=group or missing)


# -- checking -----------------------------------------------------------------------------


def _args_fields(args_class: type) -> dict[str, Any]:
    return {f.name: f for f in fields(args_class)}  # type: ignore[arg-type]


def _merge_args(args_class: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(args_class), values)
        plain = OmegaConf.to_container(merged)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        key = f"{prefix}.{exc.full_key}" if getattr(exc, "full_key", None) else prefix
        raise _unknown_key_error(key, args_class) from None
    except OmegaConfBaseException as exc:
        key = f"{prefix}.{exc.full_key}" if getattr(exc, "full_key", None) else prefix
        raise ConfigError(f"{key}: {_first_line(exc)}", key=key) from None
    assert isinstance(plain, dict)
    for name, f in _args_fields(args_class).items():
        if name.startswith("_") or plain.get(name) != MISSING:
            continue
        help_text = f.metadata.get("help", "")
        raise ConfigError(
            f"{prefix}.{name} is required" + (f": {help_text}" if help_text else ""),
            key=f"{prefix}.{name}",
        )
    return plain  # type: ignore[return-value]


@dataclass(frozen=True)
class RunConfig:
    """A run config, checked and resolved: plain `Args` (the sections `blueprint`,
    `architect`, `provider` and `task` filled from their Args classes' defaults, and
    `log_level`) and the plugin classes it names."""

    args: Args
    blueprint: type
    architect: type
    provider: type


def resolve_run_config(run_config: Any) -> RunConfig:
    """Check a run config (the whole script config or its `mephisto` section, as a
    DictConfig, dict or dataclass) and resolve it; raises `ConfigError` (its `key` names
    the offending setting): an unknown or unset blueprint/architect/provider type
    (listing the valid ones), an unknown key, a value of the wrong type, a missing
    required value (`task_title`, `task_source`, ...), a bad log level, and what the
    architect's and provider's own `assert_task_args` refuse (a bad port, ...). The
    blueprint's checks need the shared state: `Operator.launch_task_run` runs them."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from mephisto.abstractions.blueprint import SharedTaskState

    try:
        if isinstance(run_config, DictConfig):
            node = run_config
        elif is_dataclass(run_config):
            node = OmegaConf.structured(run_config)
        else:
            node = OmegaConf.create(run_config)
        section = node.mephisto if "mephisto" in node else node
        plain = OmegaConf.to_container(section, resolve=True)
    except OmegaConfBaseException as exc:
        raise config_error_from(exc) from None
    if not isinstance(plain, dict):
        raise ConfigError("mephisto must be a mapping", key="mephisto")
    known = {f.name for f in fields(MephistoConfig)}
    for key in plain:
        if key not in known:
            raise _unknown_key_error(f"mephisto.{key!s}", MephistoConfig)

    resolved: dict[str, Any] = {}
    classes: dict[str, type] = {}
    for kind in PLUGIN_KINDS:
        classes[kind], resolved[kind] = _resolve_plugin_section(kind, plain.get(kind))
    task = plain.get("task")
    if task is None or task == MISSING:
        task = {}
    if not isinstance(task, dict):
        raise ConfigError(f"mephisto.task must be a mapping, got {task!r}", key="mephisto.task")
    resolved["task"] = _merge_args(TaskRunArgs, task, "mephisto.task")
    TaskRunArgs.check(resolved["task"])
    level = plain.get("log_level", "info")
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise ConfigError(
            f"mephisto.log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}",
            key="mephisto.log_level",
        )
    resolved["log_level"] = level
    args = Args.of(resolved)
    for kind in ("architect", "provider"):
        classes[kind].assert_task_args(args, SharedTaskState())  # type: ignore[attr-defined]
    return RunConfig(args, classes["blueprint"], classes["architect"], classes["provider"])


def check_run_config(cfg: Any) -> None:
    """Raise the `ConfigError` that `resolve_run_config` would raise for `cfg`."""
    resolve_run_config(cfg)


def _resolve_plugin_section(kind: Kind, values: Any) -> tuple[type, dict[str, Any]]:
    key = f"mephisto.{kind}"
    type_key = registry.config_key(kind)
    if not isinstance(values, dict) or values.get(type_key) in (None, "", MISSING):
        valid = ", ".join(registry.valid_plugin_types(kind)) or "(none)"
        raise ConfigError(
            f"{key} is not set: choose a {kind} type in your config's defaults "
            f"(- /mephisto/{kind}: <type>) or with the override mephisto/{kind}=<type>; "
            f"valid {kind} types: {valid}",
            key=key,
        )
    name = str(values[type_key])
    try:
        cls = registry.get_plugin(kind, name)
    except UnknownAbstractionError as exc:
        raise UnknownAbstractionError(str(exc), key=key) from None
    except ConfigError as exc:
        raise ConfigError(str(exc), key=key) from None
    args_class = getattr(cls, "ArgsClass", None)
    if args_class is None or not is_dataclass(args_class):
        return cls, dict(values)
    if type_key not in _args_fields(args_class):  # type: ignore[arg-type]
        values = {k: v for k, v in values.items() if k != type_key}
    merged = _merge_args(args_class, values, key)  # type: ignore[arg-type]
    merged[type_key] = name
    return cls, merged
