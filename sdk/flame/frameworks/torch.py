"""Adapter for ``torch.nn.Module`` models: state_dict <-> NumPy, without pickle.

Only floating-point entries travel (parameters and float buffers such as BatchNorm running
statistics); integer buffers stay local. Tensors are moved to CPU for export and copied back to
each parameter's own device and dtype on import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flame.errors import ConfigError
from flame.tensors import Weights


def get_weights(model: torch.nn.Module) -> Weights:
    out: Weights = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not torch.is_floating_point(tensor):
                continue
            out[name] = tensor.detach().to("cpu").numpy().copy()
    return out


def set_weights(model: torch.nn.Module, weights: Weights) -> torch.nn.Module:
    state = model.state_dict()
    missing = [k for k, t in state.items() if torch.is_floating_point(t) and k not in weights]
    if missing:
        raise ConfigError(f"weights lack tensors {missing}")
    with torch.no_grad():
        for name, target in state.items():
            if name not in weights:
                continue
            src = torch.from_numpy(np.ascontiguousarray(weights[name]))
            if tuple(src.shape) != tuple(target.shape):
                raise ConfigError(f"{name}: shape {tuple(src.shape)} != {tuple(target.shape)}")
            target.copy_(src.to(dtype=target.dtype, device=target.device))
    return model


def to_tensors(weights: Weights, device: Any = "cpu") -> dict[str, torch.Tensor]:
    """Weights as torch tensors (e.g. the global model for a FedProx proximal term)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in weights.items()}
