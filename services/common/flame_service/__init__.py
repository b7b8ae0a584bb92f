"""Shared plumbing for Flame's control-plane services (never imports a service)."""
