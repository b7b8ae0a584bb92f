"""A job kind's result, read back from the job's metrics (what ``flamectl job get`` shows).

A cross-site evaluation logs ``xsite/<model>/<site>/<metric>``; a statistics job logs
``stats/<feature>/<statistic>`` (:mod:`flame.roles.cross_site`, :mod:`flame.roles.statistics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flame.cli.resources import Metric

STAT_COLUMNS = ("count", "mean", "std", "min", "max")


@dataclass(frozen=True)
class ResultTable:
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]


def _number(value: float) -> str:
    return f"{value:.4g}"


def cross_site_table(metrics: Sequence[Metric], metric: str = "accuracy") -> ResultTable | None:
    """Rows: the model evaluated (``global`` first); columns: the site whose data scored it."""
    cells: dict[str, dict[str, float]] = {}
    for m in metrics:
        if not m.key.startswith("xsite/"):
            continue
        head, _, name = m.key.removeprefix("xsite/").rpartition("/")
        model, _, site = head.partition("/")
        if name == metric and model and site:
            cells.setdefault(model, {})[site] = m.value
    if not cells:
        return None
    sites = sorted({s for row in cells.values() for s in row})
    models = sorted(cells, key=lambda k: (k != "global", k))
    rows = [
        {"model": model, **{s: _number(cells[model][s]) for s in sites if s in cells[model]}}
        for model in models
    ]
    title = f"cross-site evaluation: {metric} of each model (row) on each site's data (column)"
    return ResultTable(title, ["model", *sites], rows)


def statistics_table(metrics: Sequence[Metric]) -> ResultTable | None:
    """One row per feature: count, mean, std, min, max and the quantiles."""
    values: dict[str, dict[str, float]] = {}
    for m in metrics:
        if m.key.startswith("stats/"):
            feature, _, stat = m.key.removeprefix("stats/").rpartition("/")
            values.setdefault(feature, {})[stat] = m.value
    if not values:
        return None
    quantiles = sorted({s for v in values.values() for s in v if s.startswith("q")})
    columns = ["feature", *STAT_COLUMNS, *quantiles]
    rows = [
        {"feature": f, **{c: _number(v[c]) for c in (*STAT_COLUMNS, *quantiles) if c in v}}
        for f, v in values.items()
    ]
    return ResultTable("federated statistics", columns, rows)


def result_tables(metrics: Sequence[Metric], spec: dict[str, Any]) -> list[ResultTable]:
    tracking = spec.get("tracking") if isinstance(spec.get("tracking"), dict) else {}
    metric = str((tracking or {}).get("selection_metric", "accuracy"))
    tables = [cross_site_table(metrics, metric), statistics_table(metrics)]
    return [t for t in tables if t is not None]
