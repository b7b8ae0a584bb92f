"""Controller settings (env ``FLAME_CONTROLLER_*``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from flame_service.files import write_private
from flame_service.settings import ServiceSettings
from flame_spec.signing import SECRET_BYTES


class ControllerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLAME_CONTROLLER_", extra="ignore")

    data_dir: Path = Path("~/.local/share/flame")
    store_uri: str = ""  # default: sqlite:///<data_dir>/flame.db
    listen: str = "127.0.0.1:10102"
    notifier_address: str = "127.0.0.1:10101"
    # health samples kept per node, the newest (GET /v1/nodes/{id}/health)
    node_health_keep: int = Field(default=240, ge=1, le=100_000)
    apiserver_url: str = "http://127.0.0.1:10100"  # written into task configs for discovery
    # The MLflow server jobs log to unless their spec names another (flamectl up: its own)
    tracking_uri: str | None = None
    # With the admin's password file, that server runs MLflow's basic-auth app and the
    # controller gives each job its own account (flame_controller.tracking_accounts)
    tracking_admin_username: str = "flame-admin"
    tracking_admin_password_file: Path | None = None
    # Other tracking servers a job's spec may name (tracking.uri); any other URI is refused
    tracking_allowed_uris: list[str] = Field(default_factory=list)
    # The bootstrap admin's token: from a file (never the environment, which tasks of the same
    # user could read); generated into <data_dir>/admin.token (mode 0600) when neither is set.
    admin_token_file: Path | None = None
    admin_token: str | None = None  # programmatic (tests); prefer admin_token_file
    # The secret every task's data-plane signing key is derived from (flame_spec.signing): a
    # file, generated into <data_dir>/data-plane.secret (0600) when missing. Replicas of one
    # control plane share it (the Helm chart mounts one Secret).
    data_plane_secret_file: Path | None = None
    # Peers of a job talk TLS with certificates the controller issues each task from a CA
    # derived from that secret (flame_spec.pki); false only for development
    data_plane_tls: bool = True
    run_reconciler: bool = True  # off in tests that drive the domain only
    # who runs the roles that own no data: local processes, Kubernetes Jobs (FLAME_KUBERNETES_*)
    deployer: Literal["local", "kubernetes", "none"] = "local"
    # a deployer-run task (aggregator, coordinator) whose process dies is started again this
    # many times, after a capped exponential backoff with jitter, before its job fails
    task_max_restarts: int = Field(default=3, ge=0, le=100)
    task_restart_backoff_initial_seconds: float = Field(default=0.5, gt=0)
    task_restart_backoff_max_seconds: float = Field(default=30.0, gt=0)

    # Distributed logs: the store keeps at most this many lines per job and in total (0 = no
    # cap); the oldest go first and GetLogs reports how many of a job's lines were dropped.
    log_keep_per_job: int = Field(default=200_000, ge=0)
    log_keep_total: int = Field(default=5_000_000, ge=0)
    # the controller's own events about a job go into the job's logs (source "controller")
    ship_service_logs: bool = True

    # A plaintext port serving only grpc.health.v1 (kubelet probes cannot speak TLS); off: None
    health_listen: str | None = None
    # Several replicas, one leader (a coordination.k8s.io Lease; FLAME_KUBERNETES_KUBECONFIG
    # or the pod's service account): only the leader reconciles and reports
    # flame.v1.ControlPlane SERVING.
    leader_election: bool = False
    leader_election_lease_name: str = "flame-controller"
    leader_election_namespace: str = ""  # empty: the pod's namespace, else "default"
    leader_election_identity: str = ""  # empty: host name and a random suffix
    leader_election_lease_duration_seconds: float = Field(default=15.0, gt=0)
    leader_election_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    leader_election_retry_period_seconds: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _defaults(self) -> ControllerSettings:
        self.data_dir = self.data_dir.expanduser()
        if self.leader_election:
            from .leadership import Timing  # refuses an impossible timing with the reason

            Timing(
                self.leader_election_lease_duration_seconds,
                self.leader_election_renew_deadline_seconds,
                self.leader_election_retry_period_seconds,
            )
        if not self.store_uri:
            self.store_uri = f"sqlite:///{self.data_dir / 'flame.db'}"
        return self

    def tracking_admin(self) -> tuple[str, str] | None:
        if self.tracking_admin_password_file is None:
            return None
        return self.tracking_admin_username, self.tracking_admin_password_file.read_text().strip()

    def bootstrap_token(self) -> str | None:
        if self.admin_token_file is not None:
            return self.admin_token_file.read_text().strip() or None
        return self.admin_token

    def data_plane_secret(self) -> bytes:
        """The data-plane key secret: its file's text (random, at least 32 characters), made
        on first use when the file is missing."""
        path = self.data_plane_secret_file or self.data_dir / "data-plane.secret"
        try:
            secret = path.read_text().strip().encode()
        except FileNotFoundError:
            secret = secrets.token_hex(SECRET_BYTES).encode()
            write_private(path, secret.decode() + "\n")
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"{path} must hold at least {SECRET_BYTES} random characters")
        return secret

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"
