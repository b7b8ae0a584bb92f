"""Aggregator checkpoints: atomic plain-data files, and a restarted job ends where an
undisturbed one does."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes
from safetensors.numpy import save as st_save

import flame
from flame.checkpoint import (
    FILE_NAME,
    HISTORY_NAME,
    HISTORY_TAIL,
    AggregatorCheckpoint,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from flame.errors import ConfigError, FlameError
from flame.roles import Aggregator, Role, load_role_class
from flame.tensors import WIRE_DTYPES, Weights, check_update

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
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]
    got = load_checkpoint(tmp_path)
    assert got is not None and got.round == 2


def _entry(rnd: int) -> dict[str, float]:
    return {"round": rnd, "accuracy": 0.5 + rnd / 1e5, "loss": 1.0 / (rnd + 1), "trainers": 10.0}


def _with_history(rounds: int) -> AggregatorCheckpoint:
    return replace(sample(3), history=[_entry(r) for r in range(rounds)])


def _lines(path: Path) -> list[dict[str, float]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_long_jobs_saves_write_no_more_than_a_short_ones(tmp_path: Path) -> None:
    """The history leaves the checkpoint file in batches: its size is bounded however long the
    job has run, and each batch is appended once (rewriting it all made saves quadratic)."""
    history = tmp_path / HISTORY_NAME
    save_checkpoint(tmp_path, _with_history(HISTORY_TAIL))
    assert not history.exists()  # a short job has one file
    # the bound: a checkpoint holding a full tail of entries as long as the late rounds'
    late = [_entry(r) for r in range(5000, 5000 + HISTORY_TAIL)]
    save_checkpoint(tmp_path / "short", replace(sample(3), history=late))
    bound = checkpoint_path(tmp_path / "short").stat().st_size + 32  # the counts' digits
    save_checkpoint(tmp_path, _with_history(5000))
    assert _lines(history) == [_entry(r) for r in range(5000)]
    size = history.stat().st_size
    for n in range(5001, 5001 + HISTORY_TAIL):
        save_checkpoint(tmp_path, _with_history(n))
        assert checkpoint_path(tmp_path).stat().st_size <= bound
        assert history.stat().st_size == size  # the newest rounds are in the checkpoint
    save_checkpoint(tmp_path, _with_history(5001 + HISTORY_TAIL))
    assert _lines(history) == [_entry(r) for r in range(5001 + HISTORY_TAIL)]
    got = load_checkpoint(tmp_path)
    assert got is not None and got.history == [_entry(r) for r in range(5001 + HISTORY_TAIL)]


def test_history_an_interrupted_save_appended_is_ignored_then_cut_off(tmp_path: Path) -> None:
    rounds = HISTORY_TAIL + 1
    save_checkpoint(tmp_path, _with_history(rounds))
    history = tmp_path / HISTORY_NAME
    with history.open("ab") as fh:  # a save that appended its lines, then died before its file
        fh.write(b'{"round":3,"accur')
    got = load_checkpoint(tmp_path)
    assert got is not None and got.history == [_entry(r) for r in range(rounds)]
    save_checkpoint(tmp_path, _with_history(rounds + 1))  # in the tail: the file is untouched
    got = load_checkpoint(tmp_path)
    assert got is not None and got.history == [_entry(r) for r in range(rounds + 1)]
    longer = 2 * rounds + 1
    save_checkpoint(tmp_path, _with_history(longer))  # an append: it cuts the torn line off
    assert _lines(history) == [_entry(r) for r in range(longer)]
    got = load_checkpoint(tmp_path)
    assert got is not None and got.history == [_entry(r) for r in range(longer)]


def test_a_shorter_history_starts_over_and_a_lost_one_is_reported(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _with_history(200))
    save_checkpoint(tmp_path, _with_history(2))
    got = load_checkpoint(tmp_path)
    assert got is not None and got.history == [_entry(0), _entry(1)]
    save_checkpoint(tmp_path, _with_history(300))
    history = tmp_path / HISTORY_NAME
    assert _lines(history) == [_entry(r) for r in range(300)]
    history.write_text(json.dumps(_entry(0)) + "\n")
    with pytest.raises(ConfigError, match="unreadable"):
        load_checkpoint(tmp_path)
    history.unlink()
    with pytest.raises(ConfigError, match="unreadable"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_of_the_first_format_loads_and_carries_on(tmp_path: Path) -> None:
    """Format 1 kept the history inline: a job checkpointed before it resumes after it."""
    state = {
        "version": 1,
        "round": 2,
        "strategy_data": {},
        "selector": {},
        "best_round": None,
        "best_metrics": {},
        "has_best": False,
        "history": [_entry(0), _entry(1)],
        "extra": {},
    }
    weights = {"model/w": np.ones(3, np.float32)}
    checkpoint_path(tmp_path).write_bytes(
        st_save(weights, metadata={"flame.state": json.dumps(state)})
    )
    got = load_checkpoint(tmp_path)
    assert got is not None and got.round == 2 and got.history == [_entry(0), _entry(1)]
    save_checkpoint(tmp_path, replace(got, round=3, history=[*got.history, _entry(2)]))
    again = load_checkpoint(tmp_path)
    assert again is not None and again.history == [_entry(r) for r in range(3)]


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


def test_a_0d_tensor_stays_0d_and_passes_the_resume_check(tmp_path: Path) -> None:
    weights = {"w": np.ones((2, 2), np.float32), "bn.num_batches_tracked": np.array(7, np.int64)}
    save_checkpoint(tmp_path, AggregatorCheckpoint(round=1, weights=weights))
    got = load_checkpoint(tmp_path)
    assert got is not None
    assert got.weights["bn.num_batches_tracked"].shape == ()
    assert int(got.weights["bn.num_batches_tracked"]) == 7
    check_update(got.weights, weights, "checkpoint")  # what a resuming aggregator checks


def _tensors(rng: np.random.Generator, specs: list[tuple[np.dtype, tuple[int, ...]]]) -> Weights:
    out: Weights = {}
    for i, (dt, shape) in enumerate(specs):
        if dt.kind == "b":
            value = rng.integers(0, 2, shape).astype(bool)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            value = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dt)
        else:
            value = rng.standard_normal(shape).astype(dt)
        out[f"t{i}"] = np.asarray(value)
    return out


SPECS = st.lists(
    st.tuples(
        st.sampled_from(list(WIRE_DTYPES.values())),
        array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=30, deadline=None)
@given(specs=SPECS, seed=st.integers(0, 2**32 - 1))
def test_every_shape_and_dtype_survives_a_checkpoint_exactly(
    specs: list[tuple[np.dtype, tuple[int, ...]]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    weights = _tensors(rng, specs)
    moments = {f"m/{k}": v.astype(np.float64) for k, v in weights.items()}
    best = _tensors(rng, specs)
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(
            folder,
            AggregatorCheckpoint(
                round=2, weights=weights, strategy_tensors=moments, best_weights=best
            ),
        )
        got = load_checkpoint(folder)
    assert got is not None and got.best_weights is not None
    for want, have in (
        (weights, got.weights),
        (moments, got.strategy_tensors),
        (best, got.best_weights),
    ):
        assert have.keys() == want.keys()
        for name, value in want.items():
            assert have[name].shape == value.shape and have[name].dtype == value.dtype, name
            np.testing.assert_array_equal(have[name], value)
    check_update(got.weights, weights, "checkpoint")  # a resuming aggregator accepts it


def test_a_restarted_middle_aggregator_runs_its_checkpointed_round_again(tmp_path: Path) -> None:
    """A middle aggregator checkpoints the model it got from above before it hands it down;
    started again it runs that round again and skips the same model when the (resumed) top
    sends it once more, and the job ends with the undisturbed model."""
    from structlog.testing import capture_logs

    class CrashingMiddle(Aggregator):
        async def distribute(self) -> None:  # type: ignore[override]
            if self.round == 4:
                raise FlameError("simulated crash of a middle aggregator in round 4")
            await super().distribute.run()

    def roles(middle: type[Aggregator]) -> dict[str, type[Role]]:
        return {
            "trainer": load_role_class(JOB / "trainer" / "main.py"),
            "top-aggregator": load_role_class(JOB / "aggregator" / "main.py"),
            "middle-aggregator": middle,
        }

    hierarchical = JOB.parent / "hierarchical"
    # quorum_grace 0: the top, left without its groups, ends the run at once
    spec = {"rounds": 6, "quorum_grace": 0, "hyperparameters": {"lr": 1.0, "local_steps": 5}}
    clean = flame.simulate(hierarchical, roles=roles(Aggregator), overrides=spec)
    with pytest.raises(FlameError):
        flame.simulate(
            hierarchical,
            roles=roles(CrashingMiddle),
            overrides=spec,
            workdir=tmp_path,
            checkpoint=True,
        )
    with capture_logs() as logs:
        resumed = flame.simulate(
            hierarchical,
            roles=roles(Aggregator),
            overrides=spec,
            workdir=tmp_path,
            checkpoint=True,
        )

    def middles(event: str) -> list[int]:
        return sorted(
            e["round"]
            for e in logs
            if e["event"] == event and "middle-aggregator" in e.get("task_id", "")
        )

    assert middles("checkpoint.resumed") == [4, 4]
    assert middles("model.again") == [4, 4]
    for name, value in clean.weights.items():
        np.testing.assert_array_equal(resumed.weights[name], value)


_SAVE_A_BIG_MODEL = """
import resource, sys, numpy as np
from flame.checkpoint import AggregatorCheckpoint, save_checkpoint
n = 25_000_000  # 100 MB of float32 in each of the model and the best model
model = {"w": np.ones(n, np.float32)}
best = {"w": np.zeros(n, np.float32)}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
save_checkpoint(sys.argv[1], AggregatorCheckpoint(round=1, weights=model, best_weights=best))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_save_holds_no_copy_of_the_model(tmp_path: Path) -> None:
    """The file is written from the tensors' own memory: an aggregator of a large model does
    not need room for two more copies of it (and of the best model) at the end of each round,
    as it did while the file's bytes were built first (+4x the model)."""
    out = subprocess.run(
        [sys.executable, "-c", _SAVE_A_BIG_MODEL, str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    grew = int(out.stdout.strip().splitlines()[-1])
    assert grew < 50_000_000  # under half the model, where building the bytes took 400 MB
    got = load_checkpoint(tmp_path)
    assert got is not None and got.best_weights is not None
    assert float(got.weights["w"][-1]) == 1.0 and float(got.best_weights["w"][0]) == 0.0
