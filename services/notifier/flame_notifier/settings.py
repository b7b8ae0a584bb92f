"""Notifier settings (env ``FLAME_NOTIFIER_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flame_service.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLAME_NOTIFIER_", extra="ignore")

    listen: str = "127.0.0.1:10101"
    # A plaintext port serving only grpc.health.v1 (kubelet probes cannot speak TLS); off: None
    health_listen: str | None = None
    controller_address: str = "127.0.0.1:10102"
    # Events kept per node while unacknowledged; the oldest are dropped beyond this (events are
    # hints: the agent reconciles against its task list on every reconnect).
    max_pending_per_node: int = Field(default=10_000, ge=1)
    # Presence reports are retried with exponential backoff up to this delay (seconds).
    presence_retry_max: float = Field(default=10.0, gt=0)
    controller_timeout: float = Field(default=5.0, gt=0)
