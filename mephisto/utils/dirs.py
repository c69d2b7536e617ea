"""Where Mephisto keeps its files.

Contract:
- Nothing here runs at import time; every path is computed when a function is called,
  so `MEPHISTO_HOME` and friends may be changed between calls (tests rely on it).
- The home folder (`config_handler.get_mephisto_home`) is `$MEPHISTO_HOME` if set and
  non-empty, else `~/.mephisto`; `config_handler.write_config` creates it when it
  writes. This module reads the config file through `config_handler` (one way: the
  config handler knows nothing of the data directory).
- The data directory is created (with parents) by `get_data_dir`, and by nothing else;
  `resolve_data_dir` and `resolve_database_url` say what would be used, and where the
  value came from (environment, config file, default), creating nothing.
- Other folders (`get_run_dir`) are returned, not created: the code that writes into
  them creates them, so read-only callers (exports, review) leave no empty folders.

Priority of the settings, first match wins:
- data directory: env `MEPHISTO_DATA_DIR`, config `core.main_data_directory`,
  `<home>/data`.
- database URL: env `MEPHISTO_DATABASE_URL`, config `core.database_url`,
  `sqlite:///<data dir>/database.db`.
"""

from __future__ import annotations

from pathlib import Path

from mephisto.utils import config_handler
from mephisto.utils.config_handler import (  # the last two re-exported: their home is there
    absolute_path,
    env_setting,
    get_config_path,
    get_mephisto_home,
)

__all__ = [
    "get_config_path", "get_data_dir", "get_database_url", "get_db_path", "get_mephisto_home",
    "get_root_data_dir", "get_run_dir", "resolve_data_dir", "resolve_database_url",
]

DATA_DIR_ENV = "MEPHISTO_DATA_DIR"
DATABASE_URL_ENV = "MEPHISTO_DATABASE_URL"

DB_FILENAME = "database.db"


# Where a setting came from, as `resolve_*` report it.
FROM_ENV = "env"
FROM_CONFIG = "config"
FROM_DEFAULT = "default"


def resolve_data_dir() -> tuple[Path, str]:
    """The data directory and where it came from (`FROM_ENV`, `FROM_CONFIG`,
    `FROM_DEFAULT`), without creating it."""
    override = env_setting(DATA_DIR_ENV)
    if override is not None:
        return absolute_path(override), FROM_ENV
    configured = config_handler.get_config_arg(
        config_handler.CORE_SECTION, config_handler.DATA_STORAGE_KEY
    )
    if configured:
        return absolute_path(str(configured)), FROM_CONFIG
    return get_mephisto_home() / "data", FROM_DEFAULT


def get_data_dir() -> Path:
    """The root of everything a run stores on disk; created if missing."""
    data_dir, _source = resolve_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


# Mephisto's name for the same thing.
get_root_data_dir = get_data_dir


def get_db_path() -> Path:
    """Path of the embedded SQLite database file, `<data dir>/database.db`."""
    return get_data_dir() / DB_FILENAME


def resolve_database_url() -> tuple[str, str]:
    """The database URL and where it came from (see `resolve_data_dir`), creating
    nothing. The URL may hold a password: show it only through SQLAlchemy's
    `render_as_string(hide_password=True)`."""
    override = env_setting(DATABASE_URL_ENV)
    if override is not None:
        return override, FROM_ENV
    configured = config_handler.get_config_arg(
        config_handler.CORE_SECTION, config_handler.DATABASE_URL_KEY
    )
    if configured:
        return str(configured), FROM_CONFIG
    data_dir, _source = resolve_data_dir()
    return f"sqlite:///{(data_dir / DB_FILENAME).as_posix()}", FROM_DEFAULT


def get_database_url() -> str:
    """The SQLAlchemy URL of the database to use (see the module docstring)."""
    url, source = resolve_database_url()
    if source == FROM_DEFAULT:
        get_data_dir()  # the embedded database's folder
    return url


def get_run_dir(task_run_id: str | int) -> Path:
    """Folder for the files of one task run (uploads), `<data dir>/runs/<id>`.

    Not created here. Raises ValueError if the id could escape the runs folder.
    """
    name = str(task_run_id)
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"invalid task_run_id for a folder name: {task_run_id!r}")
    return get_data_dir() / "runs" / name
