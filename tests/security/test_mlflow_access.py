"""The tracking server behind the control plane: MLflow's basic-auth app with nothing readable by
default, an account per job that may write only its own experiment and model, and an account per
owner that may only read theirs. Attacks from outside and across tenants are refused."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from flame.cli.stack import MLFLOW_SERVER_ENV
from flame_controller.tracking_accounts import (
    JobTracking,
    TrackingAccounts,
    names_for,
    user_username,
)

DEADLINE = 180.0
ADMIN = ("flame-admin", "admin-password-for-tests")
SECRET = b"t" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow-auth")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ini = home / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{home / 'auth.db'}\n"
        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 300\n"
    )
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "k" * 32
    env |= MLFLOW_SERVER_ENV
    argv = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]
    argv += ["--workers", "1", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}"]
    argv += ["--artifacts-destination", str(home / "artifacts")]
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (home / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def jobs(server: str) -> tuple[JobTracking, JobTracking]:
    a = names_for("jobaaaaaaaaaaaaaaa", "digits", "usr-alice", None)
    b = names_for("jobbbbbbbbbbbbbbbb", "digits", "usr-bob", None)

    async def prepare() -> None:
        accounts = TrackingAccounts(server, ADMIN, SECRET)
        try:
            for names, owner in ((a, "usr-alice"), (b, "usr-bob"), (a, "usr-alice")):
                await accounts.prepare(names, owner)  # again: idempotent
        finally:
            await accounts.close()

    asyncio.run(prepare())
    return a, b


def _login(username: str) -> tuple[str, str]:
    return username, TrackingAccounts("http://unused", ADMIN, SECRET).password(username)


def _api(server: str, auth: tuple[str, str] | None) -> httpx.Client:
    return httpx.Client(base_url=f"{server}/api/2.0/mlflow", auth=auth, timeout=60)


def _experiment_id(server: str, name: str) -> str:
    with _api(server, ADMIN) as admin:
        resp = admin.get("/experiments/get-by-name", params={"experiment_name": name})
        return str(resp.json()["experiment"]["experiment_id"])


def test_tenants_never_share_an_experiment_or_a_model(jobs: tuple[JobTracking, ...]) -> None:
    a, b = jobs
    assert a.experiment != b.experiment and a.model_name != b.model_name
    assert a.experiment == "usr-alice/digits" and a.model_name == "digits-jobaaaaaaaaa"


def test_nothing_without_an_account(server: str, jobs: tuple[JobTracking, ...]) -> None:
    a, _ = jobs
    with _api(server, None) as anonymous:
        assert anonymous.post("/experiments/search", json={}).status_code == 401
        assert anonymous.post("/runs/create", json={"experiment_id": "1"}).status_code == 401
        assert (
            anonymous.get("/registered-models/get", params={"name": a.model_name}).status_code
            == 401
        )
    with _api(server, (a.username, "a wrong password")) as wrong:
        assert wrong.post("/experiments/search", json={}).status_code == 401


def test_a_job_writes_only_its_own_experiment_and_model(
    server: str, jobs: tuple[JobTracking, ...]
) -> None:
    a, b = jobs
    mine, theirs = _experiment_id(server, a.experiment), _experiment_id(server, b.experiment)
    with _api(server, _login(a.username)) as job:
        run = job.post("/runs/create", json={"experiment_id": mine})
        assert run.status_code == 200, run.text
        run_id = run.json()["run"]["info"]["run_id"]
        logged = job.post(
            "/runs/log-metric",
            json={"run_id": run_id, "key": "accuracy", "value": 0.9, "timestamp": 0, "step": 1},
        )
        assert logged.status_code == 200
        version = job.post(
            "/model-versions/create",
            json={"name": a.model_name, "source": f"runs:/{run_id}/m", "run_id": run_id},
        )
        assert version.status_code == 200, version.text
        # the other tenant's experiment, runs and model are out of reach
        assert job.post("/runs/create", json={"experiment_id": theirs}).status_code == 403
        got = job.get("/experiments/get-by-name", params={"experiment_name": b.experiment})
        assert got.status_code == 403
        alias = job.post(
            "/registered-models/alias", json={"name": b.model_name, "alias": "best", "version": "1"}
        )
        assert alias.status_code == 403
    with _api(server, _login(b.username)) as other_job:
        spoof = other_job.post(
            "/runs/log-metric",
            json={"run_id": run_id, "key": "accuracy", "value": 0.0, "timestamp": 0, "step": 2},
        )
        assert spoof.status_code == 403


def test_an_owner_reads_their_jobs_and_nothing_else(
    server: str, jobs: tuple[JobTracking, ...]
) -> None:
    a, b = jobs
    with _api(server, _login(user_username("usr-alice"))) as alice:
        seen = alice.post("/experiments/search", json={"max_results": 100}).json()
        assert [e["name"] for e in seen.get("experiments", [])] == [a.experiment]
        assert alice.get("/registered-models/get", params={"name": a.model_name}).status_code == 200
        assert alice.get("/registered-models/get", params={"name": b.model_name}).status_code == 403
        mine = _experiment_id(server, a.experiment)
        assert alice.post("/runs/create", json={"experiment_id": mine}).status_code == 403
        alias = alice.post(
            "/registered-models/alias", json={"name": a.model_name, "alias": "best", "version": "1"}
        )
        assert alias.status_code == 403  # re-pointing @best would run other code in its loaders


def test_the_controller_moves_an_alias_only_to_an_existing_version(
    server: str, jobs: tuple[JobTracking, ...]
) -> None:
    """``flamectl model alias`` (the owner's login stays read-only): as admin, to a version the
    job made; a version that does not exist is refused and changes nothing."""
    a, _ = jobs
    with _api(server, _login(a.username)) as job:
        run = job.post("/runs/create", json={"experiment_id": _experiment_id(server, a.experiment)})
        run_id = run.json()["run"]["info"]["run_id"]
        made = job.post(
            "/model-versions/create",
            json={"name": a.model_name, "source": f"runs:/{run_id}/m", "run_id": run_id},
        )
        assert made.status_code == 200, made.text
        version = str(made.json()["model_version"]["version"])

    async def move(to: str) -> bool:
        accounts = TrackingAccounts(server, ADMIN, SECRET)
        try:
            return await accounts.set_alias(a.model_name, "prod", to)
        finally:
            await accounts.close()

    assert asyncio.run(move(version))
    assert not asyncio.run(move("9999"))
    with _api(server, _login(user_username("usr-alice"))) as alice:
        got = alice.get("/registered-models/alias", params={"name": a.model_name, "alias": "prod"})
        assert got.status_code == 200, got.text
        assert str(got.json()["model_version"]["version"]) == version


def test_passwords_are_derived_per_account_and_never_printed() -> None:
    accounts = TrackingAccounts("http://unused", ADMIN, SECRET)
    one, two = accounts.password("flame-job-1"), accounts.password("flame-job-2")
    assert one != two and len(one) >= 32
    assert one == TrackingAccounts("http://unused", ADMIN, SECRET).password("flame-job-1")
    assert one != TrackingAccounts("http://unused", ADMIN, b"u" * 32).password("flame-job-1")
    assert ADMIN[1] not in repr(accounts)


def test_a_jobs_tracker_waits_for_the_account_the_control_plane_makes_beside_it(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller makes a job's account, experiment and model beside the job's deployment,
    not before it: the job's aggregator may ask first, and its run starts once they exist (in
    the job's experiment, never one it made itself)."""
    import numpy as np

    from flame.tracking import BackgroundTracker, MlflowTracker

    names = names_for("jobccccccccccccccc", "late", "usr-carol", None)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", names.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", _login(names.username)[1])
    tracker = BackgroundTracker(
        MlflowTracker(
            tracking_uri=server,
            experiment=names.experiment,
            run_name="late-run",
            register_as=names.model_name,
            prepared_by_platform=True,
        )
    )
    tracker.start({"rounds": 1}, {})  # nothing exists yet: no account, no experiment
    tracker.log_round(1, {"accuracy": 0.5})
    tracker.offer_model(1, {"w": np.ones(2, np.float32)}, {"accuracy": 0.5})
    time.sleep(1.0)  # the tracker's first requests are refused meanwhile

    async def prepare() -> None:
        accounts = TrackingAccounts(server, ADMIN, SECRET)
        try:
            await accounts.prepare(names, "usr-carol")
        finally:
            await accounts.close()

    asyncio.run(prepare())
    result = tracker.finish()
    assert result.model_uri == f"models:/{names.model_name}@best", result
    with _api(server, ADMIN) as admin:
        run = admin.get("/runs/get", params={"run_id": result.run_id}).json()["run"]
        assert run["info"]["experiment_id"] == _experiment_id(server, names.experiment)
        assert run["info"]["status"] == "FINISHED"
    with _api(server, _login(names.username)) as job:
        # the job holds EDIT as granted, not MANAGE as the experiment's creator would
        mine = _experiment_id(server, names.experiment)
        assert job.post("/experiments/delete", json={"experiment_id": mine}).status_code == 403
