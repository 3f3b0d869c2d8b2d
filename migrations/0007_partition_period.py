"""PostgreSQL: ``optistate_partitioning`` stores the span of each new ``agent_metrics`` partition.

One row per partitioned table, holding the period that every optistate
process sharing the database reads when it makes a partition, so that they
all cut the same bounds (see :mod:`optistate.partitions`). It starts at one
day, the layout migration 0005 made. Numbered 0007: 0006 is the change log's.
SQLite keeps its one metrics table: nothing to do.
"""
from optistate.migrations._ddl import is_sqlite


def up(migrator, db):
    if not is_sqlite(db):
        db.execute_sql("CREATE TABLE optistate_partitioning (table_name TEXT PRIMARY KEY,"
                       " period INTERVAL NOT NULL CHECK (period >= interval '1 hour'))")
        db.execute_sql("INSERT INTO optistate_partitioning VALUES ('agent_metrics', interval '1 day')")


def down(migrator, db):
    if not is_sqlite(db):
        db.execute_sql("DROP TABLE optistate_partitioning")
