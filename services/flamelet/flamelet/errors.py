"""The flamelet's exception tree."""

from __future__ import annotations


class FlameletError(Exception):
    """Base of every error the flamelet raises on purpose."""


class NotEnrolled(FlameletError):
    """The home folder holds no node identity: run ``flamelet login`` first."""


class AlreadyRunning(FlameletError):
    """Another flamelet holds the lock on this home folder."""


class ApiError(FlameletError):
    """The apiserver answered with an error that retrying will not fix."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Unauthorized(ApiError):
    """401: the node credential is unknown or revoked; stop using it."""


class NotFound(ApiError):
    """404: the task does not exist or belongs to another node."""


class Unavailable(FlameletError):
    """The apiserver or notifier cannot be reached right now; retry later."""


class BundleRejected(FlameletError):
    """A task bundle failed verification (sha256, unsafe archive, missing dataset, ...)."""
