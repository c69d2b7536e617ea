"""What `mephisto budget`, `mephisto spend` and `mephisto cost` do, on top of
`mephisto.operations.budget` (which defines committed and paid money and checks caps).

- Budgets: every project's and run's cap next to what it has committed and paid, read
  in a fixed number of queries (runs, tasks, projects, and spending's two grouped
  queries), never one per run or project. Setting one checks the amount first: a
  negative, non-numeric or infinite amount is a `ConfigError` and changes nothing.
- Tasks join a project with `assign_tasks`: a task belongs to one project, and every
  run of it (past and future) counts against that project's budget.
- Spending reports group by project, task, run or worker (`spending_by`).
- A launch's cost is previewed without creating anything (`launch_cost`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mephisto.errors import ConfigError, EntryAlreadyExists
from mephisto.operations.budget import (
    CapStanding,
    CostPreview,
    Spending,
    SpendingReport,
    preview_launch,
    preview_more_units,
    spending_by,
    spending_of_runs,
)

if TYPE_CHECKING:
    from mephisto.data_model.project import Project
    from mephisto.data_model.task import Task
    from mephisto.db.database import MephistoDB

__all__ = [
    "BudgetLine",
    "BudgetOverview",
    "assign_tasks",
    "budget_overview",
    "find_project",
    "find_task",
    "launch_cost",
    "parse_amount",
    "set_budget",
    "spend_report",
]


def parse_amount(text: str, what: str = "budget") -> float:
    """Dollars from the command line: `500`, `12.50`, `$12.50`. Anything else (negative,
    not a number, infinite) raises `ConfigError` naming it."""
    cleaned = text.strip().removeprefix("$").replace(",", "")
    try:
        amount = float(cleaned)
    except ValueError:
        raise ConfigError(f"the {what} must be a number of dollars, such as 500 or 12.50; "
                          f"got {text!r}", key=what) from None
    if not math.isfinite(amount):
        raise ConfigError(f"the {what} must be a finite number of dollars, got {text!r}",
                          key=what)
    if amount < 0:
        raise ConfigError(f"the {what} cannot be negative (got {text}); use --clear to "
                          "remove a cap", key=what)
    return amount


def _names(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return (shown + more) or "(none yet)"


def find_project(db: MephistoDB, name: str) -> Project:
    """The project named `name`; `ConfigError` listing the known ones."""
    found = db.find_projects(project_name=name)
    if not found:
        known = [p.project_name for p in db.find_projects()]
        raise ConfigError(f"no project named {name!r}; projects: {_names(known)}",
                          key="project")
    return found[0]


def find_task(db: MephistoDB, name: str) -> Task:
    """The task named `name`; `ConfigError` listing the known ones."""
    found = db.find_tasks(task_name=name)
    if not found:
        known = [t.task_name for t in db.find_tasks()]
        raise ConfigError(f"no task named {name!r}; tasks: {_names(known)}", key="task")
    return found[0]


def _project_or_new(db: MephistoDB, name: str) -> tuple[str, bool]:
    """The project's id, made if new (like a launch with `mephisto.task.project_name`),
    and whether it was made."""
    found = db.find_projects(project_name=name)
    if found:
        return found[0].db_id, False
    try:
        return db.new_project(name), True
    except EntryAlreadyExists:  # made by another process meanwhile
        return db.find_projects(project_name=name)[0].db_id, False


# -- budgets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetLine:
    """A project's or a run's cap and money. `budget` None: no cap."""

    kind: str  # "project" or "run"
    id: str
    name: str  # the project's name, or the run's task name
    budget: float | None
    spending: Spending
    project: str = ""  # a run's project name ("" if none)
    provider_type: str = ""
    is_completed: bool = False

    @property
    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.spending.committed


@dataclass(frozen=True)
class BudgetOverview:
    projects: list[BudgetLine]
    runs: list[BudgetLine]


def budget_overview(db: MephistoDB, project: str | None = None) -> BudgetOverview:
    """Every project's and run's budget with what it committed and paid (only the
    project named `project`, and its runs, if given)."""
    projects = [find_project(db, project)] if project else db.find_projects()
    tasks = (db.find_tasks(project_id=projects[0].db_id) if project else db.find_tasks())
    task_by_id = {t.db_id: t for t in tasks}
    runs = [r for r in db.find_task_runs() if r.task_id in task_by_id]
    spent = spending_of_runs(db, [r.db_id for r in runs])
    project_names = {p.db_id: p.project_name for p in projects}
    by_project: dict[str, Spending] = {}
    run_lines = []
    for run in runs:
        task = task_by_id[run.task_id]
        money = spent.get(run.db_id, Spending())
        pid = None if task.project_id is None else str(task.project_id)
        if pid is not None:
            by_project[pid] = by_project.get(pid, Spending()) + money
        run_lines.append(BudgetLine(
            "run", run.db_id, task.task_name, _budget(run), money,
            project=project_names.get(pid, "") if pid else "",
            provider_type=run.provider_type, is_completed=bool(run.is_completed)))
    project_lines = [
        BudgetLine("project", p.db_id, p.project_name, _budget(p),
                   by_project.get(p.db_id, Spending()))
        for p in projects
    ]
    return BudgetOverview(project_lines, run_lines)


def _budget(entity: object) -> float | None:
    value = getattr(entity, "budget", None)
    return None if value is None else float(value)


@dataclass(frozen=True)
class BudgetChange:
    """What `set_budget` did, for the command to report."""

    target: str  # "project 'x'" or "task run 3"
    budget: float | None
    committed: float
    created_project: bool = False
    moved_tasks: tuple[str, ...] = ()


def set_budget(db: MephistoDB, *, project: str | None = None, run: str | None = None,
               amount: str | None = None, clear: bool = False,
               add_tasks: Sequence[str] = ()) -> BudgetChange:
    """Set (or `clear`) the cap of a project or of a run, and/or put tasks into a
    project (`add_tasks`, with `project`). Everything is checked before anything
    changes; a project named for the first time is made (as a launch would)."""
    if (project is None) == (run is None):
        raise ConfigError("give either --project NAME or --run ID", key="project")
    if clear and amount is not None:
        raise ConfigError("give an amount or --clear, not both", key="clear")
    if add_tasks and project is None:
        raise ConfigError("--add-task puts a task into a project: give --project NAME too",
                          key="add_task")
    if amount is None and not clear and not add_tasks:
        raise ConfigError("say what to change: an amount (mephisto budget --project NAME "
                          "500), --clear, or --add-task TASK", key="amount")
    value = None if amount is None else parse_amount(amount)
    if project is None:
        run_row = db.get_task_run(str(run))  # EntryDoesNotExist names it
        if value is not None or clear:
            db.set_task_run_budget(str(run), value)
        spent = spending_of_runs(db, [str(run)]).get(str(run_row["task_run_id"]), Spending())
        return BudgetChange(f"task run {run}", value, spent.committed)
    tasks = [find_task(db, name) for name in add_tasks]  # all found, before any change
    project_id, created = _project_or_new(db, project)
    with db.transaction():
        moved = assign_tasks(db, project_id, tasks)
        if value is not None or clear:
            db.set_project_budget(project_id, value)
    budget = _budget(db.find_projects(project_name=project)[0])
    return BudgetChange(f"project {project!r}", budget, _project_committed(db, project_id),
                        created, tuple(moved))


def assign_tasks(db: MephistoDB, project_id: str, tasks: Sequence[Task]) -> list[str]:
    """Put these tasks (and so all their runs) into the project. Returns the names of
    those that moved (a task already in it does not)."""
    moved = []
    for task in tasks:
        if str(task.project_id) != str(project_id):
            db.update_task(task.db_id, project_id=project_id)
            moved.append(task.task_name)
    return moved


def _project_committed(db: MephistoDB, project_id: str) -> float:
    tasks = {t.db_id for t in db.find_tasks(project_id=project_id)}
    runs = [r.db_id for r in db.find_task_runs() if r.task_id in tasks]
    total = Spending()
    for money in spending_of_runs(db, runs).values():
        total = total + money
    return total.committed


# -- spending reports -----------------------------------------------------------------------


def spend_report(db: MephistoDB, by: str = "project", project: str | None = None,
                 task: str | None = None) -> SpendingReport:
    """Spending grouped `by` project, task, run or worker, of the project and/or task
    named (everything if neither)."""
    task_ids: list[str] | None = None
    if project is not None:
        project_id = find_project(db, project).db_id
        task_ids = [t.db_id for t in db.find_tasks(project_id=project_id)]
    if task is not None:
        found = find_task(db, task)
        if task_ids is not None and found.db_id not in task_ids:
            raise ConfigError(f"task {task!r} is not in project {project!r}", key="task")
        task_ids = [found.db_id]
    return spending_by(db, by, task_ids)


# -- cost previews --------------------------------------------------------------------------


def launch_cost(
    db: MephistoDB, *, units: int, reward: float, provider: str | None = None,
    planned_bonus: float = 0.0, project: str | None = None, budget: float | None = None,
    run: str | None = None,
) -> tuple[CostPreview, list[CapStanding], list[str]]:
    """The cost of launching `units` units at `reward` (plus planned bonuses and the
    provider's fee) and where it leaves each cap: of a new run of `provider` (its
    `budget`, its `project`'s), or of more units for an existing `run`. Returns notes
    too (a project that does not exist yet, so has no cap). Creates nothing."""
    if units < 1:
        raise ConfigError(f"--units must be at least 1, got {units}", key="units")
    for name, amount in (("reward", reward), ("planned bonus", planned_bonus)):
        if not math.isfinite(amount) or amount < 0:
            raise ConfigError(f"the {name} must be a number of dollars >= 0, got {amount}",
                              key=name.replace(" ", "_"))
    if budget is not None and (not math.isfinite(budget) or budget < 0):
        raise ConfigError(f"--budget must be a number of dollars >= 0, got {budget}",
                          key="budget")
    notes: list[str] = []
    if run is not None:
        if project is not None or budget is not None:
            raise ConfigError("--run previews more units of an existing run, under its own "
                              "caps: leave out --project and --budget", key="run")
        provider_type = db.get_task_run(run)["provider_type"]  # EntryDoesNotExist names it
        if provider is not None and provider != provider_type:
            raise ConfigError(f"task run {run} runs on {provider_type!r}, not {provider!r}",
                              key="provider")
        preview, caps = preview_more_units(db, run, units, reward, planned_bonus)
        return preview, caps, notes
    if provider is None:
        raise ConfigError("--provider is needed for a new run (e.g. --provider mturk), or "
                          "--run ID for more units of an existing one", key="provider")
    project_id = None
    if project is not None:
        found = db.find_projects(project_name=project)
        if found:
            project_id = found[0].db_id
            if _budget(found[0]) is None:
                notes.append(f"project {project!r} has no budget: nothing caps it")
        else:
            notes.append(f"project {project!r} does not exist yet (a launch makes it): "
                         "no cap")
    preview, caps = preview_launch(db, units, reward, provider, planned_bonus, project_id,
                                   budget)
    return preview, caps, notes
