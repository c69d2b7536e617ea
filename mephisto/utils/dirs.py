"""Where Mephisto keeps its files.

Contract:
- Nothing here runs at import time; every path is computed when a function is called,
  so `MEPHISTO_HOME` and friends may be changed between calls (tests rely on it).
- The home folder is `$MEPHISTO_HOME` if set and non-empty, else `~/.mephisto`.
  It is never created here; `config_handler.write_config` creates it when it writes.
- The data directory is created (with parents) by `get_data_dir`, and by nothing else.
- Other folders (`get_run_dir`) are returned, not created: the code that writes into
  them creates them, so read-only callers (exports, review) leave no empty folders.

Priority of the settings, first match wins:
- data directory: env `MEPHISTO_DATA_DIR`, config `core.main_data_directory`,
  `<home>/data`.
- database URL: env `MEPHISTO_DATABASE_URL`, config `core.database_url`,
  `sqlite:///<data dir>/database.db`.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "MEPHISTO_HOME"
DATA_DIR_ENV = "MEPHISTO_DATA_DIR"
DATABASE_URL_ENV = "MEPHISTO_DATABASE_URL"

CONFIG_FILENAME = "config.yml"
DB_FILENAME = "database.db"


def _env(name: str) -> str | None:
    """An environment variable, with an empty value treated as unset."""
    value = os.environ.get(name, "")
    return value or None


def _as_abs_path(value: str | os.PathLike[str]) -> Path:
    # absolute() uses the current directory; it does not touch the file system.
    return Path(value).expanduser().absolute()


def get_mephisto_home() -> Path:
    """The folder holding `config.yml` (and, by default, the data directory)."""
    override = _env(HOME_ENV)
    if override is not None:
        return _as_abs_path(override)
    return Path.home() / ".mephisto"


def get_config_path() -> Path:
    """Path of the user's config file, `<home>/config.yml`. It may not exist."""
    return get_mephisto_home() / CONFIG_FILENAME


def get_data_dir() -> Path:
    """The root of everything a run stores on disk; created if missing."""
    override = _env(DATA_DIR_ENV)
    if override is not None:
        data_dir = _as_abs_path(override)
    else:
        # Imported here: config_handler imports this module for get_config_path.
        from mephisto.utils import config_handler

        configured = config_handler.get_config_arg(
            config_handler.CORE_SECTION, config_handler.DATA_STORAGE_KEY
        )
        if configured:
            data_dir = _as_abs_path(str(configured))
        else:
            data_dir = get_mephisto_home() / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


# Mephisto's name for the same thing.
get_root_data_dir = get_data_dir


def get_db_path() -> Path:
    """Path of the embedded SQLite database file, `<data dir>/database.db`."""
    return get_data_dir() / DB_FILENAME


def get_database_url() -> str:
    """The SQLAlchemy URL of the database to use (see the module docstring)."""
    override = _env(DATABASE_URL_ENV)
    if override is not None:
        return override
    from mephisto.utils import config_handler

    configured = config_handler.get_config_arg(
        config_handler.CORE_SECTION, config_handler.DATABASE_URL_KEY
    )
    if configured:
        return str(configured)
    return f"sqlite:///{get_db_path().as_posix()}"


def get_run_dir(task_run_id: str | int) -> Path:
    """Folder for the files of one task run (uploads), `<data dir>/runs/<id>`.

    Not created here. Raises ValueError if the id could escape the runs folder.
    """
    name = str(task_run_id)
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"invalid task_run_id for a folder name: {task_run_id!r}")
    return get_data_dir() / "runs" / name
