"""Several processes on one database at once: no lost update, no duplicate, no double pay.

Every test runs its steps in real, separate processes (multiprocessing, `spawn`; started
once for the module) that open the same database and do the same things at the same
instant (a barrier before each step), the way several operators and the review app
share one PostgreSQL database. Each asserts the exact
final state. They run on PostgreSQL, and on SQLite too (whose writers queue on one lock,
so there they check that nothing deadlocks or fails).
"""

from __future__ import annotations

import multiprocessing
import queue
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.providers.mock import MockProvider
from mephisto.data_model.payment import Payment
from mephisto.db import MephistoDB, batch
from mephisto.errors import BudgetExceeded, InvalidTransition
from mephisto.testing.db_contract import Run

PROCESSES = 4


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(url: str) -> Any:
    database = MephistoDB(url)
    yield database
    database.shutdown()


# -- running the same code in several processes ------------------------------------------


def _serve(index: int, tasks: Any, results: Any, barriers: dict[int, Any]) -> None:
    """A process of the pool: runs each task it is sent on a database of its own."""
    import os

    while (task := tasks.get()) is not None:
        fn, url, parties, env, args = task
        os.environ.update(env)
        barrier = barriers[parties]
        db = MephistoDB(url)
        try:
            results.put((index, "ok", fn(db, index, barrier, *args)))
        except BaseException as exc:  # noqa: BLE001 - reported to the test, which fails
            results.put((index, "error", f"{exc!r}\n{traceback.format_exc()}"))
            barrier.abort()
        finally:
            db.shutdown()


class Pool:
    """PROCESSES spawned processes, started once for the module (starting four Python
    processes costs about two seconds on two cores) and given one task each at a time."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.barriers = {n: ctx.Barrier(n, timeout=30) for n in (2, PROCESSES)}
        self.tasks = [ctx.Queue() for _ in range(PROCESSES)]
        self.results = ctx.Queue()
        self.procs = [ctx.Process(target=_serve, daemon=True,
                                  args=(i, self.tasks[i], self.results, self.barriers))
                      for i in range(PROCESSES)]
        for p in self.procs:
            p.start()

    def run(self, url: str, fn: Callable[..., Any], args: tuple[Any, ...],
            processes: int) -> list[Any]:
        import os

        barrier = self.barriers[processes]
        barrier.reset()
        env = {k: v for k, v in os.environ.items() if k.startswith("MEPHISTO_")}
        for i in range(processes):
            self.tasks[i].put((fn, url, processes, env, args))
        got: dict[int, Any] = {}
        errors = []
        for _ in range(processes):
            index, kind, value = self.results.get(timeout=90)
            if kind == "error":
                errors.append(f"process {index}: {value}")
            got[index] = value
        assert not errors, "\n".join(errors)
        return [got[i] for i in range(processes)]

    def close(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


_pool: list[Pool] = []


@pytest.fixture(scope="module", autouse=True)
def _processes() -> Any:
    yield
    while _pool:
        _pool.pop().close()


def in_processes(url: str, fn: Callable[..., Any], *args: Any,
                 processes: int = PROCESSES) -> list[Any]:
    """`fn(db, index, barrier, *args)` in `processes` separate processes at once, each
    with its own connections to the database at `url`; their results by index. An error
    in any of them fails the test with its traceback."""
    if not _pool:
        _pool.append(Pool())
    try:
        return _pool[0].run(url, fn, args, processes)
    except queue.Empty:  # a process is stuck: the next test gets new ones
        _pool.pop().close()
        raise


class CountingProvider(MockProvider):
    """The mock provider, with every bonus it is asked to pay written down as a row of
    its own (so a second payment under one token shows)."""

    def pay_bonus(self, payment: Payment) -> str:
        self.db.put_provider_record("mock", "pay-call",
                                    f"{payment.request_token}:{uuid.uuid4().hex}", {})
        return super().pay_bonus(payment)


def pay_calls(db: MephistoDB) -> Counter[str]:
    return Counter(k.split(":")[0] for k in db.find_provider_records("mock", "pay-call"))


def submitted_units(db: MephistoDB, run: Run, workers: list[str]) -> list[str]:
    units = run.units(len(workers))
    for unit_id, name in zip(units, workers, strict=True):
        db.update_agent(run.agent(unit_id, name), status="completed",
                        state={"outputs": {"answer": name}})
    return units


# -- workers and qualifications --------------------------------------------------------------


def _find_or_new_workers(db: MephistoDB, index: int, barrier: Any,
                         names: list[str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    order = names if index % 2 else names[::-1]
    for name in order:
        barrier.wait()
        ids[name] = db.find_or_new_worker(name, "mock").db_id
    barrier.wait()
    found = batch.find_or_new_workers(db, [*names, "batch-a", "batch-b"], "mock")
    assert all(found[n] == ids[n] for n in names)
    ids.update(found)
    return ids


def test_a_worker_seen_by_several_processes_at_once_is_one_worker(
    db: MephistoDB, url: str
) -> None:
    names = [f"w{i}" for i in range(15)]
    results = in_processes(url, _find_or_new_workers, names)
    assert all(r == results[0] for r in results)
    assert len(db.find_workers()) == len(names) + 2
    assert {w.worker_name: w.db_id for w in db.find_workers()} == results[0]


def _grant_by_review(db: MephistoDB, index: int, barrier: Any, units: list[list[str]]
                     ) -> int:
    from mephisto.tools.provider_review import Decision, review_unit

    provider = MockProvider(db)
    for i, unit_id in enumerate(units[index]):
        barrier.wait()
        review_unit(db, unit_id, Decision(grant=(f"skill-{i}", index + 1)), provider)
    return len(units[index])


def test_one_qualification_granted_by_reviewers_in_several_processes(
    db: MephistoDB, url: str
) -> None:
    """Each reviewer grants `skill-i` (a new name each round) to the same worker at the
    same instant: one qualification per name, one grant per name, no reviewer fails."""
    run = Run(db)
    rounds = 8
    units = [submitted_units(db, run, ["shared"] * rounds) for _ in range(PROCESSES)]
    assert in_processes(url, _grant_by_review, units) == [rounds] * PROCESSES
    names = sorted(q.qualification_name for q in db.find_qualifications())
    assert names == sorted(f"skill-{i}" for i in range(rounds))
    worker = db.find_workers(worker_name="shared")[0]
    granted = worker.get_granted_qualifications()
    assert set(granted) == set(names) and set(granted.values()) <= {1, 2, 3, 4}
    assert len(db.check_granted_qualifications(worker_id=worker.db_id)) == rounds
    assert len(db.find_worker_reviews()) == rounds * PROCESSES


def _onboard(db: MephistoDB, index: int, barrier: Any,
             agents: list[list[tuple[str, str]]]) -> list[bool]:
    passed = index % 2 == 0
    outcomes = []
    for i, (agent_id, worker_id) in enumerate(agents[index]):
        barrier.wait()
        outcomes.append(batch.finish_onboarding(db, agent_id, worker_id, f"onboarded-{i}",
                                                passed, {"outputs": {"p": index}}))
    return outcomes


def test_an_onboarding_failure_stands_when_a_pass_comes_at_the_same_time(
    db: MephistoDB, url: str
) -> None:
    """Two runs' operators finish the same worker's onboarding at once, one passed, one
    failed: the qualification is made once, and the failure stands whatever the order."""
    run = Run(db)
    rounds = 8
    workers = [db.find_or_new_worker(f"o{i}", "mock").db_id for i in range(rounds)]
    agents = [[(batch.create_onboarding_agent(db, w, run.task_id, run.task_run_id, "mock"), w)
               for w in workers] for _ in range(PROCESSES)]
    in_processes(url, _onboard, agents)
    assert len(db.find_qualifications()) == rounds
    for i, worker_id in enumerate(workers):
        (qual,) = db.find_qualifications(qualification_name=f"onboarded-{i}")
        (grant,) = db.check_granted_qualifications(qualification_id=qual.db_id,
                                                   worker_id=worker_id)
        assert grant.value == 0, f"round {i}: a pass overturned a failure"


def _count_units(db: MephistoDB, index: int, barrier: Any, units: list[list[str]]) -> None:
    from mephisto.abstractions.blueprints.mixins.use_gold_unit import UseGoldUnit
    from mephisto.data_model.unit import Unit
    from mephisto.utils.args import Args

    args = Args.of({"blueprint": {"use_golds": True, "gold_qualification_base": "gold"},
                    "task": {"allowed_concurrent": 1}})
    validate = UseGoldUnit.create_validation_function(args, lambda unit: None)
    for unit_id in units[index]:
        barrier.wait()
        validate(Unit(db, unit_id))


def test_a_count_kept_in_a_qualification_adds_up_across_processes(
    db: MephistoDB, url: str
) -> None:
    """Gold units count a worker's units in a qualification; runs of the task in four
    processes counting the same worker at once lose no count."""
    run = Run(db)
    rounds = 10
    units = [submitted_units(db, run, ["counted"] * rounds) for _ in range(PROCESSES)]
    db.make_qualification("gold-completed-count")  # as the run's setup makes it
    in_processes(url, _count_units, units)
    worker = db.find_workers(worker_name="counted")[0]
    assert worker.get_granted_qualifications() == {"gold-completed-count": rounds * PROCESSES}


def _database_id(db: MephistoDB, index: int, barrier: Any) -> str:
    from mephisto.tools.db_porter import database_id

    barrier.wait()
    return database_id(db)


def test_a_database_has_one_id_whoever_asks_first(db: MephistoDB, url: str) -> None:
    from mephisto.tools.db_porter import database_id

    ids = in_processes(url, _database_id)
    assert set(ids) == {database_id(db)}


def _merge_metadata(db: MephistoDB, index: int, barrier: Any, agent_id: str,
                    rounds: int) -> None:
    for i in range(rounds):
        barrier.wait()
        batch.merge_metadata(db, agent_id, {f"p{index}-{i}": i})


def test_metadata_written_by_several_processes_is_merged_not_lost(
    db: MephistoDB, url: str
) -> None:
    run = Run(db)
    (unit_id,) = run.units(1)
    agent_id = run.agent(unit_id, "w")
    rounds = 12
    in_processes(url, _merge_metadata, agent_id, rounds)
    metadata = db.get_agent(agent_id)["state"]["metadata"]
    assert metadata == {f"p{p}-{i}": i for p in range(PROCESSES) for i in range(rounds)}


# -- money ---------------------------------------------------------------------------------


def _bonuses(db: MephistoDB, index: int, barrier: Any, worker_id: str, unit_id: str,
             tries: int) -> tuple[int, int]:
    from mephisto.operations.payments import pay_bonus

    provider = CountingProvider(db)
    paid = refused = 0
    for _ in range(tries):
        barrier.wait()
        try:
            pay_bonus(db, provider, worker_id, 0.5, "thanks", unit_id=unit_id)
            paid += 1
        except BudgetExceeded:
            refused += 1
    return paid, refused


def test_bonuses_from_several_processes_stop_exactly_at_the_budget(
    db: MephistoDB, url: str
) -> None:
    run = Run(db)
    (unit_id,) = submitted_units(db, run, ["w"])
    db.set_task_run_budget(run.task_run_id, 0.25 + 10 * 0.5)  # the unit, then 10 bonuses
    worker_id = db.find_workers(worker_name="w")[0].db_id
    results = in_processes(url, _bonuses, worker_id, unit_id, 5)
    assert sum(p for p, _r in results) == 10 and sum(r for _p, r in results) == 10
    payments = db.find_payments()
    assert len(payments) == 10 and all(p.is_paid for p in payments)
    assert sum(p.amount for p in payments) == pytest.approx(5.0)
    assert pay_calls(db) == Counter({p.request_token: 1 for p in payments})


def _settle(db: MephistoDB, index: int, barrier: Any) -> int:
    from mephisto.operations.payments import settle_payments

    barrier.wait()
    return len(settle_payments(db, CountingProvider(db)))


def test_payments_settled_by_several_processes_are_paid_once(
    db: MephistoDB, url: str
) -> None:
    """Payments left `recorded` by a crash, settled by every process at once: each is
    asked of the provider once, recorded paid once, and no process fails."""
    run = Run(db)
    worker_id = db.find_or_new_worker("w", "mock").db_id
    ids = [db.new_payment(run.requester_id, worker_id, "mock", 0.1 * (i + 1), "bonus")
           for i in range(30)]
    in_processes(url, _settle)
    payments = db.find_payments()
    assert sorted(p.db_id for p in payments) == sorted(ids)
    assert all(p.is_paid for p in payments)
    assert pay_calls(db) == Counter({p.request_token: 1 for p in payments})
    assert all(p.attempts == 1 for p in payments)


def _approve(db: MephistoDB, index: int, barrier: Any, units: list[str]) -> list[str]:
    from mephisto.tools.provider_review import Decision, review_unit

    provider = CountingProvider(db)
    outcomes = []
    for unit_id in units:
        barrier.wait()
        try:
            outcome = review_unit(db, unit_id, Decision("approve", bonus=0.5), provider)
            assert outcome.payment is not None and outcome.payment.is_paid
            outcomes.append("approved")
        except InvalidTransition as exc:
            assert "approved" in str(exc)
            outcomes.append("refused")
    return outcomes


def test_a_unit_approved_from_two_processes_is_approved_and_paid_once(
    db: MephistoDB, url: str
) -> None:
    """Two review apps approve the same units with a bonus at the same instant: for each
    unit exactly one succeeds, the other is told the unit is already approved; one
    review, one payment, one pay call."""
    run = Run(db)
    units = submitted_units(db, run, [f"w{i}" for i in range(10)])
    results = in_processes(url, _approve, units, processes=2)
    for i, unit_id in enumerate(units):
        assert sorted(r[i] for r in results) == ["approved", "refused"], unit_id
        agent = db.get_agent(db.get_unit(unit_id)["agent_id"])
        assert agent["status"] == "approved"
        assert len(db.find_worker_reviews(unit_id=unit_id)) == 1
        (payment,) = db.find_payments(unit_id=unit_id)
        assert payment.is_paid
    assert pay_calls(db) == Counter({p.request_token: 1 for p in db.find_payments()})


# -- two operators ----------------------------------------------------------------------------


def _operate(db: MephistoDB, index: int, barrier: Any, task_html: str, units: int,
             maximum: int) -> tuple[str, int]:
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.operations.operator import Operator
    from mephisto.testing.fixtures import static_run_config
    from mephisto.testing.worker import run_simulated_workers_sync

    operator = Operator(db)
    try:
        barrier.wait()  # both launch at once: one task, made by whichever is first
        task_run_id = operator.launch_task_run(
            static_run_config(task_html, task_name="shared-task",
                              maximum_units_per_worker=maximum),
            SharedStaticTaskState(static_task_data=[{"text": f"{index}-{i}"}
                                                    for i in range(units)]))
        live = operator._runs[task_run_id]
        barrier.wait()  # the same worker names arrive at both runs at once
        stats = run_simulated_workers_sync(live.url, 4 if maximum == 0 else 2)
        if maximum == 0:
            assert live.done_sync.wait(30), "the run did not end"
        return task_run_id, stats.units_completed
    finally:
        operator.shutdown()


def _two_operators(url: str, tmp_path: Path, units: int, maximum: int) -> list[str]:
    html = tmp_path / "task.html"
    html.write_text('<p>${text}</p><input name="answer"><button type="submit">Go</button>')
    results = in_processes(url, _operate, str(html), units, maximum, processes=2)
    run_ids = [run_id for run_id, _done in results]
    assert len(set(run_ids)) == 2
    return run_ids


def test_two_operators_share_one_database(db: MephistoDB, url: str, tmp_path: Path) -> None:
    """Two operators, each running a run of the same task, with the same workers
    arriving at both: one task, one row per worker, every unit done once."""
    units = 12
    run_ids = _two_operators(url, tmp_path, units, 0)
    (task,) = db.find_tasks()
    assert {r.db_id for r in db.find_task_runs(task_id=task.db_id)} == set(run_ids)
    for run_id in run_ids:
        assert db.get_unit_status_counts(run_id) == {"completed": units}
        assert len(db.find_agents(task_run_id=run_id)) == units
    names = [w.worker_name for w in db.find_workers()]
    assert len(names) == len(set(names))
    assert {a.worker_id for a in db.find_agents()} <= {w.db_id for w in db.find_workers()}


def test_a_workers_maximum_holds_across_two_operators(
    db: MephistoDB, url: str, tmp_path: Path
) -> None:
    """`maximum_units_per_worker` counts a worker's units in every run of the task: two
    operators running the task at once give the same two workers 3 units each in all."""
    _two_operators(url, tmp_path, 12, 3)
    per_worker = Counter(a.worker_id for a in db.find_agents())
    assert len(per_worker) == 2 and set(per_worker.values()) == {3}, per_worker
