"""A task's config as the task receives it: with the data-plane key of that task and the public
keys of its peers, derived from the control plane's secret (see :mod:`flame_spec.signing`), and
a certificate for TLS between peers with the CAs the task trusts (:mod:`flame_spec.pki`), and
for an aggregator the password of the job's tracking account
(:mod:`flame_controller.tracking_accounts`).
The store keeps configs without keys; they are added on the way out, to the deployer or to the
node that runs the task."""

from __future__ import annotations

from typing import Any

from flame_spec import TaskConfig, dump
from flame_spec.pki import with_certificate
from flame_spec.signing import JobKeys, with_keys
from flame_spec.task import TlsSettings

from .context import Ctx


def keyed(ctx: Ctx, config: TaskConfig) -> TaskConfig:
    if ctx.data_plane_secret is None:
        return config
    config = with_keys(config, JobKeys(ctx.data_plane_secret, config.job_id))
    if ctx.data_plane_tls and ctx.data_plane_ca is not None:
        config = with_certificate(config, ctx.data_plane_ca, ctx.trusted_ca)
    elif ctx.trusted_ca is not None:
        config = config.model_copy(update={"tls": TlsSettings(ca_pem=ctx.trusted_ca.decode())})
    account = config.tracking.username
    # only roles that own no data (the aggregators a deployer runs) log to the tracking server;
    # trainers never get the job's password
    if account and ctx.tracking_accounts is not None and config.dataset is None:
        password = ctx.tracking_accounts.password(account)
        tracking = config.tracking.model_copy(update={"password": password})
        config = config.model_copy(update={"tracking": tracking})
    return config


def keyed_json(ctx: Ctx, stored: dict[str, Any]) -> dict[str, Any]:
    """:func:`keyed` for a stored config (a JSON object)."""
    out: dict[str, Any] = dump(keyed(ctx, TaskConfig.model_validate(stored, strict=False)))
    return out
