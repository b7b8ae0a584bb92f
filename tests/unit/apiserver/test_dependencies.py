"""No route waits for a worker thread: FastAPI runs a plain ``def`` dependency in its thread
pool, a hop (and a lock) per request for what is a dictionary lookup."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from flame_apiserver import routers


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _async(call: Callable[..., Any]) -> bool:
    target = call if inspect.isroutine(call) else type(call).__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_every_dependency_of_every_route_runs_on_the_event_loop() -> None:
    modules = [
        importlib.import_module(f"{routers.__name__}.{m.name}")
        for m in pkgutil.iter_modules(routers.__path__)
    ]
    routes = [
        r
        for module in modules
        if hasattr(module, "router")
        for r in module.router.routes
        if isinstance(r, APIRoute)
    ]
    assert len(routes) > 50
    threaded = {
        f"{r.path}: {getattr(call, '__qualname__', call)}"
        for r in routes
        for call in _calls(r.dependant)
        if not _async(call)
    }
    assert not threaded, sorted(threaded)
