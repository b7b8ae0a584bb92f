"""Reading what the API server says about a task attempt's Job and pods: plain functions over
the JSON objects, so the deployer's decisions are testable without a cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flame_service.errors import AlreadyExists
from flame_service.taskdir import describe_exit, failure_in

from ..kubeapi import ApiException
from . import kube_manifests as m
from .base import Launch, Observed

Obj = dict[str, Any]


def annotation(obj: Obj, key: str) -> str | None:
    value = (obj.get("metadata") or {}).get("annotations", {}) or {}
    found = value.get(key)
    return str(found) if found is not None else None


def check_ours(job: Obj, launch: Launch) -> None:
    want = {
        m.ANN_JOB_ID: launch.job_id,
        m.ANN_TASK_ID: launch.task_id,
        m.ANN_ATTEMPT: str(launch.attempt),
    }
    got = {k: annotation(job, k) for k in want}
    if got != want:
        raise AlreadyExists(
            f"Kubernetes Job {job['metadata'].get('namespace')}/{job['metadata']['name']} "
            f"exists and is not attempt {launch.attempt} of task {launch.task_id}"
        )


def conditions(job: Obj) -> dict[str, Obj]:
    conds = (job.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conds if c.get("status") == "True"}


def finished(job: Obj) -> bool:
    return bool(conditions(job).keys() & {"Complete", "Failed"})


def deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def container(pod: Obj) -> Obj:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == m.CONTAINER:
            found: Obj = status
            return found
    return {}


def container_started(pod: Obj) -> bool:
    state = container(pod).get("state") or {}
    return "running" in state or "terminated" in state


def pod_live(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed")


def observed(handle: str, job: Obj, pods: list[Obj]) -> Observed:
    conds = conditions(job)
    if "Complete" in conds:
        return Observed("exited", exit_code=0, detail="exit code 0")
    for pod in reversed(pods):  # newest first; restartPolicy Never: terminated is final
        terminated = (container(pod).get("state") or {}).get("terminated")
        if terminated:
            code = int(terminated.get("exitCode", 1))
            why = (pod.get("status") or {}).get("reason") or terminated.get("reason") or ""
            said = failure_in(terminated.get("message") or "") if code else None
            text = describe(code, why)
            return Observed("exited", exit_code=code, detail=f"{text}: {said}" if said else text)
    if "Failed" in conds:
        cond = conds["Failed"]
        why = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
        return Observed("exited", exit_code=None, detail=f"Kubernetes Job failed ({why})")
    if deleting(job) and not any(pod_live(p) for p in pods):
        return Observed("missing", detail=f"Kubernetes Job {handle} is being deleted")
    for pod in pods:
        waiting = (container(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return Observed("running", detail=f"waiting: {waiting['reason']}")
    return Observed("running")


def describe(code: int, reason: str = "") -> str:
    text = describe_exit(code)
    if reason and reason not in ("Completed", "Error"):
        text += f" ({reason})"
    return text


def api_reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def parse_timestamp(text: str) -> int | None:
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
