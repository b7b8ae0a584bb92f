"""Shared pieces of the flamectl commands: the logged-in client, file and label parsing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from importlib import metadata
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from flame.cli.client import ApiError, FlameClient
from flame.cli.config import NotLoggedIn, load_login
from flame.cli.resources import Design, Job
from flame.errors import ConfigError, FlameError


class ExitCode(IntEnum):
    """What flamectl's exit status means (scripts can tell these apart)."""

    OK = 0
    ERROR = 1  # refused or invalid: the message says why (bad input, wrong state, ...)
    USAGE = 2  # unknown command or option, missing argument
    NOT_FOUND = 3  # the job, design, node... does not exist or is not yours (HTTP 404)
    AUTH = 4  # not logged in, token refused or expired, or not allowed (HTTP 401 / 403)
    NETWORK = 5  # the apiserver could not be reached, or answered 502 / 503 / 504
    JOB_FAILED = 6  # the job ended failed or terminated (`job watch`, `job rerun --watch`)


EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 error (refused or invalid), 2 usage, 3 not found, "
    "4 not logged in / not allowed, 5 server unreachable, 6 job failed."
)


def exit_code_for(exc: FlameError) -> ExitCode:
    if isinstance(exc, NotLoggedIn):
        return ExitCode.AUTH
    if not isinstance(exc, ApiError):
        return ExitCode.ERROR
    if exc.status == 0 or exc.status in (502, 503, 504):
        return ExitCode.NETWORK
    if exc.status == 404:
        return ExitCode.NOT_FOUND
    if exc.status in (401, 403):
        return ExitCode.AUTH
    return ExitCode.ERROR


class FlameGroup(TyperGroup):
    """Turns every :class:`FlameError` (API problems included) into ``error: …`` and the
    :class:`ExitCode` for it."""

    def invoke(self, ctx: Any) -> Any:  # a (vendored) click Context
        try:
            return super().invoke(ctx)
        except FlameError as exc:  # ApiError included: prints the server's problem detail
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exit_code_for(exc)) from exc


def version() -> str:
    """The installed flame-sdk's version."""
    try:
        return metadata.version("flame-sdk")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def group(help_text: str) -> typer.Typer:
    return typer.Typer(cls=FlameGroup, help=help_text, no_args_is_help=True)


@contextmanager
def session() -> Iterator[FlameClient]:
    login = load_login()
    with FlameClient(login.server, login.token, security=login.security()) as client:
        yield client


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return value


def parse_labels(pairs: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"label {pair!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def resolve_design(client: FlameClient, ref: str) -> Design:
    """A design by id, or by name when exactly one visible design has that name."""
    try:
        return client.get_design(ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
    matches = [d for d in client.list_designs() if d.name == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{len(matches)} designs are named {ref!r}: use the id")
    raise ApiError(404, "not_found", f"design {ref!r} not found")


def resolve_job(client: FlameClient, ref: str) -> Job:
    """A job by id, or by name when exactly one visible job has that name."""
    try:
        return client.get_job(ref)
    except ApiError as exc:
        if exc.status != 404:
            raise
    matches = [j for j in client.list_jobs() if j.name == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"{len(matches)} jobs are named {ref!r}: use the id")
    raise ApiError(404, "not_found", f"job {ref!r} not found")
