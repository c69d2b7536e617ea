"""What runs and projects spend, and the caps that stop them spending more.

Money is *committed* when a unit is created (its reward will be paid unless the work
is rejected or the unit expires unworked) and when a bonus is recorded; the provider's
fee (`CrowdProvider.FEE_RATE`) is added to both. A run's `budget` and its project's
`budget` (dollars; None: no cap) bound what is committed: every launch of units and
every bonus is checked, in the transaction that commits it, with the run's row (and
its project's) held so that two spenders cannot both pass the check. A refusal is
`BudgetExceeded`, naming the cap; nothing is created or paid.

Reading spending is two grouped queries for any number of runs (`MephistoDB.get_spending`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mephisto.data_model.status import AssignmentState, PaymentStatus
from mephisto.errors import BudgetExceeded, ConfigError, MephistoError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)

__all__ = [
    "CapStanding",
    "CostPreview",
    "Spending",
    "SpendingReport",
    "check_spending",
    "cost_preview",
    "create_units_within_budget",
    "fee_rate",
    "preview_launch",
    "preview_more_units",
    "project_spending",
    "run_spending",
    "spending_by",
    "spending_of_runs",
]

# Units whose reward is (or will be) owed; rejected and expired units are not paid.
_COMMITTED_UNITS = frozenset({str(AssignmentState.CREATED)} |
                             {str(s) for s in AssignmentState.payable()})
_PAID_UNITS = frozenset({str(AssignmentState.ACCEPTED), str(AssignmentState.SOFT_REJECTED)})
_EPSILON = 1e-9  # dollars are floats: a spend equal to the cap is within it


def fee_rate(provider_type: str) -> float:
    """The provider's fee on rewards and bonuses (0 for a provider that is not installed)."""
    from mephisto.operations.registry import get_crowd_provider_from_type

    try:
        provider: Any = get_crowd_provider_from_type(provider_type)
        return float(provider.FEE_RATE)
    except MephistoError:
        logger.debug("provider %r is not available; its fee counts as 0", provider_type)
        return 0.0


@dataclass
class Spending:
    """Money of one run or many, in dollars. `committed` is what caps bound."""

    rewards_committed: float = 0.0
    rewards_paid: float = 0.0
    bonuses_committed: float = 0.0
    bonuses_paid: float = 0.0
    fees_committed: float = 0.0
    fees_paid: float = 0.0
    units: dict[str, int] = field(default_factory=dict)  # by status
    bonuses: int = 0

    @property
    def committed(self) -> float:
        return self.rewards_committed + self.bonuses_committed + self.fees_committed

    @property
    def paid(self) -> float:
        return self.rewards_paid + self.bonuses_paid + self.fees_paid

    def __add__(self, other: Spending) -> Spending:
        units = dict(self.units)
        for status, n in other.units.items():
            units[status] = units.get(status, 0) + n
        return Spending(
            self.rewards_committed + other.rewards_committed,
            self.rewards_paid + other.rewards_paid,
            self.bonuses_committed + other.bonuses_committed,
            self.bonuses_paid + other.bonuses_paid,
            self.fees_committed + other.fees_committed,
            self.fees_paid + other.fees_paid,
            units,
            self.bonuses + other.bonuses,
        )


def _spending(row: dict[str, Any]) -> Spending:
    rate = fee_rate(row["provider_type"])
    spent = Spending()
    for status, (n, amount) in row["units"].items():
        spent.units[status] = n
        if status in _COMMITTED_UNITS:
            spent.rewards_committed += amount
        if status in _PAID_UNITS:
            spent.rewards_paid += amount
    for status, (n, amount) in row["bonuses"].items():
        spent.bonuses += n
        spent.bonuses_committed += amount  # a failed bonus is retried until paid
        if status == str(PaymentStatus.PAID):
            spent.bonuses_paid += amount
    spent.fees_committed = (spent.rewards_committed + spent.bonuses_committed) * rate
    spent.fees_paid = (spent.rewards_paid + spent.bonuses_paid) * rate
    return spent


def spending_of_runs(db: MephistoDB, task_run_ids: Iterable[str]) -> dict[str, Spending]:
    """Each run's spending, by run id."""
    return {run_id: _spending(row) for run_id, row in db.get_spending(task_run_ids).items()}


def run_spending(db: MephistoDB, task_run_id: str) -> Spending:
    return spending_of_runs(db, [task_run_id]).get(str(task_run_id), Spending())


def _project_run_ids(db: MephistoDB, project_id: str) -> list[str]:
    return [run.db_id for task in db.find_tasks(project_id=project_id)
            for run in db.find_task_runs(task_id=task.db_id)]


def project_spending(db: MephistoDB, project_id: str) -> Spending:
    total = Spending()
    for spent in spending_of_runs(db, _project_run_ids(db, project_id)).values():
        total = total + spent
    return total


# -- caps ---------------------------------------------------------------------------------


def _caps(db: MephistoDB, task_run_id: str) -> list[tuple[str, float, Spending]]:
    """The caps over this run, with what each has committed: the run's, the project's."""
    run = db.get_task_run(task_run_id)
    caps: list[tuple[str, float, Spending]] = []
    if run.get("budget") is not None:
        caps.append((f"task run {task_run_id}", float(run["budget"]),
                     run_spending(db, task_run_id)))
    project_id = db.get_task(run["task_id"])["project_id"]
    if project_id is not None:
        project = db.get_project(project_id)
        if project.get("budget") is not None:
            caps.append((f"project {project['project_name']!r}", float(project["budget"]),
                         project_spending(db, project_id)))
    return caps


def check_spending(db: MephistoDB, task_run_id: str, amount: float, what: str) -> None:
    """Raise `BudgetExceeded` if committing `amount` dollars more (before fees) to this
    run would pass its cap or its project's. Call inside the spending transaction,
    after `db.lock_for_spending`."""
    caps = _caps(db, task_run_id)
    if not caps:
        return
    adding = amount * (1 + fee_rate(db.get_task_run(task_run_id)["provider_type"]))
    for cap, limit, spent in caps:
        needed = spent.committed + adding
        if needed > limit + _EPSILON:
            raise BudgetExceeded(cap, limit, needed, what)


def create_units_within_budget(
    db: MephistoDB,
    task_run_id: str,
    assignment_data: Sequence[Any],
    pay_amount: float,
    units_per_assignment: Sequence[int],
    status: str = "created",
    first_index: int = 0,
) -> list[tuple[str, list[str]]]:
    """`new_assignments_with_units`, refused with `BudgetExceeded` (nothing created)
    when the new units' rewards and fees would pass a cap."""
    from mephisto.db.batch import new_assignments_with_units

    n = sum(units_per_assignment)
    with db.transaction() as conn:
        db.lock_for_spending(conn, task_run_id)
        check_spending(db, task_run_id, pay_amount * n,
                       f"launching {n:,} more unit{'s' if n != 1 else ''} at ${pay_amount:,.2f}")
        return new_assignments_with_units(db, task_run_id, assignment_data, pay_amount,
                                          list(units_per_assignment), status=status,
                                          first_index=first_index)


# -- previews -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CostPreview:
    """What launching a run will cost at most, before anything is created."""

    units: int | None  # None: the data is a stream of unknown length
    reward: float
    fee_rate: float
    planned_bonus_per_unit: float = 0.0
    provider_type: str = ""

    @property
    def rewards(self) -> float:
        return (self.units or 0) * self.reward

    @property
    def bonuses(self) -> float:
        return (self.units or 0) * self.planned_bonus_per_unit

    @property
    def fees(self) -> float:
        return (self.rewards + self.bonuses) * self.fee_rate

    @property
    def at_launch(self) -> float:
        """What launching commits at once (checked against the caps): rewards and fee."""
        return self.rewards * (1 + self.fee_rate)

    @property
    def total(self) -> float:
        return self.rewards + self.bonuses + self.fees

    def text(self) -> str:
        per_unit = self.reward + self.planned_bonus_per_unit
        if self.units is None:
            return (f"cost preview: ${per_unit * (1 + self.fee_rate):,.2f} per unit "
                    f"(reward ${self.reward:,.2f}"
                    + (f" + planned bonus ${self.planned_bonus_per_unit:,.2f}"
                       if self.planned_bonus_per_unit else "")
                    + f" + {self.provider_type} fee {self.fee_rate:.0%}); "
                    "the number of units is not known up front")
        parts = [f"{self.units:,} units x ${self.reward:,.2f} = ${self.rewards:,.2f}"]
        if self.planned_bonus_per_unit:
            parts.append(f"planned bonuses ${self.bonuses:,.2f}")
        parts.append(f"{self.provider_type} fee {self.fee_rate:.0%} ${self.fees:,.2f}")
        return f"cost preview: {' + '.join(parts)} = ${self.total:,.2f}"


def cost_preview(
    db: MephistoDB, task_run_id: str, units: int | None, reward: float,
    planned_bonus_per_unit: float = 0.0,
) -> tuple[CostPreview, list[str]]:
    """The preview of launching `units` more units of this run, and one line per cap
    over it (its budget, what is committed, what would be left)."""
    preview, caps = preview_more_units(db, task_run_id, units, reward, planned_bonus_per_unit)
    return preview, [cap.text() for cap in caps]


# -- reports ------------------------------------------------------------------------------


def _from_amounts(units: dict[tuple[str, str], tuple[int, float]],
                  bonuses: dict[tuple[str, str], tuple[int, float]]) -> Spending:
    """Spending of `(provider_type, status) -> (count, dollars)` pairs, each provider's
    fee added."""
    rows: dict[str, dict[str, Any]] = {}
    for kind, amounts in (("units", units), ("bonuses", bonuses)):
        for (provider_type, status), value in amounts.items():
            row = rows.setdefault(provider_type,
                                  {"provider_type": provider_type, "units": {}, "bonuses": {}})
            row[kind][status] = value
    total = Spending()
    for row in rows.values():
        total = total + _spending(row)
    return total


@dataclass
class SpendingReport:
    """Spending grouped `by` project, task, run or worker (`mephisto spend`).

    `groups`: group id -> Spending (None: units of no project, or not yet taken by a
    worker); `names`: group id -> what to call it; `unattributed`: bonuses paid for no
    unit (part of no project, task or run; in their worker's group when grouped by
    worker), None when the report is limited to some tasks."""

    by: str
    groups: dict[str | None, Spending]
    names: dict[str | None, str]
    unattributed: Spending | None

    @property
    def total(self) -> Spending:
        total = Spending()
        for spent in self.groups.values():
            total = total + spent
        if self.unattributed is not None:
            total = total + self.unattributed
        return total


def spending_by(db: MephistoDB, by: str, task_ids: Iterable[str] | None = None
                ) -> SpendingReport:
    """Spending of the tasks `task_ids` (None: everything), grouped `by` "project",
    "task", "run" or "worker". Two grouped queries and one for the groups' names,
    whatever the number of groups."""
    from mephisto.db.spending import GROUPINGS, spending_groups

    if by not in GROUPINGS:
        raise ConfigError(f"group spending by one of {', '.join(GROUPINGS)}, not {by!r}",
                          key="by")
    found = spending_groups(db, by, task_ids)  # type: ignore[arg-type]
    groups = {gid: _from_amounts(g["units"], g["bonuses"]) for gid, g in found.groups.items()}
    unattributed = None
    if task_ids is None and found.unattributed:
        unattributed = _from_amounts({}, found.unattributed)
    return SpendingReport(by, groups, dict(found.names), unattributed)


# -- where a launch leaves the caps ---------------------------------------------------------


@dataclass(frozen=True)
class CapStanding:
    """One cap over a launch: its budget, what is committed under it, and what the
    launch would leave (`left` < 0: short by that much)."""

    cap: str
    limit: float
    committed: float
    adding: float  # the preview's total: rewards, planned bonuses, fees
    at_launch: float = 0.0  # what the launch itself commits: rewards and their fee

    @property
    def left(self) -> float:
        return self.limit - self.committed - self.adding

    @property
    def fits(self) -> bool:
        return self.left >= -_EPSILON

    @property
    def refuses_launch(self) -> bool:
        """The launch would be refused (`BudgetExceeded`): its rewards and fees alone
        pass the cap. (Planned bonuses are checked when each is paid.)"""
        return self.committed + self.at_launch > self.limit + _EPSILON

    def text(self) -> str:
        return (f"{self.cap}: budget ${self.limit:,.2f}, committed ${self.committed:,.2f}, "
                + (f"${self.left:,.2f} left after this launch" if self.fits
                   else f"${-self.left:,.2f} short for this launch"))


def preview_launch(
    db: MephistoDB, units: int, reward: float, provider_type: str,
    planned_bonus_per_unit: float = 0.0, project_id: str | None = None,
    run_budget: float | None = None,
) -> tuple[CostPreview, list[CapStanding]]:
    """The cost of launching a new run of `units` units (before anything exists), and
    where it leaves the caps over it: the run's own (`run_budget`, nothing committed
    yet) and its project's. An unknown provider type raises `UnknownAbstractionError`."""
    from mephisto.operations.registry import get_crowd_provider_from_type

    provider: Any = get_crowd_provider_from_type(provider_type)
    preview = CostPreview(units, float(reward), float(provider.FEE_RATE),
                          float(planned_bonus_per_unit), provider_type)
    caps = []
    if run_budget is not None:
        caps.append(CapStanding("this run (mephisto.task.budget)", float(run_budget), 0.0,
                                preview.total, preview.at_launch))
    if project_id is not None:
        project = db.get_project(project_id)
        if project.get("budget") is not None:
            caps.append(CapStanding(f"project {project['project_name']!r}",
                                    float(project["budget"]),
                                    project_spending(db, project_id).committed, preview.total,
                                    preview.at_launch))
    return preview, caps


def preview_more_units(
    db: MephistoDB, task_run_id: str, units: int | None, reward: float,
    planned_bonus_per_unit: float = 0.0,
) -> tuple[CostPreview, list[CapStanding]]:
    """`cost_preview` as data: launching `units` more units of an existing run."""
    provider_type = db.get_task_run(task_run_id)["provider_type"]
    preview = CostPreview(units, float(reward), fee_rate(provider_type),
                          float(planned_bonus_per_unit), provider_type)
    return preview, [CapStanding(cap, limit, spent.committed, preview.total, preview.at_launch)
                     for cap, limit, spent in _caps(db, task_run_id)]
