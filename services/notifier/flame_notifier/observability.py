"""The notifier's Prometheus series, read from its queues at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flame_notifier.queues import EventQueues


class QueueCollector(Collector):
    def __init__(self, queues: EventQueues) -> None:
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "flame_notifier_queue_depth", "Unacknowledged events per node", labels=["node_id"]
        )
        for node_id, n in self.queues.depths().items():
            depth.add_metric([node_id], n)
        yield depth
        yield CounterMetricFamily(
            "flame_notifier_events", "Events queued since start", value=self.queues.pushed
        )
        yield CounterMetricFamily(
            "flame_notifier_redeliveries",
            "Events sent again to a node that resubscribed before acknowledging them",
            value=self.queues.redelivered,
        )
        connected = GaugeMetricFamily(
            "flame_notifier_agent_connected",
            "1 while a node holds a subscription, 0 after it left",
            labels=["node_id"],
        )
        for agent in self.queues.agents():
            connected.add_metric([agent.node_id], 1 if agent.connected else 0)
        yield connected


def notifier_registry(queues: EventQueues) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(QueueCollector(queues))
    return registry
