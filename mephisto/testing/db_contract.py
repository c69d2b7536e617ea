"""The contract every `MephistoDB` must pass.

Subclass `MephistoDBContract` in a test module and provide a `db` fixture that yields a
fresh, empty database; pytest collects the inherited tests:

    class TestMyDB(MephistoDBContract):
        @pytest.fixture
        def db(self, tmp_path):
            yield MephistoDB(f"sqlite:///{tmp_path}/db.sqlite")
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mephisto.data_model.agent import Agent
from mephisto.data_model.qualification import GrantedQualification
from mephisto.data_model.status import (
    AGENT_TRANSITIONS,
    UNIT_TRANSITIONS,
    AgentState,
    AssignmentState,
)
from mephisto.data_model.unit import Unit
from mephisto.db import batch
from mephisto.db.database import MephistoDB
from mephisto.errors import (
    DatabaseError,
    EntryAlreadyExists,
    EntryDoesNotExist,
    InvalidTransition,
)

_ILLEGAL_UNIT = [
    (old, new)
    for old in AssignmentState.valid_unit()
    for new in AssignmentState.valid_unit()
    if old != new and new not in UNIT_TRANSITIONS[old]
]
_ILLEGAL_AGENT = [
    (old, new)
    for old in AgentState
    for new in AgentState
    if old != new and new not in AGENT_TRANSITIONS[old]
]


class Run:
    """A requester, task and task run to hang units on."""

    def __init__(self, db: MephistoDB, name: str = "task-a") -> None:
        self.db = db
        self.requester_id = db.new_requester(f"req-{name}", "mock")
        self.task_id = db.new_task(name, "mock")
        self.task_run_id = db.new_task_run(
            self.task_id, self.requester_id, "task:\n  task_title: t\n", "mock", "mock"
        )

    def units(self, n: int = 1, per_assignment: int = 1, status: str = "launched") -> list[str]:
        created = batch.new_assignments_with_units(self.db,
            self.task_run_id,
            [{"shared": {"i": i}, "unit_data": [{}] * per_assignment} for i in range(n)],
            pay_amount=0.25,
            units_per_assignment=per_assignment,
            status=status,
        )
        return [u for _a, us in created for u in us]

    def agent(self, unit_id: str, worker_name: str = "w1", status: str = "in task") -> str:
        worker = self.db.find_or_new_worker(worker_name, "mock")
        unit = self.db.get_unit(unit_id)
        return self.db.new_agent(
            worker.db_id,
            unit_id,
            self.task_id,
            self.task_run_id,
            unit["assignment_id"],
            "mock",
            "mock",
            status=status,
        )


class MephistoDBContract:
    """Behaviour every MephistoDB implementation must have."""

    @pytest.fixture
    def db(self) -> Any:  # pragma: no cover - subclasses provide it
        raise NotImplementedError("subclasses provide a `db` fixture")

    @pytest.fixture
    def run(self, db: MephistoDB) -> Run:
        return Run(db)

    # -- create / get / find ------------------------------------------------------

    def test_project_roundtrip(self, db: MephistoDB) -> None:
        pid = db.new_project("proj")
        assert db.get_project(pid)["project_name"] == "proj"
        assert [p.db_id for p in db.find_projects(project_name="proj")] == [pid]
        assert db.find_projects(project_name="other") == []

    def test_task_roundtrip_and_update(self, db: MephistoDB) -> None:
        pid = db.new_project("proj")
        tid = db.new_task("my-task", "static_task", project_id=pid)
        row = db.get_task(tid)
        assert (row["task_name"], row["task_type"], row["project_id"]) == ("my-task", "static_task", pid)
        db.update_task(tid, task_name="renamed")
        assert db.find_tasks(task_name="renamed")[0].db_id == tid
        project = db.find_tasks(project_id=pid)[0].get_project()
        assert project is not None and project.project_name == "proj"

    def test_a_task_with_runs_keeps_its_name(self, db: MephistoDB, run: Run) -> None:
        with pytest.raises(DatabaseError):
            db.update_task(run.task_id, task_name="")
        with pytest.raises(DatabaseError, match="task runs"):
            db.update_task(run.task_id, task_name="another-name")
        name = db.get_task(run.task_id)["task_name"]
        db.update_task(run.task_id, task_name=name)  # the same name is no change
        pid = db.new_project("later")
        db.update_task(run.task_id, project_id=pid)  # moving it to a project is allowed
        assert db.get_task(run.task_id)["project_id"] == pid

    def test_ids_are_strings(self, db: MephistoDB, run: Run) -> None:
        assert isinstance(run.task_run_id, str)
        unit = db.get_unit(run.units(1)[0])
        assert all(isinstance(unit[k], str) for k in ("unit_id", "assignment_id", "task_run_id"))

    def test_task_run_fields(self, db: MephistoDB, run: Run) -> None:
        tr = db.find_task_runs(task_id=run.task_id)[0]
        assert (tr.provider_type, tr.task_type, tr.is_completed, tr.sandbox) == ("mock", "mock", False, True)
        assert tr.args.task.task_title == "t"
        assert tr.get_requester().requester_name == "req-task-a"
        db.update_task_run(run.task_run_id, is_completed=True)
        assert tr.get_is_completed() is True
        assert db.find_task_runs(is_completed=False) == []

    def test_get_missing_raises(self, db: MephistoDB) -> None:
        for getter in ("get_project", "get_task", "get_task_run", "get_assignment", "get_unit",
                       "get_worker", "get_requester", "get_qualification"):
            with pytest.raises(EntryDoesNotExist):
                getattr(db, getter)("999")
        with pytest.raises(EntryDoesNotExist):
            db.get_unit("not-a-number")
        with pytest.raises(EntryDoesNotExist):
            db.get_agent("no-such-agent")
        with pytest.raises(EntryDoesNotExist):
            db.get_onboarding_agent("onboarding_nope")

    def test_update_missing_raises(self, db: MephistoDB) -> None:
        with pytest.raises(EntryDoesNotExist):
            db.update_task("999", task_name="x")
        with pytest.raises(EntryDoesNotExist):
            db.update_task_run("999", is_completed=True)
        with pytest.raises(EntryDoesNotExist):
            db.update_unit("999", status="launched")
        with pytest.raises(EntryDoesNotExist):
            db.update_agent("nope", status="completed")

    def test_missing_reference_raises(self, db: MephistoDB, run: Run) -> None:
        with pytest.raises(EntryDoesNotExist):
            db.new_unit(run.task_id, run.task_run_id, run.requester_id, "999", 0, 1.0, "mock", "mock")
        with pytest.raises(EntryDoesNotExist):
            db.new_task_run("999", run.requester_id, "", "mock", "mock")

    def test_empty_names_rejected(self, db: MephistoDB) -> None:
        for call in (lambda: db.new_task("", "mock"), lambda: db.new_worker("", "mock"),
                     lambda: db.make_qualification(""), lambda: db.new_requester("", "mock")):
            with pytest.raises(DatabaseError):
                call()

    # -- unique constraints ---------------------------------------------------------

    def test_duplicate_task_name(self, db: MephistoDB) -> None:
        db.new_task("same", "mock")
        with pytest.raises(EntryAlreadyExists):
            db.new_task("same", "static_task")
        assert len(db.find_tasks(task_name="same")) == 1

    def test_duplicate_task_name_on_rename(self, db: MephistoDB) -> None:
        db.new_task("a", "mock")
        b = db.new_task("b", "mock")
        with pytest.raises(EntryAlreadyExists):
            db.update_task(b, task_name="a")
        assert db.get_task(b)["task_name"] == "b"

    def test_duplicate_project_requester_qualification(self, db: MephistoDB) -> None:
        db.new_project("p")
        db.new_requester("r", "mock")
        db.make_qualification("q")
        with pytest.raises(EntryAlreadyExists):
            db.new_project("p")
        with pytest.raises(EntryAlreadyExists):
            db.new_requester("r", "mock")
        with pytest.raises(EntryAlreadyExists):
            db.make_qualification("q")

    def test_duplicate_worker_per_provider(self, db: MephistoDB) -> None:
        db.new_worker("alice", "mock")
        db.new_worker("alice", "mturk")  # same person name on another provider is fine
        with pytest.raises(EntryAlreadyExists):
            db.new_worker("alice", "mock")
        assert db.find_or_new_worker("alice", "mock").db_id == db.find_workers("alice", "mock")[0].db_id

    def test_find_or_new_workers_in_bulk(self, db: MephistoDB) -> None:
        existing = db.new_worker("old", "mock")
        ids = batch.find_or_new_workers(db, ["old", "new1", "new2", "new1"], "mock")
        assert set(ids) == {"old", "new1", "new2"} and ids["old"] == existing
        assert batch.find_or_new_workers(db, ["new2"], "mock") == {"new2": ids["new2"]}
        assert len(db.find_workers(provider_type="mock")) == 3
        assert batch.find_or_new_workers(db, [], "mock") == {}

    def test_duplicate_unit_index(self, db: MephistoDB, run: Run) -> None:
        unit = db.get_unit(run.units(1)[0])
        with pytest.raises(EntryAlreadyExists):
            db.new_unit(run.task_id, run.task_run_id, run.requester_id, unit["assignment_id"], 0,
                        1.0, "mock", "mock")

    def test_one_agent_per_worker_per_assignment(self, db: MephistoDB, run: Run) -> None:
        u0, u1 = run.units(1, per_assignment=2)
        run.agent(u0, "w1")
        with pytest.raises(EntryAlreadyExists):
            run.agent(u1, "w1")
        # nothing changed: the second unit is still open and unassigned
        unit = db.get_unit(u1)
        assert (unit["status"], unit["agent_id"]) == ("launched", None)
        run.agent(u1, "w2")  # another worker may take it

    # -- bulk creation ------------------------------------------------------------------

    def test_bulk_creation(self, db: MephistoDB, run: Run) -> None:
        created = batch.new_assignments_with_units(db,
            run.task_run_id,
            [{"shared": {"i": i}} for i in range(50)],
            pay_amount=0.5,
            units_per_assignment=[1, 2] * 25,
        )
        assert len(created) == 50
        assert sum(len(us) for _a, us in created) == 75
        for i, (a_id, unit_ids) in enumerate(created):
            assignment = db.find_assignments(task_run_id=run.task_run_id)[i]
            assert assignment.db_id == a_id
            assert assignment.get_assignment_data().shared == {"i": i}
            units = db.find_units(assignment_id=a_id)
            assert [u.db_id for u in units] == unit_ids
            assert [u.unit_index for u in units] == list(range(len(unit_ids)))
            assert all(u.db_status == "created" and u.pay_amount == 0.5 for u in units)
        assert db.get_unit_status_counts(run.task_run_id) == {"created": 75}

    def test_bulk_creation_bad_input_changes_nothing(self, db: MephistoDB, run: Run) -> None:
        with pytest.raises(DatabaseError):
            batch.new_assignments_with_units(db, run.task_run_id, [{}, {}], 0.5, units_per_assignment=[1])
        with pytest.raises(DatabaseError):
            batch.new_assignments_with_units(db, run.task_run_id, [{}], 0.5, units_per_assignment=0)
        with pytest.raises(EntryDoesNotExist):
            batch.new_assignments_with_units(db, "999", [{}], 0.5)
        assert db.find_assignments() == [] and db.find_units() == []

    def test_bulk_creation_twice_keeps_ids_distinct(self, db: MephistoDB, run: Run) -> None:
        first = run.units(10)
        second = run.units(10)
        assert len(set(first) | set(second)) == 20

    def test_find_units_filters(self, db: MephistoDB, run: Run) -> None:
        units = run.units(6)
        batch.update_units_status(db, units[:2], "assigned")
        other = Run(db, "task-b")
        other.units(3)
        assert [u.db_id for u in db.find_units(task_run_id=run.task_run_id, status="assigned")] == units[:2]
        assert len(db.find_units(task_run_id=run.task_run_id, status=["assigned", "launched"])) == 6
        assert len(db.find_units(task_id=other.task_id)) == 3
        assert db.find_units(task_run_id="not-an-id") == []
        assert all(isinstance(u, Unit) for u in db.find_units())

    # -- status transitions ---------------------------------------------------------------

    @pytest.mark.parametrize(("old", "new"), _ILLEGAL_UNIT)
    def test_illegal_unit_transition(self, db: MephistoDB, run: Run, old: str, new: str) -> None:
        (unit_id,) = run.units(1, status=old)
        with pytest.raises(InvalidTransition) as info:
            db.update_unit(unit_id, status=new)
        assert f"'{old}'" in str(info.value) and f"'{new}'" in str(info.value)
        assert db.get_unit(unit_id)["status"] == old

    @pytest.mark.parametrize(("old", "new"), _ILLEGAL_AGENT)
    def test_illegal_agent_transition(self, db: MephistoDB, run: Run, old: str, new: str) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id, status=old)
        with pytest.raises(InvalidTransition):
            db.update_agent(agent_id, status=new)
        assert db.get_agent(agent_id)["status"] == old

    @pytest.mark.parametrize(("old", "new"), _ILLEGAL_AGENT[:20])
    def test_illegal_onboarding_transition(self, db: MephistoDB, run: Run, old: str, new: str) -> None:
        worker = db.find_or_new_worker("w", "mock")
        oid = db.new_onboarding_agent(worker.db_id, run.task_id, run.task_run_id, "mock", status=old)
        with pytest.raises(InvalidTransition):
            db.update_onboarding_agent(oid, status=new)
        assert db.get_onboarding_agent(oid)["status"] == old

    def test_legal_unit_lifecycle(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1, status="created")
        for status in ("launched", "assigned", "completed", "accepted"):
            db.update_unit(unit_id, status=status)
            assert db.get_unit(unit_id)["status"] == status

    def test_bulk_status_skips_illegal(self, db: MephistoDB, run: Run) -> None:
        units = run.units(4)
        db.update_unit(units[0], status="assigned")
        db.update_unit(units[0], status="completed")
        assert batch.update_units_status(db, units, "expired") == 3
        assert db.get_unit(units[0])["status"] == "completed"

    def test_bulk_status_changes_exactly_the_units_named(self, db: MephistoDB, run: Run) -> None:
        units = run.units(1200, status="created")
        chosen = units[3:900:7] + units[900:1100] + [units[0], units[-1], units[5]]
        assert batch.update_units_status(db, chosen, "launched") == len(set(chosen))
        statuses = {u.db_id: u.db_status for u in db.find_units(task_run_id=run.task_run_id)}
        assert {u for u, st in statuses.items() if st == "launched"} == set(chosen)

    # -- agents move their units ----------------------------------------------------------

    def test_new_agent_assigns_unit(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id)
        unit = Unit(db, unit_id)
        assert unit.db_status == "assigned"
        agent = unit.get_assigned_agent()
        assert isinstance(agent, Agent) and agent.db_id == agent_id
        assert agent.get_status() == AgentState.IN_TASK
        assert unit.worker_id == agent.worker_id

    def test_agent_ids_are_unguessable(self, db: MephistoDB, run: Run) -> None:
        ids = [run.agent(u, f"w{i}") for i, u in enumerate(run.units(3))]
        assert len(set(ids)) == 3 and all(len(i) >= 20 for i in ids)

    def test_new_agent_on_taken_unit_changes_nothing(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        first = run.agent(unit_id, "w1")
        with pytest.raises(InvalidTransition):
            run.agent(unit_id, "w2")
        assert [a.db_id for a in db.find_agents(unit_id=unit_id)] == [first]
        assert db.get_unit(unit_id)["agent_id"] == first

    def test_submit_completes_unit(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        agent = Agent(db, run.agent(unit_id))
        agent.mark_done({"answer": 42})
        assert db.get_unit(unit_id)["status"] == "completed"
        fresh = Agent(db, agent.db_id)
        assert fresh.state.get_data()["outputs"] == {"answer": 42}
        assert fresh.state.get_task_end() is not None
        fresh.approve_work()
        assert db.get_unit(unit_id)["status"] == "accepted"

    @pytest.mark.parametrize("dropped", ["timeout", "returned", "disconnect", "expired"])
    def test_dropped_agent_frees_unit(self, db: MephistoDB, run: Run, dropped: str) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id, "w1")
        db.update_agent(agent_id, status=dropped)
        unit = db.get_unit(unit_id)
        assert (unit["status"], unit["agent_id"], unit["worker_id"]) == ("launched", None, None)
        run.agent(unit_id, "w2")  # another worker can now take it
        assigned = Unit(db, unit_id).get_assigned_agent()
        assert assigned is not None and assigned.get_worker().worker_name == "w2"

    def test_late_agent_change_leaves_expired_unit(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id)
        db.update_unit(unit_id, status="expired")
        db.update_agent(agent_id, status="expired")
        assert db.get_unit(unit_id)["status"] == "expired"

    def test_reject_and_soft_reject_move_unit(self, db: MephistoDB, run: Run) -> None:
        u1, u2 = run.units(2)
        a1, a2 = Agent(db, run.agent(u1, "w1")), Agent(db, run.agent(u2, "w2"))
        a1.mark_done({})
        a2.mark_done({})
        a1.reject_work("bad")
        a2.soft_reject_work()
        assert db.get_unit(u1)["status"] == "rejected"
        assert db.get_unit(u2)["status"] == "soft_rejected"

    def test_agent_state_roundtrip(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        agent = Agent(db, run.agent(unit_id))
        agent.state.set_data({"inputs": {"x": 1}, "outputs": None, "times": {"task_start": 1.0}})
        again = Agent(db, agent.db_id)
        assert again.state.inputs == {"x": 1}
        assert again.state.get_task_start() == 1.0

    def test_find_agents_filters(self, db: MephistoDB, run: Run) -> None:
        units = run.units(3)
        ids = [run.agent(u, f"w{i}") for i, u in enumerate(units)]
        db.update_agent(ids[0], status="completed")
        assert [a.db_id for a in db.find_agents(status="completed")] == [ids[0]]
        assert len(db.find_agents(task_run_id=run.task_run_id)) == 3
        w1 = db.find_workers(worker_name="w1")[0]
        assert [a.db_id for a in w1.get_agents()] == [ids[1]]

    def test_onboarding_agent(self, db: MephistoDB, run: Run) -> None:
        worker = db.find_or_new_worker("w", "mock")
        oid = db.new_onboarding_agent(worker.db_id, run.task_id, run.task_run_id, "mock")
        assert oid.startswith("onboarding_")
        db.update_onboarding_agent(oid, status="onboarding")
        db.update_onboarding_agent(oid, status="completed", state={"outputs": {"a": 1}})
        agent = db.find_onboarding_agents(worker_id=worker.db_id)[0]
        assert agent.get_status() == "completed"
        assert agent.state.outputs == {"a": 1}

    def _agent_rows(self, db: MephistoDB, run: Run, units: list[str], names: list[str]) -> list[dict[str, Any]]:
        from mephisto.db.rows import new_agent_id

        rows = []
        for unit_id, name in zip(units, names, strict=True):
            rows.append({
                "agent_id": new_agent_id(), "worker_id": db.find_or_new_worker(name, "mock").db_id,
                "unit_id": unit_id, "task_id": run.task_id, "task_run_id": run.task_run_id,
                "assignment_id": db.get_unit(unit_id)["assignment_id"], "task_type": "mock",
                "provider_type": "mock", "status": "in task", "state": {"inputs": {"u": unit_id}},
            })
        return rows

    def test_bulk_create_and_complete_agents(self, db: MephistoDB, run: Run) -> None:
        units = run.units(3)
        rows = self._agent_rows(db, run, units, ["a", "b", "c"])
        batch.create_agents(db, rows)
        for row in rows:
            unit = db.get_unit(row["unit_id"])
            assert (unit["status"], unit["agent_id"]) == ("assigned", row["agent_id"])
            assert db.get_agent(row["agent_id"])["state"] == {"inputs": {"u": row["unit_id"]}}
        batch.complete_agents(db, [(r["agent_id"], r["unit_id"], {"outputs": i}) for i, r in enumerate(rows)])
        assert db.get_unit_status_counts(run.task_run_id) == {"completed": 3}
        assert [db.get_agent(r["agent_id"])["state"] for r in rows] == [
            {"inputs": {"u": r["unit_id"]}, "outputs": i} for i, r in enumerate(rows)
        ]

    def test_bulk_create_agents_all_or_nothing(self, db: MephistoDB, run: Run) -> None:
        units = run.units(2)
        db.update_unit(units[1], status="expired")
        with pytest.raises(InvalidTransition):
            batch.create_agents(db, self._agent_rows(db, run, units, ["a", "b"]))
        assert db.find_agents() == []
        assert db.get_unit(units[0])["status"] == "launched"
        rows = self._agent_rows(db, run, units[:1], ["a"])
        batch.create_agents(db, rows)
        with pytest.raises(EntryAlreadyExists):  # same worker, same assignment
            batch.create_agents(db, self._agent_rows(db, run, units[:1], ["a"]))

    def test_bulk_complete_refuses_inactive_agents(self, db: MephistoDB, run: Run) -> None:
        u1, u2 = run.units(2)
        a1, a2 = run.agent(u1, "a"), run.agent(u2, "b")
        db.update_agent(a2, status="timeout")
        with pytest.raises(InvalidTransition):
            batch.complete_agents(db, [(a1, u1, {"x": 1}), (a2, u2, {"x": 2})])
        assert db.get_agent(a1)["status"] == "in task"
        assert db.get_unit(u1)["status"] == "assigned"

    def test_bulk_complete_follows_the_transition_table(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id, "a", status="none")  # none -> completed is not legal
        with pytest.raises(InvalidTransition):
            batch.complete_agents(db, [(agent_id, unit_id, {"x": 1})])
        with pytest.raises(InvalidTransition):
            db.update_agent(agent_id, status="completed")
        assert db.get_agent(agent_id)["status"] == "none"

    # -- one completion rule, single and bulk; saved state is merged, never overwritten --

    @pytest.mark.parametrize("path", ["single", "bulk"])
    def test_a_completion_is_never_rewritten(self, db: MephistoDB, run: Run, path: str) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id)
        batch.complete_agents(db, [(agent_id, unit_id, {"outputs": {"answer": 1}})])
        before = db.get_agent(agent_id)
        with pytest.raises(InvalidTransition):
            if path == "single":
                db.update_agent(agent_id, status="completed", state={"outputs": {"answer": 2}})
            else:
                batch.complete_agents(db, [(agent_id, unit_id, {"outputs": {"answer": 2}})])
        with pytest.raises(InvalidTransition):
            db.update_agent(agent_id, status="completed")
        with pytest.raises(InvalidTransition):  # a state write cannot replace the outputs
            db.update_agent(agent_id, state={"outputs": {"answer": 3}})
        after = db.get_agent(agent_id)
        assert (after["status"], after["state"]) == (before["status"], before["state"])
        assert db.get_unit(unit_id)["status"] == "completed"

    def test_a_superseding_completion_still_follows_the_one_rule(
        self, db: MephistoDB, run: Run
    ) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id)
        batch.complete_agents(db, [(agent_id, unit_id, {"outputs": 1})], superseding={agent_id})
        assert db.get_agent(agent_id)["state"] == {"outputs": 1}  # stored state not read
        with pytest.raises(InvalidTransition):
            batch.complete_agents(db, [(agent_id, unit_id, {"outputs": 2})],
                                  superseding={agent_id})
        assert db.get_agent(agent_id)["state"] == {"outputs": 1}

    @pytest.mark.parametrize("path", ["single", "bulk"])
    def test_metadata_saved_before_the_submit_is_kept(self, db: MephistoDB, run: Run, path: str) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id)
        db.update_agent(agent_id, state={"metadata": {"feedback": "fine"}})
        db.update_agent(agent_id, state={"metadata": {"time": 3}})
        submitted = {"outputs": {"answer": 1}, "times": {"task_end": 2.0}}
        if path == "single":
            db.update_agent(agent_id, status="completed", state=submitted)
        else:
            batch.complete_agents(db, [(agent_id, unit_id, submitted)])
        state = db.get_agent(agent_id)["state"]
        assert state["metadata"] == {"feedback": "fine", "time": 3}
        assert state["outputs"] == {"answer": 1} and state["times"]["task_end"] == 2.0
        db.update_agent(agent_id, state={"metadata": {"after": True}})  # feedback after submit
        assert db.get_agent(agent_id)["state"]["metadata"] == {
            "feedback": "fine", "time": 3, "after": True,
        }

    def test_an_active_agent_may_be_set_to_its_status_again(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id)
        db.update_agent(agent_id, status="in task", state={"x": 1})
        assert db.get_agent(agent_id)["state"]["x"] == 1
        db.update_agent(agent_id, status="timeout")
        with pytest.raises(InvalidTransition):
            db.update_agent(agent_id, status="timeout")

    def test_onboarding_completion_is_never_rewritten(self, db: MephistoDB, run: Run) -> None:
        worker = db.find_or_new_worker("w", "mock")
        oid = db.new_onboarding_agent(worker.db_id, run.task_id, run.task_run_id, "mock",
                                      status="onboarding")
        db.update_onboarding_agent(oid, state={"metadata": {"m": 1}})
        db.update_onboarding_agent(oid, status="rejected", state={"outputs": {"a": 1}})
        with pytest.raises(InvalidTransition):
            db.update_onboarding_agent(oid, status="approved", state={"outputs": {"a": 2}})
        row = db.get_onboarding_agent(oid)
        assert row["status"] == "rejected"
        assert row["state"] == {"metadata": {"m": 1}, "outputs": {"a": 1}}

    # -- run progress --------------------------------------------------------------------

    def test_assignment_statuses(self, db: MephistoDB, run: Run) -> None:
        units = run.units(2, per_assignment=2)
        db.update_unit(units[0], status="assigned")
        db.update_unit(units[0], status="completed")
        db.update_unit(units[2], status="expired")
        db.update_unit(units[3], status="expired")
        tr = db.find_task_runs()[0]
        statuses = tr.get_assignment_statuses()
        assert statuses["launched"] == 1 and statuses["expired"] == 1
        assert sum(statuses.values()) == 2
        assert tr.get_unit_statuses()["completed"] == 1
        assert tr.update_completion_progress() is False
        db.update_unit(units[1], status="expired")
        assert tr.update_completion_progress() is True
        assert db.get_task_run(run.task_run_id)["is_completed"] is True

    def test_mixed_assignment(self, db: MephistoDB, run: Run) -> None:
        u0, u1 = run.units(1, per_assignment=2)
        for status in ("assigned", "completed", "accepted"):
            db.update_unit(u0, status=status)
        db.update_unit(u1, status="expired")
        assert db.find_assignments()[0].get_status() == AssignmentState.MIXED

    # -- transactions ---------------------------------------------------------------------

    def test_transaction_rolls_back(self, db: MephistoDB, run: Run) -> None:
        with pytest.raises(RuntimeError), db.transaction():
            db.new_task("inside", "mock")
            db.new_worker("inside", "mock")
            raise RuntimeError("boom")
        assert db.find_tasks(task_name="inside") == []
        assert db.find_workers(worker_name="inside") == []

    def test_error_inside_transaction_keeps_the_rest(self, db: MephistoDB) -> None:
        with db.transaction():
            db.new_task("a", "mock")
            with pytest.raises(EntryAlreadyExists):
                db.new_task("a", "mock")
            db.new_task("b", "mock")
        assert {t.task_name for t in db.find_tasks()} == {"a", "b"}

    def test_concurrent_agents_one_unit(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        workers = [db.find_or_new_worker(f"w{i}", "mock").db_id for i in range(8)]
        unit = db.get_unit(unit_id)
        results: list[str] = []
        barrier = threading.Barrier(len(workers))

        def take(worker_id: str) -> None:
            barrier.wait()
            try:
                db.new_agent(worker_id, unit_id, run.task_id, run.task_run_id,
                             unit["assignment_id"], "mock", "mock")
                results.append("ok")
            except (InvalidTransition, EntryAlreadyExists):
                results.append("taken")

        threads = [threading.Thread(target=take, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count("ok") == 1
        assert len(db.find_agents(unit_id=unit_id)) == 1

    # -- qualifications and blocks ----------------------------------------------------------

    def test_qualification_grant_and_revoke(self, db: MephistoDB) -> None:
        qid = db.make_qualification("good")
        worker = db.find_or_new_worker("w", "mock")
        assert worker.get_granted_qualification("good") is None
        worker.grant_qualification("good", 3)
        grant = worker.get_granted_qualification("good")
        assert isinstance(grant, GrantedQualification) and grant.value == 3
        worker.grant_qualification("good", 5)  # regranting updates the value
        assert db.get_granted_qualification(qid, worker.db_id)["value"] == 5
        assert len(db.check_granted_qualifications(qualification_id=qid)) == 1
        assert db.check_granted_qualifications(value=3) == []
        assert worker.is_qualified("good") and worker.get_granted_qualifications() == {"good": 5}
        worker.revoke_qualification("good")
        assert worker.get_granted_qualification("good") is None
        with pytest.raises(EntryDoesNotExist):
            db.get_granted_qualification(qid, worker.db_id)

    def test_qualification_errors(self, db: MephistoDB) -> None:
        worker = db.find_or_new_worker("w", "mock")
        with pytest.raises(EntryDoesNotExist):
            worker.grant_qualification("never-made")
        qid = db.make_qualification("q")
        with pytest.raises(EntryDoesNotExist):
            db.grant_qualification(qid, "999")
        with pytest.raises(EntryDoesNotExist):
            db.delete_qualification("never-made")

    def test_delete_qualification_removes_grants(self, db: MephistoDB) -> None:
        qid = db.make_qualification("q")
        worker = db.find_or_new_worker("w", "mock")
        db.grant_qualification(qid, worker.db_id, 0)
        assert worker.is_disqualified("q")
        db.delete_qualification("q")
        assert db.find_qualifications(qualification_name="q") == []
        assert db.check_granted_qualifications(worker_id=worker.db_id) == []
        db.make_qualification("q")  # the name is free again

    def test_block_worker(self, db: MephistoDB, run: Run) -> None:
        worker = db.find_or_new_worker("w", "mock")
        requester = db.find_requesters()[0]
        other = db.find_requesters()[0].__class__(db, db.new_requester("other", "mock"))
        assert not worker.is_blocked(requester)
        worker.block_worker("spam", requester=requester)
        worker.block_worker("spam again", requester=requester)  # idempotent
        assert worker.is_blocked(requester) and worker.is_blocked()
        assert not worker.is_blocked(other)
        worker.unblock_worker("ok now", requester)
        assert not worker.is_blocked(requester)

    def test_find_blocked_workers(self, db: MephistoDB, run: Run) -> None:
        requester = db.find_requesters()[0]
        other = db.new_requester("other", "mock")
        a, b, c = (db.find_or_new_worker(n, "mock") for n in ("a", "b", "c"))
        db.block_worker(a.db_id, requester.db_id, "spam")
        db.block_worker(b.db_id, requester.db_id, "spam")
        db.block_worker(b.db_id, other, "spam")
        ids = [a.db_id, b.db_id, c.db_id]
        assert batch.find_blocked_workers(db, ids, requester.db_id) == {a.db_id, b.db_id}
        assert batch.find_blocked_workers(db, ids, other) == {b.db_id}
        assert batch.find_blocked_workers(db, ids) == {a.db_id, b.db_id}
        assert batch.find_blocked_workers(db, [c.db_id]) == set()
        assert batch.find_blocked_workers(db, []) == set()

    # -- review decisions and spending ---------------------------------------------------

    def test_worker_review_roundtrip(self, db: MephistoDB, run: Run) -> None:
        (unit_id,) = run.units(1)
        agent_id = run.agent(unit_id, "w1", status="completed")
        worker_id = db.get_agent(agent_id)["worker_id"]
        qual = db.make_qualification("good")
        review_id = db.new_worker_review(worker_id, status="approved", unit_id=unit_id,
                                         review_note="nice", bonus="0.5")
        row = db.find_worker_reviews(unit_id=unit_id)[0]
        assert row["id"] == review_id and isinstance(review_id, str)
        assert (row["status"], row["review_note"], row["bonus"]) == ("approved", "nice", 0.5)
        # filled in from the unit
        assert (row["task_id"], row["task_run_id"], row["requester_id"], row["agent_id"]) == (
            run.task_id, run.task_run_id, run.requester_id, agent_id)
        assert row["blocked_worker"] is False and row["creation_date"] > 0
        db.update_worker_review(unit_id, qual, worker_id, value=3)
        row = db.find_worker_reviews(worker_id=worker_id)[0]
        assert (row["updated_qualification_id"], row["updated_qualification_value"]) == (qual, 3)
        db.new_worker_review(worker_id, qualification_id=qual, revoke=True, blocked_worker=True)
        rows = db.find_worker_reviews(worker_id=worker_id)
        assert [r["revoked_qualification_id"] for r in rows] == [None, qual]
        assert rows[1]["unit_id"] is None and rows[1]["blocked_worker"] is True
        assert db.find_worker_reviews(task_run_id=run.task_run_id) == rows[:1]
        with pytest.raises(EntryDoesNotExist):
            db.update_worker_review(unit_id, qual, db.find_or_new_worker("w2", "mock").db_id)
        with pytest.raises(EntryDoesNotExist):
            db.new_worker_review("999999")  # no such worker

    def test_budgets_are_set_and_cleared(self, db: MephistoDB, run: Run) -> None:
        project = db.new_project("p")
        db.set_project_budget(project, 120.5)
        db.set_task_run_budget(run.task_run_id, 10)
        assert db.get_project(project)["budget"] == 120.5
        assert db.get_task_run(run.task_run_id)["budget"] == 10.0
        db.set_task_run_budget(run.task_run_id, None)
        assert db.get_task_run(run.task_run_id)["budget"] is None
        for bad in (-1, "ten", True):
            with pytest.raises(DatabaseError):
                db.set_project_budget(project, bad)  # type: ignore[arg-type]
        with pytest.raises(EntryDoesNotExist):
            db.set_task_run_budget("999999", 5)

    def test_spending_is_grouped_by_run_and_status(self, db: MephistoDB, run: Run) -> None:
        other = Run(db, "task-b")
        a, b, c = run.units(3)
        other.units(2, status="created")
        agent_id = run.agent(a, "w1")
        db.update_agent(agent_id, status="completed")
        db.update_agent(agent_id, status="approved")
        worker_id = db.get_agent(agent_id)["worker_id"]
        paid = db.new_payment(run.requester_id, worker_id, "mock", 1.5, "great", unit_id=a)
        db.update_payment(paid, "paid", provider_ref="x")
        db.new_payment(run.requester_id, worker_id, "mock", 0.5, "more", unit_id=a)
        db.new_payment(run.requester_id, worker_id, "mock", 9.0, "no unit")
        spending = db.get_spending([run.task_run_id, other.task_run_id])
        mine = spending[run.task_run_id]
        assert mine["provider_type"] == "mock"
        assert mine["units"] == {"accepted": (1, 0.25), "launched": (2, 0.5)}
        assert mine["bonuses"] == {"paid": (1, 1.5), "recorded": (1, 0.5)}
        assert spending[other.task_run_id]["units"] == {"created": (2, 0.5)}
        assert spending[other.task_run_id]["bonuses"] == {}
        assert db.get_spending([]) == {}

    def test_spending_lock_lets_one_spender_at_a_time(self, db: MephistoDB, run: Run) -> None:
        """Two spenders that each check a cap then commit: with the lock, the second
        sees the first's commit (so at most one passes a cap with room for one)."""
        (unit_id,) = run.units(1)
        worker_id = db.get_agent(run.agent(unit_id, "w1", status="completed"))["worker_id"]
        barrier = threading.Barrier(2)
        passed: list[int] = []

        def spend(i: int) -> None:
            barrier.wait()
            with db.transaction() as conn:
                db.lock_for_spending(conn, run.task_run_id)
                seen = db.get_spending([run.task_run_id])[run.task_run_id]["bonuses"]
                if not seen:
                    db.new_payment(run.requester_id, worker_id, "mock", 1.0, f"b{i}",
                                   unit_id=unit_id)
                    passed.append(i)

        threads = [threading.Thread(target=spend, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(passed) == 1 and len(db.find_payments(unit_id=unit_id)) == 1
