"""The caller's registered models, read from the platform's MLflow server with the caller's own
tracking login, so MLflow's permissions decide what each user sees: a model they may not read is
"not found", exactly like another tenant's job.

Downloads walk the model version's folder on MLflow's artifact proxy (``mlflow-artifacts:``)
and pack it into a zip: every name MLflow lists is checked (one plain path segment, never ``..``
or absolute) and the total is capped before and while bytes are read.
"""

from __future__ import annotations

import posixpath
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import quote, urlsplit

import httpx
import structlog

from flame_apiserver.problems import ApiProblem

log = structlog.get_logger(__name__)

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
PAGE = 1000  # MLflow's largest page for registry searches
MAX_FILES = 10_000
CHUNK = 1024 * 1024


def _not_found() -> ApiProblem:
    return ApiProblem(404, "not_found", "no such model, or it is not yours")


def _check(resp: httpx.Response) -> dict[str, Any]:
    """MLflow's answer as JSON; its refusals become this API's problems."""
    if resp.status_code in (403, 404):
        raise _not_found()
    if resp.status_code == 401:
        raise ApiProblem(502, "tracking_error", "the tracking server refused your login")
    if resp.status_code >= 400:
        log.warning("tracking_error", status=resp.status_code, body=resp.text[:500])
        raise ApiProblem(502, "tracking_error", f"the tracking server answered {resp.status_code}")
    body: dict[str, Any] = resp.json()
    return body


def _quoted(name: str) -> str:
    """``name`` inside an MLflow filter string (single quotes; a quote in it is refused)."""
    if "'" in name:
        raise _not_found()
    return f"'{name}'"


def model_summary(m: dict[str, Any]) -> dict[str, Any]:
    latest = [str(v.get("version", "")) for v in m.get("latest_versions", [])]
    return {
        "name": m["name"],
        "description": m.get("description", ""),
        "latest_version": max(latest, key=int, default=""),
        "aliases": {a["alias"]: str(a["version"]) for a in m.get("aliases", [])},
        "updated_at_ms": int(m.get("last_updated_timestamp", 0)),
    }


def version_summary(v: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": v["name"],
        "version": str(v["version"]),
        "aliases": list(v.get("aliases", [])),
        "run_id": v.get("run_id", ""),
        "status": v.get("status", ""),
        "created_at_ms": int(v.get("creation_timestamp", 0)),
    }


async def list_models(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every registered model the login may read (MLflow filters the search), by name."""
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        params = {"max_results": str(PAGE), **({"page_token": token} if token else {})}
        body = _check(await client.get(f"{API}/registered-models/search", params=params))
        found += [model_summary(m) for m in body.get("registered_models", [])]
        token = body.get("next_page_token", "")
        if not token:
            return sorted(found, key=lambda m: m["name"])


async def list_versions(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    """The versions of one model, newest first (reading the model first: not yours, not found)."""
    got = _check(await client.get(f"{API}/registered-models/get", params={"name": name}))
    aliases: dict[str, list[str]] = {}  # MLflow's version search leaves them out
    for a in got.get("registered_model", {}).get("aliases", []):
        aliases.setdefault(str(a["version"]), []).append(a["alias"])
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        params = {"filter": f"name = {_quoted(name)}", "max_results": str(PAGE)}
        if token:
            params["page_token"] = token
        body = _check(await client.get(f"{API}/model-versions/search", params=params))
        found += [version_summary(v) for v in body.get("model_versions", []) if v["name"] == name]
        token = body.get("next_page_token", "")
        if not token:
            for v in found:
                v["aliases"] = sorted(set(v["aliases"]) | set(aliases.get(v["version"], [])))
            return sorted(found, key=lambda v: -int(v["version"]))


async def _resolve(client: httpx.AsyncClient, uri: str) -> str:
    """The artifact proxy folder of a version's download URI; ``runs:/<run>/<path>`` (a model
    logged in a run) is the run's artifact folder joined with that path."""
    parts = urlsplit(uri)
    if parts.scheme == "runs":
        run_id, _, sub = parts.path.strip("/").partition("/")
        if not run_id:
            raise ApiProblem(502, "tracking_error", f"the tracking server gave a bad URI {uri!r}")
        got = _check(await client.get(f"{API}/runs/get", params={"run_id": run_id}))
        base = str(got.get("run", {}).get("info", {}).get("artifact_uri", ""))
        return artifact_root(f"{base.rstrip('/')}/{sub}" if sub else base)
    return artifact_root(uri)


def _segment(name: str) -> str:
    """One file or folder name as MLflow listed it: a plain name, nothing that climbs or roots."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ApiProblem(502, "tracking_error", f"the tracking server listed a bad name {name!r}")
    return name


def artifact_root(uri: str) -> str:
    """The relative folder on MLflow's artifact proxy that an ``mlflow-artifacts:`` URI names."""
    parts = urlsplit(uri)
    if parts.scheme != "mlflow-artifacts":
        log.info("model_not_downloadable", uri=uri)
        raise ApiProblem(
            409, "not_downloadable", "this model's files are not served by the tracking server"
        )
    path = parts.path.strip("/")
    segments = path.split("/")
    if not path or any(s in ("", ".", "..") or "\\" in s for s in segments):
        raise ApiProblem(502, "tracking_error", f"the tracking server gave a bad path {uri!r}")
    return posixpath.join(*segments)


async def _walk(
    client: httpx.AsyncClient, root: str, rel: str, out: list[tuple[str, int]], cap: int
) -> None:
    path = posixpath.join(root, rel) if rel else root
    body = _check(await client.get(ARTIFACTS, params={"path": path}))
    for f in body.get("files", []):
        child = (
            posixpath.join(rel, _segment(str(f.get("path", ""))))
            if rel
            else _segment(str(f.get("path", "")))
        )
        if f.get("is_dir"):
            await _walk(client, root, child, out, cap)
            continue
        out.append((child, int(f.get("file_size", 0))))
        if len(out) > MAX_FILES or sum(size for _, size in out) > cap:
            raise _too_large(cap)


def _too_large(cap: int) -> ApiProblem:
    return ApiProblem(413, "too_large", f"the model is larger than the {cap}-byte download cap")


async def zip_version(
    client: httpx.AsyncClient, name: str, version: str, cap: int
) -> tuple[IO[bytes], str]:
    """The version's folder as a zip (in a spooled temporary file, rewound) and its file name."""
    params = {"name": name, "version": version}
    _check(await client.get(f"{API}/model-versions/get", params=params))
    where = _check(await client.get(f"{API}/model-versions/get-download-uri", params=params))
    root = await _resolve(client, str(where.get("artifact_uri", "")))
    files: list[tuple[str, int]] = []
    await _walk(client, root, "", files, cap)
    top = f"{name}-v{version}".replace("/", "_")
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * CHUNK)  # noqa: SIM115
    total = 0
    try:
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
            for rel, _ in files:
                url = f"{ARTIFACTS}/{quote(posixpath.join(root, rel))}"
                async with client.stream("GET", url) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        _check(resp)
                    with archive.open(f"{top}/{rel}", "w", force_zip64=True) as entry:
                        async for chunk in resp.aiter_bytes(CHUNK):
                            total += len(chunk)
                            if total > cap:
                                raise _too_large(cap)
                            entry.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    log.info("model_zipped", model=name, version=version, files=len(files), bytes=total)
    return spool, f"{top}.zip"


def chunks(spool: IO[bytes]) -> Iterator[bytes]:
    """The zip's bytes for a streaming response; the temporary file is closed at the end."""
    try:
        while block := spool.read(CHUNK):
            yield block
    finally:
        spool.close()
