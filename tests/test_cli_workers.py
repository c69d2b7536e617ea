"""`mephisto workers list|show|block|unblock` through click's CliRunner, against a real
SQLite file (listing and showing also on PostgreSQL), with the mock provider: blocks are
in the database and in the mock's records exactly once; bad input changes nothing."""

# ruff: noqa: F811 -- tests take the fixtures imported from quality_world as parameters
from __future__ import annotations

import pytest
from cli_helpers import flat, rows, run, wide  # noqa: F401  (wide: an autouse fixture)
from quality_world import (  # noqa: F401  (any_db, db: fixtures)
    World,
    any_db,
    db,
    mock_records,
    selects,
    snapshot,
)

from mephisto.db import MephistoDB
from mephisto.tools.workers import list_workers


def make_world(db: MephistoDB) -> World:
    """survey (mock): alice 2 accepted, 1 rejected, 1 completed; bob 1 soft-rejected.
    label (mock): alice 1 accepted, carol 1 assigned. chat (mturk): alice 1 rejected."""
    w = World(db)
    w.task_run("survey")
    w.task_run("label")
    w.task_run("chat", "mturk")
    for status in ("accepted", "accepted", "rejected", "completed"):
        w.unit("survey", "alice", status, pay=0.5)
    w.unit("survey", "bob", "soft_rejected", pay=0.5)
    w.unit("label", "alice", "accepted", pay=2.0)
    w.unit("label", "carol", "assigned")
    w.unit("chat", "alice", "rejected")
    w.worker("idle")
    return w


@pytest.fixture
def world(db: MephistoDB) -> World:
    return make_world(db)


# -- list ------------------------------------------------------------------------------------


def test_list_shows_units_rate_blocks_and_qualifications(any_db: MephistoDB) -> None:
    w = make_world(any_db)
    [bob] = any_db.find_workers("bob", "mock")
    any_db.block_worker(bob.db_id, w.requester("req-mock", "mock"), "spam")
    q = any_db.make_qualification("trusted")
    any_db.grant_qualification(q, bob.db_id, 1)
    any_db.grant_qualification(any_db.make_qualification("fast"), bob.db_id, 0)
    result = run(any_db, "workers", "list")
    assert result.exit_code == 0, result.output
    table = {(k, v[0]): v[1:] for k, v in rows(result.output).items()}
    assert set(rows(result.output)) == {"alice", "bob", "carol", "idle"}
    #            done, approved, rejected, soft, rate, blocked, quals
    assert table[("bob", "mock")] == ["0", "0", "0", "1", "0%", "yes", "2"]
    assert table[("carol", "mock")] == ["0", "0", "0", "0", "-", "no", "0"]
    assert table[("idle", "mock")] == ["0", "0", "0", "0", "-", "no", "0"]
    lines = rows(run(any_db, "workers", "list", "--provider", "mock").output)
    assert lines["alice"] == ["mock", "1", "3", "1", "0", "75%", "no", "0"]
    mturk = rows(run(any_db, "workers", "list", "--provider", "mturk").output)
    assert mturk == {"alice": ["mturk", "0", "0", "1", "0", "0%", "no", "0"]}


def test_list_filters_by_task_and_blocked(any_db: MephistoDB) -> None:
    w = make_world(any_db)
    survey = rows(run(any_db, "workers", "list", "--task", "survey").output)
    assert set(survey) == {"alice", "bob"}
    assert survey["alice"] == ["mock", "1", "2", "1", "0", "67%", "no", "0"]
    [carol] = any_db.find_workers("carol", "mock")
    any_db.block_worker(carol.db_id, w.requester("req-mock", "mock"), "gone")
    assert set(rows(run(any_db, "workers", "list", "--blocked").output)) == {"carol"}
    none = run(any_db, "workers", "list", "--blocked", "--provider", "mturk")
    assert none.exit_code == 0 and "No workers match." in flat(none)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--task", "nope"], 2, "no task named 'nope'; tasks: 'survey', 'label', 'chat'"),
    (["--provider", "nope"], 2, "no provider type 'nope'; provider types: 'inhouse'"),
])
def test_list_explains_bad_filters(db: MephistoDB, world: World, args: list[str], code: int,
                                   message: str) -> None:
    result = run(db, "workers", "list", *args)
    assert result.exit_code == code, result.output
    assert message in flat(result)


def test_list_does_not_query_per_worker(any_db: MephistoDB) -> None:
    w = World(any_db)
    w.task_run("survey")
    req = w.requester("req-mock", "mock")
    q = any_db.make_qualification("trusted")

    def add_workers(start: int, stop: int) -> None:
        for i in range(start, stop):
            name = f"w{i:02d}"
            w.unit("survey", name, "accepted")
            [worker] = any_db.find_workers(name, "mock")
            any_db.grant_qualification(q, worker.db_id, i)
            if i % 2:
                any_db.block_worker(worker.db_id, req, "test")

    add_workers(0, 3)
    with selects(any_db) as seen:
        assert len(list_workers(any_db)) == 3
    assert len(seen) == 1
    add_workers(3, 30)
    with selects(any_db) as seen:
        lines = list_workers(any_db)
    assert len(seen) == 1 and len(lines) == 30
    assert sum(x.blocked for x in lines) == 15 and all(x.qualifications == 1 for x in lines)
    assert all(x.units["accepted"] == 1 for x in lines)
    with selects(any_db) as seen:
        assert len(list_workers(any_db, task_name="survey", blocked=True)) == 15
    assert len(seen) == 2  # the task by name, then the list
    assert len(rows(run(any_db, "workers", "list").output)) == 30


# -- show ------------------------------------------------------------------------------------


def test_show_gives_qualifications_blocks_units_rate_pay_and_reviews(any_db: MephistoDB) -> None:
    w = make_world(any_db)
    for _ in range(20):  # 20 more: only the latest 20 units are listed
        w.unit("label", "alice", "completed", pay=0.25)
    [alice] = any_db.find_workers("alice", "mock")
    q = any_db.make_qualification("trusted")
    any_db.grant_qualification(q, alice.db_id, 4)
    req = w.requester("req-mock", "mock")
    paid = any_db.new_payment(req, alice.db_id, "mock", 1.25, "thanks")
    any_db.update_payment(paid, "paid", provider_ref="x")
    failed = any_db.new_payment(req, alice.db_id, "mock", 9.0, "no")
    any_db.update_payment(failed, "failed", error="down")
    assert run(any_db, "workers", "block", "alice", "--reason", "too fast",
               "--provider", "mock").exit_code == 0
    result = run(any_db, "workers", "show", "alice", "--provider", "mock")
    assert result.exit_code == 0, result.output
    text = flat(result)
    # rewards: two accepted at $0.50 and one at $2.00; bonuses: the paid one only
    assert "alice (mock, worker " in text
    assert "25 unit(s): 21 completed, 3 accepted, 1 rejected; approval rate 75%" in text
    assert "paid $4.25 ($3.00 rewards, $1.25 in 1 bonus(es))" in text
    table = rows(result.output)
    assert table["trusted"][0] == "4"
    assert table["req-mock"][0] == "too fast"
    assert "latest units (20 of 25)" in text
    units = [k for k, v in table.items() if len(v) == 5]
    assert len(units) == 20 and all(table[u][:3] == ["label", w.runs["label"]["run_id"],
                                                     "completed"] for u in units)
    assert "reviews (1 of 1)" in text and "blocked" in text
    assert run(any_db, "workers", "show", "alice").exit_code == 2


def test_show_of_a_worker_with_nothing(any_db: MephistoDB) -> None:
    World(any_db).worker("idle")
    result = run(any_db, "workers", "show", "idle")
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "0 unit(s): none; approval rate -; paid $0.00" in text
    for what in ("qualifications", "blocks", "latest units", "reviews"):
        assert f"No {what}." in text
    missing = run(any_db, "workers", "show", "nobody")
    assert missing.exit_code == 1 and "no worker named 'nobody'" in flat(missing)
    assert "nothing was changed" not in flat(missing)  # said only of changes


# -- block and unblock -------------------------------------------------------------------------


def test_block_and_unblock_reach_the_database_and_the_provider_once(db: MephistoDB,
                                                                    world: World) -> None:
    [bob] = db.find_workers("bob", "mock")
    req = world.requester("req-mock", "mock")
    result = run(db, "workers", "block", "bob", "--reason", "copied answers")
    assert result.exit_code == 0, result.output
    assert "Blocked bob (mock) for requester req-mock (the provider too)." in flat(result)
    assert db.is_worker_blocked(bob.db_id, req)
    assert mock_records(db, "block") == {f"{req}:{bob.db_id}": {"reason": "copied answers"}}
    again = run(db, "workers", "block", "bob", "--reason", "still copying")
    assert again.exit_code == 0
    assert mock_records(db, "block") == {f"{req}:{bob.db_id}": {"reason": "still copying"}}
    reviews = db.find_worker_reviews(worker_id=bob.db_id)
    assert [(r["blocked_worker"], r["review_note"]) for r in reviews] == [
        (True, "copied answers"), (True, "still copying")]
    result = run(db, "workers", "unblock", "bob", "--requester", "req-mock")
    assert result.exit_code == 0, result.output
    assert "Unblocked bob (mock) for requester req-mock (the provider too)." in flat(result)
    assert not db.is_worker_blocked(bob.db_id) and mock_records(db, "block") == {}
    assert db.find_worker_reviews(worker_id=bob.db_id)[-1]["unblocked_worker"]


def test_block_with_several_requesters_names_one(db: MephistoDB, world: World) -> None:
    other = world.requester("req-mock-2", "mock")
    world.requester("req-inhouse", "inhouse")
    before = snapshot(db)
    result = run(db, "workers", "block", "bob", "--reason", "spam")
    assert result.exit_code == 2
    assert ("there are several mock requesters: choose one with --requester: 'req-mock', "
            "'req-mock-2'") in flat(result)
    assert snapshot(db) == before
    result = run(db, "workers", "block", "bob", "--reason", "spam", "--requester", "req-mock-2")
    assert result.exit_code == 0, result.output
    [bob] = db.find_workers("bob", "mock")
    assert db.is_worker_blocked(bob.db_id, other)
    assert not db.is_worker_blocked(bob.db_id, world.requester("req-mock", "mock"))
    assert list(mock_records(db, "block")) == [f"{other}:{bob.db_id}"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["block", "ghost", "--reason", "x"], 1, "no worker named 'ghost'; nothing was changed"),
    (["block", "bob", "--reason", "  "], 2, "a block needs a reason"),
    (["block", "bob"], 2, "Missing option '--reason'"),
    (["block", "bob", "--reason", "x" * 2001], 2, "the reason is 2001 characters; at most 2000"),
    (["block", "bob", "--reason", "x", "--requester", "nope"], 1,
     "no requester named 'nope'; mock requesters: 'req-mock'"),
    (["block", "bob", "--reason", "x", "--requester", "req-mturk"], 2,
     "requester 'req-mturk' is a mturk requester and 'bob' a mock worker"),
    (["block", "alice", "--reason", "x"], 2,
     "'alice' is a worker of 'mock', 'mturk': choose one with --provider"),
    (["block", "idle", "--reason", "x", "--provider", "inhouse"], 1,
     "no worker named 'idle' for provider 'inhouse'"),
    (["unblock", "bob"], 1, ("worker 'bob' is not blocked by requester 'req-mock'; nothing "
                            "was changed")),
    (["unblock", "ghost"], 1, "no worker named 'ghost'"),
])
def test_block_and_unblock_refuse_bad_input_and_change_nothing(
        db: MephistoDB, world: World, args: list[str], code: int, message: str) -> None:
    before = snapshot(db)
    result = run(db, "workers", *args)
    assert result.exit_code == code, result.output
    assert message in flat(result)
    assert snapshot(db) == before


def test_block_needs_a_requester_of_the_workers_provider(db: MephistoDB) -> None:
    World(db).worker("dana", "inhouse")
    before = snapshot(db)
    result = run(db, "workers", "block", "dana", "--reason", "x")
    assert result.exit_code == 2
    assert "there is no inhouse requester to block 'dana' for: register one with " \
           "`mephisto register inhouse name=...`" in flat(result)
    assert snapshot(db) == before


# -- a real provider's API (MTurk's, faked behind real boto3 clients) ------------------------


def test_grants_and_blocks_reach_the_mturk_account_of_the_workers_run(db: MephistoDB) -> None:
    """Two sandbox requesters: a grant goes to the account of the worker's latest run;
    a worker who never worked is granted here only, with a warning; a block goes to
    the account of the requester named."""
    from mephisto.abstractions.providers.mturk.mturk_provider import SandboxMTurkProvider
    from mephisto.testing.fake_mturk import FakeMTurk

    one, two = ("AKIAFAKEMTURKKEY0001", "fake/Secret+Key/0001abcdefghijklmnopqrst"), \
        ("AKIAFAKEMTURKKEY0002", "fake/Secret+Key/0002abcdefghijklmnopqrst")
    fake = FakeMTurk(accounts=dict([one, two]))
    with fake.installed():
        for name, (key, secret) in (("one", one), ("two", two)):
            SandboxMTurkProvider.register_requester(
                db, name, {"access_key_id": key, "secret_access_key": secret})
        w = World(db)
        w.task_run("hits", "mturk_sandbox", requester="two_sandbox")
        w.unit("hits", "A1WORKER", "accepted")
        w.worker("A2IDLE", "mturk_sandbox")
        result = run(db, "qualifications", "grant", "trusted", "A1WORKER", "A2IDLE",
                     "--create", "--value", "5")
        assert result.exit_code == 0, result.output
        assert "mturk_sandbox was not told about 'A2IDLE' (granted here only)" in flat(result)
        account = fake.account(two[0], sandbox=True)
        type_id = account.qualification_type_named("trusted")
        assert type_id is not None and account.scores == {(type_id, "A1WORKER"): 5}
        before = snapshot(db)
        refused = run(db, "workers", "block", "A1WORKER", "--reason", "spam")
        assert refused.exit_code == 2 and "'one_sandbox', 'two_sandbox'" in flat(refused)
        assert snapshot(db) == before
        result = run(db, "workers", "block", "A1WORKER", "--reason", "spam",
                     "--requester", "two_sandbox")
        assert result.exit_code == 0, result.output
        assert account.blocks == {"A1WORKER": "spam"}
        with pytest.raises(LookupError):  # the other account was never called
            fake.account(one[0])


def test_a_provider_without_blocks_or_qualifications_is_not_asked(
        db: MephistoDB, monkeypatch: pytest.MonkeyPatch) -> None:
    from mephisto.abstractions.crowd_provider import CrowdProvider
    from mephisto.operations import registry

    class QuietProvider(CrowdProvider):
        PROVIDER_TYPE = "quiet"

        def block_worker(self, *args: object) -> None:
            raise AssertionError("asked to block")

        def grant_qualification(self, *args: object) -> None:
            raise AssertionError("asked to grant")

    monkeypatch.setitem(registry._registered["provider"], "quiet", QuietProvider)
    w = World(db)
    req = w.requester("req-quiet", "quiet")
    quiet = w.worker("qwen", "quiet")
    result = run(db, "workers", "block", "qwen", "--reason", "spam")
    assert result.exit_code == 0, result.output
    assert "Blocked qwen (quiet) for requester req-quiet." in flat(result)
    assert "Warning: quiet has no blocks of its own: blocked for this requester's runs " \
           "here only" in flat(result)
    assert db.is_worker_blocked(quiet, req)
    result = run(db, "qualifications", "grant", "trusted", "qwen", "--create")
    assert result.exit_code == 0, result.output
    assert "quiet has no qualifications of its own: granted here only" in flat(result)
    assert db.check_granted_qualifications(worker_id=quiet)[0].value == 1
    assert mock_records(db, "block") == {} and mock_records(db, "qualification") == {}
