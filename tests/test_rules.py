"""The schema's rules, checked in the database itself on SQLite and PostgreSQL.

Keys are UUIDs; timestamps are aware UTC and ``updated_at`` moves on every
update, however it is made; unique keys, JSONB and indexes are real database
objects. Every refused value raises an :mod:`optistate.errors` class that
names the field and the value (masked when sensitive), and stores nothing.
"""
from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime, timedelta, timezone

import peewee
import pytest

from optistate.database import is_sqlite
from optistate.errors import IntegrityError, ValidationError
from optistate.fields import TimestampField, utcnow
from optistate.models import MODELS, Agent, AgentCapability, AgentConfig, AgentMetric, AgentState

UTC = timezone.utc
LONG_AGO = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def columns_of(*kinds: type[peewee.Field]) -> list[tuple[str, str]]:
    """``(table, column)`` for every model field of one of ``kinds``."""
    return [
        (model._meta.table_name, field.column_name)
        for model in MODELS
        for field in model._meta.sorted_fields
        if isinstance(field, kinds)
    ]


def column_types(database: peewee.Database, table: str) -> dict[str, str]:
    """The declared type of each column of ``table``, as the database reports it."""
    if is_sqlite(database):
        return {row[1]: row[2] for row in database.execute_sql(f"PRAGMA table_info({table})")}
    cursor = database.execute_sql(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return dict(cursor.fetchall())


def row_counts() -> dict[str, int]:
    return {model.__name__: model.select().count() for model in MODELS}


def floor_ms(moment: datetime) -> datetime:
    """``moment`` cut to the millisecond: SQLite's clock, which the triggers use, has no finer grain."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# A minimal new row of each model (``agent`` may be an Agent or a bare id), with a JSON value where it has one.
NEW = {
    Agent: lambda agent: {"type": "t", "name": "n", "version": "1"},
    AgentConfig: lambda agent: {"agent": agent, "config_key": "k", "config_value": "v"},
    AgentState: lambda agent: {"agent": agent, "last_error": {"error": "boom"}},
    AgentCapability: lambda agent: {"agent": agent, "capability_name": "c", "parameters": {"p": 1}},
    AgentMetric: lambda agent: {"agent": agent, "metric_name": "m", "metric_value": 1.5, "metadata": {"region": "eu"}},
}
# A text column of each model with ``updated_at``, for updates to change.
CHANGED = {Agent: "version", AgentConfig: "description", AgentState: "current_workflow", AgentCapability: "description"}


def one_of_each(agent: Agent) -> list[peewee.Model]:
    return [agent, *(model.create(**NEW[model](agent)) for model in MODELS[1:])]


def metric(agent: Agent, **fields) -> AgentMetric:
    return AgentMetric.create(**{**NEW[AgentMetric](agent), **fields})


def capability(agent: Agent, **fields) -> AgentCapability:
    return AgentCapability.create(**{**NEW[AgentCapability](agent), **fields})


def config(agent: Agent, key: str, value, config_type: str, **fields) -> AgentConfig:
    return AgentConfig.create(agent=agent, config_key=key, config_value=value, config_type=config_type, **fields)


COLUMN_KINDS = {
    "uuid": ((peewee.UUIDField, peewee.ForeignKeyField), {"postgres": "uuid", "sqlite": "TEXT"}),
    "timestamp": ((TimestampField,), {"postgres": "timestamp with time zone", "sqlite": "TEXT"}),
    "json": ((peewee.JSONField,), {"postgres": "jsonb", "sqlite": "TEXT"}),
    "float": ((peewee.FloatField,), {"postgres": "double precision", "sqlite": "REAL"}),
}


def kind_of(backend: str) -> str:
    """The database a backend is: PgBouncer's is PostgreSQL."""
    return "sqlite" if backend == "sqlite" else "postgres"


class TestColumns:
    @pytest.mark.parametrize("kind", COLUMN_KINDS)
    def test_column_types(self, database, backend, kind):
        fields, expected = COLUMN_KINDS[kind]
        columns = columns_of(*fields)
        assert columns, f"no {kind} fields on the models"
        for table, column in columns:
            assert column_types(database, table)[column] == expected[kind_of(backend)], (table, column)

    def test_primary_keys_are_uuid4(self, sample_cost_agent):
        rows = one_of_each(sample_cost_agent)
        for row in rows:
            stored = type(row).get_by_id(row.id)
            assert isinstance(stored.id, uuid.UUID) and stored.id.version == 4, type(row).__name__
        assert len({row.id for row in rows}) == len(rows)

    def test_json_is_stored_as_json(self, database, sample_cost_agent):
        one_of_each(sample_cost_agent)

        for model in MODELS:
            for field in model._meta.sorted_fields:
                if isinstance(field, peewee.JSONField):
                    sql = f"SELECT {field.column_name} FROM {model._meta.table_name}"
                    raw = database.execute_sql(sql).fetchone()[0]
                    decoded = json.loads(raw) if is_sqlite(database) else raw  # psycopg2 decodes JSONB itself
                    assert decoded == getattr(model.get(), field.name), sql

    def test_metric_values_keep_double_precision(self, sample_cost_agent):
        values = [16_777_217.0, 1_234_567_890_123.0, 123_456.789, 0.1 + 0.2, 5e-324]
        for value in values:
            metric(sample_cost_agent, metric_value=value)

        assert sorted(m.metric_value for m in AgentMetric.select()) == sorted(values)

    def test_stored_timestamps_carry_utc(self, database, backend, sample_cost_agent):
        raw = database.execute_sql("SELECT created_at FROM agents").fetchone()[0]

        if backend == "sqlite":
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00", raw)
            raw = datetime.fromisoformat(raw)
        assert raw.utcoffset() is not None
        assert raw == Agent.get_by_id(sample_cost_agent.id).created_at


class TestTimestamps:
    @pytest.mark.parametrize(
        "given",
        [
            datetime(2025, 1, 2, 3, 4, 5, 678901),
            datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            datetime(2025, 1, 2, 8, 34, 5, 678901, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ],
        ids=["naive", "utc", "plus0530"],
    )
    def test_read_back_aware_utc(self, sample_cost_agent, given):
        row = metric(sample_cost_agent, collection_timestamp=given)

        stored = AgentMetric.get_by_id(row.id).collection_timestamp
        assert stored == datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        assert stored.utcoffset() == timedelta(0)

    def test_order_and_ranges_follow_time_across_offsets(self, sample_cost_agent):
        base = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
        tokyo, new_york = timezone(timedelta(hours=9)), timezone(timedelta(hours=-5))
        metric(sample_cost_agent, metric_value=3, collection_timestamp=base.astimezone(tokyo) + timedelta(minutes=2))
        metric(sample_cost_agent, metric_value=1, collection_timestamp=base.astimezone(new_york))
        metric(sample_cost_agent, metric_value=2, collection_timestamp=base + timedelta(minutes=1))
        metric(sample_cost_agent, metric_value=4, collection_timestamp=base + timedelta(hours=1))
        start, naive_end = base.astimezone(tokyo), (base + timedelta(minutes=2)).replace(tzinfo=None)

        ordered = AgentMetric.select().order_by(AgentMetric.collection_timestamp)
        in_range = AgentMetric.select().where(AgentMetric.collection_timestamp.between(start, naive_end))

        assert [m.metric_value for m in ordered] == [1, 2, 3, 4]
        assert sorted(m.metric_value for m in in_range) == [1, 2, 3]

    @pytest.mark.parametrize("model", list(CHANGED), ids=lambda m: m.__name__)
    def test_created_and_updated_at_are_set_on_insert(self, sample_cost_agent, model):
        start = floor_ms(utcnow())
        row = model.create(**NEW[model](sample_cost_agent))

        stored = model.get_by_id(row.id)
        assert start <= stored.created_at <= utcnow()
        assert start <= stored.updated_at <= utcnow()


class TestUpdatedAt:
    @pytest.fixture(params=list(CHANGED), ids=lambda m: m.__name__)
    def old_row(self, request, database):
        """A row of the model, created and last updated long ago, alone in its table."""
        model = request.param
        owner = None if model is Agent else Agent.create(type="owner", name="o", version="1")
        return model.create(created_at=LONG_AGO, updated_at=LONG_AGO, **NEW[model](owner))

    @pytest.mark.parametrize("how", ["model_save", "update_query", "raw_sql"])
    def test_updated_at_moves_on_every_update(self, database, old_row, how):
        model, column = type(old_row), CHANGED[type(old_row)]
        start = floor_ms(utcnow())

        if how == "model_save":
            setattr(old_row, column, "2")
            old_row.save()
        elif how == "update_query":
            model.update({getattr(model, column): "2"}).where(model.id == old_row.id).execute()
        else:
            database.execute_sql(f"UPDATE {model._meta.table_name} SET {column} = {database.param}", ("2",))

        stored = model.get_by_id(old_row.id)
        assert getattr(stored, column) == "2"
        assert stored.created_at == LONG_AGO
        assert start <= stored.updated_at <= utcnow()

    def test_updated_at_not_before_created_at_within_a_transaction(self, database):
        with database.atomic():
            agent = Agent.create(type="t", name="n", version="1")
            Agent.update(version="2").where(Agent.id == agent.id).execute()
            config = AgentConfig.create(agent=agent, config_key="k", config_value="v")
            AgentConfig.update(description="d").where(AgentConfig.id == config.id).execute()

        for row in (Agent.get_by_id(agent.id), AgentConfig.get_by_id(config.id)):
            assert row.updated_at >= row.created_at, type(row).__name__

    def test_an_update_that_sets_updated_at_keeps_it(self, old_row):
        model, later = type(old_row), LONG_AGO + timedelta(minutes=5)

        model.update(updated_at=later).where(model.id == old_row.id).execute()

        assert model.get_by_id(old_row.id).updated_at == later


UNIQUE_KEYS = [
    ("agents", ["type", "name"]),
    ("agent_configs", ["agent_id", "config_key"]),
    ("agent_capabilities", ["agent_id", "capability_name", "capability_version"]),
    ("agent_states", ["agent_id"]),
]


class TestConstraints:
    @pytest.mark.parametrize(("table", "columns"), UNIQUE_KEYS, ids=[t for t, _ in UNIQUE_KEYS])
    def test_unique_key_is_a_database_index(self, database, table, columns):
        assert [ix.columns for ix in database.get_indexes(table) if ix.unique and ix.columns == columns] == [columns]

    @pytest.mark.parametrize("model", list(CHANGED), ids=lambda m: m.__name__)
    def test_duplicate_is_refused(self, sample_cost_agent, model):
        model.create(**NEW[model](sample_cost_agent))
        before = row_counts()

        with pytest.raises(IntegrityError, match=r"(?i)unique|duplicate"):
            model.create(**NEW[model](sample_cost_agent))
        assert row_counts() == before

    def test_distinct_keys_coexist(self, sample_cost_agent):
        other = Agent.create(type="performance", name=sample_cost_agent.name, version="1.0.0")
        for agent in (sample_cost_agent, other):
            AgentConfig.create(agent=agent, config_key="threshold", config_value="1")
        for version in ("1.0.0", "1.1.0", "2.0.0-rc.1"):
            AgentCapability.create(agent=sample_cost_agent, capability_name="scaling", capability_version=version)

        assert AgentConfig.select().where(AgentConfig.config_key == "threshold").count() == 2
        assert AgentCapability.select().where(AgentCapability.capability_name == "scaling").count() == 3

    @pytest.mark.parametrize("model", MODELS[1:], ids=lambda m: m.__name__)
    def test_row_for_a_missing_agent_is_refused(self, database, model):
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            model.create(**NEW[model](uuid.uuid4()))
        assert model.select().count() == 0


def index_sql(database, table) -> list[str]:
    """Each index's definition; on PostgreSQL from pg_indexes, which also lists a partitioned table's own indexes."""
    if is_sqlite(database):
        return [ix.sql or "" for ix in database.get_indexes(table)]
    return [row[0] for row in database.execute_sql("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))]


class TestIndexes:
    def test_metric_indexes(self, database):
        defs = index_sql(database, "agent_metrics")
        columns = [re.sub(r"[\s\"]", "", sql.rsplit("(", 1)[-1].rstrip(")")) for sql in defs]

        assert "agent_id,metric_name,collection_timestamp" in columns
        assert "collection_timestamp" in columns

    def test_gin_indexes_only_on_postgres(self, database, backend):
        found = set()
        for table, column in [("agent_metrics", "metadata"), ("agent_capabilities", "parameters")]:
            for sql in index_sql(database, table):
                if re.search(rf"USING gin \({column}\b", sql, re.IGNORECASE):
                    found.add((table, column))

        expected = {("agent_metrics", "metadata"), ("agent_capabilities", "parameters")}
        assert found == (expected if backend != "sqlite" else set())


class TestConfigValues:
    @pytest.mark.parametrize(
        ("config_type", "given", "stored", "value"),
        [
            ("number", "5000", "5000", 5000),
            ("number", "0.85", "0.85", 0.85),
            ("integer", 5000, "5000", 5000),
            ("float", "15", "15.0", 15.0),
            ("boolean", True, "true", True),
            ("boolean", "off", "false", False),
            ("json", {"regions": ["us-west"]}, '{"regions":["us-west"]}', {"regions": ["us-west"]}),
            ("string", "5000", "5000", "5000"),
        ],
    )
    def test_stored_string_and_typed_value(self, database, sample_cost_agent, config_type, given, stored, value):
        AgentConfig.create(agent=sample_cost_agent, config_key="k", config_value=given, config_type=config_type)

        raw = database.execute_sql("SELECT config_value FROM agent_configs").fetchone()[0]
        config = AgentConfig.get()
        assert raw == config.config_value == stored
        assert config.value == value and type(config.value) is type(value)


BAD_INPUTS = {
    "config_type": (lambda a: config(a, "k", "v", "yaml"), r"config_type='yaml'"),
    "agent_status": (lambda a: Agent.create(type="t", name="n", version="1", status="sleeping"), r"status='sleeping'"),
    "state_status": (lambda a: AgentState.create(agent=a, status="sleeping"), r"status='sleeping'"),
    "metric_type": (lambda a: metric(a, metric_type="summary"), r"metric_type='summary'"),
    "integer": (lambda a: config(a, "max_retries", "abc", "integer"), r"max_retries='abc': .*integer"),
    "float": (lambda a: config(a, "ratio", "1.2.3", "float"), r"ratio='1\.2\.3': .*float"),
    "boolean": (lambda a: config(a, "dry_run", "maybe", "boolean"), r"dry_run='maybe': .*boolean"),
    "json": (lambda a: config(a, "rules", "{not json", "json"), r"rules='\{not json': .*json"),
    "semver_short": (lambda a: capability(a, capability_version="1.0"), r"capability_version='1\.0': .*semantic"),
    "semver_prefixed": (lambda a: capability(a, capability_version="v1.0.0"), r"capability_version='v1\.0\.0'"),
    "semver_word": (lambda a: capability(a, capability_version="latest"), r"capability_version='latest'"),
    "json_set": (lambda a: AgentState.create(agent=a, workflow_data={"ids": {1, 2}}), r"workflow_data=\{'ids': \{1, 2"),
    "json_object": (lambda a: capability(a, parameters=object()), r"parameters=<object object at 0x[0-9a-f]+>: .*JSON"),
    "json_nan": (lambda a: metric(a, metadata={"p99": math.nan}), r"metadata=\{'p99': nan\}: .*JSON"),
    "metric_nan": (lambda a: metric(a, metric_value=math.nan), r"metric_value=nan: .*finite"),
    "metric_inf": (lambda a: metric(a, metric_value=math.inf), r"metric_value=inf: .*finite"),
    "metric_minus_inf": (lambda a: metric(a, metric_value=-math.inf), r"metric_value=-inf: .*finite"),
    "metric_text": (lambda a: metric(a, metric_value="12"), r"metric_value='12': .*number"),
}


# model, column, a good value to create the row with, a bad value to update it to, the field the error names
# (a config value is named by its key).
BAD_UPDATES = {
    "agent_status": (Agent, "status", {"status": "idle"}, "sleeping", "status"),
    "state_status": (AgentState, "status", {"status": "idle"}, "sleeping", "status"),
    "version": (AgentCapability, "capability_version", {"capability_version": "1.0.0"}, "2", "capability_version"),
    "metric_value": (AgentMetric, "metric_value", {"metric_value": 3.0}, math.inf, "metric_value"),
    "parameters": (AgentCapability, "parameters", {"parameters": {"a": 1}}, {"a": {1}}, "parameters"),
    "config_value": (AgentConfig, "config_value", {"config_type": "integer", "config_value": "10"}, "ten", "k"),
}


class TestValidation:
    @pytest.mark.parametrize("case", BAD_INPUTS)
    def test_bad_input_is_refused_and_nothing_stored(self, sample_cost_agent, case):
        create, message = BAD_INPUTS[case]
        before = row_counts()

        with pytest.raises(ValidationError, match=message):
            create(sample_cost_agent)
        assert row_counts() == before

    @pytest.mark.parametrize("case", BAD_UPDATES)
    def test_bad_value_on_save_changes_nothing(self, sample_cost_agent, case):
        model, column, good, bad, named = BAD_UPDATES[case]
        row = model.create(**{**NEW[model](sample_cost_agent), **good})
        before = model.get_by_id(row.id).__data__

        setattr(row, column, bad)
        with pytest.raises(ValidationError, match=f"{named}={re.escape(repr(bad))}: "):
            row.save()
        assert model.get_by_id(row.id).__data__ == before

    # Not config_value: an UPDATE query cannot see each row's config_type, so AgentConfig checks it in save() only.
    @pytest.mark.parametrize("case", [case for case in BAD_UPDATES if case != "config_value"])
    def test_bad_value_in_update_query_changes_nothing(self, sample_cost_agent, case):
        model, column, good, bad, named = BAD_UPDATES[case]
        row = model.create(**{**NEW[model](sample_cost_agent), **good})
        before = model.get_by_id(row.id).__data__

        with pytest.raises(ValidationError, match=f"{named}={re.escape(repr(bad))}: "):
            model.update({getattr(model, column): bad}).where(model.id == row.id).execute()
        assert model.get_by_id(row.id).__data__ == before


class TestSensitive:
    def test_value_masked_in_repr_and_str(self, sample_cost_agent):
        secret = config(sample_cost_agent, "api_key", "hunter2", "string", is_sensitive=True)
        plain = config(sample_cost_agent, "region", "eu-west-1", "string")

        for row in (secret, AgentConfig.get_by_id(secret.id)):
            assert "hunter2" not in repr(row) and "hunter2" not in str(row)
            assert "***" in repr(row) and "api_key" in repr(row)
        assert "eu-west-1" in repr(plain)

    @pytest.mark.parametrize(
        ("config_type", "secret"),
        [("integer", "hunter2"), ("float", "hunter2"), ("boolean", "hunter"), ("json", "{hunter2"), ("string", 4242)],
    )
    def test_refused_value_not_in_error(self, sample_cost_agent, config_type, secret):
        with pytest.raises(ValidationError, match=r"api_key=\*\*\*:") as caught:
            config(sample_cost_agent, "api_key", secret, config_type, is_sensitive=True)

        shown = " ".join([str(caught.value), repr(caught.value), *map(str, caught.value.args)])
        assert str(secret) not in shown
        assert AgentConfig.select().count() == 0

    def test_unreadable_stored_value_not_in_error(self, database, sample_cost_agent):
        stored = config(sample_cost_agent, "api_port", "8443", "integer", is_sensitive=True)
        database.execute_sql(f"UPDATE agent_configs SET config_value = {database.param}", ("hunter2",))

        with pytest.raises(ValidationError, match=r"api_port=\*\*\*:") as caught:
            _ = AgentConfig.get_by_id(stored.id).value
        assert "hunter2" not in str(caught.value) + repr(caught.value)
