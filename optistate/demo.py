"""``optistate demo``: the four first-party agents at work, and an overview of agents.

:func:`run` goes through the public SDK only. It starts the four agents (their
plugins store the default configs and capabilities, once), runs one short
simulated workflow each, and records the seed's twelve metrics. Afterwards
the states are the seed's: cost active in ``cost_analysis``, performance
idle, resource active in ``gpu_scaling`` after one transient failure, and
application in error after a quality check below its configured threshold.
Running it again stores no second set of defaults.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from .agent import AgentHandle
from .database import write_transaction
from .errors import PluginError
from .fields import utcnow
from .store import Store

__all__ = ["AGENTS", "METRICS", "NEXT", "SIMULATED", "QualityThresholdBreach", "run"]

CUSTOMER = "550e8400-e29b-41d4-a716-446655440000"

AGENTS = (
    ("cost", "Cost Optimizer"),
    ("performance", "Performance Tuner"),
    ("resource", "Resource Allocator"),
    ("application", "Application Monitor"),
)

# agent type -> (metric_name, value, unit, metadata); "*_count" metrics are counters, the rest gauges.
METRICS: dict[str, list[tuple[str, float, str, dict[str, Any]]]] = {
    "cost": [
        ("total_savings_identified_usd", 125000.0, "usd",
         {"period": "last_30_days", "customers_analyzed": 5, "recommendations_generated": 12}),
        ("average_savings_percent", 42.5, "percent", {"min": 28.0, "max": 67.0, "median": 41.0}),
        ("analysis_execution_time_seconds", 145.3, "seconds", {"p50": 120.0, "p90": 180.0, "p95": 180.0, "p99": 220.0}),
    ],
    "performance": [
        ("latency_improvement_percent", 65.0, "percent",
         {"before_p95_ms": 800, "after_p95_ms": 280, "optimizations_applied": 8}),
        ("throughput_increase_percent", 180.0, "percent",
         {"before_rps": 50, "after_rps": 140, "batch_size_optimized": True}),
        ("tuning_execution_time_seconds", 320.5, "seconds", {"tests_run": 25, "configurations_tested": 15}),
    ],
    "resource": [
        ("average_gpu_utilization_percent", 78.5, "percent", {"before": 35.0, "after": 78.5, "improvement": 124.3}),
        ("scaling_decisions_count", 45, "count", {"scale_ups": 23, "scale_downs": 22, "period_days": 30}),
        ("scaling_accuracy_percent", 92.0, "percent",
         {"correct_decisions": 41, "total_decisions": 45, "false_positives": 4}),
    ],
    "application": [
        ("quality_score_average", 0.91, "score", {"samples_checked": 1500, "period": "last_7_days", "threshold": 0.85}),
        ("regressions_detected_count", 3, "count",
         {"caught_before_production": 3, "auto_rolled_back": 2, "manual_review": 1}),
        ("check_execution_time_seconds", 28.7, "seconds", {"samples_per_check": 100, "parallel_checks": 4}),
    ],
}


SIMULATED = (
    "Application Monitor is in error: its quality check scored 0.82, below its quality_score_threshold.",
    "Cost Optimizer and Resource Allocator are active: their workflows are left running, holding the locks"
    " their state names (LOCKS); these are names only, not leases, so `optistate locks` lists none.",
    "Resource Allocator's first gpu_scaling run failed on a simulated network timeout (1 error); its retry runs.",
    "Performance Tuner finished its latency tuning and is idle.",
)
"""The states :func:`run` leaves, as in the seed; ``optistate demo`` prints them."""

NEXT = (
    ('optistate agent "Application Monitor"', "its state, last error, configs and metrics"),
    ("optistate agents", "liveness turns stale, then offline, as their heartbeats stop"),
    ('optistate metrics "Cost Optimizer"', "its metric points (--name N --agg avg: one aggregate)"),
    ("optistate --help", "every command"),
)
"""What to run after the demo: (command, what it shows)."""


class QualityThresholdBreach(Exception):
    """The simulated application check's failure: a sample scored below ``quality_score_threshold``."""


def _record(agent: AgentHandle) -> None:
    agent.record_metrics(
        {"name": name, "value": value, "unit": unit, "metadata": metadata,
         "metric_type": "counter" if name.endswith("_count") else "gauge"}
        for name, value, unit, metadata in METRICS[agent.type]
    )


def _cost(agent: AgentHandle, now: datetime) -> None:
    data = {"customer_id": CUSTOMER, "analysis_started": now.isoformat()}
    flow = agent.begin_workflow("cost_analysis", data, locks=["gpu_cluster_1", "billing_data"])  # left running
    flow.update(metrics_collected=150, savings_identified=45000)
    _record(agent)


def _performance(agent: AgentHandle, now: datetime) -> None:
    with agent.workflow("latency_tuning", {"customer_id": CUSTOMER, "started_at": now.isoformat()}) as flow:
        flow.update(configurations_tested=15, tests_run=25)
        _record(agent)
    # done: idle again, no workflow, no locks


def _resource(agent: AgentHandle, now: datetime) -> None:
    data = {"customer_id": CUSTOMER, "current_gpus": 8, "target_gpus": 12,
            "scale_reason": "high_utilization", "started_at": now.isoformat()}
    try:
        with agent.workflow("gpu_scaling", data, locks=["k8s_cluster", "gpu_pool"]):
            raise TimeoutError("Transient network timeout")
    except TimeoutError:
        pass  # recorded in last_error and error_count; retried below
    agent.begin_workflow("gpu_scaling", data, locks=["k8s_cluster", "gpu_pool"])  # the retry, still running
    _record(agent)


def _application(agent: AgentHandle, now: datetime) -> None:
    threshold = agent.config["quality_score_threshold"]
    data = {"customer_id": CUSTOMER, "check_id": f"qc_{now:%Y%m%d}_001", "samples_checked": 0, "failures": 0}
    _record(agent)
    try:
        with agent.workflow("quality_check", data, locks=["quality_db"]) as flow:
            flow.update(samples_checked=50, failures=3)
            score = 0.82
            if score < threshold:
                raise QualityThresholdBreach(f"Quality threshold breach: score={score} (threshold={threshold})")
    except QualityThresholdBreach:
        pass  # the state keeps the workflow and its data, with status error; the lease on quality_db is released


WORKFLOWS = {"cost": _cost, "performance": _performance, "resource": _resource, "application": _application}


def run(store: Store, *, reset: bool = False) -> list[AgentHandle]:
    """Start the four agents, run their workflows and record their metrics; return the agents.

    :param reset: delete every agent in the store first (their rows cascade).
    """
    missing = [agent_type for agent_type, _ in AGENTS if agent_type not in store.plugins.agent_types()]
    if missing:
        raise PluginError(
            "optistate.plugins",
            f"the demo needs the first-party agent types {', '.join(t for t, _ in AGENTS)};"
            f" missing: {', '.join(missing)} (blocked by $OPTISTATE_BLOCK_PLUGINS, or not installed?)",
        )
    if reset:
        with write_transaction(store.database):
            store.models.Agent.delete().execute()
    agents = [store.start_agent(agent_type, name, version="1.0.0") for agent_type, name in AGENTS]
    now = utcnow()
    for agent in agents:
        WORKFLOWS[agent.type](agent, now)
        agent.flush()
    return agents
