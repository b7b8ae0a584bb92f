"""One exception tree for the SDK (as httpx does): catch ``FlameError`` to catch them all."""

from __future__ import annotations


class FlameError(Exception):
    """Base of every error the SDK raises on purpose."""


class ConfigError(FlameError):
    """A design, job spec or task config is invalid."""


class ChannelError(FlameError):
    """A channel could not send or receive."""


class PeerTimeout(ChannelError):
    """A peer did not answer within the timeout (treated as dead for this round)."""


class RejectedUpdate(FlameError):
    """A received update failed validation (wrong job/round/sender, names, shapes, non-finite)."""

    def __init__(self, reason: str, sender: str = "") -> None:
        super().__init__(f"update from {sender or '?'} rejected: {reason}")
        self.reason = reason
        self.sender = sender


class QuorumLost(FlameError):
    """Fewer than ``min_trainers`` trainers are left: the job cannot go on."""


class AggregationError(FlameError):
    """An aggregation rule got input it cannot aggregate (e.g. no updates)."""


class DeclineRound(FlameError):
    """Raised in a trainer's ``train()`` (or by ``self.decline(reason)``): this trainer sits the
    round out; the aggregator is told at once, with ``reason``."""

    def __init__(self, reason: str = "declined") -> None:
        super().__init__(reason)
        self.reason = reason
