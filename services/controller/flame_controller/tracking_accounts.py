"""Accounts on the tracking server, managed by the controller: MLflow's basic-auth app with
nothing readable by default, and a job's top aggregator logging as the job's own account.

When a job starts, the controller (as the server's admin) makes the job's experiment
(``<owner>/<experiment or job name>``, so tenants never share one) and registered model
(``<job name>-<job id>``), an account for the job that may edit exactly those two, and an account
for the owner that may read them. Passwords are derived from the data-plane secret (HKDF, as the
task keys are), so nothing new is stored and every controller replica computes the same ones;
the job's password reaches only its top aggregator, inside its config.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flame_service.connect import http_client
from flame_service.errors import Unavailable

log = structlog.get_logger(__name__)
_SALT = b"flame/tracking-accounts/v1"
_EXISTS = "RESOURCE_ALREADY_EXISTS"
_MISSING = "RESOURCE_DOES_NOT_EXIST"


def tracking_password(secret: bytes, username: str) -> str:
    raw = HKDF(algorithm=hashes.SHA256(), length=24, salt=_SALT, info=username.encode()).derive(
        secret
    )
    return base64.urlsafe_b64encode(raw).decode()


def job_username(job_id: str) -> str:
    return f"flame-job-{job_id}"


def user_username(user_id: str) -> str:
    return f"flame-user-{user_id}"


@dataclass(frozen=True)
class JobTracking:
    """What the controller made for one job on the tracking server."""

    experiment: str
    model_name: str
    username: str


def names_for(job_id: str, job_name: str, owner: str, experiment: str | None) -> JobTracking:
    return JobTracking(
        experiment=f"{owner}/{experiment or job_name}",
        model_name=f"{job_name}-{job_id[:12]}",
        username=job_username(job_id),
    )


class TrackingAccounts:
    """The admin side of the stack's MLflow server (``uri``)."""

    def __init__(
        self,
        uri: str,
        admin: tuple[str, str],
        secret: bytes,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.uri = uri.rstrip("/")
        self._secret = secret
        self._http = http_client(self.uri, basic_auth=admin, timeout=30, transport=transport)
        # accounts known to have the derived password: checked once per controller's life, not
        # on every job start (MLflow hashes a password it sets: ~1 s of its CPU under load)
        self._verified: set[str] = set()

    async def close(self) -> None:
        await self._http.aclose()

    def password(self, username: str) -> str:
        return tracking_password(self._secret, username)

    async def _call(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        """One call; a pooled connection the server closed under it is retried once on a new
        one (every call here may be repeated: creates accept "already exists")."""
        try:
            try:
                resp = await self._http.request(method, path, **kw)
            except httpx.RemoteProtocolError:
                resp = await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the tracking server at {self.uri} cannot be reached: {exc}"
            ) from exc
        body = resp.json() if resp.content else {}
        if resp.status_code >= 500 or resp.status_code in (401, 403):
            raise Unavailable(
                f"the tracking server refused the controller ({resp.status_code}): "
                f"{body.get('message', resp.text[:200])}"
            )
        return resp.status_code, body

    async def _ensure_user(self, username: str) -> None:
        if username in self._verified:
            return
        login = {"username": username, "password": self.password(username)}
        code, body = await self._call("POST", "/api/2.0/mlflow/users/create", json=login)
        if code != 200:
            if body.get("error_code") != _EXISTS:
                raise Unavailable(f"cannot create tracking account {username}: {body}")
            # exists: make sure it has the password we derive (a rotated secret, an old server)
            path = "/api/2.0/mlflow/users/update-password"
            code, body = await self._call("PATCH", path, json=login)
            if code != 200:
                raise Unavailable(f"cannot set the password of tracking account {username}: {body}")
        self._verified.add(username)

    async def _experiment(self, name: str) -> str:
        code, body = await self._call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}
        )
        if code == 200:
            return str(body["experiment"]["experiment_id"])
        code, body = await self._call(
            "POST", "/api/2.0/mlflow/experiments/create", json={"name": name}
        )
        if code == 200:
            return str(body["experiment_id"])
        if body.get("error_code") == _EXISTS:  # made by a concurrent start
            return await self._experiment(name)
        raise Unavailable(f"cannot create experiment {name!r}: {body}")

    async def _model(self, name: str) -> None:
        code, body = await self._call(
            "POST", "/api/2.0/mlflow/registered-models/create", json={"name": name}
        )
        if code != 200 and body.get("error_code") != _EXISTS:
            raise Unavailable(f"cannot create registered model {name!r}: {body}")

    async def _grant(self, username: str, kind: str, resource: str, permission: str) -> None:
        code, body = await self._call(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": kind,
                "resource_id": resource,
                "permission": permission,
            },
        )
        if code != 200 and body.get("error_code") != _EXISTS:
            raise Unavailable(
                f"cannot grant {permission} on {kind} {resource} to {username}: {body}"
            )

    async def prepare(self, names: JobTracking, owner: str) -> None:
        """The job's experiment, model and account, and the owner's read access (idempotent)."""
        reader = user_username(owner)
        try:
            await self._prepare(names, reader)
        except Unavailable:  # an account may be gone (a reset server): check both again
            self._verified -= {names.username, reader}
            raise
        log.info(
            "tracking.prepared",
            experiment=names.experiment,
            model=names.model_name,
            account=names.username,
        )

    async def _prepare(self, names: JobTracking, reader: str) -> None:
        # independent calls go together: a job's start waits for all of them
        await asyncio.gather(self._ensure_user(names.username), self._ensure_user(reader))
        experiment_id, _ = await asyncio.gather(
            self._experiment(names.experiment), self._model(names.model_name)
        )
        await asyncio.gather(
            *(
                self._grant(username, kind, resource, permission)
                for username, permission in ((names.username, "EDIT"), (reader, "READ"))
                for kind, resource in (
                    ("experiment", experiment_id),
                    ("registered_model", names.model_name),
                )
            )
        )

    async def user_credentials(self, user_id: str) -> tuple[str, str]:
        """The MLflow login of a Flame user (made on first use): it reads their jobs' runs."""
        username = user_username(user_id)
        await self._ensure_user(username)
        return username, self.password(username)

    async def set_alias(self, model: str, alias: str, version: str) -> bool:
        """Point ``model@alias`` at an existing ``version``; False when there is no such version."""
        code, _ = await self._call(
            "GET", "/api/2.0/mlflow/model-versions/get", params={"name": model, "version": version}
        )
        if code != 200:
            return False
        body = {"name": model, "alias": alias, "version": version}
        code, answer = await self._call(
            "POST", "/api/2.0/mlflow/registered-models/alias", json=body
        )
        if code != 200:
            raise Unavailable(f"cannot set {model}@{alias}: {answer}")
        log.info("tracking.alias_set", model=model, alias=alias, version=version)
        return True
