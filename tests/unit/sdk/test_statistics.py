"""Federated statistics equal the pooled statistics; small sites and small bins are withheld."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flame
from flame.datasets import load_shard
from flame.errors import QuorumLost
from flame.jobdir import load_job_dir
from flame.statistics import (
    bin_edges,
    combine,
    histograms,
    local_moments,
    quantile_from_histogram,
)

JOB = Path(__file__).resolve().parents[3] / "examples" / "statistics"


def pooled(datasets: dict[str, str]) -> np.ndarray:
    shards = [load_shard(uri) for uri in datasets.values()]
    return np.concatenate([np.concatenate([s.x_train, s.x_test]) for s in shards]).astype(float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_combined_moments_and_histograms_equal_the_pooled_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(i, 1 + i, (int(rng.integers(1, 60)), 4)) for i in range(5)]
    parts[2][0, 1] = np.nan  # a missing value counts nowhere
    pool = np.concatenate(parts)
    total = combine([local_moments(p) for p in parts])
    np.testing.assert_array_equal(total.count, (~np.isnan(pool)).sum(0))
    np.testing.assert_allclose(total.sum, np.nansum(pool, 0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(total.mean, np.nanmean(pool, 0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.variance, np.nanvar(pool, 0, ddof=1), rtol=1e-10)
    np.testing.assert_array_equal(total.min, np.nanmin(pool, 0))
    np.testing.assert_array_equal(total.max, np.nanmax(pool, 0))
    edges = bin_edges(total.min, total.max, 1000)
    counts = sum(histograms(p, edges) for p in parts)
    for f in range(4):
        col = pool[:, f][~np.isnan(pool[:, f])]
        np.testing.assert_array_equal(counts[f], np.histogram(col, edges[f])[0])
        for q in (0.01, 0.25, 0.5, 0.9, 1.0):
            est = quantile_from_histogram(counts[f], edges[f], q)
            exact = np.quantile(col, q, method="inverted_cdf")
            assert abs(est - exact) <= edges[f][1] - edges[f][0], (q, est, exact)


def test_the_statistics_job_equals_the_pooled_statistics() -> None:
    jd = load_job_dir(JOB)
    result = flame.simulate(JOB)
    report = result.report
    pool = pooled(jd.datasets)
    hp = jd.spec.hyperparameters
    min_count = hp["min_count"]
    assert report["suppressed_sites"] == [] and len(report["sites"]) == 10
    assert len(report["features"]) == 64
    fine_edges = np.linspace(0, 1, hp["quantile_bins"] + 1)
    withheld = 0
    for f, name in enumerate(report["features"]):
        s, col = report["statistics"][name], pool[:, f]
        assert s["count"] == len(col)
        assert s["sum"] == pytest.approx(col.sum(), rel=1e-12, abs=1e-9)
        assert s["mean"] == pytest.approx(col.mean(), rel=1e-12, abs=1e-12)
        assert s["variance"] == pytest.approx(col.var(ddof=1), rel=1e-9, abs=1e-15)
        assert (s["min"], s["max"]) == (col.min(), col.max())
        hist = np.histogram(col, np.linspace(0, 1, hp["bins"] + 1))[0]
        for got, want in zip(s["histogram"]["counts"], hist, strict=True):
            if 0 < want < min_count:
                assert got is None
                withheld += 1
            else:
                assert got == want
        fine = np.histogram(col, fine_edges)[0]
        for q, value in s["quantiles"].items():
            assert value == quantile_from_histogram(fine, fine_edges, float(q))
            exact = np.quantile(col, float(q), method="inverted_cdf")
            assert abs(value - exact) <= s["quantile_precision"] + 1e-12
    assert withheld > 0  # digits has rare intensities at the image borders
    assert result.history[0]["stats/pixel-3-3/mean"] == report["statistics"]["pixel-3-3"]["mean"]


def test_a_site_under_the_minimum_count_is_left_out(tmp_path: Path) -> None:
    small = load_shard("digits://iid/10/9")
    path = tmp_path / "small.npz"
    np.savez(
        path,
        x_train=small.x_train[:4],
        y_train=small.y_train[:4],
        x_test=small.x_test[:3],
        y_test=small.y_test[:3],
    )
    result = flame.simulate(JOB, datasets={"digits-9": str(path)})
    report = result.report
    assert report["suppressed_sites"] == ["digits-9"]
    assert "digits-9" not in report["sites"]
    others = {f"digits-{i}": f"digits://iid/10/{i}" for i in range(9)}
    assert report["statistics"]["pixel-3-3"]["count"] == len(pooled(others))


def test_too_few_sites_over_the_minimum_count_fail_the_job_with_the_reason() -> None:
    overrides = {"hyperparameters": {"min_count": 1000, "bins": 4}}
    with pytest.raises(
        QuorumLost,
        match=r"0 site\(s\) contributed, min_trainers is 5 "
        r"\(suppressed under min_count=1000: digits-0, digits-1",
    ):
        flame.simulate(JOB, overrides=overrides)
