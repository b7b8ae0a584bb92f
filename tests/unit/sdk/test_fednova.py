"""FedNova: normalised averaging against a plain NumPy reference, and in a job whose trainers
report partial work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flame
from flame.aggregation import make_strategy
from flame.aggregation.base import Update
from flame.aggregation.fedavg import fedavg
from flame.aggregation.fednova import fednova
from flame.config import OptimizerSpec
from flame.roles import Aggregator, Coordinator, load_role_class
from flame_spec import SpecError, parse_job_spec

rng = np.random.default_rng(7)
G = {"w": rng.normal(size=(3, 2)).astype(np.float64), "s": np.array(2.0), "n": np.array(4)}


def update(sender: str, samples: int, steps: float | None) -> Update:
    w = {k: (v + rng.normal(size=v.shape)) if v.dtype.kind == "f" else v for k, v in G.items()}
    meta: dict[str, Any] = {"samples": float(samples)}
    if steps is not None:
        meta["steps"] = steps
    return Update(sender=sender, weights=w, num_samples=samples, meta=meta)


def test_fednova_matches_a_plain_numpy_reference() -> None:
    ups = [update("a", 10, 1.0), update("b", 30, 5.0), update("c", 60, 2.0)]
    got = fednova(G, ups, server_lr=0.5)
    p = np.array([0.1, 0.3, 0.6])
    tau = np.array([1.0, 5.0, 2.0])
    for name in ("w", "s"):
        d = sum(p[i] * (G[name] - ups[i].weights[name]) / tau[i] for i in range(3))
        np.testing.assert_allclose(got[name], G[name] - 0.5 * float(p @ tau) * d, rtol=1e-12)
    assert got["s"].shape == () and got["n"].dtype == G["n"].dtype


def test_with_equal_steps_fednova_is_fedavg() -> None:
    ups = [update("a", 10, 4.0), update("b", 30, 4.0)]
    got, ref = fednova(G, ups), fedavg(G, ups)
    for name in G:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-12, atol=1e-12)


def test_updates_without_work_are_left_out_and_none_keeps_the_model() -> None:
    ups = [update("a", 10, 0.0), update("b", 30, 3.0)]
    np.testing.assert_allclose(fednova(G, ups)["w"], fednova(G, ups[1:])["w"], rtol=1e-12)
    kept = fednova(G, [update("a", 10, 0.0)])
    np.testing.assert_array_equal(kept["w"], G["w"])


def test_fednova_is_a_rule_of_the_job_spec() -> None:
    strategy = make_strategy(OptimizerSpec(name="fednova", kwargs={"server_lr": 0.5}))
    assert strategy.name == "fednova" and strategy.state().data["params"] == {"server_lr": 0.5}
    base = {"rounds": 1, "datasets": {"default": ["d"]}}
    with pytest.raises(SpecError, match="server_lr"):
        parse_job_spec({**base, "optimizer": {"name": "fednova", "kwargs": {"server_lr": -1}}})


JOB = Path(__file__).parents[3] / "examples" / "central-numpy"
NumpyTrainer: Any = load_role_class(JOB / "trainer" / "main.py")
NumpyAggregator: Any = load_role_class(JOB / "aggregator" / "main.py")


class Stragglers(NumpyTrainer):  # type: ignore[misc]
    """Trainers 0-4 take 5 local steps, 5-9 only 1 (and say so)."""

    def train(self) -> None:
        steps = 5 if self.config.index < 5 else 1
        self.hyperparameters["local_steps"] = steps
        super().train()
        self.report_work(steps)


def test_a_fednova_job_with_stragglers_learns() -> None:
    res = flame.simulate(
        JOB,
        roles={
            "trainer": Stragglers,
            "aggregator": NumpyAggregator,
            "middle-aggregator": Aggregator,
            "coordinator": Coordinator,
        },
        overrides={"rounds": 10, "optimizer": {"name": "fednova"}},
    )
    assert res.history[-1]["accuracy"] > 0.85
