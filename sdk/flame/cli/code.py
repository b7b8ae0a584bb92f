"""``flamectl code``: versioned code zips of a design."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from flame.cli.common import group, read_json, resolve_design, session
from flame.cli.output import Format, OutputOpt, render
from flame.errors import ConfigError

app = group("Code: push a folder or zip as the next version of a design.")
COLUMNS = ("version", "sha256", "size_bytes", "roles", "created_at")
SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"})
MAX_ZIP_BYTES = 64 * 1024 * 1024


def zip_folder(folder: Path) -> bytes:
    """A deterministic zip of the regular files under ``folder`` (no symlinks, no caches)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if any(part in SKIP_DIRS for part in rel.parts) or path.suffix == ".pyc":
                continue
            if path.is_symlink() or not path.is_file():
                continue
            info = zipfile.ZipInfo(rel.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def load_code(source: Path) -> bytes:
    if source.is_dir():
        data = zip_folder(source)
    elif zipfile.is_zipfile(source):
        data = source.read_bytes()
    else:
        raise ConfigError(f"{source} is neither a folder nor a zip file")
    if len(data) > MAX_ZIP_BYTES:
        raise ConfigError(f"code is {len(data)} bytes; the limit is {MAX_ZIP_BYTES}")
    return data


@app.command("build")
def build(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="the code folder")],
    design: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="the design (default FOLDER/design.json)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-O", help="the zip to write (default dist/NAME.zip)")
    ] = None,
) -> None:
    """Check a code folder (design, each role's main.py and entry class, job.json,
    datasets.json, each role's requirements.txt) without running it, and write the zip that
    `code push` would upload, for inspection."""
    from flame.cli.bundle import build as build_bundle

    schema = read_json(design) if design is not None else None
    report = build_bundle(folder, schema)
    target = out or Path("dist") / f"{folder.resolve().name}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(report.zip_bytes)
    for role in report.roles:
        needs = ", ".join(r.line.split(" --hash", 1)[0] for r in role.requirements) or "-"
        typer.echo(f"{role.role:<12} {role.entry:<24} {role.files:>3} files  needs: {needs}")
    typer.echo(
        f"wrote {target} ({report.files} files, {len(report.zip_bytes):,} bytes, "
        f"sha256 {report.sha256})"
    )


@app.command("push")
def push(
    design: str,
    source: Annotated[Path, typer.Argument(exists=True, help="a folder (zipped for you) or a zip")],
    check: Annotated[
        bool, typer.Option(help="check a folder against the design first (as `code build`)")
    ] = True,
    output: OutputOpt = Format.table,
) -> None:
    """Upload code as the design's next version (the bytes sent are shown as they go)."""
    data = load_code(source)
    files = len(zipfile.ZipFile(io.BytesIO(data)).infolist())
    typer.echo(f"{source}: {files} files, {len(data):,} bytes zipped", err=True)
    with session() as client:
        found = resolve_design(client, design)
        if check and source.is_dir():
            from flame.cli.bundle import check_folder

            check_folder(source, found.schema_)
        with Progress(
            TextColumn("uploading"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=False,
        ) as progress:
            bar = progress.add_task("upload", total=len(data))
            pushed = client.push_code(
                found.id, data, on_sent=lambda n: progress.update(bar, completed=n)
            )
        render(pushed, output)


@app.command("list")
def list_(design: str, output: OutputOpt = Format.table) -> None:
    """List a design's code versions."""
    with session() as client:
        found = resolve_design(client, design)
        render(client.list_code(found.id), output, COLUMNS)


@app.command("get")
def get(
    design: str,
    version: Annotated[int, typer.Argument(min=0, help="0 = latest")] = 0,
    output: OutputOpt = Format.table,
) -> None:
    """Show one code version."""
    with session() as client:
        found = resolve_design(client, design)
        render(client.get_code(found.id, version), output)


@app.command("pull")
def pull(
    design: str,
    version: Annotated[int, typer.Argument(min=0, help="0 = latest")] = 0,
    out: Annotated[Path, typer.Option("--out", "-O", help="where to write the zip")] = Path(
        "code.zip"
    ),
) -> None:
    """Download a code version as a zip."""
    with session() as client:
        found = resolve_design(client, design)
        data = client.fetch_code(found.id, version)
    out.write_bytes(data)
    typer.echo(f"wrote {len(data)} bytes to {out}")


@app.command("delete")
def delete(design: str, version: Annotated[int, typer.Argument(min=1)]) -> None:
    """Delete one code version."""
    with session() as client:
        found = resolve_design(client, design)
        client.delete_code(found.id, version)
    typer.echo(f"deleted code version {version} of design {found.id}")
