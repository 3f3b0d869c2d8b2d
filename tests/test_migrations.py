"""Migrations up, down and up again on both backends; many processes at once; from an installed wheel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import distribution, requires
from pathlib import Path

import peewee
import pytest

from optistate import schema
from optistate.database import is_sqlite, open_database
from optistate.errors import MigrationError
from optistate.fields import utcnow
from optistate.models import MODELS, Agent, AgentCapability, AgentConfig, AgentMetric, AgentState
from optistate.schema import HISTORY_TABLE, MigrationStatus
from optistate.testing import run_together

REPO = Path(__file__).resolve().parent.parent
ALL = ["0001_agents", "0002_agent_state_tables", "0003_database_defaults", "0004_liveness_and_leases",
       "0005_partitioned_metrics", "0006_change_log", "0007_partition_period"]
TABLES = {"agents", "agent_configs", "agent_states", "agent_capabilities", "agent_metrics"}
ALL_TABLES = TABLES | {"agent_leases"}  # 0004's leases are not among the defaulted tables


def change_log(db: peewee.Database) -> set[str]:
    """0006's tables: the log, its revision counter, and on SQLite the actor's row."""
    return {"agent_events", "optistate_revision"} | ({"optistate_actor"} if is_sqlite(db) else set())
PROCESSES = 4
LONG_AGO = datetime(2024, 5, 1, tzinfo=timezone.utc)


@pytest.fixture
def empty(db_url: str) -> Iterator[peewee.Database]:
    """A connection to an empty database on the test's backend."""
    db = open_database(db_url)
    yield db
    db.close()


# PostgreSQL only: 0005's partitions of agent_metrics and 0007's table of their period
PARTITIONING = re.compile(r"agent_metrics_(p[0-9]{8}(_[0-9]{2})?|default)|optistate_partitioning")


def tables(db: peewee.Database) -> set[str]:
    return {name for name in db.get_tables() if not PARTITIONING.fullmatch(name)}


def trigger_function_exists(db: peewee.Database) -> bool:
    found = db.execute_sql("SELECT count(*) FROM pg_proc WHERE proname = 'optistate_touch_updated_at'").fetchone()[0]
    return bool(found)


class TestMigrate:
    def test_up_applies_each_migration_once(self, empty):
        assert schema.status(empty) == [MigrationStatus(name, False) for name in ALL]

        assert schema.migrate(empty) == ALL
        assert schema.migrate(empty) == []

        assert tables(empty) == ALL_TABLES | change_log(empty) | {HISTORY_TABLE}
        assert schema.status(empty) == [MigrationStatus(name, True) for name in ALL]

    def test_up_to_a_target(self, empty):
        assert schema.migrate(empty, "0001_agents") == ["0001_agents"]

        assert tables(empty) == {"agents", HISTORY_TABLE}
        assert schema.status(empty) == [MigrationStatus(name, name == "0001_agents") for name in ALL]

    def test_rollback_reverts_the_latest(self, empty):
        schema.migrate(empty)

        assert schema.rollback(empty) == ["0007_partition_period"]
        assert "optistate_partitioning" not in empty.get_tables()
        assert schema.rollback(empty) == ["0006_change_log"]
        assert tables(empty) == ALL_TABLES | {HISTORY_TABLE}
        assert "revision" not in {c.name for c in empty.get_columns("agent_configs")}
        assert schema.rollback(empty) == ["0005_partitioned_metrics"]
        assert tables(empty) == ALL_TABLES | {HISTORY_TABLE}
        assert set(empty.get_tables()) == ALL_TABLES | {HISTORY_TABLE}  # no partition is left
        assert schema.rollback(empty) == ["0004_liveness_and_leases"]
        assert tables(empty) == TABLES | {HISTORY_TABLE}
        assert schema.rollback(empty) == ["0003_database_defaults"]
        assert tables(empty) == TABLES | {HISTORY_TABLE}
        assert schema.rollback(empty) == ["0002_agent_state_tables"]
        assert tables(empty) == {"agents", HISTORY_TABLE}

    def test_rollback_through_the_first_leaves_only_history(self, empty):
        schema.migrate(empty)

        assert schema.rollback(empty, "0001_agents") == list(reversed(ALL))

        assert tables(empty) == {HISTORY_TABLE}
        assert schema.status(empty) == [MigrationStatus(name, False) for name in ALL]
        if not is_sqlite(empty):
            assert not trigger_function_exists(empty)

    def test_reapplied_schema_works(self, empty):
        schema.migrate(empty)
        schema.rollback(empty, "0001_agents")

        assert schema.migrate(empty) == ALL
        with empty.bind_ctx(MODELS):
            agent = Agent.create(type="t", name="n", version="1")
            config = AgentConfig.create(agent=agent, config_key="k", config_value="1", updated_at=LONG_AGO)
            empty.execute_sql("UPDATE agent_configs SET description = 'touched'")  # the trigger is back
            assert AgentConfig.get_by_id(config.id).updated_at > LONG_AGO
            empty.execute_sql("DELETE FROM agents")  # and so is the cascade
            assert AgentConfig.select().count() == 0

    def test_unknown_targets(self, empty):
        with pytest.raises(MigrationError, match="0099_nope"):
            schema.migrate(empty, "0099_nope")
        with pytest.raises(MigrationError, match="0002_agent_state_tables"):
            schema.rollback(empty, "0002_agent_state_tables")
        assert HISTORY_TABLE not in tables(empty)

    def test_failed_run_changes_nothing(self, empty):
        empty.execute_sql("CREATE TABLE agent_metrics (id INTEGER)")  # 0002 cannot create its table

        with pytest.raises(MigrationError, match="agent_metrics"):
            schema.migrate(empty)

        assert tables(empty) == {"agent_metrics"}  # 0001's agents table went with the failed run


# -- 0003: database-side defaults, for writers other than optistate ----------------------------

DEFAULTED = {
    "agents": {"id", "status", "last_heartbeat", "created_at", "updated_at"},
    "agent_configs": {"id", "config_type", "is_sensitive", "created_at", "updated_at"},
    "agent_states": {
        "id", "status", "workflow_data", "resource_locks", "error_count", "last_heartbeat", "resource_usage",
        "metadata", "created_at", "updated_at",
    },
    "agent_capabilities": {"id", "capability_version", "parameters", "is_enabled", "created_at", "updated_at"},
    "agent_metrics": {"id", "metric_type", "metadata", "collection_timestamp"},
}
STORED_TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00"  # TimestampField's text on SQLite


def defaulted(db: peewee.Database) -> dict[str, set[str]]:
    """The columns of each table that have a default, as the database reports them."""
    if is_sqlite(db):
        found = {t: {row[1] for row in db.execute_sql(f"PRAGMA table_info({t})") if row[4] is not None} for t in TABLES}
    else:
        cursor = db.execute_sql(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_default IS NOT NULL"
        )
        found = {t: set() for t in TABLES}
        for table, column in cursor.fetchall():
            if table in found:  # the history table's serial id has one too
                found[table].add(column)
    return found


def insert_bare_rows(db: peewee.Database) -> str:
    """One row in each table, in plain SQL giving only the columns without a default; the agent's id."""
    db.execute_sql("INSERT INTO agents (type, name, version) VALUES ('t', 'bare', '1')")
    agent_id = db.execute_sql("SELECT id FROM agents WHERE name = 'bare'").fetchone()[0]
    for sql in (
        "INSERT INTO agent_configs (agent_id, config_key, config_value) VALUES ({}, 'k', 'v')",
        "INSERT INTO agent_states (agent_id) VALUES ({})",
        "INSERT INTO agent_capabilities (agent_id, capability_name) VALUES ({}, 'c')",
        "INSERT INTO agent_metrics (agent_id, metric_name, metric_value) VALUES ({}, 'm', 1.5)",
    ):
        db.execute_sql(sql.format(db.param), (agent_id,))
    return agent_id


def schema_objects(db: peewee.Database) -> list[tuple]:
    """Every index, trigger and constraint with its definition."""
    if is_sqlite(db):
        return sorted(db.execute_sql("SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger')"))
    return sorted(db.execute_sql(
        "SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "UNION ALL SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
        "UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = current_schema()::regnamespace"
    ))


def every_row(db: peewee.Database) -> dict[str, list]:
    return {t: sorted(db.execute_sql(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}


class TestDefaults:
    def test_a_row_may_leave_every_defaulted_column_out(self, empty):
        schema.migrate(empty)
        start = utcnow().replace(microsecond=utcnow().microsecond // 1000 * 1000)  # SQLite's clock: milliseconds

        agent_id = insert_bare_rows(empty)

        end = utcnow()
        with empty.bind_ctx(MODELS):
            agent = Agent.get_by_id(agent_id)
            rows = [agent, *(model.get() for model in (AgentConfig, AgentState, AgentCapability, AgentMetric))]
        _, config, state, capability, metric = rows
        assert all(row.id.version == 4 for row in rows) and len({row.id for row in rows}) == len(rows)
        stamps = [agent.last_heartbeat, state.last_heartbeat, metric.collection_timestamp]
        stamps += [moment for row in rows[:-1] for moment in (row.created_at, row.updated_at)]
        assert all(start <= moment <= end for moment in stamps), (start, stamps, end)
        assert (agent.status, agent.endpoint) == ("active", None)
        assert (config.config_type, config.is_sensitive, config.description) == ("string", False, None)
        assert (state.status, state.current_workflow) == ("idle", None)
        assert (state.workflow_data, state.resource_locks) == ({}, [])
        assert (state.error_count, state.last_error, state.resource_usage, state.metadata) == (0, None, {}, {})
        assert (capability.capability_version, capability.parameters, capability.is_enabled) == ("1.0.0", {}, True)
        assert (metric.metric_type, metric.metric_unit, metric.metadata) == ("gauge", None, {})

    def test_defaults_leave_rows_indexes_triggers_and_constraints_alone(self, empty):
        schema.migrate(empty, "0002_agent_state_tables")
        with empty.bind_ctx(MODELS):
            # inserted by hand: the models have columns of later migrations (ttl_seconds, revision)
            agent, config = uuid.uuid4(), uuid.uuid4()
            stamp, marks = Agent.last_heartbeat.db_value(LONG_AGO), ", ".join([empty.param] * 7)
            empty.execute_sql(
                "INSERT INTO agents (id, type, name, version, status, last_heartbeat, created_at, updated_at) "
                f"VALUES ({marks}, {empty.param})", (agent.hex, "t", "kept", "1", "active", stamp, stamp, stamp)
            )
            empty.execute_sql(
                "INSERT INTO agent_configs (id, agent_id, config_key, config_value, config_type, is_sensitive,"
                f" created_at, updated_at) VALUES ({marks}, {empty.param})",
                (config.hex, agent.hex, "k", "1", "string", False, stamp, stamp),
            )
        objects, rows, statements = schema_objects(empty), every_row(empty), table_statements(empty)

        assert schema.migrate(empty, "0003_database_defaults") == ["0003_database_defaults"]
        assert (schema_objects(empty), every_row(empty)) == (objects, rows)
        assert schema.rollback(empty) == ["0003_database_defaults"]
        assert (schema_objects(empty), every_row(empty), table_statements(empty)) == (objects, rows, statements)

        schema.migrate(empty)
        empty.execute_sql("UPDATE agent_configs SET description = 'touched'")  # the trigger still fires
        with empty.bind_ctx(MODELS):
            assert AgentConfig.get_by_id(config).updated_at > LONG_AGO
            empty.execute_sql("DELETE FROM agents")  # and the cascade still runs
            assert AgentConfig.select().count() == 0

    def test_downgrade_removes_the_defaults(self, empty):
        schema.migrate(empty, "0003_database_defaults")
        assert defaulted(empty) == DEFAULTED

        assert schema.rollback(empty) == ["0003_database_defaults"]

        assert defaulted(empty) == {t: set() for t in TABLES}
        with pytest.raises(peewee.IntegrityError, match=r"(?i)not.null"):
            insert_bare_rows(empty)


def table_statements(db: peewee.Database) -> list[tuple[str, str]]:
    """SQLite: each table's CREATE statement, which 0003 edits in place (PostgreSQL: nothing)."""
    return sorted(db.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'")) if is_sqlite(db) else []


def test_sqlite_default_timestamps_are_stored_like_optistates_and_sort_with_them(sqlite_url):
    db = open_database(sqlite_url)
    schema.migrate(db)
    with db.bind_ctx(MODELS):
        Agent.create(type="t", name="before", version="1")
        time.sleep(0.002)
        insert_bare_rows(db)
        time.sleep(0.002)
        Agent.create(type="t", name="after", version="1")
    stored = db.execute_sql("SELECT name, created_at, last_heartbeat FROM agents ORDER BY created_at").fetchall()
    db.close()

    assert [name for name, *_ in stored] == ["before", "bare", "after"]
    assert all(re.fullmatch(STORED_TIMESTAMP, moment) for _, *moments in stored for moment in moments), stored


def _migrate(url: str) -> list[str]:
    db = open_database(url)
    try:
        return schema.migrate(db)
    finally:
        db.close()


def test_concurrent_migrate_from_processes(db_url):
    outcomes = run_together(_migrate, (db_url,), PROCESSES)

    assert [kind for kind, _ in outcomes] == ["ok"] * PROCESSES, outcomes
    assert sorted(name for _, names in outcomes for name in names) == ALL  # each applied by exactly one process
    db = open_database(db_url)
    assert [row[0] for row in db.execute_sql(f"SELECT name FROM {HISTORY_TABLE} ORDER BY name")] == ALL
    assert sorted(tables(db)) == sorted(ALL_TABLES | change_log(db) | {HISTORY_TABLE})  # each table exists once
    db.close()


SNIPPET = """
import json, sys
import optistate, optistate.migrations
from optistate import schema
from optistate.database import open_database

db = open_database(sys.argv[1])
print(json.dumps({"files": [optistate.__file__, optistate.migrations.__file__],
                  "applied": schema.migrate(db), "tables": sorted(db.get_tables())}))
"""


def dependency_dirs() -> list[str]:
    """The directories holding optistate's installed requirements, for the new venv to see after its own."""
    names = [re.match(r"[A-Za-z0-9._-]+", req).group() for req in requires("optistate") or [] if "extra ==" not in req]
    return sorted({str(distribution(name).locate_file("")) for name in names})


@pytest.mark.slow
def test_installed_wheel_migrates(tmp_path):
    """``pip install`` (not editable) into a fresh venv; the installed package migrates a database."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)  # no ensurepip needed
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    site = Path(purelib)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet", REPO],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    (site / "_optistate_test_deps.pth").write_text("\n".join(dependency_dirs()) + "\n")

    run = subprocess.run(
        [python, "-c", SNIPPET, f"sqlite:///{tmp_path / 'agents.db'}"], cwd=tmp_path, capture_output=True, text=True
    )

    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["applied"] == ALL
    change_log = {"agent_events", "optistate_revision", "optistate_actor"}  # SQLite's
    assert set(report["tables"]) == ALL_TABLES | change_log | {HISTORY_TABLE}
    assert all(Path(file).is_relative_to(site / "optistate") for file in report["files"]), report["files"]
    installed = {path.name for path in site.iterdir()}
    assert "optistate" in installed
    assert not installed & {"migrations", "plugins", "tests", "bench"}
