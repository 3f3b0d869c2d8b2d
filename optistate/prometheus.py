"""The Prometheus exposition of ``optistate serve``'s ``/metrics``, made by ``prometheus_client``.

:class:`StoreCollector` reads the store at each scrape, in three queries
whatever the number of agents (the overview, the leases held, the newest
point of every metric), and yields:

- ``optistate_agent_up{agent,type}``: 1 when alive, 0 when stale or offline;
- ``optistate_agent_heartbeat_age_seconds{agent,type}``, by the database's clock;
- ``optistate_agent_errors_total{agent,type}``: ``agent_states.error_count``;
- ``optistate_lease_held{resource,agent}``: 1 for each lease held now;
- ``optistate_metric_<name>{agent,type}``: the newest value of each recorded metric, as a gauge,
  ``<name>`` being the metric's name with every character Prometheus refuses made ``_``.

A point's metadata never becomes labels: its values are unbounded (ids,
times, counts), and every distinct label set is a new series to Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .metrics import newest_points

if TYPE_CHECKING:
    from .store import Store

__all__ = ["METRIC_PREFIX", "StoreCollector", "exposition", "family_name"]

METRIC_PREFIX = "optistate_metric_"
_REFUSED = re.compile(r"[^a-zA-Z0-9_]")
_AGENT = ["agent", "type"]


def family_name(metric_name: str) -> str:
    """The gauge a recorded metric is exposed as: ``gpu-util.p95`` -> ``optistate_metric_gpu_util_p95``."""
    return METRIC_PREFIX + _REFUSED.sub("_", metric_name)


class StoreCollector(Collector):
    """A ``prometheus_client`` collector that reads ``store`` at every scrape (on the scraping thread)."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        rows = self.store.overview()
        up = GaugeMetricFamily("optistate_agent_up", "1 if alive (heartbeat within its TTL), else 0", labels=_AGENT)
        age = GaugeMetricFamily(
            "optistate_agent_heartbeat_age_seconds", "Seconds since the agent's last heartbeat", labels=_AGENT
        )
        errors = CounterMetricFamily("optistate_agent_errors", "Workflow failures recorded by the agent", labels=_AGENT)
        for row in rows:
            labels = [row["name"], row["type"]]
            up.add_metric(labels, 1.0 if row["liveness"] == "alive" else 0.0)
            age.add_metric(labels, row["heartbeat_age_seconds"])
            errors.add_metric(labels, row["error_count"])
        yield from (up, age, errors)
        held = GaugeMetricFamily("optistate_lease_held", "1 for each lease held now", labels=["resource", "agent"])
        for lease in self.store.locks():
            held.add_metric([lease.resource, lease.holder], 1.0)
        yield held
        yield from self._latest({row["id"]: row for row in rows})

    def _latest(self, agents: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        """One gauge per metric name; two names that map to one family share it, the newer point winning."""
        families: dict[str, dict[tuple[str, str], Any]] = {}
        for point in newest_points(self.store.models.AgentMetric):
            agent = agents.get(str(point.agent_id))  # type: ignore[attr-defined]  # peewee's key accessor
            if agent is None:  # registered after the overview was read
                continue
            series = families.setdefault(family_name(point.metric_name), {})
            labels = (agent["name"], agent["type"])
            if labels not in series or series[labels].collection_timestamp < point.collection_timestamp:
                series[labels] = point
        for name, series in sorted(families.items()):
            units = sorted({p.metric_unit for p in series.values() if p.metric_unit})
            shown = f" ({', '.join(units)})" if units else ""
            gauge = GaugeMetricFamily(name, f"Newest value of the recorded metric{shown}", labels=_AGENT)
            for labels, point in sorted(series.items()):
                gauge.add_metric(list(labels), point.metric_value)
            yield gauge


def exposition(store: Store) -> bytes:
    """The text exposition of ``store`` now (Prometheus' text format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry)
