"""Loggers for run and review scripts (Mephisto's `get_logger`).

Only names a logger: handlers and levels belong to whoever runs the script
(`task_script` sets the level of mephisto's loggers from `mephisto.log_level`), so
importing or calling this configures nothing.
"""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """The logger called `name`; scripts use `get_logger(name=__name__)`."""
    return logging.getLogger(name)
