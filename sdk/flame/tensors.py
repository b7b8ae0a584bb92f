"""Named tensors: the one model representation the SDK moves and aggregates.

``Weights`` maps a parameter name to a NumPy array of any shape (0-d included) and one of the
:data:`WIRE_DTYPES`: mostly float parameters, plus integer and bool state such as BatchNorm's
``num_batches_tracked`` counter. On the wire they are safetensors bytes (never pickle).
:func:`check_update` is the gate every received update passes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from flame.errors import RejectedUpdate

Array = NDArray[Any]
Weights = dict[str, Array]

#: The dtypes a tensor may have on the wire, by safetensors code (what
#: :mod:`flame.channels.chunking` sends; bfloat16 has no NumPy dtype).
WIRE_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
_ALWAYS_FINITE = frozenset("biu")  # dtype kinds with no inf or nan
_CODES = {(dt.kind, dt.itemsize): code for code, dt in WIRE_DTYPES.items()}


def wire_code(dtype: np.dtype) -> str | None:
    """The safetensors code of a wire dtype (byte order aside), None for any other dtype."""
    dt = np.dtype(dtype)
    return _CODES.get((dt.kind, dt.itemsize))


def safetensors_parts(
    weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> tuple[tuple[memoryview, ...], int]:
    """``weights`` (and ``metadata``) as safetensors bytes in pieces, and their total size: the
    header, then each tensor's own memory. Writing the pieces out copies nothing but an array
    that is not C-contiguous little-endian already (``to_bytes`` copies every tensor, and once
    more into its result). Raises ``ValueError`` for a dtype not in :data:`WIRE_DTYPES`."""
    arrays: list[tuple[str, np.ndarray, str]] = []
    for name in sorted(weights):
        arr = np.asarray(weights[name])
        code = wire_code(arr.dtype)
        if code is None:
            raise ValueError(f"cannot write tensors of dtype {arr.dtype}")
        arrays.append((name, np.asarray(arr, dtype=WIRE_DTYPES[code], order="C"), code))
    header: dict[str, object] = {}
    offset = 0
    for name, arr, code in arrays:
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    prefix = struct.pack("<Q", len(head)) + head
    # the raw bytes of each array, without copying
    data = (
        memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        for _, arr, _ in arrays
        if arr.size
    )
    return (memoryview(prefix), *data), len(prefix) + offset


def write_safetensors(
    fh: BinaryIO, weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``weights`` to ``fh`` as safetensors, from the tensors' own memory (a model-sized
    file costs no model-sized buffer). Nothing at all for no weights and no metadata, as
    :func:`to_bytes` gives ``b""`` then."""
    if weights or metadata:
        for part in safetensors_parts(weights, metadata)[0]:
            fh.write(part)


def is_wire_dtype(dtype: np.dtype) -> bool:
    """True for a dtype the wire carries (byte order aside: it is normalised on sending)."""
    return wire_code(dtype) is not None


def to_bytes(weights: Mapping[str, np.ndarray]) -> bytes:
    """Serialise named arrays as safetensors (contiguous copies only where needed)."""
    if not weights:
        return b""
    # np.asarray(order="C"), not ascontiguousarray: the latter turns 0-d tensors into 1-d.
    return st_save({k: np.asarray(v, order="C") for k, v in weights.items()})


def from_bytes(data: bytes) -> Weights:
    """Parse safetensors bytes; never executes code from the payload."""
    if not data:
        return {}
    try:
        return dict(st_load(data))
    except Exception as exc:  # safetensors raises its own error types
        raise RejectedUpdate(f"payload is not valid safetensors: {exc}") from exc


def spec_of(weights: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), v.dtype.str) for k, v in weights.items()}


def check_update(
    update: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    sender: str = "",
) -> None:
    """Raise :class:`RejectedUpdate` unless ``update`` matches ``reference`` in names, shapes and
    dtypes and every value is finite."""
    if update.keys() != reference.keys():
        missing = reference.keys() - update.keys()
        extra = update.keys() - reference.keys()
        raise RejectedUpdate(
            f"tensor names differ (missing={sorted(missing)}, unexpected={sorted(extra)})", sender
        )
    for name, ref in reference.items():
        got = update[name]
        if got.shape != ref.shape:
            raise RejectedUpdate(f"{name}: shape {got.shape} != expected {ref.shape}", sender)
        if got.dtype != ref.dtype:
            raise RejectedUpdate(f"{name}: dtype {got.dtype} != expected {ref.dtype}", sender)
        # integers and booleans are always finite
        if got.dtype.kind not in _ALWAYS_FINITE and not np.isfinite(got).all():
            raise RejectedUpdate(f"{name}: non-finite values", sender)


def copy_weights(weights: Mapping[str, np.ndarray]) -> Weights:
    return {k: np.array(v, copy=True) for k, v in weights.items()}
