"""Screening and gold units (`blueprints/mixins/`, `operations/quality_checks.py`) with
simulated workers over real sockets: who gets which unit, what passing and failing do,
the caps, and the falling rate of golds."""

from __future__ import annotations

from typing import Any

import pytest

from mephisto.abstractions.blueprints.mixins.screen_task_required import ScreenTaskRequired
from mephisto.abstractions.blueprints.mixins.use_gold_unit import (
    UseGoldUnit,
    get_gold_factory,
    worker_needs_gold,
)
from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.abstractions.providers.published import KIND
from mephisto.data_model.unit import GOLD_UNIT_INDEX, SCREENING_UNIT_INDEX, Unit
from mephisto.db.database import MephistoDB
from mephisto.errors import ConfigError
from mephisto.operations.quality_checks import FAILED_CHECKS, NO_SCREENING_LEFT
from mephisto.testing.worker import SimulatedWorker
from mephisto.utils.args import Args

SCREENING = {"use_screening_task": True, "passed_qualification_name": "screened",
             "block_qualification": "screen-failed"}
GOLDS = {"use_golds": True, "gold_qualification_base": "gold", "max_gold_units": 10,
         "min_golds": 1, "max_incorrect_golds": 0}


def _data(n: int) -> list[dict[str, str]]:
    return [{"text": f"real-{i}"} for i in range(n)]


def _args(blueprint: dict[str, Any]) -> Args:
    return Args.of({"blueprint": blueprint, "task": {"allowed_concurrent": 1}})


def _answer(unit: Unit) -> str | None:
    agent = unit.get_assigned_agent()
    assert agent is not None
    return agent.state.get_data()["outputs"].get("answer")


def _unit_index(db: MephistoDB, agent_id: str) -> int:
    return int(db.get_unit(db.get_agent(agent_id)["unit_id"])["unit_index"])


def _granted(db: MephistoDB, name: str) -> dict[str, int]:
    worker = db.find_workers(worker_name=name)[0]
    return worker.get_granted_qualifications()


def _screened_run(launch_static_run: Any, factory: Any, cap: int, n: int = 4) -> Any:
    blueprint = {**SCREENING, "max_screening_units": cap}
    state = SharedStaticTaskState(screening_data_factory=factory)
    state.on_unit_submitted = ScreenTaskRequired.create_validation_function(
        _args(blueprint), lambda unit: _answer(unit) == "cat")
    state.qualifications += ScreenTaskRequired.get_mixin_qualifications(_args(blueprint), state)
    return launch_static_run(_data(n), shared_state=state, allowed_concurrent=1,
                             **{f"blueprint__{k}": v for k, v in blueprint.items()})


def _screening_data() -> Any:
    while True:
        yield {"text": "screen: type cat"}


async def test_new_workers_are_screened_first_and_a_pass_leads_to_real_work(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = _screened_run(launch_static_run, _screening_data(), cap=2)
    async with SimulatedWorker(run.url, "good") as good, SimulatedWorker(run.url, "bad") as bad:
        first = await good.request_agent()
        assert first["init_task_data"] == {"text": "screen: type cat"}
        assert _unit_index(mephisto_db, first["agent_id"]) == SCREENING_UNIT_INDEX
        await good.submit({"answer": "cat"})
        good.new_assignment("second")
        real = await good.request_agent()  # waits for the check of the screening unit
        assert real["init_task_data"] == {"text": "real-0"}
        assert _unit_index(mephisto_db, real["agent_id"]) == 0

        assert (await bad.request_agent())["init_task_data"]["text"].startswith("screen")
        await bad.submit({"answer": "dog"})
        bad.new_assignment("second")
        refused = await bad.request_agent()
        assert refused["agent_id"] is None and "blocked" in refused["failure_reason"]

        async with SimulatedWorker(run.url, "third") as third:  # both screening units used
            late = await third.request_agent()
            assert late["agent_id"] is None and late["failure_reason"] == NO_SCREENING_LEFT
    assert _granted(mephisto_db, "good") == {"screened": 1}
    assert _granted(mephisto_db, "bad") == {"screen-failed": 1}
    units = mephisto_db.find_units(task_run_id=run.task_run_id)
    assert sorted(u.unit_index for u in units) == [-1, -1, 0, 0, 0, 0]
    published = {unit_id for record in mephisto_db.find_provider_records("mock", KIND).values()
                 if record["event"] == "launched" for unit_id in record["units"]}
    assert published == {u.db_id for u in units if u.unit_index >= 0}  # screening: not published


async def test_screening_on_real_units_checks_the_first_one(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = _screened_run(launch_static_run, False, cap=0, n=6)
    async with SimulatedWorker(run.url, "good") as good, SimulatedWorker(run.url, "bad") as bad:
        assert (await good.request_agent())["init_task_data"] == {"text": "real-0"}
        await good.submit({"answer": "cat"})
        good.new_assignment("2")
        assert (await good.request_agent())["agent_id"] is not None
        await good.submit({"answer": "anything"})  # not checked again
        good.new_assignment("3")
        assert (await good.request_agent())["agent_id"] is not None

        assert (await bad.request_agent())["agent_id"] is not None
        await bad.submit({"answer": "dog"})
        bad.new_assignment("2")
        assert (await bad.request_agent())["agent_id"] is None
    assert _granted(mephisto_db, "good") == {"screened": 1}
    assert _granted(mephisto_db, "bad") == {"screen-failed": 1}
    assert all(u.unit_index >= 0 for u in mephisto_db.find_units(task_run_id=run.task_run_id))


async def test_a_screening_unit_left_by_its_worker_is_not_given_to_another(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = _screened_run(launch_static_run, _screening_data(), cap=1)
    live = run.live
    async with SimulatedWorker(run.url, "leaver") as leaver:
        agent_id = (await leaver.request_agent())["agent_id"]
        agent = live.pool.agent(agent_id)
        await live.pool.drop_agent(agent, "returned")
    await live.background.wait(timeout=5)
    (screening,) = [u for u in mephisto_db.find_units(task_run_id=run.task_run_id)
                    if u.unit_index == SCREENING_UNIT_INDEX]
    assert mephisto_db.get_unit(screening.db_id)["status"] == "expired"
    async with SimulatedWorker(run.url, "next") as nxt:  # the cap of 1 is spent
        assert (await nxt.request_agent())["failure_reason"] == NO_SCREENING_LEFT


def _gold_run(launch_static_run: Any, n: int, **blueprint: Any) -> Any:
    settings = {**GOLDS, **blueprint}
    golds = [{"text": "gold: say yes", "expected": "yes"}, {"text": "gold: say no",
                                                              "expected": "no"}]
    state = SharedStaticTaskState(get_gold_for_worker=get_gold_factory(golds))

    def right(unit: Unit) -> bool:
        agent = unit.get_assigned_agent()
        assert agent is not None
        data = agent.state.get_data()
        return bool(data["outputs"].get("answer") == data["inputs"]["expected"])

    state.on_unit_submitted = UseGoldUnit.create_validation_function(_args(settings), right)
    state.qualifications += UseGoldUnit.get_mixin_qualifications(_args(settings), state)
    return launch_static_run(_data(n), shared_state=state, allowed_concurrent=1,
                             **{f"blueprint__{k}": v for k, v in settings.items()})


async def _work(worker: SimulatedWorker, db: MephistoDB, units: int,
                right: bool = True) -> list[str]:
    """`units` units in a row; the kinds the worker got ("gold" or "task")."""
    kinds = []
    for i in range(units):
        worker.new_assignment(f"{worker.worker_id}-{i}")
        got = await worker.request_agent()
        if got["agent_id"] is None:
            kinds.append(f"refused: {got['failure_reason']}")
            break
        data = got["init_task_data"]
        gold = _unit_index(db, got["agent_id"]) == GOLD_UNIT_INDEX
        kinds.append("gold" if gold else "task")
        answer = data.get("expected") if gold and right else "wrong" if gold else "fine"
        await worker.submit({"answer": answer})
    return kinds


async def test_golds_come_first_then_rarely_and_reliable_workers_keep_working(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = _gold_run(launch_static_run, n=14)
    async with SimulatedWorker(run.url, "steady") as steady:
        kinds = await _work(steady, mephisto_db, 13)
    await run.live.background.wait(timeout=5)  # the last unit's check    # a first gold, then ten real units, then the next gold
    assert kinds == ["gold"] + ["task"] * 10 + ["gold", "task"]
    assert _granted(mephisto_db, "steady") == {
        "gold-correct-golds": 2, "gold-completed-count": 11}


async def test_a_wrong_gold_stops_the_worker(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = _gold_run(launch_static_run, n=4)
    async with SimulatedWorker(run.url, "careless") as careless:
        kinds = await _work(careless, mephisto_db, 3, right=False)
    assert kinds[0] == "gold" and kinds[1].startswith("refused")
    assert _granted(mephisto_db, "careless") == {"gold-wrong-golds": 1, "gold-disqualified": 1}
    assert mephisto_db.get_unit_status_counts(run.task_run_id).get("completed") == 1


async def test_with_strikes_left_a_wrong_gold_means_another_gold(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = _gold_run(launch_static_run, n=4, max_incorrect_golds=1, min_golds=1)
    async with SimulatedWorker(run.url, "learner") as learner:
        learner.new_assignment("a")
        first = await learner.request_agent()
        await learner.submit({"answer": "wrong"})  # strike one
        learner.new_assignment("b")
        second = await learner.request_agent()
        assert _unit_index(mephisto_db, first["agent_id"]) == GOLD_UNIT_INDEX
        assert _unit_index(mephisto_db, second["agent_id"]) == GOLD_UNIT_INDEX
        await learner.submit({"answer": "wrong"})  # strike two: out
        learner.new_assignment("c")
        out = await learner.request_agent()
    assert out["agent_id"] is None
    assert out["failure_reason"] in (
        FAILED_CHECKS, "You do not have the qualifications required for this task.")


async def test_when_golds_run_out_new_workers_are_turned_away(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = _gold_run(launch_static_run, n=4, max_gold_units=1)
    async with SimulatedWorker(run.url, "first") as first, \
            SimulatedWorker(run.url, "second") as second:
        assert (await _work(first, mephisto_db, 2)) == ["gold", "task"]
        refused = await second.request_agent()
    assert refused["agent_id"] is None and "used up" in refused["failure_reason"]


def test_the_rate_of_golds_falls_with_experience() -> None:
    """A reliable worker (every gold right) over 1,000 units: golds per stretch."""
    done = right = 0
    golds_at: list[int] = []
    for position in range(1, 1001):
        if worker_needs_gold(done, right, 0, 1):
            right += 1
            golds_at.append(position)
        else:
            done += 1
    first_100 = sum(1 for p in golds_at if p <= 100)
    last_500 = sum(1 for p in golds_at if p > 500)
    assert golds_at[0] == 1 and 3 <= first_100 <= 8  # ~5% by 100 units
    assert last_500 <= 10 and last_500 / 500 < first_100 / 100  # ~1% by 1,000


@pytest.mark.parametrize(("blueprint", "task", "words"), [
    ({"use_screening_task": True, "block_qualification": "b"}, {"allowed_concurrent": 1},
     "passed_qualification_name"),
    ({**SCREENING, "max_screening_units": 2}, {"allowed_concurrent": 2}, "allowed_concurrent=1"),
    ({**SCREENING, "max_screening_units": 0}, {"allowed_concurrent": 1}, "above 0"),
    ({**SCREENING, "max_screening_units": 2, "use_golds": True}, {"allowed_concurrent": 1},
     "cannot be used together"),
    ({"use_golds": True, "max_gold_units": 3}, {"allowed_concurrent": 1},
     "gold_qualification_base"),
    ({**GOLDS, "max_gold_units": 0}, {"allowed_concurrent": 1}, "max_gold_units"),
])
def test_settings_that_cannot_work_are_refused_before_launch(
    launch_static_run: Any, blueprint: dict[str, Any], task: dict[str, Any], words: str
) -> None:
    state = SharedStaticTaskState(get_gold_for_worker=get_gold_factory([{"x": 1}]))
    with pytest.raises(ConfigError, match=words):
        launch_static_run(_data(2), shared_state=state, **task,
                          **{f"blueprint__{k}": v for k, v in blueprint.items()})


def test_a_gold_factory_gives_each_worker_every_gold_before_repeating() -> None:
    class W:
        db_id = "7"

    factory = get_gold_factory([{"g": 1}, {"g": 2}, {"g": 3}])
    seen = [factory(W())["g"] for _ in range(6)]  # type: ignore[arg-type]
    assert sorted(seen[:3]) == [1, 2, 3] and sorted(seen[3:]) == [1, 2, 3]


async def test_a_resumed_run_keeps_its_screening_units_apart_and_counted(
    task_html: Any, tmp_path: Any
) -> None:
    """A run that died with screening units made: resumed, the data continues where it
    stopped (their assignments are not data items), and they count toward the cap."""
    import asyncio

    from mephisto.operations.operator import Operator
    from mephisto.testing.fixtures import static_run_config

    db = MephistoDB(f"sqlite:///{tmp_path / 'resume.db'}")
    blueprint = {**SCREENING, "max_screening_units": 2}

    def config_and_state() -> tuple[dict[str, Any], SharedStaticTaskState]:
        state = SharedStaticTaskState(static_task_data=iter(_data(3)),  # read as needed
                                      screening_data_factory=_screening_data())
        state.on_unit_submitted = ScreenTaskRequired.create_validation_function(
            _args(blueprint), lambda unit: _answer(unit) == "cat")
        config = static_run_config(task_html, task_name="screened", resume_incomplete_run=True,
                                   allowed_concurrent=1, max_num_concurrent_units=2,
                                   **{f"blueprint__{k}": v for k, v in blueprint.items()})
        return config, state

    first, second = Operator(db), Operator(db)
    try:  # the first keeps running as a crashed process would
        run_id = await asyncio.to_thread(first.launch_task_run, *config_and_state())
        url = first._runs[run_id].url
        async with SimulatedWorker(url, "good") as good, SimulatedWorker(url, "holder") as holder:
            await good.request_agent()
            await good.submit({"answer": "cat"})
            held = await holder.request_agent()  # keeps its screening unit
        await first._runs[run_id].background.wait(timeout=5)
        assert await asyncio.to_thread(second.launch_task_run, *config_and_state()) == run_id
        resumed = second._runs[run_id]
        assert resumed.blueprint.screening_units_launched == 2
        assert resumed.pool.agent(held["agent_id"]) is not None
        async with SimulatedWorker(resumed.url, "newcomer") as newcomer:
            assert (await newcomer.request_agent())["failure_reason"] == NO_SCREENING_LEFT
        texts = []
        async with SimulatedWorker(resumed.url, "good") as good:
            for i in range(3):
                good.new_assignment(f"after-{i}")
                texts.append((await good.request_agent())["init_task_data"]["text"])
                await good.submit({"answer": "fine"})
        assert texts == ["real-0", "real-1", "real-2"]
        units = db.find_units(task_run_id=run_id)
        assert sorted(u.unit_index for u in units) == [-1, -1, 0, 0, 0]
    finally:
        second.shutdown()
        first.shutdown()
        db.shutdown()


async def test_golds_and_screening_units_stay_out_of_the_exported_dataset(
    launch_static_run: Any, mephisto_db: MephistoDB, tmp_path: Any
) -> None:
    import io
    import json

    from click.testing import CliRunner

    from mephisto.cli import cli
    from mephisto.tools.export import ExportFilter, export_units

    run = _gold_run(launch_static_run, n=3)
    async with SimulatedWorker(run.url, "steady") as steady:
        assert await _work(steady, mephisto_db, 3) == ["gold", "task", "task"]

    def exported(kinds: tuple[str, ...]) -> list[dict[str, Any]]:
        out = io.StringIO()
        export_units(mephisto_db, "jsonl", out, ExportFilter(kinds=kinds))
        return [json.loads(line) for line in out.getvalue().splitlines()]

    assert sorted(r["unit_kind"] for r in exported(())) == ["gold", "task", "task", "task"]
    assert next(r["inputs"]["text"] for r in exported(("gold",))).startswith("gold:")
    assert {r["unit_kind"] for r in exported(("task",))} == {"task"}

    url = mephisto_db.url
    result = CliRunner().invoke(cli, ["export", "--database", url])  # the dataset
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 3 and {r["unit_kind"] for r in lines} == {"task"}
    result = CliRunner().invoke(cli, ["export", "--database", url, "--kind", "all",
                                      "-o", str(tmp_path / "all.csv")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "all.csv").read_text().count("\n") == 5  # header + 4 units
    result = CliRunner().invoke(cli, ["export", "--database", url, "--kind", "golden"])
    assert result.exit_code == 2 and "golden" in result.output
