"""Database-side defaults, as the seed's migration has them, for writers other than optistate.

optistate fills every column itself. SQLAlchemy, psql or another language
writing to the same database may leave these out: ids, timestamps (now),
``config_type`` 'string', ``status`` ('active' for agents, 'idle' for states),
the JSON columns '{}' (``resource_locks`` '[]'), ``capability_version``
'1.0.0', ``is_enabled`` true, ``is_sensitive`` false, ``error_count`` 0 and
``metric_type`` 'gauge'. The JSON defaults follow what each column holds here:
the seed's migration gave '[]' to its list of workflow ids and '{}' to its locks,
where optistate keeps a workflow's data (an object) and a list of locks.

PostgreSQL: ``ALTER COLUMN … SET DEFAULT``; ids use ``gen_random_uuid()``
(built in from PostgreSQL 13).

SQLite cannot alter a column's default, and the usual rebuild (new table,
copy, drop, rename) is unsafe here: the runner holds a transaction, inside
which foreign keys cannot be switched off, so dropping ``agents`` would
cascade-delete every child row; the rebuild also drops the triggers. SQLite
documents a way for exactly this change (lang_altertable.html, "making other
kinds of table schema changes"): edit the table's CREATE statement in
``sqlite_master`` under ``writable_schema`` and bump ``schema_version``. No row
moves; indexes, triggers and foreign keys are untouched. The edited statements
are first created in a scratch in-memory database, so a bad edit fails there
instead of leaving an unreadable schema. Timestamps default to the stored form
of :class:`optistate.fields.TimestampField` (32 characters, microseconds from
SQLite's milliseconds), so text order stays time order; ids to a random
version-4 UUID in the form peewee stores (32 lowercase hex digits), the same
rule as on PostgreSQL.
"""
import re
import sqlite3

from optistate.errors import MigrationError
from optistate.migrations._ddl import is_sqlite

SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000+00:00', 'now')"
SQLITE_UUID4 = (
    "lower(hex(randomblob(4)) || hex(randomblob(2)) || '4' || substr(hex(randomblob(2)), 2)"
    " || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(2)), 2) || hex(randomblob(6)))"
)


def defaults(sqlite):
    """``{table: {column: default expression}}`` in the backend's SQL."""
    now, uid = (SQLITE_NOW, SQLITE_UUID4) if sqlite else ("now()", "gen_random_uuid()")
    true, false = ("1", "0") if sqlite else ("true", "false")
    obj, arr = ("'{}'", "'[]'") if sqlite else ("'{}'::jsonb", "'[]'::jsonb")
    stamps = {"created_at": now, "updated_at": now}
    return {
        "agents": {"id": uid, "status": "'active'", "last_heartbeat": now, **stamps},
        "agent_configs": {"id": uid, "config_type": "'string'", "is_sensitive": false, **stamps},
        "agent_states": {
            "id": uid, "status": "'idle'", "workflow_data": obj, "resource_locks": arr, "error_count": "0",
            "last_heartbeat": now, "resource_usage": obj, "metadata": obj, **stamps,
        },
        "agent_capabilities": {
            "id": uid, "capability_version": "'1.0.0'", "parameters": obj, "is_enabled": true, **stamps,
        },
        "agent_metrics": {"id": uid, "metric_type": "'gauge'", "metadata": obj, "collection_timestamp": now},
    }


def _postgres(db, add):
    for table, columns in defaults(False).items():
        changes = (f"ALTER COLUMN {c} " + (f"SET DEFAULT {e}" if add else "DROP DEFAULT") for c, e in columns.items())
        db.execute_sql(f"ALTER TABLE {table} " + ", ".join(changes))


def _edit(table, sql, columns, add):
    """``sql`` (a CREATE TABLE) with each column's ``DEFAULT (…)`` added after its type, or removed."""
    for column, expr in columns.items():
        clause = f" DEFAULT ({expr})"
        declared = rf'"{column}" \w+(?:\(\d+\))?'
        pattern = re.compile(f"({declared})(?! DEFAULT)" if add else f"({declared}){re.escape(clause)}")
        sql, found = pattern.subn(lambda m, tail=clause if add else "": m.group(1) + tail, sql)
        if found != 1:
            raise MigrationError(f"0003: {table}.{column} is not declared as this migration expects: {sql}")
    return sql


def _sqlite(db, add):
    tables = defaults(True)
    edited = {}
    for table, columns in tables.items():
        sql = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if sql is None:
            raise MigrationError(f"0003: table {table} is missing")
        edited[table] = _edit(table, sql[0], columns, add)
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(";\n".join(edited.values()))
    except sqlite3.Error as exc:
        raise MigrationError(f"0003: the edited schema does not parse: {exc}") from None
    finally:
        scratch.close()
    version = db.execute_sql("PRAGMA schema_version").fetchone()[0]
    db.execute_sql("PRAGMA writable_schema = ON")
    try:
        for table, sql in edited.items():
            db.execute_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?", (sql, table))
        db.execute_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        db.execute_sql("PRAGMA writable_schema = OFF")


def up(migrator, db):
    (_sqlite if is_sqlite(db) else _postgres)(db, True)


def down(migrator, db):
    (_sqlite if is_sqlite(db) else _postgres)(db, False)
