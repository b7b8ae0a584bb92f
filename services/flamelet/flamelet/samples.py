"""Count the training samples of a dataset file without loading it.

The count is what the node registers for the dataset; the aggregator then refuses any update
that claims more samples than that (a trainer cannot outweigh the others by lying). Only the
array headers of an ``.npz`` are read (parsed as a literal, never unpickled), and a ``.csv`` is
counted line by line. Anything else is not counted: the owner passes ``--samples``.
"""

from __future__ import annotations

import ast
import struct
import zipfile
from pathlib import Path

from flamelet.errors import FlameletError

#: Arrays whose first dimension is the number of training samples, in the order looked for.
NPZ_TRAINING_ARRAYS = ("x_train", "y_train", "x", "y", "ids")
MAX_HEADER = 65536


def count_samples(path: Path, format: str) -> int | None:
    """Training samples in ``path``, or None when this format is not counted here."""
    if not path.is_file():
        return None
    if format == "npz":
        return _npz_rows(path)
    if format == "csv":
        return _csv_rows(path)
    return None


def _npz_rows(path: Path) -> int:
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n.removesuffix(".npy"): n for n in zf.namelist()}
            for wanted in NPZ_TRAINING_ARRAYS:
                if wanted in names:
                    with zf.open(names[wanted]) as fh:
                        head = fh.read(MAX_HEADER + 12)
                    try:
                        shape = _npy_shape(head)
                    except FlameletError as exc:
                        raise FlameletError(f"{path}: array {wanted!r}: {exc}") from None
                    if not shape:
                        raise FlameletError(f"{path}: array {wanted!r} has no rows (0-d)")
                    return shape[0]
    except (zipfile.BadZipFile, OSError) as exc:
        raise FlameletError(f"{path} is not a readable .npz file: {exc}") from exc
    raise FlameletError(
        f"{path} holds none of the arrays {', '.join(NPZ_TRAINING_ARRAYS)}: "
        "pass --samples with its number of training samples"
    )


def _npy_shape(head: bytes) -> tuple[int, ...]:
    """The shape in a ``.npy`` header (format versions 1 to 3)."""
    if head[:6] != b"\x93NUMPY":
        raise FlameletError("not a .npy array")
    major = head[6]
    if major == 1:
        (length,), start = struct.unpack("<H", head[8:10]), 10
    elif major in (2, 3):
        (length,), start = struct.unpack("<I", head[8:12]), 12
    else:
        raise FlameletError(f".npy format version {major} is not known")
    if length > MAX_HEADER:
        raise FlameletError(".npy header is too long")
    try:
        header = ast.literal_eval(head[start : start + length].decode("latin1"))
        shape = header["shape"]
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise FlameletError("its .npy header is not a plain description of an array") from None
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise FlameletError(f"unreadable .npy shape {shape!r}")
    return shape


def _csv_rows(path: Path) -> int:
    """Non-empty lines, less a header line (one whose fields are not all numbers)."""
    rows = 0
    header = False
    with path.open("rb") as fh:
        for i, line in enumerate(fh):
            text = line.strip()
            if not text:
                continue
            if i == 0:
                header = not all(_numeric(f) for f in text.split(b","))
            rows += 1
    return rows - 1 if header else rows


def _numeric(field: bytes) -> bool:
    try:
        float(field.strip().strip(b'"'))
    except ValueError:
        return False
    return True
