"""Every model's repr names its row as a person would, on both backends; a sensitive value never shows."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from optistate import Capability, Config, hookimpl
from optistate.models import MODELS, Agent, AgentCapability, AgentConfig, AgentMetric, AgentState

SECRET = "sk-live-hunter2"
AT = datetime(2025, 1, 31, 12, 0, 5, tzinfo=timezone.utc)


class Crawler:
    @hookimpl
    def register_agent_types(self, register):
        register("crawler",
                 configs=[Config("max_pages", 100, "integer"), Config("region", "eu-west-1", "string"),
                          Config("api_token", SECRET, "string", sensitive=True)],
                 capabilities=[Capability("crawl", "1.0.0"), Capability("crawl", "2.0.0-beta.1", enabled=False)])


@pytest.fixture
def crawler(store):
    store.plugins.register(Crawler(), name="crawler")
    agent = store.start_agent("crawler", name="Crawler 1", version="1.2.0")
    agent.record_metric("pages", 42, unit="pages", timestamp=AT)
    agent.record_metric("latency", 0.25, timestamp=AT)
    agent.flush()
    return agent


def reprs(models, agent_id):
    """The repr of every row of the agent, table by table, through ``models``."""
    return {
        model.__name__: sorted(repr(row) for row in model.select().where(
            (model.id if model.__name__ == "Agent" else model.agent) == agent_id))
        for model in models
    }


EXPECTED = {
    "Agent": ["<Agent: crawler/Crawler 1 1.2.0 (active)>"],
    "AgentConfig": [
        "<AgentConfig: api_token=*** (string)>",
        "<AgentConfig: max_pages=100 (integer)>",
        "<AgentConfig: region='eu-west-1' (string)>",
    ],
    "AgentState": ["<AgentState: idle>"],
    "AgentCapability": ["<AgentCapability: crawl 1.0.0 (enabled)>", "<AgentCapability: crawl 2.0.0-beta.1 (disabled)>"],
    "AgentMetric": [
        "<AgentMetric: latency=0.25 at 2025-01-31T12:00:05+00:00>",
        "<AgentMetric: pages=42.0 pages at 2025-01-31T12:00:05+00:00>",
    ],
}


def test_rows_read_through_the_stores_models(store, crawler):
    assert reprs(store.models.MODELS, crawler.id) == EXPECTED


def test_rows_read_through_the_library_models(store, crawler):
    assert reprs(MODELS, crawler.id) == EXPECTED  # connect() bound these; no double <AgentConfig: <AgentConfig: …>>


def test_the_rows_the_agent_api_returns(crawler):
    assert repr(crawler.state()) == "<AgentState: idle>"
    assert repr(crawler.capability("crawl", enabled_only=True)) == "<AgentCapability: crawl 1.0.0 (enabled)>"
    assert repr(crawler.config.entry("api_token")) == "<AgentConfig: api_token=*** (string)>"
    assert str(crawler.config.entry("max_pages")) == "max_pages=100 (integer)"


def test_state_names_the_workflow_and_errors(crawler):
    with pytest.raises(RuntimeError), crawler.workflow("crawl_site", locks=["frontier"]):
        raise RuntimeError("blocked")
    assert repr(crawler.state()) == "<AgentState: error, workflow 'crawl_site', 1 error>"
    with pytest.raises(RuntimeError), crawler.workflow("crawl_site"):
        raise RuntimeError("blocked again")
    assert repr(crawler.state()) == "<AgentState: error, workflow 'crawl_site', 2 errors>"


def test_sensitive_values_never_show(store, crawler):
    crawler.config.set("api_token", "sk-live-rotated")
    text = " ".join(
        [repr(row) + str(row) for model in store.models.MODELS for row in model.select()] + [repr(crawler.config)]
    )
    assert SECRET not in text and "sk-live-rotated" not in text and "api_token=***" in text


def test_rows_built_by_hand_before_saving():
    assert repr(Agent(type="cost", name="Cost Optimizer", version="1.0.0")) == (
        "<Agent: cost/Cost Optimizer 1.0.0 (active)>")
    assert repr(AgentConfig(config_key="api_key", config_value=SECRET, is_sensitive=True)) == (
        "<AgentConfig: api_key=*** (string)>")
    assert repr(AgentConfig(config_key="limits", config_value='{"a": 1}', config_type="json")) == (
        '<AgentConfig: limits={"a": 1} (json)>')
    assert repr(AgentState()) == "<AgentState: idle>"
    assert repr(AgentCapability(capability_name="crawl")) == "<AgentCapability: crawl 1.0.0 (enabled)>"
    assert repr(AgentMetric(metric_name="m", metric_value=1.5, collection_timestamp=AT)) == (
        "<AgentMetric: m=1.5 at 2025-01-31T12:00:05+00:00>")
