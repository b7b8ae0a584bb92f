"""Flame apiserver: the public REST edge (``/v1``) in front of the controller's gRPC API."""

from flame_apiserver.app import create_app
from flame_apiserver.settings import ApiserverSettings

__all__ = ["ApiserverSettings", "create_app"]
