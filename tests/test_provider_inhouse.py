"""The in-house provider passes the provider contract (its "service" is its own records),
and its participant tokens refuse what they should: tampered, expired, another
requester's and malformed links, each with a message the page can show."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mephisto.abstractions.crowd_provider import CrowdProvider
from mephisto.abstractions.providers.inhouse import (
    PROVIDER_TYPE,
    InhouseProvider,
    anonymous_participants,
    links_for_run,
    make_links,
)
from mephisto.abstractions.providers.inhouse.provider import BLOCK, REVIEW
from mephisto.abstractions.providers.inhouse.tokens import (
    MAX_TOKEN_CHARS,
    _b64,
    _unb64,
    assignment_for_token,
    load_key,
    secret_path,
)
from mephisto.data_model.agent import Agent
from mephisto.data_model.requester import Requester
from mephisto.data_model.task_run import TaskRun
from mephisto.data_model.worker import Worker
from mephisto.db import batch
from mephisto.db.database import MephistoDB
from mephisto.errors import ForbiddenAction, MalformedRequest, ProviderError
from mephisto.testing.provider_contract import Arrival, CrowdHarness, ProviderContract
from mephisto.utils.args import Args


def provider_data(token: str) -> dict[str, str]:
    """What the in-house shim's getAgentRegistration sends for a link's token."""
    assignment = assignment_for_token(token)
    name = "unreadable-link"
    with contextlib.suppress(ValueError, IndexError):  # garbled: the shim's placeholder
        name = _unb64(token.split(".")[0]).decode().split(":", 3)[3]
    return {"worker_name": name, "assignment_id": assignment,
            "agent_registration_id": f"{assignment}-{name}", "provider_type": PROVIDER_TYPE,
            "token": token}


class InhouseHarness(CrowdHarness):
    provider_class = InhouseProvider

    def arrive(self, provider: CrowdProvider, unit_id: str, worker: str) -> Arrival:
        assert isinstance(provider, InhouseProvider)
        (link,) = make_links(provider.signing_key(), "https://tasks.example.org/", [worker])
        token = parse_qs(urlsplit(link.url).query)["token"][0]
        return Arrival(provider_data(token), {"token": token}, worker,
                       assignment_for_token(token))

    def decision(self, provider: CrowdProvider, agent: Agent) -> str | None:
        record = provider.db.get_provider_record(PROVIDER_TYPE, REVIEW, agent.db_id)
        return None if record is None else record["decision"]

    def blocked(self, provider: CrowdProvider, worker: Worker, requester: Requester) -> bool:
        key = f"{requester.db_id}:{worker.db_id}"
        return provider.db.get_provider_record(PROVIDER_TYPE, BLOCK, key) is not None


class TestInhouseProvider(ProviderContract):
    @pytest.fixture
    def harness(self) -> CrowdHarness:
        return InhouseHarness()


# -- tokens --------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MephistoDB]:
    database = MephistoDB(f"sqlite:///{tmp_path / 'inhouse.db'}")
    yield database
    database.shutdown()


def _provider(db: MephistoDB, requester_name: str = "lab") -> InhouseProvider:
    InhouseProvider.register_requester(db, requester_name, {})
    return InhouseProvider(db, Args.of({"provider": {"_provider_type": PROVIDER_TYPE,
                                                     "requester_name": requester_name}}))


def _token(provider: InhouseProvider, name: str = "alice", expires_in: float = 3600) -> str:
    return provider.signing_key().sign(name, time.time() + expires_in)


def test_a_valid_token_names_its_participant(db: MephistoDB) -> None:
    provider = _provider(db)
    token = _token(provider, "alice@example.org")
    assert provider.worker_name_from_registration(provider_data(token)) == "alice@example.org"
    assert provider.worker_name_from_request({"token": token}) == "alice@example.org"
    assert provider.worker_name_from_request({}) is None  # names nobody: not refused here


def test_the_longest_name_fits_the_servers_limit(db: MephistoDB) -> None:
    token = _token(_provider(db), "x" * 56)
    assert len(token) <= MAX_TOKEN_CHARS
    assert all(len(v) <= MAX_TOKEN_CHARS for v in provider_data(token).values())
    with pytest.raises(ValueError):
        _token(_provider(db), "x" * 57)


def test_a_tampered_token_is_refused(db: MephistoDB) -> None:
    provider = _provider(db)
    token = _token(provider, "alice")
    payload, mac = token.split(".")
    forged_payload = _b64(_unb64(payload).replace(b"alice", b"bobby"))
    flipped_mac = ("A" if mac[0] != "A" else "B") + mac[1:]
    for forged in (f"{forged_payload}.{mac}", f"{payload}.{flipped_mac}"):
        with pytest.raises(ForbiddenAction, match="it was changed"):
            provider.worker_name_from_registration(provider_data(forged))
        with pytest.raises(ForbiddenAction, match="it was changed"):
            provider.worker_name_from_request({"token": forged})
    # a later expiry written into the payload is a change too
    version, key_id, _expires, name = _unb64(payload).decode().split(":")
    extended = _b64(f"{version}:{key_id}:{int(time.time()) + 10**6}:{name}".encode())
    with pytest.raises(ForbiddenAction, match="it was changed"):
        provider.worker_name_from_registration(provider_data(f"{extended}.{mac}"))


def test_an_expired_token_is_refused_at_registration_only(db: MephistoDB) -> None:
    provider = _provider(db)
    token = _token(provider, "alice", expires_in=-1)
    with pytest.raises(ForbiddenAction, match=r"This link expired on \d{4}-\d\d-\d\d .* UTC"):
        provider.worker_name_from_registration(provider_data(token))
    # work begun before the expiry can still be submitted: requests are only identified
    assert provider.worker_name_from_request({"token": token}) == "alice"


def test_another_requesters_token_is_refused(db: MephistoDB) -> None:
    ours, theirs = _provider(db, "lab"), _provider(db, "other-lab")
    token = _token(theirs, "alice")
    with pytest.raises(ForbiddenAction, match="another requester"):
        ours.worker_name_from_registration(provider_data(token))
    with pytest.raises(ForbiddenAction, match="another requester"):
        ours.worker_name_from_request({"token": token})


@pytest.mark.parametrize("token", [
    "no-dot-at-all", "a.b", "abc.def.ghi", "x" * 200 + "." + "A" * 22,
    "!!!!." + "A" * 22, "A." + "A" * 22,  # cut, garbled or not base64
    _b64(b"just some bytes") + "." + "A" * 22,  # decodes, but no payload fields
    _b64(b"\xff\xfe:x:y:z") + "." + "A" * 22,  # not ASCII
    "AAB." + "A" * 22,  # non-canonical base64 (two bytes spelled like "AAA")
])
def test_a_malformed_token_is_refused(db: MephistoDB, token: str) -> None:
    provider = _provider(db)
    with pytest.raises(MalformedRequest, match="This link is not valid"):
        provider.worker_name_from_registration(provider_data(token))
    with pytest.raises(MalformedRequest):
        provider.worker_name_from_request({"token": token})


def test_a_missing_or_non_string_token_is_refused(db: MephistoDB) -> None:
    provider = _provider(db)
    with pytest.raises(MalformedRequest, match="personal link"):
        provider.worker_name_from_registration({"worker_name": "alice"})
    with pytest.raises(MalformedRequest):
        provider.worker_name_from_registration({"token": 12345})


def test_a_well_signed_token_of_an_unknown_shape_is_refused(db: MephistoDB) -> None:
    key = _provider(db).signing_key()
    payload = f"2:{key.key_id}:{int(time.time()) + 60}:alice".encode()  # a future version
    token = f"{_b64(payload)}.{_b64(key._mac(payload))}"
    with pytest.raises(MalformedRequest, match="content is unknown"):
        key.verify(token, now=time.time())


# -- the secret ------------------------------------------------------------------------------


def test_the_secret_is_a_private_file_never_in_the_database_or_logs(
    db: MephistoDB, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = _provider(db)
    path = secret_path("lab")
    assert path.parent == Path(os.environ["MEPHISTO_HOME"]) / "inhouse"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    secret_text = path.read_text().strip()
    secret = _unb64(secret_text)
    _token(provider)
    stored = Path(db.engine.url.database or "").read_bytes()
    assert secret not in stored and secret_text.encode() not in stored
    assert secret_text not in caplog.text
    assert secret_text not in repr(provider.signing_key())


def test_registering_again_keeps_the_secret_and_links_working(db: MephistoDB) -> None:
    provider = _provider(db)
    token = _token(provider)
    again = InhouseProvider.register_requester(db, "lab", {})
    assert again.db_id == provider.get_requester(db, provider.args).db_id
    fresh = InhouseProvider(db, provider.args)
    assert fresh.worker_name_from_registration(provider_data(token)) == "alice"


def test_a_readable_or_missing_secret_makes_the_requester_not_ready(db: MephistoDB) -> None:
    provider = _provider(db)
    requester = provider.get_requester(db, provider.args)
    assert provider.check_requester(requester).ready
    path = secret_path("lab")
    path.chmod(0o644)
    check = provider.check_requester(requester)
    assert not check.ready and "chmod 600" in check.message
    path.unlink()
    check = provider.check_requester(requester)
    assert not check.ready and "mephisto register inhouse name=lab" in check.message
    with pytest.raises(ProviderError, match="no signing secret"):
        InhouseProvider(db, provider.args).get_requester(db, provider.args)


def test_requester_names_are_checked(db: MephistoDB) -> None:
    with pytest.raises(ProviderError, match="requester name"):
        InhouseProvider.register_requester(db, "../escape", {})
    db.new_requester("mocked", "mock")
    with pytest.raises(ProviderError, match="already exists for the mock provider"):
        InhouseProvider.register_requester(db, "mocked", {})
    with pytest.raises(ProviderError, match="no in-house requester named 'nobody'"):
        InhouseProvider(db, Args.of({"provider": {"requester_name": "nobody"}})).get_requester(
            db, None)


def test_a_rotated_secret_ends_old_links(db: MephistoDB) -> None:
    provider = _provider(db)
    token = _token(provider)
    secret_path("lab").unlink()
    InhouseProvider.register_requester(db, "lab", {})
    assert load_key("lab").key_id != provider.signing_key().key_id
    with pytest.raises(ForbiddenAction):
        InhouseProvider(db, provider.args).worker_name_from_registration(provider_data(token))


# -- links -----------------------------------------------------------------------------------


def test_links_carry_a_token_with_the_default_expiry(db: MephistoDB) -> None:
    provider = _provider(db)
    now = time.time()
    links = make_links(provider.signing_key(), "http://localhost:3000/?lang=en",
                       ["alice", "bob", "alice"], now=now)
    assert [link.participant for link in links] == ["alice", "bob"]
    for link in links:
        query = parse_qs(urlsplit(link.url).query)
        assert link.url.startswith("http://localhost:3000/?lang=en&token=")
        assert query["lang"] == ["en"]
        claims = provider.signing_key().verify(query["token"][0], now=now)
        assert claims.participant == link.participant
        assert claims.expires_at == link.expires_at == int(now + 7 * 24 * 3600)
    with pytest.raises(ProviderError, match="participant name"):
        make_links(provider.signing_key(), "http://localhost:3000/", ["has space"])
    with pytest.raises(ProviderError, match="positive expiry"):
        make_links(provider.signing_key(), "http://localhost:3000/", ["a"], timedelta(0))
    with pytest.raises(ProviderError, match="not an http"):
        make_links(provider.signing_key(), "localhost:3000", ["a"])


def test_links_for_a_run_use_its_recorded_server(db: MephistoDB) -> None:
    provider = _provider(db)
    requester = provider.get_requester(db, provider.args)
    task_id = db.new_task("links-task", "mock")
    run = TaskRun(db, db.new_task_run(task_id, requester.db_id, "{}", PROVIDER_TYPE, "mock"))
    with pytest.raises(ProviderError, match="never served"):
        links_for_run(db, run.db_id, ["alice"])
    provider.setup_resources_for_task_run(run, provider.args, None, "http://127.0.0.1:4321/")
    (link,) = links_for_run(db, run.db_id, ["alice"], timedelta(hours=1))
    assert link.url.startswith("http://127.0.0.1:4321/?token=")
    # stopped: nothing stays open, and no links until it is served again
    units = [_Unit(u) for u in batch_units(db, run)]
    provider.launch_units(units, "http://127.0.0.1:4321/")
    provider.cleanup_resources_from_task_run(run, "http://127.0.0.1:4321/")
    assert provider.open_units(run) == []
    with pytest.raises(ProviderError, match="not being served"):
        links_for_run(db, run.db_id, ["alice"])
    provider.setup_resources_for_task_run(run, provider.args, None, "http://127.0.0.1:4322/")
    assert links_for_run(db, run.db_id, ["alice"])[0].url.startswith("http://127.0.0.1:4322/")
    db.update_task_run(run.db_id, is_completed=True)
    with pytest.raises(ProviderError, match="has finished"):
        links_for_run(db, run.db_id, ["alice"])
    names = anonymous_participants(5)
    assert len(set(names)) == 5 and all(n.startswith("p-") and len(n) == 10 for n in names)


@dataclass(frozen=True)
class _Unit:
    unit_id: str


def batch_units(db: MephistoDB, run: TaskRun) -> list[str]:
    created = batch.new_assignments_with_units(db, run.db_id, [{}] * 2, 0.5, status="launched")
    return [unit_ids[0] for _assignment, unit_ids in created]


def test_a_secret_that_cannot_be_written_is_a_provider_error(
    db: MephistoDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_folder = tmp_path / "home-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("MEPHISTO_HOME", str(not_a_folder))
    with pytest.raises(ProviderError, match="cannot write the signing secret"):
        InhouseProvider.register_requester(db, "lab", {})
