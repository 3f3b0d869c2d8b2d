"""PostgreSQL: ``agent_metrics`` becomes range-partitioned by ``collection_timestamp``, one partition per UTC day.

The primary key becomes (id, collection_timestamp), as a partitioned table's
must hold the partition key; a point's id and time are fixed when it is
recorded, so flushes stay exactly once with ``ON CONFLICT (id,
collection_timestamp)``. The foreign key to ``agents`` (ON DELETE CASCADE),
the CHECK on ``metric_type``, the defaults, the btree indexes and the GIN
index on ``metadata`` are declared on the parent, so every partition has
them. Day partitions are made for the days holding rows within 90 days
before now and for yesterday to a week ahead; ``agent_metrics_default`` takes
every other row. The rows are copied in one INSERT … SELECT inside the
migration's transaction. SQLite keeps its one table: nothing to do.
"""
from datetime import datetime, timedelta, timezone

from optistate.migrations._ddl import is_sqlite

LOOK_BACK = timedelta(days=90)
INDEXES = (
    ("agentmetric_agent_id", "(agent_id)"),
    ("agentmetric_agent_id_metric_name_collection_timestamp", "(agent_id, metric_name, collection_timestamp)"),
    ("agentmetric_collection_timestamp", "(collection_timestamp)"),
    ("agent_metrics_metadata_gin", "USING GIN (metadata jsonb_path_ops)"),
)


def _copy_table(db, source, target, partitioned):
    """``target`` with ``source``'s columns, defaults and CHECKs, its key, foreign key and indexes."""
    key = "id, collection_timestamp" if partitioned else "id"
    tail = " PARTITION BY RANGE (collection_timestamp)" if partitioned else ""
    db.execute_sql(f"CREATE TABLE {target} (LIKE {source} INCLUDING DEFAULTS INCLUDING CONSTRAINTS,"
                   f" CONSTRAINT {target}_pkey PRIMARY KEY ({key}),"
                   f" CONSTRAINT {target}_agent_id_fkey FOREIGN KEY (agent_id) REFERENCES agents (id)"
                   f" ON DELETE CASCADE){tail}")


def up(migrator, db):
    if is_sqlite(db):
        return
    db.execute_sql("ALTER TABLE agent_metrics RENAME TO agent_metrics_old")
    db.execute_sql("ALTER TABLE agent_metrics_old RENAME CONSTRAINT agent_metrics_pkey TO agent_metrics_old_pkey")
    db.execute_sql("ALTER TABLE agent_metrics_old RENAME CONSTRAINT agent_metrics_agent_id_fkey"
                   " TO agent_metrics_old_agent_id_fkey")
    for name, _ in INDEXES:
        db.execute_sql(f"ALTER INDEX {name} RENAME TO old_{name}")
    _copy_table(db, "agent_metrics_old", "agent_metrics", partitioned=True)
    for name, spec in INDEXES:
        using = spec if spec.startswith("USING") else f"USING btree {spec}"
        db.execute_sql(f"CREATE INDEX {name} ON agent_metrics {using}")
    db.execute_sql("CREATE TABLE agent_metrics_default PARTITION OF agent_metrics DEFAULT")
    now = datetime.now(timezone.utc)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    low, high = db.execute_sql("SELECT min(collection_timestamp), max(collection_timestamp)"
                               " FROM agent_metrics_old WHERE collection_timestamp >= %s AND collection_timestamp"
                               " < %s", (today - LOOK_BACK, today + timedelta(days=8))).fetchone()
    first = min(today - timedelta(days=1), low.astimezone(timezone.utc)) if low else today - timedelta(days=1)
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    last = max(today + timedelta(days=7), high.astimezone(timezone.utc)) if high else today + timedelta(days=7)
    while day <= last:
        nxt = day + timedelta(days=1)
        db.execute_sql(f"CREATE TABLE agent_metrics_p{day:%Y%m%d} PARTITION OF agent_metrics"
                       f" FOR VALUES FROM ('{day.isoformat()}') TO ('{nxt.isoformat()}')")
        day = nxt
    db.execute_sql("INSERT INTO agent_metrics SELECT * FROM agent_metrics_old")
    db.execute_sql("DROP TABLE agent_metrics_old")


def down(migrator, db):
    if is_sqlite(db):
        return
    db.execute_sql("ALTER TABLE agent_metrics RENAME TO agent_metrics_parted")
    db.execute_sql("ALTER TABLE agent_metrics_parted RENAME CONSTRAINT agent_metrics_pkey TO agent_metrics_parted_pkey")
    db.execute_sql("ALTER TABLE agent_metrics_parted RENAME CONSTRAINT agent_metrics_agent_id_fkey"
                   " TO agent_metrics_parted_agent_id_fkey")
    for name, _ in INDEXES:
        db.execute_sql(f"ALTER INDEX {name} RENAME TO parted_{name}")
    _copy_table(db, "agent_metrics_parted", "agent_metrics", partitioned=False)
    for name, spec in INDEXES:
        using = spec if spec.startswith("USING") else f"USING btree {spec}"
        db.execute_sql(f"CREATE INDEX {name} ON agent_metrics {using}")
    db.execute_sql("INSERT INTO agent_metrics SELECT * FROM agent_metrics_parted")
    db.execute_sql("DROP TABLE agent_metrics_parted")
