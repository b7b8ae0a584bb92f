"""FedAvg vs FedProx under stragglers on FedProx's Synthetic(1,1) (Li et al. 2020, Figure 1),
with the SDK's public API only: ``examples/stragglers`` (30 devices, 10 drawn per round, E = 20
local epochs of minibatch SGD) and ``flame.simulate(..., heterogeneity=Heterogeneity(...))``.

* FedAvg drops stragglers: a straggler declines its round (``drop_stragglers=True``).
* FedProx (mu = 1) keeps their partial work: a straggler does 1..E-1 epochs, reports it, and
  the aggregator weights its update by the share done.

The loss is the global model's training loss over all 30 devices (``server/loss``)::

    python examples/fedprox_stragglers.py                      # 0/50/90 %, 3 seeds, 200 rounds
    python examples/fedprox_stragglers.py --stragglers 0.9 --rounds 50 --out /tmp/fp

writes ``results.json`` (every curve) and ``loss.png`` (one panel per straggler share) to
``--out``, and prints the final losses and the mean absolute round-to-round change.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import structlog

import flame
from flame.heterogeneity import Heterogeneity

JOB = Path(__file__).parent / "stragglers"


def run(rule: str, stragglers: float, seed: int, rounds: int) -> list[float]:
    """The global model's training loss after each round (index 0: the initial model)."""
    overrides: dict[str, Any] = {"rounds": rounds, "seed": seed}
    if rule == "fedavg":
        overrides["optimizer"] = {"name": "fedavg"}
    devices = Heterogeneity(stragglers=stragglers, drop_stragglers=rule == "fedavg", seed=seed)
    result = flame.simulate(JOB, overrides=overrides, heterogeneity=devices)
    return [float(h["server/loss"]) for h in result.history]


def swings(curve: list[float]) -> float:
    """Mean absolute round-to-round change of the loss (how much a curve oscillates)."""
    return float(np.mean(np.abs(np.diff(curve))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stragglers", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("fedprox-stragglers"))
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    args.out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for share in args.stragglers:
        for rule in ("fedavg", "fedprox"):
            for seed in args.seeds:
                curve = run(rule, share, seed, args.rounds)
                curves.setdefault(f"{share:g}", {}).setdefault(rule, {})[str(seed)] = curve
                print(
                    f"stragglers {share:4.0%}  {rule:8s} seed {seed}: "
                    f"final loss {curve[-1]:.4f}  swings {swings(curve):.4f}",
                    flush=True,
                )
    (args.out / "results.json").write_text(json.dumps(curves, indent=1))
    plot(curves, args.out / "loss.png")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'loss.png'}")


def plot(curves: dict[str, dict[str, dict[str, list[float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (share, rules) in zip(axes[0], curves.items(), strict=True):
        for rule, color in (("fedavg", "tab:blue"), ("fedprox", "tab:red")):
            for i, curve in enumerate(rules.get(rule, {}).values()):
                label = "FedAvg (drop stragglers)" if rule == "fedavg" else "FedProx (mu=1)"
                ax.plot(curve, color=color, alpha=0.7, label=label if i == 0 else None)
        ax.set_title(f"Synthetic(1,1), {float(share):.0%} stragglers")
        ax.set_xlabel("round")
        ax.set_ylabel("training loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
