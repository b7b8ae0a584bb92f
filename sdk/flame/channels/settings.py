"""Tunables of the channel transports (env ``FLAME_CHANNEL_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1 << 20


class ChannelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLAME_CHANNEL_", frozen=True)

    send_timeout: float = Field(default=60.0, gt=0)  # seconds one send may take, retries included
    connect_timeout: float = Field(default=30.0, gt=0)  # broker connect / peer discovery
    grpc_chunk_bytes: int = Field(default=MiB, ge=1024, le=3 * MiB)  # gRPC limit is 4 MiB
    # MQTT caps a packet at 256 MiB; a broker forwards a chunk only once it has all of it, so
    # smaller chunks pipeline better (2 MiB: ~1.5x the throughput of 8 MiB through Mosquitto)
    mqtt_chunk_bytes: int = Field(default=2 * MiB, ge=1024, le=255 * MiB)
    mqtt_keepalive: int = Field(default=15, ge=1, le=3600)  # a dead task's will fires after 1.5x
    max_message_bytes: int = Field(default=4 << 30, ge=1)  # larger incoming messages are refused
    retry_initial: float = Field(default=0.05, gt=0)  # first backoff after UNAVAILABLE
    retry_max: float = Field(default=1.0, gt=0)  # backoff cap
    # signed messages (flame.channels.auth): older ones are refused as stale; one older than a
    # message already accepted from its sender by more than the allowance, as a replay
    max_message_age: float = Field(default=3600.0, gt=0)
    reorder_allowance: float = Field(default=5.0, ge=0)
