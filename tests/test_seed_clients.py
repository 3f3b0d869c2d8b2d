"""The seed's own SQLAlchemy models and test plan, run against a PostgreSQL database that optistate migrated.

Any other writer to a shared database relies on the database's defaults, as
these models do for ``created_at`` and friends (``server_default=func.now()``):
migration 0003 provides them. The models are the seed document's
(``shared/seeds/000_*.txt``), with the column names and values that the issues
settled where the seed's two parts disagree: the state's ``status``,
``workflow_data``, ``resource_locks``, ``error_count``, ``last_error`` and
``last_heartbeat``; the capability's ``parameters`` and ``is_enabled``; the
metric's ``metric_unit``, ``metadata`` and ``collection_timestamp``; the
config's ``is_sensitive``; 'number' among the config types and 'active' among
the state statuses, as the seed's own data uses them. The core ``Agent`` model
(the seed's part 0.2a, not among the documents) is declared from the
``agents`` table, its database defaults as ``server_default``. Table arguments are left out: the tables, indexes and
constraints are optistate's.

The test plan (``shared/seeds/001_*.txt``) is as written, except where the
seed's tests themselves are wrong:

- ``test_agent_config_foreign_key`` passes the integer 99999 as a UUID agent
  id, which PostgreSQL cannot cast to uuid (a ``ProgrammingError``, not the
  expected ``IntegrityError``): a random UUID is used instead.
- ``test_create_agent_state`` and ``test_create_agent_metric`` compare a naive
  ``datetime.utcnow()`` with the aware value a TIMESTAMPTZ column reads back,
  which is never equal: ``now`` is aware UTC there.
- ``test_agent_deletion_cascades`` and ``test_query_agent_with_active_workflow``
  pass ``capabilities=["test"]`` to ``Agent``, where ``capabilities`` is the
  relationship to ``AgentCapability`` that the seed adds: the argument is left out.

Two parts of the plan are garbled in the document (the ends of
``test_agent_config_sensitive_flag`` and ``test_agent_state_workflow_data`` are
swapped); each is put back with its own test. The seed's naive
``datetime.utcnow()`` values mean UTC, so the sessions run with
``timezone=UTC``, whatever the server's default.

``metadata`` is reserved on a declarative class: SQLAlchemy 2.0 refuses the
seed's ``metadata = Column(JSONB)`` and 2.1 warns. So ``AgentState`` and
``AgentMetric`` give the same columns in a ``__table__``, which maps the column
to the attribute ``metadata`` on both versions (2.1 needs Python 3.11).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from enum import Enum as PyEnum

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, relationship
from sqlalchemy.sql import func

import optistate
from optistate import schema
from optistate.database import open_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),  # the seed's, from 3.12
]


class Base(DeclarativeBase):
    pass


class ConfigType(str, PyEnum):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    NUMBER = "number"
    BOOLEAN = "boolean"
    JSON = "json"


class AgentStatusDetail(str, PyEnum):
    IDLE = "idle"
    BUSY = "busy"
    PROCESSING = "processing"
    WAITING = "waiting"
    ERROR = "error"
    ACTIVE = "active"


class MetricType(str, PyEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


def values(enum):
    return [e.value for e in enum]


class Agent(Base):
    __tablename__ = "agents"

    id = Column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    type = Column(String(64), nullable=False)
    name = Column(String(255), nullable=False)
    version = Column(String(64), nullable=False)
    status = Column(String(32), nullable=False, server_default="active")
    endpoint = Column(String(1024), nullable=True)
    last_heartbeat = Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    created_at = Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at = Column(DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now())

    configs = relationship("AgentConfig", back_populates="agent", cascade="all, delete-orphan")
    state = relationship("AgentState", back_populates="agent", uselist=False, cascade="all, delete-orphan")
    capabilities = relationship("AgentCapability", back_populates="agent", cascade="all, delete-orphan")
    metrics = relationship("AgentMetric", back_populates="agent", cascade="all, delete-orphan")


class AgentConfig(Base):
    __tablename__ = "agent_configs"

    id = Column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    agent_id = Column(UUID(as_uuid=True), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True)
    config_key = Column(String(255), nullable=False, index=True)
    config_value = Column(Text, nullable=False)
    config_type = Column(
        Enum(ConfigType, create_type=False, values_callable=values), nullable=False, default=ConfigType.STRING
    )
    description = Column(Text, nullable=True)
    is_sensitive = Column(Boolean, nullable=False, default=False)
    created_at = Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at = Column(DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now())

    agent = relationship("Agent", back_populates="configs")


class AgentState(Base):
    __table__ = Table(
        "agent_states",
        Base.metadata,
        Column("id", UUID(as_uuid=True), primary_key=True, default=uuid.uuid4),
        Column(
            "agent_id",
            UUID(as_uuid=True),
            ForeignKey("agents.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
            index=True,
        ),
        Column(
            "status",
            Enum(AgentStatusDetail, create_type=False, values_callable=values),
            nullable=False,
            default=AgentStatusDetail.IDLE,
            index=True,
        ),
        Column("current_workflow", String(255), nullable=True),
        Column("workflow_data", JSONB, nullable=False, default={}),
        Column("resource_locks", JSONB, nullable=False, default=[]),
        Column("error_count", Integer, nullable=False, default=0),
        Column("last_error", JSONB, nullable=True),
        Column("last_heartbeat", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
        Column("resource_usage", JSONB, nullable=True, default={}),
        Column("metadata", JSONB, nullable=True, default={}),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()),
    )

    agent = relationship("Agent", back_populates="state", uselist=False)


class AgentCapability(Base):
    __tablename__ = "agent_capabilities"

    id = Column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    agent_id = Column(UUID(as_uuid=True), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True)
    capability_name = Column(String(255), nullable=False, index=True)
    capability_version = Column(String(50), nullable=False, default="1.0.0")
    is_enabled = Column(Boolean, nullable=False, default=True, index=True)
    parameters = Column(JSONB, nullable=True, default={})
    description = Column(Text, nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    updated_at = Column(DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now())

    agent = relationship("Agent", back_populates="capabilities")


class AgentMetric(Base):
    __table__ = Table(
        "agent_metrics",
        Base.metadata,
        Column("id", UUID(as_uuid=True), primary_key=True, default=uuid.uuid4),
        Column("agent_id", UUID(as_uuid=True), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("metric_name", String(255), nullable=False, index=True),
        Column("metric_value", Float, nullable=False),
        Column("metric_unit", String(64), nullable=True),
        Column(
            "metric_type",
            Enum(MetricType, create_type=False, values_callable=values),
            nullable=False,
            default=MetricType.GAUGE,
        ),
        Column("metadata", JSONB, nullable=True, default={}),
        Column("collection_timestamp", DateTime(timezone=True), nullable=False, server_default=func.now(), index=True),
    )

    agent = relationship("Agent", back_populates="metrics")


# -- the seed's fixtures ----------------------------------------------------------------------


def in_utc(conn, _record) -> None:
    """Set the session's zone to UTC: a SET, as PgBouncer refuses the startup option ``-c timezone=UTC`` but
    keeps TimeZone for its client; committed at once, as SQLAlchemy's pool rolls back what it hands back."""
    conn.autocommit = True
    conn.cursor().execute("SET TIME ZONE 'UTC'")
    conn.autocommit = False


@pytest.fixture
def db_session(pg_url: str) -> Iterator[Session]:
    """A session on a database that ``optistate.connect`` created and migrated."""
    optistate.connect(pg_url).close()
    url = pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)  # SQLAlchemy 2.1's default is psycopg 3
    engine = create_engine(url)
    event.listen(engine, "connect", in_utc)
    with Session(engine) as session:
        yield session
    engine.dispose()


@pytest.fixture
def sample_cost_agent(db_session):
    agent = Agent(type="cost", name="Cost Optimizer", version="1.0.0", endpoint="http://cost:8000")
    db_session.add(agent)
    db_session.commit()
    db_session.refresh(agent)
    return agent


@pytest.fixture
def sample_agent_config(db_session, sample_cost_agent):
    config = AgentConfig(
        agent_id=sample_cost_agent.id,
        config_key="test_threshold",
        config_value="100",
        config_type="number",
        description="Test configuration",
        is_sensitive=False,
    )
    db_session.add(config)
    db_session.commit()
    db_session.refresh(config)
    return config


@pytest.fixture
def sample_agent_state(db_session, sample_cost_agent):
    state = AgentState(
        agent_id=sample_cost_agent.id,
        status="active",
        current_workflow="test_workflow",
        workflow_data={"key": "value"},
        resource_locks=["resource1"],
        error_count=0,
        last_error=None,
        last_heartbeat=datetime.utcnow(),
    )
    db_session.add(state)
    db_session.commit()
    db_session.refresh(state)
    return state


@pytest.fixture
def sample_agent_capability(db_session, sample_cost_agent):
    capability = AgentCapability(
        agent_id=sample_cost_agent.id,
        capability_name="test_capability",
        capability_version="1.0.0",
        description="Test capability",
        parameters={"param1": "value1"},
        is_enabled=True,
    )
    db_session.add(capability)
    db_session.commit()
    db_session.refresh(capability)
    return capability


@pytest.fixture
def sample_agent_metric(db_session, sample_cost_agent):
    metric = AgentMetric(
        agent_id=sample_cost_agent.id,
        metric_name="test_metric",
        metric_value=100.0,
        metric_unit="count",
        collection_timestamp=datetime.utcnow(),
        metadata={"source": "test"},
    )
    db_session.add(metric)
    db_session.commit()
    db_session.refresh(metric)
    return metric


# -- the seed's 23 tests ----------------------------------------------------------------------


class TestAgentConfig:
    def test_create_agent_config(self, db_session, sample_cost_agent):
        config = AgentConfig(
            agent_id=sample_cost_agent.id,
            config_key="max_cost_threshold",
            config_value="5000",
            config_type="number",
            description="Maximum cost threshold",
            is_sensitive=False,
        )
        db_session.add(config)
        db_session.commit()

        assert config.id is not None
        assert config.config_key == "max_cost_threshold"
        assert config.config_value == "5000"
        assert config.config_type == "number"
        assert config.is_sensitive is False
        assert config.created_at is not None
        assert config.updated_at is not None

    def test_agent_config_relationship(self, db_session, sample_agent_config):
        agent = db_session.query(Agent).filter_by(id=sample_agent_config.agent_id).first()

        assert len(agent.configs) >= 1
        assert sample_agent_config in agent.configs
        assert agent.configs[0].agent_id == agent.id

    def test_agent_config_foreign_key(self, db_session):
        config = AgentConfig(
            agent_id=uuid.uuid4(),  # deviation: the seed passes 99999, which is no UUID
            config_key="test",
            config_value="test",
            config_type="string",
            description="Test",
        )
        db_session.add(config)

        with pytest.raises(IntegrityError):
            db_session.commit()

    def test_agent_config_sensitive_flag(self, db_session, sample_cost_agent):
        sensitive_config = AgentConfig(
            agent_id=sample_cost_agent.id,
            config_key="api_key",
            config_value="secret_key_123",
            config_type="string",
            description="API Key",
            is_sensitive=True,
        )
        db_session.add(sensitive_config)
        db_session.commit()

        retrieved = db_session.query(AgentConfig).filter_by(config_key="api_key").first()
        assert retrieved.is_sensitive is True
        assert retrieved.config_value == "secret_key_123"

    def test_agent_config_cascade_delete(self, db_session, sample_cost_agent):
        config = AgentConfig(
            agent_id=sample_cost_agent.id,
            config_key="test_key",
            config_value="test_value",
            config_type="string",
            description="Test",
        )
        db_session.add(config)
        db_session.commit()
        config_id = config.id

        db_session.delete(sample_cost_agent)
        db_session.commit()

        assert db_session.query(AgentConfig).filter_by(id=config_id).first() is None


class TestAgentState:
    def test_create_agent_state(self, db_session, sample_cost_agent):
        now = datetime.now(timezone.utc)  # deviation: the seed's naive utcnow() never equals what is read back
        state = AgentState(
            agent_id=sample_cost_agent.id,
            status="active",
            current_workflow="cost_analysis",
            workflow_data={"step": 1, "progress": 50},
            resource_locks=["gpu_cluster_1", "billing_data"],
            error_count=0,
            last_error=None,
            last_heartbeat=now,
        )
        db_session.add(state)
        db_session.commit()

        assert state.id is not None
        assert state.status == "active"
        assert state.current_workflow == "cost_analysis"
        assert state.workflow_data["step"] == 1
        assert len(state.resource_locks) == 2
        assert "gpu_cluster_1" in state.resource_locks
        assert state.error_count == 0
        assert state.last_heartbeat == now

    def test_agent_state_relationship(self, db_session, sample_agent_state):
        agent = db_session.query(Agent).filter_by(id=sample_agent_state.agent_id).first()

        assert agent.state is not None
        assert agent.state.id == sample_agent_state.id
        assert agent.state.agent_id == agent.id

    def test_agent_state_error_tracking(self, db_session, sample_cost_agent):
        state = AgentState(
            agent_id=sample_cost_agent.id,
            status="error",
            current_workflow="analysis",
            workflow_data={},
            resource_locks=[],
            error_count=3,
            last_error={
                "timestamp": datetime.utcnow().isoformat(),
                "error": "Connection timeout",
                "severity": "high",
            },
            last_heartbeat=datetime.utcnow(),
        )
        db_session.add(state)
        db_session.commit()

        assert state.status == "error"
        assert state.error_count == 3
        assert state.last_error is not None
        assert "Connection timeout" in state.last_error["error"]

    def test_agent_state_heartbeat_tracking(self, db_session, sample_agent_state):
        old_heartbeat = sample_agent_state.last_heartbeat

        time.sleep(0.1)
        sample_agent_state.last_heartbeat = datetime.utcnow()
        db_session.commit()

        assert sample_agent_state.last_heartbeat > old_heartbeat

    def test_agent_state_workflow_data(self, db_session, sample_cost_agent):
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
            "metadata": {"started": datetime.utcnow().isoformat(), "version": "1.0"},
        }
        state = AgentState(
            agent_id=sample_cost_agent.id,
            status="active",
            current_workflow="deep_analysis",
            workflow_data=complex_data,
            resource_locks=[],
            error_count=0,
            last_heartbeat=datetime.utcnow(),
        )
        db_session.add(state)
        db_session.commit()

        retrieved = db_session.query(AgentState).filter_by(id=state.id).first()
        assert retrieved.workflow_data["analysis"]["total_cost"] == 120000
        assert len(retrieved.workflow_data["analysis"]["recommendations"]) == 2


class TestAgentCapability:
    def test_create_agent_capability(self, db_session, sample_cost_agent):
        capability = AgentCapability(
            agent_id=sample_cost_agent.id,
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
        db_session.add(capability)
        db_session.commit()

        assert capability.id is not None
        assert capability.capability_name == "advanced_cost_analysis"
        assert capability.capability_version == "2.1.0"
        assert capability.is_enabled is True
        assert "model" in capability.parameters
        assert len(capability.parameters["features"]) == 3

    def test_agent_capability_relationship(self, db_session, sample_agent_capability):
        agent = db_session.query(Agent).filter_by(id=sample_agent_capability.agent_id).first()

        assert len(agent.capabilities) >= 1
        assert sample_agent_capability in agent.capabilities

    def test_multiple_capability_versions(self, db_session, sample_cost_agent):
        cap_v1 = AgentCapability(
            agent_id=sample_cost_agent.id,
            capability_name="cost_optimization",
            capability_version="1.0.0",
            description="Basic cost optimization",
            parameters={"method": "basic"},
            is_enabled=False,
        )
        cap_v2 = AgentCapability(
            agent_id=sample_cost_agent.id,
            capability_name="cost_optimization",
            capability_version="2.0.0",
            description="Advanced cost optimization",
            parameters={"method": "advanced", "ml_enabled": True},
            is_enabled=True,
        )
        db_session.add_all([cap_v1, cap_v2])
        db_session.commit()

        capabilities = (
            db_session.query(AgentCapability)
            .filter_by(agent_id=sample_cost_agent.id, capability_name="cost_optimization")
            .all()
        )

        assert len(capabilities) == 2
        versions = [c.capability_version for c in capabilities]
        assert "1.0.0" in versions
        assert "2.0.0" in versions

    def test_capability_enable_disable(self, db_session, sample_agent_capability):
        assert sample_agent_capability.is_enabled is True

        sample_agent_capability.is_enabled = False
        db_session.commit()

        retrieved = db_session.query(AgentCapability).filter_by(id=sample_agent_capability.id).first()
        assert retrieved.is_enabled is False

    def test_capability_parameters_update(self, db_session, sample_agent_capability):
        sample_agent_capability.parameters = {"new_param": "value", "threshold": 0.95}
        db_session.commit()

        retrieved = db_session.query(AgentCapability).filter_by(id=sample_agent_capability.id).first()
        assert "new_param" in retrieved.parameters
        assert retrieved.parameters["threshold"] == 0.95


class TestAgentMetric:
    def test_create_agent_metric(self, db_session, sample_cost_agent):
        now = datetime.now(timezone.utc)  # deviation: the seed's naive utcnow() never equals what is read back
        metric = AgentMetric(
            agent_id=sample_cost_agent.id,
            metric_name="cost_savings_usd",
            metric_value=45000.50,
            metric_unit="usd",
            collection_timestamp=now,
            metadata={"period": "monthly", "customer_count": 5},
        )
        db_session.add(metric)
        db_session.commit()

        assert metric.id is not None
        assert metric.metric_name == "cost_savings_usd"
        assert metric.metric_value == 45000.50
        assert metric.metric_unit == "usd"
        assert metric.collection_timestamp == now
        assert metric.metadata["period"] == "monthly"

    def test_agent_metric_relationship(self, db_session, sample_agent_metric):
        agent = db_session.query(Agent).filter_by(id=sample_agent_metric.agent_id).first()

        assert len(agent.metrics) >= 1
        assert sample_agent_metric in agent.metrics

    def test_metric_time_series(self, db_session, sample_cost_agent):
        base_time = datetime.utcnow()
        metrics = []
        for hour in range(5):
            metric = AgentMetric(
                agent_id=sample_cost_agent.id,
                metric_name="gpu_utilization",
                metric_value=70.0 + hour * 2,
                metric_unit="percent",
                collection_timestamp=base_time + timedelta(hours=hour),
                metadata={"hour": hour},
            )
            metrics.append(metric)
        db_session.add_all(metrics)
        db_session.commit()

        start_time = base_time
        end_time = base_time + timedelta(hours=5)
        retrieved = (
            db_session.query(AgentMetric)
            .filter(
                AgentMetric.agent_id == sample_cost_agent.id,
                AgentMetric.metric_name == "gpu_utilization",
                AgentMetric.collection_timestamp >= start_time,
                AgentMetric.collection_timestamp <= end_time,
            )
            .order_by(AgentMetric.collection_timestamp)
            .all()
        )

        assert len(retrieved) == 5
        assert retrieved[0].metric_value == 70.0
        assert retrieved[4].metric_value == 78.0

    def test_metric_aggregation(self, db_session, sample_cost_agent):
        values = [100.0, 200.0, 150.0, 175.0, 225.0]
        for value in values:
            metric = AgentMetric(
                agent_id=sample_cost_agent.id,
                metric_name="request_count",
                metric_value=value,
                metric_unit="count",
                collection_timestamp=datetime.utcnow(),
                metadata={},
            )
            db_session.add(metric)
        db_session.commit()

        avg_value = (
            db_session.query(func.avg(AgentMetric.metric_value))
            .filter(AgentMetric.agent_id == sample_cost_agent.id, AgentMetric.metric_name == "request_count")
            .scalar()
        )

        assert avg_value == 170.0

    def test_metric_metadata_search(self, db_session, sample_cost_agent):
        metric1 = AgentMetric(
            agent_id=sample_cost_agent.id,
            metric_name="latency",
            metric_value=100.0,
            metric_unit="ms",
            collection_timestamp=datetime.utcnow(),
            metadata={"region": "us-west", "env": "prod"},
        )
        metric2 = AgentMetric(
            agent_id=sample_cost_agent.id,
            metric_name="latency",
            metric_value=150.0,
            metric_unit="ms",
            collection_timestamp=datetime.utcnow(),
            metadata={"region": "us-east", "env": "prod"},
        )
        db_session.add_all([metric1, metric2])
        db_session.commit()

        result = (
            db_session.query(AgentMetric)
            .filter(AgentMetric.agent_id == sample_cost_agent.id, AgentMetric.metadata["region"].astext == "us-west")
            .first()
        )

        assert result is not None
        assert result.metric_value == 100.0


class TestAgentStateIntegration:
    def test_complete_agent_with_all_state_tables(self, db_session, sample_cost_agent):
        config = AgentConfig(
            agent_id=sample_cost_agent.id,
            config_key="threshold",
            config_value="100",
            config_type="number",
            description="Test threshold",
        )
        state = AgentState(
            agent_id=sample_cost_agent.id,
            status="active",
            current_workflow="test",
            workflow_data={},
            resource_locks=[],
            error_count=0,
            last_heartbeat=datetime.utcnow(),
        )
        capability = AgentCapability(
            agent_id=sample_cost_agent.id,
            capability_name="test_cap",
            capability_version="1.0.0",
            description="Test",
            parameters={},
            is_enabled=True,
        )
        metric = AgentMetric(
            agent_id=sample_cost_agent.id,
            metric_name="test_metric",
            metric_value=100.0,
            metric_unit="count",
            collection_timestamp=datetime.utcnow(),
            metadata={},
        )
        db_session.add_all([config, state, capability, metric])
        db_session.commit()

        agent = db_session.query(Agent).filter_by(id=sample_cost_agent.id).first()

        assert len(agent.configs) >= 1
        assert agent.state is not None
        assert len(agent.capabilities) >= 1
        assert len(agent.metrics) >= 1

    def test_agent_deletion_cascades(self, db_session):
        agent = Agent(  # deviation: no capabilities=["test"], the name of the relationship
            type="test",
            name="Test Agent",
            version="1.0.0",
            status="active",
            endpoint="http://test:8000",
            last_heartbeat=datetime.utcnow(),
        )
        db_session.add(agent)
        db_session.commit()
        agent_id = agent.id

        config = AgentConfig(
            agent_id=agent_id, config_key="test", config_value="test", config_type="string", description="Test"
        )
        state = AgentState(
            agent_id=agent_id,
            status="active",
            current_workflow=None,
            workflow_data={},
            resource_locks=[],
            error_count=0,
            last_heartbeat=datetime.utcnow(),
        )
        capability = AgentCapability(
            agent_id=agent_id,
            capability_name="test",
            capability_version="1.0.0",
            description="Test",
            parameters={},
            is_enabled=True,
        )
        metric = AgentMetric(
            agent_id=agent_id,
            metric_name="test",
            metric_value=1.0,
            metric_unit="count",
            collection_timestamp=datetime.utcnow(),
            metadata={},
        )
        db_session.add_all([config, state, capability, metric])
        db_session.commit()
        config_id, state_id, capability_id, metric_id = config.id, state.id, capability.id, metric.id

        db_session.delete(agent)
        db_session.commit()

        assert db_session.query(Agent).filter_by(id=agent_id).first() is None
        assert db_session.query(AgentConfig).filter_by(id=config_id).first() is None
        assert db_session.query(AgentState).filter_by(id=state_id).first() is None
        assert db_session.query(AgentCapability).filter_by(id=capability_id).first() is None
        assert db_session.query(AgentMetric).filter_by(id=metric_id).first() is None

    def test_query_agent_with_active_workflow(self, db_session):
        agent1 = Agent(  # deviation, in both agents: no capabilities=["test"]
            type="cost", name="Agent 1", version="1.0.0", status="active", endpoint="http://a1:8000",
            last_heartbeat=datetime.utcnow(),
        )
        agent2 = Agent(
            type="performance", name="Agent 2", version="1.0.0", status="active", endpoint="http://a2:8000",
            last_heartbeat=datetime.utcnow(),
        )
        db_session.add_all([agent1, agent2])
        db_session.commit()

        state1 = AgentState(
            agent_id=agent1.id,
            status="active",
            current_workflow="analysis",
            workflow_data={},
            resource_locks=["resource1"],
            error_count=0,
            last_heartbeat=datetime.utcnow(),
        )
        state2 = AgentState(
            agent_id=agent2.id,
            status="idle",
            current_workflow=None,
            workflow_data={},
            resource_locks=[],
            error_count=0,
            last_heartbeat=datetime.utcnow(),
        )
        db_session.add_all([state1, state2])
        db_session.commit()

        active_agents = (
            db_session.query(Agent)
            .join(AgentState)
            .filter(AgentState.status == "active", AgentState.current_workflow.isnot(None))
            .all()
        )

        assert len(active_agents) == 1
        assert active_agents[0].id == agent1.id


# -- beyond the seed's plan ----------------------------------------------------------------


def test_the_database_fills_what_a_seed_client_leaves_out(db_session, sample_cost_agent):
    """``sample_cost_agent`` gives no status, heartbeat or timestamps: the database's defaults do."""
    assert sample_cost_agent.status == "active"
    assert sample_cost_agent.last_heartbeat.tzinfo is not None
    assert sample_cost_agent.created_at == sample_cost_agent.updated_at  # one now() per transaction


def test_without_the_defaults_a_seed_client_cannot_insert(db_session, pg_url):
    db = open_database(pg_url)
    assert schema.rollback(db, "0003_database_defaults")[-1] == "0003_database_defaults"
    db.close()
    db_session.add(Agent(type="cost", name="Cost Optimizer", version="1.0.0", status="active"))

    with pytest.raises(IntegrityError, match="violates not-null constraint"):
        db_session.commit()


def test_optistate_reads_what_a_seed_client_wrote(db_session, sample_agent_config, pg_url):
    with optistate.connect(pg_url) as store:
        assert store.agent("Cost Optimizer").config["test_threshold"] == 100
