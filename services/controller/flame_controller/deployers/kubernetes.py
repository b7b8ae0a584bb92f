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
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes import client

from flame_service.errors import AlreadyExists, FlameServiceError, InvalidArgument

from ..kubeapi import (
    ApiException,
    KubernetesUnavailable,
    api_client,
    call,
    call_in_thread,
    pod_log,
)
from . import kube_manifests as m
from .base import Launch, Observed, Output
from .kube_bundle import task_bundle
from .kube_logs import Position, take_lines
from .kube_manifests import RBAC
from .kube_settings import KubernetesDeployerSettings
from .kube_status import (
    annotation,
    api_reason,
    check_ours,
    container_started,
    deleting,
    finished,
    observed,
    pod_live,
)
from .kube_watch import JobInformer

log = structlog.get_logger(__name__)

Obj = dict[str, Any]


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
        self._acked: dict[str, Position] = {}
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
        ended = new is None or (finished(new) and (old is None or not finished(old)))
        listener = self._listener
        if not ended or listener is None:
            return
        task_id = annotation(new or old or {}, m.ANN_TASK_ID)
        if task_id:
            try:
                listener(task_id)
            except RuntimeError:  # the reconciler's loop is gone
                log.debug("deployer.listener_gone", job=name)

    # -- start -------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Nothing to start ahead: each task is a Job, and its pod starts from the image."""

    async def start(self, launch: Launch) -> str:
        name = m.job_name(launch.job_id, launch.task_id, launch.attempt)
        handle = f"{self.namespace}/{name}"
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            self.informer.start()
            existing = await self._get_job(self.namespace, name)
            if existing is not None:
                check_ours(existing, launch)
                log.info("deployer.adopted", task_id=launch.task_id, job=name)
                return handle
            code_sha256 = hashlib.sha256(launch.code).hexdigest()
            content = await asyncio.to_thread(
                task_bundle, launch, bind_host=self.settings.task_bind_host
            )
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
                check_ours(existing, launch)
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

    async def _anchor(self, job_id: str) -> Obj:
        """The owner reference to the Flame job's anchor ConfigMap (made on first use)."""
        body = m.anchor(job_id, self.pod)
        made = await self._create(self.core.create_namespaced_config_map, body, exists_ok=True)
        if made is None:
            made = await self._call(
                self.core.read_namespaced_config_map, body["metadata"]["name"], self.namespace
            )
            if annotation(made, m.ANN_JOB_ID) != job_id:
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
        if cached is not None and not finished(cached) and not deleting(cached):
            return Observed("running")  # an end is always confirmed with the API server
        job = await self._get_job(namespace, name)
        if job is None:
            return Observed("missing", detail=f"Kubernetes Job {handle} does not exist")
        pods = await self._pods(namespace, name)
        return observed(handle, job, pods)

    async def adopt(self, handle: str) -> bool:
        running = (await self.observe(handle)).state == "running"
        log.info("deployer.adopt", handle=handle, running=running)
        return running

    # -- stop --------------------------------------------------------------------------------
    async def stop(self, handle: str) -> None:
        namespace, name = self._ref(handle)
        job = await self._get_job(namespace, name)
        if job is None or finished(job):
            return
        pods = [p for p in await self._pods(namespace, name) if pod_live(p)]
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
        stored = Position.of(annotation(job or {}, m.ANN_OUTPUT))
        acked = self._acked.get(handle, Position())
        position = max(stored, acked, key=Position.key)
        if job is None:
            return Output(lines=[], position=position.as_dict())
        lines: list[tuple[str, str]] = []
        for pod in await self._pods(namespace, name):
            if not container_started(pod):
                continue
            since = None
            if position.ns:  # whole seconds: lines of that second are skipped by take_lines
                stamp = datetime.fromtimestamp(position.ns // 10**9, UTC)
                since = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                text = await call_in_thread(
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
            position, complete = take_lines(
                text,
                position,
                lines,
                final=final,
                max_lines=self.settings.max_output_lines,
                max_chars=self.settings.max_line_chars,
            )
            if not complete:
                break
        return Output(lines=lines, position=position.as_dict())

    async def ack_output(self, handle: str, output: Output) -> None:
        namespace, name = self._ref(handle)
        new = Position.of(output.position)
        if new.key() <= self._acked.get(handle, Position()).key():
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
        result: Obj = await call_in_thread(call, fn, *args, _request_timeout=30, **kwargs)
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
                    f"Kubernetes refused {body['kind']} {body['metadata']['name']}: "
                    f"{api_reason(exc)}"
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


class _Refused(FlameServiceError):
    """The API server refused an object: retrying the same object cannot help."""

    code = "kubernetes_refused"


__all__ = [
    "RBAC",
    "KubernetesDeployer",
    "KubernetesDeployerSettings",
    "KubernetesUnavailable",
]
