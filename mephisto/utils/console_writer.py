"""`ConsoleWriter`: print messages with a logger's method names (Mephisto's helper).

Run scripts use it as `logger = ConsoleWriter()` and call `logger.info(...)`; swapping
that line for `get_logger(__name__)` sends the same calls to logging instead. Every
level prints the same way, through `printer` (default: rich's `print`, so console
markup such as `[green]` works).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any


def _rich_print(text: str) -> None:
    from rich import print as rich_print

    rich_print(text)


def _rich_print_plain(text: str) -> None:
    """Print text that is not markup (a traceback's `[...]` would be read as tags)."""
    import rich

    rich.get_console().print(text, markup=False, highlight=False)


class ConsoleWriter:
    def __init__(self, printer: Callable[[str], Any] | None = None) -> None:
        self._print = printer or _rich_print
        self._print_plain = printer or _rich_print_plain

    def debug(self, value: Any) -> None:
        self._print(str(value))

    def info(self, value: Any) -> None:
        self._print(str(value))

    def warning(self, value: Any) -> None:
        self._print(str(value))

    def error(self, value: Any) -> None:
        self._print(str(value))

    def exception(self, value: Any) -> None:
        """As `error`, followed by the traceback of the exception being handled."""
        self.error(value)
        self._print_plain(traceback.format_exc())
