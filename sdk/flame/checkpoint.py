"""An aggregator's whole training state, written atomically at the end of each round.

One file, ``<checkpoint_dir>/aggregator.safetensors``: the global model, the strategy tensors
(FedAdam/FedYogi moments, SCAFFOLD control variate, FedBuff buffer, ...) and the best model so far
as safetensors tensors (prefixed ``model/``, ``strategy/``, ``best/``), and the rest (round,
strategy data, selector state with its RNG, best metrics, metric history) as JSON in the
safetensors header (``__metadata__["flame.state"]``), so tensors and JSON can never disagree.
It is written to a temporary file, fsynced, renamed over the old one and the directory fsynced:
a crash leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from flame.errors import ConfigError
from flame.tensors import Weights

FILE_NAME = "aggregator.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class AggregatorCheckpoint:
    round: int  # rounds completed (the global model is after this many aggregations)
    weights: Weights
    strategy_tensors: Weights = field(default_factory=dict)
    strategy_data: dict[str, Any] = field(default_factory=dict)
    selector: dict[str, Any] = field(default_factory=dict)
    best_round: int | None = None
    best_weights: Weights | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(directory: str | Path) -> Path:
    return Path(directory) / FILE_NAME


def save_checkpoint(directory: str | Path, ckpt: AggregatorCheckpoint) -> Path:
    """Write ``ckpt`` atomically (temp file + fsync + rename + directory fsync)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for prefix, group in (
        ("model/", ckpt.weights),
        ("strategy/", ckpt.strategy_tensors),
        ("best/", ckpt.best_weights or {}),
    ):
        for name, value in group.items():
            # np.asarray(order="C"), not ascontiguousarray: the latter turns 0-d tensors 1-d.
            tensors[prefix + name] = np.asarray(value, order="C")
    state = {
        "version": FORMAT_VERSION,
        "round": ckpt.round,
        "strategy_data": ckpt.strategy_data,
        "selector": ckpt.selector,
        "best_round": ckpt.best_round,
        "best_metrics": ckpt.best_metrics,
        "has_best": ckpt.best_weights is not None,
        "history": ckpt.history,
        "extra": ckpt.extra,
    }
    data = st_save(tensors, metadata={"flame.state": json.dumps(state, separators=(",", ":"))})
    final = folder / FILE_NAME
    tmp = folder / f".{FILE_NAME}.{os.getpid()}.tmp"
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def load_checkpoint(directory: str | Path) -> AggregatorCheckpoint | None:
    """The last checkpoint in ``directory``, or None when there is none."""
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    raw = path.read_bytes()
    try:
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        state = json.loads(header["__metadata__"]["flame.state"])
        tensors = dict(st_load(raw)) if len(header) > 1 else {}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint {path} is unreadable: {exc}") from exc
    if state.get("version") != FORMAT_VERSION:
        raise ConfigError(f"checkpoint {path} has unknown format {state.get('version')!r}")

    def group(prefix: str) -> Weights:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    return AggregatorCheckpoint(
        round=int(state["round"]),
        weights=group("model/"),
        strategy_tensors=group("strategy/"),
        strategy_data=state["strategy_data"],
        selector=state["selector"],
        best_round=state["best_round"],
        best_weights=group("best/") if state["has_best"] else None,
        best_metrics=state["best_metrics"],
        history=state["history"],
        extra=state["extra"],
    )
