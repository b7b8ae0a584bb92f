"""``FlameClient``: a typed httpx client for the apiserver's REST API (user-facing routes).

Errors come back as :class:`ApiError` carrying the server's RFC 9457 problem ``detail``.

Every create sends a fresh ``Idempotency-Key`` and, when the apiserver cannot be reached or
answers 502/503/504 (the request may or may not have been carried out), retries with that same
key for up to ``create_retry_seconds``: the server then returns the first result instead of
creating a second resource."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from flame.cli.resources import (
    AuditEntry,
    CodeVersion,
    Dataset,
    Design,
    Invitation,
    InvitationAccepted,
    InvitationSecret,
    Job,
    Logs,
    Metrics,
    Node,
    NodeCreated,
    NodeHealth,
    Project,
    Task,
    TokenInfo,
    TokenSecret,
    TrackingLogin,
    User,
    WhoAmI,
)
from flame.connect import PLAINTEXT, Security, sync_http_client
from flame.errors import FlameError
from flame_spec.retry import Backoff

M = TypeVar("M", bound=BaseModel)
#: Answers after which a create may or may not have happened: retry it with the same key.
RETRYABLE_STATUSES = frozenset({0, 502, 503, 504})


class ApiError(FlameError):
    """The apiserver answered with an error (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{detail} ({code}, HTTP {status})" if status else detail)
        self.status = status
        self.code = code
        self.detail = detail


class FlameClient:
    """``FlameClient(base_url, token)``; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        security: Security = PLAINTEXT,
        create_retry_seconds: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.create_retry_seconds = create_retry_seconds
        self.http = sync_http_client(
            self.base_url, security, token=token, timeout=timeout, transport=transport
        )

    def __enter__(self) -> FlameClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ---- plumbing
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "unavailable", f"cannot reach {self.base_url}: {exc}") from exc
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    def create(
        self, path: str, *, body: Any = None, content: Callable[[], Any] | None = None, **kw: Any
    ) -> httpx.Response:
        """POST a create with a fresh ``Idempotency-Key``; retried with the same key while the
        outcome is unknown (see the module doc). ``content()`` makes the raw body of each
        attempt (e.g. a streamed upload); otherwise ``body`` is sent as JSON."""
        headers = {**kw.pop("headers", {}), "Idempotency-Key": str(uuid.uuid4())}
        backoff = Backoff(0.2, 2.0)
        end = time.monotonic() + self.create_retry_seconds
        while True:
            payload = {"content": content()} if content is not None else {"json": body}
            try:
                return self.request("POST", path, headers=headers, **payload, **kw)
            except ApiError as exc:
                delay = backoff.next()
                if exc.status not in RETRYABLE_STATUSES or time.monotonic() + delay > end:
                    raise
            time.sleep(delay)

    def _create(self, model: type[M], path: str, body: Any) -> M:
        return model.model_validate(self.create(path, body=body).json())

    def _get(self, model: type[M], path: str, **params: Any) -> M:
        return model.model_validate(self.request("GET", path, params=params or None).json())

    def _send(self, model: type[M], method: str, path: str, body: Any = None) -> M:
        return model.model_validate(self.request(method, path, json=body).json())

    def _items(self, model: type[M], path: str, **params: Any) -> list[M]:
        return [
            model.model_validate(x)
            for x in self.request("GET", path, params=params).json()["items"]
        ]

    def _pages(self, model: type[M], path: str, project_id: str = "") -> Iterator[M]:
        token = ""
        while True:
            params: dict[str, Any] = {"limit": 500, "page_token": token}
            if project_id:
                params["project_id"] = project_id
            body = self.request("GET", path, params=params).json()
            yield from (model.model_validate(x) for x in body["items"])
            token = body.get("next_page_token", "")
            if not token:
                return

    def _delete(self, path: str) -> None:
        self.request("DELETE", path)

    # ---- identity
    def whoami(self) -> WhoAmI:
        return self._get(WhoAmI, "/v1/whoami")

    def create_user(self, name: str, email: str = "", admin: bool = False) -> User:
        body = {"name": name, "email": email, "admin": admin}
        return self._create(User, "/v1/users", body)

    def list_users(self) -> list[User]:
        return list(self._pages(User, "/v1/users"))

    def get_user(self, user_id: str) -> User:
        return self._get(User, f"/v1/users/{user_id}")

    def update_user(
        self, user_id: str, email: str | None = None, admin: bool | None = None
    ) -> User:
        body = {k: v for k, v in {"email": email, "admin": admin}.items() if v is not None}
        return self._send(User, "PATCH", f"/v1/users/{user_id}", body)

    def delete_user(self, user_id: str) -> None:
        self._delete(f"/v1/users/{user_id}")

    def create_token(
        self,
        user_id: str,
        description: str = "",
        ttl_seconds: int = 0,
        scopes: Sequence[str] = ("read", "write"),
    ) -> TokenSecret:
        body = {"description": description, "ttl_seconds": ttl_seconds, "scopes": list(scopes)}
        return self._create(TokenSecret, f"/v1/users/{user_id}/tokens", body)

    def list_tokens(self, user_id: str) -> list[TokenInfo]:
        return self._items(TokenInfo, f"/v1/users/{user_id}/tokens")

    def audit(self, actor: str = "", action: str = "") -> Iterator[AuditEntry]:
        """Every state-changing call, oldest first (admins)."""
        token = ""
        while True:
            params = {"limit": 500, "page_token": token, "actor": actor, "action": action}
            body = self.request("GET", "/v1/audit", params=params).json()
            yield from (AuditEntry.model_validate(x) for x in body["items"])
            token = body.get("next_page_token", "")
            if not token:
                return

    def tracking_credentials(self) -> TrackingLogin:
        """This user's login on the platform's MLflow server (reads their jobs' runs)."""
        return self._get(TrackingLogin, "/v1/tracking/credentials")

    def set_model_alias(self, name: str, alias: str, version: str) -> dict[str, str]:
        """Point ``name@alias`` at ``version`` (one of your jobs' models)."""
        path = f"/v1/models/{quote(name, safe='')}/aliases/{quote(alias, safe='')}"
        return dict(self.request("PUT", path, json={"version": version}).json())

    def revoke_token(self, token_id: str) -> None:
        self._delete(f"/v1/tokens/{token_id}")

    # ---- projects
    def create_project(self, name: str, description: str = "") -> Project:
        body = {"name": name, "description": description}
        return self._create(Project, "/v1/projects", body)

    def list_projects(self) -> list[Project]:
        return list(self._pages(Project, "/v1/projects"))

    def get_project(self, project_id: str) -> Project:
        return self._get(Project, f"/v1/projects/{project_id}")

    def update_project(self, project_id: str, description: str) -> Project:
        body = {"description": description}
        return self._send(Project, "PATCH", f"/v1/projects/{project_id}", body)

    def delete_project(self, project_id: str) -> None:
        self._delete(f"/v1/projects/{project_id}")

    def add_member(self, project_id: str, user_id: str) -> Project:
        return self._send(Project, "PUT", f"/v1/projects/{project_id}/members/{user_id}")

    def remove_member(self, project_id: str, user_id: str) -> Project:
        return self._send(Project, "DELETE", f"/v1/projects/{project_id}/members/{user_id}")

    def create_invitation(
        self, project_id: str, ttl_seconds: int = 0, note: str = ""
    ) -> InvitationSecret:
        body = {"ttl_seconds": ttl_seconds, "note": note}
        return self._create(InvitationSecret, f"/v1/projects/{project_id}/invitations", body)

    def list_invitations(self, project_id: str) -> list[Invitation]:
        return list(self._pages(Invitation, f"/v1/projects/{project_id}/invitations"))

    def revoke_invitation(self, invitation_id: str) -> Invitation:
        return self._send(Invitation, "DELETE", f"/v1/invitations/{invitation_id}")

    def accept_invitation(self, secret: str, name: str = "", email: str = "") -> InvitationAccepted:
        body = {"secret": secret, "name": name, "email": email}
        return self._send(InvitationAccepted, "POST", "/v1/invitations/accept", body)

    # ---- nodes
    def create_node(
        self, name: str, project_id: str = "", labels: dict[str, str] | None = None
    ) -> NodeCreated:
        body = {"name": name, "project_id": project_id, "labels": labels or {}}
        return self._create(NodeCreated, "/v1/nodes", body)

    def list_nodes(self, project_id: str = "") -> list[Node]:
        return list(self._pages(Node, "/v1/nodes", project_id))

    def get_node(self, node_id: str) -> Node:
        return self._get(Node, f"/v1/nodes/{node_id}")

    def node_health(self, node_id: str, limit: int = 0) -> list[NodeHealth]:
        """The node's newest health samples, oldest first (0: all the control plane keeps)."""
        return self._items(NodeHealth, f"/v1/nodes/{node_id}/health", limit=limit)

    def update_node(self, node_id: str, labels: dict[str, str], replace: bool = False) -> Node:
        body = {"labels": labels, "replace_labels": replace}
        return self._send(Node, "PATCH", f"/v1/nodes/{node_id}", body)

    def delete_node(self, node_id: str) -> None:
        self._delete(f"/v1/nodes/{node_id}")

    def revoke_node(self, node_id: str) -> Node:
        return self._send(Node, "POST", f"/v1/nodes/{node_id}/revoke")

    # ---- datasets
    def create_dataset(
        self,
        name: str,
        node_id: str,
        *,
        project_id: str = "",
        realm: str = "",
        format: str = "",
        size_bytes: int = 0,
        num_samples: int = 0,
        uri: str = "",
        description: str = "",
    ) -> Dataset:
        body = {
            "name": name,
            "node_id": node_id,
            "project_id": project_id,
            "realm": realm,
            "format": format,
            "size_bytes": size_bytes,
            "num_samples": num_samples,
            "uri": uri,
            "description": description,
        }
        return self._create(Dataset, "/v1/datasets", body)

    def list_datasets(self, project_id: str = "") -> list[Dataset]:
        return list(self._pages(Dataset, "/v1/datasets", project_id))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._get(Dataset, f"/v1/datasets/{dataset_id}")

    def update_dataset(
        self, dataset_id: str, description: str | None = None, realm: str | None = None
    ) -> Dataset:
        body = {
            k: v for k, v in {"description": description, "realm": realm}.items() if v is not None
        }
        return self._send(Dataset, "PATCH", f"/v1/datasets/{dataset_id}", body)

    def delete_dataset(self, dataset_id: str) -> None:
        self._delete(f"/v1/datasets/{dataset_id}")

    # ---- designs and code
    def create_design(
        self, name: str, schema: dict[str, Any], description: str = "", project_id: str = ""
    ) -> Design:
        body = {
            "name": name,
            "schema": schema,
            "description": description,
            "project_id": project_id,
        }
        return self._create(Design, "/v1/designs", body)

    def list_designs(self, project_id: str = "") -> list[Design]:
        return list(self._pages(Design, "/v1/designs", project_id))

    def get_design(self, design_id: str) -> Design:
        return self._get(Design, f"/v1/designs/{design_id}")

    def update_design(
        self, design_id: str, schema: dict[str, Any] | None = None, description: str | None = None
    ) -> Design:
        body = {
            k: v for k, v in {"schema": schema, "description": description}.items() if v is not None
        }
        return self._send(Design, "PATCH", f"/v1/designs/{design_id}", body)

    def delete_design(self, design_id: str) -> None:
        self._delete(f"/v1/designs/{design_id}")

    def push_code(
        self,
        design_id: str,
        zip_bytes: bytes,
        on_sent: Callable[[int], None] | None = None,
        chunk: int = 64 * 1024,
    ) -> CodeVersion:
        """Upload a code zip; ``on_sent(n)`` is told the bytes sent so far, chunk by chunk."""

        def body() -> Iterator[bytes]:
            for start in range(0, len(zip_bytes), chunk):
                piece = zip_bytes[start : start + chunk]
                yield piece
                if on_sent is not None:
                    on_sent(start + len(piece))

        resp = self.create(
            f"/v1/designs/{design_id}/code",
            content=lambda: body() if on_sent is not None else zip_bytes,
            headers={"Content-Type": "application/zip", "Content-Length": str(len(zip_bytes))},
        )
        return CodeVersion.model_validate(resp.json())

    def list_code(self, design_id: str) -> list[CodeVersion]:
        return self._items(CodeVersion, f"/v1/designs/{design_id}/code")

    def get_code(self, design_id: str, version: int = 0) -> CodeVersion:
        return self._get(CodeVersion, f"/v1/designs/{design_id}/code/{version}")

    def fetch_code(self, design_id: str, version: int = 0) -> bytes:
        return self.request("GET", f"/v1/designs/{design_id}/code/{version}/zip").content

    def delete_code(self, design_id: str, version: int) -> None:
        self._delete(f"/v1/designs/{design_id}/code/{version}")

    # ---- jobs
    def create_job(
        self,
        name: str,
        design_id: str,
        spec: dict[str, Any],
        code_version: int = 0,
        project_id: str = "",
    ) -> Job:
        body = {
            "name": name,
            "design_id": design_id,
            "spec": spec,
            "code_version": code_version,
            "project_id": project_id,
        }
        return self._create(Job, "/v1/jobs", body)

    def list_jobs(self, project_id: str = "") -> list[Job]:
        return list(self._pages(Job, "/v1/jobs", project_id))

    def get_job(self, job_id: str) -> Job:
        return self._get(Job, f"/v1/jobs/{job_id}")

    def update_job(
        self, job_id: str, spec: dict[str, Any] | None = None, code_version: int | None = None
    ) -> Job:
        fields = {"spec": spec, "code_version": code_version}
        body = {k: v for k, v in fields.items() if v is not None}
        return self._send(Job, "PATCH", f"/v1/jobs/{job_id}", body)

    def delete_job(self, job_id: str) -> None:
        self._delete(f"/v1/jobs/{job_id}")

    def start_job(self, job_id: str) -> Job:
        return self._send(Job, "POST", f"/v1/jobs/{job_id}/start")

    def stop_job(self, job_id: str) -> Job:
        return self._send(Job, "POST", f"/v1/jobs/{job_id}/stop")

    def list_tasks(self, job_id: str) -> list[Task]:
        return self._items(Task, f"/v1/jobs/{job_id}/tasks")

    def get_logs(
        self,
        job_id: str,
        task_id: str = "",
        after_seq: int = 0,
        limit: int = 0,
        *,
        source: str = "",
        node_id: str = "",
        level: str = "",
    ) -> Logs:
        params: dict[str, Any] = {"after_seq": after_seq, "limit": limit}
        for name, value in (
            ("task_id", task_id),
            ("source", source),
            ("node_id", node_id),
            ("level", level),
        ):
            if value:
                params[name] = value
        return self._get(Logs, f"/v1/jobs/{job_id}/logs", **params)

    def get_metrics(self, job_id: str, after_seq: int = 0) -> Metrics:
        """The job's metrics; with ``after_seq`` (a ``last_seq`` this returned before) only the
        points stored since."""
        return self._get(Metrics, f"/v1/jobs/{job_id}/metrics", after_seq=after_seq)


def _error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if not isinstance(detail, str):  # a framework error body, not a problem document
            detail = str(detail)
        return ApiError(resp.status_code, str(body.get("code", "error")), detail)
    return ApiError(resp.status_code, "error", resp.text.strip() or resp.reason_phrase)
