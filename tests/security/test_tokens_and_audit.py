"""API tokens have scopes and expiry and can be revoked; every state-changing call is in an
audit log that only admins read."""

from __future__ import annotations

import asyncio
import time

from .conftest import ADMIN_TOKEN, Edge


async def _user_with_token(edge: Edge, name: str, **token: object) -> tuple[str, str]:
    async with edge.client(ADMIN_TOKEN) as api:
        user = (await api.post("/v1/users", json={"name": name})).json()
        secret = (await api.post(f"/v1/users/{user['id']}/tokens", json=token)).json()
    return user["id"], secret["token"]


async def test_a_read_only_token_queries_but_changes_nothing(edge: Edge) -> None:
    _, token = await _user_with_token(edge, "reader", scopes=["read"])
    async with edge.client(token) as api:
        assert (await api.get("/v1/projects")).status_code == 200
        resp = await api.post("/v1/projects", json={"name": "p1"})
        assert resp.status_code == 403, resp.text
        assert "read-only" in resp.json()["detail"]
        assert (await api.get("/v1/projects")).json()["items"] == []


async def test_an_unknown_scope_is_a_clear_400(edge: Edge) -> None:
    async with edge.client(ADMIN_TOKEN) as api:
        me = (await api.get("/v1/whoami")).json()["subject"]
        resp = await api.post(f"/v1/users/{me}/tokens", json={"scopes": ["root"]})
        assert resp.status_code == 422, resp.text
        assert len((await api.get(f"/v1/users/{me}/tokens")).json()["items"]) == 1


async def test_an_expired_token_is_refused(edge: Edge) -> None:
    _, token = await _user_with_token(edge, "brief", ttl_seconds=1)
    async with edge.client(token) as api:
        deadline = time.monotonic() + 60
        while (resp := await api.get("/v1/whoami")).status_code == 200:
            assert time.monotonic() < deadline, "the token never expired"
            await asyncio.sleep(0.2)
        assert resp.status_code == 401 and "expired" in resp.json()["detail"]


async def test_a_revoked_token_is_refused(edge: Edge) -> None:
    user_id, token = await _user_with_token(edge, "gone")
    async with edge.client(token) as api:
        tokens = (await api.get(f"/v1/users/{user_id}/tokens")).json()["items"]
        assert (await api.delete(f"/v1/tokens/{tokens[0]['id']}")).status_code == 204
        assert (await api.get("/v1/whoami")).status_code == 401


async def test_a_token_revoked_through_another_apiserver_stops_within_the_cache_bound(
    edge: Edge,
) -> None:
    user_id, token = await _user_with_token(edge, "elsewhere")
    near = edge.app()  # the apiserver process the token's holder uses
    cache = near.state.auth_cache
    now = [0.0]
    cache.clock = lambda: now[0]
    async with edge.client(token, app=near) as api:
        assert (await api.get("/v1/whoami")).status_code == 200
        tokens = (await api.get(f"/v1/users/{user_id}/tokens")).json()["items"]
        async with edge.client(ADMIN_TOKEN) as admin:  # another apiserver process
            assert (await admin.delete(f"/v1/tokens/{tokens[0]['id']}")).status_code == 204
        now[0] = cache.ttl - 0.001
        assert (await api.get("/v1/whoami")).status_code == 200  # still remembered here
        now[0] = cache.ttl
        resp = await api.get("/v1/whoami")
        assert resp.status_code == 401 and "revoked" in resp.json()["detail"]


async def test_every_change_is_audited_and_only_admins_read_the_log(edge: Edge) -> None:
    user_id, token = await _user_with_token(edge, "alice")
    async with edge.client(token) as api:
        project = (await api.post("/v1/projects", json={"name": "oncology"})).json()
        assert (await api.post("/v1/projects", json={"name": "oncology"})).status_code == 409
        assert (await api.get(f"/v1/projects/{project['id']}")).status_code == 200  # a query
        assert (await api.get("/v1/audit")).status_code == 403  # not an admin
    async with edge.client(ADMIN_TOKEN) as api:
        entries = (await api.get("/v1/audit", params={"actor": user_id})).json()["items"]
    got = [(e["action"], e["target"], e["outcome"]) for e in entries]
    assert got == [
        ("CreateProject", "oncology", "ok"),
        ("CreateProject", "oncology", "already_exists"),
    ]
    assert all(e["actor_scope"] == "user" and e["at"] for e in entries)
    async with edge.client(ADMIN_TOKEN) as api:
        creations = await api.get("/v1/audit", params={"action": "CreateUser"})
    assert [e["target"] for e in creations.json()["items"]] == ["alice"]


async def test_repeated_failed_authentication_is_throttled_with_429(edge: Edge) -> None:
    edge.app_settings = edge.app_settings.model_copy(update={"auth_failure_limit": 5})
    async with edge.client() as anon:
        me = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await anon.get("/v1/whoami", headers=me)).status_code == 200
        for i in range(5):
            r = await anon.get("/v1/whoami", headers={"Authorization": f"Bearer flm_user_g{i}"})
            assert r.status_code == 401
        r = await anon.get("/v1/whoami", headers={"Authorization": "Bearer flm_user_g9"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["code"] == "too_many_requests"
        # enrolment tokens are guessed the same way
        r = await anon.post("/v1/nodes/enroll", json={"enrolment_token": "nope", "facts": {}})
        assert r.status_code == 429
        # whoever was already signed in from this address is not locked out by the guesser
        assert (await anon.get("/v1/whoami", headers=me)).status_code == 200
