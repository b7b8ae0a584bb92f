"""Vertical digits: the split model and vertical logistic regression vs their centralized
counterparts on the same features and samples.

    .venv/bin/python examples/digits_vertical.py

Digits' 8x8 pixels are split column-wise between two feature parties (left and right four
pixel columns); a third party holds the labels; each party holds its own 85 % of the samples,
so about 61 % are in all three. ``examples/vertical`` trains a bottom MLP per feature party and
a linear top model at the label party (split learning); ``examples/vertical-logistic`` trains
multinomial logistic regression split by columns. The centralized counterparts train the same
models, from the same initial weights, with the same optimizer and batch order, on the
intersection's rows with all 64 columns, and are scored on the same test split.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import structlog
import torch
from torch import nn

import flame
from flame.datasets import load_vertical
from flame.jobdir import load_job_dir
from flame.psi import canonical_ids
from flame.roles.vertical import batch_order, split_rows

HERE = Path(__file__).parent
SPLIT_JOB = HERE / "vertical"
LOGISTIC_JOB = HERE / "vertical-logistic"


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"vertical_{path.parent.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def joined(job: Path) -> dict[str, Any]:
    """The intersection's rows of every party, in the order every party aligns them, and the
    job's train/test split of them."""
    jd = load_job_dir(job)
    spec = jd.spec
    features = spec.datasets["feature-party/default"]
    (labels,) = spec.datasets["label-party/default"]
    parts = {name: load_vertical(jd.datasets[name]) for name in [*features, labels]}
    ids = {name: canonical_ids(p.ids) for name, p in parts.items()}
    common = sorted(set.intersection(*(set(v) for v in ids.values())))
    rows = {
        name: [dict(zip(v, range(len(v)), strict=True))[c] for c in common]
        for name, v in ids.items()
    }
    xs = [np.asarray(parts[f].x)[rows[f]] for f in features]
    y = np.asarray(parts[labels].y)[rows[labels]]
    hp = spec.hyperparameters
    train, test = split_rows(len(common), spec.seed, float(hp.get("test_fraction", 0.2)))
    return {"spec": spec, "xs": xs, "y": y, "train": train, "test": test}


def _batches(data: dict[str, Any], rnd: int) -> list[np.ndarray]:
    spec = data["spec"]
    size = int(spec.hyperparameters["batch_size"])
    order = data["train"][batch_order(len(data["train"]), spec.seed, rnd)]
    return [order[i : i + size] for i in range(0, len(order), size)]


def centralized_split(job: Path = SPLIT_JOB) -> float:
    """Test accuracy of the split model's centralized counterpart."""
    data = joined(job)
    spec = data["spec"]
    hp = spec.hyperparameters
    hidden = int(hp["hidden"])
    build_bottom = _module(job / "feature-party" / "main.py").build_bottom
    build_top = _module(job / "label-party" / "main.py").build_top
    xs = [torch.from_numpy(x.astype(np.float32)) for x in data["xs"]]
    bottoms = [build_bottom(x.shape[1], hidden, spec.seed * 1000 + i) for i, x in enumerate(xs)]
    top = build_top(hidden * len(xs), 10, spec.seed * 1000 + 999)
    params = [p for m in [*bottoms, top] for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=float(hp["lr"]))
    y = torch.from_numpy(data["y"])

    def logits(rows: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(rows)
        return top(torch.cat([b(x[idx]) for b, x in zip(bottoms, xs, strict=True)], 1))

    for rnd in range(1, spec.rounds + 1):
        for rows in _batches(data, rnd):
            opt.zero_grad()
            nn.functional.cross_entropy(logits(rows), y[torch.from_numpy(rows)]).backward()
            opt.step()
    with torch.no_grad():
        pred = logits(data["test"]).argmax(1).numpy()
    return float((pred == data["y"][data["test"]]).mean())


def centralized_logistic(job: Path = LOGISTIC_JOB) -> float:
    """Test accuracy of softmax regression over all columns, same minibatches and step."""
    data = joined(job)
    spec = data["spec"]
    hp = spec.hyperparameters
    x = np.concatenate(data["xs"], axis=1).astype(np.float64)
    classes = int(hp.get("classes", 10))
    w, b = np.zeros((x.shape[1], classes)), np.zeros(classes)
    lr = float(hp["lr"])
    for rnd in range(1, spec.rounds + 1):
        for rows in _batches(data, rnd):
            z = x[rows] @ w + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(rows)), data["y"][rows]] -= 1.0
            g = p / len(rows)
            w -= lr * x[rows].T @ g
            b -= lr * g.sum(0)
    pred = (x[data["test"]] @ w + b).argmax(1)
    return float((pred == data["y"][data["test"]]).mean())


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for label, job, central in (
        ("split model (bottom MLPs + linear top)", SPLIT_JOB, centralized_split),
        ("vertical logistic regression", LOGISTIC_JOB, centralized_logistic),
    ):
        result = flame.simulate(job)
        fed = float(result.history[-1]["accuracy"])
        ref = central(job)
        print(
            f"{label}: {result.report['intersection']} samples in common; test accuracy "
            f"{fed:.4f} vertical, {ref:.4f} centralized ({100 * (fed - ref):+.1f} points)"
        )


if __name__ == "__main__":
    main()
