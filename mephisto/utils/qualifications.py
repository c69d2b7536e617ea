"""Helpers for qualification requirements (Mephisto's public path)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mephisto.data_model.qualification import (
    COMPARATORS_WITHOUT_VALUE,
    QUAL_IN_LIST,
    QUAL_NOT_IN_LIST,
    SUPPORTED_COMPARATORS,
    meets_requirement,
)
from mephisto.errors import ConfigError, EntryAlreadyExists


def make_qualification_dict(
    qualification_name: str,
    comparator: str,
    value: Any = None,
    applicable_providers: list[str] | None = None,
) -> dict[str, Any]:
    """A requirement on a qualification, for `SharedTaskState.qualifications`."""
    if not qualification_name:
        raise ConfigError("a qualification requirement needs a qualification_name")
    if comparator not in SUPPORTED_COMPARATORS:
        raise ConfigError(
            f"unknown qualification comparator {comparator!r}; use one of "
            + ", ".join(SUPPORTED_COMPARATORS)
        )
    if comparator not in COMPARATORS_WITHOUT_VALUE and value is None:
        raise ConfigError(f"comparator {comparator} needs a value (qualification {qualification_name!r})")
    if comparator in (QUAL_IN_LIST, QUAL_NOT_IN_LIST) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"comparator {comparator} needs a list value")
    return {
        "qualification_name": qualification_name,
        "comparator": comparator,
        "value": value,
        "applicable_providers": applicable_providers,
    }


def worker_meets_requirements(
    granted: Mapping[str, int], requirements: Sequence[Mapping[str, Any]]
) -> bool:
    """Whether a worker holding `granted` (name -> value) meets every requirement."""
    return all(
        meets_requirement(granted.get(r["qualification_name"]), r["comparator"], r.get("value"))
        for r in requirements
    )


def find_or_create_qualification(db: Any, qualification_name: str) -> str:
    """The id of the qualification `qualification_name`, made if it does not exist yet
    (safe when another process makes it at the same time)."""
    found = db.find_qualifications(qualification_name=qualification_name)
    if found:
        return str(found[0].db_id)
    try:
        return str(db.make_qualification(qualification_name))
    except EntryAlreadyExists:
        return str(db.find_qualifications(qualification_name=qualification_name)[0].db_id)
