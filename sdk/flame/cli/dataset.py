"""``flamectl dataset``: dataset metadata (the data stays on its node)."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.common import group, session
from flame.cli.output import Format, OutputOpt, render

app = group("Datasets registered on nodes.")
COLUMNS = ("id", "name", "node_id", "realm", "format", "num_samples", "size_bytes", "description")


@app.command("create")
def create(
    name: str,
    node: Annotated[str, typer.Option("--node", help="id of the node that holds the data")],
    realm: Annotated[str, typer.Option(help="locality, e.g. eu/hospital-a")] = "",
    format: Annotated[str, typer.Option("--format", help="npz, csv, parquet, folder…")] = "",
    size: Annotated[int, typer.Option("--size", min=0, help="size in bytes")] = 0,
    samples: Annotated[
        int,
        typer.Option(
            "--samples", min=0, help="training samples: the most a trainer's update may claim"
        ),
    ] = 0,
    uri: Annotated[str, typer.Option(help="node-local path or URL")] = "",
    description: Annotated[str, typer.Option(help="free text")] = "",
    project: Annotated[str, typer.Option(help="share with this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """Register a dataset held by a node."""
    with session() as client:
        dataset = client.create_dataset(
            name,
            node,
            project_id=project,
            realm=realm,
            format=format,
            size_bytes=size,
            num_samples=samples,
            uri=uri,
            description=description,
        )
        render(dataset, output)


@app.command("list")
def list_(
    project: Annotated[str, typer.Option(help="only this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """List datasets."""
    with session() as client:
        render(client.list_datasets(project), output, COLUMNS)


@app.command("get")
def get(dataset_id: str, output: OutputOpt = Format.table) -> None:
    """Show one dataset."""
    with session() as client:
        render(client.get_dataset(dataset_id), output)


@app.command("update")
def update(
    dataset_id: str,
    description: Annotated[str | None, typer.Option(help="new description")] = None,
    realm: Annotated[str | None, typer.Option(help="new realm")] = None,
    output: OutputOpt = Format.table,
) -> None:
    """Change a dataset's description or realm."""
    with session() as client:
        render(client.update_dataset(dataset_id, description, realm), output)


@app.command("delete")
def delete(dataset_id: str) -> None:
    """Delete a dataset's registration."""
    with session() as client:
        client.delete_dataset(dataset_id)
    typer.echo(f"deleted dataset {dataset_id}")
