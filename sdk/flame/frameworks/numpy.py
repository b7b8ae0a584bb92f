"""Adapter for models kept as ``dict[str, np.ndarray]``: every tensor travels, any shape (0-d
included) and any dtype the wire carries (:data:`flame.tensors.WIRE_DTYPES`: float, integer,
bool)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def predict(model: Mapping[str, np.ndarray], inputs: Any) -> np.ndarray:
    """The affine map ``inputs @ w + b`` (``b`` optional), in ``w``'s dtype: the default for a
    dict model; a role whose dict model is anything else declares its own ``predict``."""
    w = model.get("w")
    if w is None or np.asarray(w).ndim != 2:
        raise ConfigError(
            "the default predict of a dict model needs a 2-d tensor 'w' (features x outputs); "
            f"this model has {sorted(model)}: declare predict(self, inputs) in the role"
        )
    w = np.asarray(w)
    out = np.asarray(inputs, dtype=w.dtype) @ w
    if "b" in model:
        out = out + np.asarray(model["b"], dtype=w.dtype)
    return np.asarray(out)


def input_example(model: Mapping[str, np.ndarray]) -> np.ndarray | None:
    w = model.get("w")
    if w is None or np.asarray(w).ndim != 2:
        return None
    return np.zeros((1, np.asarray(w).shape[0]), dtype=np.asarray(w).dtype)
