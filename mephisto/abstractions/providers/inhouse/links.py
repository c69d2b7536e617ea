"""Participant links of the in-house provider: `<task server URL>?token=<token>`.

A token names one participant of one requester; the URL says which run's server to
open. So a link made for a run works for that run, and one made for a URL works for
whatever that server runs, for any of the requester's runs, until it expires.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mephisto.abstractions.providers.inhouse.provider import RUN
from mephisto.abstractions.providers.inhouse.tokens import (
    PROVIDER_TYPE,
    SigningKey,
    check_participant_name,
    load_key,
)
from mephisto.errors import ProviderError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

DEFAULT_EXPIRY = timedelta(days=7)
_ANONYMOUS_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l


@dataclass(frozen=True)
class ParticipantLink:
    participant: str
    url: str
    expires_at: int  # Unix seconds


def link_url(server_url: str, token: str) -> str:
    """`server_url` with `token=<token>` in its query (other parameters kept)."""
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProviderError(PROVIDER_TYPE, f"{server_url!r} is not an http(s) URL of a "
                                           "task server")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(query), ""))


def anonymous_participants(count: int) -> list[str]:
    """`count` new random participant names (`p-` and 8 characters), for links sent to
    people whose names the study should not hold."""
    if count < 0:
        raise ValueError("count must not be negative")
    names: set[str] = set()
    while len(names) < count:
        names.add("p-" + "".join(secrets.choice(_ANONYMOUS_ALPHABET) for _ in range(8)))
    return sorted(names)


def make_links(
    key: SigningKey,
    server_url: str,
    participants: Iterable[str],
    expires_in: timedelta = DEFAULT_EXPIRY,
    now: float | None = None,
) -> list[ParticipantLink]:
    """One link per participant (in the given order, duplicates once), each valid for
    `expires_in` from `now`. A name that cannot be in a token raises `ProviderError`."""
    if expires_in.total_seconds() <= 0:
        raise ProviderError(PROVIDER_TYPE, "a link must be valid for some time: give a "
                                           "positive expiry")
    expires_at = int((time.time() if now is None else now) + expires_in.total_seconds())
    links: list[ParticipantLink] = []
    for name in dict.fromkeys(participants):
        try:
            check_participant_name(name)
        except ValueError as exc:
            raise ProviderError(PROVIDER_TYPE, str(exc)) from None
        links.append(ParticipantLink(name, link_url(server_url, key.sign(name, expires_at)),
                                     expires_at))
    return links


def links_for_requester(
    requester_name: str, server_url: str, participants: Iterable[str],
    expires_in: timedelta = DEFAULT_EXPIRY,
) -> list[ParticipantLink]:
    """Links to `server_url`, signed with the requester's secret."""
    return make_links(load_key(requester_name), server_url, participants, expires_in)


def run_link_target(db: MephistoDB, task_run_id: str) -> tuple[str, str]:
    """The server URL and requester name of an in-house run, as recorded when it was last
    served (`ProviderError` for a run that is no in-house run, has finished or is not
    being served)."""
    from mephisto.data_model.task_run import TaskRun

    run = TaskRun(db, task_run_id)  # EntryDoesNotExist for an unknown id
    if run.provider_type != PROVIDER_TYPE:
        raise ProviderError(PROVIDER_TYPE, f"task run {task_run_id} uses the "
                                           f"{run.provider_type} provider, not {PROVIDER_TYPE}")
    record = db.get_provider_record(PROVIDER_TYPE, RUN, task_run_id)
    if record is None:
        raise ProviderError(PROVIDER_TYPE, f"task run {task_run_id} was never served: "
                                           "launch it first")
    if run.is_completed:
        raise ProviderError(PROVIDER_TYPE, f"task run {task_run_id} has finished: links to "
                                           f"it would lead nowhere (pass a server URL to "
                                           "make links for another server)")
    if not record.get("serving", True):
        raise ProviderError(PROVIDER_TYPE, f"task run {task_run_id} is not being served (it "
                                           "was stopped): resume it, then make its links")
    return str(record["url"]), str(record["requester_name"])


def links_for_run(
    db: MephistoDB, task_run_id: str, participants: Iterable[str],
    expires_in: timedelta = DEFAULT_EXPIRY,
) -> list[ParticipantLink]:
    """Links to a live in-house run's server, signed with its requester's secret."""
    url, requester_name = run_link_target(db, task_run_id)
    return links_for_requester(requester_name, url, participants, expires_in)
