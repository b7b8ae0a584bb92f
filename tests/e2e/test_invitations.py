"""Project invitations on the real stack: REST, flamectl, the audit trail, and what a leaked
or reused link can (not) do."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Flamectl, Stack


def _ok(resp: httpx.Response) -> dict:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json() if resp.content else {}


def _user(admin: httpx.Client, stack: Stack, name: str) -> tuple[str, str]:
    user = _ok(admin.post("/v1/users", json={"name": name}))
    token = _ok(admin.post(f"/v1/users/{user['id']}/tokens", json={"description": "test"}))
    return user["id"], token["token"]


def test_invite_a_new_person_over_rest(stack: Stack) -> None:
    with stack.client() as admin:
        _, alice_token = _user(admin, stack, "alice-inv")
    alice = stack.client(alice_token)
    project = _ok(alice.post("/v1/projects", json={"name": "shared", "description": ""}))
    issued = _ok(alice.post(f"/v1/projects/{project['id']}/invitations", json={"note": "bob"}))
    assert issued["link"] == "/dashboard/#/join/" + issued["secret"]
    listed = _ok(alice.get(f"/v1/projects/{project['id']}/invitations"))["items"]
    assert [i["id"] for i in listed] == [issued["invitation"]["id"]]
    assert issued["secret"] not in str(listed)

    # an invitee cannot ask for admin: the body refuses unknown fields
    anonymous = httpx.Client(base_url=stack.api_url, timeout=30)
    sneaky = anonymous.post(
        "/v1/invitations/accept",
        json={"secret": issued["secret"], "name": "bob-inv", "admin": True},
    )
    assert sneaky.status_code == 422
    joined = _ok(
        anonymous.post(
            "/v1/invitations/accept", json={"secret": issued["secret"], "name": "bob-inv"}
        )
    )
    assert joined["user"]["name"] == "bob-inv" and joined["user"]["admin"] is False
    bob = stack.client(joined["token"]["token"])
    assert _ok(bob.get(f"/v1/projects/{project['id']}"))["members"] == [joined["user"]["id"]]
    assert _ok(bob.get("/v1/whoami"))["subject"] == joined["user"]["id"]

    # reused: refused, with no new account; the member may not invite or see invitations
    again = anonymous.post(
        "/v1/invitations/accept", json={"secret": issued["secret"], "name": "eve-inv"}
    )
    assert again.status_code == 404, again.text
    assert bob.post(f"/v1/projects/{project['id']}/invitations", json={}).status_code == 403
    used = _ok(alice.get(f"/v1/projects/{project['id']}/invitations"))["items"][0]
    assert used["used_by"] == joined["user"]["id"] and used["used_at"]

    # every change is in the audit trail, and no secret is
    with stack.client() as admin:
        entries = _ok(admin.get("/v1/audit", params={"limit": 500}))["items"]
    actions = {(e["action"], e["outcome"]) for e in entries}
    assert ("CreateInvitation", "ok") in actions
    assert ("AcceptInvitation", "ok") in actions
    assert ("AcceptInvitation", "not_found") in actions
    assert issued["secret"] not in str(entries)


def test_revoked_links_and_strangers(stack: Stack) -> None:
    with stack.client() as admin:
        _, alice_token = _user(admin, stack, "alice-rev")
        _, carol_token = _user(admin, stack, "carol-rev")
    alice, carol = stack.client(alice_token), stack.client(carol_token)
    project = _ok(alice.post("/v1/projects", json={"name": "rev", "description": ""}))
    issued = _ok(alice.post(f"/v1/projects/{project['id']}/invitations", json={}))
    inv_id = issued["invitation"]["id"]
    # a stranger sees nothing of it
    assert carol.get(f"/v1/projects/{project['id']}/invitations").status_code == 404
    assert carol.delete(f"/v1/invitations/{inv_id}").status_code == 404
    assert carol.post(f"/v1/projects/{project['id']}/invitations", json={}).status_code == 404
    too_long = alice.post(
        f"/v1/projects/{project['id']}/invitations", json={"ttl_seconds": 8 * 24 * 3600}
    )
    assert too_long.status_code == 422
    assert _ok(alice.delete(f"/v1/invitations/{inv_id}"))["revoked"] is True
    late = carol.post("/v1/invitations/accept", json={"secret": issued["secret"]})
    assert late.status_code == 404
    assert carol.get(f"/v1/projects/{project['id']}").status_code == 404


def test_flamectl_invite_and_join(stack: Stack, flamectl: Flamectl, tmp_path) -> None:
    with stack.client() as admin:
        _, alice_token = _user(admin, stack, "alice-cli")
        dave_id, dave_token = _user(admin, stack, "dave-cli")
    flamectl("login", "--server", stack.api_url, "--token", alice_token)
    project = flamectl("project", "create", "cli-proj", "-o", "json").stdout
    project_id = httpx.Response(200, text=project).json()["id"]
    out = flamectl("project", "invite", project_id, "--note", "dave", "--ttl", "3600").stdout
    link = out.strip().splitlines()[-1]
    assert link.startswith(stack.api_url + "/dashboard/#/join/flm_invite_")
    listed = flamectl("project", "invitations", project_id).stdout
    assert "dave" in listed and "flm_invite_" not in listed

    dave = Flamectl(tmp_path / "dave" / "config.yaml")
    dave("login", "--server", stack.api_url, "--token", dave_token)
    assert "joined project cli-proj" in dave("project", "join", link).stdout
    assert dave("project", "join", link, check=False).code != 0
    members = flamectl("project", "get", project_id, "-o", "json").stdout
    assert dave_id in members
