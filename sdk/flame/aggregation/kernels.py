"""Fast tensor kernels shared by the aggregation rules (no Python loop per element).

The weighted mean is the hot path: a matrix-vector product over the stacked updates, done in
cache-sized column blocks so no full ``n x size`` stack is ever materialised. On 10 x 10M
float32 it runs faster than copying the inputs once (see ``benchmarks/aggregation.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flame.tensors import Weights

#: Columns per block: n x BLOCK values of the stack stay in cache while BLAS reduces them.
#: Small enough that OpenBLAS runs each matrix-vector product on one thread: its threaded
#: gemv (used from ~64K columns up) collapses when the cores are busy with other work
#: (measured 30x slower on a loaded 2-core machine; 32K columns stays within 2x of idle).
BLOCK = 32_768


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The precision a rule computes a tensor (and keeps its state, e.g. FedAdam moments) in:
    float32 and float64 their own, float16 float32 (NumPy has no fast float16 arithmetic and
    float16 moments underflow), integer and bool tensors float64."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype if dtype.itemsize >= 4 else np.dtype(np.float32)
    return np.dtype(np.float64)


def is_trained(dtype: np.dtype) -> bool:
    """Float tensors are trained parameters; integer and bool tensors are state (counters such
    as BatchNorm's ``num_batches_tracked``, masks) that rules average but do not optimise."""
    return np.dtype(dtype).kind == "f"


def _int_bounds(dtype: np.dtype) -> tuple[float, float]:
    """The float64 range that converts into ``dtype`` without overflow."""
    if dtype.kind == "b":
        return 0.0, 1.0
    info = np.iinfo(dtype)
    lo, hi = float(info.min), float(info.max)
    if int(hi) > info.max:  # 2**63 - 1 and 2**64 - 1 round up to a power of two in float64
        hi = float(np.nextafter(hi, -np.inf))
    return lo, hi


def cast_back(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as an ndarray of ``dtype`` with its shape (a 0-d result stays a 0-d array, never
    a NumPy scalar). Integer and bool results are rounded to the nearest integer (half to even)
    and clipped to the dtype's range, so a bool tensor becomes a majority vote (ties False)."""
    dtype = np.dtype(dtype)
    arr = np.asarray(values)
    if arr.dtype == dtype:
        return arr
    if dtype.kind in "iub":
        rounded = np.asarray(np.rint(arr))
        lo, hi = _int_bounds(dtype)
        np.clip(rounded, lo, hi, out=rounded)
        return rounded.astype(dtype)
    return arr.astype(dtype)


def weighted_sum(
    arrays: Sequence[np.ndarray], coeffs: np.ndarray, dtype: np.dtype | None = None
) -> np.ndarray:
    """``sum_i coeffs[i] * arrays[i]`` with the shape of ``arrays[0]``, computed in ``dtype``
    (default: the compute dtype of ``arrays[0]``, see :func:`compute_dtype`)."""
    first = arrays[0]
    dt = compute_dtype(first.dtype if dtype is None else np.dtype(dtype))
    n = len(arrays)
    flats = [np.ascontiguousarray(a, dtype=dt).reshape(-1) for a in arrays]
    w = np.asarray(coeffs, dtype=dt)
    size = first.size
    out = np.empty(size, dtype=dt)
    if size <= BLOCK:
        np.dot(w, np.stack(flats), out=out)
        return out.reshape(first.shape)
    buf = np.empty((n, BLOCK), dtype=dt)
    for start in range(0, size, BLOCK):
        stop = min(start + BLOCK, size)
        width = stop - start
        for i, flat in enumerate(flats):
            buf[i, :width] = flat[start:stop]
        np.dot(w, buf[:, :width], out=out[start:stop])
    return out.reshape(first.shape)


def weighted_mean(
    models: Sequence[Mapping[str, np.ndarray]],
    coeffs: np.ndarray,
    like: Mapping[str, np.ndarray] | None = None,
) -> Weights:
    """Per-tensor ``sum_i coeffs[i] * models[i][name]``; each result has the dtype of the same
    tensor in ``like`` (the global model; default: the first model)."""
    like = models[0] if like is None else like
    result: Weights = {}
    for name, ref in like.items():
        total = weighted_sum([m[name] for m in models], coeffs, ref.dtype)
        result[name] = cast_back(total, ref.dtype)
    return result
