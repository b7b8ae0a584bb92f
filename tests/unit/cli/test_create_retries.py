"""flamectl's creates carry an Idempotency-Key: one fresh key per create, the same key on every
retry of it (after a lost connection or a 502/503/504), no retry after a definite answer."""

from __future__ import annotations

import json

import httpx
import pytest

from flame.cli.client import ApiError, FlameClient

from .conftest import problem

PROJECT = {"id": "p-1", "name": "p", "owner": "u-1", "members": [], "description": "",
           "created_at": "2026-01-01T00:00:00Z"}  # fmt: skip
CODE = {"design_id": "d-1", "version": 1, "sha256": "ab", "size_bytes": 3, "roles": [],
        "created_at": "2026-01-01T00:00:00Z"}  # fmt: skip


class Flaky:
    """Fails the first ``failures`` requests (an exception or a response), then answers 201."""

    def __init__(self, *failures: Exception | httpx.Response, ok: dict) -> None:
        self.failures = list(failures)
        self.ok = ok
        self.seen: list[tuple[str | None, bytes]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.headers.get("Idempotency-Key"), request.read()))
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return httpx.Response(201, json=self.ok)


def client(handler: Flaky, retry_seconds: float = 30.0) -> FlameClient:
    return FlameClient(
        "http://flame.test",
        "flm_user_t",
        transport=httpx.MockTransport(handler),
        create_retry_seconds=retry_seconds,
    )


def test_a_create_is_retried_with_its_own_key_until_it_gets_an_answer() -> None:
    flaky = Flaky(
        httpx.ReadError("connection reset"),  # sent, answer lost: may have been created
        problem(503, "unavailable", "controller unavailable"),
        httpx.Response(502, text="bad gateway"),
        ok=PROJECT,
    )
    with client(flaky) as c:
        assert c.create_project("p").id == "p-1"
        keys = {key for key, _ in flaky.seen}
        assert len(flaky.seen) == 4 and len(keys) == 1 and None not in keys
        assert {json.loads(body)["name"] for _, body in flaky.seen} == {"p"}
        c.create_project("p")
    assert flaky.seen[-1][0] not in keys  # the next create command: a new key


def test_a_definite_answer_is_not_retried() -> None:
    flaky = Flaky(problem(409, "already_exists", "projects: name taken"), ok=PROJECT)
    with client(flaky) as c, pytest.raises(ApiError) as err:
        c.create_project("p")
    assert err.value.status == 409 and len(flaky.seen) == 1


def test_retries_stop_after_the_retry_window() -> None:
    flaky = Flaky(*[httpx.ConnectError("refused")] * 100, ok=PROJECT)
    with client(flaky, retry_seconds=0.5) as c, pytest.raises(ApiError) as err:
        c.create_project("p")
    assert err.value.status == 0 and 1 <= len(flaky.seen) < 100


def test_a_streamed_code_upload_is_sent_whole_again_with_the_same_key() -> None:
    flaky = Flaky(httpx.ReadError("reset"), ok=CODE)
    sent: list[int] = []
    with client(flaky) as c:
        got = c.push_code("d-1", b"zip" * 50_000, on_sent=sent.append, chunk=64 * 1024)
    assert got.version == 1
    assert [body for _, body in flaky.seen] == [b"zip" * 50_000] * 2
    assert flaky.seen[0][0] == flaky.seen[1][0]
    assert sent[-1] == 150_000
