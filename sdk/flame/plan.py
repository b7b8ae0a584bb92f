"""Expand a design + job spec into one :class:`TaskConfig` per task, for ``flame.simulate``.

The expansion itself is :mod:`flame_spec.plan`, the same code the control plane's job builder
runs, so a job has the same task graph (ids, groups, peers) wherever it runs. This module only
adds what a local run knows: where each dataset is, the work dir and the checkpoint folders.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flame.config import DesignSchema, DiscoverySettings, JobSpec, MqttSettings, TaskConfig
from flame.datasets import count_samples
from flame.errors import ConfigError
from flame_spec import DatasetInfo, SpecError, plan_tasks, task_configs, task_id
from flame_spec.pki import Authority, with_certificate
from flame_spec.signing import SECRET_BYTES, JobKeys, with_keys

__all__ = ["expand", "task_id"]


def expand(
    design: DesignSchema,
    spec: JobSpec,
    datasets: Mapping[str, str],
    *,
    job_id: str,
    job_name: str,
    owner: str = "",
    design_name: str = "",
    workdir: str = ".",
    checkpoint_root: str | None = None,
    mqtt: MqttSettings | None = None,
    discovery: DiscoverySettings | None = None,
    tracking_uri: str | None = None,
) -> list[TaskConfig]:
    """Task configs for every task of the job; ``datasets`` maps dataset name -> local uri."""
    known = {
        name: DatasetInfo(id=name, name=name, num_samples=count_samples(uri))
        for name, uri in datasets.items()
    }
    try:
        tasks = plan_tasks(design, spec, job_id, known)
        configs = task_configs(
            design,
            spec,
            tasks,
            job_id=job_id,
            job_name=job_name,
            owner=owner,
            design_name=design_name,
            discovery=discovery,
            mqtt=mqtt,
            tracking_uri=tracking_uri,
            dataset_uris=datasets,
        )
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    backends = {m.backend for cfg in configs for m in cfg.channels.values()}
    if backends - {"inproc"}:
        secret = os.urandom(SECRET_BYTES)
        keys = JobKeys(secret, job_id)  # signed, as on the control plane
        configs = [with_keys(cfg, keys) for cfg in configs]
        if "grpc" in backends:  # and peers talk TLS, as on the control plane
            ca = Authority.derived(secret, "Flame data-plane CA")
            configs = [with_certificate(cfg, ca) for cfg in configs]
    for cfg in configs:
        if cfg.dataset is not None and cfg.dataset.name not in datasets:
            raise ConfigError(
                f"dataset {cfg.dataset.name!r} has no uri (known: {sorted(datasets)})"
            )
    return [
        cfg.localized(
            workdir=workdir,
            checkpoint_dir=f"{checkpoint_root}/{cfg.task_id}" if checkpoint_root else None,
        )
        for cfg in configs
    ]
