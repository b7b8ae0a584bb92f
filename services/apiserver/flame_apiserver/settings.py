"""Apiserver settings (env ``FLAME_APISERVER_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flame_service.settings import ServiceSettings


class ApiserverSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLAME_APISERVER_", extra="ignore")

    controller_address: str = "127.0.0.1:10102"
    notifier_address: str = "127.0.0.1:10101"  # handed to nodes at enrolment
    listen_host: str = "127.0.0.1"
    port: int = 10100
    max_body_bytes: int = 1024 * 1024  # JSON bodies
    max_code_bytes: int = 64 * 1024 * 1024  # code zips (POST /v1/designs/{id}/code)
    rpc_timeout_seconds: float = 30.0
    # GET /v1/models/{name}/versions/{version}/download: the largest model folder it zips
    model_download_max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # repeated failed authentication from one address: 429 once this many failed in the window
    auth_failure_limit: int = Field(default=30, ge=1)
    auth_failure_window_seconds: float = Field(default=60.0, gt=0)
    # who a token stands for is asked of the controller at most this often per token and
    # process: a credential revoked elsewhere passes for at most this long (0 = ask every time)
    auth_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    # GET /v1/jobs/{id}/events: how often it asks the controller what changed, and how long a
    # quiet stream waits before a keep-alive comment; after a job has ended its stream still
    # carries what arrives late (logs shipped after the final status) for this long
    events_poll_seconds: float = Field(default=0.5, gt=0)
    events_keepalive_seconds: float = Field(default=15.0, gt=0)
    events_linger_seconds: float = Field(default=5.0, ge=0)
