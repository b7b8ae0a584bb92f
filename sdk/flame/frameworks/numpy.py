"""Adapter for models kept as ``dict[str, np.ndarray]``: every tensor travels, any shape (0-d
included) and any dtype the wire carries (:data:`flame.tensors.WIRE_DTYPES`: float, integer,
bool)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flame.errors import ConfigError
from flame.tensors import Weights, is_wire_dtype


def get_weights(model: Mapping[str, np.ndarray]) -> Weights:
    out: Weights = {}
    for name, value in model.items():
        arr = np.asarray(value)
        if not is_wire_dtype(arr.dtype):
            raise ConfigError(
                f"model tensor {name!r} is {arr.dtype}; tensors must be float, integer or bool"
            )
        out[name] = np.array(arr, copy=True)
    return out


def set_weights(model: Mapping[str, np.ndarray], weights: Weights) -> Weights:
    """A new model: each of ``model``'s tensors replaced by a copy of ``weights``' (whose shape
    wins: a dict model has no fixed shapes), in the model's own dtype."""
    missing = model.keys() - weights.keys()
    if missing:
        raise ConfigError(f"weights lack tensors {sorted(missing)}")
    return {
        name: np.array(weights[name], dtype=np.asarray(model[name]).dtype, copy=True)
        for name in model
    }
