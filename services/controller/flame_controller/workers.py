"""The background workers the controller runs by default: the reconciler with its deployer."""

from __future__ import annotations

from functools import partial

from .deployers.base import Deployer
from .deployers.local import LocalDeployer
from .domain.context import Ctx
from .domain.jobs import prepare_tracking
from .domain.tokens import TaskCredentials
from .jobs.decisions import RestartPolicy
from .jobs.notifier_client import GrpcNotifier
from .jobs.reconciler import Reconciler
from .settings import ControllerSettings


def make_deployer(settings: ControllerSettings) -> Deployer | None:
    if settings.deployer == "local":
        return LocalDeployer(settings.data_dir)
    if settings.deployer == "kubernetes":
        from .deployers.kubernetes import KubernetesDeployer  # imports the kubernetes client

        return KubernetesDeployer()
    return None


def reconciler_factory(ctx: Ctx, settings: ControllerSettings) -> Reconciler:
    """The reconciler over the controller's store, its deployer and the notifier; deployer-run
    tasks get per-job task credentials from the domain layer."""
    notifier = (
        GrpcNotifier(
            settings.notifier_address,
            security=settings.security(),
            service_token=settings.service_token(),
        )
        if settings.notifier_address
        else None
    )
    restarts = RestartPolicy(
        max_restarts=settings.task_max_restarts,
        backoff_initial=settings.task_restart_backoff_initial_seconds,
        backoff_max=settings.task_restart_backoff_max_seconds,
    )
    return Reconciler(
        ctx.store,
        make_deployer(settings),
        notifier,
        credentials=TaskCredentials(ctx),
        restarts=restarts,
        tracking=partial(prepare_tracking, ctx) if ctx.tracking_accounts is not None else None,
    )
