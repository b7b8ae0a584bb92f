"""Who a token stands for is asked of the controller once per ``auth_cache_seconds``, forgotten
at once by a change made through this apiserver, and never kept from before such a change."""

from __future__ import annotations

from flame_apiserver.auth_cache import AuthCache
from flame_service.auth import Caller
from tests.unit.apiserver.conftest import NODE_TOKEN, USER_TOKEN

ALICE = Caller(scope="user", subject="u-alice")
SCHEMA = {"roles": [{"name": "trainer"}, {"name": "aggregator"}], "channels": []}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_caller_is_remembered_for_the_ttl_and_then_asked_again() -> None:
    clock = Clock()
    cache = AuthCache(2.0, clock=clock)
    assert cache.get("tok") is None
    cache.put("tok", ALICE, cache.generation)
    clock.now += 1.99
    assert cache.get("tok") == ALICE
    assert cache.get("other") is None
    clock.now += 0.01
    assert cache.get("tok") is None


def test_an_answer_from_before_a_clear_is_not_kept() -> None:
    cache = AuthCache(2.0, clock=Clock())
    asked_at = cache.generation  # the controller is asked...
    cache.clear()  # ...while a revocation goes through
    cache.put("tok", ALICE, asked_at)
    assert cache.get("tok") is None
    cache.put("tok", ALICE, cache.generation)
    cache.clear()
    assert cache.get("tok") is None


def test_zero_ttl_remembers_nothing_and_the_table_is_bounded() -> None:
    off = AuthCache(0.0, clock=Clock())
    off.put("tok", ALICE, off.generation)
    assert off.get("tok") is None
    small = AuthCache(2.0, max_entries=2, clock=Clock())
    for token in ("a", "b", "c"):
        small.put(token, ALICE, small.generation)
    assert small.get("a") is None
    assert small.get("b") == ALICE and small.get("c") == ALICE


async def test_requests_with_one_token_ask_the_controller_once(api) -> None:
    for _ in range(3):
        assert (await api.call("GET", "/v1/designs")).status_code == 200
    assert (await api.call("GET", "/v1/whoami", token=NODE_TOKEN)).status_code == 200
    assert api.fake.authentications == [USER_TOKEN, NODE_TOKEN]


async def test_unknown_tokens_are_asked_about_every_time(api) -> None:
    for _ in range(2):
        assert (await api.call("GET", "/v1/designs", token="flm_user_nobody")).status_code == 401
    assert api.fake.authentications == ["flm_user_nobody"] * 2


async def test_a_change_through_this_apiserver_forgets_every_caller(api) -> None:
    assert (await api.call("GET", "/v1/designs")).status_code == 200
    refused = await api.call("POST", "/v1/designs", json={"name": "x"})  # 422: changed nothing
    assert refused.status_code == 422
    logs = {"lines": [{"task_id": "t-1", "stream": "stdout", "line": "x"}]}
    reported = await api.call("POST", "/v1/agent/logs", token=NODE_TOKEN, json=logs)
    assert reported.status_code == 204  # a node's report: changes no credential
    assert (await api.call("GET", "/v1/designs")).status_code == 200
    assert api.fake.authentications == [USER_TOKEN, NODE_TOKEN]
    body = {"name": "mnist", "schema": SCHEMA}
    assert (await api.call("POST", "/v1/designs", json=body)).status_code == 201
    assert (await api.call("GET", "/v1/designs")).status_code == 200
    assert api.fake.authentications == [USER_TOKEN, NODE_TOKEN, USER_TOKEN]
