"""Settings of the Kubernetes deployer: env ``FLAME_KUBERNETES_*``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flame_spec import ResourceAmounts, RoleResources

from ..kubeapi import in_cluster_namespace
from . import kube_manifests as m


class KubernetesDeployerSettings(BaseSettings):
    """Env ``FLAME_KUBERNETES_*`` (the chart sets namespace, image, service account, labels
    and pull secrets)."""

    model_config = SettingsConfigDict(env_prefix="FLAME_KUBERNETES_", extra="ignore")

    namespace: str = ""  # empty: the controller's own namespace in a cluster, else "default"
    runner_image: str = ""  # required: the flame/task-runner image
    service_account: str = ""  # the task pods' ServiceAccount (no token is mounted anyway)
    task_labels: dict[str, str] = Field(default_factory=dict)  # JSON object; NetworkPolicies
    image_pull_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)  # a,b
    image_pull_policy: str | None = None  # Always | IfNotPresent | Never
    kubeconfig: str | None = None  # else in-cluster, else $KUBECONFIG / ~/.kube/config
    context: str | None = None
    command: list[str] = Field(default_factory=lambda: ["python", "-m", "flame.launch"])
    run_as_user: int = Field(default=10001, ge=1)
    run_as_group: int = Field(default=10001, ge=1)
    stop_grace_seconds: int = Field(default=10, ge=0, le=3600)
    stop_timeout_seconds: float = Field(default=60.0, gt=0)  # then the Job is deleted
    # The grpc listen address of a task: every interface of its pod (peers dial the pod's IP).
    task_bind_host: str = "0.0.0.0"
    default_resources: RoleResources = Field(
        default_factory=lambda: RoleResources(
            requests=ResourceAmounts(cpu="100m", memory="256Mi"),
            limits=ResourceAmounts(memory="2Gi"),
        )
    )
    work_size_limit: str = "2Gi"
    tmp_size_limit: str = "1Gi"
    watch_timeout_seconds: int = Field(default=300, ge=1)
    max_output_lines: int = Field(default=5000, ge=1)
    max_line_chars: int = Field(default=8192, ge=80)

    @field_validator("image_pull_secrets", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("image_pull_policy")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        if value not in (None, "", "Always", "IfNotPresent", "Never"):
            raise ValueError("image_pull_policy must be Always, IfNotPresent or Never")
        return value or None

    @field_validator("task_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            m.check_label_key(key)
            m.check_label_value(key, val)
            if key.startswith(m.PREFIX) or key == m.MANAGED_BY:
                raise ValueError(f"task label {key!r} is set by the deployer itself")
        return value

    @model_validator(mode="after")
    def _namespace(self) -> KubernetesDeployerSettings:
        if self.namespace and not m.is_dns_label(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a DNS-1123 label")
        return self

    def resolved_namespace(self) -> str:
        return self.namespace or in_cluster_namespace() or "default"
