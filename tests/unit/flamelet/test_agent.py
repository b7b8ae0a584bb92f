"""The flamelet agent against an in-test apiserver: run once, logs, status, stop, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
from pathlib import Path

import psutil
import pytest

from flame_spec.privacy import NO_TELEMETRY
from flamelet.errors import Unauthorized
from flamelet.events import STOP, NodeEvent
from flamelet.ledger import Ledger, Phase

from .conftest import CRED, FakeEvents, Node, Running, eventually

# The "role" of a task: reads the config the flamelet wrote, leaves a trace in the dataset folder.
TRACE = """
import json, os, resource, sys
cfg = json.load(open("config.json"))
data = cfg["dataset"]["uri"]
with open(os.path.join(data, "runs.txt"), "a") as f:
    f.write(cfg["task_id"] + "\\n")
json.dump({"token": cfg["discovery"]["token"], "home": os.environ.get("HOME"),
           "cwd": os.getcwd(), "env": sorted(os.environ),
           "task_config": os.environ.get("FLAME_TASK_CONFIG"),
           "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]},
          open(os.path.join(data, "seen.json"), "w"))
for i in range(3):
    print("hello", i)
print("oops", file=sys.stderr)
sys.exit(int(os.environ.get("EXIT", "0")) or cfg["job"].get("rounds", 1) - 1)
"""

# Runs until <data>/release exists; starts a grandchild in the same process group.
LONG = """
import json, os, subprocess, sys, time
cfg = json.load(open("config.json"))
data = cfg["dataset"]["uri"]
with open(os.path.join(data, "runs.txt"), "a") as f:
    f.write(cfg["task_id"] + "\\n")
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(os.path.join(data, "pids.tmp"), "w") as f:
    json.dump([os.getpid(), child.pid], f)
os.replace(os.path.join(data, "pids.tmp"), os.path.join(data, "pids.json"))
print("waiting", flush=True)
while not os.path.exists(os.path.join(data, "release")):
    time.sleep(0.02)
child.kill()
print("released", flush=True)
"""


def runs(node: Node) -> list[str]:
    p = node.data / "runs.txt"
    return p.read_text().split() if p.exists() else []


@pytest.mark.parametrize("warm", [0, 2], ids=["cold", "warm"])
async def test_runs_task_once_ships_logs_and_reports(node: Node, warm: int) -> None:
    fake = node.fake
    fake.keep_scheduled = True  # the control plane keeps offering the task: it must not rerun
    agent, api = node.agent(max_open_files=200, warm_runners=warm)
    async with Running(agent, api):
        # warm: the runner the agent started for the node's dataset runs the task, and the task
        # sees what a task started cold sees (below)
        ready = await eventually(agent.warm.idle, what="a warm runner") if warm else []
        fake.add_task("t1", {"trainer/main.py": TRACE})
        await eventually(lambda: "completed" in fake.states("t1"), what="completed")
        await eventually(lambda: agent.reconciled >= 3, what="more reconcile passes")
    assert agent.warm.handed == (1 if warm else 0)
    if warm:
        assert [e.pid for e in Ledger(node.home).entries()] == [ready[0].started.pid]
    assert fake.states("t1") == ["running", "completed"]
    assert fake.statuses[-1][2] == "exit code 0"
    assert fake.log_lines("t1", "stdout") == ["hello 0", "hello 1", "hello 2"]
    assert fake.log_lines("t1", "stderr") == ["oops"]
    seen = json.loads((node.data / "seen.json").read_text())
    workdir = Path(seen["cwd"])
    assert seen["token"] == CRED and seen["home"] == str(workdir)
    assert seen["task_config"] == str(workdir / "config.json")
    assert seen["nofile"] == 200
    assert all(
        k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", *NO_TELEMETRY} or k.startswith("FLAME_")
        for k in seen["env"]
        if k not in ("PWD", "SHLVL", "_", "LC_CTYPE")
    )
    assert set(NO_TELEMETRY) <= set(seen["env"])  # nothing phones home
    assert stat.S_IMODE((workdir / "config.json").stat().st_mode) == 0o600
    assert workdir.is_relative_to(node.home)

    # A restarted flamelet (same home) sees the task still "scheduled" and leaves it alone.
    agent2, api2 = node.agent()
    async with Running(agent2, api2):
        await eventually(lambda: agent2.reconciled >= 3, what="reconcile after restart")
    assert runs(node) == ["t1"]
    assert fake.fetches["t1"] == 1
    assert fake.states("t1") == ["running", "completed"]


async def test_failure_reports_the_reason_the_task_printed(node: Node) -> None:
    script = (
        "import sys\n"
        "print('flame.launch: configuration error: no sample ids', file=sys.stderr)\n"
        "sys.exit(2)\n"
    )
    node.fake.add_task("t3", {"trainer/main.py": script})
    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: "failed" in node.fake.states("t3"))
    assert node.fake.statuses[-1][1:3] == (
        "failed",
        "exit code 2: configuration error: no sample ids",
    )


async def test_failure_reports_exit_code(node: Node) -> None:
    node.fake.add_task("t2", {"trainer/main.py": TRACE})
    node.fake.bundles["t2"]["config"]["job"]["rounds"] = 4  # the script exits rounds - 1
    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: "failed" in node.fake.states("t2"))
    assert node.fake.statuses[-1][1:3] == ("failed", "exit code 3")


async def test_restart_readopts_running_task(node: Node) -> None:
    fake = node.fake
    fake.add_task("t3", {"trainer/main.py": LONG})
    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: (node.data / "pids.json").exists(), what="task started")
        await eventually(lambda: fake.states("t3") == ["running"])
        await eventually(lambda: fake.log_lines("t3") == ["waiting"])
    pid, _ = json.loads((node.data / "pids.json").read_text())
    assert psutil.pid_exists(pid)  # the task outlives its flamelet

    agent2, api2 = node.agent()
    async with Running(agent2, api2):
        await eventually(lambda: agent2.reconciled >= 2)
        (node.data / "release").write_text("go")
        await eventually(lambda: "completed" in fake.states("t3"), what="completed")
    assert runs(node) == ["t3"]
    assert fake.states("t3") == ["running", "completed"]
    assert fake.statuses[-1][2] == "exit code 0"
    assert fake.log_lines("t3") == ["waiting", "released"]


async def test_a_wall_clock_step_while_the_agent_is_down_fails_nothing(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flamelet recognises the task it re-adopts by its start time: a wall clock stepped
    while it was down (NTP, a resumed VM) moves psutil's create_time, not the task's start."""
    fake = node.fake
    fake.add_task("t3", {"trainer/main.py": LONG})
    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: fake.states("t3") == ["running"], what="running")
    boot_time = psutil._pslinux.boot_time  # what psutil adds to a process's ticks since boot
    monkeypatch.setattr("psutil._pslinux.boot_time", lambda: boot_time() + 5.0)

    agent2, api2 = node.agent()
    async with Running(agent2, api2):
        await eventually(lambda: agent2.reconciled >= 3, what="reconcile after restart")
        (node.data / "release").write_text("go")
        await eventually(lambda: len(fake.states("t3")) > 1, what="the outcome")
    assert fake.states("t3") == ["running", "completed"], fake.statuses[-1]
    assert fake.statuses[-1][2] == "exit code 0"


async def test_stop_event_kills_the_process_group(node: Node) -> None:
    fake = node.fake
    fake.add_task("t4", {"trainer/main.py": LONG})
    events = FakeEvents()
    agent, api = node.agent(events)
    async with Running(agent, api):
        await eventually(lambda: (node.data / "pids.json").exists())
        pids = json.loads((node.data / "pids.json").read_text())
        assert all(psutil.pid_exists(p) for p in pids)
        await events.queue.put(NodeEvent(seq=10, kind=STOP, job_id="job-1", task_id="t4"))
        await eventually(lambda: "failed" in fake.states("t4"), what="stop reported")
        assert events.acked == [10]
    gone = [
        p
        for p in pids
        if not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    ]
    assert gone == pids
    reason = fake.statuses[-1][2]
    assert reason.startswith("terminated: STOP_TASK") and "SIGTERM" in reason
    assert Ledger(node.home).event_seq == 10
    assert runs(node) == ["t4"]


async def test_task_no_longer_active_is_stopped(node: Node) -> None:
    fake = node.fake
    fake.add_task("t5", {"trainer/main.py": LONG})
    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: (node.data / "pids.json").exists())
        pids = json.loads((node.data / "pids.json").read_text())
        fake.tasks["t5"]["state"] = "terminated"  # the STOP event was lost; the list tells
        await eventually(lambda: "failed" in fake.states("t5"), what="stop reported")
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("sha-mismatch", "sha256 mismatch"),
        ("path-escape", "escapes the archive root"),
        ("no-dataset", "not registered on this node"),
        ("foreign", None),
    ],
)
async def test_bad_bundles_are_refused(node: Node, case: str, reason: str | None) -> None:
    fake = node.fake
    files = {"trainer/main.py": TRACE}
    if case == "sha-mismatch":
        fake.add_task("bad", files, sha256="0" * 64)
    elif case == "path-escape":
        fake.add_task("bad", {**files, "../../../escape.py": "print('x')"})
    elif case == "no-dataset":
        fake.add_task("bad", files, dataset="unknown")
        fake.bundles["bad"]["config"]["dataset"]["id"] = "ds-9"
    else:
        fake.add_task("bad", files)
        fake.hidden.add("bad")  # listed by mistake; fetching it answers 404 (another node's)
    agent, api = node.agent()
    async with Running(agent, api):
        entry = await eventually(
            lambda: next((e for e in Ledger(node.home).entries() if e.settled), None),
            what="refusal settled",
        )
    assert entry.phase == Phase.DONE and entry.outcome == "failed" and entry.pid is None
    assert runs(node) == []
    assert not list(node.home.rglob("escape.py")) and not (node.home.parent / "escape.py").exists()
    if reason is None:
        assert fake.statuses == []  # 404: nothing to report to
    else:
        assert fake.states("bad") == ["failed"]
        assert reason in fake.statuses[0][2]
        assert any("task refused" in ln for ln in fake.log_lines("bad", "agent"))


async def test_revoked_credential_stops_the_agent(node: Node) -> None:
    node.fake.add_task("t6", {"trainer/main.py": TRACE})
    node.fake.revoked = True
    agent, api = node.agent()
    with pytest.raises(Unauthorized):
        await asyncio.wait_for(agent.run(), 10)
    await api.close()
    assert runs(node) == [] and node.fake.fetches["t6"] == 0


async def test_only_one_agent_per_home(node: Node) -> None:
    from flamelet.errors import AlreadyRunning

    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: agent.reconciled >= 1)
        other, api2 = node.agent()
        with pytest.raises(AlreadyRunning):
            await other.run()
        await api2.close()


async def test_survives_apiserver_outage_and_missing_notifier(node: Node) -> None:
    from flamelet.events import GrpcEventSource

    node.fake.unavailable = 6  # the first requests fail with 503
    node.fake.add_task("t7", {"trainer/main.py": TRACE})
    events = GrpcEventSource("127.0.0.1:1", "node-1", CRED)  # nothing listens there
    agent, api = node.agent(events)
    try:
        async with Running(agent, api):
            await eventually(lambda: "completed" in node.fake.states("t7"), what="completed")
    finally:
        await events.close()
    assert runs(node) == ["t7"]
    assert node.fake.unavailable == 0


STUBBORN = """
import json, os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
cfg = json.load(open("config.json"))
data = cfg["dataset"]["uri"]
with open(os.path.join(data, "pids.tmp"), "w") as f:
    json.dump([os.getpid()], f)
os.replace(os.path.join(data, "pids.tmp"), os.path.join(data, "pids.json"))
while True:
    time.sleep(0.05)
"""


async def test_stop_escalates_to_sigkill(node: Node) -> None:
    node.fake.add_task("t8", {"trainer/main.py": STUBBORN})
    events = FakeEvents()
    agent, api = node.agent(events, stop_grace=0.3)
    async with Running(agent, api):
        await eventually(lambda: (node.data / "pids.json").exists())
        (pid,) = json.loads((node.data / "pids.json").read_text())
        await events.queue.put(NodeEvent(seq=11, kind=STOP, job_id="job-1", task_id="t8"))
        await eventually(lambda: "failed" in node.fake.states("t8"), what="stop reported")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "SIGKILL" in node.fake.statuses[-1][2]


async def test_rejected_logs_do_not_block_the_final_status(node: Node) -> None:
    node.fake.reject_logs = True
    node.fake.add_task("t9", {"trainer/main.py": TRACE})
    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: "completed" in node.fake.states("t9"), what="completed")
    (entry,) = Ledger(node.home).entries()
    assert entry.settled and entry.logs_done and node.fake.logs == []


async def test_log_tailing_waits_for_complete_lines(node: Node, tmp_path: Path) -> None:
    agent, api = node.agent(log_batch_lines=3)
    await api.close()
    f = tmp_path / "out.log"
    f.write_bytes(b"one\nprogress 10%\rprogress 20%\rtwo\nhalf")
    lines, offset, more = agent._read_lines(f, 0, final=False, already=0)
    assert lines == [("one", 4), ("progress 10%", 17), ("progress 20%", 30)] and more
    lines, offset, more = agent._read_lines(f, offset, final=False, already=0)
    assert lines == [("two", 34)] and offset == f.stat().st_size - 4 and not more
    lines, offset, _ = agent._read_lines(f, offset, final=True, already=0)
    assert lines == [("half", 38)] and offset == f.stat().st_size


async def test_only_the_newest_finished_tasks_keep_their_work_dirs(node: Node) -> None:
    fake = node.fake
    ids = [f"p{i}" for i in range(5)]
    agent, api = node.agent(keep_finished_tasks=2)
    async with Running(agent, api):
        for task_id in ids:  # one after another, so they finish in this order
            fake.add_task(task_id, {"trainer/main.py": TRACE})
            await eventually(lambda t=task_id: "completed" in fake.states(t), what=task_id)
        ledger_keys = lambda: sorted(e.task_id for e in Ledger(node.home).entries())  # noqa: E731
        await eventually(lambda: ledger_keys() == ["p3", "p4"], what="older tasks pruned")
    kept = [json.loads((p / "config.json").read_text()) for p in (node.home / "tasks").iterdir()]
    assert sorted(c["task_id"] for c in kept) == ["p3", "p4"]  # and no idle runner's folder
    assert fake.log_lines("p0", "stdout") == ["hello 0", "hello 1", "hello 2"]  # shipped first

    agent2, api2 = node.agent(keep_finished_tasks=2)  # pruned tasks are not run again
    async with Running(agent2, api2):
        await eventually(lambda: agent2.reconciled >= 3, what="reconcile after restart")
    assert runs(node) == ids


# natsort: small, pure Python, not a dependency of the SDK; on the machine's package index.
NATSORT = (
    "natsort==8.4.0 "
    "--hash=sha256:4732914fb471f56b5cce04d7bae6f164a592c7712e1c85f9ef585e197299521c\n"
)
USES_NATSORT = """
import natsort, numpy, flame_spec  # its requirement, and what the node's environment has
print(natsort.natsorted(["a10", "a2", "a1"]))
"""


@pytest.mark.slow
async def test_a_role_s_requirements_are_installed_once_into_a_cached_env(node: Node) -> None:
    import subprocess
    import sys

    assert subprocess.run([sys.executable, "-c", "import natsort"]).returncode != 0
    files = {"trainer/main.py": USES_NATSORT, "trainer/requirements.txt": NATSORT}
    node.fake.add_task("r1", files)
    node.fake.add_task("r2", {**files, "trainer/extra.txt": "another code version"})
    agent, api = node.agent(sandbox="auto")  # the cached environment is visible in the sandbox
    async with Running(agent, api):
        await eventually(
            lambda: (
                {"completed"} <= set(node.fake.states("r1"))
                and {"completed"} <= set(node.fake.states("r2"))
            ),
            timeout=300,
            what="both tasks completed",
        )
    for task in ("r1", "r2"):
        assert node.fake.log_lines(task, "stdout") == ["['a1', 'a2', 'a10']"], task
    envs = [p for p in (node.home / "envs").iterdir() if p.is_dir()]
    assert len(envs) == 1  # the same requirements share one environment
    assert (envs[0] / ".flame-ready").exists()


@pytest.mark.parametrize(
    ("requirements", "reason"),
    [
        ("--index-url https://evil.example/simple\nnatsort\n", "option --index-url"),
        ("natsort @ https://evil.example/n.whl\n", "URLs, direct references"),
        ("natsort==8.4.0 --hash=sha256:" + "0" * 64 + "\n", "installing the role's requirements"),
        ("surely-no-such-package-on-this-index==1.0\n", "installing the role's requirements"),
        # a package the SDK runs on is never replaced by another version
        ("numpy==1.26.0\n", "installing the role's requirements"),
    ],
)
async def test_bad_requirements_are_refused_with_the_reason(
    node: Node, requirements: str, reason: str
) -> None:
    node.fake.add_task(
        "bad", {"trainer/main.py": "print(1)", "trainer/requirements.txt": requirements}
    )
    agent, api = node.agent()
    async with Running(agent, api):
        await eventually(lambda: "failed" in node.fake.states("bad"), timeout=300)
    status = node.fake.statuses[-1]
    assert status[1] == "failed" and reason in status[2], status
    assert runs(node) == []


async def test_a_warm_runner_is_ready_again_after_each_task_and_gone_with_the_agent(
    node: Node,
) -> None:
    fake = node.fake
    agent, api = node.agent(warm_runners=2)
    async with Running(agent, api):
        pids = []
        for task_id in ("w1", "w2"):
            ready = await eventually(agent.warm.idle, what="a runner for the dataset")
            assert [r.dataset for r in ready] == [str(node.data)]
            pids.append(ready[0].started.pid)
            fake.add_task(task_id, {"trainer/main.py": TRACE})
            await eventually(lambda t=task_id: "completed" in fake.states(t), what=task_id)
        idle = await eventually(agent.warm.idle, what="a runner for the next task")
    assert agent.warm.handed == 2 and runs(node) == ["w1", "w2"]
    by_task = {e.task_id: e.pid for e in Ledger(node.home).entries()}
    assert [by_task["w1"], by_task["w2"]] == pids  # each task had its own process
    # the agent stopped: its idle runner is killed and its folder removed
    assert not psutil.pid_exists(idle[0].started.pid) or (
        psutil.Process(idle[0].started.pid).status() == psutil.STATUS_ZOMBIE
    )
    assert not idle[0].workdir.exists()


async def test_a_runner_killed_while_idle_leaves_the_task_to_a_cold_start(node: Node) -> None:
    fake = node.fake
    agent, api = node.agent(warm_runners=2)
    async with Running(agent, api):
        ready = await eventually(agent.warm.idle, what="a warm runner")
        os.killpg(ready[0].started.pid, signal.SIGKILL)  # an operator, or the OOM killer
        await ready[0].started.process.wait()
        fake.add_task("k1", {"trainer/main.py": TRACE})
        await eventually(lambda: "completed" in fake.states("k1"), what="completed")
        await eventually(agent.warm.idle, what="a new runner after the task")
    assert agent.warm.handed == 0 and not agent.warm.broken
    assert fake.states("k1") == ["running", "completed"]
    assert fake.log_lines("k1", "stdout") == ["hello 0", "hello 1", "hello 2"]
