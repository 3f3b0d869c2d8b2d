"""Many agent processes sharing one database: real processes, on both backends."""

from __future__ import annotations

import multiprocessing

import optistate

PROCESSES = 6


def _start(url: str, barrier, results) -> None:
    barrier.wait(timeout=60)
    try:
        store = optistate.connect(url)
        agent = store.start_agent("cost", name="Cost Optimizer", version="1.0.0")
        agent.heartbeat()
        agent.record_metric("starts", 1.0, metric_type="counter")
        agent.flush()
        results.put(("ok", str(agent.id)))
        store.close()
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_processes_starting_one_agent_at_once_all_succeed_without_duplicates(db_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_start, args=(db_url, barrier, results)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [kind for kind, _ in outcomes] == ["ok"] * PROCESSES, outcomes
    assert len({ident for _, ident in outcomes}) == 1
    with optistate.connect(db_url) as store:
        m = store.models
        assert m.Agent.select().count() == 1
        assert m.AgentConfig.select().count() == 3
        assert m.AgentCapability.select().count() == 3
        assert m.AgentState.select().count() == 1
        assert m.AgentMetric.select().count() == PROCESSES
