"""Find the role class a job's code defines and build the role object for one task."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from flame.channels.factory import ChannelSet
from flame.config import TaskConfig
from flame.errors import ConfigError
from flame.roles.base import Clock, Role
from flame.tracking import Tracker

_BASES: set[str] = {"Role", "Trainer", "Aggregator", "Coordinator", "AsyncAggregator"}


USER_MODULE_PREFIX = "flame_user_"  # the modules load_role_class makes of users' files


def load_role_class(main_py: str | Path) -> type[Role]:
    """Import ``main_py`` and return the single :class:`Role` subclass defined in it."""
    path = Path(main_py).resolve()
    if not path.is_file():
        raise ConfigError(f"role code {path} does not exist")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"{USER_MODULE_PREFIX}{path.parent.name.replace('-', '_')}_{digest}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Role)
        and obj.__module__ == module.__name__
        and obj.__name__ not in _BASES
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ConfigError(
            f"{path} must define exactly one Trainer/Aggregator/Coordinator subclass "
            f"(found: {names})"
        )
    return found[0]


def role_class_for(cls: type[Role], config: TaskConfig) -> type[Role]:
    """The class to instantiate: the user's class, switched to its asynchronous variant when
    the job aggregates asynchronously (FedBuff) and the task is the top aggregator, or to its
    cross-site variant in a cross-site evaluation. A statistics or vertical job's roles must
    be of that kind's classes (a plain Trainer there would wait for a model forever)."""
    from flame.roles.aggregator import Aggregator
    from flame.roles.async_aggregator import AsyncAggregator, is_async_job
    from flame.roles.cross_site import CrossSiteEvaluator, CrossSiteTrainer
    from flame.roles.statistics import StatisticsServer, StatisticsSite
    from flame.roles.topology import topology_of
    from flame.roles.trainer import Trainer
    from flame.roles.vertical import FeatureParty, LabelParty

    kind = config.job.kind
    families: dict[str, tuple[type[Role], ...]] = {
        "statistics": (StatisticsSite, StatisticsServer),
        "vertical": (FeatureParty, LabelParty),
    }
    if kind in families and not issubclass(cls, families[kind]):
        names = " or ".join(c.__name__ for c in families[kind])
        raise ConfigError(
            f"role {config.role!r}: a {kind} job's roles subclass {names}; {cls.__name__} does not"
        )
    if kind == "cross-site-evaluation":
        if issubclass(cls, Trainer) and not issubclass(cls, CrossSiteTrainer):
            return type(cls.__name__, (cls, CrossSiteTrainer), {"__module__": cls.__module__})
        if (
            issubclass(cls, Aggregator)
            and not issubclass(cls, CrossSiteEvaluator)
            and topology_of(config).is_top
        ):
            return type(cls.__name__, (cls, CrossSiteEvaluator), {"__module__": cls.__module__})
        return cls
    if (
        issubclass(cls, Aggregator)
        and not issubclass(cls, AsyncAggregator)
        and is_async_job(config)
        and topology_of(config).is_top
    ):
        return type(cls.__name__, (cls, AsyncAggregator), {"__module__": cls.__module__})
    return cls


def make_role(
    cls: type[Role],
    config: TaskConfig,
    channels: ChannelSet,
    *,
    tracker: Tracker | None = None,
    clock: Clock | None = None,
) -> Role:
    kwargs: dict[str, Any] = {"tracker": tracker}
    if clock is not None:
        kwargs["clock"] = clock
    return role_class_for(cls, config)(config, channels, **kwargs)
