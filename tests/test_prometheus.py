"""``/metrics``: the exposition ``prometheus_client`` makes, read back with its own parser."""

from __future__ import annotations

import time
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from test_web import LOCAL, seeded

from optistate import demo
from optistate.prometheus import family_name
from optistate.web import create_app


def scrape(served):
    """``/metrics`` of an app on ``served`` (the ``served`` fixture of test_web), parsed by prometheus_client."""
    with TestClient(create_app(served), base_url=LOCAL) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(family):
    return {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}


def by_agent(family):
    return {sample.labels["agent"]: sample.value for sample in family.samples}


def test_liveness_heartbeat_age_and_errors_per_agent(store, served):
    seeded(store)
    store.agent("Performance Tuner").stop()
    store.start_agent("cost", name="Stale One", ttl=0.001)
    time.sleep(0.01)  # past its TTL by any clock (SQLite's counts milliseconds)
    families = scrape(served)
    assert samples(families["optistate_agent_up"])[(("agent", "Cost Optimizer"), ("type", "cost"))] == 1.0
    assert by_agent(families["optistate_agent_up"]) == {
        "Application Monitor": 1.0, "Cost Optimizer": 1.0, "Performance Tuner": 0.0, "Resource Allocator": 1.0,
        "Stale One": 0.0}
    ages = by_agent(families["optistate_agent_heartbeat_age_seconds"])
    assert set(ages) == set(by_agent(families["optistate_agent_up"])) and all(age >= 0 for age in ages.values())
    errors = families["optistate_agent_errors"]
    assert errors.type == "counter" and {s.name for s in errors.samples} == {"optistate_agent_errors_total"}
    assert by_agent(errors) == {"Application Monitor": 1.0, "Cost Optimizer": 0.0, "Performance Tuner": 0.0,
                                "Resource Allocator": 1.0, "Stale One": 0.0}


def test_leases_held_now(store, served):
    seeded(store)
    cost, allocator = store.agent("Cost Optimizer"), store.agent("Resource Allocator")
    cost.lock("gpu_pool", ttl=300)
    allocator.lock("k8s_cluster", ttl=300)
    allocator.lock("quality_db", ttl=300).release()
    assert samples(scrape(served)["optistate_lease_held"]) == {
        (("agent", "Cost Optimizer"), ("resource", "gpu_pool")): 1.0,
        (("agent", "Resource Allocator"), ("resource", "k8s_cluster")): 1.0}


def test_the_newest_value_of_every_metric_with_agent_and_type_labels_only(store, served):
    seeded(store)
    cost = store.agent("Cost Optimizer")
    cost.record_metric("average_savings_percent", 50.0, "percent", metadata={"customer": "c-1", "run": 7})
    cost.record_metric("average_savings_percent", 10.0, "percent",
                       timestamp=cost.metrics("average_savings_percent")[0].collection_timestamp - timedelta(hours=1))
    cost.flush()
    families = scrape(served)
    expected = {family_name(name) for points in demo.METRICS.values() for name, *_ in points}
    assert expected <= set(families) and len(expected) == 12
    savings = families["optistate_metric_average_savings_percent"]
    assert savings.type == "gauge" and "percent" in savings.documentation
    assert by_agent(savings) == {"Cost Optimizer": 50.0}  # the newest point, not the last recorded
    for name in expected:
        for sample in families[name].samples:
            assert set(sample.labels) == {"agent", "type"}  # metadata never becomes labels
    assert by_agent(families["optistate_metric_quality_score_average"]) == {"Application Monitor": 0.91}


def test_metric_names_are_made_valid_and_names_that_meet_share_one_gauge(store, served):
    seeded(store)
    cost, tuner = store.agent("Cost Optimizer"), store.agent("Performance Tuner")
    start = cost.metrics()[0].collection_timestamp
    cost.record_metric("gpu-util.p95", 1.0, timestamp=start)
    cost.record_metric("gpu_util:p95", 2.0, timestamp=start + timedelta(seconds=1))  # newer: it wins
    tuner.record_metric("gpu util p95", 3.0)
    cost.flush()
    tuner.flush()
    families = scrape(served)
    assert family_name("gpu-util.p95") == "optistate_metric_gpu_util_p95"
    assert by_agent(families["optistate_metric_gpu_util_p95"]) == {"Cost Optimizer": 2.0, "Performance Tuner": 3.0}
    assert len(families["optistate_metric_gpu_util_p95"].samples) == 2
