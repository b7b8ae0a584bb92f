"""What only the local deployer promises (the shared contract is tests/contract/test_deployers.py):
a clean environment, a private config, its own session, whole process groups stopped, a reused
pid never mistaken for the task, unsafe bundles refused, output in complete lines."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from flame_controller.deployers.base import Deployer, Launch
from flame_controller.deployers.local import LocalDeployer, LocalDeployerSettings
from flame_service.errors import InvalidArgument
from flame_spec import TaskConfig, parse_design, parse_job_spec

# The "role": reads its config, records its start, then behaves as job.hyperparameters say.
ROLE = r"""
import json, os, subprocess, sys, time
from pathlib import Path
cfg = json.loads(Path(sys.argv[1]).read_text())
Path("env.json").write_text(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(),
                                        "argv": sys.argv}))
with open("starts.log", "a") as f:
    f.write(f"{os.getpid()}\n")
mode = cfg["job"]["hyperparameters"]["mode"]
if mode == "exit":
    sys.exit(cfg["job"]["hyperparameters"]["code"])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
Path("grandchild.tmp").write_text(str(child.pid))
Path("grandchild.tmp").rename("grandchild.pid")
while not Path("release").exists():
    time.sleep(0.02)
"""


def code_zip(extra: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("aggregator/main.py", ROLE)
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return buf.getvalue()


DESIGN = parse_design(
    {"roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}]}
)


def launch(mode: str = "wait", code: int = 0, zip_bytes: bytes | None = None) -> Launch:
    spec = parse_job_spec({"hyperparameters": {"mode": mode, "code": code}})
    config = TaskConfig.model_validate(
        {
            "job_id": "job-1",
            "job_name": "demo",
            "task_id": "aggregator-0-abc",
            "role": "aggregator",
            "design": DESIGN,
            "job": spec,
            "discovery": {"kind": "control-plane", "url": "http://cp"},
        }
    )
    return Launch(
        job_id="job-1",
        task_id="aggregator-0-abc",
        role="aggregator",
        attempt=1,
        config=config,
        code=code_zip() if zip_bytes is None else zip_bytes,
        credential="flm_task_secret",
    )


def pid_of(handle: str) -> int:
    return int(json.loads(handle)["pid"])


def deployer(tmp_path: Path, grace: float = 5.0) -> LocalDeployer:
    settings = LocalDeployerSettings(
        python=sys.executable,
        launch_args=["code/aggregator/main.py"],
        stop_grace_seconds=grace,
        env={"FLAME_MQTT_HOST": "127.0.0.1", "SECRET_THING": "x"},
    )
    return LocalDeployer(tmp_path, settings)


async def wait_for(pred: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def test_runs_the_role_with_clean_env_and_config(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    assert isinstance(d, Deployer)
    handle = await d.start(launch())
    workdir = d.workdir("job-1", "aggregator-0-abc")
    await wait_for(lambda: (workdir / "grandchild.pid").exists())
    seen = json.loads((workdir / "env.json").read_text())
    env = seen["env"]
    assert seen["cwd"] == str(workdir)
    assert env["HOME"] == str(workdir)
    assert env["FLAME_TASK_CONFIG"] == str(workdir / "config.json")
    assert env["FLAME_TASK_ID"] == "aggregator-0-abc" and env["FLAME_MQTT_HOST"] == "127.0.0.1"
    assert "SECRET_THING" not in env
    assert not {k for k in os.environ if k.startswith("PYTEST")} & set(env)
    cfg = TaskConfig.parse((workdir / "config.json").read_text())
    assert cfg.discovery.kind == "control-plane" and cfg.discovery.url == "http://cp"
    assert cfg.discovery.token == "flm_task_secret"
    assert cfg.workdir == str(workdir)
    assert cfg.checkpoint_dir == str(workdir / "checkpoints")
    assert stat.S_IMODE((workdir / "config.json").stat().st_mode) == 0o600
    pid = pid_of(handle)
    # one process shows the task command line: the sandbox and the wrapper script do not
    assert psutil.Process(pid).cmdline()[-2:] == ["/bin/sh", "run.sh"]
    assert seen["argv"] == ["code/aggregator/main.py", "config.json"]
    # its own session: a controller crash does not take it down
    assert os.getsid(pid) == pid != os.getsid(0)
    (workdir / "release").touch()
    await wait_for(lambda: _exited(d, handle))
    obs = await d.observe(handle)
    assert (obs.state, obs.exit_code) == ("exited", 0)


async def _exited(d: LocalDeployer, handle: str) -> bool:
    return (await d.observe(handle)).state == "exited"


async def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    d = deployer(tmp_path, grace=2.0)
    handle = await d.start(launch())
    workdir = d.workdir("job-1", "aggregator-0-abc")
    await wait_for(lambda: (workdir / "grandchild.pid").exists())
    # the pid it wrote is the one in its sandbox's pid namespace: look at the host's view
    tree = psutil.Process(pid_of(handle)).children(recursive=True)
    pids = [pid_of(handle), *(p.pid for p in tree)]
    assert len(pids) >= 3 and all(psutil.pid_exists(p) for p in pids)
    await d.stop(handle)
    for pid in pids:
        assert not _alive(pid)
    assert (await d.observe(handle)).state in ("exited", "missing")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_reused_pid_is_not_taken_for_the_task(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    # a handle naming an unrelated live process (our own pid) with another create time
    me = psutil.Process()
    stale = json.dumps(
        {"job": "job-1", "task": "aggregator-0-abc", "pid": me.pid, "ct": me.create_time() - 100}
    )
    assert (await d.observe(stale)).state == "missing"
    await d.stop(stale)  # must not signal the unrelated process
    assert me.is_running()


async def test_a_wall_clock_step_while_the_controller_is_down_does_not_lose_a_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted controller re-finds a running task by its start (boot id and start tick):
    psutil's create_time moves with a wall clock stepped meanwhile (NTP, a resumed VM)."""
    handle = await deployer(tmp_path).start(launch())
    boot_time = psutil._pslinux.boot_time  # type: ignore[attr-defined]
    monkeypatch.setattr("psutil._pslinux.boot_time", lambda: boot_time() + 5.0)
    restarted = deployer(tmp_path)
    try:
        for h in (handle, restarted.handle_for("job-1", "aggregator-0-abc", 1)):
            assert (await restarted.observe(h)).state == "running"
    finally:
        await restarted.stop(handle)
    # a start id of another process (a reused pid) is still not the task
    other = {**json.loads(handle), "pid": os.getpid(), "sid": "another-boot:1"}
    assert (await restarted.observe(json.dumps(other))).state == "missing"


async def test_a_restart_keeps_the_checkpoints(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    first = await d.start(launch("exit", 1))
    await wait_for(lambda: _exited(d, first))
    workdir = d.workdir("job-1", "aggregator-0-abc")
    (workdir / "checkpoints" / "round-3.json").write_text("{}")
    second = await d.start(launch("exit", 0))
    assert pid_of(second) != pid_of(first)
    await wait_for(lambda: _exited(d, second))
    assert (workdir / "checkpoints" / "round-3.json").exists()


async def test_unsafe_code_zip_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    with pytest.raises(InvalidArgument, match=r"\.\."):
        await d.start(launch(zip_bytes=code_zip({"../evil.py": "x"})))
    workdir = d.workdir("job-1", "aggregator-0-abc")
    assert not (workdir / "code").exists()
    assert not (workdir / "process.json").exists()
    assert not (tmp_path / "tasks" / "job-1" / "evil.py").exists()
    predicted = d.handle_for("job-1", "aggregator-0-abc", 1)
    assert (await d.observe(predicted)).state == "missing"


async def test_output_is_read_in_complete_lines(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    handle = await d.start(launch("exit", 0))
    await wait_for(lambda: _exited(d, handle))
    workdir = d.workdir("job-1", "aggregator-0-abc")
    (workdir / "stdout.log").write_bytes(b"one\ntwo\npart")
    (workdir / "stderr.log").write_bytes(b"caf\xc3\xa9 \xff\n")  # one invalid byte
    out = await d.read_output(handle)
    assert out.lines == [("stdout", "one"), ("stdout", "two"), ("stderr", "café \ufffd")]
    await d.ack_output(handle, out)
    assert (await d.read_output(handle)).lines == []  # "part" has no newline yet
    final = await d.read_output(handle, final=True)
    assert final.lines == [("stdout", "part")]
    await d.ack_output(handle, final)
    with (workdir / "stdout.log").open("ab") as f:
        f.write(b"\nthree\n")
    again = await deployer(tmp_path).read_output(handle)
    assert again.lines == [("stdout", ""), ("stdout", "three")]


async def test_a_warm_runner_takes_the_task_in_a_process_started_before_it(
    tmp_path: Path,
) -> None:
    """Once prepared, the deployer keeps one runner started ahead (the SDK imported): the task
    runs in that process, with the environment, config and sandbox of a cold start, and the
    runner that replaces it starts when the task ends."""
    settings = LocalDeployerSettings(
        python=sys.executable,
        launch_args=["code/aggregator/main.py"],
        env={"FLAME_MQTT_HOST": "127.0.0.1", "SECRET_THING": "x"},
        warm_runners=1,
    )
    d = LocalDeployer(tmp_path, settings)
    left_by_a_dead_controller = tmp_path / "tasks" / ".warm" / "0123456789abcdef"
    left_by_a_dead_controller.mkdir(parents=True)
    await d.prepare()
    await wait_for(lambda: d.warm.idle() == 1)
    assert not left_by_a_dead_controller.exists()
    ordered = time.time()
    handle = await d.start(launch())
    workdir = d.workdir("job-1", "aggregator-0-abc")
    await wait_for(lambda: (workdir / "grandchild.pid").exists(), timeout=60)
    assert d.warm.handed == 1 and d.warm.idle() == 0
    runner_dir = workdir.resolve()
    assert workdir.is_symlink() and runner_dir.parent == tmp_path / "tasks" / ".warm"
    host_pid = next(
        p.pid
        for p in psutil.Process(pid_of(handle)).children(recursive=True)
        if p.cmdline()[:3] == [sys.executable, "-m", "flame.warm"]
    )
    assert psutil.Process(host_pid).create_time() < ordered  # started ahead of its task
    assert (await d.observe(handle)).state == "running"
    seen = json.loads((workdir / "env.json").read_text())
    env = seen["env"]
    assert seen["cwd"] == str(runner_dir) and env["HOME"] == str(runner_dir)
    assert env["FLAME_TASK_CONFIG"] == str(runner_dir / "config.json")
    assert env["FLAME_TASK_ID"] == "aggregator-0-abc" and env["FLAME_MQTT_HOST"] == "127.0.0.1"
    assert "SECRET_THING" not in env
    assert seen["argv"] == ["code/aggregator/main.py", "config.json"]
    cfg = TaskConfig.parse((workdir / "config.json").read_text())
    assert cfg.workdir == str(runner_dir) and cfg.discovery.token == "flm_task_secret"
    # a restarted controller finds it by the record in the (linked) folder
    restarted = LocalDeployer(tmp_path, settings)
    assert await restarted.adopt(restarted.handle_for("job-1", "aggregator-0-abc", 1))
    (workdir / "release").touch()
    await wait_for(lambda: _exited(d, handle))
    obs = await d.observe(handle)
    assert (obs.state, obs.exit_code) == ("exited", 0)
    await wait_for(lambda: d.warm.idle() == 1, timeout=60)  # the replacement
    # a second attempt starts cold, in the same folder, seen by the same path
    (workdir / "release").unlink()
    (workdir / "env.json").unlink()
    again = await d.start(launch())
    await wait_for(lambda: (workdir / "env.json").exists(), timeout=60)
    assert json.loads((workdir / "env.json").read_text())["cwd"] == str(runner_dir)
    assert d.warm.handed == 1 and pid_of(again) != pid_of(handle)
    await d.stop(again)
    await d.close()
    assert d.warm.idle() == 0
    assert [p for p in (tmp_path / "tasks" / ".warm").iterdir()] == [runner_dir]


async def test_a_later_attempt_and_an_unsafe_bundle_leave_the_warm_runner_alone(
    tmp_path: Path,
) -> None:
    settings = LocalDeployerSettings(
        python=sys.executable, launch_args=["code/aggregator/main.py"], warm_runners=1
    )
    d = LocalDeployer(tmp_path, settings)
    d.fill_warm()
    await d.prepare()  # again (a reconciler restarted): its own idle runner's folder stays
    assert d.warm.idle() == 1 and len(list((tmp_path / "tasks" / ".warm").iterdir())) == 1
    with pytest.raises(InvalidArgument):
        await d.start(launch(zip_bytes=code_zip({"../evil.py": "x"})))
    assert not d.workdir("job-1", "aggregator-0-abc").exists()
    await wait_for(lambda: d.warm.idle() == 1)  # the runner it took was replaced
    d.workdir("job-1", "aggregator-0-abc").mkdir(parents=True)  # an earlier attempt ran cold
    handle = await d.start(launch("exit", 0))
    await wait_for(lambda: _exited(d, handle))
    assert d.warm.handed == 0 and d.warm.idle() == 1
    await d.close()
