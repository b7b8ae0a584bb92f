"""The notifier's exception tree (mapped to gRPC status codes by the servicer)."""

from __future__ import annotations


class NotifierError(Exception):
    """Base of every error the notifier raises on purpose."""


class Unauthenticated(NotifierError):
    """The bearer credential is missing, unknown or revoked."""


class Forbidden(NotifierError):
    """The credential is valid but does not belong to the node it subscribes for."""


class ControllerUnavailable(NotifierError):
    """The controller could not be asked (credential check, presence report)."""
