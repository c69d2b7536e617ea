"""Requesters of any provider: register one from `key=value` credentials, and say which
are ready to launch. The provider class is found by its type through the registry, so
this works for every registered provider (built-in, entry point or run script).

Credentials pass through to the provider's `register_requester`, which keeps them where
its service does; nothing here stores, prints or logs a value, and error messages name
a credential by its key or position only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mephisto.abstractions.crowd_provider import CrowdProvider, RequesterCheck
from mephisto.errors import ConfigError, MephistoError
from mephisto.operations.registry import get_crowd_provider_from_type
from mephisto.utils.args import Args

if TYPE_CHECKING:
    from mephisto.data_model.requester import Requester
    from mephisto.db.database import MephistoDB

__all__ = [
    "RequesterStatus", "check_requester", "parse_credentials", "provider_for",
    "register_requester", "requester_statuses",
]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class RequesterStatus:
    """A requester and what its provider's `check_requester` found."""

    requester_name: str
    provider_type: str
    check: RequesterCheck


def parse_credentials(pairs: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Mephisto's `name=<requester> key=value ...` arguments as (requester name, the
    other pairs). `ConfigError` for a pair without `=`, a bad or repeated key, an empty
    value or a missing `name`; the message never repeats a value (it may be a secret)."""
    values: dict[str, str] = {}
    for position, pair in enumerate(pairs, start=1):
        key, sep, value = pair.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(
                f"argument {position} is not key=value (e.g. name=my_requester); "
                "its text is not shown, as it may be a secret", key=f"argument {position}")
        if key in values:
            raise ConfigError(f"{key} is given twice", key=key)
        if not value:
            raise ConfigError(f"{key} has an empty value", key=key)
        values[key] = value
    name = values.pop("name", None)
    if name is None:
        raise ConfigError("give the requester's name as name=<requester name>", key="name")
    return name, values


def provider_for(db: MephistoDB, provider_type: str, requester_name: str) -> CrowdProvider:
    """An instance of the provider `provider_type` configured for this requester
    (`UnknownAbstractionError` lists the valid types)."""
    cls = get_crowd_provider_from_type(provider_type)
    args = Args.of({"provider": {"_provider_type": provider_type,
                                 "requester_name": requester_name}})
    provider: CrowdProvider = cls(db, args)
    return provider


def register_requester(
    db: MephistoDB, provider_type: str, requester_name: str, credentials: Mapping[str, str]
) -> RequesterStatus:
    """Register the requester with its provider, then check it. Raises what the
    provider raises (`ProviderError` for credentials it refuses)."""
    cls = get_crowd_provider_from_type(provider_type)
    register = cls.register_requester  # type: ignore[attr-defined]
    requester = register(db, requester_name, credentials)
    return check_requester(db, requester)


def check_requester(db: MephistoDB, requester: Requester) -> RequesterStatus:
    """What the requester's provider says of it. A provider that fails or is not
    installed any more makes the requester not ready; it does not raise."""
    try:
        provider = provider_for(db, requester.provider_type, requester.requester_name)
        check = provider.check_requester(requester)
    except MephistoError as exc:  # ProviderError, an unknown type, a plugin failing to load
        check = RequesterCheck(False, str(exc))
    except NotImplementedError:
        check = RequesterCheck(False, f"the {requester.provider_type} provider cannot "
                                      "check requesters")
    return RequesterStatus(requester.requester_name, requester.provider_type, check)


def requester_statuses(db: MephistoDB) -> list[RequesterStatus]:
    """Every requester in the database, checked, by provider type then name."""
    requesters = sorted(db.find_requesters(),
                        key=lambda r: (r.provider_type, r.requester_name))
    return [check_requester(db, requester) for requester in requesters]
