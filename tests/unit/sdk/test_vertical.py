"""Vertical jobs: private set intersection, split learning, vertical logistic regression.

Each party ends with exactly the intersection and no id (nor its unblinded hash) is in any
message; the split model and vertical logistic regression match their centralized
counterparts (examples/digits_vertical.py); bad input fails the job before training.
"""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

import flame
from flame.channels.inproc import InprocHub
from flame.errors import FlameError
from flame.messages import Message
from flame.psi import canonical_ids, hash_to_group
from flame.roles.vertical_logistic import LogisticFeatureParty, LogisticLabelParty

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DESIGN = EXAMPLES / "vertical" / "design.json"
X962 = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def load_example_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Message, bytes]]:
    """Every message delivered between tasks, with the bytes a network transport would send."""
    sent: list[tuple[str, Message, bytes]] = []
    deliver = InprocHub.deliver

    def record(self: InprocHub, receiver: str, msg: Message) -> None:
        sent.append((receiver, msg, msg.encode(receiver)))
        deliver(self, receiver, msg)

    monkeypatch.setattr(InprocHub, "deliver", record)
    return sent


class Ids:
    """Parties that hold only ids (one zero column, zero labels) and remember what the PSI
    left them."""

    data: ClassVar[dict[str, list[str]]] = {}
    found: ClassVar[dict[str, list[bytes]]] = {}


class IdFeatureParty(LogisticFeatureParty):
    def load_data(self) -> None:
        self.ids = Ids.data[self.config.dataset.name]
        self.x = np.zeros((len(self.ids), 1), dtype=np.float32)

    def align(self, intersection: list[bytes]) -> None:
        Ids.found[self.config.dataset.name] = intersection
        super().align(intersection)


class IdLabelParty(LogisticLabelParty):
    def load_data(self) -> None:
        self.ids = Ids.data[self.config.dataset.name]
        self.y = np.zeros(len(self.ids), dtype=np.int64)

    def align(self, intersection: list[bytes]) -> None:
        Ids.found[self.config.dataset.name] = intersection
        super().align(intersection)


def id_job(**hyperparameters: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    design = json.loads(DESIGN.read_text())
    spec = {
        "kind": "vertical",
        "rounds": 1,
        "datasets": {"feature-party/default": ["a", "b"], "label-party/default": ["l"]},
        "hyperparameters": {"batch_size": 100_000, "classes": 2, **hyperparameters},
        "min_trainers": 3,
    }
    return design, spec


def test_psi_on_10000_ids_with_60_percent_overlap_reveals_only_the_intersection(
    wire: list[tuple[str, Message, bytes]],
) -> None:
    def ids(n: int) -> list[str]:
        return [f"user-{uuid.uuid4().hex}" for _ in range(n)]

    common, a_l, b_l = ids(6000), ids(1000), ids(1000)
    Ids.data = {
        "a": common + a_l + ids(3000),
        "b": common + b_l + ids(3000),
        "l": common + a_l + b_l + ids(2000),
    }
    Ids.found = {}
    assert all(len(v) == 10_000 for v in Ids.data.values())
    flame.simulate(id_job(), {"feature-party": IdFeatureParty, "label-party": IdLabelParty}, {})
    expected = sorted(canonical_ids(common))
    assert set(Ids.found) == {"a", "b", "l"}
    for party, got in Ids.found.items():
        assert got == expected, party

    everything = {x for v in Ids.data.values() for x in v}
    hashed = {hash_to_group(i).public_bytes(*X962)[1:33] for i in canonical_ids(everything)}
    psi = [(r, m, raw) for r, m, raw in wire if m.kind.startswith("psi.")]
    assert {m.kind for _, m, _ in psi} == {"psi.blinded", "psi.reblinded", "psi.result"}
    for _receiver, msg, raw in wire:
        # no id in clear anywhere in the bytes (every id has this distinctive shape) ...
        assert not re.search(rb"user-[0-9a-f]{32}", raw), msg.kind
        # ... and no unblinded hash of one: every point on the wire is blinded
        for tensor in (msg.weights or {}).values():
            if tensor.dtype == np.uint8 and tensor.ndim == 2:
                assert not hashed & {bytes(r) for r in tensor}, msg.kind
    # a feature party learns the intersection as positions in its own shuffled list only
    results = [m for _, m, _ in psi if m.kind == "psi.result"]
    assert len(results) == 2
    assert all(len(m.weights["positions"]) == 6000 for m in results)


def test_split_model_matches_its_centralized_counterpart() -> None:
    script = load_example_module(EXAMPLES / "digits_vertical.py")
    result = flame.simulate(EXAMPLES / "vertical")
    fed = float(result.history[-1]["accuracy"])
    central = script.centralized_split()
    assert result.report["intersection"] > 900
    assert [h["round"] for h in result.history] == list(range(16))
    assert fed > 0.85
    assert abs(fed - central) <= 0.02, (fed, central)


def test_vertical_logistic_regression_matches_its_centralized_counterpart() -> None:
    script = load_example_module(EXAMPLES / "digits_vertical.py")
    result = flame.simulate(EXAMPLES / "vertical-logistic")
    fed = float(result.history[-1]["accuracy"])
    central = script.centralized_logistic()
    assert fed > 0.85
    assert abs(fed - central) <= 0.02, (fed, central)


def _no_training(wire: list[tuple[str, Message, bytes]]) -> None:
    kinds = {m.kind for _, m, _ in wire}
    assert not kinds & {"split.embedding", "split.gradient"}, kinds


def test_an_empty_id_set_fails_the_job_before_training(
    tmp_path: Path, wire: list[tuple[str, Message, bytes]]
) -> None:
    empty = tmp_path / "empty.npz"
    np.savez(empty, ids=np.array([], dtype=str), x=np.zeros((0, 32), dtype=np.float32))
    with pytest.raises(FlameError, match=r"dataset 'digits-right' has no sample ids"):
        flame.simulate(EXAMPLES / "vertical-logistic", datasets={"digits-right": str(empty)})
    _no_training(wire)
    assert not [m for _, m, _ in wire if m.kind == "psi.result"]


def test_a_feature_width_that_disagrees_with_the_job_fails_before_training(
    wire: list[tuple[str, Message, bytes]],
) -> None:
    hp = {"lr": 0.5, "batch_size": 32, "feature_widths": {"digits-left": 32, "digits-right": 24}}
    with pytest.raises(
        FlameError,
        match=r"'digits-right' has 32 feature columns but the job "
        r"declares 24",
    ):
        flame.simulate(EXAMPLES / "vertical-logistic", overrides={"hyperparameters": hp})
    _no_training(wire)


def test_too_few_samples_fail_the_job_before_training(
    wire: list[tuple[str, Message, bytes]],
) -> None:
    hp = {"lr": 0.5, "batch_size": 32, "min_samples": 1200}
    with pytest.raises(
        FlameError,
        match=r"1118 samples in common; the job needs at least "
        r"min_samples=1200",
    ):
        flame.simulate(EXAMPLES / "vertical-logistic", overrides={"hyperparameters": hp})
    _no_training(wire)
    hp["min_samples"] = 5000
    with pytest.raises(FlameError, match=r"samples; the job needs at least min_samples=5000"):
        flame.simulate(EXAMPLES / "vertical-logistic", overrides={"hyperparameters": hp})


@pytest.mark.parametrize("backend", ["grpc", "mqtt"])
def test_a_vertical_job_gives_the_same_result_over_every_channel_backend(backend: str) -> None:
    job = EXAMPLES / "vertical-logistic"
    inproc = flame.simulate(job, overrides={"rounds": 2})
    other = flame.simulate(job, backend=backend, overrides={"rounds": 2})  # type: ignore[arg-type]
    assert other.history == inproc.history
    for name, tensor in inproc.weights.items():
        np.testing.assert_array_equal(other.weights[name], tensor)
