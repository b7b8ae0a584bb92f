"""The FedAvg-vs-FedProx straggler example runs with the public API (a short version: the full
200-round comparison is ``python examples/fedprox_stragglers.py``)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).parents[3] / "examples" / "fedprox_stragglers.py"


def load() -> Any:
    spec = importlib.util.spec_from_file_location("fedprox_stragglers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("rule", ["fedavg", "fedprox"])
def test_the_straggler_example_trains_under_90_percent_stragglers(rule: str) -> None:
    example = load()
    curve = example.run(rule, 0.9, seed=0, rounds=4)
    assert len(curve) == 5 and all(math.isfinite(v) for v in curve)
    assert curve[0] == pytest.approx(math.log(10))  # the zero model: uniform over 10 classes
    assert len(set(curve)) > 1  # some round changed the model
    assert example.swings([1.0, 2.0, 1.0]) == 1.0
