"""Mephisto's public path for the config file helpers.

The real home is `mephisto.utils.config_handler` (a lowest-layer module, so the data
directory and database URL can be resolved without importing the operations layer).
This module only re-exports it.
"""

from mephisto.utils.config_handler import (
    CORE_SECTION,
    DATA_STORAGE_KEY,
    DATABASE_URL_KEY,
    add_config_arg,
    get_config,
    get_config_arg,
    init_config,
    write_config,
)

__all__ = [
    "CORE_SECTION",
    "DATABASE_URL_KEY",
    "DATA_STORAGE_KEY",
    "add_config_arg",
    "get_config",
    "get_config_arg",
    "init_config",
    "write_config",
]
