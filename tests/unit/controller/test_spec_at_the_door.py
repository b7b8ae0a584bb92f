"""Validation at the door: a job spec a task would fail on is refused at create and at update
with a 400 naming the field, nothing is stored, and ``flame.simulate`` refuses the same spec
with the same words (one code path: :mod:`flame_spec`)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flame.errors import ConfigError
from flame.simulation import simulate_async
from flame_apiserver import ApiserverSettings, create_app
from flame_controller.server import RunningController
from flame_proto.v1 import control_pb2 as pb
from flame_service.auth import Caller

from .conftest import ADMIN_TOKEN, CENTRAL_DESIGN, central_code, design_json, md

NAN, INF = math.nan, math.inf
GOOD: dict[str, Any] = {
    "rounds": 2,
    "datasets": {"default": ["digits-0", "digits-1", "digits-2"]},
    "hyperparameters": {"lr": 0.1, "epochs": 1},
    "min_trainers": 2,
}

# (field path, bad value): the findings of the issue and their relatives
BAD: list[tuple[str, Any]] = [
    ("optimizer", {"name": "nope"}),
    ("optimizer", {"name": "multi_krum", "kwargs": {"f": -5}}),
    ("hyperparameters.lr", NAN),
    ("hyperparameters.lr", INF),
    ("hyperparameters.nested", {"a": [1, -INF]}),
    ("round_timeout", INF),
    ("max_run_time", NAN),
    ("rounds", "10"),
    ("rounds", 0),
    ("rounds", 100_001),
    ("round_timeout", 0),
    ("round_timeout", 86_401),
    ("hyperparameters.epochs", 0),
    ("hyperparameters.local_steps", "5"),
    ("selector", {"name": "random", "kwargs": {"k": "3"}}),
    ("optimizer", {"name": "fedadam", "kwargs": {"eta": NAN}}),
    ("optimizer", {"name": "krum", "kwargs": {"f": 1}}),  # needs 2f + 3 = 5 trainers, has 3
    ("min_trainers", True),
    ("quorum_grace", -1),
    ("quorum_grace", 86_401),
    ("quorum_grace", NAN),
    ("tracking", {"enabled": False, "uri": "http://127.0.0.1:5000"}),  # which one is meant?
    ("tracking", {"enabled": "no"}),
]


def with_bad(path: str, value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(GOOD))
    head, _, tail = path.partition(".")
    if tail:
        spec.setdefault(head, {})[tail] = value
    else:
        spec[head] = value
    return spec


@dataclass
class Door:
    rest: httpx.AsyncClient
    stub: Any
    alice: Caller
    design_id: str


@pytest.fixture
async def door(stub, controller: RunningController) -> AsyncIterator[Door]:  # type: ignore[no-untyped-def]
    principal = await stub.Authenticate(pb.AuthenticateRequest(token=ADMIN_TOKEN))
    admin = Caller("admin", principal.subject)
    user = await stub.CreateUser(pb.CreateUserRequest(name="alice"), metadata=md(admin))
    secret = await stub.CreateToken(pb.CreateTokenRequest(user_id=user.id), metadata=md(admin))
    alice = Caller("user", user.id)
    node = await stub.CreateNode(pb.CreateNodeRequest(name="silo"), metadata=md(alice))
    for i in range(3):
        await stub.CreateDataset(
            pb.CreateDatasetRequest(name=f"digits-{i}", node_id=node.node.id, uri=f"/d/{i}"),
            metadata=md(alice),
        )
    design = await stub.CreateDesign(
        pb.CreateDesignRequest(name="central", schema_json=design_json()), metadata=md(alice)
    )
    await stub.PushCode(
        pb.PushCodeRequest(design_id=design.id, zip=central_code()), metadata=md(alice)
    )
    app = create_app(
        ApiserverSettings(
            controller_address=controller.address,
            service_token_file=controller.settings.service_token_file,
        )
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://flame",
        headers={"Authorization": f"Bearer {secret.token}"},
    ) as rest:
        yield Door(rest, stub, alice, design.id)


async def create(door: Door, spec: dict[str, Any], name: str = "demo") -> httpx.Response:
    # json.dumps writes NaN / Infinity (and 1e999 as Infinity) as clients in the wild send them
    payload = {"name": name, "design_id": door.design_id, "code_version": 0, "spec": spec}
    return await door.rest.post(
        "/v1/jobs", content=json.dumps(payload), headers={"Content-Type": "application/json"}
    )


async def simulate_error(spec: dict[str, Any]) -> str:
    """What ``flame.simulate`` says about ``spec`` (without the "invalid job spec: " prefix)."""
    with pytest.raises(ConfigError) as info:
        await simulate_async((CENTRAL_DESIGN, spec))
    return str(info.value).split(": ", 1)[1]


async def test_the_good_spec_is_accepted(door: Door) -> None:
    resp = await create(door, GOOD)
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(("path", "value"), BAD, ids=[f"{p}={v!r}" for p, v in BAD])
async def test_bad_specs_are_refused_at_create_naming_the_field(
    door: Door, path: str, value: Any
) -> None:
    spec = with_bad(path, value)
    resp = await create(door, spec)
    assert resp.status_code == 400, resp.text
    problem = resp.json()
    assert problem["code"] == "invalid_argument"
    head = path.split(".")[0]
    assert f"{head}" in problem["detail"], problem["detail"]
    listed = await door.rest.get("/v1/jobs")
    assert listed.json()["items"] == []  # nothing stored
    # flame.simulate refuses the very same spec with the very same words
    assert await simulate_error(spec) in problem["detail"]


@pytest.mark.parametrize(("path", "value"), BAD[:8], ids=[f"{p}={v!r}" for p, v in BAD[:8]])
async def test_bad_specs_are_refused_at_update_and_the_job_is_unchanged(
    door: Door, path: str, value: Any
) -> None:
    job = (await create(door, GOOD)).json()
    resp = await door.rest.patch(
        f"/v1/jobs/{job['id']}",
        content=json.dumps({"spec": with_bad(path, value)}),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 400, resp.text
    assert path.split(".")[0] in resp.json()["detail"]
    after = (await door.rest.get(f"/v1/jobs/{job['id']}")).json()
    assert after["spec"] == job["spec"] and after["version"] == job["version"]


NUMBERS = st.one_of(
    st.sampled_from([NAN, INF, -INF, 1e999, -1, 0, True, False, None]),
    st.text(max_size=3),
    st.integers(max_value=0),
    st.integers(min_value=100_001_000, max_value=2**70),
)
FIELDS = st.sampled_from(
    [
        "rounds",
        "min_trainers",
        "round_timeout",
        "max_run_time",
        "seed",
        "hyperparameters.lr",
        "hyperparameters.epochs",
        "hyperparameters.batch_size",
        "hyperparameters.local_steps",
    ]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=FIELDS, value=NUMBERS)
async def test_a_family_of_bad_numbers_is_refused_by_both_paths(
    door: Door, path: str, value: Any
) -> None:
    if path == "seed" and type(value) is int and 0 <= value < 2**63:
        return  # a good seed
    spec = with_bad(path, value)
    resp = await create(door, spec, name="fuzz")
    assert resp.status_code == 400, (path, value, resp.text)
    assert path.split(".")[-1] in resp.json()["detail"]
    assert await simulate_error(spec) in resp.json()["detail"]


@pytest.mark.parametrize(
    "uri",
    ["sqlite:////var/lib/flame/data/flame.db", "http://tracking.elsewhere:5000", "file:///tmp/x"],
)
async def test_a_tracking_uri_the_platform_does_not_serve_is_refused(door: Door, uri: str) -> None:
    resp = await create(door, {**GOOD, "tracking": {"uri": uri}})
    assert resp.status_code == 400, resp.text
    assert "tracking.uri" in resp.json()["detail"]
    assert (await door.rest.get("/v1/jobs")).json()["items"] == []
