"""Adapter for ``torch.nn.Module`` models: state_dict <-> NumPy, without pickle.

Every state_dict entry travels, any shape (0-d included): parameters and buffers, float ones
(BatchNorm running statistics) and integer or bool ones (BatchNorm's ``num_batches_tracked``),
in their own dtype. bfloat16, which the wire does not carry, travels as float32 (exactly) and
is converted back on import. Other dtypes (complex, float8, quantized) are a
:class:`~flame.errors.ConfigError`. Tensors are moved to CPU for export and copied back to each
entry's own device and dtype on import. An integer or bool entry missing from the weights (sent
by an older peer) keeps its local value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flame.errors import ConfigError
from flame.tensors import Weights, is_wire_dtype


def _export(name: str, tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.to(torch.float32)
    try:
        arr = tensor.detach().to("cpu").numpy()
    except TypeError as exc:  # a dtype NumPy has no counterpart for
        raise ConfigError(f"model tensor {name!r} is {tensor.dtype}, which cannot be sent") from exc
    if not is_wire_dtype(arr.dtype):
        raise ConfigError(f"model tensor {name!r} is {tensor.dtype}, which cannot be sent")
    return arr.copy()


def get_weights(model: torch.nn.Module) -> Weights:
    with torch.no_grad():
        return {name: _export(name, t) for name, t in model.state_dict().items()}


def set_weights(model: torch.nn.Module, weights: Weights) -> torch.nn.Module:
    state = model.state_dict()
    missing = [k for k, t in state.items() if t.is_floating_point() and k not in weights]
    if missing:
        raise ConfigError(f"weights lack tensors {missing}")
    with torch.no_grad():
        for name, target in state.items():
            if name not in weights:
                continue
            src = _as_tensor(weights[name])
            if tuple(src.shape) != tuple(target.shape):
                raise ConfigError(f"{name}: shape {tuple(src.shape)} != {tuple(target.shape)}")
            target.copy_(src.to(dtype=target.dtype, device=target.device))
    return model


def _as_tensor(value: np.ndarray) -> torch.Tensor:
    # np.asarray(order="C"), not ascontiguousarray: the latter turns 0-d arrays into 1-d.
    # A read-only array (a view into received bytes) is copied: torch wants writable memory.
    arr = np.asarray(value, order="C")
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr)


def to_tensors(weights: Weights, device: Any = "cpu") -> dict[str, torch.Tensor]:
    """Weights as torch tensors (e.g. the global model for a FedProx proximal term)."""
    return {k: _as_tensor(v).to(device) for k, v in weights.items()}


def _input_dtype(model: torch.nn.Module) -> torch.dtype:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def predict(model: torch.nn.Module, inputs: Any) -> np.ndarray:
    """The model's forward pass on ``inputs`` (as the dtype and device of its first float
    parameter), in eval mode and without gradients; the output as NumPy."""
    dtype = _input_dtype(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = _as_tensor(np.asarray(inputs)).to(dtype=dtype, device=device)
    model.eval()
    with torch.no_grad():
        out = model(x)
    if dtype == torch.bfloat16:
        out = out.to(torch.float32)
    return np.asarray(out.detach().to("cpu").numpy())


def input_example(model: torch.nn.Module) -> np.ndarray | None:
    """Zeros shaped for the first layer when it is a ``Linear`` (its ``in_features``)."""
    first = next((m for m in model.modules() if not list(m.children())), None)
    if not isinstance(first, torch.nn.Linear):
        return None
    dtype = _input_dtype(model)
    dtype = torch.float32 if dtype == torch.bfloat16 else dtype  # NumPy has no bfloat16
    return np.asarray(torch.zeros((1, first.in_features), dtype=dtype).numpy())
