"""The fake cluster's controllers: a Job controller and a kubelet that runs pods as processes.

**Job controller.** A new Job gets one pod (``<job>-<5 chars>``, labelled ``job-name`` and
``controller-uid``, owned by the Job). When the pod succeeds the Job gets the ``Complete``
condition; when it fails (or is deleted before it ended) the Job counts a failure and, past its
``backoffLimit``, gets ``Failed`` (``BackoffLimitExceeded``); otherwise a new pod.

**Kubelet.** A pod is "scheduled" at once. Its volumes are made in a folder standing in for the
pod's filesystem: an ``emptyDir`` is a folder; a ``secret`` volume is its keys (or its ``items``)
written as files with the volume's mode, once the Secret exists (until then the container is
``ContainerCreating``, as on a real node). The container's ``command`` + ``args`` run as a local
process with only the environment the pod spec gives it (``value``, ``fieldRef``,
``secretKeyRef``; plus ``PATH`` and ``HOSTNAME``), in its ``workingDir``. Paths inside the
container (in arguments, environment values and the working dir) are translated to the
folders that stand for the mounts; the image decides what the first word of the command runs
(``images``: image -> {"python": "/path/to/python"}); an unknown image is ``ErrImagePull``.
Each output line is recorded with an RFC 3339 nanosecond timestamp (the pod log). The
process's exit becomes the container's ``terminated`` state and the pod's phase.
``spec.activeDeadlineSeconds`` is enforced (also when lowered on a running pod): the process
gets SIGTERM, then SIGKILL after the grace period, and the pod fails with ``DeadlineExceeded``.
Deleting a pod ends its process the same way, then removes the pod. Pod folders are kept after
the pod is gone (tests read a finished task's files there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .store import Event, Obj, Store, now_rfc3339


def rfc3339_nano(ns: int) -> str:
    seconds, nanos = divmod(ns, 10**9)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse_rfc3339(text: str) -> int:
    """RFC 3339 (seconds or fractions) -> ns since the epoch."""
    body = text.rstrip("Z")
    whole, _, fraction = body.partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return int(seconds) * 10**9 + (int((fraction + "000000000")[:9]) if fraction else 0)


@dataclass
class LogLine:
    ns: int
    stream: str
    text: str  # with its newline when it had one


@dataclass(frozen=True)
class PodRecord:
    namespace: str
    name: str
    labels: dict[str, str]
    root: Path  # the folder standing for its filesystem (volumes/<name>/...)
    spec: Obj


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    root: Path
    logs: list[LogLine] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    started_ns: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    deleting_grace: int | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False


class JobController:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.listeners.append(self.on_event)

    def on_event(self, event: Event) -> None:
        if event.plural == "jobs" and event.type == "ADDED":
            self._ensure_pod(event.obj)
        elif event.plural == "pods":
            self._pod_changed(event)

    def _job_of(self, pod: Obj) -> Obj | None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                job = self.store.find("jobs", pod["metadata"]["namespace"], ref["name"])
                if job is not None and job["metadata"]["uid"] == ref["uid"]:
                    return job
        return None

    def _ensure_pod(self, job: Obj) -> None:
        meta = job["metadata"]
        if job["spec"].get("suspend") or _job_finished(job):
            return
        template = job["spec"]["template"]
        uid = meta["uid"]
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            "job-name": meta["name"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": uid,
            "batch.kubernetes.io/controller-uid": uid,
        }
        pod = {
            "metadata": {
                "name": f"{meta['name'][:57]}-{uuid.uuid4().hex[:5]}",
                "labels": labels,
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": dict(template["spec"]),
            "status": {"phase": "Pending"},
        }
        self.store.create("pods", meta["namespace"], pod)
        live = self.store.find("jobs", meta["namespace"], meta["name"])
        if live is not None:
            status = live.setdefault("status", {})
            status["active"] = status.get("active", 0) + 1
            status.setdefault("startTime", now_rfc3339())
            self.store.put("jobs", live)

    def _pod_changed(self, event: Event) -> None:
        pod = event.obj
        job = self._job_of(pod)
        if job is None or _job_finished(job):
            return
        phase = pod.get("status", {}).get("phase")
        counted = pod["metadata"].get("annotations", {}).get("fake/counted")
        gone = event.type == "DELETED"
        if counted or not (phase in ("Succeeded", "Failed") or gone):
            return
        live = self.store.find(*_key(pod))
        if live is not None:  # count each pod once
            live["metadata"].setdefault("annotations", {})["fake/counted"] = "true"
            self.store.put("pods", live)
        status = job.setdefault("status", {})
        status["active"] = max(0, status.get("active", 1) - 1)
        now = now_rfc3339()
        if phase == "Succeeded" and not gone:
            status["succeeded"] = status.get("succeeded", 0) + 1
            status["completionTime"] = now
            status["conditions"] = [_condition("Complete", "", "", now)]
            self.store.put("jobs", job)
            return
        status["failed"] = status.get("failed", 0) + 1
        if status["failed"] > job["spec"].get("backoffLimit", 6):
            status["conditions"] = [
                _condition(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    now,
                )
            ]
            self.store.put("jobs", job)
            return
        self.store.put("jobs", job)
        self._ensure_pod(job)


def _key(pod: Obj) -> tuple[str, str, str]:
    return ("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])


def _log_tail(logs: list[LogLine]) -> str:
    """What a kubelet puts in ``terminated.message`` under ``FallbackToLogsOnError``: the
    end of the container's log, at most 80 lines and 2048 bytes."""
    text = "".join(x.text for x in logs[-80:])
    return text.encode()[-2048:].decode("utf-8", "replace")


def _condition(kind: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


def _job_finished(job: Obj) -> bool:
    conds = job.get("status", {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conds)


class Kubelet:
    def __init__(self, store: Store, root: Path, images: dict[str, dict[str, str]]) -> None:
        self.store = store
        self.root = root
        self.images = images
        self.pods: dict[str, RunningPod] = {}  # by uid; finished ones stay (their logs)
        self.history: list[PodRecord] = []  # every pod it ran, also deleted ones
        store.listeners.append(self.on_event)
        store.deleting_pod = self.on_delete

    # -- events ------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if event.plural != "pods":
            return
        uid = event.obj["metadata"]["uid"]
        if event.type == "ADDED":
            meta = event.obj["metadata"]
            root = self.root / meta["namespace"] / meta["name"]
            run = RunningPod(meta["namespace"], meta["name"], uid, root)
            self.pods[uid] = run
            self.history.append(
                PodRecord(
                    meta["namespace"],
                    meta["name"],
                    dict(meta.get("labels") or {}),
                    root,
                    copy.deepcopy(event.obj["spec"]),
                )
            )
            run.task = asyncio.get_running_loop().create_task(self._run(run))
        elif event.type == "MODIFIED" and uid in self.pods:
            self.pods[uid].changed.set()

    def on_delete(self, pod: Obj, grace: int) -> None:
        run = self.pods.get(pod["metadata"]["uid"])
        if run is None or run.ended:
            self.store.remove(*_key(pod))
            return
        run.deleting_grace = grace
        run.changed.set()

    # -- one pod -------------------------------------------------------------------------------
    def _pod(self, run: RunningPod) -> Obj | None:
        return self.store.find("pods", run.namespace, run.name)

    def _update(self, run: RunningPod, **status: Any) -> None:
        pod = self._pod(run)
        if pod is None:
            return
        pod.setdefault("status", {}).update(status)
        self.store.put("pods", pod)

    def _container_state(self, run: RunningPod, name: str, state: Obj, **extra: Any) -> None:
        pod = self._pod(run)
        if pod is None:
            return
        image = pod["spec"]["containers"][0]["image"]
        status = {"name": name, "image": image, "state": state, "ready": "running" in state}
        status.update(extra)
        pod.setdefault("status", {})["containerStatuses"] = [status]
        self.store.put("pods", pod)

    async def _run(self, run: RunningPod) -> None:
        try:
            await self._lifecycle(run)
        finally:
            run.ended = True
            pod = self._pod(run)
            if pod is not None and pod["metadata"].get("deletionTimestamp"):
                self.store.remove(*_key(pod))

    async def _lifecycle(self, run: RunningPod) -> None:
        pod = self._pod(run)
        if pod is None:
            return
        spec = pod["spec"]
        container = spec["containers"][0]
        cname = container["name"]
        self._update(
            run,
            phase="Pending",
            startTime=now_rfc3339(),
            hostIP="127.0.0.1",
            podIP="127.0.0.1",
        )
        pod = self._pod(run)
        if pod is not None:
            pod["spec"]["nodeName"] = "fake-node"
            self.store.put("pods", pod)
        run.started_ns = time.time_ns()
        self._container_state(run, cname, {"waiting": {"reason": "ContainerCreating"}})
        # volumes: wait for the Secrets they need
        mounts: dict[str, Path] = {}
        while True:
            if await self._ending(run):
                return
            try:
                mounts = self._volumes(run, spec)
                break
            except LookupError:
                await self._wait(run, 0.05)
        exe = self.images.get(container["image"])
        if exe is None:
            self._container_state(
                run,
                cname,
                {"waiting": {"reason": "ErrImagePull", "message": "fake: unknown image"}},
            )
            await self._stuck(run)
            return
        user = (container.get("securityContext") or {}).get(
            "runAsUser", (spec.get("securityContext") or {}).get("runAsUser")
        )
        non_root = (container.get("securityContext") or {}).get("runAsNonRoot") or (
            spec.get("securityContext") or {}
        ).get("runAsNonRoot")
        if non_root and not user:
            self._container_state(
                run,
                cname,
                {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": "runAsNonRoot without a numeric non-root runAsUser",
                    }
                },
            )
            await self._stuck(run)
            return
        paths = self._mount_points(run, container, mounts)
        argv = [
            _translate(a, paths)
            for a in [*container.get("command", []), *container.get("args", [])]
        ]
        if argv and argv[0] in exe:
            argv[0] = exe[argv[0]]
        env = self._env(run, pod, container, paths)
        cwd = Path(_translate(container.get("workingDir", "/"), paths))
        cwd.mkdir(parents=True, exist_ok=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self._container_state(
                run,
                cname,
                {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(exc)}},
            )
            self._update(run, phase="Failed")
            return
        run.process = proc
        started = now_rfc3339()
        self._container_state(run, cname, {"running": {"startedAt": started}}, started=True)
        self._update(run, phase="Running")
        readers = [
            asyncio.ensure_future(self._read(run, proc.stdout, "stdout")),
            asyncio.ensure_future(self._read(run, proc.stderr, "stderr")),
        ]
        reason = ""
        waiter = asyncio.ensure_future(proc.wait())
        while not waiter.done():
            run.changed.clear()
            deadline = self._deadline(run)
            if run.deleting_grace is not None:
                await self._kill(run, waiter, run.deleting_grace)
                break
            if deadline is not None and time.monotonic() >= deadline:
                reason = "DeadlineExceeded"
                grace = int(spec.get("terminationGracePeriodSeconds", 30))
                await self._kill(run, waiter, grace)
                break
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            changed = asyncio.ensure_future(run.changed.wait())
            await asyncio.wait(
                {waiter, changed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            changed.cancel()
        code = await waiter
        await asyncio.gather(*readers, return_exceptions=True)
        exit_code = 128 - code if code < 0 else code
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        if exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            terminated["message"] = _log_tail(run.logs)
        self._container_state(run, cname, {"terminated": terminated})
        status: dict[str, Any] = {"phase": "Succeeded" if exit_code == 0 else "Failed"}
        if reason:
            status.update(
                phase="Failed",
                reason=reason,
                message="Pod was active on the node longer than the specified deadline",
            )
        self._update(run, **status)

    async def _stuck(self, run: RunningPod) -> None:
        """A container that cannot start waits until the pod is deleted or its deadline passes
        (then the pod fails, its container never having run)."""
        while not await self._ending(run):
            deadline = self._deadline(run)
            if deadline is not None and time.monotonic() >= deadline:
                self._update(
                    run,
                    phase="Failed",
                    reason="DeadlineExceeded",
                    message="Pod was active on the node longer than the specified deadline",
                )
                return
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            await self._wait(run, wait)

    def _deadline(self, run: RunningPod) -> float | None:
        pod = self._pod(run)
        seconds = (pod or {}).get("spec", {}).get("activeDeadlineSeconds")
        if seconds is None:
            return None
        elapsed = (time.time_ns() - run.started_ns) / 1e9
        return time.monotonic() + max(0.0, float(seconds) - elapsed)

    async def _kill(self, run: RunningPod, waiter: asyncio.Future[int], grace: int) -> None:
        proc = run.process
        assert proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    async def _ending(self, run: RunningPod) -> bool:
        return run.deleting_grace is not None or self._pod(run) is None

    async def _wait(self, run: RunningPod, seconds: float) -> None:
        run.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.changed.wait(), timeout=seconds)

    async def _read(self, run: RunningPod, stream: asyncio.StreamReader | None, name: str) -> None:
        if stream is None:
            return
        while True:
            line = await stream.readline()
            if not line:
                return
            run.logs.append(LogLine(time.time_ns(), name, line.decode("utf-8", "replace")))

    # -- volumes and the container's view --------------------------------------------------------
    def _volumes(self, run: RunningPod, spec: Obj) -> dict[str, Path]:
        """Make each volume's folder; LookupError while a Secret it needs does not exist."""
        out: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            path = run.root / "volumes" / volume["name"]
            if "emptyDir" in volume:
                path.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume:
                source = volume["secret"]
                secret = self.store.find("secrets", run.namespace, source["secretName"])
                if secret is None:
                    raise LookupError(source["secretName"])
                if not path.exists():
                    self._write_secret(path, secret, source)
            else:
                raise ValueError(f"fake kubelet: volume type of {volume['name']} not supported")
            out[volume["name"]] = path
        return out

    @staticmethod
    def _write_secret(path: Path, secret: Obj, source: Obj) -> None:
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        mode = source.get("defaultMode", 0o644)
        staging = path.with_name(path.name + ".new")
        for item in items:
            rel = Path(item["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"fake kubelet: bad item path {item['path']}")
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]])
            target.chmod(item.get("mode", mode))
        staging.mkdir(parents=True, exist_ok=True)
        for folder in sorted((p for p in staging.rglob("*") if p.is_dir()), reverse=True):
            folder.chmod(0o555)  # read-only, as the kubelet mounts it
        staging.chmod(0o555)
        staging.rename(path)

    @staticmethod
    def _mount_points(
        run: RunningPod, container: Obj, mounts: dict[str, Path]
    ) -> list[tuple[str, Path]]:
        """(container path, host folder), longest first; the rest of "/" is the pod's root."""
        points = [
            (m["mountPath"].rstrip("/") or "/", mounts[m["name"]])
            for m in container.get("volumeMounts") or []
        ]
        rootfs = run.root / "rootfs"
        rootfs.mkdir(parents=True, exist_ok=True)
        points.append(("/", rootfs))
        # a mount inside another one appears there too (the kubelet makes the mount point)
        for inner, host in points:
            for outer, outer_host in points:
                if inner != outer and inner.startswith(outer.rstrip("/") + "/"):
                    link = outer_host / inner[len(outer.rstrip("/")) + 1 :]
                    if not link.exists():
                        link.parent.mkdir(parents=True, exist_ok=True)
                        link.symlink_to(host, target_is_directory=True)
        return sorted(points, key=lambda p: len(p[0]), reverse=True)

    def _env(
        self, run: RunningPod, pod: Obj, container: Obj, paths: list[tuple[str, Path]]
    ) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": run.name}
        for item in container.get("env") or []:
            if "value" in item:
                value = str(item["value"])
            else:
                source = item.get("valueFrom") or {}
                if "fieldRef" in source:
                    value = _field(pod, source["fieldRef"]["fieldPath"])
                elif "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    secret = self.store.find("secrets", run.namespace, ref["name"]) or {}
                    value = base64.b64decode((secret.get("data") or {})[ref["key"]]).decode()
                else:
                    raise ValueError(f"fake kubelet: env source of {item['name']} not supported")
            env[item["name"]] = _translate(value, paths)
        return env

    # -- logs ------------------------------------------------------------------------------------
    def log(
        self,
        namespace: str,
        name: str,
        *,
        timestamps: bool,
        since_ns: int | None,
        tail: int | None,
        limit_bytes: int | None,
    ) -> str:
        for run in self.pods.values():
            if (run.namespace, run.name) == (namespace, name):
                lines = [x for x in run.logs if since_ns is None or x.ns >= since_ns]
                if tail is not None:
                    lines = lines[-tail:] if tail else []
                text = "".join(
                    (f"{rfc3339_nano(x.ns)} " if timestamps else "") + x.text for x in lines
                )
                return text[:limit_bytes] if limit_bytes else text
        return ""

    def started(self, namespace: str, name: str) -> bool:
        return any(
            (r.namespace, r.name) == (namespace, name) and r.process is not None
            for r in self.pods.values()
        )

    async def shutdown(self) -> None:
        for run in self.pods.values():
            if run.process is not None and run.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
        tasks = [r.task for r in self.pods.values() if r.task is not None and not r.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _translate(value: str, paths: list[tuple[str, Path]]) -> str:
    """A container path -> the host path standing for it (other values unchanged)."""
    if not value.startswith("/"):
        return value
    for point, host in paths:
        if point == "/":
            return str(host / value.lstrip("/")) if value != "/" else str(host)
        if value == point or value.startswith(point + "/"):
            return str(host) + value[len(point) :]
    return value


def _field(pod: Obj, path: str) -> str:
    meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    table = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", "fake-node"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP", "127.0.0.1"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
    }
    if path not in table:
        raise ValueError(f"fake kubelet: fieldRef {path} not supported")
    return str(table[path])
