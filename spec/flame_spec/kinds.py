"""The hyperparameters each job kind reads, checked at the door (``JobSpec`` calls
:func:`check_kind_parameters`), so a job that would fail on them is refused at create.

============================  ==============================================================
kind                          hyperparameters (all optional)
============================  ==============================================================
``vertical``                  ``feature_widths`` (dataset name -> column count, each >= 1),
                              ``min_samples`` (>= 1), ``test_fraction`` (0 <= f < 1),
                              ``classes`` (>= 2)
``statistics``                ``bins`` (1 … 10,000), ``quantile_bins`` (1 … 100,000),
                              ``quantiles`` (≤ 100 numbers in [0, 1]), ``range`` ([lo, hi],
                              lo < hi), ``min_count`` (0 … 10**9)
``cross-site-evaluation``     ``min_samples`` (>= 1)
============================  ==============================================================
"""

from __future__ import annotations

from typing import Any

from flame_spec.errors import FieldProblem


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(hp: dict[str, Any], key: str, low: int, high: int) -> None:
    if key in hp and not (_is_int(hp[key]) and low <= hp[key] <= high):
        raise FieldProblem(key, f"must be an integer from {low} to {high}, not {hp[key]!r}")


def _vertical(hp: dict[str, Any]) -> None:
    _int(hp, "min_samples", 1, 10**12)
    _int(hp, "classes", 2, 1_000_000)
    if "test_fraction" in hp:
        f = hp["test_fraction"]
        if not (_is_number(f) and 0 <= f < 1):
            raise FieldProblem("test_fraction", f"must be a number in [0, 1), not {f!r}")
    if "feature_widths" in hp:
        widths = hp["feature_widths"]
        if not isinstance(widths, dict):
            raise FieldProblem("feature_widths", "must map dataset names to column counts")
        for name, width in widths.items():
            if not (_is_int(width) and 1 <= width <= 10**7):
                raise FieldProblem(
                    f"feature_widths.{name}", f"must be a column count >= 1, not {width!r}"
                )


def _statistics(hp: dict[str, Any]) -> None:
    _int(hp, "bins", 1, 10_000)
    _int(hp, "quantile_bins", 1, 100_000)
    _int(hp, "min_count", 0, 10**9)
    if "quantiles" in hp:
        qs = hp["quantiles"]
        if not (
            isinstance(qs, list)
            and len(qs) <= 100
            and all(_is_number(q) and 0 <= q <= 1 for q in qs)
        ):
            raise FieldProblem("quantiles", "must be a list of at most 100 numbers in [0, 1]")
    if "range" in hp:
        r = hp["range"]
        if not (isinstance(r, list) and len(r) == 2 and all(map(_is_number, r)) and r[0] < r[1]):
            raise FieldProblem("range", f"must be [lo, hi] with lo < hi, not {r!r}")


def _cross_site(hp: dict[str, Any]) -> None:
    _int(hp, "min_samples", 1, 10**12)


_CHECKS = {"vertical": _vertical, "statistics": _statistics, "cross-site-evaluation": _cross_site}


def check_kind_parameters(kind: str, hyperparameters: dict[str, Any]) -> None:
    """Raise :class:`FieldProblem` (path ``hyperparameters.<key>``) for a hyperparameter the
    job's kind reads and would refuse."""
    check = _CHECKS.get(kind)
    if check is None:
        return
    try:
        check(hyperparameters)
    except FieldProblem as exc:
        raise FieldProblem(f"hyperparameters.{exc.path}", exc.reason) from None
