"""Rendering for every command: ``--output table|json|yaml``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="table, json or yaml", case_sensitive=False)
]


def plain(value: Any) -> Any:
    """JSON-compatible data for a model, a list of models or plain values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    text = str(value)
    return text if text else "-"


def render(data: Any, fmt: Format, columns: Sequence[str] = (), title: str | None = None) -> None:
    console = Console(soft_wrap=True)
    if fmt == Format.json:
        typer.echo(json.dumps(plain(data), indent=2, sort_keys=False))
        return
    if fmt == Format.yaml:
        typer.echo(yaml.safe_dump(plain(data), sort_keys=False).rstrip())
        return
    if isinstance(data, list):
        table = Table(*[c.upper() for c in columns], title=title, box=None, pad_edge=False)
        for item in data:
            row = item if isinstance(item, dict) else dict(item)
            table.add_row(*(_cell(row.get(c)) for c in columns))
        console.print(table)
        return
    row = data if isinstance(data, dict) else dict(data)
    keys = columns or [k for k in row if not isinstance(row[k], dict | list) or row[k]]
    table = Table(show_header=False, box=None, pad_edge=False, title=title)
    for key in keys:
        table.add_row(key, _cell(row.get(key)))
    console.print(table)
