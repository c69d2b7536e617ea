"""Qualifications workers can be granted, and the comparators task requirements use.

A requirement is a dict made by `mephisto.utils.qualifications.make_qualification_dict`:
`{"qualification_name", "comparator", "value", "applicable_providers"}`. The comparator
names are MTurk's (Mephisto keeps them), so requirements can be pushed to providers.
"""

from __future__ import annotations

from typing import Any

from mephisto.data_model.entity import Entity

QUAL_GREATER = "GreaterThan"
QUAL_GREATER_EQUAL = "GreaterThanOrEqualTo"
QUAL_LESS = "LessThan"
QUAL_LESS_EQUAL = "LessThanOrEqualTo"
QUAL_EQUAL = "EqualTo"
QUAL_NOT_EQUAL = "NotEqualTo"
QUAL_IN_LIST = "In"
QUAL_NOT_IN_LIST = "NotIn"
QUAL_EXISTS = "Exists"
QUAL_NOT_EXIST = "DoesNotExist"

SUPPORTED_COMPARATORS = [
    QUAL_GREATER,
    QUAL_GREATER_EQUAL,
    QUAL_LESS,
    QUAL_LESS_EQUAL,
    QUAL_EQUAL,
    QUAL_NOT_EQUAL,
    QUAL_IN_LIST,
    QUAL_NOT_IN_LIST,
    QUAL_EXISTS,
    QUAL_NOT_EXIST,
]
COMPARATORS_WITHOUT_VALUE = (QUAL_EXISTS, QUAL_NOT_EXIST)


def meets_requirement(granted_value: int | None, comparator: str, value: Any) -> bool:
    """Whether a worker's grant (None = not granted) satisfies one requirement."""
    if comparator == QUAL_EXISTS:
        return granted_value is not None
    if comparator == QUAL_NOT_EXIST:
        return granted_value is None
    if granted_value is None:
        return False
    if comparator == QUAL_GREATER:
        return granted_value > value
    if comparator == QUAL_GREATER_EQUAL:
        return granted_value >= value
    if comparator == QUAL_LESS:
        return granted_value < value
    if comparator == QUAL_LESS_EQUAL:
        return granted_value <= value
    if comparator == QUAL_EQUAL:
        return granted_value == value
    if comparator == QUAL_NOT_EQUAL:
        return granted_value != value
    if comparator == QUAL_IN_LIST:
        return granted_value in value
    if comparator == QUAL_NOT_IN_LIST:
        return granted_value not in value
    raise ValueError(f"unknown comparator {comparator!r}; use one of {SUPPORTED_COMPARATORS}")


class Qualification(Entity):
    _getter = "get_qualification"
    qualification_name: str


class GrantedQualification:
    """A qualification granted to a worker, with its value."""

    def __init__(self, db: Any, row: dict[str, Any]) -> None:
        self.db = db
        self.qualification_id: str = row["qualification_id"]
        self.worker_id: str = row["worker_id"]
        self.value: int = row["value"]
        self.creation_date: float = row["creation_date"]
        self.update_date: float = row["update_date"]

    def get_qualification(self) -> Qualification:
        return Qualification(self.db, self.qualification_id)

    def __repr__(self) -> str:
        return (
            f"GrantedQualification(qualification_id={self.qualification_id!r}, "
            f"worker_id={self.worker_id!r}, value={self.value})"
        )
