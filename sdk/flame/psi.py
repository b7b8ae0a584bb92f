"""Private set intersection by commutative blinding in a prime-order group (ECDH-PSI).

The group is NIST P-256 (prime order ``n``, cofactor 1) through the ``cryptography`` package
(OpenSSL). A sample id is first written canonically (:func:`canonical_id`: UTF-8 text; an
integer as its decimal text), then hashed to the group by hash-and-increment: SHA-256 over a
domain tag, the id's length, the id and a counter, read as an x-coordinate, until it is one of
a curve point (about two tries per id). Nobody knows the discrete logarithm of such a point,
which is what makes the blinding one-way (hashing to a scalar times the generator would not be).

Each party draws a secret scalar ``k`` in ``[1, n - 1]`` for one job (:class:`BlindingKey`) and
only ever sends *blinded* values: the x-coordinate of ``k * H(id)``, or of ``k * P`` for a value
``P`` another party sent. Only x-coordinates travel: ``x(a * (b * P)) == x(b * (a * P))`` whatever
the sign of ``P``'s y-coordinate, so blinding commutes, and a value blinded by every party's
key is the same for the same id whoever blinded first. A received value is loaded as a point
(OpenSSL checks it is on the curve) before it is blinded again; one that is not is refused.

What the exchange in :mod:`flame.roles.intersection` reveals is documented there. The hashing
is variable-time (the number of tries depends on the id): that is observable only on the
party's own machine, never on the wire.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from flame.errors import ConfigError, RejectedUpdate

CURVE = ec.SECP256R1()
#: The order of P-256's group (prime; the curve's cofactor is 1).
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_FIELD = 2**256 - 2**224 + 2**192 + 2**96 - 1
POINT_BYTES = 32
DOMAIN = b"flame-psi-v1:P-256:SHA-256:hash-and-increment"
MAX_ID_BYTES = 1024


def canonical_id(value: object) -> bytes:
    """The bytes an id is hashed and sorted by: UTF-8 text; an integer as its decimal text
    (so ``12`` and ``"12"`` are the same id at every party)."""
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, bool):
        raise ConfigError(f"sample id {value!r} is a boolean, not an id")
    elif isinstance(value, int | np.integer):
        raw = str(int(value)).encode()
    elif isinstance(value, str | np.str_):
        raw = str(value).encode("utf-8")
    else:
        raise ConfigError(f"sample id {value!r} is neither text nor an integer")
    if not raw or len(raw) > MAX_ID_BYTES:
        raise ConfigError(f"sample ids are 1-{MAX_ID_BYTES} bytes long, not {len(raw)}")
    return raw


def canonical_ids(values: Iterable[object]) -> list[bytes]:
    """Every id canonically, refusing duplicates (an id names one sample)."""
    out = [canonical_id(v) for v in values]
    if len(set(out)) != len(out):
        seen: set[bytes] = set()
        dup = next(v for v in out if v in seen or seen.add(v))  # type: ignore[func-returns-value]
        raise ConfigError(f"sample id {dup.decode(errors='replace')!r} occurs more than once")
    return out


def hash_to_group(raw_id: bytes) -> ec.EllipticCurvePublicKey:
    """``H(id)``: a point of P-256 whose discrete logarithm nobody knows."""
    prefix = DOMAIN + len(raw_id).to_bytes(4, "big") + raw_id
    for counter in range(256):
        x = hashlib.sha256(prefix + counter.to_bytes(1, "big")).digest()
        if int.from_bytes(x, "big") >= _FIELD:
            continue
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, b"\x02" + x)
        except ValueError:  # not the x-coordinate of a curve point: try the next counter
            continue
    raise ConfigError("hash_to_group: no point after 256 tries")  # probability 2**-256


def _point(x: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, b"\x02" + x)


class BlindingKey:
    """One party's secret scalar for one job; never leaves the party."""

    def __init__(self, scalar: int | None = None) -> None:
        k = scalar if scalar is not None else 1 + secrets.randbelow(ORDER - 1)
        if not 0 < k < ORDER:
            raise ConfigError("a blinding scalar is in [1, n - 1]")
        self._key = ec.derive_private_key(k, CURVE)

    def __repr__(self) -> str:  # never print the secret
        return "BlindingKey(<secret>)"

    def _mul(self, point: ec.EllipticCurvePublicKey) -> bytes:
        return self._key.exchange(ec.ECDH(), point)

    def blind_ids(self, ids: Sequence[bytes]) -> np.ndarray:
        """``x(k * H(id))`` for every id, as an ``(n, 32)`` uint8 array in the same order."""
        out = np.empty((len(ids), POINT_BYTES), dtype=np.uint8)
        for i, raw in enumerate(ids):
            out[i] = np.frombuffer(self._mul(hash_to_group(raw)), dtype=np.uint8)
        return out

    def reblind(self, points: np.ndarray, sender: str = "") -> np.ndarray:
        """``x(k * P)`` for every received x-coordinate, same order; :class:`RejectedUpdate`
        when a value is not one of a curve point."""
        check_points(points, sender)
        out = np.empty_like(points)
        for i, row in enumerate(points):
            try:
                point = _point(row.tobytes())
            except ValueError:
                raise RejectedUpdate(f"value {i} is not a point of the group", sender) from None
            out[i] = np.frombuffer(self._mul(point), dtype=np.uint8)
        return out


def check_points(points: np.ndarray, sender: str = "") -> None:
    if points.dtype != np.uint8 or points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise RejectedUpdate(
            f"blinded values must be an (n, {POINT_BYTES}) uint8 array, not "
            f"{points.dtype}{list(points.shape)}",
            sender,
        )


def rows(points: np.ndarray) -> list[bytes]:
    """Each blinded value as bytes (for set membership)."""
    return [bytes(r) for r in np.ascontiguousarray(points)]
