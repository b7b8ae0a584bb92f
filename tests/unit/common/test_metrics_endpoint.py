"""The /metrics port of the gRPC services and the flamelet, over a real socket."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from flame_service.metrics_endpoint import MetricsEndpointSettings, start_metrics_server


def _registry() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    counter = Counter("flame_test_things", "things", registry=registry)
    return registry, counter


async def test_off_unless_a_port_is_set() -> None:
    registry, _ = _registry()
    assert await start_metrics_server(MetricsEndpointSettings(), registry) is None
    assert MetricsEndpointSettings.model_validate({"metrics_port": ""}).metrics_port is None


async def test_serves_the_registry_on_loopback_after_refreshing() -> None:
    registry, counter = _registry()
    refreshed = 0

    async def refresh() -> None:
        nonlocal refreshed
        refreshed += 1
        counter.inc()

    server = await start_metrics_server(MetricsEndpointSettings(metrics_port=0), registry, refresh)
    assert server is not None
    try:
        assert server.server.sockets[0].getsockname()[0] == "127.0.0.1"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            resp = await client.get("/metrics")
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(resp.text)}
            assert families["flame_test_things"].samples[0].value == 1.0
            assert (await client.get("/other")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
            assert refreshed == 1
    finally:
        await server.stop()


async def test_a_token_file_makes_it_ask_for_the_bearer_token(tmp_path) -> None:
    token = tmp_path / "metrics.token"
    token.write_text("s3cret-scrape\n")
    registry, _ = _registry()
    settings = MetricsEndpointSettings(metrics_port=0, metrics_token_file=token)
    server = await start_metrics_server(settings, registry)
    assert server is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            refused = await client.get("/metrics")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
            assert wrong.status_code == 401
            assert "flame_test_things" not in wrong.text
            ok = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
            assert ok.status_code == 200
            assert "flame_test_things_total 0.0" in ok.text
    finally:
        await server.stop()


def test_an_empty_token_file_is_refused(tmp_path) -> None:
    token = tmp_path / "metrics.token"
    token.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        MetricsEndpointSettings(metrics_port=0, metrics_token_file=token).metrics_token()
