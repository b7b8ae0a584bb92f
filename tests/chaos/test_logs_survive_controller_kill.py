"""Chaos: 10,000 log lines from 5 concurrent tasks, with the controller SIGKILLed mid-stream.

Five trainers on two flamelets each print 2,000 numbered lines; while their lines are being
shipped (flamelet -> apiserver -> controller -> store) the controller is SIGKILLed and started
again.  Every line must be stored exactly once, in order per task, and the controller's own
events about the job must be in the same logs, tagged with their source.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flame.cli.code import zip_folder
from flame.cli.resources import LogLine
from tests.e2e.jobs_harness import EXAMPLES, Cluster, example_spec, start_cluster, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TASKS = 5
LINES = 2000
# Each trainer prints its lines over about 10 s, so the kill lands while they stream.
PRINTER = f"""
import sys, time
for i in range({LINES}):
    print(f"line {{i:05d}} of the printer", flush=True)
    time.sleep(0.005)
sys.exit(0)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("logs-chaos")
    c = start_cluster(home, nodes=2, shards=TASKS)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def _printer_job(cluster: Cluster, folder: Path) -> str:
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLES / "central" / "design.json", folder / "design.json")
    for role, body in (("trainer", PRINTER), ("aggregator", "import sys\nsys.exit(0)\n")):
        (folder / role).mkdir(parents=True)
        (folder / role / "main.py").write_text(body)
    design = cluster.client.create_design(
        "printers", schema=json.loads((folder / "design.json").read_text())
    )
    code = cluster.client.push_code(design.id, zip_folder(folder))
    spec = example_spec(
        "central", {"default": cluster.datasets}, rounds=1, min_trainers=TASKS, round_timeout=120
    )
    job = cluster.client.create_job("printers", design.id, spec, code.version).id
    cluster.client.start_job(job)
    return job


def _all_lines(cluster: Cluster, job: str, **filters: str) -> list[LogLine]:
    out: list[LogLine] = []
    after = 0
    while True:
        page = cluster.client.get_logs(job, after_seq=after, limit=5000, **filters)
        out += page.lines
        if not page.lines:
            return out
        after = page.last_seq


def test_ten_thousand_lines_survive_a_controller_kill(cluster: Cluster, tmp_path: Path) -> None:
    job = _printer_job(cluster, tmp_path / "code")
    deadline = time.monotonic() + 300
    stored = 0
    while stored < LINES:  # a fifth of the lines are in: the rest are still streaming
        assert time.monotonic() < deadline, f"only {stored} lines after 300 s"
        stored = len(_all_lines(cluster, job, source="task"))
        time.sleep(0.1)
    cluster.stack.kill(cluster.state, "controller")
    killed_at = time.monotonic()
    time.sleep(2.0)  # the flamelets' shipments meanwhile get 503 and are kept
    cluster.stack.respawn(cluster.state, "controller")
    wait_ready(cluster, timeout=120.0)
    print(f"controller SIGKILLed with {stored} of {TASKS * LINES} task lines stored")

    assert cluster.wait(job, timeout=600) == "completed", cluster.reason(job)
    finished = time.monotonic()
    while True:  # the last lines may still be on their way after the job's end
        lines = _all_lines(cluster, job, source="task")
        printed = [x for x in lines if "of the printer" in x.line]
        if len(printed) >= TASKS * LINES or time.monotonic() > finished + 60:
            break
        time.sleep(0.25)

    per_task: dict[str, list[str]] = {}
    for line in printed:
        per_task.setdefault(line.task_id, []).append(line.line)
    assert len(per_task) == TASKS
    expected = [f"line {i:05d} of the printer" for i in range(LINES)]
    for task_id, got in per_task.items():
        assert got == expected, f"task {task_id}: {len(got)} lines, first difference at " + str(
            next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)
        )
    seqs = [x.seq for x in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    print(
        f"{len(printed)} lines from {TASKS} tasks complete and in order; "
        f"all in {finished - killed_at:.1f} s after the kill"
    )

    # the controller's own events about the job are in its logs, tagged with their source
    controller = _all_lines(cluster, job, source="controller")
    assert controller, "no controller events in the job's logs"
    assert all(x.stream == "service" and x.level for x in controller)
    assert any("job" in x.line for x in controller)
    notifier = _all_lines(cluster, job, source="notifier")
    assert any(x.line.startswith("event.queued") for x in notifier)
    apiserver = _all_lines(cluster, job, source="apiserver")
    assert any(x.line.startswith("job.request") and "/start" in x.line for x in apiserver)
    warnings = _all_lines(cluster, job, level="warning")
    assert all(x.level in ("warning", "error", "critical") for x in warnings)
    node = printed[0].node_id
    assert node and all(x.node_id == node for x in _all_lines(cluster, job, node_id=node))
    print(
        f"service lines: controller {len(controller)}, notifier {len(notifier)}, "
        f"apiserver {len(apiserver)}; warning and above {len(warnings)}"
    )
