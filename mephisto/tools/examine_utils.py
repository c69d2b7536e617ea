"""Interactive review of collected work from a terminal (Mephisto's `examine_utils`).

A review script gives a function that turns one unit's data (a `DataBrowser` result
dict) into text, and calls `run_examine_or_review(db, format_data)`: the requester
either reads results (`print_results`) or reviews the submitted units of a task worker
by worker (`run_examine_by_worker`), answering for each unit

    a  accept   (agent approved, unit accepted)
    p  pass     (soft rejection: paid, but marked to leave out of the data)
    r  reject   (not paid; asks for a reason, and whether to block the worker)

An answer in capitals applies to the rest of that worker's units. A capital `A` may
grant the worker an "approve" qualification, a `p` may grant a "block" qualification
(a soft block: tasks that set it as `block_qualification` turn the worker away), and
a rejection may block the worker for this requester.

Like the CLI, this module is an edge: it asks and prints. Both go through the `ask`
and `say` arguments (default `input` and `print`), so a test or another front end can
drive a review. Each unit's answers make one `Decision` recorded by
`mephisto.tools.provider_review.review_unit`: the run's provider is told (approval,
rejection with its reason, block, qualification), and the database records the agent's
status, the block, the grant and a `worker_review` row in one transaction. A decision
that cannot be made (the unit was reviewed meanwhile, the provider refused) is shown
and the review goes on with the next unit.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mephisto.data_model.status import AssignmentState
from mephisto.data_model.unit import Unit
from mephisto.data_model.worker import Worker
from mephisto.errors import EntryDoesNotExist, MephistoError
from mephisto.tools.data_browser import DataBrowser
from mephisto.tools.provider_review import Decision, review_unit
from mephisto.utils.qualifications import find_or_create_qualification

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

Ask = Callable[[str], str]
Say = Callable[[str], None]
FormatData = Callable[[dict[str, Any]], str]

DEFAULT_EXAMINE_COUNT = 15
_REVIEWED = (AssignmentState.ACCEPTED, AssignmentState.SOFT_REJECTED, AssignmentState.REJECTED)
_DECISIONS = ("a", "p", "r")
_YES = ("y", "yes")


def _format_unit(browser: DataBrowser, format_data: FormatData, unit: Unit, say: Say) -> str:
    """The text for one unit; an error reading or formatting it is shown, not raised,
    so one bad unit does not end a review."""
    try:
        data = browser.get_data_from_unit(unit)
    except Exception as exc:  # noqa: BLE001 - shown to the reviewer; the review goes on
        say(f"Cannot read the data of unit {unit.db_id}: {exc}")
        return "(no data)"
    try:
        return format_data(data)
    except Exception as exc:  # noqa: BLE001 - the script's formatter failed: show why
        say(f"Formatting the data of unit {unit.db_id} failed: {exc}\n{traceback.format_exc()}")
        return "(data could not be formatted)"


def print_results(
    db: MephistoDB,
    task_name: str,
    format_data_for_printing: FormatData,
    start: int | None = None,
    end: int | None = None,
    *,
    say: Say = print,
) -> None:
    """Show the submitted units of `task_name`, newest first, from `start` to `end`."""
    browser = DataBrowser(db=db)
    units = list(reversed(browser.get_units_for_task_name(task_name)))
    for unit in units[start:end]:
        say(_format_unit(browser, format_data_for_printing, unit, say))


def prompt_for_options(
    task_name: str | None = None,
    block_qualification: str | None = None,
    approve_qualification: str | None = None,
    *,
    ask: Ask = input,
) -> tuple[str, str | None, str | None]:
    """Ask for what is not given: the task, and the optional block and approve
    qualifications (an empty answer means none). Pass "" to skip a question."""
    if task_name is None:
        task_name = ask("Task name: ")
    if block_qualification is None:
        block_qualification = ask(
            "Qualification to soft-block workers with (empty: no soft blocks): "
        )
    if approve_qualification is None:
        approve_qualification = ask(
            "Qualification to grant workers whose work you accept (empty: none): "
        )
    block = block_qualification.strip() or None
    approve = approve_qualification.strip() or None
    ask(
        f"Reviewing task {task_name!r}, block qualification {block}, approve "
        f"qualification {approve}. Press enter to start... "
    )
    return task_name, block, approve


def get_worker_stats(units: Sequence[Unit]) -> dict[str, dict[str, list[Unit]]]:
    """Reviewed units by worker id, then by outcome (accepted, soft_rejected, rejected)."""
    stats: dict[str, dict[str, list[Unit]]] = {}
    for unit in units:
        status = AssignmentState(unit.db_status)
        if unit.worker_id is None or status not in _REVIEWED:
            continue
        by_status = stats.setdefault(str(unit.worker_id), {str(s): [] for s in _REVIEWED})
        by_status[str(status)].append(unit)
    return stats


def format_worker_stats(worker_id: str, stats: dict[str, dict[str, list[Unit]]]) -> str:
    """A worker's record as "(accepted | rejected(of which passed) / reviewed)"."""
    record = stats.get(str(worker_id))
    if record is None:
        return "(First time worker!)"
    accepted = len(record[AssignmentState.ACCEPTED])
    passed = len(record[AssignmentState.SOFT_REJECTED])
    rejected = len(record[AssignmentState.REJECTED])
    return f"({accepted} | {rejected + passed}({passed}) / {accepted + passed + rejected})"


def _yes(answer: str) -> bool:
    return answer.strip().lower() in _YES


def _ask_decision(ask: Ask) -> str:
    answer = ask("Accept this work? (a)ccept, (p)ass, (r)eject: ").strip()
    while answer.lower() not in _DECISIONS:
        answer = ask("Answer a, p or r (in capitals: for all of this worker's units): ").strip()
    return answer


def _ask_reason(ask: Ask) -> str:
    reason = ask("Why are you rejecting this work? ").strip()
    while not reason:
        reason = ask("A rejection needs a reason (the worker is shown it): ").strip()
    return reason


def _decide(
    db: MephistoDB,
    unit: Unit,
    answer: str,
    reason: str | None,
    asked: bool,
    options: tuple[str | None, str | None],
    ask: Ask,
    say: Say,
) -> str | None:
    """Make one decision about `unit` through `review_unit`; `asked` is whether the
    reviewer answered for this unit (follow-up questions are only put then). Returns
    the rejection reason used, for the worker's next units."""
    block_qualification, approve_qualification = options
    if unit.get_assigned_agent() is None:
        raise EntryDoesNotExist(f"unit {unit.db_id} has no agent to review")
    action = answer.lower()
    if action == "a":
        grant = (
            asked and answer == "A" and approve_qualification is not None
            and _yes(ask(f"Grant {approve_qualification!r} to this worker? (y)es/(n)o: "))
        )
        decision = Decision("approve", grant=(approve_qualification, 1)
                            if grant and approve_qualification else None)
    elif action == "p":
        soft_block = (
            asked and block_qualification is not None
            and _yes(ask(f"Soft-block this worker ({block_qualification!r})? (y)es/(n)o: "))
        )
        decision = Decision("soft_reject", grant=(block_qualification, 1)
                            if soft_block and block_qualification else None)
    else:
        block_reason = None
        if asked or not reason:
            reason = _ask_reason(ask)
        if asked and _yes(ask("Block this worker from your tasks? (y)es/(n)o: ")):
            block_reason = ask("Why block this worker? ").strip() or reason
        decision = Decision("reject", note=reason, block=block_reason is not None,
                            block_reason=block_reason)
    try:
        outcome = review_unit(db, unit.db_id, decision)
    except MephistoError as exc:
        say(f"Could not record the decision on unit {unit.db_id}: {exc}")
        return reason
    for warning in outcome.warnings:
        say(f"Unit {unit.db_id}: {warning}")
    return reason


def run_examine_by_worker(
    db: MephistoDB,
    format_data_for_printing: FormatData,
    task_name: str | None = None,
    block_qualification: str | None = None,
    approve_qualification: str | None = None,
    *,
    ask: Ask = input,
    say: Say = print,
) -> None:
    """Review the submitted, not yet reviewed units of a task, grouped by worker (the
    task and qualifications are asked for when `task_name` is None)."""
    if task_name is None:
        task_name, block_qualification, approve_qualification = prompt_for_options(
            task_name, block_qualification, approve_qualification, ask=ask
        )
    browser = DataBrowser(db=db)
    units = browser.get_units_for_task_name(task_name)  # EntryDoesNotExist if unknown
    for qualification in (block_qualification, approve_qualification):
        if qualification is not None:
            find_or_create_qualification(db, qualification)
    say(
        "Accepted and passed work is paid; rejected work is not. Reject only work done in "
        "bad faith; pass on misunderstandings. Answer in capitals to decide for all of "
        "a worker's remaining units."
    )
    to_review = [u for u in units if u.db_status == AssignmentState.COMPLETED]
    stats = get_worker_stats(units)
    by_worker: dict[str, list[Unit]] = {}
    for unit in to_review:
        by_worker.setdefault(str(unit.worker_id), []).append(unit)
    left = len(to_review)
    options = (block_qualification, approve_qualification)
    for worker_id, worker_units in by_worker.items():
        worker = Worker.get(db, worker_id)
        for_all: str | None = None
        reason: str | None = None
        for i, unit in enumerate(worker_units, start=1):
            say(
                f"Worker {worker.worker_name} ({i}/{len(worker_units)}), previous "
                f"{format_worker_stats(worker_id, stats)}, {left} left to review"
            )
            left -= 1
            say(_format_unit(browser, format_data_for_printing, unit, say))
            answer = for_all or _ask_decision(ask)
            reason = _decide(db, unit, answer, reason, for_all is None, options, ask, say)
            if answer.isupper():
                for_all = answer.lower()


def run_examine_or_review(
    db: MephistoDB, format_data_for_printing: FormatData, *, ask: Ask = input, say: Say = print
) -> None:
    """Ask whether to review (`run_examine_by_worker`) or examine (`print_results`);
    "e", "e <end>" or "e <start> <end>" choose which results to show (default 0-15)."""
    choice = ask(
        "(r)eview or (e)xamine the data? Default examine; 'e <end>' or 'e <start> <end>' "
        "choose how many to show: "
    )
    if choice.strip().lower().startswith("r"):
        run_examine_by_worker(db, format_data_for_printing, ask=ask, say=say)
        return
    start, end = 0, DEFAULT_EXAMINE_COUNT
    bounds = [int(x) for x in choice.split()[1:] if x.lstrip("-").isdigit()]
    if len(bounds) == 1:
        end = bounds[0]
    elif len(bounds) >= 2:
        start, end = bounds[0], bounds[1]
    task_name = ask("Task name: ")
    print_results(db, task_name, format_data_for_printing, start=start, end=end, say=say)
