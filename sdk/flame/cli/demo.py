"""``make demo``: the whole platform on one machine, end to end.

Starts the embedded stack (controller on SQLite, notifier, apiserver, MLflow server, three
flamelets), registers one digits shard on each flamelet, submits the central FedAvg example,
watches it to completion and prints the final accuracy. Then, by default, it stops the stack;
with ``--keep`` (``make demo KEEP=1``) it keeps the stack and the MLflow UI up, prints their
addresses (only once they answer) and stops everything at Ctrl-C; ``--detach`` leaves it running
for ``flamectl down --home DIR``.

Usage: python -m flame.cli.demo [--keep | --detach] [--home DIR] [--rounds N]
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
from flame.cli.interrupt import wait_for_interrupt
from flame.cli.job import watch_job
from flame.cli.stack import Stack, StackError, StackState, _script
from flame.connect import PLAINTEXT, Security, sync_http_client
from flame.datasets import write_digits_shards
from flame.logs import configure as configure_logging

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "central"
NODES = 3


def alive(url: str, path: str, security: Security = PLAINTEXT) -> bool:
    """Does ``url`` answer ``path`` with 200 right now?"""
    try:
        with sync_http_client(url, security, timeout=3) as http:
            return http.get(path).status_code == 200
    except Exception:
        return False


def live_addresses(state: StackState, run_uri: str | None, model: str | None) -> list[str]:
    """The lines to show a user who will open them: only addresses that answer now."""
    lines = []
    if alive(state.api_url, "/readyz", state.security()):
        lines.append(f"apiserver:  {state.api_url}  (flamectl is logged in as admin)")
    if state.mlflow_url and alive(state.mlflow_url, "/health"):
        lines.append(f"MLflow UI:  {state.mlflow_url}")
        secret = Path(state.home) / "secrets" / "mlflow-admin.password"
        lines.append(f"  log in as flame-admin; the password is in {secret}")
        if run_uri and run_uri.startswith(state.mlflow_url):
            lines.append(f"the run:    {run_uri}")
        if model:
            name = model.removeprefix("models:/").split("@", 1)[0]
            lines.append(f"the model:  {state.mlflow_url}/#/models/{name}  ({model})")
            lines.append(f"serve it:   flamectl model serve {name}@best  (Ctrl-C stops it)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flame-demo", description=__doc__)
    parser.add_argument("--home", type=Path, default=Path(".flame") / "demo")
    parser.add_argument("--rounds", type=int, default=20)
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--keep", action="store_true", help="keep the stack and MLflow UI up until Ctrl-C"
    )
    how.add_argument("--detach", action="store_true", help="leave the stack running and return")
    args = parser.parse_args(argv)
    configure_logging()
    console = Console(soft_wrap=True)  # an address is never cut in two
    stack = Stack(args.home)
    stack.down()  # a previous demo that was interrupted or detached
    shutil.rmtree(stack.home, ignore_errors=True)  # every demo starts from an empty store
    started = time.monotonic()
    console.print(f"[bold]starting the embedded stack[/] in {stack.home} with {NODES} flamelets")
    try:
        state = stack.up(nodes=NODES, timeout=180, progress=lambda m: console.print(f"  {m}"))
    except StackError as exc:
        console.print(f"[red]could not start the stack:[/] {exc}")
        return 1
    ok = False
    try:
        shards = write_digits_shards(stack.home / "shards", n=NODES, seed=0)
        adds = []
        for (name, node_home), shard in zip(sorted(state.nodes.items()), shards, strict=True):
            dataset = f"digits-{name.rsplit('-', 1)[-1]}"
            argv = [_script("flamelet"), "dataset", "add", dataset, str(shard)]
            proc = subprocess.Popen(  # the registrations run side by side
                [*argv, "--home", node_home],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            adds.append((name, dataset, shard, proc))
        for name, dataset, shard, proc in adds:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                console.print(f"[red]{name}: cannot register {dataset}:[/] {out.strip()}")
                return 1
            console.print(f"  {name}: registered {dataset} ({shard.name}; the path stays there)")
        with FlameClient(state.api_url, state.admin_token, security=state.security()) as client:
            design = client.create_design(
                "digits-central", schema=json.loads((EXAMPLE / "design.json").read_text())
            )
            code = client.push_code(design.id, zip_folder(EXAMPLE))
            spec = json.loads((EXAMPLE / "job-3-nodes.json").read_text())
            spec["rounds"] = args.rounds
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
        console.print(f"total {time.monotonic() - started:.1f}s")
        ok = final.state == "completed" and last is not None and last.value >= 0.90
        if final.state != "completed":
            console.print(f"logs: {stack.home / 'logs'}")
        if args.keep or args.detach:
            from flame.cli.config import Login, save_login

            save_login(Login(server=state.api_url, token=state.admin_token))
            for line in live_addresses(state, metrics.run_uri, metrics.model_uri):
                console.print(f"  {line}")
        else:
            console.print(
                f"best model: {metrics.model_uri or '-'}; to look at it in the MLflow UI, "
                "run `make demo KEEP=1` (keeps the stack up until Ctrl-C)"
            )
        if args.keep:
            console.print("[bold]the stack stays up: press Ctrl-C to stop it[/]")
            wait_for_interrupt()
        return 0 if ok else 1
    finally:
        if args.detach:
            console.print(f"stack left running; stop it with: flamectl down --home {stack.home}")
        else:
            stack.down(state)
            console.print("stack stopped")


if __name__ == "__main__":
    sys.exit(main())
