"""Centralized training vs federated averaging on digits, and adaptive server optimizers.

    .venv/bin/python examples/digits_central.py

1. The central job (10 IID shards, 20 rounds) with FedAvg vs the same model trained centrally on
   all the training data for the same number of epochs: test accuracy of both.
2. On a Dirichlet(0.3) label-skewed split: FedAvg for 20 rounds, then FedAdam and FedYogi: the
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
CENTRAL = HERE / "central"


def build_model(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    if hidden > 0:
        return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return nn.Linear(64, 10)


def test_accuracy(weights: dict[str, np.ndarray], hidden: int = 0) -> float:
    data = digits_split()
    model = set_weights(build_model(hidden), weights)
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    return float((pred == data.y_test).mean())


def centralized_accuracy(hp: dict[str, Any], rounds: int, seed: int = 0) -> float:
    """The same model and optimizer on all training data, ``rounds * epochs`` epochs."""
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
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    return float((pred == data.y_test).mean())


def accuracy_curve(history: list[dict[str, Any]]) -> list[float]:
    return [float(h["accuracy"]) for h in history]


def rounds_to_reach(curve: list[float], target: float) -> int | None:
    """First step (rounds aggregated) whose accuracy is >= target."""
    return next((step for step, acc in enumerate(curve) if acc >= target), None)


def dirichlet_datasets(alpha: float, n: int = 10) -> dict[str, str]:
    return {f"digits-{i}": f"digits://dirichlet-{alpha}/{n}/{i}" for i in range(n)}


def run(optimizer: str, kwargs: dict[str, Any], rounds: int, datasets: dict[str, str] | None) -> Any:
    return flame.simulate(
        CENTRAL,
        datasets=datasets,
        overrides={"rounds": rounds, "optimizer": {"name": optimizer, "kwargs": kwargs}},
    )


ADAPTIVE = {
    "fedadam": {"eta": 0.03, "tau": 1e-3},
    "fedyogi": {"eta": 0.03, "tau": 1e-3},
}


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    spec = flame.JobSpec.model_validate_json((CENTRAL / "job.json").read_text())
    hp = spec.hyperparameters
    fed = run("fedavg", {}, 20, None)
    print(f"IID, 10 trainers, 20 rounds: FedAvg test accuracy {test_accuracy(fed.weights):.4f}, "
          f"centralized {centralized_accuracy(hp, 20):.4f}")
    skew = dirichlet_datasets(0.3)
    base = run("fedavg", {}, 20, skew)
    target = accuracy_curve(base.history)[-1]
    print(f"Dirichlet(0.3): FedAvg accuracy after 20 rounds {target:.4f}")
    for name, kwargs in ADAPTIVE.items():
        res = run(name, kwargs, 20, skew)
        reached = rounds_to_reach(accuracy_curve(res.history), target)
        print(f"  {name}: reaches it after {reached} rounds (20-round accuracy "
              f"{accuracy_curve(res.history)[-1]:.4f})")


if __name__ == "__main__":
    main()
