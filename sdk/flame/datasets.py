"""Datasets for examples, tests and benchmarks.

* scikit-learn's bundled digits (8x8 images, 10 classes), split 80/20 with seed 0, then the
  training part cut into N shards, IID or label-skewed with Dirichlet(alpha); each shard also
  gets the matching part of the test split (IID: an even cut; Dirichlet: the same label
  proportions), written as ``.npz`` (``x_train, y_train, x_test, y_test``).
* FedProx's Synthetic(alpha, beta) (Li et al. 2020, their generator): per-device models and
  inputs drawn around device-specific means; alpha controls how much the local models differ,
  beta how much the local data differ; device sizes are power-law (lognormal(4, 2) + 50, no
  cap); 90/10 train/test per device. Synthetic-IID: one model and one input distribution for
  every device.

Dataset uris that :func:`load_shard` understands (so examples run anywhere without preparing
files): a path to an ``.npz`` file, ``digits://iid/<n>/<i>``,
``digits://dirichlet-<alpha>/<n>/<i>``, ``synthetic://<alpha>,<beta>/<n>/<i>`` and
``synthetic://iid/<n>/<i>`` (append ``@<seed>`` to the synthetic spec for another draw, e.g.
``synthetic://1,1@2/30/0``; the default seed is 0).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flame.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(initial=0), self.y_test.max(initial=0))) + 1


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1,797 images of 64 pixels valued 0..16, and their labels),
    read from its data file without importing scikit-learn: that import pulls SciPy, pandas
    and pyarrow, 1.5-5 s of every digits task's start on a busy node, for a 0.5 MB table."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise ConfigError("the digits data set comes with scikit-learn: pip install scikit-learn")
    table = np.loadtxt(Path(folders[0]) / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: ``ceil(test_fraction * n)`` test samples, each class's share as
    near its share of ``y`` as whole numbers allow (largest remainders), drawn at random."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    n_test = math.ceil(test_fraction * len(y))
    exact = counts * n_test / len(y)
    take = np.floor(exact).astype(np.int64)
    short = n_test - int(take.sum())
    take[np.argsort(take - exact, kind="stable")[:short]] += 1
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)]
    )
    train = np.setdiff1d(np.arange(len(y)), test)
    return rng.permutation(train), rng.permutation(test)


#: The split every Flame figure on digits was measured on: scikit-learn's
#: ``train_test_split(test_size=0.2, stratify=y, random_state=0)``, train then test indices in
#: its order, pinned so that neither importing scikit-learn nor a release of it changes it.
DIGITS_SPLIT_0 = Path(__file__).parent / "data" / "digits_split_0.npy"
DIGITS_TRAIN = 1437


@functools.lru_cache(maxsize=1)
def digits_split(seed: int = 0) -> Shard:
    """Digits, features scaled to [0, 1], 80/20 stratified train/test split (seed 0: the
    pinned split, :data:`DIGITS_SPLIT_0`; another seed: :func:`stratified_split`)."""
    x, y = _digits_full()
    if seed == 0:
        order = np.load(DIGITS_SPLIT_0, allow_pickle=False).astype(np.int64)
        train, test = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    else:
        train, test = stratified_split(y, 0.2, seed)
    return Shard(x[train], y[train], x[test], y[test])


def _iid_parts(n_items: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(p) for p in np.array_split(rng.permutation(n_items), n)]


def _dirichlet_parts(
    y_train: np.ndarray, y_test: np.ndarray, n: int, alpha: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    classes = np.unique(y_train)
    props = rng.dirichlet([alpha] * n, size=len(classes))  # class -> share per shard
    train: list[list[int]] = [[] for _ in range(n)]
    test: list[list[int]] = [[] for _ in range(n)]
    for c, share in zip(classes, props, strict=True):
        for labels, out in ((y_train, train), (y_test, test)):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                out[k].extend(part.tolist())
    # every shard keeps at least one training example so every trainer can train
    for k in range(n):
        if not train[k]:
            donor = max(range(n), key=lambda j: len(train[j]))
            train[k].append(train[donor].pop())
    return [np.sort(np.array(t, dtype=np.int64)) for t in train], [
        np.sort(np.array(t, dtype=np.int64)) for t in test
    ]


def split_digits(n: int, alpha: float | None = None, seed: int = 0) -> list[Shard]:
    """Digits cut into ``n`` shards, IID (``alpha=None``) or Dirichlet(``alpha``) over labels."""
    if n < 1:
        raise ConfigError("need at least one shard")
    full = digits_split(0)
    rng = np.random.default_rng(seed)
    if alpha is None:
        tr = _iid_parts(len(full.y_train), n, rng)
        te = _iid_parts(len(full.y_test), n, rng)
    else:
        if alpha <= 0:
            raise ConfigError("alpha must be > 0")
        tr, te = _dirichlet_parts(full.y_train, full.y_test, n, alpha, rng)
    return [
        Shard(full.x_train[a], full.y_train[a], full.x_test[b], full.y_test[b])
        for a, b in zip(tr, te, strict=True)
    ]


def synthetic(
    alpha: float,
    beta: float,
    n: int,
    *,
    seed: int = 0,
    dim: int = 60,
    classes: int = 10,
    iid: bool = False,
    train_share: float = 0.9,
) -> list[Shard]:
    """FedProx's Synthetic(alpha, beta) for ``n`` devices (``iid``: Synthetic-IID, alpha and
    beta unused). Device k has ``lognormal(4, 2) + 50`` samples, inputs
    ``x ~ N(v_k, diag(j^-1.2))`` with ``v_k ~ N(B_k, 1)``, ``B_k ~ N(0, beta)``, and labels
    ``argmax(x W_k + b_k)`` with ``W_k, b_k ~ N(u_k, 1)``, ``u_k ~ N(0, alpha)``; IID: ``v = 0``
    and one ``W, b ~ N(0, 1)`` for all."""
    if n < 1 or dim < 1 or classes < 2 or alpha < 0 or beta < 0 or not 0 < train_share < 1:
        raise ConfigError(
            f"synthetic({alpha}, {beta}, n={n}, dim={dim}, classes={classes}, "
            f"train_share={train_share}): out of range"
        )
    rng = np.random.default_rng(seed)
    sizes = rng.lognormal(4, 2, n).astype(int) + 50
    sigma = np.arange(1, dim + 1, dtype=np.float64) ** -1.2
    mean_w = rng.normal(0, alpha, n)
    mean_x = rng.normal(0, beta, n)
    w_iid = rng.normal(0, 1, (dim, classes))
    b_iid = rng.normal(0, 1, classes)
    shards: list[Shard] = []
    for k in range(n):
        if iid:
            v_k, w, b = np.zeros(dim), w_iid, b_iid
        else:
            v_k = rng.normal(mean_x[k], 1, dim)
            w = rng.normal(mean_w[k], 1, (dim, classes))
            b = rng.normal(mean_w[k], 1, classes)
        x = rng.normal(v_k, np.sqrt(sigma), (sizes[k], dim)).astype(np.float32)
        y = np.argmax(x.astype(np.float64) @ w + b, axis=1).astype(np.int64)
        cut = int(train_share * sizes[k])
        shards.append(Shard(x[:cut], y[:cut], x[cut:], y[cut:]))
    return shards


def write_shards(shards: list[Shard], out_dir: str | Path, prefix: str = "shard") -> list[Path]:
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in enumerate(shards):
        path = folder / f"{prefix}-{i}.npz"
        np.savez(path, x_train=s.x_train, y_train=s.y_train, x_test=s.x_test, y_test=s.y_test)
        paths.append(path)
    return paths


def write_digits_shards(
    out_dir: str | Path, n: int, alpha: float | None = None, seed: int = 0
) -> list[Path]:
    return write_shards(split_digits(n, alpha, seed), out_dir, prefix="digits")


@functools.lru_cache(maxsize=8)
def _generated(kind: str, spec: str, n: int) -> tuple[Shard, ...]:
    if kind == "digits":
        if spec == "iid":
            return tuple(split_digits(n))
        if spec.startswith("dirichlet-"):
            return tuple(split_digits(n, alpha=float(spec.split("-", 1)[1])))
    elif kind == "synthetic":
        params, _, seed_text = spec.partition("@")
        try:
            seed = int(seed_text) if seed_text else 0
            if params == "iid":
                return tuple(synthetic(0.0, 0.0, n, seed=seed, iid=True))
            a, b = (float(v) for v in params.split(","))
        except ValueError:
            raise ConfigError(
                f"synthetic://{spec}: expected <alpha>,<beta> or iid, then optionally @<seed>"
            ) from None
        return tuple(synthetic(a, b, n, seed=seed))
    raise ConfigError(f"unknown generated dataset {kind}://{spec}")


def is_generated(uri: str) -> bool:
    """A ``<kind>://...`` uri that :func:`load_shard` makes rather than reads (``file://`` is
    a path)."""
    return "://" in uri and not uri.startswith("file://")


def load_shard(uri: str) -> Shard:
    """Load a shard from an ``.npz`` path or a generated-dataset uri (see module docstring)."""
    if is_generated(uri):
        kind, rest = uri.split("://", 1)
        try:
            spec, n_text, i_text = rest.split("/")
            n, i = int(n_text), int(i_text)
        except ValueError as exc:
            raise ConfigError(f"dataset uri {uri!r} is not <kind>://<spec>/<n>/<i>") from exc
        if not 0 <= i < n:
            raise ConfigError(f"dataset uri {uri!r}: index out of range")
        return _generated(kind, spec, n)[i]
    path = Path(uri.removeprefix("file://"))
    try:
        with np.load(path, allow_pickle=False) as data:
            return Shard(data["x_train"], data["y_train"], data["x_test"], data["y_test"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot load dataset {uri}: {exc}") from exc


def count_samples(uri: str) -> int:
    """Training samples of a shard that :func:`load_shard` can read (0 when it cannot say):
    what a local run registers for the dataset, as a node does on the control plane, so an
    update that claims more is refused here as it would be there."""
    try:
        if is_generated(uri):
            return len(load_shard(uri).y_train)
        with np.load(Path(uri.removeprefix("file://")), allow_pickle=False) as data:
            return int(data["y_train"].shape[0])
    except (ConfigError, OSError, KeyError, ValueError, IndexError):
        return 0


# -- vertical (column-split) data ------------------------------------------------------------------

#: The parts of the column-split digits: the left four pixel columns of the 8x8 image, the right
#: four, and the labels.
VERTICAL_PARTS = ("left", "right", "labels")


@dataclass(frozen=True)
class VerticalPart:
    """One party's part of a vertically split data set: sample ids, its columns (``x``) or
    the labels (``y``)."""

    ids: np.ndarray
    x: np.ndarray | None = None
    y: np.ndarray | None = None


def digits_ids() -> np.ndarray:
    """The sample id of every digits image (its position in scikit-learn's data set)."""
    n = len(_digits_full()[1])
    return np.array([f"digit-{i:04d}" for i in range(n)])


@functools.lru_cache(maxsize=1)
def _digits_full() -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = _digits_raw()
    return (pixels / 16.0).astype(np.float32), labels


def vertical_digits(part: str, keep: float = 0.85, seed: int = 0) -> VerticalPart:
    """Digits split column-wise: ``part`` is ``left`` (pixel columns 0-3 of each row, 32
    features), ``right`` (columns 4-7) or ``labels``. Each part keeps its own random ``keep``
    share of the samples, in its own random row order, so the parts' ids only partly overlap
    (about ``keep ** 3`` of the samples are in all three)."""
    if part not in VERTICAL_PARTS:
        raise ConfigError(f"unknown part {part!r}; choose one of {', '.join(VERTICAL_PARTS)}")
    if not 0 < keep <= 1:
        raise ConfigError("keep must be in (0, 1]")
    x, y = _digits_full()
    ids = digits_ids()
    rng = np.random.default_rng([seed, VERTICAL_PARTS.index(part)])
    chosen = rng.permutation(np.flatnonzero(rng.random(len(y)) < keep))
    left = np.array([c for c in range(64) if c % 8 < 4])
    if part == "labels":
        return VerticalPart(ids[chosen], y=y[chosen])
    cols = left if part == "left" else np.setdiff1d(np.arange(64), left)
    return VerticalPart(ids[chosen], x=x[chosen][:, cols])


def write_vertical_digits(out_dir: str | Path, keep: float = 0.85, seed: int = 0) -> list[Path]:
    """The three parts as ``digits-<part>.npz`` (``ids`` and ``x`` or ``y``)."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in VERTICAL_PARTS:
        p = vertical_digits(part, keep, seed)
        arrays = {"ids": p.ids, **({"x": p.x} if p.x is not None else {"y": p.y})}
        path = folder / f"digits-{part}.npz"
        np.savez(path, **arrays)  # type: ignore[arg-type]
        paths.append(path)
    return paths


def load_vertical(uri: str) -> VerticalPart:
    """A party's part from an ``.npz`` file (``ids`` and ``x`` and/or ``y``) or from
    ``digits-vertical://<part>/<keep>/<seed>`` (see :func:`vertical_digits`)."""
    if uri.startswith("digits-vertical://"):
        try:
            part, keep, seed = uri.removeprefix("digits-vertical://").split("/")
            return vertical_digits(part, float(keep), int(seed))
        except ValueError as exc:
            raise ConfigError(
                f"dataset uri {uri!r} is not digits-vertical://<part>/<keep>/<seed>"
            ) from exc
    path = Path(uri.removeprefix("file://"))
    try:
        with np.load(path, allow_pickle=False) as data:
            return VerticalPart(
                ids=data["ids"],
                x=data.get("x"),
                y=data.get("y"),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot load dataset {uri}: {exc}") from exc
