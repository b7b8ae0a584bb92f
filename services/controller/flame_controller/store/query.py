"""A tiny filter language both backends translate: SQL for SQLite, a filter dict for MongoDB.

Fields are record field names; ``"id"`` is the document key (``_id`` in MongoDB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Eq:
    field: str
    value: Any


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class NotIn:
    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Gt:
    field: str
    value: Any


@dataclass(frozen=True)
class Lte:
    field: str
    value: Any


@dataclass(frozen=True)
class Contains:
    """The array ``field`` holds ``value``."""

    field: str
    value: Any


@dataclass(frozen=True)
class And:
    conds: tuple[Cond, ...]


@dataclass(frozen=True)
class Or:
    conds: tuple[Cond, ...]


Cond = Eq | In | NotIn | Gt | Lte | Contains | And | Or

MATCH_NOTHING: Cond = In("id", ())


def all_of(*conds: Cond | None) -> Cond | None:
    """AND the given conditions, skipping ``None``; ``None`` when nothing is left."""
    kept = tuple(c for c in conds if c is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else And(kept)


def visibility(
    owners: Sequence[str] | None,
    project_ids: Sequence[str] | None,
    *,
    project_field: str = "project_id",
    member: str | None = None,
) -> Cond | None:
    """``owner in owners OR <project_field> in project_ids [OR member in members]``.

    A ``None`` argument contributes nothing; all ``None`` = no filter (``None``).
    """
    alternatives: list[Cond] = []
    if owners is not None:
        alternatives.append(In("owner", tuple(owners)))
    if project_ids is not None:
        alternatives.append(In(project_field, tuple(project_ids)))
    if member is not None:
        alternatives.append(Contains("members", member))
    if not alternatives:
        return None
    return alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives))
