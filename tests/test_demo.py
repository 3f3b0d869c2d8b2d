"""``optistate demo``: the seed's four agents, states and metrics, through the SDK, as often as it is run."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import optistate
from optistate import demo
from optistate.cli import cli
from optistate.testing import count_statements as count_queries

SEED_STATES = {
    "Cost Optimizer": ("active", "cost_analysis", ["gpu_cluster_1", "billing_data"]),
    "Performance Tuner": ("idle", None, []),
    "Resource Allocator": ("active", "gpu_scaling", ["k8s_cluster", "gpu_pool"]),
    "Application Monitor": ("error", "quality_check", []),  # the failed workflow's lease on quality_db is released
}

SEED_METRICS = {  # name -> (value, unit, metadata), from the seed's part 2
    "total_savings_identified_usd": (125000.0, "usd", {"period": "last_30_days", "customers_analyzed": 5,
                                                       "recommendations_generated": 12}),
    "average_savings_percent": (42.5, "percent", {"min": 28.0, "max": 67.0, "median": 41.0}),
    "analysis_execution_time_seconds": (145.3, "seconds", {"p50": 120.0, "p90": 180.0, "p95": 180.0, "p99": 220.0}),
    "latency_improvement_percent": (65.0, "percent", {"before_p95_ms": 800, "after_p95_ms": 280,
                                                      "optimizations_applied": 8}),
    "throughput_increase_percent": (180.0, "percent", {"before_rps": 50, "after_rps": 140,
                                                      "batch_size_optimized": True}),
    "tuning_execution_time_seconds": (320.5, "seconds", {"tests_run": 25, "configurations_tested": 15}),
    "average_gpu_utilization_percent": (78.5, "percent", {"before": 35.0, "after": 78.5, "improvement": 124.3}),
    "scaling_decisions_count": (45.0, "count", {"scale_ups": 23, "scale_downs": 22, "period_days": 30}),
    "scaling_accuracy_percent": (92.0, "percent", {"correct_decisions": 41, "total_decisions": 45,
                                                   "false_positives": 4}),
    "quality_score_average": (0.91, "score", {"samples_checked": 1500, "period": "last_7_days", "threshold": 0.85}),
    "regressions_detected_count": (3.0, "count", {"caught_before_production": 3, "auto_rolled_back": 2,
                                                  "manual_review": 1}),
    "check_execution_time_seconds": (28.7, "seconds", {"samples_per_check": 100, "parallel_checks": 4}),
}


def run(url, *args):
    return CliRunner().invoke(cli, ["--database", url, *args])


def counts(store):
    return {m._meta.table_name: m.select().count() for m in store.models.MODELS}


def check_seed(url, runs):
    with optistate.connect(url) as store:
        assert counts(store) == {"agents": 4, "agent_configs": 12, "agent_states": 4, "agent_capabilities": 11,
                                 "agent_metrics": 12 * runs}
        for name, (status, workflow, locks) in SEED_STATES.items():
            agent = store.agent(name)
            state = agent.state()
            assert (state.status, state.current_workflow, state.resource_locks) == (status, workflow, locks), name
            assert len(agent.config) == 3
        latest = {m.metric_name: (m.metric_value, m.metric_unit, m.metadata)
                  for a in store.agents() for m in store.agent(a.name).latest_metrics()}
        assert latest == SEED_METRICS
        assert sum(c.is_enabled for c in store.models.AgentCapability.select()) == 9


def test_demo_twice_keeps_the_seed_and_stores_defaults_once(db_url):
    first = run(db_url, "demo")
    assert first.exit_code == 0, first.stderr
    check_seed(db_url, runs=1)
    second = run(db_url, "demo")
    assert second.exit_code == 0, second.stderr
    check_seed(db_url, runs=2)
    out = second.stdout
    assert "Started 4 agents, ran their workflows, recorded 12 metrics." in out
    for name, (status, workflow, locks) in SEED_STATES.items():
        line = next(line for line in out.splitlines() if name in line)
        assert status in line and (workflow or "-") in line and ", ".join(locks or ["-"]) in line
    assert "total_savings_identified_usd     125000" in out and "0.91" in out


def test_demo_records_the_workflow_story(db_url):
    assert run(db_url, "demo").exit_code == 0
    with optistate.connect(db_url) as store:
        cost = store.agent("Cost Optimizer").state()
        assert cost.workflow_data["metrics_collected"] == 150 and cost.workflow_data["savings_identified"] == 45000
        resource = store.agent("Resource Allocator").state()
        assert resource.error_count == 1 and resource.last_error["error"] == "TimeoutError"
        assert resource.workflow_data["target_gpus"] == 12
        application = store.agent("Application Monitor").state()
        assert application.error_count == 1 and application.last_error["error"] == "QualityThresholdBreach"
        assert application.last_error["message"] == "Quality threshold breach: score=0.82 (threshold=0.85)"
        assert application.workflow_data["failures"] == 3
        assert store.agent("Performance Tuner").state().error_count == 0


def test_demo_reset_starts_clean(db_url):
    assert run(db_url, "demo").exit_code == 0
    with optistate.connect(db_url) as store:
        store.agent("Cost Optimizer").config.set("cost_threshold_usd", 5000)
        store.start_agent("performance", "Someone Else")
    assert run(db_url, "demo").exit_code == 0
    with optistate.connect(db_url) as store:
        assert store.agent("Cost Optimizer").config["cost_threshold_usd"] == 5000  # a changed value stays
        assert len(store.agents()) == 5
    result = run(db_url, "demo", "--reset")
    assert result.exit_code == 0, result.stderr
    check_seed(db_url, runs=1)
    with optistate.connect(db_url) as store:
        assert store.agent("Cost Optimizer").config["cost_threshold_usd"] == 1000
        assert store.agent("Resource Allocator").state().error_count == 1


def test_demo_json(db_url):
    result = run(db_url, "demo", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["database"] == db_url
    agents = {a["name"]: a for a in data["agents"]}
    assert set(agents) == set(SEED_STATES)
    cost = agents["Cost Optimizer"]
    assert (cost["status"], cost["workflow"], cost["locks"]) == SEED_STATES["Cost Optimizer"]
    assert (cost["configs"], cost["capabilities"], cost["capabilities_enabled"]) == (3, 3, 2)
    assert {m["metric_name"] for m in cost["latest_metrics"]} == {
        "total_savings_identified_usd", "average_savings_percent", "analysis_execution_time_seconds"}
    assert cost["heartbeat_age_seconds"] < 60


def test_overview_queries_do_not_grow_with_agents(db_url):
    with optistate.connect(db_url, watch=False) as store:  # a config watch's own queries would be counted too
        demo.run(store)
        with count_queries() as few:
            assert len(store.overview()) == 4
        for i in range(6):
            store.start_agent("cost", f"Extra {i}")
        with count_queries() as many:
            assert len(store.overview()) == 10
    assert few.count == many.count == 1


@pytest.mark.parametrize(("kind", "status", "names"), [
    ("cost", None, ["Cost Optimizer"]),
    (None, "active", ["Cost Optimizer", "Resource Allocator"]),
    (None, "error", ["Application Monitor"]),
    ("performance", "error", []),
])
def test_overview_filters_by_type_and_run_time_status(store, kind, status, names):
    demo.run(store)
    assert [row["name"] for row in store.overview(kind, status)] == names


def test_overview_is_one_row_per_agent_with_the_leases_it_holds_now(store):
    demo.run(store)
    cost, tuner = store.agent("Cost Optimizer"), store.agent("Performance Tuner")
    taken = [cost.lock("gpu_pool", ttl=600), cost.lock("billing_data", ttl=600)]
    tuner.lock("k8s_cluster", ttl=600).release()  # released: no longer held
    rows = {row["name"]: row for row in store.overview()}
    assert len(rows) == 4 == len(store.overview())
    held = [(lease["resource"], lease["token"], lease["expires_at"]) for lease in rows["Cost Optimizer"]["leases"]]
    assert held == sorted((t.resource, t.token, t.expires_at.isoformat(timespec="microseconds")) for t in taken)
    assert rows["Performance Tuner"]["leases"] == [] and rows["Application Monitor"]["leases"] == []
