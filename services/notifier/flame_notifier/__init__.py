"""Flame notifier: at-least-once event fan-out to node agents (flamelets)."""
