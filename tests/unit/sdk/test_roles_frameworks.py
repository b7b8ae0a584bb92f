"""Framework adapters: torch state_dict <-> NumPy without pickle, dict-of-arrays models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flame.errors import ConfigError
from flame.frameworks import get_weights, set_weights


def test_torch_round_trip_keeps_float_state_and_skips_integer_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    weights = get_weights(model)
    assert "1.num_batches_tracked" not in weights
    assert weights["0.weight"].dtype == np.float32 and weights["0.weight"].shape == (3, 4)
    assert "1.running_mean" in weights
    changed = {k: v + 1.0 for k, v in weights.items()}
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    set_weights(other, changed)
    for name, value in get_weights(other).items():
        np.testing.assert_array_equal(value, changed[name])
    weights["0.weight"][:] = 99  # exported arrays are copies
    assert float(model[0].weight.max()) < 99


def test_torch_shape_mismatch_is_a_clear_error() -> None:
    model = nn.Linear(4, 3)
    bad = {"weight": np.zeros((2, 4), np.float32), "bias": np.zeros(3, np.float32)}
    with pytest.raises(ConfigError, match="weight"):
        set_weights(model, bad)


def test_numpy_models_are_copied_and_keep_their_dtype() -> None:
    model = {"w": np.ones((2, 2), np.float32)}
    out = set_weights(model, {"w": np.full((2, 2), 3.0)})
    assert out["w"].dtype == np.float32 and float(out["w"][0, 0]) == 3.0
    assert float(model["w"][0, 0]) == 1.0
    with pytest.raises(ConfigError):
        get_weights({"n": np.arange(3)})
    with pytest.raises(ConfigError):
        get_weights(object())
