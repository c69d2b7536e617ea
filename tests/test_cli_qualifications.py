"""`mephisto qualifications list|grant|revoke|delete` through click's CliRunner, against
a real SQLite file (listing also on PostgreSQL), with the mock provider: each change is
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

from mephisto.abstractions.providers.mock import MockProvider
from mephisto.db import MephistoDB
from mephisto.errors import ProviderError
from mephisto.tools.qualify import list_qualifications


@pytest.fixture
def world(db: MephistoDB) -> World:
    """alice and bob work on a mock run; carol is a worker of mock and of mturk."""
    w = World(db)
    w.task_run("survey")
    w.unit("survey", "alice", "accepted")
    w.unit("survey", "bob", "completed")
    w.worker("carol", "mock")
    w.worker("carol", "mturk")
    return w


def grants(db: MephistoDB, name: str) -> dict[str, int]:
    """worker name -> value of qualification `name`."""
    [qual] = db.find_qualifications(qualification_name=name)
    return {db.get_worker(g.worker_id)["worker_name"]: g.value
            for g in db.check_granted_qualifications(qualification_id=qual.db_id)}


def qual_records(db: MephistoDB) -> dict[str, int]:
    """The mock provider's grants: "worker name:qualification" -> value."""
    out = {}
    for key, value in mock_records(db, "qualification").items():
        worker_id, name = key.split(":", 1)
        out[f"{db.get_worker(worker_id)['worker_name']}:{name}"] = value["value"]
    return out


# -- list ----------------------------------------------------------------------------------


def test_list_shows_workers_and_values_of_each_qualification(any_db: MephistoDB) -> None:
    w = World(any_db)
    alice, bob = w.worker("alice"), w.worker("bob")
    q1 = any_db.make_qualification("trusted")
    any_db.make_qualification("unused")
    w.worker("carol")
    any_db.grant_qualification(q1, alice, 1)
    any_db.grant_qualification(q1, bob, 7)
    any_db.make_qualification("zero")
    any_db.grant_qualification(any_db.find_qualifications("zero")[0].db_id, bob, 0)
    result = run(any_db, "qualifications", "list")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["trusted"][:3] == ["2", "1", "7"]
    assert table["unused"][:3] == ["0", "-", "-"]
    assert table["zero"][:3] == ["1", "0", "0"]
    assert len(table["trusted"][3]) == len("2026-01-01 00:00")
    mine = rows(run(any_db, "qualifications", "list", "--worker", "bob").output)
    assert set(mine) == {"trusted", "zero"}
    assert mine["trusted"][:4] == ["7", "2", "1", "7"] and mine["zero"][0] == "0"
    alices = rows(run(any_db, "qualifications", "list", "--worker", "alice").output)
    assert set(alices) == {"trusted"} and alices["trusted"][0] == "1"
    nobody = run(any_db, "qualifications", "list", "--worker", "carol")
    assert nobody.exit_code == 0 and "carol holds no qualifications" in flat(nobody)


def test_list_is_one_query_whatever_the_number_of_qualifications(any_db: MephistoDB) -> None:
    w = World(any_db)
    alice = w.worker("alice")
    for i in range(3):
        any_db.grant_qualification(any_db.make_qualification(f"q{i:02d}"), alice, i)
    with selects(any_db) as seen:
        assert len(list_qualifications(any_db)) == 3
    assert len(seen) == 1
    for i in range(3, 30):
        any_db.grant_qualification(any_db.make_qualification(f"q{i:02d}"), alice, i)
    with selects(any_db) as seen:
        lines = list_qualifications(any_db)
    assert len(seen) == 1
    assert [(x.name, x.workers, x.min_value) for x in lines[:2]] == [("q00", 1, 0), ("q01", 1, 1)]
    with selects(any_db) as seen:
        assert len(list_qualifications(any_db, worker_name="alice")) == 30
    assert len(seen) == 2  # the worker by name, then the list
    assert len(rows(run(any_db, "qualifications", "list").output)) == 30


def test_list_explains_an_unknown_or_ambiguous_worker(db: MephistoDB, world: World) -> None:
    result = run(db, "qualifications", "list", "--worker", "nobody")
    assert result.exit_code == 1 and "no worker named 'nobody'" in flat(result)
    result = run(db, "qualifications", "list", "--worker", "carol")
    assert result.exit_code == 2
    assert "'carol' is a worker of 'mock', 'mturk': choose one with --provider" in flat(result)
    result = run(db, "qualifications", "list", "--worker", "carol", "--provider", "mock")
    assert result.exit_code == 0 and "carol holds no qualifications" in flat(result)


# -- grant ---------------------------------------------------------------------------------


def test_grant_reaches_the_database_and_the_provider_once(db: MephistoDB, world: World) -> None:
    result = run(db, "qualifications", "grant", "trusted", "alice", "bob", "--value", "3",
                 "--create")
    assert result.exit_code == 0, result.output
    assert "Created qualification 'trusted'" in flat(result)
    assert "Granted 'trusted' (value 3) to alice (mock), bob (mock)" in flat(result)
    assert grants(db, "trusted") == {"alice": 3, "bob": 3}
    assert qual_records(db) == {"alice:trusted": 3, "bob:trusted": 3}
    again = run(db, "qualifications", "grant", "trusted", "alice", "--value", "-2")
    assert again.exit_code == 0, again.output
    assert grants(db, "trusted") == {"alice": -2, "bob": 3}
    assert qual_records(db) == {"alice:trusted": -2, "bob:trusted": 3}
    [alice] = db.find_workers("alice", "mock")
    reviews = db.find_worker_reviews(worker_id=alice.db_id)
    assert [(r["updated_qualification_value"], r["revoked_qualification_id"])
            for r in reviews] == [(3, None), (-2, None)]


def test_grant_to_a_name_of_several_providers_needs_the_provider(db: MephistoDB,
                                                                 world: World) -> None:
    db.make_qualification("trusted")
    result = run(db, "qualifications", "grant", "trusted", "carol", "--provider", "mock")
    assert result.exit_code == 0, result.output
    assert grants(db, "trusted") == {"carol": 1}
    [carol] = db.find_workers("carol", "mock")
    assert db.check_granted_qualifications(worker_id=carol.db_id)[0].value == 1


@pytest.mark.parametrize(("args", "code", "message"), [
    (["nope", "alice"], 1, ("no qualification named 'nope'; qualifications: 'trusted'; add "
                           "--create to make it. Nothing was changed")),
    (["trusted", "alice", "--value", "high"], 2,
     "a qualification value is an integer, such as 1 or 0; got 'high'"),
    (["trusted", "alice", "--value", "1.5"], 2, "got '1.5'"),
    (["trusted", "alice", "--value", "3000000000"], 2, "between -2147483648 and 2147483647"),
    (["trusted", "alice", "ghost", "bob", "phantom"], 1,
     "no worker named 'ghost', 'phantom'; nothing was changed"),
    (["trusted", "alice", "carol"], 2, ("'carol' is a worker of 'mock', 'mturk': choose one "
                                       "with --provider; nothing was changed")),
    (["trusted", "alice", "--provider", "mtruk"], 2, ("no provider type 'mtruk'; provider "
                                                     "types: 'inhouse', 'mock'")),
    (["new", "alice", "--value", "x", "--create"], 2, "got 'x'"),
    (["trusted", "alice", "--provider", "mturk"], 1,
     "no worker named 'alice' for provider 'mturk'"),
])
def test_grant_refuses_bad_input_and_changes_nothing(
        db: MephistoDB, world: World, args: list[str], code: int, message: str) -> None:
    db.make_qualification("trusted")
    before = snapshot(db)
    result = run(db, "qualifications", "grant", *args)
    assert result.exit_code == code, result.output
    assert message in flat(result)
    assert snapshot(db) == before


def test_a_provider_refusal_records_nothing(db: MephistoDB, world: World,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    db.make_qualification("trusted")
    real = MockProvider.grant_qualification

    def refuse_bob(self: MockProvider, worker: object, name: str, value: int) -> None:
        if getattr(worker, "worker_name", None) == "bob":
            raise ProviderError("mock", "the service is down")
        real(self, worker, name, value)  # type: ignore[arg-type]

    monkeypatch.setattr(MockProvider, "grant_qualification", refuse_bob)
    result = run(db, "qualifications", "grant", "trusted", "alice", "bob")
    assert result.exit_code == 1
    assert "Provider error: mock: the service is down (worker 'bob'; 1 worker(s) done on " \
           "the provider, nothing recorded here" in flat(result)
    assert grants(db, "trusted") == {}
    monkeypatch.setattr(MockProvider, "grant_qualification", real)
    assert run(db, "qualifications", "grant", "trusted", "alice", "bob").exit_code == 0
    assert qual_records(db) == {"alice:trusted": 1, "bob:trusted": 1}
    assert grants(db, "trusted") == {"alice": 1, "bob": 1}


def test_grant_without_a_known_account_is_recorded_here_with_a_warning(
        db: MephistoDB, world: World) -> None:
    """Two mock requesters: alice's account is her run's; dave never worked, so the
    provider is not told about him; an in-house worker's provider has no
    qualifications."""
    world.requester("second-mock", "mock")
    world.worker("dave")
    world.worker("erin", "inhouse")
    result = run(db, "qualifications", "grant", "trusted", "alice", "dave", "--create")
    assert result.exit_code == 0, result.output
    assert "mock was not told about 'dave' (granted here only): with 2 mock requesters " \
           "the account to use is not known, and the worker has no run" in flat(result)
    assert grants(db, "trusted") == {"alice": 1, "dave": 1}
    assert qual_records(db) == {"alice:trusted": 1}
    result = run(db, "qualifications", "grant", "trusted", "erin")
    assert result.exit_code == 0, result.output
    assert "inhouse has no qualifications of its own: granted here only" in flat(result)
    assert grants(db, "trusted") == {"alice": 1, "dave": 1, "erin": 1}


# -- revoke ------------------------------------------------------------------------------


def test_revoke_reaches_the_database_and_the_provider(db: MephistoDB, world: World) -> None:
    assert run(db, "qualifications", "grant", "trusted", "alice", "bob", "--create"
               ).exit_code == 0
    result = run(db, "qualifications", "revoke", "trusted", "bob")
    assert result.exit_code == 0, result.output
    assert "Revoked 'trusted' from bob (mock)" in flat(result)
    assert grants(db, "trusted") == {"alice": 1}
    assert qual_records(db) == {"alice:trusted": 1}
    [bob] = db.find_workers("bob", "mock")
    assert db.find_worker_reviews(worker_id=bob.db_id)[-1]["revoked_qualification_id"] \
        == db.find_qualifications("trusted")[0].db_id


@pytest.mark.parametrize(("args", "code", "message"), [
    (["trusted", "bob"], 1, "'bob' does not hold 'trusted'; nothing was changed"),
    (["nope", "alice"], 1, "no qualification named 'nope'"),
    (["trusted", "alice", "ghost"], 1, "no worker named 'ghost'"),
])
def test_revoke_refuses_bad_input_and_changes_nothing(
        db: MephistoDB, world: World, args: list[str], code: int, message: str) -> None:
    assert run(db, "qualifications", "grant", "trusted", "alice", "--create").exit_code == 0
    before = snapshot(db)
    result = run(db, "qualifications", "revoke", *args)
    assert result.exit_code == code, result.output
    assert message in flat(result)
    assert snapshot(db) == before


# -- delete --------------------------------------------------------------------------------


def test_delete_asks_first_then_removes_every_grant(db: MephistoDB, world: World) -> None:
    assert run(db, "qualifications", "grant", "trusted", "alice", "bob", "--create"
               ).exit_code == 0
    assert run(db, "qualifications", "grant", "other", "alice", "--create").exit_code == 0
    before = snapshot(db)
    declined = run(db, "qualifications", "delete", "trusted", stdin="n\n")
    assert declined.exit_code == 1
    assert "Delete qualification 'trusted', held by 2 worker(s)?" in flat(declined)
    assert snapshot(db) == before
    result = run(db, "qualifications", "delete", "trusted", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "Deleted qualification 'trusted' and 2 grant(s)" in flat(result)
    assert db.find_qualifications("trusted") == []
    assert qual_records(db) == {"alice:other": 1}
    assert run(db, "qualifications", "delete", "other", "--yes").exit_code == 0
    assert db.find_qualifications() == [] and qual_records(db) == {}
    assert db.check_granted_qualifications() == []


def test_delete_refuses_an_unknown_qualification(db: MephistoDB, world: World) -> None:
    db.make_qualification("trusted")
    before = snapshot(db)
    result = run(db, "qualifications", "delete", "trusted2", "--yes")
    assert result.exit_code == 1
    assert "no qualification named 'trusted2'; qualifications: 'trusted'" in flat(result)
    assert snapshot(db) == before


# -- a real provider's API (Prolific's, faked at the HTTP layer) ------------------------------


def test_grants_and_blocks_reach_prolific_groups(db: MephistoDB) -> None:
    """The only Prolific requester's account: a grant adds the participant to the
    qualification's group, a revocation removes them, a block adds them to the
    requester's block group."""
    import hashlib

    from prolific_fake import GOOD_KEY, FakeProlific

    from mephisto.abstractions.providers.prolific import ProlificProvider
    from mephisto.abstractions.providers.prolific.groups import qualification_group_name

    fake = FakeProlific()
    with fake.running():
        ProlificProvider.register_requester(db, "lab", {"api_key": GOOD_KEY})
        pid = hashlib.sha1(b"fay").hexdigest()[:24]
        World(db).worker(pid, "prolific")
        result = run(db, "qualifications", "grant", "trusted", pid, "--create", "--value", "2")
        assert result.exit_code == 0, result.output
        group = fake.group_named(qualification_group_name("trusted"))
        assert group is not None and fake.members[group["id"]] == [pid]
        assert run(db, "qualifications", "grant", "trusted", pid).exit_code == 0
        assert fake.members[group["id"]] == [pid]  # once
        assert run(db, "qualifications", "revoke", "trusted", pid).exit_code == 0
        assert fake.members[group["id"]] == []
        assert run(db, "workers", "block", pid, "--reason", "spam").exit_code == 0
        block = fake.group_named("Mephisto: blocked by lab")
        assert block is not None and fake.members[block["id"]] == [pid]
    assert not fake.unknown
