"""Migrations up, down and up again on both backends; many processes at once; from an installed wheel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import distribution, requires
from pathlib import Path

import peewee
import pytest

from optistate import schema
from optistate.database import is_sqlite, open_database
from optistate.errors import MigrationError
from optistate.models import MODELS, Agent, AgentConfig
from optistate.schema import HISTORY_TABLE, MigrationStatus
from optistate.testing import run_together

REPO = Path(__file__).resolve().parent.parent
ALL = ["0001_agents", "0002_agent_state_tables"]
TABLES = {"agents", "agent_configs", "agent_states", "agent_capabilities", "agent_metrics"}
PROCESSES = 4
LONG_AGO = datetime(2024, 5, 1, tzinfo=timezone.utc)


@pytest.fixture
def empty(db_url: str) -> Iterator[peewee.Database]:
    """A connection to an empty database on the test's backend."""
    db = open_database(db_url)
    yield db
    db.close()


def tables(db: peewee.Database) -> set[str]:
    return set(db.get_tables())


def trigger_function_exists(db: peewee.Database) -> bool:
    found = db.execute_sql("SELECT count(*) FROM pg_proc WHERE proname = 'optistate_touch_updated_at'").fetchone()[0]
    return bool(found)


class TestMigrate:
    def test_up_applies_each_migration_once(self, empty):
        assert schema.status(empty) == [MigrationStatus(name, False) for name in ALL]

        assert schema.migrate(empty) == ALL
        assert schema.migrate(empty) == []

        assert tables(empty) == TABLES | {HISTORY_TABLE}
        assert schema.status(empty) == [MigrationStatus(name, True) for name in ALL]

    def test_up_to_a_target(self, empty):
        assert schema.migrate(empty, "0001_agents") == ["0001_agents"]

        assert tables(empty) == {"agents", HISTORY_TABLE}
        assert schema.status(empty) == [MigrationStatus("0001_agents", True), MigrationStatus(ALL[1], False)]

    def test_rollback_reverts_the_latest(self, empty):
        schema.migrate(empty)

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
    assert sorted(db.get_tables()) == sorted(TABLES | {HISTORY_TABLE})  # each table exists once
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
    assert set(report["tables"]) == TABLES | {HISTORY_TABLE}
    assert all(Path(file).is_relative_to(site / "optistate") for file in report["files"]), report["files"]
    installed = {path.name for path in site.iterdir()}
    assert "optistate" in installed
    assert not installed & {"migrations", "plugins", "tests", "bench"}
