"""The Kubernetes objects of one task attempt, as plain JSON (pure functions, no I/O).

Per Flame job one **anchor** ConfigMap ``flame-job-<digest>``; per task attempt one **Secret**
(the task's config with its credential, and the code files) and one **Job**, both owned by the
anchor. Deleting the anchor deletes everything of that Flame job (Kubernetes' garbage collector
follows the owner references); the Job's pod is owned by the Job as usual.

The task's pod (see :func:`job`)::

    /var/lib/flame-task            emptyDir "work": the working dir (result, checkpoints)
    /var/lib/flame-task/bundle     the Secret, read-only: config.json and code/<role>/main.py
    /tmp                           emptyDir "tmp"

runs ``python -m flame.launch bundle/config.json`` as a non-root user with a read-only root
filesystem, no capabilities, no privilege escalation and no service-account token. Paths in the
task config are relative to the working dir, so the config makes no assumption about the image.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from flame_spec import RoleResources
from flame_spec.privacy import NO_TELEMETRY

from .base import Launch

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "flame-controller"
PREFIX = "flame/"
LABEL_JOB = PREFIX + "job"  # the Flame job (its id, or a digest of it when not label-safe)
LABEL_TASK = PREFIX + "task"
LABEL_ATTEMPT = PREFIX + "attempt"
LABEL_ROLE = PREFIX + "role"
LABEL_RUN = PREFIX + "run"  # the Kubernetes Job's name, on its pods: how they are found
ANN_JOB_ID = PREFIX + "job-id"
ANN_TASK_ID = PREFIX + "task-id"
ANN_ATTEMPT = PREFIX + "attempt"
ANN_CODE_SHA256 = PREFIX + "code-sha256"
ANN_OUTPUT = PREFIX + "output-position"  # written by ack_output

CONTAINER = "task"
WORKDIR = "/var/lib/flame-task"
POD_TMP = "/tmp"  # noqa: S108 (an emptyDir of the pod's own, not the host's /tmp)
BUNDLE_DIR = "bundle"
CONFIG_FILE = "config.json"
MAX_SECRET_BYTES = 1024 * 1024  # what the API server accepts in one Secret's data
MAX_CODE_FILES = 2000

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


# Every (API group, resource) -> verbs this deployer uses, and nothing more: the chart's Role
# grants exactly these (tests/deploy checks), the fake API server refuses anything else.
RBAC: dict[tuple[str, str], frozenset[str]] = {
    ("batch", "jobs"): frozenset({"create", "get", "list", "watch", "patch", "delete"}),
    ("", "pods"): frozenset({"get", "list", "watch", "patch"}),
    ("", "pods/log"): frozenset({"get"}),
    ("", "secrets"): frozenset({"create"}),
    ("", "configmaps"): frozenset({"create", "get", "delete"}),
}


def _digest(*parts: object, length: int = 10) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()[:length]


def job_name(job_id: str, task_id: str, attempt: int) -> str:
    """``flame-<task>-<attempt>-<digest>``: a DNS-1123 label of at most 63 characters, the same
    for the same attempt on every controller (so a restarted one finds it, never duplicates it)."""
    suffix = f"-{attempt}-{_digest(job_id, task_id, attempt)}"
    slug = re.sub(r"[^a-z0-9-]+", "-", task_id.lower()).strip("-")
    slug = slug[: 63 - len("flame-") - len(suffix)].rstrip("-") or "task"
    return f"flame-{slug}{suffix}"


def anchor_name(job_id: str) -> str:
    """The per-Flame-job ConfigMap every task object of that job is owned by."""
    return f"flame-job-{_digest(job_id, length=16)}"


def is_dns_label(value: str) -> bool:
    return bool(_DNS_LABEL.match(value))


def label_value(value: str) -> str:
    """``value`` when it is a valid label value, else a digest of it (annotations keep ids)."""
    return value if len(value) <= 63 and _LABEL_VALUE.match(value) else _digest(value, length=20)


def check_label_key(key: str) -> None:
    """ValueError unless ``key`` is a valid label key (``[prefix/]name``)."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label key {key!r}: its prefix is not a DNS subdomain")
    if not _LABEL_NAME.match(name):
        raise ValueError(f"label key {key!r} is not a valid label name")


def check_label_value(key: str, value: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"label {key!r}: {value!r} is not a valid label value")


@dataclass(frozen=True)
class TaskPod:
    """How task pods look: what the deployer's settings decide."""

    namespace: str
    image: str
    command: tuple[str, ...]
    service_account: str
    task_labels: dict[str, str]
    image_pull_secrets: tuple[str, ...]
    image_pull_policy: str | None
    run_as_user: int
    run_as_group: int
    stop_grace_seconds: int
    default_resources: RoleResources
    work_size_limit: str
    tmp_size_limit: str


def selector(task_labels: dict[str, str]) -> str:
    """The label selector of every object this deployer makes (in its namespace)."""
    labels = {**task_labels, MANAGED_BY: MANAGER}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def labels(launch: Launch, pod: TaskPod, run: str | None = None) -> dict[str, str]:
    out = {
        **pod.task_labels,
        MANAGED_BY: MANAGER,
        LABEL_JOB: label_value(launch.job_id),
        LABEL_TASK: label_value(launch.task_id),
        LABEL_ATTEMPT: str(launch.attempt),
        LABEL_ROLE: label_value(launch.role),
    }
    if run is not None:
        out[LABEL_RUN] = run
    return out


def task_annotations(launch: Launch, code_sha256: str) -> dict[str, str]:
    return {
        ANN_JOB_ID: launch.job_id,
        ANN_TASK_ID: launch.task_id,
        ANN_ATTEMPT: str(launch.attempt),
        ANN_CODE_SHA256: code_sha256,
    }


def owner(obj: dict[str, Any]) -> dict[str, Any]:
    """An owner reference to ``obj`` (no ``blockOwnerDeletion``: that needs more RBAC)."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }


def anchor(job_id: str, pod: TaskPod) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": anchor_name(job_id),
            "namespace": pod.namespace,
            "labels": {
                **pod.task_labels,
                MANAGED_BY: MANAGER,
                LABEL_JOB: label_value(job_id),
            },
            "annotations": {ANN_JOB_ID: job_id},
        },
        "immutable": True,
        "data": {"job-id": job_id},
    }


@dataclass(frozen=True)
class Bundle:
    """The Secret's data keys and where each file appears under ``bundle/``."""

    data: dict[str, bytes]
    items: list[dict[str, str]]

    @property
    def size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.data.items())


def bundle(config_json: str, files: list[tuple[str, bytes]]) -> Bundle:
    """``config.json`` and ``code/<path>`` for every code file (keys ``config.json``, ``c00000``,
    ...; the item list maps each key to its path). ``files`` hold relative, checked paths."""
    if len(files) > MAX_CODE_FILES:
        raise ValueError(
            f"the code bundle has {len(files)} files; the Kubernetes deployer delivers at most "
            f"{MAX_CODE_FILES}"
        )
    data = {CONFIG_FILE: config_json.encode()}
    items = [{"key": CONFIG_FILE, "path": CONFIG_FILE}]
    for i, (path, content) in enumerate(sorted(files)):
        key = f"c{i:05d}"
        data[key] = content
        items.append({"key": key, "path": f"code/{path}"})
    return Bundle(data, items)


def secret(
    launch: Launch,
    name: str,
    pod: TaskPod,
    content: Bundle,
    *,
    code_sha256: str,
    owner_ref: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": pod.namespace,
            "labels": labels(launch, pod),
            "annotations": task_annotations(launch, code_sha256),
            "ownerReferences": [owner_ref],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {k: base64.b64encode(v).decode() for k, v in content.data.items()},
    }


def resources(launch: Launch, pod: TaskPod) -> dict[str, dict[str, str]]:
    """The role's resources from the design, else the deployer's defaults."""
    role = launch.config.design.role(launch.role)
    return (role.resources or pod.default_resources).as_kubernetes()


def job(
    launch: Launch,
    name: str,
    pod: TaskPod,
    content: Bundle,
    *,
    code_sha256: str,
    owner_ref: dict[str, Any],
) -> dict[str, Any]:
    """The batch/v1 Job of one task attempt: one pod, never restarted (a new attempt is a new
    Job), hardened as the module docstring says."""
    ids = task_annotations(launch, code_sha256)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": pod.namespace,
            "labels": labels(launch, pod),
            "annotations": ids,
            "ownerReferences": [owner_ref],
        },
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": {"labels": labels(launch, pod, run=name), "annotations": ids},
                "spec": _pod_spec(launch, name, pod, content),
            },
        },
    }


def _task_container(launch: Launch, pod: TaskPod) -> dict[str, Any]:
    """The one container: the runner image, the task's config from the bundle, no privileges."""
    env = [
        {"name": "HOME", "value": WORKDIR},
        {"name": "TMPDIR", "value": POD_TMP},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "FLAME_TASK_CONFIG", "value": f"{WORKDIR}/{BUNDLE_DIR}/{CONFIG_FILE}"},
        {"name": "FLAME_JOB_ID", "value": launch.job_id},
        {"name": "FLAME_TASK_ID", "value": launch.task_id},
        *({"name": k, "value": v} for k, v in NO_TELEMETRY.items()),
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pod.image,
        "command": list(pod.command),
        "args": [f"{BUNDLE_DIR}/{CONFIG_FILE}"],
        "workingDir": WORKDIR,
        "env": env,
        "resources": resources(launch, pod),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": pod.run_as_user,
            "runAsGroup": pod.run_as_group,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "work", "mountPath": WORKDIR},
            {"name": "bundle", "mountPath": f"{WORKDIR}/{BUNDLE_DIR}", "readOnly": True},
            {"name": "tmp", "mountPath": POD_TMP},
        ],
        # a failed container's last log lines become its terminated.message, which carries
        # the one-line reason flame.launch printed (see _observed in kubernetes.py)
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if pod.image_pull_policy:
        container["imagePullPolicy"] = pod.image_pull_policy
    return container


def _pod_spec(launch: Launch, name: str, pod: TaskPod, content: Bundle) -> dict[str, Any]:
    """One pod that never restarts, with no service-account token, its code read-only from the
    attempt's Secret and size-capped scratch volumes."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": pod.stop_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": pod.run_as_user,
            "runAsGroup": pod.run_as_group,
            "fsGroup": pod.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_task_container(launch, pod)],
        "volumes": [
            {"name": "work", "emptyDir": {"sizeLimit": pod.work_size_limit}},
            {"name": "tmp", "emptyDir": {"sizeLimit": pod.tmp_size_limit}},
            {
                "name": "bundle",
                "secret": {"secretName": name, "defaultMode": 0o440, "items": content.items},
            },
        ],
    }
    if pod.service_account:
        spec["serviceAccountName"] = pod.service_account
    if pod.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pod.image_pull_secrets]
    return spec
