"""What a task attempt's Secret holds: its localized config and the files of its verified code
zip, unpacked with the archive checks and refused with a clear reason when they cannot fit."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flame_service.archive import inspect_zip, safe_extract
from flame_service.errors import InvalidArgument, TooLarge

from . import kube_manifests as m
from .base import Launch


def task_bundle(launch: Launch, *, bind_host: str) -> m.Bundle:
    """The Secret's content: the localized config and every code file of the zip, unpacked
    with the archive checks; refused with a clear reason when it cannot fit a Secret."""
    limit = m.MAX_SECRET_BYTES
    try:
        inspect_zip(launch.code, max_uncompressed=limit)
        with tempfile.TemporaryDirectory(prefix="flame-bundle-") as tmp:
            root = Path(tmp)
            safe_extract(launch.code, root, max_uncompressed=limit)
            files = [
                (p.relative_to(root).as_posix(), p.read_bytes())
                for p in sorted(root.rglob("*"))
                if p.is_file()
            ]
    except TooLarge as exc:
        raise TooLarge(
            f"the code of task {launch.task_id} does not fit the {limit} bytes of a "
            f"Kubernetes Secret ({exc.message}); keep datasets and model weights out of "
            "the code zip"
        ) from exc
    config = launch.config.localized(
        workdir=".", checkpoint_dir="checkpoints", token=launch.credential
    )
    discovery = config.discovery.model_copy(update={"bind_host": bind_host})
    config = config.model_copy(update={"discovery": discovery})
    try:
        content = m.bundle(config.to_json(), files)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc
    if content.size > limit:
        raise TooLarge(
            f"the code and config of task {launch.task_id} are {content.size} bytes, more "
            f"than the {limit} bytes of a Kubernetes Secret; keep datasets and model "
            "weights out of the code zip"
        )
    return content
