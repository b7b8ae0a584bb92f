"""Two users on the real stack: every cross-user read, update and delete answers 404 and
changes nothing; a node credential reaches only its own node's tasks."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx

FIXTURES = Path(__file__).parents[1] / "fixtures" / "designs"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("trainer/main.py", "print('t')\n")
        zf.writestr("aggregator/main.py", "print('a')\n")
    return buf.getvalue()


def _ok(resp: httpx.Response) -> dict:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json() if resp.content else {}


def _user(admin: httpx.Client, stack, name: str) -> tuple[str, httpx.Client]:
    user = _ok(admin.post("/v1/users", json={"name": name, "email": f"{name}@example.org"}))
    token = _ok(admin.post(f"/v1/users/{user['id']}/tokens", json={"description": "test"}))
    return user["id"], stack.client(token["token"])


def _node(client: httpx.Client, name: str, stack) -> tuple[dict, httpx.Client]:
    created = _ok(client.post("/v1/nodes", json={"name": name, "labels": {"site": name}}))
    enrolled = _ok(
        httpx.post(
            f"{stack.api_url}/v1/nodes/enroll",
            json={"enrolment_token": created["enrolment_token"], "facts": {}},
        )
    )
    return created["node"], stack.client(enrolled["credential"])


def test_cross_user_access_is_always_404_and_changes_nothing(stack) -> None:
    with stack.client() as admin:
        alice_id, alice = _user(admin, stack, "alice-iso")
        bob_id, bob = _user(admin, stack, "bob-iso")
    schema = json.loads((FIXTURES / "central.json").read_text())["design"]

    # alice's resources
    project = _ok(alice.post("/v1/projects", json={"name": "alice-proj", "description": "p"}))
    node, alice_node = _node(alice, "alice-silo", stack)
    dataset = _ok(
        alice.post("/v1/datasets", json={"name": "a-data", "node_id": node["id"], "format": "npz"})
    )
    design = _ok(alice.post("/v1/designs", json={"name": "a-design", "schema": schema}))
    code = _ok(
        alice.post(
            f"/v1/designs/{design['id']}/code",
            content=_zip(),
            headers={"Content-Type": "application/zip"},
        )
    )
    spec = {"rounds": 2, "datasets": {"default": [dataset["id"]]}}
    job = _ok(
        alice.post("/v1/jobs", json={"name": "a-job", "design_id": design["id"], "spec": spec})
    )
    tasks = _ok(alice.get(f"/v1/jobs/{job['id']}/tasks"))["items"]
    trainer = next(t for t in tasks if t["role"] == "trainer")
    aggregator = next(t for t in tasks if t["role"] == "aggregator")
    _ok(
        alice_node.post(
            f"/v1/agent/tasks/{trainer['id']}/endpoint", json={"endpoint": "127.0.0.1:5"}
        )
    )

    reads = [
        f"/v1/users/{alice_id}",
        f"/v1/projects/{project['id']}",
        f"/v1/nodes/{node['id']}",
        f"/v1/datasets/{dataset['id']}",
        f"/v1/designs/{design['id']}",
        f"/v1/designs/{design['id']}/code",
        f"/v1/designs/{design['id']}/code/{code['version']}",
        f"/v1/designs/{design['id']}/code/latest",
        f"/v1/designs/{design['id']}/code/{code['version']}/zip",
        f"/v1/jobs/{job['id']}",
        f"/v1/jobs/{job['id']}/tasks",
        f"/v1/jobs/{job['id']}/logs",
        f"/v1/jobs/{job['id']}/metrics",
    ]

    def snapshot() -> list:
        return [alice.get(p).content for p in reads]

    before = snapshot()
    attempts: list[tuple[str, str, dict]] = [("GET", p, {}) for p in reads]
    attempts += [
        ("PATCH", f"/v1/users/{alice_id}", {"json": {"email": "bob@evil.org", "admin": True}}),
        ("POST", f"/v1/users/{alice_id}/tokens", {"json": {"description": "steal"}}),
        ("PATCH", f"/v1/projects/{project['id']}", {"json": {"description": "bob was here"}}),
        ("PUT", f"/v1/projects/{project['id']}/members/{bob_id}", {}),
        ("DELETE", f"/v1/projects/{project['id']}/members/{alice_id}", {}),
        ("PATCH", f"/v1/nodes/{node['id']}", {"json": {"labels": {"site": "bob"}}}),
        ("POST", f"/v1/nodes/{node['id']}/revoke", {}),
        ("PATCH", f"/v1/datasets/{dataset['id']}", {"json": {"description": "mine now"}}),
        ("PATCH", f"/v1/designs/{design['id']}", {"json": {"description": "mine now"}}),
        (
            "POST",
            f"/v1/designs/{design['id']}/code",
            {"content": _zip(), "headers": {"Content-Type": "application/zip"}},
        ),
        ("PATCH", f"/v1/jobs/{job['id']}", {"json": {"spec": {"rounds": 99}}}),
        ("POST", f"/v1/jobs/{job['id']}/start", {}),
        ("POST", f"/v1/jobs/{job['id']}/stop", {}),
        ("POST", "/v1/jobs", {"json": {"name": "b", "design_id": design["id"], "spec": spec}}),
        ("POST", "/v1/datasets", {"json": {"name": "b", "node_id": node["id"]}}),
        ("DELETE", f"/v1/designs/{design['id']}/code/{code['version']}", {}),
        ("DELETE", f"/v1/jobs/{job['id']}", {}),
        ("DELETE", f"/v1/designs/{design['id']}", {}),
        ("DELETE", f"/v1/datasets/{dataset['id']}", {}),
        ("DELETE", f"/v1/nodes/{node['id']}", {}),
        ("DELETE", f"/v1/projects/{project['id']}", {}),
        ("DELETE", f"/v1/users/{alice_id}", {}),
    ]
    answers = [(m, p, bob.request(m, p, **kw)) for m, p, kw in attempts]
    wrong = [(m, p, r.status_code, r.text[:120]) for m, p, r in answers if r.status_code != 404]
    print(f"cross-user attempts: {len(answers)}, answered 404: {len(answers) - len(wrong)}")
    assert not wrong
    assert all(r.json()["code"] == "not_found" for _, _, r in answers)
    assert snapshot() == before, "a cross-user request changed alice's resources"
    assert _ok(bob.get("/v1/jobs"))["items"] == []
    assert _ok(bob.get("/v1/designs"))["items"] == []

    # bob's node credential cannot touch alice's tasks; alice's node cannot touch the aggregator
    _, bob_node = _node(bob, "bob-silo", stack)
    node_attempts = [
        (bob_node, "GET", f"/v1/agent/tasks/{trainer['id']}", {}),
        (bob_node, "GET", f"/v1/agent/tasks/{trainer['id']}/code", {}),
        (bob_node, "GET", f"/v1/agent/tasks/{trainer['id']}/peers", {}),
        (
            bob_node,
            "POST",
            f"/v1/agent/tasks/{trainer['id']}/status",
            {"json": {"state": "failed"}},
        ),
        (
            bob_node,
            "POST",
            f"/v1/agent/tasks/{trainer['id']}/metrics",
            {"json": {"metrics": [{"key": "acc", "value": 1.0, "step": 1}]}},
        ),
        (
            bob_node,
            "POST",
            f"/v1/agent/tasks/{trainer['id']}/endpoint",
            {"json": {"endpoint": "6.6.6.6:1"}},
        ),
        (alice_node, "GET", f"/v1/agent/tasks/{aggregator['id']}", {}),
    ]
    node_answers = [(m, p, c.request(m, p, **kw)) for c, m, p, kw in node_attempts]
    node_wrong = [(m, p, r.status_code) for m, p, r in node_answers if r.status_code != 404]
    refused = len(node_answers) - len(node_wrong)
    print(f"cross-node attempts: {len(node_answers)}, answered 404: {refused}")
    assert not node_wrong
    assert _ok(bob_node.get("/v1/agent/tasks"))["items"] == []
    assert snapshot() == before
    peers = _ok(alice_node.get(f"/v1/agent/tasks/{trainer['id']}/peers"))["items"]
    assert [p["endpoint"] for p in peers] == ["127.0.0.1:5"]
    for client in (alice, bob, alice_node, bob_node):
        client.close()


def test_sharing_through_a_project_opens_exactly_what_it_shares(stack) -> None:
    with stack.client() as admin:
        _, carol = _user(admin, stack, "carol-iso")
        dave_id, dave = _user(admin, stack, "dave-iso")
    schema = json.loads((FIXTURES / "central.json").read_text())["design"]
    project = _ok(carol.post("/v1/projects", json={"name": "shared-proj"}))
    shared = _ok(
        carol.post(
            "/v1/designs", json={"name": "shared", "project_id": project["id"], "schema": schema}
        )
    )
    private = _ok(carol.post("/v1/designs", json={"name": "private", "schema": schema}))
    assert dave.get(f"/v1/designs/{shared['id']}").status_code == 404

    _ok(carol.put(f"/v1/projects/{project['id']}/members/{dave_id}"))
    assert _ok(dave.get(f"/v1/designs/{shared['id']}"))["name"] == "shared"
    assert dave.get(f"/v1/designs/{private['id']}").status_code == 404
    assert [d["id"] for d in _ok(dave.get("/v1/designs"))["items"]] == [shared["id"]]

    _ok(carol.delete(f"/v1/projects/{project['id']}/members/{dave_id}"))
    assert dave.get(f"/v1/designs/{shared['id']}").status_code == 404
    for client in (carol, dave):
        client.close()
