"""Bad input over the real gRPC API: a clear INVALID_ARGUMENT / RESOURCE_EXHAUSTED and nothing
stored."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile

import grpc
import pytest

from flame_proto.v1 import control_pb2 as pb
from flame_service.auth import Caller

from .conftest import (
    ADMIN_TOKEN,
    CENTRAL_DESIGN,
    central_code,
    design_json,
    make_zip,
    md,
    status_of,
)


@pytest.fixture
async def alice(stub) -> Caller:  # type: ignore[no-untyped-def]
    principal = await stub.Authenticate(pb.AuthenticateRequest(token=ADMIN_TOKEN))
    admin = Caller("admin", principal.subject)
    user = await stub.CreateUser(pb.CreateUserRequest(name="alice"), metadata=md(admin))
    return Caller("user", user.id)


@pytest.fixture
async def design_id(stub, alice: Caller) -> str:  # type: ignore[no-untyped-def]
    design = await stub.CreateDesign(
        pb.CreateDesignRequest(name="central", schema_json=design_json()), metadata=md(alice)
    )
    return str(design.id)


@pytest.mark.parametrize(
    ("schema_json", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"roles": []}), "roles"),
        (
            json.dumps(
                {**CENTRAL_DESIGN, "channels": [{"name": "c", "pair": ["trainer", "ghost"]}]}
            ),
            "unknown role 'ghost'",
        ),
        (json.dumps({"roles": [{"name": "aggregator"}]}), "isDataConsumer"),
        (json.dumps({"roles": [{"name": "Trainer!", "isDataConsumer": True}]}), "valid name"),
    ],
)
async def test_malformed_design_is_rejected_and_not_stored(  # type: ignore[no-untyped-def]
    stub, alice: Caller, schema_json: str, fragment: str
) -> None:
    code, detail, err = await status_of(
        stub.CreateDesign(
            pb.CreateDesignRequest(name="d", schema_json=schema_json), metadata=md(alice)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and err == "invalid_argument"
    assert fragment in detail
    assert list((await stub.ListDesigns(pb.ListRequest(), metadata=md(alice))).items) == []


def _zip_with_symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("trainer/main.py", "x")
        zf.writestr("aggregator/main.py", "x")
        info = zipfile.ZipInfo("trainer/data")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc")
    return buf.getvalue()


GOOD = {"trainer/main.py": "x", "aggregator/main.py": "x"}


@pytest.mark.parametrize(
    ("zip_bytes", "status", "fragment"),
    [
        (make_zip({**GOOD, "../evil.py": "x"}), grpc.StatusCode.INVALID_ARGUMENT, "'..'"),
        (make_zip({**GOOD, "/etc/cron.d/x": "x"}), grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
        (_zip_with_symlink(), grpc.StatusCode.INVALID_ARGUMENT, "symbolic link"),
        (
            make_zip({**GOOD, "coordinator/main.py": "x"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'coordinator'",
        ),
        (
            make_zip({"trainer/main.py": "x", "aggregator/util.py": "x"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "aggregator/main.py",
        ),
        (b"PK not really a zip", grpc.StatusCode.INVALID_ARGUMENT, "not a valid zip"),
        (b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (
            make_zip({**GOOD, "trainer/zeros.bin": bytes(30 * 1024 * 1024)}),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "zip",
        ),
    ],
    ids=["dotdot", "absolute", "symlink", "unknown-role", "no-main", "garbage", "empty", "bomb"],
)
async def test_bad_code_zip_is_rejected_and_not_stored(  # type: ignore[no-untyped-def]
    stub, alice: Caller, design_id: str, zip_bytes: bytes, status: grpc.StatusCode, fragment: str
) -> None:
    code, detail, _ = await status_of(
        stub.PushCode(pb.PushCodeRequest(design_id=design_id, zip=zip_bytes), metadata=md(alice))
    )
    assert code == status and fragment in detail
    listed = await stub.ListCode(pb.ListCodeRequest(design_id=design_id), metadata=md(alice))
    assert list(listed.items) == []


async def test_oversized_zip_is_resource_exhausted(stub, alice: Caller, design_id: str) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in GOOD.items():
            zf.writestr(name, data)
        zf.writestr("trainer/blob.bin", os.urandom(65 * 1024 * 1024))
    big = buf.getvalue()
    assert len(big) > 64 * 1024 * 1024
    code, detail, err = await status_of(
        stub.PushCode(pb.PushCodeRequest(design_id=design_id, zip=big), metadata=md(alice))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and err == "too_large"
    assert "limit is 67108864 bytes" in detail
    listed = await stub.ListCode(pb.ListCodeRequest(design_id=design_id), metadata=md(alice))
    assert list(listed.items) == []


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"datasets": {"default": ["no-such-dataset"]}}, "unknown dataset 'no-such-dataset'"),
        ({"datasets": {"elsewhere": ["digits"]}}, "group 'elsewhere'"),
        ({"datasets": {"default": ["digits"]}, "rounds": 0}, "rounds"),
        ({"datasets": {"default": ["digits"]}, "min_trainers": 3}, "min_trainers is 3"),
        ({"datasets": {}}, "lists no datasets"),
        ({"datasets": {"default": ["digits"]}, "surprise": 1}, "surprise"),
    ],
)
async def test_bad_job_is_rejected_and_not_stored(  # type: ignore[no-untyped-def]
    stub, alice: Caller, design_id: str, spec: dict, fragment: str, controller
) -> None:
    await stub.PushCode(
        pb.PushCodeRequest(design_id=design_id, zip=central_code()), metadata=md(alice)
    )
    node = await stub.CreateNode(pb.CreateNodeRequest(name="n1"), metadata=md(alice))
    await stub.CreateDataset(
        pb.CreateDatasetRequest(name="digits", node_id=node.node.id), metadata=md(alice)
    )
    code, detail, _ = await status_of(
        stub.CreateJob(
            pb.CreateJobRequest(name="j", design_id=design_id, spec_json=json.dumps(spec)),
            metadata=md(alice),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in detail
    assert list((await stub.ListJobs(pb.ListRequest(), metadata=md(alice))).items) == []
    assert await controller.store.list_tasks() == []


async def test_job_without_code_or_with_bad_json(stub, alice: Caller, design_id: str) -> None:  # type: ignore[no-untyped-def]
    code, detail, _ = await status_of(
        stub.CreateJob(
            pb.CreateJobRequest(name="j", design_id=design_id, spec_json="{}"), metadata=md(alice)
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "push code" in detail
    await stub.PushCode(
        pb.PushCodeRequest(design_id=design_id, zip=central_code()), metadata=md(alice)
    )
    code, detail, _ = await status_of(
        stub.CreateJob(
            pb.CreateJobRequest(name="j", design_id=design_id, spec_json="{oops"),
            metadata=md(alice),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not valid JSON" in detail
    code, detail, _ = await status_of(
        stub.CreateJob(
            pb.CreateJobRequest(name="j", design_id=design_id, code_version=7, spec_json="{}"),
            metadata=md(alice),
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and "code version 7" in detail


async def test_bad_names_and_fields(stub, alice: Caller) -> None:  # type: ignore[no-untyped-def]
    code, detail, _ = await status_of(
        stub.CreateProject(pb.CreateProjectRequest(name="has space"), metadata=md(alice))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "name" in detail
    code, detail, _ = await status_of(
        stub.CreateDataset(pb.CreateDatasetRequest(name="d"), metadata=md(alice))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "node_id is required" in detail
    code, detail, _ = await status_of(
        stub.CreateToken(
            pb.CreateTokenRequest(user_id=alice.subject, ttl_seconds=-5), metadata=md(alice)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ttl_seconds" in detail
    await stub.CreateProject(pb.CreateProjectRequest(name="p"), metadata=md(alice))
    code, _, err = await status_of(
        stub.CreateProject(pb.CreateProjectRequest(name="p"), metadata=md(alice))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and err == "already_exists"
