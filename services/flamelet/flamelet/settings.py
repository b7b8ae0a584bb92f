"""flamelet settings (env ``FLAME_FLAMELET_*``; the home folder also from ``FLAMELET_HOME``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flame_service.metrics_endpoint import MetricsEndpointSettings
from flame_service.sandbox import SandboxMode

DEFAULT_COMMAND = ["{python}", "-m", "flame.launch", "config.json"]


def default_home() -> Path:
    return Path(os.environ.get("FLAMELET_HOME") or Path.home() / ".flamelet")


class FlameletSettings(BaseSettings, MetricsEndpointSettings):
    model_config = SettingsConfigDict(env_prefix="FLAME_FLAMELET_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    python: str = sys.executable
    # The task command, run in the task's work dir. Placeholders: {python}, {config} (absolute
    # path of config.json), {role}, {workdir}, {task_id}.
    command: list[str] = Field(default_factory=lambda: list(DEFAULT_COMMAND))
    # Task processes started ahead of their tasks (flamelet.warm): at most this many idle, one
    # per dataset, each for at most warm_idle_seconds; 0: every task starts a new interpreter.
    warm_runners: int = Field(default=2, ge=0, le=16)
    # modules they import beforehand besides the SDK (e.g. ["torch"] on a node that trains torch)
    warm_imports: list[str] = Field(default_factory=list)
    warm_idle_seconds: float = Field(default=900.0, gt=0)
    max_open_files: int = Field(default=1024, ge=16)
    cpu_seconds: int | None = Field(default=None, ge=1)
    address_space_bytes: int | None = Field(default=None, ge=64 * 1024 * 1024)
    stop_grace: float = Field(default=5.0, gt=0, le=5.0)
    poll_interval: float = Field(default=0.5, gt=0)  # exit checks of adopted tasks, log tailing
    resync_interval: float = Field(default=30.0, gt=0)  # reconcile even without events
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    log_batch_lines: int = Field(default=500, ge=1, le=10_000)
    log_line_max: int = Field(default=16_384, ge=80)
    http_timeout: float = Field(default=60.0, gt=0)
    max_bundle_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Finished tasks whose work dir (code, logs, checkpoints) and ledger entry are kept; older
    # ones are removed once the control plane has their final state and logs.
    keep_finished_tasks: int = Field(default=100, ge=0)
    # a health sample (CPU, memory, disk, network, GPUs) goes to the control plane this often;
    # None: never (the /metrics port, FLAME_FLAMELET_METRICS_PORT, still shows the latest)
    health_interval: float | None = Field(default=15.0, gt=0)
    log_level: str = "info"
    log_json: bool | None = None  # None: JSON unless stderr is a terminal
    # The CA the control plane's certificates are checked against when `flamelet login` is not
    # given --ca-file (the Helm chart mounts it); the identity keeps what enrolment used.
    tls_ca: Path | None = None
    # tasks run sandboxed (flame_service.sandbox): they see their work dir and their dataset,
    # not this node's identity or other tasks; "none" only for development (env FLAME_SANDBOX)
    sandbox: SandboxMode = Field(
        default="auto", validation_alias=AliasChoices("FLAME_SANDBOX", "sandbox")
    )
