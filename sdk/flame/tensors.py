"""Named float tensors: the one model representation the SDK moves and aggregates.

``Weights`` maps a parameter name to a NumPy array. On the wire they are safetensors bytes
(never pickle). :func:`check_update` is the gate every received update passes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from flame.errors import RejectedUpdate

Array = NDArray[np.floating]
Weights = dict[str, Array]


def to_bytes(weights: Mapping[str, np.ndarray]) -> bytes:
    """Serialise named arrays as safetensors (contiguous copies only where needed)."""
    if not weights:
        return b""
    # np.asarray(order="C"), not ascontiguousarray: the latter turns 0-d tensors into 1-d.
    return st_save({k: np.asarray(v, order="C") for k, v in weights.items()})


def from_bytes(data: bytes) -> Weights:
    """Parse safetensors bytes; never executes code from the payload."""
    if not data:
        return {}
    try:
        return dict(st_load(data))
    except Exception as exc:  # safetensors raises its own error types
        raise RejectedUpdate(f"payload is not valid safetensors: {exc}") from exc


def spec_of(weights: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), v.dtype.str) for k, v in weights.items()}


def check_update(
    update: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    sender: str = "",
) -> None:
    """Raise :class:`RejectedUpdate` unless ``update`` matches ``reference`` in names, shapes and
    dtypes and every value is finite."""
    missing = reference.keys() - update.keys()
    extra = update.keys() - reference.keys()
    if missing or extra:
        raise RejectedUpdate(
            f"tensor names differ (missing={sorted(missing)}, unexpected={sorted(extra)})", sender
        )
    for name, ref in reference.items():
        got = update[name]
        if got.shape != ref.shape:
            raise RejectedUpdate(f"{name}: shape {got.shape} != expected {ref.shape}", sender)
        if got.dtype != ref.dtype:
            raise RejectedUpdate(f"{name}: dtype {got.dtype} != expected {ref.dtype}", sender)
        if not np.all(np.isfinite(got)):
            raise RejectedUpdate(f"{name}: non-finite values", sender)


def copy_weights(weights: Mapping[str, np.ndarray]) -> Weights:
    return {k: np.array(v, copy=True) for k, v in weights.items()}
