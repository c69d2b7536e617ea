"""What `mephisto qualifications` does: list qualifications with their grants; grant,
revoke and delete them, here and on the crowd provider.

- Listing is one grouped query (qualifications outer-joined to their grants), never one
  per qualification.
- A change names workers by name (`workers.find_workers`). The workers, the value and
  the qualification are all checked before anything changes. Then the provider of each
  worker's type is told, where it has `Capability.QUALIFICATIONS` (calls it accepts
  twice); then one transaction records the grants (or revocations) with a review row
  per worker. If a provider refuses, nothing is recorded here and the command can
  simply be run again.
- A provider mirrors a grant in a requester's account (an MTurk qualification type, a
  Prolific participant group). The requester is the only one of the worker's provider
  type, else that of the worker's latest run, with the provider configured as that run
  was (`provider_review.provider_of`). When neither can be found the change is recorded
  here only, with a warning saying the provider was not told and why.
- Deleting a qualification revokes it from every holder (on the providers too) and
  removes it with its grants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mephisto.abstractions.crowd_provider import Capability, CrowdProvider
from mephisto.data_model.agent import Agent
from mephisto.data_model.worker import Worker
from mephisto.db import schema as s
from mephisto.errors import ConfigError, EntryAlreadyExists, EntryDoesNotExist, ProviderError
from mephisto.operations.registry import get_crowd_provider_from_type
from mephisto.tools.provider_review import provider_of
from mephisto.tools.workers import find_worker, find_workers, names, provider_for_requester

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

__all__ = [
    "QualificationChange",
    "QualificationLine",
    "delete_qualification",
    "find_qualification",
    "grant_qualification",
    "holders",
    "list_qualifications",
    "parse_value",
    "revoke_qualification",
]

MIN_VALUE, MAX_VALUE = -(2**31), 2**31 - 1  # the column is a 32-bit integer on PostgreSQL


def parse_value(text: str | int) -> int:
    """A qualification's value from the command line; `ConfigError` for anything but
    a 32-bit integer."""
    if isinstance(text, bool):
        raise ConfigError(f"a qualification value is an integer, not {text!r}", key="value")
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"a qualification value is an integer, such as 1 or 0; got "
                          f"{text!r}", key="value") from None
    if not MIN_VALUE <= value <= MAX_VALUE:
        raise ConfigError(f"a qualification value is between {MIN_VALUE} and {MAX_VALUE}; "
                          f"got {value}", key="value")
    return value


@dataclass(frozen=True)
class QualificationLine:
    """A qualification with how many workers hold it and their lowest and highest
    values (None when nobody does); `worker_value`: the value of the worker asked about."""

    qualification_id: str
    name: str
    creation_date: float
    workers: int
    min_value: int | None
    max_value: int | None
    worker_value: int | None = None


def list_qualifications(db: MephistoDB, worker_name: str | None = None,
                        provider_type: str | None = None) -> list[QualificationLine]:
    """Every qualification by name (with `worker_name`: those the worker holds)."""
    q, g = s.qualifications, s.granted_qualifications
    query = (sa.select(q.c.qualification_id, q.c.qualification_name, q.c.creation_date,
                       sa.func.count(g.c.granted_qualification_id), sa.func.min(g.c.value),
                       sa.func.max(g.c.value))
             .select_from(q.outerjoin(g, g.c.qualification_id == q.c.qualification_id))
             .group_by(q.c.qualification_id, q.c.qualification_name, q.c.creation_date)
             .order_by(q.c.qualification_name))
    if worker_name is not None:
        wid = int(find_worker(db, worker_name, provider_type, changing=False).db_id)
        mine = sa.func.max(sa.case((g.c.worker_id == wid, g.c.value)))
        query = query.add_columns(mine).having(
            sa.func.sum(sa.case((g.c.worker_id == wid, 1), else_=0)) > 0)
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [QualificationLine(str(r[0]), r[1], float(r[2]), int(r[3]), r[4], r[5],
                              r[6] if worker_name is not None else None) for r in rows]


def find_qualification(db: MephistoDB, name: str) -> str:
    """The id of the qualification `name`; `EntryDoesNotExist` listing the known ones."""
    found = db.find_qualifications(qualification_name=name)
    if found:
        return str(found[0].db_id)
    known = [x.qualification_name for x in db.find_qualifications()]
    raise EntryDoesNotExist(f"no qualification named {name!r}; qualifications: "
                            f"{names(known)}")


def holders(db: MephistoDB, qualification_id: str) -> list[Worker]:
    """The workers holding the qualification, by name."""
    w, g = s.workers, s.granted_qualifications
    query = (sa.select(w).join(g, g.c.worker_id == w.c.worker_id)
             .where(g.c.qualification_id == int(qualification_id))
             .order_by(w.c.worker_name, w.c.provider_type))
    with db.read() as conn:
        return [Worker(db, r.worker_id, dict(r._mapping, worker_id=str(r.worker_id)))
                for r in conn.execute(query)]


@dataclass
class QualificationChange:
    """What a grant, revocation or deletion did: to which workers, whether the
    qualification was `created`, which workers' providers were told (`told`), and
    `warnings` (providers not told, and why)."""

    qualification: str
    workers: list[Worker]
    value: int | None = None
    created: bool = False
    told: list[Worker] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _latest_agent(db: MephistoDB, worker: Worker) -> Agent | None:
    a = s.agents
    query = (sa.select(a.c.agent_id).where(a.c.worker_id == int(worker.db_id))
             .order_by(a.c.creation_date.desc()).limit(1))
    with db.read() as conn:
        agent_id = conn.execute(query).scalar()
    return None if agent_id is None else Agent(db, agent_id)


def _provider_of_type(db: MephistoDB, ptype: str,
                      what: str) -> tuple[CrowdProvider | None, bool, str | None]:
    """(provider, by_run, warning) for workers of `ptype`: the provider configured for
    the only requester of the type; or `by_run` (the worker's latest run decides); or
    None with the reason the provider will not be told."""
    try:
        cls: type[CrowdProvider] = get_crowd_provider_from_type(ptype)
    except ConfigError:
        return None, False, (f"provider type {ptype!r} is not installed here: {what} here "
                             "only, the provider was not told")
    if Capability.QUALIFICATIONS not in cls.CAPABILITIES:
        return None, False, f"{ptype} has no qualifications of its own: {what} here only"
    requesters = db.find_requesters(provider_type=ptype)
    if len(requesters) == 1:
        return provider_for_requester(db, ptype, requesters[0].requester_name), False, None
    return None, True, None


def _providers(db: MephistoDB, workers: Sequence[Worker],
               what: str) -> tuple[dict[str, CrowdProvider], list[str]]:
    """The provider to tell about each worker (by worker id), and warnings for those
    whose provider will not be told. `what`: "granted" or "revoked"."""
    providers: dict[str, CrowdProvider] = {}
    types: dict[str, tuple[CrowdProvider | None, bool, str | None]] = {}
    warnings: list[str] = []
    for worker in workers:
        ptype = worker.provider_type
        if ptype not in types:
            types[ptype] = _provider_of_type(db, ptype, what)
            if types[ptype][2]:
                warnings.append(str(types[ptype][2]))
        provider, by_run, _ = types[ptype]
        if by_run:
            agent = _latest_agent(db, worker)
            if agent is None:
                count = len(db.find_requesters(provider_type=ptype))
                warnings.append(
                    f"{ptype} was not told about {worker.worker_name!r} ({what} here only): "
                    f"with {count} {ptype} requesters the account to use is not known, and "
                    "the worker has no run to take it from")
                continue
            provider = provider_of(agent)
        if provider is not None:
            providers[worker.db_id] = provider
    return providers, warnings


def _tell(providers: dict[str, CrowdProvider], workers: Sequence[Worker], name: str,
          value: int | None) -> list[Worker]:
    """Grant (value) or revoke (None) on each worker's provider; a refusal says that
    nothing was recorded here."""
    told: list[Worker] = []
    for worker in workers:
        provider = providers.get(worker.db_id)
        if provider is None:
            continue
        try:
            if value is None:
                provider.revoke_qualification(worker, name)
            else:
                provider.grant_qualification(worker, name, value)
        except ProviderError as exc:
            detail = str(exc).removeprefix(f"{exc.provider_type}: ")
            raise ProviderError(exc.provider_type, f"{detail} (worker {worker.worker_name!r}; "
                                f"{len(told)} worker(s) done on the provider, nothing "
                                "recorded here: run the command again once this is fixed)",
                                exc.retryable) from exc
        told.append(worker)
    return told


def _make(db: MephistoDB, name: str) -> str:
    try:
        return db.make_qualification(name)
    except EntryAlreadyExists:  # made by another process since the check
        return find_qualification(db, name)


def grant_qualification(db: MephistoDB, name: str, worker_names: Sequence[str],
                        value: str | int = 1, provider_type: str | None = None,
                        create: bool = False) -> QualificationChange:
    """Grant `name` with `value` to the workers (a new value replaces the old one).
    An unknown qualification is an error unless `create`."""
    name = (name or "").strip()
    if not name:
        raise ConfigError("a qualification needs a name", key="qualification")
    number = parse_value(value)
    workers = find_workers(db, worker_names, provider_type)
    found = db.find_qualifications(qualification_name=name)
    if not found and not create:
        try:
            find_qualification(db, name)
        except EntryDoesNotExist as exc:
            raise EntryDoesNotExist(f"{exc}; add --create to make it. Nothing was "
                                    "changed") from None
    providers, warnings = _providers(db, workers, "granted")
    told = _tell(providers, workers, name, number)
    with db.transaction():
        qid = found[0].db_id if found else _make(db, name)
        for worker in workers:
            db.grant_qualification(qid, worker.db_id, number)
            db.new_worker_review(worker.db_id, qualification_id=qid, value=number)
    return QualificationChange(name, workers, number, not found, told, warnings)


def revoke_qualification(db: MephistoDB, name: str, worker_names: Sequence[str],
                         provider_type: str | None = None) -> QualificationChange:
    """Take `name` away from the workers; each must hold it."""
    qid = find_qualification(db, name)
    workers = find_workers(db, worker_names, provider_type)
    holding = {w.db_id for w in holders(db, qid)}
    lacking = [w.worker_name for w in workers if w.db_id not in holding]
    if lacking:
        verb = "does" if len(lacking) == 1 else "do"
        raise EntryDoesNotExist(f"{names(lacking)} {verb} not hold {name!r}; nothing was "
                                "changed")
    providers, warnings = _providers(db, workers, "revoked")
    told = _tell(providers, workers, name, None)
    with db.transaction():
        for worker in workers:
            db.revoke_qualification(qid, worker.db_id)
            db.new_worker_review(worker.db_id, qualification_id=qid, revoke=True)
    return QualificationChange(name, workers, None, False, told, warnings)


def delete_qualification(db: MephistoDB, name: str) -> QualificationChange:
    """Revoke `name` from every holder (on their providers too), then delete it."""
    qid = find_qualification(db, name)
    workers = holders(db, qid)
    providers, warnings = _providers(db, workers, "revoked")
    told = _tell(providers, workers, name, None)
    db.delete_qualification(name)
    return QualificationChange(name, workers, None, False, told, warnings)
