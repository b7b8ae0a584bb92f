"""Trainer-side FedProx and SCAFFOLD helpers, and SCAFFOLD end to end on a drifting problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flame.aggregation import FedBuff, Scaffold, Update, make_strategy, staleness_weight
from flame.aggregation.client import (
    fedprox_mu,
    proximal_grad,
    proximal_term,
    scaffold_control_update,
    scaffold_correction,
    torch_proximal_term,
    torch_scaffold_correct_,
)
from flame.config import OptimizerSpec
from flame.errors import AggregationError
from flame.tensors import check_update


def test_proximal_grad_is_the_gradient_of_the_proximal_term() -> None:
    rng = np.random.default_rng(0)
    local = {"w": rng.standard_normal(5), "b": rng.standard_normal(2)}
    glob = {"w": rng.standard_normal(5), "b": rng.standard_normal(2)}
    mu, eps = 0.3, 1e-6
    grad = proximal_grad(local, glob, mu)
    for k, v in local.items():
        for i in range(v.size):
            up = {**local, k: v.copy()}
            up[k][i] += eps
            down = {**local, k: v.copy()}
            down[k][i] -= eps
            numeric = (proximal_term(up, glob, mu) - proximal_term(down, glob, mu)) / (2 * eps)
            assert numeric == pytest.approx(grad[k][i], rel=1e-5, abs=1e-8)


def test_torch_proximal_term_matches_the_numpy_version() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    glob = {k: (v.detach().numpy() + 0.5).astype(np.float32) for k, v in model.state_dict().items()}
    term = torch_proximal_term(model, glob, mu=0.2)
    term.backward()
    local = {k: v.detach().numpy() for k, v in model.named_parameters()}
    assert term.item() == pytest.approx(proximal_term(local, glob, 0.2), rel=1e-5)
    expected = proximal_grad(local, glob, 0.2)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), expected[name], rtol=1e-5)
    assert float(torch_proximal_term(model, glob, mu=0.0)) == 0.0


def test_fedprox_mu_comes_from_the_job_optimizer() -> None:
    assert fedprox_mu(OptimizerSpec(name="fedprox", kwargs={"mu": 0.5})) == 0.5
    assert fedprox_mu(OptimizerSpec(name="fedprox")) == 0.01
    assert fedprox_mu(OptimizerSpec(name="fedavg")) == 0.0


def test_scaffold_correction_and_control_update_follow_the_paper() -> None:
    g = {"w": np.array([1.0, 2.0], np.float32)}
    c = {"w": np.array([0.5, 0.5], np.float32)}
    c_i = {"w": np.array([0.25, 1.0], np.float32)}
    np.testing.assert_allclose(scaffold_correction(g, c, c_i)["w"], [1.25, 1.5])
    np.testing.assert_allclose(scaffold_correction(g, {}, {})["w"], [1.0, 2.0])  # first round
    x = {"w": np.array([1.0, 1.0], np.float32)}
    y = {"w": np.array([0.0, 2.0], np.float32)}
    new_c_i, delta = scaffold_control_update(c_i, c, x, y, steps=4, lr=0.5)
    # c_i+ = c_i - c + (x - y) / (K lr) = [0.25 - 0.5 + 0.5, 1 - 0.5 - 0.5]
    np.testing.assert_allclose(new_c_i["w"], [0.25, 0.0])
    np.testing.assert_allclose(delta["w"], new_c_i["w"] - c_i["w"])
    with pytest.raises(AggregationError):
        scaffold_control_update(c_i, c, x, y, steps=0, lr=0.5)


def test_torch_scaffold_correction_adjusts_gradients_in_place() -> None:
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    before = {k: p.grad.clone() for k, p in model.named_parameters()}
    c = {"weight": np.full((1, 2), 0.3, np.float32)}
    c_i = {"weight": np.full((1, 2), 0.1, np.float32), "bias": np.full(1, 1.0, np.float32)}
    torch_scaffold_correct_(model, c, c_i)
    np.testing.assert_allclose(model.weight.grad.numpy(), before["weight"].numpy() + 0.2, rtol=1e-6)
    np.testing.assert_allclose(model.bias.grad.numpy(), before["bias"].numpy() - 1.0, rtol=1e-6)


# Heterogeneous quadratics f_i(w) = a_i/2 (w - b_i)²: with several local steps FedAvg drifts to a
# biased fixed point, SCAFFOLD reaches the true optimum sum(a_i b_i) / sum(a_i).
A = np.array([1.0, 3.0, 0.2, 2.0])
B = np.array([4.0, -1.0, 10.0, 2.0])
OPTIMUM = float(A @ B / A.sum())


def _federated(
    rule: str, rounds: int = 150, steps: int = 10, lr: float = 0.1, **kwargs: float
) -> float:
    strat = make_strategy(OptimizerSpec(name=rule, kwargs=kwargs))
    x = {"w": np.zeros(1, np.float64)}
    controls = [{"w": np.zeros(1, np.float64)} for _ in A]
    if isinstance(strat, Scaffold):
        strat.init(x)
    for rnd in range(rounds):
        c = strat.to_trainers()
        ups = []
        for i, (a, b) in enumerate(zip(A, B, strict=True)):
            y = {"w": x["w"].copy()}
            for _ in range(steps):
                grad = {"w": a * (y["w"] - b)}
                if rule == "scaffold":
                    grad = scaffold_correction(grad, c, controls[i])
                y["w"] = y["w"] - lr * grad["w"]
            extras = {}
            if rule == "scaffold":
                controls[i], extras = scaffold_control_update(controls[i], c, x, y, steps, lr)
            ups.append(Update(f"t{i}", y, num_samples=1, extras=extras))
        x = strat.aggregate(x, ups, rnd)
    return float(x["w"][0])


def test_scaffold_removes_client_drift_that_fedavg_suffers() -> None:
    fedavg, scaffold = _federated("fedavg"), _federated("scaffold")
    assert abs(scaffold - OPTIMUM) < 1e-6
    assert abs(fedavg - OPTIMUM) > 0.1


@pytest.mark.parametrize(
    ("rule", "kwargs"),
    [
        ("fedadam", {"eta": 0.05}),
        ("fedyogi", {"eta": 0.05}),
        ("fedadagrad", {"eta": 0.5}),
    ],
)
def test_server_optimizers_reach_the_optimum_without_local_drift(rule: str, kwargs: dict) -> None:
    # One local step per round: the pseudo-gradient is a plain gradient, so the optimum is the
    # fixed point of every adaptive rule (a sign error would run away from it).
    x = _federated(rule, rounds=400, steps=1, lr=0.05, **kwargs)
    assert abs(x - OPTIMUM) < 1e-3, x


def test_fedbuff_converges_to_the_staleness_weighted_optimum() -> None:
    # Four always-busy trainers finish in turn 0, 1, 2, 3, 0, ...; K = 4. Trainers 0-2 restart
    # before the flush that trainer 3's update triggers, so their updates are always one model
    # late (staleness 1) while trainer 3's are fresh. At the fixed point every trainer steps
    # from x*, weighted 1/sqrt(1 + staleness): x* = sum(s_i a_i b_i) / sum(s_i a_i).
    buff = make_strategy(OptimizerSpec(name="fedbuff", kwargs={"k": 4, "max_staleness": 2}))
    assert isinstance(buff, FedBuff)
    x = {"w": np.zeros(1, np.float64)}
    rnd = 0
    started = {i: (0, x["w"].copy()) for i in range(len(A))}  # trainer -> (base round, model)
    seen: dict[int, set[int]] = {i: set() for i in range(len(A))}
    for event in range(4000):
        i = event % len(A)
        base, start = started[i]
        y = start - 0.05 * A[i] * (start - B[i])  # one local gradient step
        if event >= len(A):
            seen[i].add(rnd - base)
        if buff.add(Update(f"t{i}", {"w": y}, 1, base_round=base), x, rnd):
            x = buff.flush(x, rnd)
            rnd += 1
        started[i] = (rnd, x["w"].copy())
    assert seen == {0: {1}, 1: {1}, 2: {1}, 3: {0}}
    s = np.array([staleness_weight(1)] * 3 + [staleness_weight(0)])
    expected = float((s * A) @ B / (s * A).sum())
    assert abs(float(x["w"][0]) - expected) < 1e-6
    assert abs(expected - OPTIMUM) > 1e-2  # the discount visibly matters


def test_scaffold_control_deltas_have_the_dtype_of_the_servers_c_for_every_tensor() -> None:
    # The aggregator checks each update's extras against the c it sent (names, shapes, dtypes):
    # a trainer's deltas must come back in c's dtype, also for float16 and integer tensors.
    g = {
        "w": np.ones((2, 3), np.float16),
        "scale": np.array(0.5, np.float32),
        "bn.num_batches_tracked": np.array(4, np.int64),
    }
    server = make_strategy(OptimizerSpec(name="scaffold"))
    assert isinstance(server, Scaffold)
    server.init(g)
    c = server.to_trainers()
    updates = []
    for i in range(3):
        local = {k: (v + i).astype(v.dtype) for k, v in g.items()}
        c_i, delta = scaffold_control_update({}, c, g, local, steps=2, lr=0.1)
        check_update(delta, c, f"t{i}")
        check_update(c_i, c, f"t{i}")
        updates.append(Update(f"t{i}", local, 10, extras=delta))
    out = server.aggregate(g, updates, 0)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
        k: (v.shape, v.dtype) for k, v in g.items()
    }
    assert int(out["bn.num_batches_tracked"]) == 5  # 4 + mean(0, 1, 2)
    check_update(server.to_trainers(), c, "server")  # c keeps its dtypes round after round
