"""``flamectl node``: nodes (silos / devices) and their enrolment tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.common import group, parse_labels, session
from flame.cli.output import Format, OutputOpt, plain, render
from flame.cli.resources import NodeHealth

app = group("Nodes: create one, then run `flamelet login --token <enrolment token>` on it.")
COLUMNS = ("id", "name", "presence", "enrolled", "revoked", "labels", "last_seen")
LabelOpt = Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE, repeatable")]


@app.command("create")
def create(
    name: str,
    project: Annotated[str, typer.Option(help="share with this project")] = "",
    label: LabelOpt = None,
    output: OutputOpt = Format.table,
) -> None:
    """Create a node; prints its one-time enrolment token."""
    with session() as client:
        created = client.create_node(name, project, parse_labels(label))
    if output == Format.table:
        render(created.node, output)
        typer.echo(f"enrolment token (shown once): {created.enrolment_token}")
    else:
        render(created, output)


@app.command("list")
def list_(
    project: Annotated[str, typer.Option(help="only this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """List nodes."""
    with session() as client:
        render(client.list_nodes(project), output, COLUMNS)


@app.command("get")
def get(node_id: str, output: OutputOpt = Format.table) -> None:
    """Show one node and its latest health sample."""
    with session() as client:
        node = client.get_node(node_id)
        latest = client.node_health(node_id, limit=1)
    health = latest[-1] if latest else None
    if output != Format.table:
        render({**plain(node), "health": plain(health)}, output)
        return
    render(node, output)
    if health is None:
        typer.echo("health: no sample reported yet")
    else:
        at = health.at.strftime("%Y-%m-%d %H:%M:%S") if health.at else "-"
        render(health_rows(health), output, title=f"health at {at}")


def health_rows(h: NodeHealth) -> dict[str, str]:
    """A health sample as a person reads it."""
    rows = {
        "cpu": f"{h.cpu_percent:.1f} % of {h.cpu_count} CPUs (load {h.load1:.2f})",
        "memory": f"{_bytes(h.memory_used_bytes)} of {_bytes(h.memory_total_bytes)}",
        "disk": f"{_bytes(h.disk_used_bytes)} of {_bytes(h.disk_total_bytes)}",
        "network": f"sent {_bytes(h.net_sent_bytes)}, received {_bytes(h.net_recv_bytes)}",
    }
    for gpu in h.gpus:
        rows[f"gpu {gpu.index}"] = (
            f"{gpu.name} {gpu.utilization_percent:.0f} %, "
            f"{_bytes(gpu.memory_used_bytes)} of {_bytes(gpu.memory_total_bytes)}"
        )
    return rows


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@app.command("update")
def update(
    node_id: str,
    label: LabelOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace all labels")] = False,
    output: OutputOpt = Format.table,
) -> None:
    """Set (or replace) a node's labels."""
    with session() as client:
        render(client.update_node(node_id, parse_labels(label), replace), output)


@app.command("delete")
def delete(node_id: str) -> None:
    """Delete a node."""
    with session() as client:
        client.delete_node(node_id)
    typer.echo(f"deleted node {node_id}")


@app.command("revoke")
def revoke(node_id: str, output: OutputOpt = Format.table) -> None:
    """Revoke a node's credential (it must enrol again)."""
    with session() as client:
        render(client.revoke_node(node_id), output)
