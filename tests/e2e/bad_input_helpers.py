"""Helpers for the bad-input end-to-end tests: code zips with a nonce (blobs are
content-addressed, so tampering one must never touch another test's code), tampering with
the controller's stored blob and code record, and evidence that no task process ran."""

from __future__ import annotations

import io
import json
import secrets
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from flame.cli.client import FlameClient
from flame.cli.code import zip_folder
from tests.e2e.jobs_harness import (
    EXAMPLES,
    TERMINAL,
    Cluster,
    node_workdirs,
    register_dataset,
    task_starts,
)


def example_zip(example: str, extra: dict[str, bytes] | None = None) -> bytes:
    """The example's code as ``flamectl code push`` zips it, plus a random ``nonce.txt`` (so
    its blob is not shared with any other job) and ``extra`` members (names used verbatim)."""
    data = zip_folder(EXAMPLES / example)
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("nonce.txt", secrets.token_hex(16))
        for name, content in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return buf.getvalue()


@dataclass(frozen=True)
class Prepared:
    design_id: str
    code_version: int
    code_sha256: str
    blob_key: str
    job_id: str


def prepare_job(
    cluster: Cluster,
    example: str,
    name: str,
    datasets: dict[str, list[str]],
    code: bytes,
    **spec_overrides: Any,
) -> Prepared:
    """Create design, code version and job (not started) from the example's design and spec."""
    client = cluster.client
    folder = EXAMPLES / example
    design = client.create_design(
        f"{name}-design", schema=json.loads((folder / "design.json").read_text())
    )
    version = client.push_code(design.id, code)
    spec = json.loads((folder / "job.json").read_text())
    spec.update(datasets=datasets, **spec_overrides)
    job = client.create_job(name, design.id, spec, code_version=version.version)
    with _db(cluster) as db:
        blob_key = _code_doc(db, design.id, version.version)["blob_key"]
    return Prepared(design.id, version.version, version.sha256, blob_key, job.id)


def blob_path(cluster: Cluster, blob_key: str) -> Path:
    """Where the controller's file blob store keeps ``blob_key`` (the embedded stack's layout)."""
    path = Path(cluster.state.home) / "data" / "flame.db.blobs" / blob_key[:2] / blob_key
    assert path.is_file(), f"no stored blob at {path}"
    return path


@contextmanager
def _db(cluster: Cluster) -> Iterator[sqlite3.Connection]:
    """The controller's SQLite store (WAL: another process may write while it runs)."""
    db = sqlite3.connect(Path(cluster.state.home) / "data" / "flame.db", timeout=30)
    try:
        with db:  # one transaction, committed on success
            yield db
    finally:
        db.close()


def _code_doc(db: sqlite3.Connection, design_id: str, version: int) -> dict[str, Any]:
    rows = db.execute(
        "SELECT doc FROM code WHERE json_extract(doc, '$.design_id') = ? "
        "AND json_extract(doc, '$.version') = ?",
        (design_id, version),
    ).fetchall()
    assert len(rows) == 1, f"expected one code record for {design_id} v{version}, got {rows}"
    doc: dict[str, Any] = json.loads(rows[0][0])
    return doc


def set_code_sha256(cluster: Cluster, design_id: str, version: int, sha256: str) -> None:
    """Overwrite the sha256 of a stored code record, as an attacker with store access would."""
    with _db(cluster) as db:
        cur = db.execute(
            "UPDATE code SET doc = json_set(doc, '$.sha256', ?) "
            "WHERE json_extract(doc, '$.design_id') = ? AND json_extract(doc, '$.version') = ?",
            (sha256, design_id, version),
        )
        assert cur.rowcount == 1
        assert _code_doc(db, design_id, version)["sha256"] == sha256


def node_credential(cluster: Cluster, node: str) -> str:
    """The node credential a flamelet keeps in ``<home>/identity.json``."""
    identity = json.loads((Path(cluster.state.nodes[node]) / "identity.json").read_text())
    return str(identity["credential"])


def node_id(cluster: Cluster, node: str) -> str:
    identity = json.loads((Path(cluster.state.nodes[node]) / "identity.json").read_text())
    return str(identity["node_id"])


def add_dataset(cluster: Cluster, node: str, name: str, path: Path) -> None:
    register_dataset(cluster.state.nodes[node], name, path)


def add_node(cluster: Cluster, name: str, timeout: float = 60.0) -> None:
    """Enrol one more flamelet in the running stack (it is stopped with the stack)."""
    cluster.stack.add_node(cluster.state, name)
    nid = node_id(cluster, name)
    deadline = time.monotonic() + timeout
    while cluster.client.get_node(nid).presence not in ("online", "PRESENCE_ONLINE"):
        assert time.monotonic() < deadline, f"node {name} not online within {timeout}s"
        time.sleep(0.1)


def log_events(cluster: Cluster, process: str) -> list[dict[str, Any]]:
    """The structlog JSON events a process of the stack (``controller``, ``apiserver``,
    ``flamelet-node-0``, ...) wrote to its log file."""
    log = Path(cluster.state.home) / "logs" / f"{process}.log"
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events


def flamelet_events(cluster: Cluster, node: str) -> list[dict[str, Any]]:
    return log_events(cluster, f"flamelet-{node}")


def wait_terminal(client: FlameClient, job_id: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get_job(job_id).state
        if state in TERMINAL:
            return state
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout}s"
        time.sleep(0.1)


def wait_tasks_settled(client: FlameClient, job_id: str, timeout: float = 30.0) -> None:
    """Until no task of the job is live (reports of refusals may trail the job's end)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = client.list_tasks(job_id)
        if all(t.state in TERMINAL for t in tasks):
            return
        assert time.monotonic() < deadline, f"tasks still live: {[(t.id, t.state) for t in tasks]}"
        time.sleep(0.1)


def task_dirs(cluster: Cluster, job_id: str) -> list[Path]:
    """Every work folder a task of ``job_id`` may have had: flamelet task folders and the
    local deployer's folder for the job."""
    ids = [t.id for t in cluster.client.list_tasks(job_id)]
    dirs = [Path(cluster.state.home) / "data" / "tasks" / job_id]
    for home in cluster.state.nodes.values():
        for tid in ids:
            dirs += list((Path(home) / "tasks").glob(f"{tid}-*"))
    return dirs + node_workdirs(cluster, set(ids))


def evidence_of_runs(cluster: Cluster, job_id: str) -> list[str]:
    """Everything that says a task process of ``job_id`` ran; empty when none did."""
    found = [
        f"{tid} logged task.started {n}x" for tid, n in task_starts(cluster, job_id).items() if n
    ]
    ids = {t.id for t in cluster.client.list_tasks(job_id)}
    for node in cluster.state.nodes:
        for ev in flamelet_events(cluster, node):
            if ev.get("event") == "task.started" and ev.get("task_id") in ids:
                found.append(f"flamelet {node} started {ev.get('task_id')}")
    dirs = task_dirs(cluster, job_id)
    for d in dirs:
        for name in ("stdout.log", "exit_code"):
            found += [f"{p} exists" for p in d.rglob(name)]
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cwd = proc.info.get("cwd") or ""
        if any(cwd == str(d) or cwd.startswith(f"{d}/") for d in dirs):
            found.append(f"process {proc.info['pid']} {proc.info['cmdline']} runs in {cwd}")
    return found


def agent_log_lines(client: FlameClient, job_id: str) -> list[str]:
    """What the flamelets said about the job's tasks (stream ``agent``)."""
    page = client.get_logs(job_id, limit=1000)
    return [line.line for line in page.lines if line.stream == "agent"]


def dataset_path(cluster: Cluster, node: str, name: str) -> Path:
    """The local path a flamelet registered for dataset ``name``."""
    registry = json.loads((Path(cluster.state.nodes[node]) / "datasets.json").read_text())
    return Path(registry[name]["path"])
