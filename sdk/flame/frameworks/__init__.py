"""Convert user models to and from :data:`flame.tensors.Weights` (named NumPy arrays).

Supported models: a ``dict`` of NumPy arrays (used as is) and a ``torch.nn.Module`` (every
``state_dict`` entry, integer and bool buffers such as BatchNorm's ``num_batches_tracked``
included; bfloat16 travels as float32). Tensors of any shape (0-d included) and of every dtype
the wire carries (:data:`flame.tensors.WIRE_DTYPES`) survive ``get_weights`` -> ``set_weights``
exactly. No pickle is involved anywhere: tensors cross as raw arrays.

Each adapter also knows a default way to predict (:func:`predict`) and a default input example
(:func:`input_example`), which a role uses unless it declares its own (``Role.predict``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flame.errors import ConfigError
from flame.frameworks import numpy as np_adapter
from flame.tensors import Weights


def _is_torch_module(model: Any) -> bool:
    cls = type(model)
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in cls.__mro__)


def get_weights(model: Any) -> Weights:
    """The model's tensors as named arrays (copies, safe to keep)."""
    if isinstance(model, dict):
        return np_adapter.get_weights(model)
    if _is_torch_module(model):
        from flame.frameworks import torch as torch_adapter

        return torch_adapter.get_weights(model)
    raise ConfigError(
        f"unsupported model type {type(model).__name__}: use a torch.nn.Module or a dict of arrays"
    )


def set_weights(model: Any, weights: Weights) -> Any:
    """Load ``weights`` into ``model``; returns the model (a new dict for NumPy models)."""
    if isinstance(model, dict):
        return np_adapter.set_weights(model, weights)
    if _is_torch_module(model):
        from flame.frameworks import torch as torch_adapter

        return torch_adapter.set_weights(model, weights)
    raise ConfigError(
        f"unsupported model type {type(model).__name__}: use a torch.nn.Module or a dict of arrays"
    )


def predict(model: Any, inputs: Any) -> np.ndarray:
    """The default prediction of ``model`` on a batch: a torch module's forward pass in eval
    mode without gradients; for a dict model, the affine map ``inputs @ w + b`` (``b``
    optional). Returns a NumPy array."""
    if isinstance(model, dict):
        return np_adapter.predict(model, inputs)
    if _is_torch_module(model):
        from flame.frameworks import torch as torch_adapter

        return torch_adapter.predict(model, inputs)
    raise ConfigError(
        f"unsupported model type {type(model).__name__}: use a torch.nn.Module or a dict of arrays"
    )


def input_example(model: Any) -> np.ndarray | None:
    """A one-row input the default :func:`predict` accepts (zeros), or None when the model does
    not say its input width (the role then declares ``input_example``)."""
    if isinstance(model, dict):
        return np_adapter.input_example(model)
    if _is_torch_module(model):
        from flame.frameworks import torch as torch_adapter

        return torch_adapter.input_example(model)
    return None


__all__ = ["get_weights", "input_example", "predict", "set_weights"]
