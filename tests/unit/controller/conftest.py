"""Fixtures for the controller's domain and servicer tests (real store, real gRPC server)."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from flame_controller.server import RunningController, serve
from flame_controller.settings import ControllerSettings
from flame_controller.store import open_store
from flame_controller.store.base import Store
from flame_proto.v1 import control_pb2_grpc
from flame_service.auth import Caller
from flame_service.connect import grpc_channel as insecure_channel
from tests.support import service_token_file

ADMIN_TOKEN = "flm_user_test-admin-token"


@pytest.fixture(autouse=True)
def reap_processes_left_in_tmp_path(tmp_path: Path) -> Iterator[None]:
    """Task processes a test's local deployer started outlive a test that does not stop its
    job: kill whatever still runs in the test's folder."""
    yield
    root = str(tmp_path)
    left = []
    for proc in psutil.process_iter():
        try:
            if proc.cwd().startswith(root):
                left.append(proc)
        except psutil.Error:
            continue
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=10)


CENTRAL_DESIGN: dict[str, Any] = {
    "roles": [
        {
            "name": "trainer",
            "isDataConsumer": True,
            "groupAssociation": [{"param-channel": "default"}],
        },
        {"name": "aggregator", "groupAssociation": [{"param-channel": "default"}]},
    ],
    "channels": [
        {
            "name": "param-channel",
            "pair": ["trainer", "aggregator"],
            "groupBy": {"type": "tag", "value": ["default"]},
            "funcTags": {
                "trainer": ["fetch", "upload"],
                "aggregator": ["distribute", "aggregate"],
            },
        }
    ],
}


def make_zip(files: dict[str, bytes | str]) -> bytes:
    """The same bytes for the same files, whenever it is called (fixed member dates)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def central_code() -> bytes:
    return make_zip(
        {
            "trainer/main.py": "print('trainer')\n",
            "aggregator/main.py": "print('aggregator')\n",
            "requirements.txt": "",
        }
    )


def design_json() -> str:
    return json.dumps(CENTRAL_DESIGN)


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[RunningController]:
    settings = ControllerSettings(
        node_health_keep=3,  # small, so tests see old samples dropped
        data_dir=tmp_path / "data",
        store_uri="sqlite://:memory:",
        listen="127.0.0.1:0",
        admin_token=ADMIN_TOKEN,
        apiserver_url="http://127.0.0.1:10100",
        run_reconciler=False,
        service_token_file=service_token_file(tmp_path / "secrets"),
    )
    running = await serve(settings, workers=[])
    try:
        yield running
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def stub(
    controller: RunningController,
) -> AsyncIterator[control_pb2_grpc.ControlPlaneAsyncStub]:
    token = controller.settings.service_token()
    async with insecure_channel(controller.address, service_token=token) as channel:
        yield control_pb2_grpc.ControlPlaneStub(channel)  # type: ignore[misc]


def md(caller: Caller) -> tuple[tuple[str, str], ...]:
    return caller.metadata()


async def status_of(call: Any) -> tuple[grpc.StatusCode, str, str]:
    """Await a call expected to fail; return (status, details, x-flame-error-code)."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        trailing = dict(err.trailing_metadata() or ())
        return err.code(), err.details() or "", str(trailing.get("x-flame-error-code", ""))
    raise AssertionError("the call succeeded but was expected to fail")


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store for domain tests: SQLite in memory, and MongoDB through mongomock-motor."""
    if request.param == "sqlite":
        s = await open_store("sqlite://:memory:")
    else:
        from mongomock_motor import AsyncMongoMockClient

        s = await open_store(
            "mongodb://localhost/flame_domain",
            str(tmp_path / "blobs"),
            client=AsyncMongoMockClient(),
        )
    try:
        yield s
    finally:
        await s.close()
