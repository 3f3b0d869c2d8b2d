"""``store.overview()``: the summaries the database builds as JSON, checked against the rows themselves."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from optistate import demo
from optistate.overview import overview_json
from optistate.testing import count_statements as count_queries


def test_each_summary_matches_the_agents_rows(store):
    demo.run(store)
    odd = store.start_agent("cost", name='quote " backslash \\ ünïcode ✓ </script>', ttl=12.5)
    odd.fail_workflow(ValueError('bad "value"\nsecond line'))
    for row in store.overview():
        agent = store.agent(row["name"], row["type"])
        registration, state = agent.registration(), agent.state()
        assert row["id"] == str(registration.id) and uuid.UUID(row["id"]) == agent.id
        assert (row["version"], row["endpoint"], row["registered_status"], row["ttl_seconds"]) == (
            registration.version, registration.endpoint, registration.status, registration.ttl_seconds)
        assert (row["status"], row["workflow"], row["workflow_data"], row["locks"]) == (
            state.status, state.current_workflow, state.workflow_data, state.resource_locks)
        assert (row["error_count"], row["last_error"]) == (state.error_count, state.last_error)
        assert row["last_heartbeat"] == state.last_heartbeat.isoformat(timespec="microseconds")
        assert 0 <= row["heartbeat_age_seconds"] < 600 and row["liveness"] == "alive"
        assert (row["configs"], row["capabilities"]) == (len(agent.config), len(agent.capabilities()))
        assert row["capabilities_enabled"] == len(agent.capabilities(enabled=True))
    assert store.overview(type="cost")[-1]["last_error"]["message"] == 'bad "value"\nsecond line'


def test_an_agent_without_a_state_row_reports_its_registration(store):
    model = store.models.Agent
    model.create(type="cost", name="bare", version="2.0.0", status="busy")
    with count_queries() as counted:
        (row,) = store.overview()
    assert counted.count == 1
    assert (row["status"], row["registered_status"], row["workflow"], row["workflow_data"], row["locks"]) == (
        "busy", "busy", None, {}, [])
    assert (row["error_count"], row["last_error"], row["leases"], row["configs"], row["capabilities"]) == (
        0, None, [], 0, 0)
    assert row["last_heartbeat"] == model.get(model.name == "bare").last_heartbeat.isoformat(timespec="microseconds")


def test_leases_are_ordered_and_expired_ones_left_out(store):
    demo.run(store)
    cost = store.agent("Cost Optimizer")
    held = [cost.lock(name, ttl=600) for name in ("zeta", "alpha", "mid")]
    cost.lock("released", ttl=600).release()
    cost.lock("expired", ttl=0.001)
    time.sleep(0.01)  # past its expiry by any clock (SQLite's counts milliseconds)
    leases = next(r for r in store.overview() if r["name"] == "Cost Optimizer")["leases"]
    assert leases == [
        {"resource": lease.resource, "token": lease.token, "acquired_at": lease.acquired_at.isoformat(
            timespec="microseconds"), "expires_at": lease.expires_at.isoformat(timespec="microseconds")}
        for lease in sorted(held, key=lambda lease: lease.resource)]


@pytest.mark.parametrize(("filters", "names"), [
    ({"liveness": "offline"}, ["Performance Tuner"]),
    ({"liveness": "stale"}, ["Short TTL"]),
    ({"liveness": "alive", "type": "resource"}, ["Resource Allocator"]),
    ({"status": "offline"}, ["Performance Tuner"]),
    ({"status": "error", "liveness": "alive"}, ["Application Monitor"]),
    ({"type": "nothing"}, []),
])
def test_filters_by_type_status_and_liveness_in_the_query(store, filters, names):
    demo.run(store)
    store.agent("Performance Tuner").stop()
    store.start_agent("cost", name="Short TTL", ttl=0.001)
    time.sleep(0.01)  # past its TTL by any clock (SQLite's counts milliseconds)
    assert [row["name"] for row in store.overview(**filters)] == names
    ageless = [{**row, "heartbeat_age_seconds": None} for row in json.loads(overview_json(store.database, **filters))]
    assert ageless == [{**row, "heartbeat_age_seconds": None} for row in store.overview(**filters)]
