"""An aggregator's whole training state, written atomically at the end of each round.

``<checkpoint_dir>/aggregator.safetensors`` holds the global model, the strategy tensors
(FedAdam/FedYogi moments, SCAFFOLD control variate, FedBuff buffer, ...) and the best model so far
as safetensors tensors (prefixed ``model/``, ``strategy/``, ``best/``), and the rest (round,
strategy data, selector state with its RNG, best metrics) as JSON in the safetensors header
(``__metadata__["flame.state"]``), so tensors and JSON can never disagree. It is written to a
temporary file, fsynced, renamed over the old one and the directory fsynced: a crash leaves
either the previous or the new checkpoint, never a torn one.

The metric history grows by a round each round, so only its newest entries (at most
:data:`HISTORY_TAIL`) are in that JSON: rewriting all of it every round made a long job's saves
quadratic (27 ms a round at 10,000 rounds). Once the tail is full it is appended to
``history.jsonl`` beside the file, one JSON line per round, and fsynced before the checkpoint
that counts it is written; a save costs the same after 10 rounds as after 10,000, and a short
job never has the second file. The checkpoint records how many lines and bytes of
``history.jsonl`` are its own: a crash between the two leaves lines past that length, which a
load ignores and the next append cuts off.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load

from flame.errors import ConfigError
from flame.tensors import Weights, write_safetensors

FILE_NAME = "aggregator.safetensors"
HISTORY_NAME = "history.jsonl"
HISTORY_TAIL = 64  # history entries kept in the checkpoint's own JSON before they are moved out
FORMAT_VERSION = 2


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
    history: list[dict[str, Any]] = field(default_factory=list)  # only grows between saves
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(directory: str | Path) -> Path:
    return Path(directory) / FILE_NAME


def save_checkpoint(directory: str | Path, ckpt: AggregatorCheckpoint) -> Path:
    """Write ``ckpt`` atomically (temp file + fsync + rename + directory fsync); ``ckpt.history``
    only grows between saves to one folder (see :func:`_history_state`)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for prefix, group in (
        ("model/", ckpt.weights),
        ("strategy/", ckpt.strategy_tensors),
        ("best/", ckpt.best_weights or {}),
    ):
        for name, value in group.items():
            tensors[prefix + name] = value
    state = {
        "version": FORMAT_VERSION,
        "round": ckpt.round,
        "strategy_data": ckpt.strategy_data,
        "selector": ckpt.selector,
        "best_round": ckpt.best_round,
        "best_metrics": ckpt.best_metrics,
        "has_best": ckpt.best_weights is not None,
        "history": _history_state(folder, ckpt.history),
        "extra": ckpt.extra,
    }
    final = folder / FILE_NAME
    tmp = folder / f".{FILE_NAME}.{os.getpid()}.tmp"
    with tmp.open("wb") as fh:
        # from the tensors' own memory: building the file's bytes first (safetensors' ``save``)
        # held two more copies of the model and of the best model while each round saved
        write_safetensors(fh, tensors, {"flame.state": json.dumps(state, separators=(",", ":"))})
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(final)
    _fsync_dir(folder)
    return final


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _committed(folder: Path) -> tuple[int, int]:
    """How much of ``history.jsonl`` the checkpoint in ``folder`` counts: (lines, bytes)."""
    try:
        with checkpoint_path(folder).open("rb") as fh:
            head = fh.read(8)
            header = json.loads(fh.read(int.from_bytes(head, "little")))
        counted = json.loads(header["__metadata__"]["flame.state"])["history"]
        return int(counted["entries"]), int(counted["bytes"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not this format
        return 0, 0


def _history_state(folder: Path, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint's record of ``history``: the lines of ``history.jsonl`` it counts and the
    entries after them (``tail``). A full tail is appended to the file (durably) first.

    The entries the last checkpoint counted in the file are on disk already and are not written
    again. A history shorter than that (not the aggregator's way) starts the file over.
    """
    entries, size = _committed(folder)
    if entries > len(history):
        entries, size = 0, 0
    tail = history[entries:]
    if len(tail) > HISTORY_TAIL:
        lines = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in tail)
        fd = os.open(folder / HISTORY_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, size)  # what an interrupted append left past the committed end
            os.pwrite(fd, lines, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not size:
            _fsync_dir(folder)  # the file may be new: its name must be durable too
        entries, size, tail = len(history), size + len(lines), []
    return {"entries": entries, "bytes": size, "tail": tail}


def _load_history(folder: Path, counted: dict[str, Any]) -> list[dict[str, Any]]:
    entries, size, tail = int(counted["entries"]), int(counted["bytes"]), counted["tail"]
    if not entries:
        return list(tail)
    with (folder / HISTORY_NAME).open("rb") as fh:
        data = fh.read(size)
    lines = data.split(b"\n")[:-1] if data.endswith(b"\n") else []
    if len(data) != size or len(lines) != entries:
        raise ValueError(f"{HISTORY_NAME} holds less than the checkpoint counts")
    return [json.loads(line) for line in lines] + list(tail)


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
        version = state.get("version")
        if version not in (1, FORMAT_VERSION):
            raise ConfigError(f"checkpoint {path} has unknown format {version!r}")
        # format 1 kept the history inline
        history = state["history"] if version == 1 else _load_history(path.parent, state["history"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint {path} is unreadable: {exc}") from exc

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
        history=history,
        extra=state["extra"],
    )
