"""Read and write the user's config file, `<home>/config.yml`.

This is the only module that touches that file. The file is YAML shaped as
sections -> keys -> values, for example::

    core:
      main_data_directory: /data/mephisto
      database_url: postgresql+psycopg://me@db/mephisto

Contract:
- A missing file reads as `{}`; an empty file reads as `{}`.
- A file that is not valid YAML, whose top level is not a mapping, or whose section is
  not a mapping raises ConfigError naming the file (and the section as `key`).
- `write_config` is atomic: it writes a temporary file in the same folder and renames
  it over the old one, so readers see the old or the new file, never half of one.
  The folder is created if needed; the file is left readable by its owner only,
  as it may hold provider credentials.
- Nothing happens at import time.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from mephisto.errors import ConfigError
from mephisto.utils.files import write_private_file

HOME_ENV = "MEPHISTO_HOME"
CONFIG_FILENAME = "config.yml"

CORE_SECTION = "core"
DATA_STORAGE_KEY = "main_data_directory"
DATABASE_URL_KEY = "database_url"


def env_setting(name: str) -> str | None:
    """An environment variable, with an empty value treated as unset."""
    value = os.environ.get(name, "")
    return value or None


def absolute_path(value: str | os.PathLike[str]) -> Path:
    # absolute() uses the current directory; it does not touch the file system.
    return Path(value).expanduser().absolute()


def get_mephisto_home() -> Path:
    """The folder holding `config.yml` (and, by default, the data directory)."""
    override = env_setting(HOME_ENV)
    if override is not None:
        return absolute_path(override)
    return Path.home() / ".mephisto"


def get_config_path() -> Path:
    """Path of the user's config file, `<home>/config.yml`. It may not exist."""
    return get_mephisto_home() / CONFIG_FILENAME


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must be a mapping of sections, found {type(data).__name__}"
        )
    for section, values in data.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(
                f"Config file {path}: section {section!r} must be a mapping of keys, "
                f"found {type(values).__name__}",
                key=str(section),
            )
    return data


def get_config() -> dict[str, Any]:
    """The whole config as a dict of sections; `{}` when there is no file."""
    return _load(get_config_path())


def write_config(config: dict[str, Any]) -> None:
    """Replace the config file with `config`, atomically."""
    path = get_config_path()
    if not isinstance(config, dict):
        raise ConfigError(f"Config written to {path} must be a dict, got {type(config).__name__}")
    try:
        text = yaml.safe_dump(config, default_flow_style=False, sort_keys=False)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot write config file {path}: {exc}") from exc
    write_private_file(path, text)


def init_config() -> None:
    """Create an empty config file (and its folder) unless one exists already."""
    path = get_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # "x" never overwrites a file another process created in the meantime.
    with contextlib.suppress(FileExistsError), open(path, "x", encoding="utf-8"):
        pass


def add_config_arg(section: str, key: str, value: Any) -> None:
    """Set `section.key` to `value` in the config file, keeping everything else."""
    config = get_config()
    values = config.get(section) or {}
    values[key] = value
    config[section] = values
    write_config(config)


def get_config_arg(section: str, key: str, default: Any = None) -> Any:
    """The value of `section.key`, or `default` when the section or key is absent."""
    values = get_config().get(section) or {}
    return values.get(key, default)
