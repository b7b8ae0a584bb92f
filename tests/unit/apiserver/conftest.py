"""An in-test ControlPlane servicer on a real gRPC port, and the apiserver app in front of it."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from google.protobuf.timestamp_pb2 import Timestamp

from flame_apiserver import ApiserverSettings, create_app
from flame_proto.v1 import common_pb2, control_pb2, control_pb2_grpc
from flame_service.auth import IDEMPOTENCY_KEY, Caller
from flame_service.errors import ERROR_CODE_KEY
from flame_service.grpc_server import start_server
from tests.support import service_token_file

USER_TOKEN = "flm_user_alice"
ADMIN_TOKEN = "flm_user_root"
NODE_TOKEN = "flm_node_n1"
TOKENS = {
    USER_TOKEN: (common_pb2.SCOPE_USER, "u-alice"),
    ADMIN_TOKEN: (common_pb2.SCOPE_ADMIN, "u-root"),
    NODE_TOKEN: (common_pb2.SCOPE_NODE, "n-1"),
}
STATUSES = {s.name: s for s in grpc.StatusCode}


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(1_700_000_000)
    return ts


@dataclass
class FakeControlPlane(control_pb2_grpc.ControlPlaneServicer):
    """Just enough behaviour to exercise every kind of route: it records what it received."""

    calls: list[tuple[str, Caller | None, Any]] = field(default_factory=list)
    idempotency_keys: list[str | None] = field(default_factory=list)  # one per recorded call
    designs: dict[str, control_pb2.Design] = field(default_factory=dict)
    code: dict[str, bytes] = field(default_factory=dict)
    authentications: list[str] = field(default_factory=list)  # the tokens asked about

    def _record(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> Caller | None:
        metadata = context.invocation_metadata() or ()
        caller = Caller.from_metadata(metadata)
        self.calls.append((name, caller, request))
        self.idempotency_keys.append(dict(metadata).get(IDEMPOTENCY_KEY))
        return caller

    async def _fail(self, context: grpc.aio.ServicerContext, status: str, code: str) -> None:
        if code:
            context.set_trailing_metadata(((ERROR_CODE_KEY, code),))
        await context.abort(STATUSES[status], f"fake {status.lower()}")

    async def GetLogs(self, request, context):
        self._record("GetLogs", request, context)
        line = control_pb2.LogLine(
            task_id="",
            stream="service",
            line="job.started",
            seq=7,
            source="controller",
            node_id="n-1",
            level="warning",
            job_id=request.job_id,
        )
        return control_pb2.GetLogsResponse(lines=[line], last_seq=7, dropped=3)

    async def Authenticate(self, request, context):
        self.authentications.append(request.token)
        if request.token not in TOKENS:
            await self._fail(context, "UNAUTHENTICATED", "unauthenticated")
        scope, subject = TOKENS[request.token]
        return common_pb2.Principal(scope=scope, subject=subject)

    async def CreateDesign(self, request, context):
        self._record("CreateDesign", request, context)
        if request.name.startswith("fail-"):  # fail-<GRPC_STATUS>[-code]
            _, status, *code = request.name.split("-", 2)
            await self._fail(context, status, code[0] if code else "")
        design = control_pb2.Design(
            id=f"d-{len(self.designs) + 1}",
            name=request.name,
            owner="u-alice",
            description=request.description,
            schema_json=request.schema_json,
            version=1,
            created_at=_now(),
        )
        self.designs[design.id] = design
        return design

    async def GetDesign(self, request, context):
        self._record("GetDesign", request, context)
        if request.id == "d-garbage":  # a controller bug: schema_json that is not JSON
            return control_pb2.Design(id="d-garbage", name="g", schema_json="{not json")
        if request.id not in self.designs:
            await self._fail(context, "NOT_FOUND", "not_found")
        return self.designs[request.id]

    async def ListDesigns(self, request, context):
        self._record("ListDesigns", request, context)
        items = sorted(self.designs.values(), key=lambda d: d.id)
        start = int(request.page.page_token or 0)
        limit = request.page.limit or 50
        page = items[start : start + limit]
        more = start + limit < len(items)
        return control_pb2.ListDesignsResponse(
            items=page,
            page=common_pb2.PageResponse(next_page_token=str(start + limit) if more else ""),
        )

    async def PushCode(self, request, context):
        self._record("PushCode", request, context)
        self.code[request.design_id] = request.zip
        return control_pb2.CodeVersion(
            design_id=request.design_id, version=1, sha256="ab" * 32, size_bytes=len(request.zip)
        )

    async def DeleteJob(self, request, context):
        self._record("DeleteJob", request, context)
        return control_pb2.Empty()

    async def EnrollNode(self, request, context):
        self._record("EnrollNode", request, context)
        if request.enrolment_token != "enrol-me":
            await self._fail(context, "UNAUTHENTICATED", "unauthenticated")
        return control_pb2.NodeWithSecret(
            node=control_pb2.Node(id="n-1", name="edge", enrolled=True, presence=1),
            secret=NODE_TOKEN,
        )

    async def FetchTask(self, request, context):
        self._record("FetchTask", request, context)
        task = control_pb2.Task(id=request.id, job_id="j-1", role="trainer", state="scheduled")
        return control_pb2.TaskBundle(
            task=task,
            config_json=json.dumps({"job_id": "j-1", "role": "trainer"}),
            code=control_pb2.CodeVersion(design_id="d-1", version=2, sha256="cd" * 32),
            code_zip=b"PK\x05\x06" + b"\x00" * 18,
        )

    async def AppendLogs(self, request, context):
        self._record("AppendLogs", request, context)
        return control_pb2.Empty()

    async def ReportMetrics(self, request, context):
        self._record("ReportMetrics", request, context)
        return control_pb2.Empty()


@dataclass
class Api:
    client: httpx.AsyncClient
    fake: FakeControlPlane
    settings: ApiserverSettings

    async def call(
        self, method: str, path: str, token: str | None = USER_TOKEN, **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    fake = FakeControlPlane()
    server, port = await start_server(
        "127.0.0.1:0",
        [(control_pb2_grpc.add_ControlPlaneServicer_to_server, fake, "flame.v1.ControlPlane")],
    )
    settings = ApiserverSettings(
        controller_address=f"127.0.0.1:{port}",
        notifier_address="10.0.0.5:10101",
        max_body_bytes=4096,
        max_code_bytes=64 * 1024,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Api(client, fake, settings)
    await app.state.controller.close()
    await server.stop(None)


# ---- a live stack: the REAL controller (SQLite, API only) + the apiserver under uvicorn


@dataclass(frozen=True)
class Live:
    url: str
    admin_token: str


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """A module may fix the admin token in advance with ``LIVE_ADMIN_TOKEN``."""
    from flame_controller.server import serve
    from flame_controller.settings import ControllerSettings

    token = (
        getattr(request.module, "LIVE_ADMIN_TOKEN", None) or f"flm_user_{secrets.token_urlsafe(32)}"
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    data = tmp_path_factory.mktemp("live")
    token_file = service_token_file(data / "secrets")
    settings = ControllerSettings(
        data_dir=data,
        listen="127.0.0.1:0",
        apiserver_url=url,
        admin_token=token,
        run_reconciler=False,
        service_token_file=token_file,
    )
    controller = asyncio.run_coroutine_threadsafe(serve(settings, workers=[]), loop).result(30)
    app = create_app(
        ApiserverSettings(
            controller_address=f"127.0.0.1:{controller.port}",
            service_token_file=token_file,
            # schemathesis sends thousands of bad credentials on purpose, and expects 401 for
            # each; the throttle has its own tests (tests/security)
            auth_failure_limit=1_000_000,
        )
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    serving = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), loop)
    _wait(lambda: server.started or serving.done(), 30, "uvicorn")
    try:
        yield Live(url, token)
    finally:
        server.should_exit = True
        serving.result(30)
        asyncio.run_coroutine_threadsafe(controller.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        sock.close()
