"""Config, state, capability and metric tables; every row cascades with its agent."""
from peewee import (
    BooleanField,
    CharField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    JSONField,
    Model,
    TextField,
    UUIDField,
)

from optistate.migrations._ddl import STATUSES, Timestamp, is_sqlite, one_of, touch_updated_at

CONFIG_TYPES = ("string", "integer", "float", "number", "boolean", "json")
METRIC_TYPES = ("counter", "gauge", "histogram")
TABLES = ("agent_configs", "agent_states", "agent_capabilities", "agent_metrics")


def tables(db):
    class Agent(Model):
        id = UUIDField(primary_key=True)

        class Meta:
            database = db
            table_name = "agents"

    class Frozen(Model):
        id = UUIDField(primary_key=True)
        agent = ForeignKeyField(Agent, on_delete="CASCADE", column_name="agent_id")

        class Meta:
            database = db

    class AgentConfig(Frozen):
        config_key = CharField(max_length=255)
        config_value = TextField()
        config_type = CharField(max_length=32, constraints=[one_of("config_type", CONFIG_TYPES)])
        description = TextField(null=True)
        is_sensitive = BooleanField()
        created_at = Timestamp()
        updated_at = Timestamp()

        class Meta:
            table_name = "agent_configs"
            indexes = ((("agent", "config_key"), True), (("config_key",), False))

    class AgentState(Frozen):
        agent = ForeignKeyField(Agent, on_delete="CASCADE", column_name="agent_id", unique=True)
        status = CharField(max_length=32, constraints=[one_of("status", STATUSES)])
        current_workflow = CharField(max_length=255, null=True)
        workflow_data = JSONField()
        resource_locks = JSONField()
        error_count = IntegerField()
        last_error = JSONField(null=True)
        last_heartbeat = Timestamp()
        resource_usage = JSONField()
        metadata = JSONField()
        created_at = Timestamp()
        updated_at = Timestamp()

        class Meta:
            table_name = "agent_states"
            indexes = ((("status",), False), (("last_heartbeat",), False))

    class AgentCapability(Frozen):
        capability_name = CharField(max_length=255)
        capability_version = CharField(max_length=64)
        description = TextField(null=True)
        parameters = JSONField()
        is_enabled = BooleanField()
        created_at = Timestamp()
        updated_at = Timestamp()

        class Meta:
            table_name = "agent_capabilities"
            indexes = (
                (("agent", "capability_name", "capability_version"), True),
                (("capability_name",), False),
            )

    class AgentMetric(Frozen):
        metric_name = CharField(max_length=255)
        metric_value = DoubleField()
        metric_unit = CharField(max_length=64, null=True)
        metric_type = CharField(max_length=32, constraints=[one_of("metric_type", METRIC_TYPES)])
        metadata = JSONField()
        collection_timestamp = Timestamp()

        class Meta:
            table_name = "agent_metrics"
            indexes = (
                (("agent", "metric_name", "collection_timestamp"), False),
                (("collection_timestamp",), False),
            )

    return [AgentConfig, AgentState, AgentCapability, AgentMetric]


def up(migrator, db):
    db.create_tables(tables(db), safe=False)
    for table in TABLES[:3]:
        touch_updated_at(db, table)
    if not is_sqlite(db):
        # Containment searches (@>) on these columns use the GIN indexes.
        db.execute_sql("CREATE INDEX agent_metrics_metadata_gin ON agent_metrics USING GIN (metadata jsonb_path_ops)")
        db.execute_sql(
            "CREATE INDEX agent_capabilities_parameters_gin ON agent_capabilities USING GIN (parameters jsonb_path_ops)"
        )


def down(migrator, db):
    for table in reversed(TABLES):
        db.execute_sql(f"DROP TABLE {table}")
