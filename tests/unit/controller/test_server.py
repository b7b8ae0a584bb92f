"""The controller as it runs: the entry point (bootstrap token, restart, SIGTERM) and the server
with its reconciler driving a job to completion as tasks report."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from flame_controller.server import serve
from flame_controller.settings import ControllerSettings
from flame_proto.v1 import control_pb2 as pb
from flame_proto.v1 import control_pb2_grpc
from flame_service.auth import Caller
from flame_service.connect import grpc_channel as insecure_channel
from tests.support import service_token_file

from .conftest import ADMIN_TOKEN, central_code, design_json, md

DEADLINE = 30.0


def _read_until(proc: subprocess.Popen[str], prefix: str, deadline: float) -> str:
    """The first stdout line starting with ``prefix`` (poll with a deadline)."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=deadline - time.monotonic()):
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line.strip()
    raise AssertionError(f"no line starting with {prefix!r} before the deadline")


def _start(data_dir: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "FLAME_CONTROLLER_DATA_DIR": str(data_dir),
        "FLAME_CONTROLLER_LISTEN": "127.0.0.1:0",
        "FLAME_CONTROLLER_NOTIFIER_ADDRESS": "",
        "FLAME_SERVICE_TOKEN_FILE": str(_token_file(data_dir)),
    }
    env.pop("FLAME_CONTROLLER_ADMIN_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "flame_controller"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _token_file(data_dir: Path) -> Path:
    path = data_dir.parent / "secrets" / "service.token"
    return path if path.exists() else service_token_file(path.parent)


async def _whoami(port: int, token: str, data_dir: Path) -> str:
    service = _token_file(data_dir).read_text()
    async with insecure_channel(f"127.0.0.1:{port}", service_token=service) as channel:
        stub = control_pb2_grpc.ControlPlaneStub(channel)  # type: ignore[misc]
        principal = await stub.Authenticate(pb.AuthenticateRequest(token=token))
        return str(principal.subject)


async def test_entry_point_bootstraps_once_survives_restart_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    proc = _start(tmp_path)
    try:
        deadline = time.monotonic() + DEADLINE
        _read_until(proc, "flame-controller: the admin's token is in", deadline)
        token_path = tmp_path / "admin.token"
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
        token = token_path.read_text().strip()
        port = int(_read_until(proc, "flame-controller listening on", deadline).rsplit(":", 1)[1])
        admin_id = await _whoami(port, token, tmp_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "flame.db").exists()

    proc = _start(tmp_path)
    try:
        line = _read_until(proc, "flame-controller listening on", time.monotonic() + DEADLINE)
        port = int(line.rsplit(":", 1)[1])
        assert await _whoami(port, token, tmp_path) == admin_id, "the token survives a restart"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0
        assert "admin's token" not in out, "a token is made on the first start only"
        assert token not in out, "a secret is never printed"
    finally:
        if proc.poll() is None:
            proc.kill()


async def _poll_job(stub, caller: Caller, job_id: str, state: str) -> pb.Job:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        job = await stub.GetJob(pb.GetRequest(id=job_id), metadata=md(caller))
        if job.state == state:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach {state!r}; last: {job.state} ({job.reason})")


async def _poll_tasks(stub, caller: Caller, state: str, count: int) -> list[pb.Task]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        tasks = (await stub.ListAssignedTasks(pb.Empty(), metadata=md(caller))).items
        if sum(t.state == state for t in tasks) == count:
            return list(tasks)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} tasks never reached {state!r}")


async def test_server_runs_the_reconciler_that_drives_a_job_to_completion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deployer-run aggregator is a process that exits 0 at once.
    monkeypatch.setenv("FLAME_LOCAL_DEPLOYER_LAUNCH_ARGS", json.dumps(["-c", "pass"]))
    settings = ControllerSettings(
        data_dir=tmp_path,
        store_uri=f"sqlite:///{tmp_path / 'flame.db'}",
        listen="127.0.0.1:0",
        admin_token=ADMIN_TOKEN,
        notifier_address="",
        service_token_file=service_token_file(tmp_path / "secrets"),
    )
    running = await serve(settings)
    service = settings.service_token()
    try:
        async with insecure_channel(running.address, service_token=service) as channel:
            stub = control_pb2_grpc.ControlPlaneStub(channel)  # type: ignore[misc]
            principal = await stub.Authenticate(pb.AuthenticateRequest(token=ADMIN_TOKEN))
            admin = Caller("admin", principal.subject)
            created = await stub.CreateNode(pb.CreateNodeRequest(name="n"), metadata=md(admin))
            enrolled = await stub.EnrollNode(pb.EnrollNodeRequest(enrolment_token=created.secret))
            node = Caller("node", enrolled.node.id)
            for name in ("d0", "d1"):
                await stub.CreateDataset(pb.CreateDatasetRequest(name=name), metadata=md(node))
            design = await stub.CreateDesign(
                pb.CreateDesignRequest(name="central", schema_json=design_json()),
                metadata=md(admin),
            )
            await stub.PushCode(
                pb.PushCodeRequest(design_id=design.id, zip=central_code()), metadata=md(admin)
            )
            job = await stub.CreateJob(
                pb.CreateJobRequest(
                    name="j",
                    design_id=design.id,
                    spec_json=json.dumps(
                        {"datasets": {"default": ["d0", "d1"]}, "min_trainers": 2}
                    ),
                ),
                metadata=md(admin),
            )
            await stub.StartJob(pb.GetRequest(id=job.id), metadata=md(admin))
            tasks = await _poll_tasks(stub, node, "scheduled", 2)
            for task in tasks:
                for state in ("running", "completed"):
                    await stub.ReportTaskStatus(
                        pb.TaskStatusReport(task_id=task.id, state=state, attempt=task.attempt),
                        metadata=md(node),
                    )
            done = await _poll_job(stub, admin, job.id, "completed")
            states = [t.to_state for t in done.transitions]
            assert states[:3] == ["starting", "deploying", "running"] and states[-1] == "completed"
            all_tasks = (await stub.ListTasks(pb.GetRequest(id=job.id), metadata=md(admin))).items
            assert sorted(t.state for t in all_tasks) == ["completed"] * 3
    finally:
        await running.stop(grace=0)
    with pytest.raises(grpc.aio.AioRpcError):
        async with insecure_channel(running.address, service_token=service) as channel:
            stub = control_pb2_grpc.ControlPlaneStub(channel)  # type: ignore[misc]
            await stub.Authenticate(pb.AuthenticateRequest(token=ADMIN_TOKEN), timeout=1)
