"""Many agent processes sharing one database: real processes, on both backends."""

from __future__ import annotations

import optistate
from optistate.testing import run_together

PROCESSES = 6


def _start(url: str) -> str:
    store = optistate.connect(url)
    agent = store.start_agent("cost", name="Cost Optimizer", version="1.0.0")
    agent.heartbeat()
    agent.record_metric("starts", 1.0, metric_type="counter")
    agent.flush()
    store.close()
    return str(agent.id)


def test_processes_starting_one_agent_at_once_all_succeed_without_duplicates(db_url):
    outcomes = run_together(_start, (db_url,), PROCESSES)
    assert [kind for kind, _ in outcomes] == ["ok"] * PROCESSES, outcomes
    assert len({ident for _, ident in outcomes}) == 1
    with optistate.connect(db_url) as store:
        m = store.models
        assert m.Agent.select().count() == 1
        assert m.AgentConfig.select().count() == 3
        assert m.AgentCapability.select().count() == 3
        assert m.AgentState.select().count() == 1
        assert m.AgentMetric.select().count() == PROCESSES
