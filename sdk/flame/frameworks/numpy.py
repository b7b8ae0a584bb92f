"""Adapter for models kept as ``dict[str, np.ndarray]``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flame.errors import ConfigError
from flame.tensors import Weights


def get_weights(model: Mapping[str, np.ndarray]) -> Weights:
    out: Weights = {}
    for name, value in model.items():
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.floating):
            raise ConfigError(f"model tensor {name!r} is {arr.dtype}, not a float array")
        out[name] = np.array(arr, copy=True)
    return out


def set_weights(model: Mapping[str, np.ndarray], weights: Weights) -> Weights:
    missing = model.keys() - weights.keys()
    if missing:
        raise ConfigError(f"weights lack tensors {sorted(missing)}")
    return {name: np.array(weights[name], dtype=np.asarray(model[name]).dtype) for name in model}
