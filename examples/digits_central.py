"""Centralized training vs federated averaging on digits, and adaptive server optimizers.

    .venv/bin/python examples/digits_central.py

1. 10 IID shards, 20 rounds of FedAvg vs the same model and optimizer trained centrally on all
   the training data for the same number of epochs: test accuracy of both, for the torch job
   (``examples/central``, minibatch SGD) as a one-hidden-layer MLP and as its default logistic
   regression, and for the NumPy one (``examples/central-numpy``: softmax regression, full-batch
   gradient descent). Centralized SGD takes ten times as many sequential steps for the same
   epochs, so a convex model 20 rounds in (the logistic regression) still trails by ~2 points.
2. Dirichlet(0.3) label skew (NumPy job): FedAvg for 20 rounds, then FedAdam and FedYogi: the
   number of rounds each needs to reach FedAvg's 20-round accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from torch import nn

import flame
from flame.datasets import digits_split
from flame.frameworks import set_weights

HERE = Path(__file__).parent
TORCH_JOB = HERE / "central"
NUMPY_JOB = HERE / "central-numpy"
ROUNDS = 20
MLP = {"hidden": 32, "batch_size": 16}  # over examples/central's own hyperparameters
ADAPTIVE = {"fedadam": {"eta": 0.1}, "fedyogi": {"eta": 0.1}}


def build_model(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    if hidden > 0:
        return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return nn.Linear(64, 10)


def torch_accuracy(weights: dict[str, np.ndarray], hidden: int = 0) -> float:
    data = digits_split()
    model = set_weights(build_model(hidden), weights)
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    return float((pred == data.y_test).mean())


def numpy_accuracy(weights: dict[str, np.ndarray]) -> float:
    data = digits_split()
    return float(((data.x_test @ weights["w"] + weights["b"]).argmax(1) == data.y_test).mean())


def torch_centralized(hp: dict[str, Any], rounds: int, seed: int = 0) -> float:
    """Same model and SGD on all training data, ``rounds * epochs`` epochs."""
    data = digits_split()
    model = build_model(int(hp.get("hidden", 0)))
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]))
    batch = int(hp["batch_size"])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(rounds * int(hp["epochs"])):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return torch_accuracy(weights, int(hp.get("hidden", 0)))


def numpy_centralized(hp: dict[str, Any], rounds: int) -> float:
    """Same softmax regression and full-batch GD on all training data, rounds * local_steps."""
    data = digits_split()
    x, onehot = data.x_train.astype(np.float64), np.eye(10)[data.y_train]
    w, b = np.zeros((64, 10)), np.zeros(10)
    lr = float(hp["lr"])
    for _ in range(rounds * int(hp["local_steps"])):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(x)
        w -= lr * x.T @ g
        b -= lr * g.sum(0)
    return numpy_accuracy({"w": w, "b": b})


def rounds_to_reach(history: list[dict[str, Any]], target: float) -> int | None:
    """First step (rounds aggregated) whose reported accuracy is >= target."""
    return next((int(h["round"]) for h in history if h["accuracy"] >= target), None)


def run(
    job: Path,
    optimizer: str = "fedavg",
    kwargs: dict[str, Any] | None = None,
    datasets: dict[str, str] | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> flame.SimulationResult:
    overrides: dict[str, Any] = {
        "rounds": ROUNDS,
        "optimizer": {"name": optimizer, "kwargs": kwargs or {}},
    }
    if hyperparameters:
        overrides["hyperparameters"] = hyperparameters
    return flame.simulate(job, datasets=datasets, overrides=overrides)


def iid_comparison(job: Path, extra: dict[str, Any] | None = None) -> tuple[float, float]:
    """(FedAvg, centralized) test accuracy of ``job``'s model with its hyperparameters updated
    by ``extra``."""
    spec = flame.JobSpec.model_validate_json((job / "job.json").read_text())
    hp = {**spec.hyperparameters, **(extra or {})}
    fed = run(job, hyperparameters=hp)
    if job == NUMPY_JOB:
        return numpy_accuracy(fed.weights), numpy_centralized(hp, ROUNDS)
    return torch_accuracy(fed.weights, int(hp.get("hidden", 0))), torch_centralized(hp, ROUNDS)


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for label, job, extra in (
        (f"torch MLP {MLP}", TORCH_JOB, MLP),
        ("torch logistic regression", TORCH_JOB, None),
        ("numpy softmax regression", NUMPY_JOB, None),
    ):
        fed, central = iid_comparison(job, extra)
        print(
            f"{label}: IID, 10 trainers, {ROUNDS} rounds: FedAvg test accuracy {fed:.4f}, "
            f"centralized {central:.4f} ({100 * (fed - central):+.1f} points)"
        )
    skew = {f"digits-{i}": f"digits://dirichlet-0.3/10/{i}" for i in range(10)}
    base = run(NUMPY_JOB, datasets=skew)
    target = float(base.history[-1]["accuracy"])
    print(f"Dirichlet(0.3), {NUMPY_JOB.name}: FedAvg accuracy after {ROUNDS} rounds {target:.4f}")
    for name, kwargs in ADAPTIVE.items():
        res = run(NUMPY_JOB, name, kwargs, skew)
        print(
            f"  {name} {kwargs}: reaches it after {rounds_to_reach(res.history, target)} rounds; "
            f"{ROUNDS}-round accuracy {float(res.history[-1]['accuracy']):.4f}"
        )


if __name__ == "__main__":
    main()
