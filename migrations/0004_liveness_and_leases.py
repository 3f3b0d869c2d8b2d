"""Liveness and leases: ``agents.ttl_seconds`` and the ``agent_leases`` table.

``ttl_seconds`` (default 30) is how long an agent counts as alive after its
last heartbeat. ``agent_leases`` holds one row per resource ever locked: the
holder (NULL when free; ON DELETE SET NULL, so deleting an agent frees its
leases), the fencing ``token``, the lease's own TTL and its times. A released
or expired lease keeps its row so that the next acquisition's token is the
last one plus one: tokens never repeat or go back for a resource, which a
row deleted with its holder could not promise.
"""
from optistate.migrations._ddl import is_sqlite


def up(migrator, db):
    sqlite = is_sqlite(db)
    real, stamp, ident = ("REAL", "TEXT", "TEXT") if sqlite else ("DOUBLE PRECISION", "TIMESTAMPTZ", "UUID")
    db.execute_sql(
        f"ALTER TABLE agents ADD COLUMN ttl_seconds {real} DEFAULT 30 NOT NULL CHECK (ttl_seconds > 0)"
    )
    db.execute_sql(
        "CREATE TABLE agent_leases ("
        " resource VARCHAR(255) NOT NULL PRIMARY KEY,"
        f" holder_id {ident} REFERENCES agents (id) ON DELETE SET NULL,"
        " token BIGINT NOT NULL CHECK (token > 0),"
        f" ttl_seconds {real} NOT NULL CHECK (ttl_seconds > 0),"
        f" acquired_at {stamp} NOT NULL,"
        f" expires_at {stamp} NOT NULL)"
    )
    db.execute_sql("CREATE INDEX agent_leases_holder_id ON agent_leases (holder_id)")


def down(migrator, db):
    db.execute_sql("DROP TABLE agent_leases")
    db.execute_sql("ALTER TABLE agents DROP COLUMN ttl_seconds")
