"""Many agent processes sharing one database: real processes, on both backends."""

from __future__ import annotations

import multiprocessing
from typing import Any

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


def _set_new_keys(url: str, config_type: str, value: object, keys: list[str], barrier: Any, out: Any) -> None:
    """Create each of ``keys`` as ``config_type``, in step with the other process; put those this one wrote."""
    from optistate.errors import ValidationError

    written = []
    with optistate.connect(url) as store:
        agent = store.agent("Cost Optimizer")
        for key in keys:
            barrier.wait(timeout=60)
            try:
                agent.config.set(key, value, config_type=config_type)
            except ValidationError as exc:
                assert "an existing key keeps its type" in str(exc), exc
            else:
                written.append(key)
    out.put((config_type, written))


def test_two_processes_creating_one_key_with_different_types_one_wins_and_the_row_stays_whole(db_url):
    with optistate.connect(db_url) as store:
        store.start_agent("cost", name="Cost Optimizer")
    keys = [f"race_{i}" for i in range(60)]
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    racers = [ctx.Process(target=_set_new_keys, args=(db_url, t, v, keys, barrier, out))
              for t, v in (("integer", 5), ("string", "hello world"))]
    for racer in racers:
        racer.start()
    written = dict(out.get(timeout=300) for _ in racers)
    for racer in racers:
        racer.join(timeout=60)
    ints, texts = set(written["integer"]), set(written["string"])
    assert ints.isdisjoint(texts) and ints | texts == set(keys), (ints, texts)
    with optistate.connect(db_url) as store:
        config = store.agent("Cost Optimizer").config
        for key in keys:
            assert config[key] == (5 if key in ints else "hello world")
            assert config.entry(key).config_type == ("integer" if key in ints else "string")
