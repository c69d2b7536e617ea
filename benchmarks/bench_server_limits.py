"""Connection-level limits of the task server: what one abusive client costs the others.

The task server (fake backend, real uvicorn, uvloop) runs in a child process; this
process plays a well-behaved client and an abusive one, on the same cores.

    python benchmarks/bench_server_limits.py [--header-mb 100] [--silent 1100] [--nofile 1024]
    python benchmarks/bench_server_limits.py --protocol plain   # uvicorn's own, for comparison

Figures printed:
- keep-alive requests/s on one connection and on 20 connections (GET /healthz), and
  the server's CPU time per request;
- another client's latency before and while one connection streams a huge header, what
  the streaming client got back, and the server's resident memory (current and peak);
- `--silent` sockets that send nothing, with the server's soft RLIMIT_NOFILE set to
  `--nofile`: does a normal request still get an answer, right away and after the
  header deadline, and how many of the silent sockets did the server close.

Nothing is asserted (tests assert behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mephisto.testing.http_client import HTTPClient

_CHILD = """
import asyncio, contextlib, json, os, resource, socket, sys
soft, protocol = int(sys.argv[1]), sys.argv[2]
if soft:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
import uvicorn, uvloop
from mephisto.server.app import create_app
from mephisto.server.http_limits import task_server_config
from mephisto.testing.fake_backend import FakeBackend

async def main():
    app = create_app(FakeBackend())
    if protocol == "limited":
        config = task_server_config(app)
    else:  # uvicorn's own protocols, as the task server was configured before limits
        config = uvicorn.Config(app, proxy_headers=False, log_level="warning",
                                access_log=False, lifespan="off", ws_ping_interval=None,
                                timeout_keep_alive=30)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext
    task = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(json.dumps({"url": url, "pid": os.getpid()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.should_exit = True
    await task

uvloop.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid`, in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def throughput(url: str, pid: int, connections: int, seconds: float) -> str:
    """Keep-alive GET /healthz on `connections` connections: requests/s, and the
    server's CPU time per request (steadier than requests/s on a shared machine)."""
    client = HTTPClient(url)
    count = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await client.request("GET", "/healthz")
            count += 1

    start, cpu = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    await client.close()
    return f"{count / elapsed:,.0f} requests/s, server CPU {cpu / count * 1e6:.0f} µs/request"


async def latencies(url: str, seconds: float) -> list[float]:
    """Sequential requests on fresh connections (a new worker arriving), in ms."""
    result: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        client = HTTPClient(url)
        t = time.perf_counter()
        try:
            await asyncio.wait_for(client.request("GET", "/healthz"), 30)
            result.append((time.perf_counter() - t) * 1000)
        except (OSError, TimeoutError):
            result.append(float("inf"))
        await client.close()
        await asyncio.sleep(0.01)
    return result


def summary(values: list[float]) -> str:
    if not values:
        return "no requests"
    done = sorted(values)
    p99 = done[min(len(done) - 1, int(len(done) * 0.99))]
    return (f"n={len(done)} p50={statistics.median(done):.1f} ms p99={p99:.1f} ms "
            f"max={done[-1]:.1f} ms")


async def huge_header(host: str, port: int, megabytes: int) -> str:
    """Stream one header of `megabytes` MB while reading; what came back, and when."""
    reader, writer = await asyncio.open_connection(host, port)
    chunk = b"a" * 65536
    t = time.perf_counter()
    answer = asyncio.ensure_future(reader.read(4096))
    sent = 0
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        while sent < megabytes * 2**20 and not answer.done():
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        if not answer.done():
            writer.write(b"\r\n\r\n")
            await writer.drain()
    except OSError as exc:
        failed = type(exc).__name__
    else:
        failed = ""
    try:
        data = await asyncio.wait_for(answer, 60)
        outcome = data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed, no answer"
    except (OSError, TimeoutError) as exc:
        outcome = f"no answer ({type(exc).__name__})"
    finally:
        writer.close()
    elapsed = time.perf_counter() - t
    if failed:
        outcome += f" (then {failed} while sending)"
    return f"{outcome}, {sent / 2**20:.1f} MB sent, {elapsed:.2f} s"


async def silent_sockets(url: str, host: str, port: int, count: int) -> list[str]:
    rows: list[str] = []
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(count):
        try:
            opened.append(await asyncio.open_connection(host, port))
        except OSError:
            break
    rows.append(f"opened {len(opened)} silent sockets")

    async def probe() -> str:
        client = HTTPClient(url)
        t = time.perf_counter()
        try:
            status, _ = await asyncio.wait_for(client.request("GET", "/healthz"), 5)
            result = f"{status} in {(time.perf_counter() - t) * 1000:.0f} ms"
        except (OSError, TimeoutError) as exc:
            result = f"failed ({type(exc).__name__})"
        await client.close()
        return result

    await asyncio.sleep(0.5)
    rows.append(f"normal request right away: {await probe()}")
    await asyncio.sleep(16)
    rows.append(f"normal request 16 s later: {await probe()}")
    closed = 0
    for reader, _ in opened:
        try:
            await asyncio.wait_for(reader.read(), 0.05)
            closed += 1
        except TimeoutError:
            pass
        except OSError:
            closed += 1
    rows.append(f"silent sockets the server closed: {closed} of {len(opened)}")
    for _, writer in opened:
        writer.close()
    return rows


async def run(args: argparse.Namespace, url: str, pid: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    print(f"server protocol: {args.protocol}")
    print(f"keep-alive, 1 connection:   {await throughput(url, pid, 1, 3)}")
    print(f"keep-alive, 20 connections: {await throughput(url, pid, 20, 3)}")
    print(f"another client, quiet:      {summary(await latencies(url, 2))}")
    before = rss_kib(pid)
    attack = asyncio.ensure_future(huge_header(host, int(port), args.header_mb))
    await asyncio.sleep(0.2)
    during = await latencies(url, 3)
    outcome = await attack
    after = rss_kib(pid)
    print(f"another client, during a {args.header_mb} MB header: {summary(during)}")
    print(f"the header's sender got:    {outcome}")
    print(f"server RSS before/after/peak: {before[0] / 1024:.0f} / {after[0] / 1024:.0f} / "
          f"{after[1] / 1024:.0f} MB")
    if args.silent:
        for row in await silent_sockets(url, host, int(port), args.silent):
            print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--header-mb", type=int, default=100)
    parser.add_argument("--silent", type=int, default=1100)
    parser.add_argument("--nofile", type=int, default=1024,
                        help="soft RLIMIT_NOFILE of the server process (0: leave it)")
    parser.add_argument("--protocol", choices=["limited", "plain"], default="limited",
                        help="plain: uvicorn's own protocols, without connection limits")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(args.nofile), args.protocol], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        import uvloop

        uvloop.run(run(args, info["url"], info["pid"]))
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    main()
