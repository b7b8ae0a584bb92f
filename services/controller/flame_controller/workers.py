"""The background workers the controller runs by default: the reconciler with its deployer."""

from __future__ import annotations

from .deployers.base import Deployer
from .deployers.local import LocalDeployer
from .domain.context import Ctx
from .domain.tokens import issue_task_credential
from .jobs.reconciler import Reconciler
from .settings import ControllerSettings


def make_deployer(settings: ControllerSettings) -> Deployer | None:
    if settings.deployer == "local":
        return LocalDeployer(settings.data_dir)
    return None


def reconciler_factory(ctx: Ctx, settings: ControllerSettings) -> Reconciler:
    """The reconciler over the controller's store, its deployer and the notifier; deployer-run
    tasks get per-job task credentials from the domain layer."""

    async def issue(job_id: str) -> str:
        return await issue_task_credential(ctx, job_id)

    return Reconciler(
        ctx.store,
        make_deployer(settings),
        settings.notifier_address or None,
        issue_credential=issue,
    )
