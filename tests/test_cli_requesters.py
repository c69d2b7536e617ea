"""`mephisto register`, `requesters`, `check` and `links` through click's CliRunner, on a
real SQLite database (conftest isolates MEPHISTO_HOME and MEPHISTO_DATA_DIR), with the
mock and in-house providers and a provider that takes secrets (registered at run time,
as a run script's would be)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result

from mephisto.abstractions.crowd_provider import CrowdProvider, RequesterCheck
from mephisto.abstractions.providers.inhouse import InhouseProvider
from mephisto.abstractions.providers.inhouse.tokens import load_key, secret_path
from mephisto.cli import cli
from mephisto.data_model.requester import Requester
from mephisto.data_model.task_run import TaskRun
from mephisto.db import MephistoDB
from mephisto.errors import ProviderError
from mephisto.operations import registry
from mephisto.utils.args import Args

SECRET = "TOPSECRET-4f9a2c"  # what the vault provider takes as its api_key


class VaultProvider(CrowdProvider):
    """A provider whose service takes an API key: kept in a file of the user's (as a
    real provider keeps it where its service does), never in the database."""

    PROVIDER_TYPE = "vault"

    @staticmethod
    def _file(name: str) -> Path:
        return Path(os.environ["MEPHISTO_HOME"]) / f"vault-{name}"

    @classmethod
    def register_requester(
        cls, db: MephistoDB, requester_name: str, credentials: Mapping[str, str]
    ) -> Requester:
        if set(credentials) != {"api_key"}:
            raise ProviderError("vault", "needs api_key=<your key> and nothing else")
        if len(credentials["api_key"]) < 8:
            raise ProviderError("vault", "the service refused this api_key: copy it again "
                                         "from your account page")
        logging.getLogger("vault").info("registering %s", requester_name)
        path = cls._file(requester_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(credentials["api_key"])
        return Requester(db, db.new_requester(requester_name, "vault"))

    def check_requester(self, requester: Requester) -> RequesterCheck:
        if self._file(requester.requester_name).exists():
            return RequesterCheck(True, "ready (key found)", balance=12.5)
        return RequesterCheck(False, "no key: register again")


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._registered["provider"], "vault", VaultProvider)


@pytest.fixture
def db() -> Iterator[MephistoDB]:
    """The database the CLI opens (the default one of the isolated data directory)."""
    database = MephistoDB()
    yield database
    database.shutdown()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def flat(result: Result) -> str:
    """Everything the command wrote, with rich's line wrapping undone."""
    return re.sub(r"\s+", " ", result.output)


# -- register --------------------------------------------------------------------------


def test_register_inhouse_creates_the_requester_and_its_secret(db: MephistoDB) -> None:
    result = run("register", "inhouse", "name=lab")
    assert result.exit_code == 0, result.output
    assert "Registered requester lab for inhouse: ready" in flat(result)
    (requester,) = db.find_requesters(requester_name="lab")
    assert requester.provider_type == "inhouse"
    secret = secret_path("lab").read_text().strip()
    assert secret not in result.output
    again = run("register", "inhouse", "name=lab")  # registering again keeps the secret
    assert again.exit_code == 0 and secret_path("lab").read_text().strip() == secret


def test_register_works_for_any_registered_provider_and_never_prints_a_secret(
    vault: None, db: MephistoDB, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run("register", "vault", "name=v1", f"api_key={SECRET}")
    assert result.exit_code == 0, result.output
    assert "Registered requester v1 for vault: ready" in flat(result)
    assert db.find_requesters(requester_name="v1")[0].provider_type == "vault"
    refused = run("register", "vault", "name=v2", "api_key=short")
    assert refused.exit_code == 1
    assert "Provider error: vault: the service refused this api_key" in flat(refused)
    assert SECRET not in result.output + refused.output + caplog.text
    assert "short" not in refused.output
    stored = Path(db.engine.url.database or "").read_bytes()
    assert SECRET.encode() not in stored


def test_register_mock_refuses_credentials_naming_only_their_keys() -> None:
    result = run("register", "mock", "name=m", f"api_key={SECRET}")
    assert result.exit_code == 1
    assert "Provider error: mock: the mock provider takes no credentials; got api_key" \
        in flat(result)
    assert SECRET not in result.output
    assert run("register", "mock", "name=m").exit_code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["register", "nosuch", "name=x"], "Unknown provider type 'nosuch'. Valid provider types:"),
    (["register", "inhouse"], "give the requester's name as name=<requester name>"),
    (["register", "inhouse", "name="], "name has an empty value"),
    (["register", "mock", "name=a", "name=b"], "name is given twice"),
    (["register", "mock", "name=a", SECRET], "argument 2 is not key=value"),
    (["register", "mock", "name=a", f"=value{SECRET}"], "argument 2 is not key=value"),
])
def test_register_explains_bad_arguments_without_echoing_them(
    args: list[str], message: str
) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Config error:" in result.output and message in flat(result)
    assert SECRET not in result.output
    assert "Traceback" not in result.output


def test_register_refuses_a_name_taken_by_another_provider() -> None:
    assert run("register", "mock", "name=shared").exit_code == 0
    result = run("register", "inhouse", "name=shared")
    assert result.exit_code == 1
    assert "already exists for the mock provider" in flat(result)


# -- requesters and check ------------------------------------------------------------------


def test_requesters_lists_each_with_its_readiness(vault: None) -> None:
    assert run("requesters").output.startswith("No requesters yet")
    for args in (["inhouse", "name=lab"], ["mock", "name=m"],
                 ["vault", "name=v", f"api_key={SECRET}"]):
        assert run("register", *args).exit_code == 0
    secret = secret_path("lab").read_text().strip()
    secret_path("lab").chmod(0o644)  # now readable by others: not ready
    result = run("requesters")
    assert result.exit_code == 0, result.output
    rows = {m[0]: m[1:] for m in re.findall(r"│ (\S+)\s*│ (\S+)\s*│ (\S+)\s*│", result.output)}
    assert rows["lab"] == ("inhouse", "no")
    assert rows["m"] == ("mock", "yes")
    assert rows["v"] == ("vault", "yes")
    assert "chmod 600" in flat(result)
    assert secret not in result.output and SECRET not in result.output


def test_requesters_survive_a_provider_that_is_not_installed(db: MephistoDB) -> None:
    db.new_requester("gone", "uninstalled_provider")
    result = run("requesters")
    assert result.exit_code == 0, result.output
    rows = {m[0]: m[1:] for m in re.findall(r"│ (\S+)\s*│ (\S+)\s*│ (\S+)\s*│", result.output)}
    assert rows["gone"] == ("uninstalled_provider", "no")
    assert "Unknown provider" in flat(result)  # the registry's message, in a wrapped cell


def test_check_shows_one_line_per_requester() -> None:
    result = run("check")
    assert result.exit_code == 0, result.output
    assert "requesters" in result.output and "none" in result.output
    assert run("register", "inhouse", "name=lab").exit_code == 0
    secret = secret_path("lab").read_text().strip()
    result = run("check")
    assert result.exit_code == 0, result.output
    assert re.search(r"requester lab\s*│ ready\s*│ inhouse: links are signed", result.output)
    assert secret not in result.output


# -- links -------------------------------------------------------------------------------


def _tokens(output: str) -> dict[str, str]:
    pairs = [line.split("\t") for line in output.splitlines() if "\t" in line]
    return {name: parse_qs(urlsplit(url).query)["token"][0] for name, url in pairs}


def test_links_for_a_url_are_signed_by_the_requester() -> None:
    assert run("register", "inhouse", "name=lab").exit_code == 0
    result = run("links", "--url", "http://localhost:3000/", "--requester", "lab",
                 "--days", "2", "--count", "2", "alice", "bob")
    assert result.exit_code == 0, result.output
    tokens = _tokens(result.output)
    assert list(tokens)[:2] == ["alice", "bob"] and len(tokens) == 4
    key = load_key("lab")
    for name, token in tokens.items():
        claims = key.verify(token, now=time.time())
        assert claims.participant == name
        assert abs(claims.expires_at - (time.time() + 2 * 86400)) < 60
    assert "4 participant link(s), signed by requester lab, valid until" in flat(result)


def test_links_for_a_run_use_its_server(db: MephistoDB) -> None:
    requester = InhouseProvider.register_requester(db, "lab", {})
    args = Args.of({"provider": {"_provider_type": "inhouse", "requester_name": "lab"}})
    task_id = db.new_task("cli-links", "static_task")
    task_run = TaskRun(db, db.new_task_run(task_id, requester.db_id, "{}", "inhouse",
                                           "static_task"))
    InhouseProvider(db, args).setup_resources_for_task_run(
        task_run, args, None, "http://127.0.0.1:4567/")
    result = run("links", "--run", task_run.db_id, "carol")
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "\t" in x]
    assert line.startswith("carol\thttp://127.0.0.1:4567/?token=")


@pytest.mark.parametrize(("args", "code", "message"), [
    (["links", "alice"], 2, "give either --run RUN_ID or --url URL --requester NAME"),
    (["links", "--url", "http://h/", "alice"], 2, "--url needs --requester"),
    (["links", "--run", "1", "--url", "http://h/", "alice"], 2, "give either --run"),
    (["links", "--url", "http://h/", "--requester", "lab"], 2, "name the participants"),
    (["links", "--url", "http://h/", "--requester", "lab", "--days", "0", "a"], 2,
     "--days must be more than 0"),
    (["links", "--url", "http://h/", "--requester", "nobody", "a"], 1,
     "Provider error: inhouse: requester 'nobody' has no signing secret"),
    (["links", "--url", "http://h/", "--requester", "lab", "two words"], 1,
     "participant name 'two words' must be"),
    (["links", "--run", "999", "a"], 1, "Error:"),
])
def test_links_explain_what_is_wrong(args: list[str], code: int, message: str) -> None:
    assert run("register", "inhouse", "name=lab").exit_code == 0
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in flat(result)
    assert "Traceback" not in result.output


def test_links_refuse_a_run_of_another_provider(db: MephistoDB) -> None:
    requester = db.new_requester("m", "mock")
    task_id = db.new_task("mock-task", "static_task")
    run_id = db.new_task_run(task_id, requester, "{}", "mock", "static_task")
    result = run("links", "--run", run_id, "alice")
    assert result.exit_code == 1
    assert f"task run {run_id} uses the mock provider, not inhouse" in flat(result)



def test_inhouse_demo_checks_its_participants_before_launching(db: MephistoDB) -> None:
    result = run("inhouse-demo", "--participants", "alice,not ok", "--port", "0")
    assert result.exit_code == 2
    assert "participant name 'not ok' must be" in flat(result)
    assert db.find_task_runs() == []
