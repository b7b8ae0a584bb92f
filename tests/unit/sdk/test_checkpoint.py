"""Aggregator checkpoints: atomic plain-data files, and a restarted job ends where an
undisturbed one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flame
from flame.checkpoint import (
    AggregatorCheckpoint,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from flame.errors import ConfigError, FlameError
from flame.roles import Aggregator, load_role_class

JOB = Path(__file__).parents[3] / "examples" / "central-numpy"


def sample(rnd: int) -> AggregatorCheckpoint:
    return AggregatorCheckpoint(
        round=rnd,
        weights={"w": np.full((3, 2), rnd, np.float32), "b": np.zeros(2, np.float32)},
        strategy_tensors={"m/w": np.ones((3, 2), np.float32)},
        strategy_data={"name": "fedadam", "t": rnd},
        selector={"rng": {"state": 123}, "name": "random"},
        best_round=rnd - 1,
        best_weights={"w": np.zeros((3, 2), np.float32), "b": np.ones(2, np.float32)},
        best_metrics={"accuracy": 0.5},
        history=[{"round": 0, "accuracy": 0.1}],
        extra={"silent": ["t-1"]},
    )


def test_round_trip_keeps_every_part(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, sample(3))
    got = load_checkpoint(tmp_path)
    assert got is not None
    want = sample(3)
    assert got.round == 3 and got.strategy_data == want.strategy_data
    assert got.selector == want.selector and got.history == want.history
    assert got.best_round == 2 and got.best_metrics == {"accuracy": 0.5}
    assert got.extra == {"silent": ["t-1"]}
    for a, b in ((got.weights, want.weights), (got.strategy_tensors, want.strategy_tensors)):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert got.best_weights is not None
    np.testing.assert_array_equal(got.best_weights["b"], np.ones(2, np.float32))


def test_rewrite_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, sample(1))
    save_checkpoint(tmp_path, sample(2))
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_path(tmp_path).name]
    got = load_checkpoint(tmp_path)
    assert got is not None and got.round == 2


def test_no_checkpoint_and_a_corrupt_one(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None
    checkpoint_path(tmp_path).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(ConfigError, match="unreadable"):
        load_checkpoint(tmp_path)


def _spec() -> dict[str, object]:
    return {
        "rounds": 8,
        "optimizer": {"name": "fedadam", "kwargs": {"eta": 0.1}},
        "selector": {"name": "random", "kwargs": {"k": 6}},
    }


def test_restarted_aggregator_ends_with_the_undisturbed_model(tmp_path: Path) -> None:
    base = load_role_class(JOB / "aggregator" / "main.py")
    assert issubclass(base, Aggregator)

    class CrashingAggregator(base):  # type: ignore[misc, valid-type]
        def save(self) -> None:
            super().save()
            if self.round == 4:
                raise FlameError("simulated crash after round 4")

    clean = flame.simulate(JOB, overrides=_spec())
    with pytest.raises(FlameError, match="simulated crash"):
        flame.simulate(
            JOB,
            roles={"aggregator": CrashingAggregator},
            overrides=_spec(),
            workdir=tmp_path,
            checkpoint=True,
        )
    ckpt_dirs = list((tmp_path / "checkpoints").iterdir())
    assert len(ckpt_dirs) == 1
    saved = load_checkpoint(ckpt_dirs[0])
    assert saved is not None and saved.round == 4 and saved.strategy_tensors  # FedAdam moments
    resumed = flame.simulate(JOB, overrides=_spec(), workdir=tmp_path, checkpoint=True)
    assert [h["round"] for h in resumed.history] == list(range(9))
    for name, value in clean.weights.items():
        np.testing.assert_allclose(resumed.weights[name], value, rtol=0, atol=1e-6)
    assert [h["accuracy"] for h in resumed.history] == pytest.approx(
        [h["accuracy"] for h in clean.history]
    )
