"""The digits data set: scikit-learn's table, read without importing scikit-learn, and a
stratified 80/20 split."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from flame.datasets import digits_split, stratified_split


def test_digits_are_scikit_learns_table() -> None:
    from sklearn.datasets import load_digits

    from flame.datasets import _digits_raw

    bundled = load_digits()
    pixels, labels = _digits_raw()
    assert np.array_equal(pixels, bundled.data) and np.array_equal(labels, bundled.target)


def test_the_pinned_split_is_scikit_learns() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bundled = load_digits()
    x = (bundled.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bundled.target, test_size=0.2, random_state=0, stratify=bundled.target
    )
    split = digits_split(0)
    assert np.array_equal(split.x_train, x_tr) and np.array_equal(split.y_train, y_tr)
    assert np.array_equal(split.x_test, x_te) and np.array_equal(split.y_test, y_te)


def test_a_digits_task_does_not_import_scikit_learn() -> None:
    # its import pulls SciPy, pandas and pyarrow: seconds of every digits task's start
    code = (
        "import sys\nfrom flame.datasets import load_shard\n"
        "s = load_shard('digits://iid/3/1')\nprint(len(s.x_train), 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["479", "False"]


def test_the_split_is_stratified_disjoint_and_seeded() -> None:
    y = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split(y, 0.2, seed=1)
    assert len(test) == 20 and len(train) == 80
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    assert np.bincount(y[test]).tolist() == [10, 6, 4]
    again, _ = stratified_split(y, 0.2, seed=1)
    other, _ = stratified_split(y, 0.2, seed=2)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_uneven_shares_round_to_the_largest_remainders() -> None:
    y = np.repeat(np.arange(3), [5, 5, 1])  # 11 samples, 3 test places: 1.36, 1.36, 0.27
    _, test = stratified_split(y, 0.25, seed=0)
    assert np.bincount(y[test], minlength=3).tolist() == [2, 1, 0]  # a tie: the first class


def test_the_digits_split_keeps_its_sizes() -> None:
    for seed in (0, 1):
        split = digits_split(seed)
        assert split.x_train.shape == (1437, 64) and split.x_test.shape == (360, 64)
        assert split.x_train.dtype == np.float32 and float(split.x_train.max()) == 1.0
