"""The REST edge under a bounded load: ``GET /v1/jobs`` from N concurrent clients on loopback.

A real embedded stack (controller on SQLite, notifier, apiserver, TLS on every hop, as
``flamectl up`` starts it, without MLflow and flamelets) holds a few dozen jobs (one design, one
enrolled node with two datasets); the list answers one page of them. Each client has its own
connection. Three levels, each for a fixed time after a warm-up:
- the target's bounded load: 200 clients each asking once a second on a fixed schedule
  (200 requests/s offered, about half what the apiserver answers when saturated); a latency
  counts from the request's scheduled time;
- saturation: 50 and 200 clients in a closed loop (each asks again as soon as it is answered).
Reported: p50/p99/max latency, errors, requests/s, and the CPU the apiserver and the controller
spent per answer (the figure to compare across runs on a shared machine: wall-clock latency
also counts other work's turns on the cores).

The limit in the same run is a bare uvicorn + FastAPI endpoint on the same TLS certificate and
the same number of worker processes that returns the same JSON bytes without any controller
call: it is what the HTTP server and this load generator (same process, same 2 cores) cost.
Target (issue 21): p99 ≤ 100 ms and no errors at 200 clients under a bounded load. A closed loop
is not bounded: its mean latency is clients / throughput (Little's law), so 100 ms at 200
clients would need 2,000 answers/s from the whole machine, load generator included; the bare
endpoint alone does not come near it on two cores.
Usage: python -m benchmarks.rest_load [--clients 50 200] [--seconds 15] [--workers 0] [--rate 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.run import save
from flame.cli.client import FlameClient
from flame.cli.code import zip_folder
from flame.cli.stack import Stack, StackState
from flame.connect import ssl_context
from tests.e2e.jobs_harness import EXAMPLES

TARGET_P99_MS = 100.0
TARGET_CLIENTS = 200
PER_CLIENT_RATE = 1.0  # the bounded load: each of the 200 clients asks once a second
Level = tuple[int, float | None]  # clients, and requests a second each (None: closed loop)
JOBS = 40
PATH = "/v1/jobs"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}


def seed(state: StackState, jobs: int) -> None:
    """One node (enrolled, no flamelet) with two datasets, one design, ``jobs`` jobs."""
    client = FlameClient(state.api_url, state.admin_token, security=state.security())
    with state.client() as api:
        created = api.post("/v1/nodes", json={"name": "bench-node"})
        created.raise_for_status()
        token = created.json()["enrolment_token"]
        api.post("/v1/nodes/enroll", json={"enrolment_token": token}).raise_for_status()
        node_id = created.json()["node"]["id"]
    try:
        names = [f"bench-{i}" for i in range(2)]
        for name in names:
            client.create_dataset(name, node_id, format="npz", num_samples=100)
        folder = EXAMPLES / "central"
        design = client.create_design(
            "bench-rest", schema=json.loads((folder / "design.json").read_text())
        )
        code = client.push_code(design.id, zip_folder(folder))
        spec: dict[str, Any] = json.loads((folder / "job.json").read_text())
        spec.update(datasets={"default": names}, min_trainers=1)
        for i in range(jobs):
            client.create_job(f"bench-rest-{i}", design.id, spec, code_version=code.version)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def floor_server(home: Path, body: bytes, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The limit: uvicorn + FastAPI answering ``GET /v1/jobs`` with ``body``, same TLS."""
    (home / "floor.json").write_bytes(body)
    port = free_port()
    pki = home / "pki"
    argv = [sys.executable, "-m", "benchmarks.rest_load", "--floor", str(port), str(home)]
    argv += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + PATH, verify=verify, timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the floor server did not start")
        time.sleep(0.2)


def serve_floor(port: int, home: Path, workers: int) -> None:
    """Run by the floor subprocess."""
    import uvicorn

    os.environ["FLAME_BENCH_FLOOR_BODY"] = str(home / "floor.json")
    uvicorn.run(
        "benchmarks.rest_load:floor_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers or None,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(home / "pki" / "services.pem"),
        ssl_keyfile=str(home / "pki" / "services.key"),
    )


def floor_app() -> Any:
    from fastapi import FastAPI, Response

    body = Path(os.environ["FLAME_BENCH_FLOOR_BODY"]).read_bytes()
    app = FastAPI()

    @app.get(PATH)
    async def jobs() -> Response:
        return Response(body, media_type="application/json")

    return app


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(
    url: str,
    token: str,
    verify: ssl.SSLContext | bool,
    clients: int,
    seconds: float,
    per_client_rate: float | None = None,
) -> dict[str, Any]:
    """``clients`` clients for ``seconds`` after a warm-up request each. Closed loop (each
    sends its next request when the previous answer arrives) without ``per_client_rate``;
    with it, each sends on a fixed schedule of that many requests a second (phases spread
    over the interval), and a latency counts from the request's scheduled time, so an answer
    that made the next request late is charged to it too (no coordinated omission)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    answered = [0]  # every answer, warm-up and tail included (for CPU per request)
    headers = {"Authorization": f"Bearer {token}"}
    start_line = asyncio.Event()
    window: list[float] = []

    async def one(client: httpx.AsyncClient, scheduled: float | None = None) -> None:
        t0 = time.perf_counter() if scheduled is None else scheduled
        try:
            resp = await client.get(PATH)
            ok = resp.status_code == 200
            kind = str(resp.status_code)
            answered[0] += 1
        except httpx.HTTPError as exc:
            ok, kind = False, type(exc).__name__
        if start_line.is_set() and time.perf_counter() <= window[1]:
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[kind] = errors.get(kind, 0) + 1

    async def run(client: httpx.AsyncClient, phase: float) -> None:
        await one(client)  # warm-up: connect, TLS handshake
        await start_line.wait()
        if per_client_rate is None:
            while time.perf_counter() < window[1]:
                await one(client)
            return
        interval = 1.0 / per_client_rate
        due = window[0] + phase * interval
        while due < window[1]:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await one(client, scheduled=due)
            due += interval

    pool = [
        httpx.AsyncClient(base_url=url, headers=headers, verify=verify, timeout=60)
        for _ in range(clients)
    ]
    try:
        tasks = [asyncio.create_task(run(c, i / clients)) for i, c in enumerate(pool)]
        await asyncio.sleep(3.0)
        window.extend([time.perf_counter(), time.perf_counter() + seconds])
        start_line.set()
        await asyncio.gather(*tasks)
    finally:
        for c in pool:
            await c.aclose()
    elapsed = seconds
    return {
        "clients": clients,
        "per_client_rate": per_client_rate,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "answered": answered[0],
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (uvicorn workers), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += cpu_seconds(int(child))
    return total


def measure(
    url: str,
    token: str,
    verify: ssl.SSLContext | bool,
    levels: Sequence[Level],
    seconds: float,
    pids: dict[str, int],
) -> list[dict[str, Any]]:
    """Each level, with the CPU each process in ``pids`` spent per answer (robust on a shared
    machine, where wall-clock latency also counts other work's turns on the cores)."""
    results = []
    for n, rate in levels:
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result = asyncio.run(load(url, token, verify, n, seconds, rate))
        answered = max(1, result["answered"])
        result["cpu_ms_per_request"] = {
            name: round((cpu_seconds(pid) - before[name]) / answered * 1000, 2)
            for name, pid in pids.items()
        }
        results.append(result)
    return results


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 1) if a is not None and b else None


def main(
    clients: Sequence[int] = (50, TARGET_CLIENTS),
    seconds: float = 15.0,
    workers: int = 0,
    per_client_rate: float = PER_CLIENT_RATE,
) -> dict[str, Any]:
    before = machine()
    if workers:
        os.environ["FLAME_APISERVER_WORKERS"] = str(workers)
    bounded: Level = (TARGET_CLIENTS, per_client_rate)
    levels: list[Level] = [bounded, *((n, None) for n in clients)]
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
        home = Path(tmp) / "stack"
        stack = Stack(home)
        state = stack.up(nodes=0, timeout=180, mlflow=False)
        floor = None
        try:
            seed(state, JOBS)
            verify = ssl_context(state.security())
            with state.client() as api:
                body = api.get(PATH).content
            items = len(json.loads(body)["items"])
            pids = {p.name: p.pid for p in state.procs if p.name in ("apiserver", "controller")}
            apiserver = measure(state.api_url, state.admin_token, verify, levels, seconds, pids)
            floor, floor_url = floor_server(home, body, workers)
            limit = measure(
                floor_url, state.admin_token, verify, levels, seconds, {"floor": floor.pid}
            )
        finally:
            if floor is not None:
                floor.terminate()
                floor.wait(30)
            stack.down(state)

    def at(results: list[dict[str, Any]], level: Level) -> dict[str, Any]:
        return next(r for r in results if (r["clients"], r["per_client_rate"]) == level)

    target, floor_target = at(apiserver, bounded), at(limit, bounded)
    saturated = (max(clients), None)
    closed, floor_closed = at(apiserver, saturated), at(limit, saturated)
    p99 = target["p99_ms"]
    cpu = closed["cpu_ms_per_request"]
    floor_cpu = floor_closed["cpu_ms_per_request"]["floor"]
    row = (
        f"| rest_load | `GET /v1/jobs`, {TARGET_CLIENTS} clients each asking "
        f"{per_client_rate:g}/s: p99 **{p99} ms** (a bare uvicorn endpoint "
        f"{floor_target['p99_ms']} ms), p50 {target['p50_ms']} ms, {target['errors']} errors. "
        f"Saturated ({closed['clients']} clients in a closed loop): p99 {closed['p99_ms']} ms = "
        f"{ratio(closed['p99_ms'], floor_closed['p99_ms'])}x the bare endpoint's "
        f"({floor_closed['p99_ms']} ms), {closed['requests_per_s']} req/s = "
        f"{ratio(closed['requests_per_s'], floor_closed['requests_per_s'])}x its rate, "
        f"{closed['errors']} errors; CPU per request: apiserver "
        f"{ratio(cpu['apiserver'], floor_cpu)}x, controller {ratio(cpu['controller'], floor_cpu)}x "
        f"the bare endpoint's ({floor_cpu} ms) | <= {TARGET_P99_MS:.0f} ms p99, 0 errors |"
    )
    return {
        "machine": {**before, "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "setup": {
            "jobs_listed": items,
            "response_bytes": len(body),
            "seconds_per_level": seconds,
            "apiserver_workers": workers or 1,
            "tls": True,
        },
        "apiserver": apiserver,
        "floor_bare_uvicorn": limit,
        "target": {
            "clients": TARGET_CLIENTS,
            "per_client_rate": per_client_rate,
            "p99_ms": TARGET_P99_MS,
            "errors": 0,
        },
        "within_target": p99 is not None and p99 <= TARGET_P99_MS and target["errors"] == 0,
        "table_row": row,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[50, TARGET_CLIENTS])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=0, help="apiserver workers (0: default)")
    parser.add_argument(
        "--rate", type=float, default=PER_CLIENT_RATE, help="requests a second per client"
    )
    parser.add_argument("--floor", nargs=2, metavar=("PORT", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        serve_floor(int(args.floor[0]), Path(args.floor[1]), args.workers)
        raise SystemExit(0)
    started = time.perf_counter()
    result = main(args.clients, args.seconds, args.workers, args.rate)
    save("rest_load", result, time.perf_counter() - started)
