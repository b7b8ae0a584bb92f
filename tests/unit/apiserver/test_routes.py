"""apiserver routes against an in-test controller: auth, conversions, errors, limits, metrics."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from flame_apiserver import ApiserverSettings, create_app
from flame_proto.v1 import control_pb2
from tests.unit.apiserver.conftest import ADMIN_TOKEN, NODE_TOKEN, USER_TOKEN

PROBLEM = "application/problem+json"
SCHEMA = {"roles": [{"name": "trainer"}, {"name": "aggregator"}], "channels": []}


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://flame.dev/errors/{code}"
    assert body["title"] and body["detail"]
    return body


async def test_whoami_reports_the_principal_of_the_token(api) -> None:
    resp = await api.call("GET", "/v1/whoami")
    assert resp.status_code == 200
    assert resp.json() == {"scope": "user", "subject": "u-alice", "read_only": False}
    node = await api.call("GET", "/v1/whoami", token="flm_node_n1")
    assert node.json() == {"scope": "node", "subject": "n-1", "read_only": False}


async def test_missing_or_unknown_token_is_401_with_a_bearer_challenge(api) -> None:
    missing = await api.call("GET", "/v1/designs", token=None)
    assert_problem(missing, 401, "unauthenticated")
    assert missing.headers["www-authenticate"] == "Bearer"
    unknown = await api.call("GET", "/v1/designs", token="flm_user_nobody")
    assert_problem(unknown, 401, "unauthenticated")
    assert not [c for c in api.fake.calls if c[0] == "ListDesigns"]  # never forwarded


async def test_create_design_sends_schema_as_json_and_the_caller_as_metadata(api) -> None:
    resp = await api.call(
        "POST", "/v1/designs", json={"name": "mnist", "description": "d", "schema": SCHEMA}
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["schema"] == SCHEMA  # an object again, not a string
    assert body["created_at"].startswith("2023-11-14T22:13:20")
    name, caller, request = api.fake.calls[-1]
    assert name == "CreateDesign"
    assert (caller.scope, caller.subject) == ("user", "u-alice")
    assert json.loads(request.schema_json) == SCHEMA
    got = await api.call("GET", f"/v1/designs/{body['id']}")
    assert got.json() == body


@pytest.mark.parametrize(
    ("status", "code", "http", "expected_code"),
    [
        ("INVALID_ARGUMENT", "invalid_argument", 400, "invalid_argument"),
        ("NOT_FOUND", "not_found", 404, "not_found"),
        ("ALREADY_EXISTS", "already_exists", 409, "already_exists"),
        ("FAILED_PRECONDITION", "failed_precondition", 409, "failed_precondition"),
        ("ABORTED", "conflict", 409, "conflict"),
        ("PERMISSION_DENIED", "permission_denied", 403, "permission_denied"),
        ("UNAUTHENTICATED", "unauthenticated", 401, "unauthenticated"),
        ("RESOURCE_EXHAUSTED", "too_large", 413, "too_large"),
        ("UNAVAILABLE", "unavailable", 503, "unavailable"),
        ("INTERNAL", "internal", 500, "internal"),
        ("ABORTED", "", 409, "conflict"),  # no trailing code: the status decides
    ],
)
async def test_grpc_errors_map_to_problem_json(api, status, code, http, expected_code) -> None:
    name = f"fail-{status}-{code}" if code else f"fail-{status}"
    resp = await api.call("POST", "/v1/designs", json={"name": name, "schema": {}})
    body = assert_problem(resp, http, expected_code)
    if http == 500:
        assert body["detail"] == "internal error"  # no controller internals leak
    else:
        assert status.lower() in body["detail"]


async def test_an_unexpected_failure_is_a_500_problem_without_internals(api) -> None:
    body = assert_problem(await api.call("GET", "/v1/designs/d-garbage"), 500, "internal")
    assert body["detail"] == "internal error"


async def test_missing_resource_is_404_problem(api) -> None:
    assert_problem(await api.call("GET", "/v1/designs/d-missing"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"schema": SCHEMA},  # no name
        {"name": "x", "schema": "not an object"},
        {"name": 3, "schema": SCHEMA},  # no coercion of numbers to strings
        {"name": "x", "schema": SCHEMA, "unexpected": 1},
    ],
)
async def test_invalid_bodies_are_422_problem_and_never_forwarded(api, body) -> None:
    assert_problem(await api.call("POST", "/v1/designs", json=body), 422, "invalid_argument")
    assert not [c for c in api.fake.calls if c[0] == "CreateDesign"]


async def test_malformed_json_is_422_problem(api) -> None:
    resp = await api.call(
        "POST", "/v1/designs", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert_problem(resp, 422, "invalid_argument")


async def test_json_body_over_the_limit_is_413_before_reaching_the_controller(api) -> None:
    big = {"name": "big", "schema": {"pad": "x" * 5000}}
    assert_problem(await api.call("POST", "/v1/designs", json=big), 413, "too_large")

    async def chunks():  # no Content-Length: counted while reading
        yield b'{"name": "big", "schema": {"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    streamed = await api.call(
        "POST", "/v1/designs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(streamed, 413, "too_large")
    assert not [c for c in api.fake.calls if c[0] == "CreateDesign"]


async def test_code_upload_has_its_own_larger_limit(api) -> None:
    blob = b"PK" + b"z" * 10_000  # above the JSON limit, below the code limit
    resp = await api.call(
        "POST", "/v1/designs/d-1/code", content=blob, headers={"Content-Type": "application/zip"}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["size_bytes"] == len(blob)
    assert api.fake.code["d-1"] == blob
    too_big = b"z" * (api.settings.max_code_bytes + 1)
    resp = await api.call(
        "POST", "/v1/designs/d-1/code", content=too_big, headers={"Content-Type": "application/zip"}
    )
    assert_problem(resp, 413, "too_large")
    empty = await api.call("POST", "/v1/designs/d-1/code", content=b"")
    assert_problem(empty, 400, "invalid_argument")


async def test_pagination_forwards_limit_and_token_and_returns_the_next_token(api) -> None:
    for i in range(3):
        await api.call("POST", "/v1/designs", json={"name": f"d{i}", "schema": {}})
    first = await api.call("GET", "/v1/designs", params={"limit": 2})
    assert [d["name"] for d in first.json()["items"]] == ["d0", "d1"]
    token = first.json()["next_page_token"]
    assert token
    second = await api.call("GET", "/v1/designs", params={"limit": 2, "page_token": token})
    assert [d["name"] for d in second.json()["items"]] == ["d2"]
    assert second.json()["next_page_token"] == ""
    assert_problem(
        await api.call("GET", "/v1/designs", params={"limit": 501}), 422, "invalid_argument"
    )


async def test_scopes_keep_nodes_and_users_on_their_own_routes(api) -> None:
    node_on_user = await api.call("GET", "/v1/designs", token="flm_node_n1")
    assert_problem(node_on_user, 403, "permission_denied")
    user_on_node = await api.call("GET", "/v1/agent/tasks/t-1")
    assert_problem(user_on_node, 403, "permission_denied")
    assert not [c for c in api.fake.calls if c[0] in ("ListDesigns", "FetchTask")]


async def test_enrolment_needs_no_bearer_and_returns_the_notifier_address(api) -> None:
    resp = await api.call(
        "POST",
        "/v1/nodes/enroll",
        token=None,
        json={"enrolment_token": "enrol-me", "facts": {"os": "linux"}},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["credential"] == "flm_node_n1"
    assert body["notifier"] == "10.0.0.5:10101"
    assert body["node"]["presence"] == "online"
    bad = await api.call("POST", "/v1/nodes/enroll", token=None, json={"enrolment_token": "wrong"})
    assert_problem(bad, 401, "unauthenticated")


async def test_agent_task_bundle_has_the_config_as_an_object_and_code_as_bytes(api) -> None:
    resp = await api.call("GET", "/v1/agent/tasks/t-1", token="flm_node_n1")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["config"] == {"job_id": "j-1", "role": "trainer"}
    assert body["task"]["id"] == "t-1"
    assert body["code"]["version"] == 2
    _, caller, _ = api.fake.calls[-1]
    assert (caller.scope, caller.subject) == ("node", "n-1")
    code = await api.call("GET", "/v1/agent/tasks/t-1/code", token="flm_node_n1")
    assert code.headers["content-type"] == "application/zip"
    assert code.headers["x-flame-sha256"] == "cd" * 32
    assert code.content.startswith(b"PK\x05\x06")


async def test_agent_logs_are_forwarded_with_timestamps(api) -> None:
    lines = [
        {"task_id": "t-1", "stream": "stdout", "line": "round 1", "at": "2026-01-02T03:04:05Z"},
        {"task_id": "t-1", "stream": "stderr", "line": "warn"},
    ]
    resp = await api.call("POST", "/v1/agent/logs", token="flm_node_n1", json={"lines": lines})
    assert resp.status_code == 204, resp.text
    _, _, request = api.fake.calls[-1]
    assert [ln.line for ln in request.lines] == ["round 1", "warn"]
    assert request.lines[0].at.seconds == 1767323045
    assert not request.lines[1].HasField("at")
    bad = await api.call(
        "POST",
        "/v1/agent/logs",
        token="flm_node_n1",
        json={"lines": [{"task_id": "t", "stream": "tty", "line": "x"}]},
    )
    assert_problem(bad, 422, "invalid_argument")


async def test_agent_metrics_are_forwarded_with_the_time_they_were_measured(api) -> None:
    metrics = [
        {"key": "accuracy", "value": 0.9, "step": 3, "at": "2026-01-02T03:04:05Z"},
        {"key": "loss", "value": 0.1, "step": 3},
    ]
    resp = await api.call(
        "POST", "/v1/agent/tasks/t-1/metrics", token="flm_node_n1", json={"metrics": metrics}
    )
    assert resp.status_code == 204, resp.text
    _, _, request = api.fake.calls[-1]
    assert [(m.key, m.step) for m in request.metrics] == [("accuracy", 3), ("loss", 3)]
    assert request.metrics[0].at.seconds == 1767323045
    assert not request.metrics[1].HasField("at")


async def test_job_logs_filter_by_source_node_and_level_and_report_dropped(api) -> None:
    resp = await api.call(
        "GET", "/v1/jobs/j-1/logs?source=controller&node_id=n-1&level=warning&after_seq=2"
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["dropped"] == 3 and body["last_seq"] == 7
    (line,) = body["lines"]
    assert (line["source"], line["level"], line["node_id"], line["stream"]) == (
        "controller",
        "warning",
        "n-1",
        "service",
    )
    name, _, request = api.fake.calls[-1]
    assert name == "GetLogs"
    assert (request.source, request.node_id, request.min_level, request.after_seq) == (
        "controller",
        "n-1",
        "warning",
        2,
    )
    bad = await api.call("GET", "/v1/jobs/j-1/logs?source=kernel")
    assert_problem(bad, 422, "invalid_argument")
    bad = await api.call("GET", "/v1/jobs/j-1/logs?level=loud")
    assert_problem(bad, 422, "invalid_argument")


async def test_delete_answers_204_without_a_body(api) -> None:
    resp = await api.call("DELETE", "/v1/jobs/j-1")
    assert resp.status_code == 204
    assert resp.content == b""
    assert api.fake.calls[-1][0] == "DeleteJob"


async def test_health_ready_and_metrics(api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).status_code == 200
    await api.call("GET", "/v1/designs/d-missing")
    await api.call("GET", "/v1/designs/d-other")
    assert (await api.client.get("/metrics")).status_code == 401
    assert (await api.call("GET", "/metrics", token="flm_not_a_token")).status_code == 401
    assert (await api.call("GET", "/metrics", token=USER_TOKEN)).status_code == 403
    assert (await api.call("GET", "/metrics", token=NODE_TOKEN)).status_code == 403
    text = (await api.call("GET", "/metrics", token=ADMIN_TOKEN)).text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("flame_apiserver_requests_total")
        and 'route="/v1/designs/{id}"' in ln
        and 'status="404"' in ln
    )
    assert line.endswith(" 2.0")
    assert "flame_apiserver_request_seconds_bucket" in text


async def test_metrics_token_reads_metrics_and_nothing_else(api, tmp_path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("flm_metrics_scraper\n")
    settings = api.settings.model_copy(update={"metrics_token_file": token_file})
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            scraper = {"Authorization": "Bearer flm_metrics_scraper"}
            resp = await client.get("/metrics", headers=scraper)
            assert resp.status_code == 200
            assert "flame_apiserver_request_seconds" in resp.text
            # the metrics token is no API token: the controller does not know it
            assert (await client.get("/v1/jobs", headers=scraper)).status_code == 401
            wrong = {"Authorization": "Bearer flm_metrics_scrapeR"}
            assert (await client.get("/metrics", headers=wrong)).status_code == 401
    finally:
        await app.state.controller.close()


async def test_unknown_routes_and_methods_are_problem_json(api) -> None:
    assert_problem(await api.call("GET", "/v1/nope"), 404, "not_found")
    resp = await api.call("PUT", "/v1/designs")
    assert resp.status_code == 405
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert resp.headers["allow"] == "GET, POST"


async def test_controller_down_is_503_and_not_ready() -> None:
    app = create_app(ApiserverSettings(controller_address="127.0.0.1:1", rpc_timeout_seconds=5))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        ready = await c.get("/readyz")
        assert_problem(ready, 503, "unavailable")
        resp = await c.get("/v1/whoami", headers={"Authorization": "Bearer x"})
        assert_problem(resp, 503, "unavailable")
        assert (await c.get("/healthz")).status_code == 200  # alive, just not ready
    await app.state.controller.close()


def test_openapi_documents_problem_responses_and_security() -> None:
    spec = create_app(ApiserverSettings()).openapi()
    op = spec["paths"]["/v1/jobs/{id}/start"]["post"]
    assert op["security"] == [{"HTTPBearer": []}]
    for status in ("400", "401", "403", "404", "409", "413", "422", "503"):
        assert "application/problem+json" in op["responses"][status]["content"]
    assert spec["paths"]["/v1/nodes/enroll"]["post"]["security"] == []
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    text = json.dumps(spec)
    for keyword in ('"ge"', '"le"', '"min_length"', '"max_length"'):  # pydantic names leaking
        assert keyword not in text
    size = spec["components"]["schemas"]["CreateDataset"]["properties"]["size_bytes"]
    assert (size["minimum"], size["maximum"]) == (0, 2**53 - 1)
    assert set(control_pb2.Job.DESCRIPTOR.fields_by_name) - {"spec_json"} <= set(
        spec["components"]["schemas"]["Job"]["properties"]
    )
    _ = grpc  # the fake's status names come from grpc.StatusCode


async def test_the_idempotency_key_header_reaches_the_controller_and_bad_keys_do_not(api) -> None:
    body = {"name": "mnist", "description": "d", "schema": SCHEMA}
    resp = await api.call("POST", "/v1/designs", json=body, headers={"Idempotency-Key": "k-1"})
    assert resp.status_code == 201, resp.text
    assert api.fake.idempotency_keys[-1] == "k-1"
    await api.call("POST", "/v1/designs", json=body)
    assert api.fake.idempotency_keys[-1] is None  # no header, no key
    sent = len(api.fake.calls)
    for bad in ("", "k" * 256, "caf\u00e9"):
        resp = await api.call(
            "POST", "/v1/designs", json=body, headers={"Idempotency-Key": bad.encode()}
        )
        assert_problem(resp, 422, "invalid_argument")
    assert len(api.fake.calls) == sent  # never forwarded
