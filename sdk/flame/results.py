"""What a task leaves behind and where it reports: its tracker (MLflow for the top aggregator)
and its result files (``result.json``, ``result.safetensors``) in its work dir.

``flame.launch`` needs only this of the simulation's machinery, so a task's process does not
import ``flame.simulation`` (its job folders, fork server and in-process channels)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flame.config import TaskConfig
from flame.roles.base import RoleResult
from flame.roles.topology import topology_of
from flame.rounds import OnRound, RoundTee
from flame.tensors import from_bytes, write_safetensors
from flame.tracking import NullTracker, Tracker, TrackingResult, make_tracker

RESULT_JSON = "result.json"
RESULT_WEIGHTS = "result.safetensors"


def tracker_for(config: TaskConfig, track: bool, on_round: OnRound | None = None) -> Tracker:
    """MLflow for the top aggregator when ``track``, else nothing; ``on_round`` sees the top
    aggregator's rounds either way."""
    top = topology_of(config).is_top
    tracker: Tracker = make_tracker(config) if track and top else NullTracker()
    if top and on_round is not None:
        tracker = RoundTee(tracker, on_round)
    return tracker


def result_body(result: RoleResult) -> dict[str, Any]:
    """A task's result without its weights, as JSON-safe values (what ``result.json`` holds)."""
    tracking = result.tracking.__dict__ if result.tracking is not None else None
    return {
        "task_id": result.task_id,
        "role": result.role,
        "is_top": result.is_top,
        "history": result.history,
        "tracking": tracking,
        "report": result.report,
    }


def result_from(body: Mapping[str, Any], weights: bytes) -> RoleResult:
    """The inverse of :func:`result_body` and :func:`flame.tensors.to_bytes` of the weights."""
    tracking = TrackingResult(**body["tracking"]) if body.get("tracking") else None
    return RoleResult(
        task_id=body["task_id"],
        role=body["role"],
        is_top=body["is_top"],
        weights=from_bytes(weights),
        history=body["history"],
        tracking=tracking,
        report=body.get("report") or {},
    )


def write_result(workdir: str | Path, result: RoleResult) -> None:
    """What ``flame.launch`` leaves in the task's workdir: final weights + history JSON."""
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / RESULT_WEIGHTS).open("wb") as fh:
        write_safetensors(fh, result.weights)
    (folder / RESULT_JSON).write_text(json.dumps(result_body(result), indent=1, default=str))


def read_result(workdir: str | Path) -> RoleResult | None:
    folder = Path(workdir)
    if not (folder / RESULT_JSON).exists():
        return None
    body = json.loads((folder / RESULT_JSON).read_text())
    return result_from(body, (folder / RESULT_WEIGHTS).read_bytes())
