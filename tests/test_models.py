"""The seed's 23-test plan for the agent state tables, on SQLite and PostgreSQL.

Ported from the SQLAlchemy plan (``/work/shared/seeds/001_*.txt``): ``agent_id=``
is ``agent=``, ``session.add()/commit()`` is ``create()``/``save()``, the seed's
naive ``datetime.utcnow()`` is taken as UTC and reads back aware, and
``agent.state`` is the agent's one state or None.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import peewee
import pytest

from optistate.errors import IntegrityError
from optistate.models import Agent, AgentCapability, AgentConfig, AgentMetric, AgentState

UTC = timezone.utc


def naive_utcnow() -> datetime:
    """What the seed's ``datetime.utcnow()`` returns, without its deprecation warning."""
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def sample_agent_config(sample_cost_agent: Agent) -> AgentConfig:
    return AgentConfig.create(
        agent=sample_cost_agent,
        config_key="test_threshold",
        config_value="100",
        config_type="number",
        description="Test configuration",
        is_sensitive=False,
    )


@pytest.fixture
def sample_agent_state(sample_cost_agent: Agent) -> AgentState:
    return AgentState.create(
        agent=sample_cost_agent,
        status="active",
        current_workflow="test_workflow",
        workflow_data={"key": "value"},
        resource_locks=["resource1"],
        error_count=0,
        last_error=None,
        last_heartbeat=naive_utcnow(),
    )


@pytest.fixture
def sample_agent_capability(sample_cost_agent: Agent) -> AgentCapability:
    return AgentCapability.create(
        agent=sample_cost_agent,
        capability_name="test_capability",
        capability_version="1.0.0",
        description="Test capability",
        parameters={"param1": "value1"},
        is_enabled=True,
    )


@pytest.fixture
def sample_agent_metric(sample_cost_agent: Agent) -> AgentMetric:
    return AgentMetric.create(
        agent=sample_cost_agent,
        metric_name="test_metric",
        metric_value=100.0,
        metric_unit="count",
        collection_timestamp=naive_utcnow(),
        metadata={"source": "test"},
    )


def make_agent(name: str, type: str = "test") -> Agent:
    return Agent.create(type=type, name=name, version="1.0.0", status="active", endpoint=f"http://{name}:8000")


class TestAgentConfig:
    def test_create_agent_config(self, sample_cost_agent):
        config = AgentConfig.create(
            agent=sample_cost_agent,
            config_key="max_cost_threshold",
            config_value="5000",
            config_type="number",
            description="Maximum cost threshold",
            is_sensitive=False,
        )

        stored = AgentConfig.get_by_id(config.id)
        assert isinstance(stored.id, uuid.UUID)
        assert stored.config_key == "max_cost_threshold"
        assert stored.config_value == "5000"
        assert stored.value == 5000
        assert stored.config_type == "number"
        assert stored.description == "Maximum cost threshold"
        assert stored.is_sensitive is False
        assert stored.created_at.tzinfo is not None
        assert stored.updated_at.tzinfo is not None

    def test_agent_config_relationship(self, sample_agent_config):
        agent = Agent.get_by_id(sample_agent_config.agent_id)

        assert len(agent.configs) == 1
        assert sample_agent_config in agent.configs
        assert agent.configs[0].agent_id == agent.id

    def test_agent_config_foreign_key(self, database):
        config = AgentConfig(agent=uuid.uuid4(), config_key="test", config_value="test", config_type="string")

        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            config.save()
        assert AgentConfig.select().count() == 0

    def test_agent_config_sensitive_flag(self, sample_cost_agent):
        AgentConfig.create(
            agent=sample_cost_agent,
            config_key="api_key",
            config_value="secret_key_123",
            config_type="string",
            description="API Key",
            is_sensitive=True,
        )

        retrieved = AgentConfig.get(AgentConfig.config_key == "api_key")
        assert retrieved.is_sensitive is True
        assert retrieved.config_value == "secret_key_123"
        assert "secret_key_123" not in repr(retrieved)

    def test_agent_config_cascade_delete(self, sample_cost_agent):
        config = AgentConfig.create(
            agent=sample_cost_agent, config_key="test_key", config_value="test_value", config_type="string"
        )

        sample_cost_agent.delete_instance()

        assert AgentConfig.get_or_none(AgentConfig.id == config.id) is None


class TestAgentState:
    def test_create_agent_state(self, sample_cost_agent):
        now = naive_utcnow()
        state = AgentState.create(
            agent=sample_cost_agent,
            status="active",
            current_workflow="cost_analysis",
            workflow_data={"step": 1, "progress": 50},
            resource_locks=["gpu_cluster_1", "billing_data"],
            error_count=0,
            last_error=None,
            last_heartbeat=now,
        )

        stored = AgentState.get_by_id(state.id)
        assert stored.status == "active"
        assert stored.current_workflow == "cost_analysis"
        assert stored.workflow_data["step"] == 1
        assert stored.resource_locks == ["gpu_cluster_1", "billing_data"]
        assert stored.error_count == 0
        assert stored.last_error is None
        assert stored.last_heartbeat == now.replace(tzinfo=UTC)

    def test_agent_state_relationship(self, sample_agent_state):
        agent = Agent.get_by_id(sample_agent_state.agent_id)

        assert agent.state is not None
        assert agent.state.id == sample_agent_state.id
        assert agent.state.agent_id == agent.id

    def test_agent_without_state_has_none(self, sample_cost_agent):
        assert Agent.get_by_id(sample_cost_agent.id).state is None

    def test_agent_state_error_tracking(self, sample_cost_agent):
        state = AgentState.create(
            agent=sample_cost_agent,
            status="error",
            current_workflow="analysis",
            workflow_data={},
            resource_locks=[],
            error_count=3,
            last_error={"timestamp": naive_utcnow().isoformat(), "error": "Connection timeout", "severity": "high"},
            last_heartbeat=naive_utcnow(),
        )

        stored = AgentState.get_by_id(state.id)
        assert stored.status == "error"
        assert stored.error_count == 3
        assert "Connection timeout" in stored.last_error["error"]

    def test_agent_state_heartbeat_tracking(self, sample_agent_state):
        old_heartbeat = AgentState.get_by_id(sample_agent_state.id).last_heartbeat

        sample_agent_state.last_heartbeat = old_heartbeat + timedelta(milliseconds=100)
        sample_agent_state.save()

        assert AgentState.get_by_id(sample_agent_state.id).last_heartbeat > old_heartbeat

    def test_agent_state_workflow_data(self, sample_cost_agent):
        complex_data = {
            "customer_id": "test-123",
            "analysis": {
                "total_cost": 120000,
                "potential_savings": 60000,
                "recommendations": [
                    {"type": "rightsizing", "impact": 30000},
                    {"type": "spot_instances", "impact": 30000},
                ],
            },
            "metadata": {"started": naive_utcnow().isoformat(), "version": "1.0"},
        }
        state = AgentState.create(
            agent=sample_cost_agent, status="active", current_workflow="deep_analysis", workflow_data=complex_data
        )

        retrieved = AgentState.get_by_id(state.id)
        assert retrieved.workflow_data == complex_data
        assert retrieved.workflow_data["analysis"]["total_cost"] == 120000
        assert len(retrieved.workflow_data["analysis"]["recommendations"]) == 2


class TestAgentCapability:
    def test_create_agent_capability(self, sample_cost_agent):
        capability = AgentCapability.create(
            agent=sample_cost_agent,
            capability_name="advanced_cost_analysis",
            capability_version="2.1.0",
            description="Advanced cost analysis with ML",
            parameters={
                "model": "cost_predictor_v2",
                "confidence_threshold": 0.85,
                "features": ["gpu_usage", "network", "storage"],
            },
            is_enabled=True,
        )

        stored = AgentCapability.get_by_id(capability.id)
        assert stored.capability_name == "advanced_cost_analysis"
        assert stored.capability_version == "2.1.0"
        assert stored.is_enabled is True
        assert stored.parameters["confidence_threshold"] == 0.85
        assert len(stored.parameters["features"]) == 3

    def test_agent_capability_relationship(self, sample_agent_capability):
        agent = Agent.get_by_id(sample_agent_capability.agent_id)

        assert list(agent.capabilities) == [sample_agent_capability]

    def test_multiple_capability_versions(self, sample_cost_agent):
        AgentCapability.create(
            agent=sample_cost_agent,
            capability_name="cost_optimization",
            capability_version="1.0.0",
            parameters={"method": "basic"},
            is_enabled=False,
        )
        AgentCapability.create(
            agent=sample_cost_agent,
            capability_name="cost_optimization",
            capability_version="2.0.0",
            parameters={"method": "advanced", "ml_enabled": True},
            is_enabled=True,
        )

        capabilities = AgentCapability.select().where(
            AgentCapability.agent == sample_cost_agent, AgentCapability.capability_name == "cost_optimization"
        )
        assert sorted(c.capability_version for c in capabilities) == ["1.0.0", "2.0.0"]

    def test_capability_enable_disable(self, sample_agent_capability):
        assert sample_agent_capability.is_enabled is True

        sample_agent_capability.is_enabled = False
        sample_agent_capability.save()

        assert AgentCapability.get_by_id(sample_agent_capability.id).is_enabled is False

    def test_capability_parameters_update(self, sample_agent_capability):
        sample_agent_capability.parameters = {"new_param": "value", "threshold": 0.95}
        sample_agent_capability.save()

        retrieved = AgentCapability.get_by_id(sample_agent_capability.id)
        assert retrieved.parameters == {"new_param": "value", "threshold": 0.95}


class TestAgentMetric:
    def test_create_agent_metric(self, sample_cost_agent):
        now = naive_utcnow()
        metric = AgentMetric.create(
            agent=sample_cost_agent,
            metric_name="cost_savings_usd",
            metric_value=45000.50,
            metric_unit="usd",
            collection_timestamp=now,
            metadata={"period": "monthly", "customer_count": 5},
        )

        stored = AgentMetric.get_by_id(metric.id)
        assert stored.metric_name == "cost_savings_usd"
        assert stored.metric_value == 45000.50
        assert stored.metric_unit == "usd"
        assert stored.metric_type == "gauge"
        assert stored.collection_timestamp == now.replace(tzinfo=UTC)
        assert stored.metadata == {"period": "monthly", "customer_count": 5}

    def test_agent_metric_relationship(self, sample_agent_metric):
        agent = Agent.get_by_id(sample_agent_metric.agent_id)

        assert list(agent.metrics) == [sample_agent_metric]

    def test_metric_time_series(self, sample_cost_agent):
        base_time = naive_utcnow()
        for hour in range(5):
            AgentMetric.create(
                agent=sample_cost_agent,
                metric_name="gpu_utilization",
                metric_value=70.0 + hour * 2,
                metric_unit="percent",
                collection_timestamp=base_time + timedelta(hours=hour),
                metadata={"hour": hour},
            )

        retrieved = list(
            AgentMetric.select()
            .where(
                AgentMetric.agent == sample_cost_agent,
                AgentMetric.metric_name == "gpu_utilization",
                AgentMetric.collection_timestamp >= base_time,
                AgentMetric.collection_timestamp <= base_time + timedelta(hours=3),
            )
            .order_by(AgentMetric.collection_timestamp)
        )

        assert [m.metric_value for m in retrieved] == [70.0, 72.0, 74.0, 76.0]

    def test_metric_aggregation(self, sample_cost_agent):
        for value in [100.0, 200.0, 150.0, 175.0, 225.0]:
            AgentMetric.create(
                agent=sample_cost_agent, metric_name="request_count", metric_value=value, metric_unit="count"
            )

        avg_value = (
            AgentMetric.select(peewee.fn.AVG(AgentMetric.metric_value))
            .where(AgentMetric.agent == sample_cost_agent, AgentMetric.metric_name == "request_count")
            .scalar()
        )

        assert avg_value == 170.0

    def test_metric_metadata_search(self, sample_cost_agent):
        for value, region in [(100.0, "us-west"), (150.0, "us-east"), (120.0, "us-west-2")]:
            AgentMetric.create(
                agent=sample_cost_agent,
                metric_name="latency",
                metric_value=value,
                metric_unit="ms",
                metadata={"region": region, "env": "prod"},
            )

        result = AgentMetric.select().where(
            AgentMetric.agent == sample_cost_agent, AgentMetric.metadata["region"] == "us-west"
        )

        assert [m.metric_value for m in result] == [100.0]


class TestAgentStateIntegration:
    def test_complete_agent_with_all_state_tables(self, sample_cost_agent):
        AgentConfig.create(agent=sample_cost_agent, config_key="threshold", config_value="100", config_type="number")
        AgentState.create(agent=sample_cost_agent, status="active", current_workflow="test")
        AgentCapability.create(agent=sample_cost_agent, capability_name="test_cap", capability_version="1.0.0")
        AgentMetric.create(agent=sample_cost_agent, metric_name="test_metric", metric_value=100.0, metric_unit="count")

        agent = Agent.get_by_id(sample_cost_agent.id)
        assert len(agent.configs) == 1
        assert agent.state is not None
        assert len(agent.capabilities) == 1
        assert len(agent.metrics) == 1

    @pytest.mark.parametrize("how", ["model", "raw_sql"])
    def test_agent_deletion_cascades(self, database, how):
        agent = make_agent("Test Agent")
        bystander = make_agent("Bystander")
        rows = {}
        for owner in (agent, bystander):
            rows[owner.name] = [
                AgentConfig.create(agent=owner, config_key="test", config_value="test", config_type="string"),
                AgentState.create(agent=owner, status="active"),
                AgentCapability.create(agent=owner, capability_name="test", capability_version="1.0.0"),
                AgentMetric.create(agent=owner, metric_name="test", metric_value=1.0, metric_unit="count"),
            ]

        if how == "model":
            agent.delete_instance()
        else:
            database.execute_sql(f"DELETE FROM agents WHERE name = {database.param}", ("Test Agent",))

        assert Agent.get_or_none(Agent.id == agent.id) is None
        for row in rows["Test Agent"]:
            assert type(row).get_or_none(type(row).id == row.id) is None, type(row).__name__
        for row in rows["Bystander"]:
            assert type(row).get_or_none(type(row).id == row.id) is not None, type(row).__name__

    def test_query_agent_with_active_workflow(self, database):
        agent1 = make_agent("Agent 1", type="cost")
        agent2 = make_agent("Agent 2", type="performance")
        AgentState.create(agent=agent1, status="active", current_workflow="analysis", resource_locks=["resource1"])
        AgentState.create(agent=agent2, status="idle", current_workflow=None)

        active_agents = list(
            Agent.select()
            .join(AgentState)
            .where(AgentState.status == "active", AgentState.current_workflow.is_null(False))
        )

        assert [a.id for a in active_agents] == [agent1.id]
