"""What `mephisto config` shows and sets: the settings a user may put in the config file,
where each value in effect comes from, and the environment variables that matter.

The config file is read and written only through `mephisto.utils.config_handler`.
Only the settings in `SETTINGS` can be set: a mistyped key is refused (naming the known
ones) and nothing is written, since a key nobody reads would look set and do nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mephisto.errors import ConfigError
from mephisto.utils import config_handler, dirs

__all__ = [
    "SETTINGS",
    "EnvVariable",
    "Setting",
    "SettingValue",
    "env_variables",
    "get_setting",
    "hide_password",
    "parse_identifier",
    "set_setting",
    "setting_values",
    "unset_setting",
]


def hide_password(url: str) -> str:
    """A database URL as it may be shown: its password replaced by `***`."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can read: its scheme only
        return url.split("://", 1)[0] + "://..." if "://" in url else "(not a URL)"


def _check_data_dir(value: str) -> str:
    if not value.strip():
        raise ConfigError("core.main_data_directory needs a folder path",
                          key="core.main_data_directory")
    path = config_handler.absolute_path(value.strip())
    if path.exists() and not path.is_dir():
        raise ConfigError(f"core.main_data_directory: {path} exists and is not a folder",
                          key="core.main_data_directory")
    return str(path)  # absolute: a relative path would move with the current directory


def _check_database_url(value: str) -> str:
    from mephisto.db.engine import normalize_url

    normalize_url(value.strip())  # ConfigError naming what is wrong with it
    return value.strip()


@dataclass(frozen=True)
class Setting:
    """A key of the config file that this package reads."""

    section: str
    key: str
    env: str  # the environment variable that overrides it
    help: str
    check: Callable[[str], str]  # the value to store, or ConfigError
    secret_url: bool = False  # a URL whose password must never be shown

    @property
    def identifier(self) -> str:
        return f"{self.section}.{self.key}"


SETTINGS: dict[str, Setting] = {
    s.identifier: s
    for s in (
        Setting(config_handler.CORE_SECTION, config_handler.DATA_STORAGE_KEY, dirs.DATA_DIR_ENV,
                "where runs keep their files (and the SQLite database, by default)",
                _check_data_dir),
        Setting(config_handler.CORE_SECTION, config_handler.DATABASE_URL_KEY,
                dirs.DATABASE_URL_ENV,
                "the database: sqlite:///path/to/file.db or postgresql://user@host/db",
                _check_database_url, secret_url=True),
    )
}


def parse_identifier(identifier: str) -> Setting:
    """The setting `<section>.<key>` names; `ConfigError` listing the known ones."""
    known = ", ".join(SETTINGS)
    section, dot, key = identifier.partition(".")
    if not dot or not section or not key or "." in key:
        raise ConfigError(f"{identifier!r} is not of the form <section>.<key>; known settings: "
                          f"{known}", key=identifier)
    setting = SETTINGS.get(identifier)
    if setting is None:
        raise ConfigError(f"unknown setting {identifier!r}; known settings: {known}",
                          key=identifier)
    return setting


@dataclass(frozen=True)
class SettingValue:
    """A setting as it is in effect: `value` (shown form: no password), `source`
    (`env`, `config` or `default`), and what the config file holds for it, if anything,
    when something else overrides it."""

    setting: Setting
    value: str
    source: str
    overridden_file_value: str | None = None


def _shown(setting: Setting, value: Any) -> str:
    return hide_password(str(value)) if setting.secret_url else str(value)


def setting_values() -> list[SettingValue]:
    """Every known setting in effect, and where it comes from. Creates nothing."""
    data_dir, data_source = dirs.resolve_data_dir()
    url, url_source = dirs.resolve_database_url()
    effective = {
        f"{config_handler.CORE_SECTION}.{config_handler.DATA_STORAGE_KEY}":
            (str(data_dir), data_source),
        f"{config_handler.CORE_SECTION}.{config_handler.DATABASE_URL_KEY}": (url, url_source),
    }
    out = []
    for identifier, setting in SETTINGS.items():
        value, source = effective[identifier]
        in_file = config_handler.get_config_arg(setting.section, setting.key)
        overridden = _shown(setting, in_file) if in_file and source != dirs.FROM_CONFIG else None
        out.append(SettingValue(setting, _shown(setting, value), source, overridden))
    return out


def other_file_values() -> list[tuple[str, str]]:
    """Values in the config file that no setting here reads (Mephisto's own sections,
    say): `(section.key, value)`, kept but unused. URLs are shown without password."""
    out = []
    for section, values in config_handler.get_config().items():
        for key, value in (values or {}).items():
            identifier = f"{section}.{key}"
            if identifier not in SETTINGS:
                text = str(value)
                out.append((identifier, hide_password(text) if "://" in text else text))
    return out


def get_setting(identifier: str) -> SettingValue:
    """One known setting as it is in effect (`mephisto config core.database_url`)."""
    setting = parse_identifier(identifier)
    return next(v for v in setting_values() if v.setting == setting)


def set_setting(identifier: str, value: str) -> SettingValue:
    """Write `section.key: value` to the config file (checked first: a bad key or value
    raises `ConfigError` and writes nothing). Returns the setting as now in effect, so
    the caller can say when an environment variable still overrides it."""
    setting = parse_identifier(identifier)
    stored = setting.check(value)
    config_handler.add_config_arg(setting.section, setting.key, stored)
    return get_setting(identifier)


def unset_setting(identifier: str) -> SettingValue:
    """Remove `section.key` from the config file (the default applies again)."""
    setting = parse_identifier(identifier)
    config = config_handler.get_config()
    values = dict(config.get(setting.section) or {})
    if setting.key in values:
        del values[setting.key]
        if values:
            config[setting.section] = values
        else:
            config.pop(setting.section, None)
        config_handler.write_config(config)
    return get_setting(identifier)


@dataclass(frozen=True)
class EnvVariable:
    name: str
    value: str | None  # None: not set; a secret's value is never returned
    help: str


# Environment variables this package reads, beyond the settings' own.
_SECRET_ENV = {
    "MEPHISTO_METRICS_TOKEN": "bearer token of every run's /metrics (else one per run)",
    "PROLIFIC_API_KEY": "Prolific API token of requesters without a stored one",
}


def env_variables() -> list[EnvVariable]:
    """The environment variables that change what Mephisto does, as set now."""
    out = [EnvVariable(config_handler.HOME_ENV,
                       config_handler.env_setting(config_handler.HOME_ENV),
                       "the Mephisto home: config.yml, requester secrets, default data")]
    for setting in SETTINGS.values():
        raw = config_handler.env_setting(setting.env)
        out.append(EnvVariable(setting.env, None if raw is None else _shown(setting, raw),
                               f"overrides {setting.identifier}"))
    for name, help_text in _SECRET_ENV.items():
        raw = config_handler.env_setting(name)
        out.append(EnvVariable(name, None if raw is None else "(set, hidden)", help_text))
    return out


def config_file() -> tuple[Path, bool]:
    """The config file's path and whether it exists."""
    path = config_handler.get_config_path()
    return path, path.is_file()
