"""The controller's admin client for the tracking server: what it does when a connection drops."""

from __future__ import annotations

import json

import httpx
import pytest

from flame_controller.tracking_accounts import TrackingAccounts
from flame_service.errors import Unavailable


def _accounts(handler: httpx.MockTransport) -> TrackingAccounts:
    return TrackingAccounts("http://mlflow", ("flame-admin", "pw"), b"s" * 32, transport=handler)


async def test_a_connection_the_server_closed_under_a_call_is_retried_once() -> None:
    # seen in CI: `flamectl model alias` failed with "Server disconnected without sending a
    # response" when the controller reused a pooled connection the server was closing
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={})

    accounts = _accounts(httpx.MockTransport(answer))
    try:
        assert await accounts.set_alias("m-1", "prod", "1")
    finally:
        await accounts.close()
    assert calls == [
        "/api/2.0/mlflow/model-versions/get",
        "/api/2.0/mlflow/model-versions/get",
        "/api/2.0/mlflow/registered-models/alias",
    ]


async def test_a_server_that_keeps_dropping_the_connection_is_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    accounts = _accounts(httpx.MockTransport(answer))
    try:
        with pytest.raises(Unavailable, match="cannot be reached"):
            await accounts.set_alias("m-1", "prod", "1")
    finally:
        await accounts.close()


async def test_setting_an_alias_on_a_missing_version_changes_nothing() -> None:
    seen: list[tuple[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(404, content=json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST"}))

    accounts = _accounts(httpx.MockTransport(answer))
    try:
        assert not await accounts.set_alias("m-1", "prod", "9")
    finally:
        await accounts.close()
    assert seen == [("GET", "/api/2.0/mlflow/model-versions/get")]


async def test_an_owners_account_is_set_up_once_not_at_every_job_start() -> None:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/users/create"):  # both accounts exist already
            return httpx.Response(400, json={"error_code": "RESOURCE_ALREADY_EXISTS"})
        return httpx.Response(200, json={"experiment": {"experiment_id": "7"}})

    accounts = _accounts(httpx.MockTransport(answer))
    try:
        await accounts.user_credentials("u-1")
        await accounts.user_credentials("u-1")
    finally:
        await accounts.close()
    # the first time: created or its password (derived from the secret) set; then remembered
    assert calls == ["/api/2.0/mlflow/users/create", "/api/2.0/mlflow/users/update-password"]
