"""Kubernetes deployer: each task attempt runs as a ``batch/v1`` Job in one namespace.

Objects (built by :mod:`.kube_manifests`): per Flame job an anchor ConfigMap; per task attempt
an immutable Secret (the task's config, holding its credential, and the code files from the
verified zip) and a Job, both owned by the anchor. The handle is ``<namespace>/<job name>``; the
name is derived from job id, task id and attempt, so :meth:`start` on a restarted controller finds
the attempt it may already have created (``409 AlreadyExists`` → adopt it), never a second one.

* **Status**: a :class:`.kube_watch.JobInformer` lists and watches the deployer's Jobs (relisting
  when the watch expires) and wakes the reconciler when one ends or vanishes. :meth:`observe`
  answers "running" from that cache; anything else (an end, a cache miss, an unhealthy watch)
  is read from the API server itself. Exit codes come from the pod's container status.
* **Stop**: the running pod gets ``spec.activeDeadlineSeconds: 1``, so the kubelet stops it
  (SIGTERM, then SIGKILL after the pod's grace period) and keeps the pod and its log; when that
  does not happen in time the Job is deleted. Every object of a Flame job is deleted at the job's
  end (:meth:`release` deletes the anchor; the garbage collector does the rest).
* **Output**: the pod's log (``timestamps=true``; Kubernetes merges stdout and stderr, so every
  line is reported as ``stdout``). The read position is the timestamp of the last shipped line
  (and how many lines carried it); :meth:`ack_output` stores it in an annotation of the Job, so
  a restarted controller does not resend what was shipped.

RBAC it needs in its namespace (:data:`RBAC`, the chart's Role): ``jobs``
create/get/list/watch/patch/delete, ``pods`` get/list/watch/patch, ``pods/log`` get, ``secrets``
create, ``configmaps`` create/get/delete. It never reads a Secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import structlog
import urllib3
from kubernetes import client
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flame_service.archive import inspect_zip, safe_extract
from flame_service.errors import AlreadyExists, FlameServiceError, InvalidArgument, TooLarge
from flame_service.taskdir import failure_in
from flame_spec import ResourceAmounts, RoleResources

from ..kubeapi import ApiException, api_client, call, in_cluster_namespace, pod_log
from . import kube_manifests as m
from .base import Launch, Observed, Output
from .kube_watch import JobInformer

log = structlog.get_logger(__name__)

Obj = dict[str, Any]

# Every (API group, resource) -> verbs this deployer uses, and nothing more: the chart's Role
# grants exactly these (tests/deploy checks), the fake API server refuses anything else.
RBAC: dict[tuple[str, str], frozenset[str]] = {
    ("batch", "jobs"): frozenset({"create", "get", "list", "watch", "patch", "delete"}),
    ("", "pods"): frozenset({"get", "list", "watch", "patch"}),
    ("", "pods/log"): frozenset({"get"}),
    ("", "secrets"): frozenset({"create"}),
    ("", "configmaps"): frozenset({"create", "get", "delete"}),
}


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


@dataclass(frozen=True)
class _Position:
    """After which log line output continues: a line's timestamp (ns since the epoch) and how
    many lines carrying exactly that timestamp were shipped."""

    ns: int = 0
    same: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ns": self.ns, "n": self.same}

    @classmethod
    def of(cls, raw: object) -> _Position:
        try:
            if isinstance(raw, str):
                raw = json.loads(raw)
            if isinstance(raw, dict):
                return cls(int(raw.get("ns", 0)), int(raw.get("n", 0)))
        except (ValueError, TypeError):
            pass
        return cls()

    def key(self) -> tuple[int, int]:
        return (self.ns, self.same)


class KubernetesDeployer:
    """Runs tasks as Kubernetes Jobs (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self,
        settings: KubernetesDeployerSettings | None = None,
        *,
        api: client.ApiClient | None = None,
    ) -> None:
        self.settings = s = settings or KubernetesDeployerSettings()
        if not s.runner_image:
            raise InvalidArgument(
                "FLAME_KUBERNETES_RUNNER_IMAGE is not set: the Kubernetes deployer needs the "
                "task-runner image"
            )
        self.namespace = s.resolved_namespace()
        self.pod = m.TaskPod(
            namespace=self.namespace,
            image=s.runner_image,
            command=tuple(s.command),
            service_account=s.service_account,
            task_labels=dict(s.task_labels),
            image_pull_secrets=tuple(s.image_pull_secrets),
            image_pull_policy=s.image_pull_policy,
            run_as_user=s.run_as_user,
            run_as_group=s.run_as_group,
            stop_grace_seconds=s.stop_grace_seconds,
            default_resources=s.default_resources,
            work_size_limit=s.work_size_limit,
            tmp_size_limit=s.tmp_size_limit,
        )
        self.api = api or api_client(s.kubeconfig, s.context)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.informer = JobInformer(
            self.api,
            self.namespace,
            m.selector(self.pod.task_labels),
            self._changed,
            timeout_seconds=s.watch_timeout_seconds,
        )
        self._listener: Callable[[str], None] | None = None
        self._acked: dict[str, _Position] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- handles -----------------------------------------------------------------------------
    def handle_for(self, job_id: str, task_id: str, attempt: int) -> str:
        return f"{self.namespace}/{m.job_name(job_id, task_id, attempt)}"

    @staticmethod
    def _ref(handle: str) -> tuple[str, str]:
        namespace, sep, name = handle.partition("/")
        if not sep or not m.is_dns_label(namespace) or not m.is_dns_label(name):
            raise ValueError(f"not a kubernetes deployer handle: {handle!r}")
        return namespace, name

    # -- notifications -----------------------------------------------------------------------
    def set_listener(self, listener: Callable[[str], None] | None) -> None:
        self._listener = listener
        if listener is not None:
            self.informer.start()

    def _changed(self, name: str, old: Obj | None, new: Obj | None) -> None:
        """From the informer: wake the reconciler when a Job ends or vanishes."""
        ended = new is None or (_finished(new) and (old is None or not _finished(old)))
        listener = self._listener
        if not ended or listener is None:
            return
        task_id = _annotation(new or old or {}, m.ANN_TASK_ID)
        if task_id:
            try:
                listener(task_id)
            except RuntimeError:  # the reconciler's loop is gone
                log.debug("deployer.listener_gone", job=name)

    # -- start -------------------------------------------------------------------------------
    async def start(self, launch: Launch) -> str:
        name = m.job_name(launch.job_id, launch.task_id, launch.attempt)
        handle = f"{self.namespace}/{name}"
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            self.informer.start()
            existing = await self._get_job(self.namespace, name)
            if existing is not None:
                _check_ours(existing, launch)
                log.info("deployer.adopted", task_id=launch.task_id, job=name)
                return handle
            code_sha256 = hashlib.sha256(launch.code).hexdigest()
            content = await asyncio.to_thread(self._bundle, launch)
            owner = await self._anchor(launch.job_id)
            secret = m.secret(
                launch, name, self.pod, content, code_sha256=code_sha256, owner_ref=owner
            )
            job = m.job(launch, name, self.pod, content, code_sha256=code_sha256, owner_ref=owner)
            await self._create(self.core.create_namespaced_secret, secret, exists_ok=True)
            created = await self._create(self.batch.create_namespaced_job, job, exists_ok=True)
            if created is None:  # another controller (or our crashed self) was first
                existing = await self._get_job(self.namespace, name)
                if existing is None:
                    raise OSError(f"Kubernetes Job {handle} exists and then does not")
                _check_ours(existing, launch)
                log.info("deployer.adopted", task_id=launch.task_id, job=name)
                return handle
            log.info(
                "deployer.started",
                job_id=launch.job_id,
                task_id=launch.task_id,
                attempt=launch.attempt,
                job=name,
                bundle_bytes=content.size,
            )
            return handle

    def _bundle(self, launch: Launch) -> m.Bundle:
        """The Secret's content: the localized config and every code file of the zip, unpacked
        with the archive checks; refused with a clear reason when it cannot fit a Secret."""
        limit = m.MAX_SECRET_BYTES
        try:
            inspect_zip(launch.code, max_uncompressed=limit)
            with tempfile.TemporaryDirectory(prefix="flame-bundle-") as tmp:
                root = Path(tmp)
                safe_extract(launch.code, root, max_uncompressed=limit)
                files = [
                    (p.relative_to(root).as_posix(), p.read_bytes())
                    for p in sorted(root.rglob("*"))
                    if p.is_file()
                ]
        except TooLarge as exc:
            raise TooLarge(
                f"the code of task {launch.task_id} does not fit the {limit} bytes of a "
                f"Kubernetes Secret ({exc.message}); keep datasets and model weights out of "
                "the code zip"
            ) from exc
        config = launch.config.localized(
            workdir=".", checkpoint_dir="checkpoints", token=launch.credential
        )
        discovery = config.discovery.model_copy(update={"bind_host": self.settings.task_bind_host})
        config = config.model_copy(update={"discovery": discovery})
        try:
            content = m.bundle(config.to_json(), files)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
        if content.size > limit:
            raise TooLarge(
                f"the code and config of task {launch.task_id} are {content.size} bytes, more "
                f"than the {limit} bytes of a Kubernetes Secret; keep datasets and model "
                "weights out of the code zip"
            )
        return content

    async def _anchor(self, job_id: str) -> Obj:
        """The owner reference to the Flame job's anchor ConfigMap (made on first use)."""
        body = m.anchor(job_id, self.pod)
        made = await self._create(self.core.create_namespaced_config_map, body, exists_ok=True)
        if made is None:
            made = await self._call(
                self.core.read_namespaced_config_map, body["metadata"]["name"], self.namespace
            )
            if _annotation(made, m.ANN_JOB_ID) != job_id:
                raise AlreadyExists(
                    f"ConfigMap {self.namespace}/{body['metadata']['name']} exists and does not "
                    f"belong to Flame job {job_id}"
                )
        return m.owner({"kind": "ConfigMap", "apiVersion": "v1", **made})

    # -- observe -----------------------------------------------------------------------------
    def _cached(self, namespace: str, name: str) -> Obj | None:
        """The Job as the informer last saw it (None: not there, or the watch is unhealthy)."""
        self.informer.start()
        if namespace != self.namespace or not self.informer.healthy:
            return None
        return self.informer.get(name)

    async def observe(self, handle: str) -> Observed:
        namespace, name = self._ref(handle)
        cached = self._cached(namespace, name)
        if cached is not None and not _finished(cached) and not _deleting(cached):
            return Observed("running")  # an end is always confirmed with the API server
        job = await self._get_job(namespace, name)
        if job is None:
            return Observed("missing", detail=f"Kubernetes Job {handle} does not exist")
        pods = await self._pods(namespace, name)
        return _observed(handle, job, pods)

    async def adopt(self, handle: str) -> bool:
        running = (await self.observe(handle)).state == "running"
        log.info("deployer.adopt", handle=handle, running=running)
        return running

    # -- stop --------------------------------------------------------------------------------
    async def stop(self, handle: str) -> None:
        namespace, name = self._ref(handle)
        job = await self._get_job(namespace, name)
        if job is None or _finished(job):
            return
        pods = [p for p in await self._pods(namespace, name) if _pod_live(p)]
        if not any((p.get("status") or {}).get("startTime") for p in pods):
            # no kubelet has taken a pod yet: nothing ran, no log to keep
            await self._delete_job(namespace, name)
            log.info("deployer.stopped", handle=handle, how="deleted before it ran")
            return
        for pod in pods:  # the kubelet ends it and keeps the pod (and its log)
            await self._deadline(namespace, pod["metadata"]["name"])
        s = self.settings
        deadline = time.monotonic() + s.stop_grace_seconds + s.stop_timeout_seconds
        pause = 0.05
        while time.monotonic() < deadline:
            if (await self.observe(handle)).state != "running":
                log.info("deployer.stopped", handle=handle, how="pod deadline")
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        log.warning("deployer.stop_forced", handle=handle)
        await self._delete_job(namespace, name)

    async def _deadline(self, namespace: str, pod: str) -> None:
        patch = {"spec": {"activeDeadlineSeconds": 1}}
        try:
            await self._call(self.core.patch_namespaced_pod, pod, namespace, patch)
        except ApiException as exc:
            if exc.status not in (404, 422):  # gone, or already ending
                raise

    async def _delete_job(self, namespace: str, name: str) -> None:
        try:
            await self._call(
                self.batch.delete_namespaced_job,
                name,
                namespace,
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def release(self, job_id: str) -> None:
        """The Flame job has ended and its tasks are stopped: delete all its objects."""
        anchor = m.anchor_name(job_id)
        try:
            await self._call(
                self.core.delete_namespaced_config_map,
                anchor,
                self.namespace,
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        log.info("deployer.released", job_id=job_id, anchor=anchor)

    # -- output ------------------------------------------------------------------------------
    async def read_output(self, handle: str, *, final: bool = False) -> Output:
        namespace, name = self._ref(handle)
        job = self._cached(namespace, name) or await self._get_job(namespace, name)
        stored = _Position.of(_annotation(job or {}, m.ANN_OUTPUT))
        acked = self._acked.get(handle, _Position())
        position = max(stored, acked, key=_Position.key)
        if job is None:
            return Output(lines=[], position=position.as_dict())
        lines: list[tuple[str, str]] = []
        for pod in await self._pods(namespace, name):
            if not _container_started(pod):
                continue
            since = None
            if position.ns:  # whole seconds: lines of that second are skipped by _take
                stamp = datetime.fromtimestamp(position.ns // 10**9, UTC)
                since = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                text = await _io(
                    pod_log,
                    self.api,
                    namespace,
                    pod["metadata"]["name"],
                    container=m.CONTAINER,
                    since_time=since,
                )
            except ApiException as exc:
                if exc.status in (400, 404):  # not started yet, or gone
                    continue
                raise
            position, complete = self._take(text, position, lines, final)
            if not complete:
                break
        return Output(lines=lines, position=position.as_dict())

    def _take(
        self, text: str, position: _Position, lines: list[tuple[str, str]], final: bool
    ) -> tuple[_Position, bool]:
        """Append the lines of ``text`` that come after ``position`` (complete lines only unless
        ``final``; at most ``max_output_lines`` in all). Returns the new position and whether
        all of ``text`` was taken."""
        entries = text.split("\n")
        tail = entries.pop()  # "" when the text ends with a newline
        if tail and final:
            entries.append(tail)
        run_ns, run = -1, 0  # lines so far with the same timestamp
        for entry in entries:
            stamp, _, line = entry.partition(" ")
            ns = _parse_timestamp(stamp)
            if ns is None:
                log.warning("deployer.log_line_without_timestamp", line=entry[:200])
                continue
            run = run + 1 if ns == run_ns else 1
            run_ns = ns
            if (ns, run) <= position.key():
                continue  # shipped before
            if len(lines) >= self.settings.max_output_lines:
                return position, False
            lines.append(("stdout", line[: self.settings.max_line_chars]))
            position = _Position(ns, run)
        return position, True

    async def ack_output(self, handle: str, output: Output) -> None:
        namespace, name = self._ref(handle)
        new = _Position.of(output.position)
        if new.key() <= self._acked.get(handle, _Position()).key():
            return
        self._acked[handle] = new
        patch = {"metadata": {"annotations": {m.ANN_OUTPUT: json.dumps(new.as_dict())}}}
        try:
            await self._call(self.batch.patch_namespaced_job, name, namespace, patch)
        except ApiException as exc:
            if exc.status != 404:  # gone: nothing more to read either
                raise

    async def close(self) -> None:
        await asyncio.to_thread(self.informer.stop)
        await asyncio.to_thread(self.api.close)

    # -- API helpers ---------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        result: Obj = await _io(call, fn, *args, _request_timeout=30, **kwargs)
        return result

    async def _create(self, fn: Callable[..., Any], body: Obj, *, exists_ok: bool) -> Obj | None:
        """Create ``body``; None when it exists already and ``exists_ok``."""
        try:
            return await self._call(fn, body["metadata"]["namespace"], body)
        except ApiException as exc:
            if exc.status == 409 and exists_ok:
                return None
            if exc.status in (400, 403, 404, 422):  # 404: the namespace does not exist
                raise _Refused(
                    f"Kubernetes refused {body['kind']} {body['metadata']['name']}: {_reason(exc)}"
                ) from exc
            raise

    async def _get_job(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self._call(self.batch.read_namespaced_job, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _pods(self, namespace: str, name: str) -> list[Obj]:
        body = await self._call(
            self.core.list_namespaced_pod, namespace, label_selector=f"{m.LABEL_RUN}={name}"
        )
        pods: list[Obj] = body.get("items", [])
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))


class KubernetesUnavailable(OSError):
    """The API server did not answer, or answered 429 / 5xx: worth retrying later."""


async def _io(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call in a worker thread; transient failures become
    :class:`KubernetesUnavailable` (an OSError: the reconciler retries)."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ApiException as exc:
        if exc.status in (429, 500, 502, 503, 504):
            raise KubernetesUnavailable(f"Kubernetes API: {exc.status} {exc.reason}") from exc
        raise
    except urllib3.exceptions.HTTPError as exc:
        raise KubernetesUnavailable(f"Kubernetes API unreachable: {exc}") from exc


class _Refused(FlameServiceError):
    """The API server refused an object: retrying the same object cannot help."""

    code = "kubernetes_refused"


# -- reading objects ---------------------------------------------------------------------------
def _annotation(obj: Obj, key: str) -> str | None:
    value = (obj.get("metadata") or {}).get("annotations", {}) or {}
    found = value.get(key)
    return str(found) if found is not None else None


def _check_ours(job: Obj, launch: Launch) -> None:
    want = {
        m.ANN_JOB_ID: launch.job_id,
        m.ANN_TASK_ID: launch.task_id,
        m.ANN_ATTEMPT: str(launch.attempt),
    }
    got = {k: _annotation(job, k) for k in want}
    if got != want:
        raise AlreadyExists(
            f"Kubernetes Job {job['metadata'].get('namespace')}/{job['metadata']['name']} "
            f"exists and is not attempt {launch.attempt} of task {launch.task_id}"
        )


def _conditions(job: Obj) -> dict[str, Obj]:
    conds = (job.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conds if c.get("status") == "True"}


def _finished(job: Obj) -> bool:
    return bool(_conditions(job).keys() & {"Complete", "Failed"})


def _deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _container(pod: Obj) -> Obj:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == m.CONTAINER:
            found: Obj = status
            return found
    return {}


def _container_started(pod: Obj) -> bool:
    state = _container(pod).get("state") or {}
    return "running" in state or "terminated" in state


def _pod_live(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed")


def _observed(handle: str, job: Obj, pods: list[Obj]) -> Observed:
    conds = _conditions(job)
    if "Complete" in conds:
        return Observed("exited", exit_code=0, detail="exit code 0")
    for pod in reversed(pods):  # newest first; restartPolicy Never: terminated is final
        terminated = (_container(pod).get("state") or {}).get("terminated")
        if terminated:
            code = int(terminated.get("exitCode", 1))
            why = (pod.get("status") or {}).get("reason") or terminated.get("reason") or ""
            said = failure_in(terminated.get("message") or "") if code else None
            text = _describe(code, why)
            return Observed("exited", exit_code=code, detail=f"{text}: {said}" if said else text)
    if "Failed" in conds:
        cond = conds["Failed"]
        why = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
        return Observed("exited", exit_code=None, detail=f"Kubernetes Job failed ({why})")
    if _deleting(job) and not any(_pod_live(p) for p in pods):
        return Observed("missing", detail=f"Kubernetes Job {handle} is being deleted")
    for pod in pods:
        waiting = (_container(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return Observed("running", detail=f"waiting: {waiting['reason']}")
    return Observed("running")


def _describe(code: int, reason: str = "") -> str:
    text = f"exit code {code}"
    if code > 128:
        with contextlib.suppress(ValueError):
            text = f"killed by {signal.Signals(code - 128).name}"
    if reason and reason not in ("Completed", "Error"):
        text += f" ({reason})"
    return text


def _reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def _parse_timestamp(text: str) -> int | None:
    """RFC 3339 with up to nanoseconds (``2024-05-01T10:00:00.123456789Z``) -> ns since epoch."""
    if not text.endswith("Z") or "T" not in text:
        return None
    body = text[:-1]
    whole, _, fraction = body.partition(".")
    try:
        seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        nanos = int((fraction + "000000000")[:9]) if fraction else 0
    except ValueError:
        return None
    if fraction and not fraction.isdigit():
        return None
    return int(seconds) * 10**9 + nanos


__all__ = [
    "RBAC",
    "KubernetesDeployer",
    "KubernetesDeployerSettings",
    "KubernetesUnavailable",
]
