"""``make demo``: the whole platform on one machine, end to end.

Starts the embedded stack (controller on SQLite, notifier, apiserver, MLflow server, three
flamelets), registers one digits shard on each flamelet, submits the central FedAvg example,
watches it to completion, prints the final accuracy and the MLflow run and model URIs, and shuts
everything down. Usage: python -m flame.cli.demo [--keep] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from flame.cli.client import FlameClient
from flame.cli.code import zip_folder
from flame.cli.job import watch_job
from flame.cli.stack import Stack, StackError, _script
from flame.datasets import write_digits_shards

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "central"
NODES = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flame-demo", description=__doc__)
    parser.add_argument("--home", type=Path, default=Path(".flame") / "demo")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    console = Console()
    stack = Stack(args.home)
    stack.down()  # a previous demo that was interrupted
    shutil.rmtree(stack.home, ignore_errors=True)  # every demo starts from an empty store
    started = time.monotonic()
    console.print(f"[bold]starting the embedded stack[/] in {stack.home} with {NODES} flamelets")
    try:
        state = stack.up(nodes=NODES, timeout=180)
    except StackError as exc:
        console.print(f"[red]could not start the stack:[/] {exc}")
        return 1
    try:
        console.print(
            f"  up in {time.monotonic() - started:.1f}s: apiserver {state.api_url}, "
            f"MLflow {state.mlflow_url}"
        )
        shards = write_digits_shards(stack.home / "shards", n=NODES, seed=0)
        for (name, node_home), shard in zip(sorted(state.nodes.items()), shards, strict=True):
            dataset = f"digits-{name.rsplit('-', 1)[-1]}"
            subprocess.run(
                [_script("flamelet"), "dataset", "add", dataset, str(shard), "--home", node_home],
                check=True,
                capture_output=True,
                text=True,
            )
            console.print(
                f"  {name}: registered {dataset} ({shard.name}; the path stays on the node)"
            )
        with FlameClient(state.api_url, state.admin_token) as client:
            design = client.create_design(
                "digits-central", schema=json.loads((EXAMPLE / "design.json").read_text())
            )
            code = client.push_code(design.id, zip_folder(EXAMPLE))
            spec = json.loads((EXAMPLE / "job.json").read_text())
            spec.update(
                rounds=args.rounds,
                datasets={"default": [f"digits-{i}" for i in range(NODES)]},
                min_trainers=NODES,
            )
            job = client.create_job("digits-demo", design.id, spec, code_version=code.version)
            console.print(
                f"  job {job.id}: design {design.id}, code v{code.version} "
                f"(sha256 {code.sha256[:12]}…), {args.rounds} rounds of FedAvg"
            )
            client.start_job(job.id)
            final = watch_job(client, job.id, interval=0.5, console=console)
            metrics = client.get_metrics(job.id)
        accuracy = [m for m in metrics.metrics if m.key == "accuracy"]
        console.print(f"[bold]job {final.state}[/]{': ' + final.reason if final.reason else ''}")
        last = max(accuracy, key=lambda m: m.step) if accuracy else None
        if last is not None:
            console.print(f"final accuracy: [bold]{last.value:.4f}[/] (round {last.step})")
        console.print(f"MLflow run:   {metrics.run_uri or '-'}")
        console.print(
            f"MLflow model: {metrics.model_uri or '-'} (tracking server {state.mlflow_url})"
        )
        console.print(f"total {time.monotonic() - started:.1f}s")
        ok = final.state == "completed" and last is not None and last.value >= 0.90
        if final.state != "completed":
            console.print(f"logs: {stack.home / 'logs'}; `flamectl logs {job.id}` while it runs")
        return 0 if ok else 1
    finally:
        if args.keep:
            console.print(f"stack left running; stop it with: flamectl down --home {stack.home}")
        else:
            stack.down(state)
            console.print("stack stopped")


if __name__ == "__main__":
    sys.exit(main())
