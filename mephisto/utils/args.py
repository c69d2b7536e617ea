"""`Args`: resolved configuration as plain values, read like the DictConfig it came from.

Hydra and OmegaConf stay at the edge (`operations/hydra_config.py`): what they compose
is checked and resolved there once, and everything below reads `Args`, nested plain
dicts that answer attribute access (`args.task.task_reward`), `.get()` and `in` as a
DictConfig does. Reading one costs a dict lookup, where a DictConfig key costs
microseconds: the live run reads these on every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Args"]


class Args(dict[str, Any]):
    """A config section (and its subsections, themselves `Args`)."""

    __slots__ = ()

    @classmethod
    def of(cls, values: Mapping[str, Any] | None) -> Args:
        """`values` (a plain mapping, nested) as `Args`, subsections included."""
        return cls({
            key: cls.of(value) if isinstance(value, Mapping) else value
            for key, value in (values or {}).items()
        })

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no config key {name!r} (keys: {', '.join(self)})") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (for YAML or JSON)."""
        return {key: value.to_dict() if isinstance(value, Args) else value
                for key, value in self.items()}
