"""A stack always keeps an admin who can log in: the last usable admin (an admin with a live
token that may write) cannot be demoted, deleted or lose its last token (409 with the reason,
nothing changed)."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import ADMIN_TOKEN, Edge


async def _me(api: httpx.AsyncClient) -> dict[str, Any]:
    who = (await api.get("/v1/whoami")).json()
    return dict((await api.get(f"/v1/users/{who['subject']}")).json())


async def test_the_last_admin_cannot_demote_itself(edge: Edge) -> None:
    async with edge.client(ADMIN_TOKEN) as api:
        me = await _me(api)
        resp = await api.patch(f"/v1/users/{me['id']}", json={"admin": False})
        assert resp.status_code == 409, resp.text
        assert "last admin" in resp.json()["detail"]
        assert (await _me(api))["admin"] is True


async def test_an_admin_without_a_token_does_not_count(edge: Edge) -> None:
    """Making a second admin who cannot log in does not let the last usable one step down."""
    async with edge.client(ADMIN_TOKEN) as api:
        me = await _me(api)
        other = (await api.post("/v1/users", json={"name": "root2", "admin": True})).json()
        resp = await api.patch(f"/v1/users/{me['id']}", json={"admin": False})
        assert resp.status_code == 409, resp.text
        # once root2 has a token, it may
        secret = (await api.post(f"/v1/users/{other['id']}/tokens", json={})).json()
        assert (await api.patch(f"/v1/users/{me['id']}", json={"admin": False})).status_code == 200
    async with edge.client(secret["token"]) as api:
        resp = await api.patch(f"/v1/users/{other['id']}", json={"admin": False})
        assert resp.status_code == 409, resp.text  # now root2 is the last one


async def test_the_last_admin_cannot_be_deleted(edge: Edge) -> None:
    async with edge.client(ADMIN_TOKEN) as api:
        me = await _me(api)
        resp = await api.delete(f"/v1/users/{me['id']}")
        assert resp.status_code == 409, resp.text
        assert "last admin" in resp.json()["detail"]
        assert (await api.get("/v1/whoami")).status_code == 200


async def test_the_last_admins_last_token_cannot_be_revoked(edge: Edge) -> None:
    async with edge.client(ADMIN_TOKEN) as api:
        me = await _me(api)
        tokens = (await api.get(f"/v1/users/{me['id']}/tokens")).json()["items"]
        assert len(tokens) == 1 and "token" not in tokens[0]  # secrets are never listed
        resp = await api.delete(f"/v1/tokens/{tokens[0]['id']}")
        assert resp.status_code == 409, resp.text
        assert "last token of the last admin" in resp.json()["detail"]
        assert (await api.get("/v1/whoami")).status_code == 200
        # a read-only token is no way out: it cannot act as admin
        ro = (await api.post(f"/v1/users/{me['id']}/tokens", json={"scopes": ["read"]})).json()
        assert (await api.delete(f"/v1/tokens/{tokens[0]['id']}")).status_code == 409
        second = (await api.post(f"/v1/users/{me['id']}/tokens", json={})).json()
        assert (await api.delete(f"/v1/tokens/{tokens[0]['id']}")).status_code == 204
    async with edge.client(second["token"]) as api:
        assert (await api.get("/v1/whoami")).status_code == 200
    async with edge.client(ro["token"]) as api:
        assert (await api.get("/v1/whoami")).json()["read_only"] is True
