"""Trainer-side helpers for FedProx and SCAFFOLD, framework-neutral (NumPy) plus small torch
variants that import torch lazily (torch is an optional dependency of the SDK).

FedProx (Li et al. 2020) adds ``mu/2 * ||w - w_global||²`` to the local loss. In torch::

    mu = fedprox_mu(config.job.optimizer)          # 0.0 unless the job uses fedprox
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # at fetch
    for x, y in loader:
        loss = criterion(model(x), y) + torch_proximal_term(model, global_state, mu)
        loss.backward(); opt.step(); opt.zero_grad()

With hand-written gradients, add :func:`proximal_grad` to the loss gradient instead.

SCAFFOLD (Karimireddy et al. 2020): the trainer keeps its own control variate ``c_i`` (zeros
at first, plain :data:`Weights` it may checkpoint), receives the server's ``c`` with the model,
corrects every local gradient step ``g -> g + c - c_i`` (:func:`scaffold_correction`, or
:func:`torch_scaffold_correct_` after ``loss.backward()``) and after ``K`` local steps with
learning rate ``lr`` computes ``c_i+ = c_i - c + (x - y_i) / (K * lr)``
(:func:`scaffold_control_update`). It sends ``y_i`` as the update's weights and the returned
delta ``c_i+ - c_i`` as ``Update.extras``, and keeps ``c_i+`` for the next round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flame.aggregation.kernels import compute_dtype
from flame.config import OptimizerSpec
from flame.errors import AggregationError
from flame.tensors import Weights


def fedprox_mu(spec: OptimizerSpec) -> float:
    """The proximal coefficient a trainer should use: ``kwargs["mu"]`` (default 0.01) for
    ``fedprox``, 0 for every other rule."""
    if spec.name.lower() != "fedprox":
        return 0.0
    from flame.aggregation.params import FedProxParams

    return FedProxParams.model_validate(spec.kwargs).mu


def _check_names(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], what: str) -> None:
    if set(a) != set(b):
        raise AggregationError(
            f"{what}: tensor names differ (only left: {sorted(set(a) - set(b))}, "
            f"only right: {sorted(set(b) - set(a))})"
        )


def proximal_grad(local: Weights, global_: Weights, mu: float) -> Weights:
    """Gradient of ``mu/2 ||local - global_||²``: ``mu * (local - global_)`` per tensor."""
    _check_names(local, global_, "proximal_grad")
    return {k: _like(mu * (local[k] - global_[k]), local[k]) for k in local}


def proximal_term(local: Weights, global_: Weights, mu: float) -> float:
    """Value of ``mu/2 ||local - global_||²`` (float64 accumulation)."""
    _check_names(local, global_, "proximal_term")
    total = 0.0
    for k in local:
        diff = np.subtract(local[k], global_[k], dtype=np.float64).reshape(-1)
        total += float(diff @ diff)
    return 0.5 * mu * total


def torch_proximal_term(model: Any, global_state: Mapping[str, Any], mu: float) -> Any:
    """``mu/2 * sum ||p - g||²`` over the model's trainable parameters, as a torch scalar that
    back-propagates into the parameters only. ``global_state`` maps parameter names to tensors
    or NumPy arrays (the global model received this round)."""
    import torch

    term = torch.zeros((), dtype=torch.float32)
    if mu == 0:
        return term
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name not in global_state:
            raise AggregationError(f"torch_proximal_term: global state has no {name!r}")
        ref = torch.as_tensor(global_state[name], device=param.device, dtype=param.dtype)
        term = term.to(param.device) + torch.sum((param - ref.detach()) ** 2)
    return 0.5 * mu * term


def _like(value: Any, ref: np.ndarray) -> np.ndarray:
    """``value`` as an array with ``ref``'s dtype (a 0-d result stays an array, not a scalar)."""
    return np.asarray(value).astype(ref.dtype, copy=False)


def _zeros_like(weights: Mapping[str, np.ndarray]) -> Weights:
    return {k: np.zeros_like(v) for k, v in weights.items()}


def scaffold_correction(grads: Weights, c: Weights, c_i: Weights) -> Weights:
    """``g + c - c_i`` per tensor; an empty ``c`` or ``c_i`` counts as zeros (first round)."""
    c = c or _zeros_like(grads)
    c_i = c_i or _zeros_like(grads)
    _check_names(grads, c, "scaffold_correction (c)")
    _check_names(grads, c_i, "scaffold_correction (c_i)")
    return {k: _like(grads[k] + c[k] - c_i[k], grads[k]) for k in grads}


def scaffold_control_update(
    c_i: Weights, c: Weights, global_: Weights, local: Weights, steps: int, lr: float
) -> tuple[Weights, Weights]:
    """Option II of the paper: ``c_i+ = c_i - c + (x - y_i) / (K * lr)``.

    Returns ``(c_i+, delta)``: keep ``c_i+`` for the next round and send ``delta = c_i+ - c_i``
    as ``Update.extras``. ``steps`` (K) is the number of local optimizer steps taken. Both are in
    the dtype the server keeps ``c`` in (:func:`~flame.aggregation.kernels.compute_dtype`: the
    tensor's own for float32/float64, float32 for float16, float64 for integer and bool)."""
    if steps < 1 or lr <= 0:
        raise AggregationError(
            f"scaffold_control_update needs steps >= 1 and lr > 0 (got {steps}, {lr})"
        )
    c = c or _zeros_like(global_)
    c_i = c_i or _zeros_like(global_)
    for other, what in ((c, "c"), (c_i, "c_i"), (local, "local")):
        _check_names(global_, other, f"scaffold_control_update ({what})")
    scale = 1.0 / (steps * lr)
    new_c_i: Weights = {}
    delta: Weights = {}
    for k, x in global_.items():
        dt = compute_dtype(x.dtype)  # the dtype the server keeps c in (float64 for counters)
        d = np.asarray(np.subtract(x, local[k], dtype=np.float64) * scale - c[k]).astype(dt)
        delta[k] = d
        new_c_i[k] = np.asarray(c_i[k] + d).astype(dt, copy=False)
    return new_c_i, delta


def torch_scaffold_correct_(model: Any, c: Mapping[str, Any], c_i: Mapping[str, Any]) -> None:
    """In place, after ``loss.backward()``: ``p.grad += c - c_i`` for every trainable parameter
    that has a gradient (names missing from ``c`` / ``c_i`` count as zeros)."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.grad is None:
                continue
            if name in c:
                param.grad += torch.as_tensor(c[name], device=param.device, dtype=param.dtype)
            if name in c_i:
                param.grad -= torch.as_tensor(c_i[name], device=param.device, dtype=param.dtype)
