"""Units with every kind of history, made in bulk, for the export tests and benchmark.

`build(db, n)` makes `n` units in one run; unit i (0-based, in id order) ends as
`PLAN[i % 10]`: not taken, expired, a worker at it, submitted; of the submitted, some
are reviewed through `review_unit` (the real path: worker_review rows, payments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mephisto.db import batch
from mephisto.db.database import MephistoDB
from mephisto.testing.db_contract import Run
from mephisto.tools.provider_review import Decision, review_unit

PLAN = ("launched", "launched", "expired", "assigned", "completed", "completed",
        "completed", "completed", "completed", "completed")


@dataclass
class Built:
    run: Run
    unit_ids: list[str]
    reviewed: dict[str, Decision] = field(default_factory=dict)  # the latest decision


def inputs_of(i: int) -> dict[str, Any]:
    return {"text": f"item {i}, with \"quotes\", commas\nand a newline", "n": i,
            "meta": {"lang": "en" if i % 2 else "fr"}}


def outputs_of(i: int) -> dict[str, Any]:
    return {"answer": f"answer {i}", "score": i % 5, "tags": ["a", str(i)],
            "detail": {"confident": i % 3 == 0}}


def build(db: MephistoDB, n: int, name: str = "task-a", reviews: int = 0,
          run: Run | None = None) -> Built:
    """`n` units in a new run of task `name` (or in `run`); `reviews` of the submitted
    units are reviewed (approve with a bonus, reject, soft-reject in turn; every
    fourth approved one gets a second, bonus-only decision, which is the latest)."""
    run = run or Run(db, name)
    data = [{"shared": inputs_of(i), "unit_data": [{}]} for i in range(n)]
    made = batch.new_assignments_with_units(db, run.task_run_id, data, 0.25,
                                            status="launched")
    unit_ids = [units[0] for _a, units in made]
    plan = [PLAN[i % len(PLAN)] for i in range(n)]
    taken = [i for i in range(n) if plan[i] in ("assigned", "completed")]
    workers = batch.find_or_new_workers(db, [f"{name}-w{i % 97}" for i in taken], "mock")
    agents = [{
        "agent_id": f"{name}-a{unit_ids[i]}",
        "worker_id": workers[f"{name}-w{i % 97}"], "unit_id": unit_ids[i],
        "task_id": run.task_id, "task_run_id": run.task_run_id,
        "assignment_id": made[i][0], "task_type": "mock", "provider_type": "mock",
        "status": "in task",
        "state": {"inputs": inputs_of(i), "outputs": None, "times": {"task_start": 1e9 + i}},
    } for i in taken]
    for start in range(0, len(agents), 5000):
        with db.transaction():
            batch.create_agents(db, agents[start:start + 5000])
    done = [(a["agent_id"], a["unit_id"], {"outputs": outputs_of(i),
                                           "times": {"task_end": 1e9 + i + 30}})
            for a, i in zip(agents, taken, strict=True) if plan[i] == "completed"]
    for start in range(0, len(done), 5000):
        with db.transaction():
            batch.complete_agents(db, done[start:start + 5000])
    batch.update_units_status(db, [u for u, p in zip(unit_ids, plan, strict=True)
                                   if p == "expired"], "expired")
    built = Built(run, unit_ids)
    submitted = [unit_ids[i] for i in range(n) if plan[i] == "completed"]
    decisions = (Decision("approve", note="good work", bonus=0.5),
                 Decision("reject", note="copied the text"),
                 Decision("soft_reject", note="too short"))
    for k, unit_id in enumerate(submitted[:reviews]):
        decision = decisions[k % 3]
        review_unit(db, unit_id, decision)
        if k % 12 == 0:  # an approved unit, reviewed again: a second bonus
            decision = Decision(note="an extra thank-you", bonus=0.25)
            review_unit(db, unit_id, decision)
        built.reviewed[unit_id] = decision
    return built
