"""A user's login on the platform's tracking server (MLflow's basic-auth app): it reads the
runs and registered models of the jobs they own (see :mod:`flame_controller.tracking_accounts`).
Aliases of those models move through here, as the server's admin, after checking that the model
is one of the caller's jobs' and the version one of its own: the owner's MLflow login stays
read-only, so no one points a model at code the job did not log."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flame_service.auth import Caller
from flame_service.errors import FailedPrecondition, InvalidArgument, NotFound

from ..tracking_accounts import TrackingAccounts, names_for
from .access import require_user
from .context import Ctx

# MLflow's alias rules, and "best" kept for the job's own selection
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_RESERVED = re.compile(r"best|latest|v\d+", re.IGNORECASE)


@dataclass(frozen=True)
class TrackingLogin:
    uri: str
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"TrackingLogin(uri={self.uri!r}, username={self.username!r})"


@dataclass(frozen=True)
class ModelAlias:
    model: str
    alias: str
    version: str


def _accounts(ctx: Ctx) -> TrackingAccounts:
    accounts = ctx.tracking_accounts
    if accounts is None:
        raise FailedPrecondition(
            "this platform's tracking server has no accounts"
            + (f": {ctx.tracking_uri} is open to whoever reaches it" if ctx.tracking_uri else "")
        )
    return accounts


async def tracking_credentials(ctx: Ctx, caller: Caller) -> TrackingLogin:
    require_user(caller)
    accounts = _accounts(ctx)
    username, password = await accounts.user_credentials(caller.subject)
    return TrackingLogin(accounts.uri, username, password)


async def _owns_model(ctx: Ctx, owner: str, model: str) -> bool:
    """Is ``model`` (``<job name>-<job id[:12]>``) the registered model of a job ``owner`` owns?"""
    after: str | None = None
    while True:
        jobs, cursor = await ctx.store.list_jobs(owners=[owner], limit=500, after=after)
        if any(names_for(j.id, j.name, j.owner, None).model_name == model for j in jobs):
            return True
        if not cursor:
            return False
        after = cursor


async def set_model_alias(
    ctx: Ctx, caller: Caller, *, model: str, alias: str, version: str
) -> ModelAlias:
    require_user(caller)
    if not _ALIAS.fullmatch(alias) or _RESERVED.fullmatch(alias):
        raise InvalidArgument(
            f"alias {alias!r}: letters, digits, '_' and '-', at most 64, starting with a letter; "
            "not 'best' (the job's selection), 'latest' or v<number>"
        )
    if not version.isdigit():
        raise InvalidArgument(f"version {version!r} is not a number")
    accounts = _accounts(ctx)
    if not model or not await _owns_model(ctx, caller.subject, model):
        raise NotFound(f"model {model!r} not found")
    if not await accounts.set_alias(model, alias, version):
        raise NotFound(f"model {model!r} has no version {version}")
    return ModelAlias(model, alias, version)
