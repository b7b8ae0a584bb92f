"""What only the Kubernetes deployer promises (the shared contract is
tests/contract/test_deployers.py), against the fake API server of tests/fake_kubernetes:
deterministic names and no duplicate after a restart, a hardened pod with the design's
resources, the credential never in clear in a Job or pod, status from a watch that survives its
expiry (410 Gone, resync) and notices a deleted Job, stop that keeps the log, cleanup at job end,
clear refusals."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flame_controller.deployers.base import Launch
from flame_controller.deployers.kube_manifests import anchor_name, is_dns_label, job_name
from flame_controller.deployers.kubernetes import (
    RBAC,
    KubernetesDeployer,
    KubernetesDeployerSettings,
)
from flame_service.errors import AlreadyExists, FlameServiceError, InvalidArgument, TooLarge
from flame_spec import TaskConfig, parse_design, parse_job_spec
from tests.fake_kubernetes import FakeKubernetes

IMAGE = "flame/task-runner:test"
TASK_LABELS = {
    "app.kubernetes.io/name": "flame",
    "app.kubernetes.io/instance": "t",
    "app.kubernetes.io/component": "task",
}
CREDENTIAL = "flm_task_" + "s3cr3t" * 6
ROLE = r"""
import json, os, sys, time
from pathlib import Path
cfg = json.loads(Path(sys.argv[1]).read_text())
hp = cfg["job"]["hyperparameters"]
print(f"started {cfg['task_id']}", flush=True)
Path("cwd.json").write_text(json.dumps({"cwd": os.getcwd(), "env": dict(os.environ),
                                        "config": cfg}))
if hp["mode"] == "exit":
    sys.exit(hp["code"])
for i in range(5):
    print(f"line {i}", flush=True)
while not Path(hp["release"]).exists():
    time.sleep(0.02)
print("released", flush=True)
"""
# The pod's command runs the role's program: bundle/code/run.py picks it by the config's role.
RUN = r"""
import json, runpy, sys
from pathlib import Path
role = json.loads(Path(sys.argv[1]).read_text())["role"]
runpy.run_path(str(Path(sys.argv[1]).parent / "code" / role / "main.py"), run_name="__main__")
"""
COMMAND = ["python", "bundle/code/run.py"]
DESIGN = {
    "roles": [
        {"name": "trainer", "isDataConsumer": True},
        {
            "name": "aggregator",
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
        },
        {"name": "coordinator"},
    ]
}


def code_zip(extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for role in ("aggregator", "coordinator"):
            zf.writestr(f"{role}/main.py", ROLE)
        zf.writestr("lib/helpers.py", "X = 1\n")
        zf.writestr("run.py", RUN)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    root = tmp_path_factory.mktemp("kubernetes")
    with FakeKubernetes(root, images={IMAGE: {"python": sys.executable}}, rbac=RBAC) as f:
        yield f


class Env:
    def __init__(self, fake: FakeKubernetes, tmp_path: Path) -> None:
        self.fake = fake
        self.tmp = tmp_path
        self.ns = f"t-{uuid.uuid4().hex[:10]}"
        self.kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
        self.deployers: list[KubernetesDeployer] = []
        self.ended: list[str] = []

    def settings(self, **over: Any) -> KubernetesDeployerSettings:
        values: dict[str, Any] = {
            "namespace": self.ns,
            "runner_image": IMAGE,
            "kubeconfig": str(self.kubeconfig),
            "service_account": "flame-task",
            "task_labels": TASK_LABELS,
            "image_pull_secrets": ["regcred"],
            "stop_grace_seconds": 2,
            "command": COMMAND,
            **over,
        }
        return KubernetesDeployerSettings(**values)

    def deployer(self, listen: bool = True, **over: Any) -> KubernetesDeployer:
        d = KubernetesDeployer(self.settings(**over))
        if listen:
            d.set_listener(self.ended.append)
        self.deployers.append(d)
        return d

    def launch(
        self,
        *,
        role: str = "aggregator",
        task_id: str = "aggregator-0-abc",
        job_id: str = "job-1",
        attempt: int = 1,
        zip_bytes: bytes | None = None,
        **hp: Any,
    ) -> Launch:
        spec = parse_job_spec(
            {
                "datasets": {"default": ["d"]},
                "hyperparameters": {"release": str(self.tmp / f"release-{task_id}"), **hp},
            }
        )
        config = TaskConfig(
            job_id=job_id,
            job_name="demo",
            task_id=task_id,
            role=role,
            design=parse_design(DESIGN),
            job=spec,
        )
        return Launch(
            job_id=job_id,
            task_id=task_id,
            role=role,
            attempt=attempt,
            config=config,
            code=zip_bytes if zip_bytes is not None else code_zip(),
            credential=CREDENTIAL,
        )

    def release(self, task_id: str = "aggregator-0-abc") -> None:
        (self.tmp / f"release-{task_id}").touch()

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return self.fake.get(plural, self.ns, name)

    def objects(self, plural: str, selector: str | None = None) -> list[dict[str, Any]]:
        return self.fake.objects(plural, self.ns, selector)


@pytest.fixture
async def env(fake: FakeKubernetes, tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(fake, tmp_path)
    yield e
    for d in e.deployers:
        await d.close()


async def until(pred: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if isinstance(got, Awaitable):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not before the deadline: {what}")
        await asyncio.sleep(0.02)


async def state(d: KubernetesDeployer, handle: str) -> str:
    return (await d.observe(handle)).state


def name_of(handle: str) -> str:
    return handle.split("/", 1)[1]


# -- names -----------------------------------------------------------------------------------


def test_job_names_are_deterministic_dns_labels() -> None:
    long_task = "a-very-long-role-name-that-goes-on-and-on-0-0123456789"
    names = {job_name("j" * 32, t, a) for t in ("aggregator-0-abc", long_task) for a in (1, 2)}
    assert len(names) == 4  # attempt and task make the name
    for name in names:
        assert len(name) <= 63 and is_dns_label(name), name
    assert job_name("j1", long_task, 999_999) == job_name("j1", long_task, 999_999)
    assert len(job_name("j1", long_task, 999_999)) <= 63
    assert job_name("job-1", "t", 1) != job_name("job-2", "t", 1)  # the job is in the digest
    assert is_dns_label(anchor_name("any job id, even odd ones"))


async def test_a_restart_never_duplicates_the_job_even_without_the_handle(env: Env) -> None:
    first = env.deployer()
    task = env.launch(mode="wait")
    handle = await first.start(task)
    assert handle == first.handle_for(task.job_id, task.task_id, task.attempt)
    await until(lambda: _pods_running(env, handle), "the pod runs")
    await first.close()

    second = env.deployer()  # the crash window: the handle was never stored
    assert await second.start(task) == handle
    assert await second.start(task) == handle
    selector = f"flame/task={task.task_id}"
    assert len(env.objects("jobs", selector)) == 1
    assert len(env.objects("secrets", selector)) == 1
    assert len(env.objects("pods", selector)) == 1
    env.release()
    await until(lambda: _exited(second, handle), "the task ends")
    out = await second.read_output(handle, final=True)
    assert [t for _, t in out.lines if t.startswith("started")] == ["started aggregator-0-abc"]


async def test_a_foreign_job_with_the_same_name_is_refused(env: Env) -> None:
    d = env.deployer()
    task = env.launch(mode="exit", code=0)
    other = env.launch(mode="exit", code=0, job_id="job-2")  # another job's object
    handle = await d.start(other)
    squatter = env.get("jobs", name_of(handle))
    assert squatter is not None
    # an object that happens to carry the name this attempt gets
    forged = {
        "metadata": {"name": job_name(task.job_id, task.task_id, 1), "labels": {}},
        "spec": squatter["spec"],
    }
    env.fake.call(env.fake.store.create, "jobs", env.ns, forged)
    with pytest.raises(AlreadyExists, match="is not attempt 1 of task aggregator-0-abc"):
        await d.start(task)


# -- the pod ---------------------------------------------------------------------------------


async def test_the_pod_is_hardened_and_gets_the_design_resources(env: Env) -> None:
    d = env.deployer()
    agg = await d.start(env.launch(mode="exit", code=0))
    coord = await d.start(env.launch(mode="exit", code=0, role="coordinator", task_id="co-0-x"))
    await until(lambda: _exited(d, agg), "the aggregator ends")
    await until(lambda: _exited(d, coord), "the coordinator ends")
    job = env.get("jobs", name_of(agg))
    assert job is not None
    pod = _pods(env, agg)[0]
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "flame-task"
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == IMAGE
    assert container["command"] == COMMAND and container["args"] == ["bundle/config.json"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path in ("/var/lib/flame-task", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]["name"]]  # the only writable places
    bundle = mounts["/var/lib/flame-task/bundle"]
    assert bundle["readOnly"] is True and "secret" in volumes[bundle["name"]]
    # the design's resources for the aggregator; the deployer's defaults for the coordinator
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    coord_pod = _pods(env, coord)[0]
    assert coord_pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "2Gi"},
    }
    # the labels the chart's NetworkPolicies select task pods by
    assert TASK_LABELS.items() <= pod["metadata"]["labels"].items()
    # tied to the Flame job: the Job and its Secret are owned by the job's anchor ConfigMap
    anchor = env.get("configmaps", anchor_name("job-1"))
    assert anchor is not None
    for obj in (job, env.get("secrets", name_of(agg))):
        assert obj is not None
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"]) == ("ConfigMap", anchor["metadata"]["uid"])
    # what the task saw: its bundle, relative paths, no credential in its environment
    seen = json.loads((_pod_dir(env, agg) / "volumes" / "work" / "cwd.json").read_text())
    assert seen["config"]["workdir"] == "." and seen["config"]["checkpoint_dir"] == "checkpoints"
    assert seen["config"]["discovery"]["token"] == CREDENTIAL  # from the mounted Secret
    assert CREDENTIAL not in json.dumps(seen["env"])
    code = _pod_dir(env, agg) / "volumes" / "bundle" / "code"
    assert (code / "lib" / "helpers.py").read_text() == "X = 1\n"


async def test_the_credential_is_never_in_clear_in_a_job_or_pod(env: Env) -> None:
    d = env.deployer()
    handle = await d.start(env.launch(mode="exit", code=0))
    await until(lambda: _exited(d, handle), "the task ends")
    encoded = base64.b64encode(CREDENTIAL.encode()).decode()
    for obj in (env.get("jobs", name_of(handle)), *_pods(env, handle)):
        text = json.dumps(obj)
        assert CREDENTIAL not in text and encoded[:24] not in text
    secret = env.get("secrets", name_of(handle))
    assert secret is not None and secret["immutable"] is True
    config = json.loads(base64.b64decode(secret["data"]["config.json"]))
    assert config["discovery"]["token"] == CREDENTIAL


async def test_a_bundle_too_big_for_a_secret_is_refused_with_a_reason(env: Env) -> None:
    d = env.deployer()
    weights = os.urandom(1100 * 1024)  # incompressible
    task = env.launch(mode="exit", code=0, zip_bytes=code_zip({"model.bin": weights}))
    with pytest.raises(TooLarge, match="Kubernetes Secret"):
        await d.start(task)
    assert env.objects("jobs") == [] and env.objects("secrets") == []


async def test_missing_rbac_is_a_clear_refusal(tmp_path: Path) -> None:
    """A Role without Secret creation (an old chart): the start fails saying so, no Job."""
    rules = {k: v for k, v in RBAC.items() if k != ("", "secrets")}
    with FakeKubernetes(
        tmp_path / "k", images={IMAGE: {"python": sys.executable}}, rbac=rules
    ) as f:
        env = Env(f, tmp_path)
        d = env.deployer(listen=False)
        try:
            with pytest.raises(FlameServiceError, match=r"refused Secret .*forbidden"):
                await d.start(env.launch(mode="exit", code=0))
            assert env.objects("jobs") == []
        finally:
            await d.close()


def test_settings_come_from_the_chart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAME_KUBERNETES_NAMESPACE", "flame")
    monkeypatch.setenv("FLAME_KUBERNETES_RUNNER_IMAGE", "reg.example/flame/task-runner:1")
    monkeypatch.setenv("FLAME_KUBERNETES_SERVICE_ACCOUNT", "flame-task")
    monkeypatch.setenv("FLAME_KUBERNETES_TASK_LABELS", json.dumps(TASK_LABELS))
    monkeypatch.setenv("FLAME_KUBERNETES_IMAGE_PULL_SECRETS", "one, two")
    s = KubernetesDeployerSettings()
    assert (s.namespace, s.runner_image, s.service_account) == (
        "flame",
        "reg.example/flame/task-runner:1",
        "flame-task",
    )
    assert s.task_labels == TASK_LABELS and s.image_pull_secrets == ["one", "two"]
    assert s.command == ["python", "-m", "flame.launch"]  # the task-runner image's entry
    monkeypatch.setenv("FLAME_KUBERNETES_TASK_LABELS", '{"flame/job": "x"}')
    with pytest.raises(ValueError, match="set by the deployer itself"):
        KubernetesDeployerSettings()
    monkeypatch.setenv("FLAME_KUBERNETES_TASK_LABELS", '{"bad key!": "x"}')
    with pytest.raises(ValueError, match="not a valid label name"):
        KubernetesDeployerSettings()
    monkeypatch.delenv("FLAME_KUBERNETES_TASK_LABELS")
    monkeypatch.setenv("FLAME_KUBERNETES_RUNNER_IMAGE", "")
    with pytest.raises(InvalidArgument, match="FLAME_KUBERNETES_RUNNER_IMAGE"):
        KubernetesDeployer()


# -- status ------------------------------------------------------------------------------------


async def test_status_comes_from_the_watch_not_from_polling(env: Env) -> None:
    d = env.deployer()
    handle = await d.start(env.launch(mode="wait"))
    await until(lambda: _pods_running(env, handle), "the pod runs")
    await until(lambda: d.informer.get(name_of(handle)) is not None, "the informer has the Job")
    gets = env.fake.api.audit.count("GET", f"/jobs/{name_of(handle)}$")
    for _ in range(20):
        assert await state(d, handle) == "running"
    assert env.fake.api.audit.count("GET", f"/jobs/{name_of(handle)}$") == gets  # the cache
    env.release()
    await until(lambda: "aggregator-0-abc" in env.ended, "the listener hears of the end")
    seen = await d.observe(handle)
    assert (seen.state, seen.exit_code) == ("exited", 0)


async def test_an_expired_watch_is_resynced_and_nothing_is_missed(env: Env) -> None:
    d = env.deployer()
    handle = await d.start(env.launch(mode="wait"))
    await until(lambda: _pods_running(env, handle), "the pod runs")
    await until(lambda: d.informer.get(name_of(handle)) is not None, "the informer has the Job")
    expired_before = env.fake.api.expired
    env.fake.hold_watches()  # the connection stalls: events stop arriving
    env.release()
    await until(lambda: _job_complete(env, handle), "the Job completes on the server")
    assert env.ended == []  # the deployer did not hear of it
    env.fake.compact()  # ... and the server forgets the history in between
    env.fake.expire_watches()  # the watch ends; from its old version it gets 410 Gone
    await until(lambda: "aggregator-0-abc" in env.ended, "the resync notices the end")
    assert env.fake.api.expired > expired_before
    assert d.informer.expiries >= 1 and d.informer.resyncs >= 1  # a 410, then a list
    seen = await d.observe(handle)
    assert (seen.state, seen.exit_code) == ("exited", 0)
    # and the watch carries on from the new list: the next end arrives without another resync
    resyncs = d.informer.resyncs
    other = await d.start(env.launch(mode="exit", code=4, task_id="coordinator-0-x"))
    await until(lambda: "coordinator-0-x" in env.ended, "the next end arrives by the watch")
    assert d.informer.resyncs == resyncs
    seen = await d.observe(other)
    assert (seen.state, seen.exit_code, seen.detail) == ("exited", 4, "exit code 4")


async def test_a_deleted_job_is_noticed(env: Env) -> None:
    d = env.deployer()
    handle = await d.start(env.launch(mode="wait"))
    await until(lambda: _pods_running(env, handle), "the pod runs")
    env.fake.delete("jobs", env.ns, name_of(handle))  # kubectl delete job ...
    await until(lambda: "aggregator-0-abc" in env.ended, "the listener hears of it")
    seen = await d.observe(handle)
    assert seen.state == "missing" and "does not exist" in seen.detail
    await until(lambda: not _pods(env, handle), "the garbage collector removes the pod")


async def test_stop_ends_the_process_and_keeps_its_log(env: Env) -> None:
    d = env.deployer()
    handle = await d.start(env.launch(mode="wait"))
    await until(lambda: _has_line(d, handle, "line 4"), "the task prints")
    await d.stop(handle)
    seen = await d.observe(handle)
    assert seen.state == "exited" and seen.exit_code == 143
    assert seen.detail == "killed by SIGTERM (DeadlineExceeded)"
    out = await d.read_output(handle, final=True)
    assert [t for _, t in out.lines][:6] == ["started aggregator-0-abc"] + [
        f"line {i}" for i in range(5)
    ]
    await d.stop(handle)  # ended already: nothing to do


async def test_a_pod_that_cannot_start_is_reported_and_stopped(env: Env) -> None:
    d = env.deployer(runner_image="registry.example/no-such-image:1")
    handle = await d.start(env.launch(mode="exit", code=0))
    await until(lambda: _waiting(env, handle) == "ErrImagePull", "the image pull fails")
    seen = await d.observe(handle)
    assert seen.state == "running"  # the reconciler waits (max_run_time ends it) ...
    await d.stop(handle)  # ... or a stop does: the pod fails, its container never ran
    seen = await d.observe(handle)
    assert seen.state == "exited" and seen.exit_code is None
    assert "Kubernetes Job failed" in seen.detail
    assert (await d.read_output(handle, final=True)).lines == []


async def test_job_end_deletes_every_object_of_the_job(env: Env) -> None:
    d = env.deployer()
    a = await d.start(env.launch(mode="exit", code=0))
    b = await d.start(env.launch(mode="exit", code=0, task_id="coordinator-0-x"))
    await until(lambda: _exited(d, a), "a ends")
    await until(lambda: _exited(d, b), "b ends")
    assert len(env.objects("jobs")) == 2 and len(env.objects("secrets")) == 2
    await d.release("job-1")
    await until(
        lambda: not any(env.objects(p) for p in ("jobs", "secrets", "pods", "configmaps")),
        "the garbage collector deletes what the anchor owned",
    )
    await d.release("job-1")  # again: nothing left, no error


async def test_output_position_is_kept_on_the_job(env: Env) -> None:
    d = env.deployer()
    handle = await d.start(env.launch(mode="exit", code=0))
    await until(lambda: _exited(d, handle), "the task ends")
    out = await d.read_output(handle, final=True)
    assert out.lines
    await d.ack_output(handle, out)
    job = env.get("jobs", name_of(handle))
    assert job is not None
    assert json.loads(job["metadata"]["annotations"]["flame/output-position"]) == out.position
    assert (await env.deployer().read_output(handle, final=True)).lines == []


# -- helpers -------------------------------------------------------------------------------------


def _pods(env: Env, handle: str) -> list[dict[str, Any]]:
    return env.objects("pods", f"flame/run={name_of(handle)}")


def _pods_running(env: Env, handle: str) -> bool:
    return any(p.get("status", {}).get("phase") == "Running" for p in _pods(env, handle))


def _pod_dir(env: Env, handle: str) -> Path:
    (found,) = env.fake.pod_dirs(env.ns, **{"flame/run": name_of(handle)})
    return found


def _waiting(env: Env, handle: str) -> str | None:
    for pod in _pods(env, handle):
        for status in pod.get("status", {}).get("containerStatuses") or []:
            reason = (status.get("state") or {}).get("waiting", {}).get("reason")
            if reason:
                return str(reason)
    return None


def _job_complete(env: Env, handle: str) -> bool:
    job = env.get("jobs", name_of(handle)) or {}
    return any(c["type"] == "Complete" for c in job.get("status", {}).get("conditions") or [])


async def _exited(d: KubernetesDeployer, handle: str) -> bool:
    return await state(d, handle) == "exited"


async def _has_line(d: KubernetesDeployer, handle: str, line: str) -> bool:
    return any(t == line for _, t in (await d.read_output(handle)).lines)
