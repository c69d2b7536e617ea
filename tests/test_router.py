"""The task router (`mephisto router`) in its own process, the operator dialling in
with the `remote` architect: runs complete through it, nothing acknowledged is lost
when the router or the link dies, and tokens are checked."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from waits import wait_for

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.db import MephistoDB
from mephisto.errors import ConfigError, RouterError, TokenRefused
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.router import RouterProcess, router_process
from mephisto.tools.data_browser import DataBrowser


def _data(n: int) -> list[dict[str, str]]:
    return [{"text": f"item-{i}"} for i in range(n)]


def remote_config(task_html: Path, router: RouterProcess, **task: Any) -> dict[str, Any]:
    config = static_run_config(task_html, **task)
    config["architect"] = {"_architect_type": "remote", "router_url": router.url,
                           "connect_timeout": 20}
    return config


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with router_process(tmp_path / "router") as proc:
        monkeypatch.setenv("MEPHISTO_ROUTER_TOKEN", proc.token())
        yield proc


def test_a_run_completes_through_a_router(operator: Operator, mephisto_db: MephistoDB,
                                          task_html: Path, router: RouterProcess) -> None:
    from mephisto.testing.worker import run_simulated_workers_sync

    task_run_id = operator.launch_task_run(
        remote_config(task_html, router), SharedStaticTaskState(static_task_data=_data(20)))
    live = operator._runs[task_run_id]
    assert live.url == router.url
    assert router.status()["operator"] is True
    # the run's /metrics is the operator's, asked through the router, token checked there
    from mephisto.operations.live_record import read_live_record
    from mephisto.tools.run_metrics import scrape

    record = read_live_record(task_run_id)
    assert record is not None and record.url == router.url
    token = Path(record.metrics_token_file).read_text().strip()
    for given in (None, "Bearer wrong", f"Bearer {token}x"):
        refused = httpx.get(router.url + "metrics",
                            headers={"Authorization": given} if given else {})
        assert refused.status_code == 401 and token not in refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
    assert httpx.post(router.url + "metrics").status_code == 405
    before = scrape(task_run_id)
    assert before.problem is None and before.samples is not None
    assert before.samples[("mephisto_units", frozenset(
        {("task_run_id", task_run_id), ("status", "launched")}))] == 20
    # the requests the router answers are timed there and told to the operator
    assert httpx.get(router.url + "task_config.json").status_code == 200
    config_count = ("mephisto_request_seconds_count", frozenset(
        {("task_run_id", task_run_id), ("endpoint", "task_config")}))
    wait_for(lambda: (scrape(task_run_id).samples or {}).get(config_count) == 1,
             "the router's timing in the operator's metrics", 10)
    stats = run_simulated_workers_sync(router.url, 5, browser_like=True,
                                       answer_fn=lambda w: {"answer": w.init_data["text"]})
    assert live.done_sync.wait(30)
    assert stats.units_completed == 20
    assert mephisto_db.get_unit_status_counts(task_run_id) == {"completed": 20}
    results = DataBrowser(mephisto_db).load_results(task_run_id=task_run_id)
    assert sorted(r["data"]["outputs"]["answer"] for r in results) == sorted(
        d["text"] for d in _data(20))


# -- nothing acknowledged is lost ------------------------------------------------------


class Acks:
    """Simulated workers that keep going through outages (retrying 503s and refused
    connections, as the real client and a person clicking again do) and remember every
    submit the server acknowledged."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.errors: list[str] = []

    async def worker(self, url: str, name: str, stop_after: int = 1000) -> None:
        from mephisto.testing.worker import SimulatedWorker, SimulatedWorkerError

        async with SimulatedWorker(url, name) as worker:
            worker.retry_for = 60
            worker.retry_delay = 0.05
            for _ in range(stop_after):
                worker.new_assignment()
                try:
                    await worker.request_agent()
                    if worker.agent_id is None:
                        return
                    await worker.submit({"answer": worker.init_data["text"]})
                except SimulatedWorkerError as exc:
                    self.errors.append(f"{name}: {exc}")
                    return
                self.acked.append(worker.agent_id)

    def run(self, url: str, workers: int) -> threading.Thread:
        async def main() -> None:
            await asyncio.gather(*(self.worker(url, f"w{i}") for i in range(workers)))

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        return thread


def _completed_agents(db: MephistoDB, task_run_id: str) -> set[str]:
    return {a.db_id for a in db.find_agents(task_run_id=task_run_id, status="completed")}


def test_router_killed_mid_run_loses_no_acknowledged_submit(
        operator: Operator, mephisto_db: MephistoDB, task_html: Path,
        router: RouterProcess) -> None:
    task_run_id = operator.launch_task_run(
        remote_config(task_html, router), SharedStaticTaskState(static_task_data=_data(60)))
    live = operator._runs[task_run_id]
    acks = Acks()
    thread = acks.run(router.url, 6)
    wait_for(lambda: len(acks.acked) >= 15, "15 acknowledged submits", 30)
    router.restart()  # SIGKILL mid-run, then the same port again
    wait_for(lambda: len(acks.acked) >= 30, "30 acknowledged submits", 30)
    router.restart()
    thread.join(90)
    assert not thread.is_alive()
    assert acks.errors == []
    assert live.done_sync.wait(30)
    completed = _completed_agents(mephisto_db, task_run_id)
    assert set(acks.acked) <= completed  # everything acknowledged was stored
    assert len(set(acks.acked)) == len(acks.acked)
    assert mephisto_db.get_unit_status_counts(task_run_id) == {"completed": 60}


def test_operator_link_cut_mid_run_answers_503_then_recovers(
        operator: Operator, mephisto_db: MephistoDB, task_html: Path,
        router: RouterProcess) -> None:
    from mephisto.testing.tcp_proxy import TcpProxy

    with TcpProxy([("127.0.0.1", router.port)]) as link_proxy:
        config = remote_config(task_html, router)
        config["architect"]["operator_urls"] = link_proxy.url
        task_run_id = operator.launch_task_run(
            config, SharedStaticTaskState(static_task_data=_data(60)))
        live = operator._runs[task_run_id]
        acks = Acks()
        thread = acks.run(router.url, 6)
        wait_for(lambda: len(acks.acked) >= 15, "15 acknowledged submits", 30)
        link_proxy.refuse(True)
        assert link_proxy.cut() >= 1
        wait_for(lambda: not router.status()["operator"], "the operator gone", 30)
        # while the operator is out of reach the router answers 503 with Retry-After
        answer = httpx.post(router.url + "request_agent", json={"provider_data": {}})
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "2"
        assert "operator" in answer.json()["error"]
        metrics = httpx.get(router.url + "metrics", headers={"Authorization": "Bearer x"})
        assert (metrics.status_code, metrics.headers["Retry-After"]) == (503, "2")
        held = len(acks.acked)
        time.sleep(0.5)
        assert len(acks.acked) <= held + 6  # only answers already on their way
        link_proxy.refuse(False)
        thread.join(90)
        assert not thread.is_alive()
    assert acks.errors == []
    assert live.done_sync.wait(30)
    assert set(acks.acked) <= _completed_agents(mephisto_db, task_run_id)
    assert mephisto_db.get_unit_status_counts(task_run_id) == {"completed": 60}


# -- tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["foreign", "expired", "malformed"])
def test_a_bad_operator_token_is_refused(operator: Operator, task_html: Path,
                                         router: RouterProcess, which: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mephisto.router.auth import mint_token, new_secret

    token = {"foreign": mint_token(new_secret()),
             "expired": mint_token(router.secret, -1),
             "malformed": "not-a-token"}[which]
    monkeypatch.setenv("MEPHISTO_ROUTER_TOKEN", token)
    with pytest.raises(TokenRefused) as refused:
        operator.launch_task_run(remote_config(task_html, router),
                                 SharedStaticTaskState(static_task_data=_data(2)))
    assert {"foreign": "not signed by this router's secret", "expired": "expired",
            "malformed": "malformed"}[which] in str(refused.value)
    assert router.status()["operator"] is False
    assert operator.get_running_task_runs() == {}


def test_no_token_is_a_config_error(operator: Operator, task_html: Path,
                                    router: RouterProcess,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEPHISTO_ROUTER_TOKEN")
    with pytest.raises(ConfigError, match="MEPHISTO_ROUTER_TOKEN"):
        operator.launch_task_run(remote_config(task_html, router),
                                 SharedStaticTaskState(static_task_data=_data(2)))


def test_an_unreachable_router_fails_the_launch_clearly(operator: Operator, task_html: Path,
                                                        router: RouterProcess) -> None:
    config = remote_config(task_html, router)
    router.kill()
    config["architect"]["connect_timeout"] = 1
    with pytest.raises(RouterError, match="could not reach the router"):
        operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(2)))


# -- several routers, live tasks -----------------------------------------------------


def test_two_routers_behind_a_balancer_serve_one_run(
        operator: Operator, mephisto_db: MephistoDB, task_html: Path, tmp_path: Path,
        router: RouterProcess) -> None:
    from mephisto.testing.tcp_proxy import TcpProxy
    from mephisto.testing.worker import run_simulated_workers_sync

    second = RouterProcess(tmp_path / "router-2", router.secret).start()
    try:
        with TcpProxy([("127.0.0.1", router.port), ("127.0.0.1", second.port)]) as balancer:
            config = remote_config(task_html, router)
            config["architect"]["router_url"] = balancer.url
            config["architect"]["operator_urls"] = f"{router.url},{second.url}"
            task_run_id = operator.launch_task_run(
                config, SharedStaticTaskState(static_task_data=_data(40)))
            live = operator._runs[task_run_id]
            assert live.url == balancer.url
            assert router.status()["operator"] and second.status()["operator"]
            stats = run_simulated_workers_sync(balancer.url, 8, browser_like=True)
            assert live.done_sync.wait(30)
            assert stats.errors == []
            # every new browser is a new connection: the balancer spread them over both
            assert sum(balancer.per_target) >= 48 and min(balancer.per_target) >= 20
    finally:
        second.kill()
    assert mephisto_db.get_unit_status_counts(task_run_id) == {"completed": 40}


async def test_a_live_task_talks_through_the_router_and_survives_a_link_cut(
        operator: Operator, mephisto_db: MephistoDB, tmp_path: Path,
        router: RouterProcess) -> None:
    from mephisto.abstractions.blueprints.remote_procedure import (
        SharedRemoteProcedureTaskState,
    )
    from mephisto.testing.tcp_proxy import TcpProxy
    from mephisto.testing.worker import SimulatedWorker

    bundle = tmp_path / "bundle" / "bundle.js"
    bundle.parent.mkdir()
    bundle.write_text("document.getElementById('app').textContent = 'live';\n")
    registry = {"add": lambda request_id, args, agent: {"sum": args["a"] + args["b"]}}
    with TcpProxy([("127.0.0.1", router.port)]) as link:
        config = remote_config(bundle, router)
        config["blueprint"]["_blueprint_type"] = "remote_procedure"
        config["architect"]["operator_urls"] = link.url
        state = SharedRemoteProcedureTaskState(function_registry=registry,
                                               static_task_data=[{"text": "x"}])
        task_run_id = await asyncio.to_thread(operator.launch_task_run, config, state)

        async def call(worker: SimulatedWorker, n: int) -> Any:
            request_id = f"req-{n}"
            await worker.send_live_update({"request_id": request_id, "target": "add",
                                           "args": json.dumps({"a": n, "b": 1})})
            packet = await worker.wait_for_packet(
                "client_bound_live_update",
                predicate=lambda p: p["data"].get("handles") == request_id)
            return json.loads(packet["data"]["response"])

        async with SimulatedWorker(router.url, "w1") as worker:
            assert (await worker.request_agent())["init_task_data"] == {"text": "x"}
            assert "bundle.js" in await worker.open_page()
            await worker.connect()
            assert await call(worker, 1) == {"sum": 2}
            link.cut()  # the operator's link drops; the worker's socket stays
            await asyncio.to_thread(router.wait_for_operator)
            # the router told the new link about the socket: answers reach the page again
            assert await call(worker, 2) == {"sum": 3}
            await worker.submit({"done": True})
    live = operator._runs[task_run_id]
    assert await asyncio.to_thread(live.done_sync.wait, 30)
    stored = mephisto_db.get_agent(worker.agent_id)["state"]
    assert stored["outputs"] == {"done": True}
    assert len(stored["live_updates"]) == 4


def test_an_operator_killed_mid_run_resumes_behind_the_router(
        mephisto_db: MephistoDB, task_html: Path, tmp_path: Path,
        router: RouterProcess) -> None:
    """kill -9 of the operator's process: workers get 503s from the router meanwhile,
    the resumed run dials in again, and every acknowledged submit is stored."""
    from mephisto.testing.faults import start_run_process

    architect = {"_architect_type": "remote", "router_url": router.url}
    proc = start_run_process(tmp_path, mephisto_db.url, task_html, 60, architect=architect)
    acks = Acks()
    thread = acks.run(router.url, 6)
    wait_for(lambda: len(acks.acked) >= 15, "15 acknowledged submits", 30)
    proc.kill()
    wait_for(lambda: not router.status()["operator"], "the operator gone", 30)
    proc = start_run_process(tmp_path, mephisto_db.url, task_html, 60, architect=architect)
    thread.join(120)
    assert not thread.is_alive()
    out, _err = proc.wait(60)
    assert "clean exit" in out
    assert acks.errors == []
    (run,) = mephisto_db.find_task_runs()
    assert set(acks.acked) <= _completed_agents(mephisto_db, run.db_id)
    assert mephisto_db.get_unit_status_counts(run.db_id) == {"completed": 60}
