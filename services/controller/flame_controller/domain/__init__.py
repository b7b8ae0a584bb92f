"""The controller's domain layer: one module per resource, plain async functions taking a
:class:`Ctx` (store and collaborators) and the :class:`~flame_service.auth.Caller`.

No gRPC or HTTP here: the servicer parses, calls one function and converts the result."""

from .context import Ctx

__all__ = ["Ctx"]
