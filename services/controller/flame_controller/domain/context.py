"""What every domain function gets besides the caller: the store and a few collaborators."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flame_controller.store.base import Store


def _no_kick(job_id: str) -> None:
    del job_id


@dataclass(frozen=True)
class Ctx:
    """``kick(job_id)`` wakes the reconciler after a change it must act on (start, stop, a task
    status report); ``apiserver_url`` goes into task configs for control-plane discovery."""

    store: Store
    apiserver_url: str | None = None
    kick: Callable[[str], None] = _no_kick
