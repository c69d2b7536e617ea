"""What `mephisto workers` does: find workers by name, list them with their work, show
one, block and unblock one (also on the crowd provider).

- A worker is named as the provider knows them (`worker_name`); the same name may exist
  for several providers, and then the provider type must be given (`ConfigError`
  listing them). Names that match nobody are an `EntryDoesNotExist` naming each one.
- Listing is one query, whatever the number of workers: units by status, blocks and
  qualifications are grouped subqueries joined to the workers.
- Approval rate: accepted units over reviewed ones (accepted, soft-rejected,
  rejected); None before any review.
- A block is made on the provider first (where it has `Capability.BLOCK`; a call it
  accepts twice), then in the database with its review row, in one transaction.
  Everything is checked before either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mephisto.abstractions.crowd_provider import Capability, CrowdProvider
from mephisto.data_model.requester import Requester
from mephisto.data_model.worker import Worker
from mephisto.db import schema as s
from mephisto.errors import ConfigError, EntryDoesNotExist
from mephisto.operations.registry import get_crowd_provider_from_type, get_valid_provider_types
from mephisto.tools.provider_review import MAX_NOTE
from mephisto.utils.args import Args

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

__all__ = [
    "BlockChange",
    "ReviewLine",
    "UnitLine",
    "WorkerLine",
    "WorkerView",
    "approval_rate",
    "block_worker",
    "check_provider_type",
    "find_worker",
    "find_workers",
    "list_workers",
    "names",
    "provider_for_requester",
    "show_worker",
    "unblock_worker",
]

REVIEWED = ("accepted", "soft_rejected", "rejected")
COUNTED = ("completed", *REVIEWED)


def names(items: Sequence[str], limit: int = 10) -> str:
    """`'a', 'b'` (at most `limit`, then how many more), or `(none)`."""
    shown = ", ".join(repr(i) for i in items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return (shown + more) or "(none)"


def check_provider_type(provider_type: str | None) -> None:
    """`ConfigError` listing the known provider types when `provider_type` names none."""
    if provider_type is not None and provider_type not in get_valid_provider_types():
        raise ConfigError(f"no provider type {provider_type!r}; provider types: "
                          f"{names(get_valid_provider_types())}", key="provider")


def find_workers(db: MephistoDB, worker_names: Sequence[str],
                 provider_type: str | None = None, changing: bool = True) -> list[Worker]:
    """The workers named, in order, each once. Every unknown name is in one
    `EntryDoesNotExist`; a name several providers know is a `ConfigError` asking for
    the provider type. `changing`: the messages say that nothing was changed."""
    check_provider_type(provider_type)
    wanted = list(dict.fromkeys(worker_names))
    if not wanted:
        raise ConfigError("name at least one worker", key="worker")
    w = s.workers
    query = sa.select(w).where(w.c.worker_name.in_(wanted))
    if provider_type is not None:
        query = query.where(w.c.provider_type == provider_type)
    found: dict[str, list[Worker]] = {}
    with db.read() as conn:
        for row in conn.execute(query.order_by(w.c.provider_type)):
            values = dict(row._mapping, worker_id=str(row.worker_id))
            found.setdefault(row.worker_name, []).append(Worker(db, row.worker_id, values))
    unchanged = "; nothing was changed" if changing else ""
    missing = [n for n in wanted if n not in found]
    if missing:
        where = f" for provider {provider_type!r}" if provider_type else ""
        raise EntryDoesNotExist(f"no worker named {names(missing)}{where}{unchanged}")
    ambiguous = {n: ws for n, ws in found.items() if len(ws) > 1}
    if ambiguous:
        detail = "; ".join(f"{n!r} is a worker of {names([x.provider_type for x in ws])}"
                           for n, ws in ambiguous.items())
        raise ConfigError(f"{detail}: choose one with --provider{unchanged}", key="provider")
    return [found[n][0] for n in wanted]


def find_worker(db: MephistoDB, worker_name: str, provider_type: str | None = None,
                changing: bool = True) -> Worker:
    return find_workers(db, [worker_name], provider_type, changing)[0]


def provider_for_requester(db: MephistoDB, provider_type: str,
                           requester_name: str) -> CrowdProvider:
    """The provider of `provider_type`, configured as a run of this requester would be
    (`mephisto.provider.requester_name`)."""
    cls: type[CrowdProvider] = get_crowd_provider_from_type(provider_type)
    args = Args.of({"provider": {"_provider_type": provider_type,
                                 "requester_name": requester_name}})
    provider: CrowdProvider = cls(db, args)
    return provider


# -- listing ---------------------------------------------------------------------------


@dataclass
class WorkerLine:
    """A worker in the list: units by status (`completed` waits for review), whether
    any requester blocked them, and how many qualifications they hold."""

    worker_id: str
    name: str
    provider_type: str
    units: dict[str, int]
    blocked: bool
    qualifications: int

    @property
    def approval_rate(self) -> float | None:
        return approval_rate(self.units)


def approval_rate(units: dict[str, int]) -> float | None:
    reviewed = sum(units.get(st, 0) for st in REVIEWED)
    return units.get("accepted", 0) / reviewed if reviewed else None


def list_workers(db: MephistoDB, task_name: str | None = None,
                 provider_type: str | None = None, blocked: bool = False) -> list[WorkerLine]:
    """Workers by name. With `task_name`, only those with units of that task, and only
    those units counted; `blocked`: only workers some requester blocked."""
    from mephisto.tools.spending import find_task

    check_provider_type(provider_type)
    task_id = None if task_name is None else int(find_task(db, task_name).db_id)
    w, u, b, g = s.workers, s.units, s.worker_blocks, s.granted_qualifications
    counts = [sa.func.sum(sa.case((u.c.status == st, 1), else_=0)).label(st) for st in COUNTED]
    uq = sa.select(u.c.worker_id, *counts).where(u.c.worker_id.is_not(None))
    if task_id is not None:
        uq = uq.where(u.c.task_id == task_id)
    us = uq.group_by(u.c.worker_id).subquery()
    bs = sa.select(b.c.worker_id, sa.func.count().label("n")).group_by(b.c.worker_id).subquery()
    gs = sa.select(g.c.worker_id, sa.func.count().label("n")).group_by(g.c.worker_id).subquery()
    query = (sa.select(w.c.worker_id, w.c.worker_name, w.c.provider_type,
                       *[us.c[st] for st in COUNTED], bs.c.n, gs.c.n)
             .select_from(w.outerjoin(us, us.c.worker_id == w.c.worker_id)
                          .outerjoin(bs, bs.c.worker_id == w.c.worker_id)
                          .outerjoin(gs, gs.c.worker_id == w.c.worker_id))
             .order_by(w.c.worker_name, w.c.provider_type))
    if provider_type is not None:
        query = query.where(w.c.provider_type == provider_type)
    if task_id is not None:
        query = query.where(us.c.worker_id.is_not(None))
    if blocked:
        query = query.where(bs.c.n > 0)
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [WorkerLine(str(r[0]), r[1], r[2],
                       {st: int(r[3 + i] or 0) for i, st in enumerate(COUNTED)},
                       bool(r[-2]), int(r[-1] or 0)) for r in rows]


# -- blocks ------------------------------------------------------------------------------


@dataclass
class BlockChange:
    """A block made or lifted: whether the provider was told, and why not if not."""

    worker: Worker
    requester: Requester
    provider_told: bool
    warnings: list[str] = field(default_factory=list)


def _requester_for(db: MephistoDB, worker: Worker, requester_name: str | None) -> Requester:
    """The requester named, which must be of the worker's provider type, or else the
    only requester of that type (`ConfigError` listing them when there are several)."""
    ptype = worker.provider_type
    if requester_name is not None:
        found = db.find_requesters(requester_name=requester_name)
        if not found:
            known = [r.requester_name for r in db.find_requesters(provider_type=ptype)]
            raise EntryDoesNotExist(f"no requester named {requester_name!r}; {ptype} "
                                    f"requesters: {names(known)}")
        if found[0].provider_type != ptype:
            raise ConfigError(f"requester {requester_name!r} is a {found[0].provider_type} "
                              f"requester and {worker.worker_name!r} a {ptype} worker",
                              key="requester")
        return found[0]
    candidates = db.find_requesters(provider_type=ptype)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(f"there is no {ptype} requester to block {worker.worker_name!r} "
                          f"for: register one with `mephisto register {ptype} name=...`",
                          key="requester")
    raise ConfigError(f"there are several {ptype} requesters: choose one with --requester: "
                      f"{names([r.requester_name for r in candidates])}", key="requester")


def _block_provider(db: MephistoDB, worker: Worker, requester: Requester,
                    what: str) -> tuple[CrowdProvider | None, str | None]:
    """The provider to tell of a block (`what`: "blocked", "unblocked"), or None and
    why not."""
    cls: type[CrowdProvider] = get_crowd_provider_from_type(worker.provider_type)
    if Capability.BLOCK not in cls.CAPABILITIES:
        return None, (f"{worker.provider_type} has no blocks of its own: {what} for this "
                      "requester's runs here only")
    return provider_for_requester(db, worker.provider_type, requester.requester_name), None


def block_worker(db: MephistoDB, worker_name: str, reason: str,
                 requester_name: str | None = None,
                 provider_type: str | None = None) -> BlockChange:
    """Block the worker for the requester, on the provider and here; blocking again
    replaces the reason."""
    reason = (reason or "").strip()
    if not reason:
        raise ConfigError("a block needs a reason (--reason): providers may show it",
                          key="reason")
    if len(reason) > MAX_NOTE:
        raise ConfigError(f"the reason is {len(reason)} characters; at most {MAX_NOTE}",
                          key="reason")
    worker = find_worker(db, worker_name, provider_type)
    requester = _requester_for(db, worker, requester_name)
    provider, warning = _block_provider(db, worker, requester, "blocked")
    if provider is not None:
        provider.block_worker(worker, requester, reason)
    with db.transaction():
        db.block_worker(worker.db_id, requester.db_id, reason)
        db.new_worker_review(worker.db_id, review_note=reason, requester_id=requester.db_id,
                             blocked_worker=True)
    return BlockChange(worker, requester, provider is not None, [warning] if warning else [])


def unblock_worker(db: MephistoDB, worker_name: str, requester_name: str | None = None,
                   provider_type: str | None = None) -> BlockChange:
    """Lift the requester's block of the worker, on the provider and here."""
    worker = find_worker(db, worker_name, provider_type)
    requester = _requester_for(db, worker, requester_name)
    if not db.is_worker_blocked(worker.db_id, requester.db_id):
        raise EntryDoesNotExist(f"worker {worker.worker_name!r} is not blocked by requester "
                                f"{requester.requester_name!r}; nothing was changed")
    provider, warning = _block_provider(db, worker, requester, "unblocked")
    if provider is not None:
        provider.unblock_worker(worker, requester)
    with db.transaction():
        db.unblock_worker(worker.db_id, requester.db_id)
        db.new_worker_review(worker.db_id, requester_id=requester.db_id,
                             unblocked_worker=True)
    return BlockChange(worker, requester, provider is not None, [warning] if warning else [])



# -- one worker ----------------------------------------------------------------------------

SHOWN = 20  # latest units and reviews shown


@dataclass(frozen=True)
class UnitLine:
    unit_id: str
    task_name: str
    task_run_id: str
    status: str
    reward: float
    creation_date: float


@dataclass(frozen=True)
class ReviewLine:
    """A review decision: its status, note and bonus, a block or unblock, a
    qualification set (`qualification`, `value`) or revoked (`revoked`)."""

    creation_date: float
    unit_id: str | None
    status: str | None
    note: str | None
    bonus: float | None
    blocked: bool
    unblocked: bool
    qualification: str | None
    value: int | None
    revoked: str | None


@dataclass
class WorkerView:
    """Everything about one worker: qualifications (name, value, date), blocks
    (requester, reason, date), the latest units and reviews, units by status, and pay so
    far (rewards of accepted and soft-rejected units, bonuses the provider paid)."""

    worker: Worker
    qualifications: list[tuple[str, int, float]]
    blocks: list[tuple[str, str, float]]
    units: list[UnitLine]
    unit_counts: dict[str, int]
    rewards_paid: float
    bonuses_paid: float
    bonuses: int
    reviews: list[ReviewLine]
    reviews_total: int

    @property
    def approval_rate(self) -> float | None:
        return approval_rate(self.unit_counts)

    @property
    def units_total(self) -> int:
        return sum(self.unit_counts.values())

    @property
    def paid(self) -> float:
        return self.rewards_paid + self.bonuses_paid


def show_worker(db: MephistoDB, worker_name: str,
                provider_type: str | None = None) -> WorkerView:
    """One worker, read in a fixed number of queries."""
    worker = find_worker(db, worker_name, provider_type, changing=False)
    wid = int(worker.db_id)
    q, g, b, r = s.qualifications, s.granted_qualifications, s.worker_blocks, s.requesters
    u, t, p, wr = s.units, s.tasks, s.payments, s.worker_review
    quals = (sa.select(q.c.qualification_name, g.c.value, g.c.update_date)
             .join(q, q.c.qualification_id == g.c.qualification_id)
             .where(g.c.worker_id == wid).order_by(q.c.qualification_name))
    blocks = (sa.select(r.c.requester_name, b.c.reason, b.c.creation_date)
              .join(r, r.c.requester_id == b.c.requester_id)
              .where(b.c.worker_id == wid).order_by(r.c.requester_name))
    units = (sa.select(u.c.unit_id, t.c.task_name, u.c.task_run_id, u.c.status,
                       u.c.pay_amount, u.c.creation_date)
             .join(t, t.c.task_id == u.c.task_id).where(u.c.worker_id == wid)
             .order_by(u.c.creation_date.desc(), u.c.unit_id.desc()).limit(SHOWN))
    by_status = (sa.select(u.c.status, sa.func.count(),
                           sa.func.coalesce(sa.func.sum(u.c.pay_amount), 0.0))
                 .where(u.c.worker_id == wid).group_by(u.c.status))
    bonuses = (sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(p.c.amount), 0.0))
               .where(p.c.worker_id == wid, p.c.status == "paid"))
    granted, revoked = q.alias("granted"), q.alias("revoked")
    reviews = (sa.select(wr.c.creation_date, wr.c.unit_id, wr.c.status, wr.c.review_note,
                         wr.c.bonus, wr.c.blocked_worker, wr.c.unblocked_worker,
                         granted.c.qualification_name, wr.c.updated_qualification_value,
                         revoked.c.qualification_name, sa.func.count().over())
               .select_from(wr.outerjoin(granted, granted.c.qualification_id
                                         == wr.c.updated_qualification_id)
                            .outerjoin(revoked, revoked.c.qualification_id
                                       == wr.c.revoked_qualification_id))
               .where(wr.c.worker_id == wid).order_by(wr.c.id.desc()).limit(SHOWN))
    with db.read() as conn:
        qual_rows = [(n, int(v), float(d)) for n, v, d in conn.execute(quals)]
        block_rows = [(n, reason, float(d)) for n, reason, d in conn.execute(blocks)]
        unit_rows = [UnitLine(str(i), n, str(run), st, float(pay), float(d))
                     for i, n, run, st, pay, d in conn.execute(units)]
        counts = {st: (int(n), float(pay)) for st, n, pay in conn.execute(by_status)}
        n_bonuses, bonus_sum = conn.execute(bonuses).one()
        review_rows = conn.execute(reviews).all()
    rewards = sum(counts.get(st, (0, 0.0))[1] for st in ("accepted", "soft_rejected"))
    return WorkerView(
        worker, qual_rows, block_rows, unit_rows, {st: n for st, (n, _) in counts.items()},
        rewards, float(bonus_sum), int(n_bonuses),
        [ReviewLine(float(x[0]), None if x[1] is None else str(x[1]), x[2], x[3], x[4],
                    bool(x[5]), bool(x[6]), x[7], x[8], x[9]) for x in review_rows],
        int(review_rows[0][10]) if review_rows else 0)
