"""A user's login on the platform's tracking server (MLflow's basic-auth app): it reads the
runs and registered models of the jobs they own (see :mod:`flame_controller.tracking_accounts`)."""

from __future__ import annotations

from dataclasses import dataclass

from flame_service.auth import Caller
from flame_service.errors import FailedPrecondition

from .access import require_user
from .context import Ctx


@dataclass(frozen=True)
class TrackingLogin:
    uri: str
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"TrackingLogin(uri={self.uri!r}, username={self.username!r})"


async def tracking_credentials(ctx: Ctx, caller: Caller) -> TrackingLogin:
    require_user(caller)
    accounts = ctx.tracking_accounts
    if accounts is None:
        raise FailedPrecondition(
            "this platform's tracking server has no accounts"
            + (f": {ctx.tracking_uri} is open to whoever reaches it" if ctx.tracking_uri else "")
        )
    username, password = await accounts.user_credentials(caller.subject)
    return TrackingLogin(accounts.uri, username, password)
