"""Framework adapters: torch state_dict <-> NumPy without pickle, dict-of-arrays models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes
from torch import nn

from flame.errors import ConfigError
from flame.frameworks import get_weights, input_example, predict, set_weights
from flame.tensors import WIRE_DTYPES, from_bytes, to_bytes


def test_torch_round_trip_keeps_every_entry_in_its_own_dtype() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model(torch.randn(5, 4))  # one training step: running stats move, the counter becomes 1
    weights = get_weights(model)
    assert weights["0.weight"].dtype == np.float32 and weights["0.weight"].shape == (3, 4)
    assert "1.running_mean" in weights
    counter = weights["1.num_batches_tracked"]  # integer buffers travel too, 0-d and int64
    assert counter.dtype == np.int64 and counter.shape == () and int(counter) == 1
    changed = {k: (v + 1).astype(v.dtype) for k, v in weights.items()}
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    set_weights(other, changed)
    assert int(other[1].num_batches_tracked) == 2
    for name, value in get_weights(other).items():
        assert value.dtype == changed[name].dtype and value.shape == changed[name].shape
        np.testing.assert_array_equal(value, changed[name])
    weights["0.weight"][:] = 99  # exported arrays are copies
    assert float(model[0].weight.detach().max()) < 99


def test_torch_weights_from_an_older_peer_without_integer_buffers_keep_the_local_ones() -> None:
    model = nn.BatchNorm1d(3)
    model.num_batches_tracked.fill_(5)
    floats = {k: v for k, v in get_weights(model).items() if v.dtype.kind == "f"}
    set_weights(model, floats)
    assert int(model.num_batches_tracked) == 5
    with pytest.raises(ConfigError, match="running_var"):
        set_weights(model, {k: v for k, v in floats.items() if k != "running_var"})


class _Buffers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 2, dtype=torch.bfloat16))
        self.register_buffer("mask", torch.tensor([True, False]))
        self.register_buffer("steps", torch.tensor(3, dtype=torch.int32))


def test_torch_bfloat16_travels_as_float32_and_comes_back_bfloat16() -> None:
    model = _Buffers()
    weights = get_weights(model)
    assert weights["w"].dtype == np.float32  # the wire has no bfloat16; float32 holds it exactly
    assert weights["mask"].dtype == np.bool_ and weights["steps"].shape == ()
    set_weights(
        model,
        {
            "w": np.full((2, 2), 0.5, np.float32),
            "mask": np.array([False, True]),
            "steps": np.array(4, np.int32),
        },
    )
    assert model.w.dtype == torch.bfloat16 and float(model.w.detach()[0, 0]) == 0.5
    assert model.mask.tolist() == [False, True] and int(model.steps) == 4


def test_torch_tensors_the_wire_cannot_carry_are_a_clear_error() -> None:
    model = nn.Module()
    model.register_buffer("z", torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(ConfigError, match=r"'z'.*complex64"):
        get_weights(model)


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
    counters = get_weights({"n": np.arange(3), "flag": np.array(True)})  # int and bool travel
    assert counters["n"].dtype == np.arange(3).dtype and counters["flag"].shape == ()
    with pytest.raises(ConfigError, match=r"'z'.*complex"):
        get_weights({"z": np.zeros(2, np.complex64)})
    scalar = set_weights({"t": np.array(1.0, np.float32)}, {"t": np.array(2.0)})
    assert scalar["t"].shape == () and scalar["t"].dtype == np.float32 and float(scalar["t"]) == 2
    with pytest.raises(ConfigError):
        get_weights(object())


class _WithScalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(1.5))  # a 0-d parameter


def test_torch_round_trip_of_a_0d_parameter() -> None:
    model = _WithScalar()
    weights = get_weights(model)
    assert weights["temperature"].shape == ()
    set_weights(model, {"temperature": np.array(2.5, np.float32)})
    assert model.temperature.shape == () and float(model.temperature.detach()) == 2.5
    np.testing.assert_array_equal(get_weights(model)["temperature"], np.array(2.5, np.float32))


# torch dtypes and the NumPy dtype each travels as (bfloat16: float32, see flame.frameworks.torch)
TORCH_DTYPES = {
    torch.float64: np.float64,
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.bfloat16: np.float32,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.int16: np.int16,
    torch.int8: np.int8,
    torch.uint8: np.uint8,
    torch.bool: np.bool_,
}


class _Tensors(nn.Module):
    """Parameters (float dtypes) and buffers (any dtype) of the given dtypes and shapes."""

    def __init__(self, specs: list[tuple[torch.dtype, tuple[int, ...], bool]]) -> None:
        super().__init__()
        for i, (dtype, shape, as_parameter) in enumerate(specs):
            value = torch.zeros(shape, dtype=dtype)
            if as_parameter and dtype.is_floating_point:
                self.register_parameter(f"p{i}", nn.Parameter(value))
            else:
                self.register_buffer(f"b{i}", value)


def _random_like(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind == "b":
        return np.asarray(rng.integers(0, 2, shape).astype(bool))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.asarray(rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype))
    # small integers and halves: exact in every float dtype, bfloat16 included
    return np.asarray(rng.integers(-64, 64, shape) / 2).astype(dtype)


@settings(max_examples=25, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from(list(TORCH_DTYPES)),
            array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_torch_tensors_of_every_shape_and_dtype_round_trip_over_the_wire(
    specs: list[tuple[torch.dtype, tuple[int, ...], bool]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    model = _Tensors(specs)
    exported = get_weights(model)
    assert len(exported) == len(specs)
    for name, value in exported.items():
        dtype, shape, _ = specs[int(name[1:])]  # state_dict lists parameters before buffers
        assert type(value) is np.ndarray, name
        assert value.shape == shape and value.dtype == TORCH_DTYPES[dtype], name
    sent = {k: _random_like(rng, v.dtype, v.shape) for k, v in exported.items()}
    received = from_bytes(to_bytes(sent))  # what a peer gets: read-only views, 0-d kept
    set_weights(model, received)
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == specs[int(name[1:])][0]  # its own dtype, bfloat16 included
    back = get_weights(model)
    for name, value in sent.items():
        assert back[name].shape == value.shape and back[name].dtype == value.dtype, name
        np.testing.assert_array_equal(back[name], value)


@settings(max_examples=25, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from(list(WIRE_DTYPES.values())),
            array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
        ),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_numpy_models_of_every_shape_and_dtype_round_trip_over_the_wire(
    specs: list[tuple[np.dtype, tuple[int, ...]]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    model = {f"t{i}": _random_like(rng, dt, shape) for i, (dt, shape) in enumerate(specs)}
    sent = get_weights(model)
    back = set_weights(model, from_bytes(to_bytes(sent)))
    for name, value in model.items():
        assert type(back[name]) is np.ndarray
        assert back[name].shape == value.shape and back[name].dtype == value.dtype, name
        np.testing.assert_array_equal(back[name], value)
        assert back[name].flags.writeable  # the model owns its arrays


def test_default_predict_of_a_torch_module_is_its_forward_pass_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()  # predict switches to eval: dropout off, so two calls agree
    x = np.random.default_rng(0).normal(size=(6, 4))  # float64 in: cast to the params' float32
    got = predict(model, x)
    assert got.dtype == np.float32 and got.shape == (6, 3)
    np.testing.assert_array_equal(got, predict(model, x))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_array_equal(got, expected)
    example = input_example(model)
    assert example is not None and example.shape == (1, 4) and example.dtype == np.float32
    assert input_example(nn.Sequential(nn.Conv2d(1, 2, 3))) is None  # width unknown


def test_default_predict_of_a_dict_model_is_affine_and_needs_w() -> None:
    model = {"w": np.arange(6, dtype=np.float32).reshape(3, 2), "b": np.ones(2, np.float32)}
    x = np.array([[1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(predict(model, x), [[9.0, 12.0]])
    assert predict(model, x).dtype == np.float32
    example = input_example(model)
    assert example is not None and example.shape == (1, 3)
    with pytest.raises(ConfigError, match="declare predict"):
        predict({"theta": np.zeros(3)}, x)
    assert input_example({"theta": np.zeros(3)}) is None
