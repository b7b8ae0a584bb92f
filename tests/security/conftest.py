"""A real controller (gRPC on loopback, SQLite in memory) with the real REST app in front of it,
for the security suite's attacks on the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from flame_apiserver import ApiserverSettings, create_app
from flame_controller.server import RunningController, serve
from flame_controller.settings import ControllerSettings
from tests.support import service_token_file

ADMIN_TOKEN = "flm_user_security-suite-admin"


@dataclass
class Edge:
    controller: RunningController
    app_settings: ApiserverSettings

    def app(self) -> FastAPI:
        """One apiserver process (each client gets its own unless given one)."""
        return create_app(self.app_settings)

    def client(self, token: str | None = None, app: FastAPI | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app or self.app()),
            base_url="http://flame",
            headers=headers,
        )


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    settings = ControllerSettings(
        data_dir=tmp_path / "data",
        store_uri="sqlite://:memory:",
        listen="127.0.0.1:0",
        admin_token=ADMIN_TOKEN,
        run_reconciler=False,
        service_token_file=service_token_file(tmp_path / "secrets"),
    )
    running = await serve(settings, workers=[])
    try:
        app_settings = ApiserverSettings(
            controller_address=running.address, service_token_file=settings.service_token_file
        )
        yield Edge(running, app_settings)
    finally:
        await running.stop(grace=0)
