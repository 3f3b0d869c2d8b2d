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


def _rebuild(db, aside, partitioned, make_partitions=lambda db: None):
    """Move ``agent_metrics`` aside, make it anew (partitioned or not) with the same columns, defaults, CHECKs,
    foreign key and indexes, let ``make_partitions`` add partitions, copy every row back, drop the old table."""
    db.execute_sql(f"ALTER TABLE agent_metrics RENAME TO {aside}")
    for constraint in ("pkey", "agent_id_fkey"):
        db.execute_sql(f"ALTER TABLE {aside} RENAME CONSTRAINT agent_metrics_{constraint} TO {aside}_{constraint}")
    prefix = aside.removeprefix("agent_metrics_")
    for name, _ in INDEXES:
        db.execute_sql(f"ALTER INDEX {name} RENAME TO {prefix}_{name}")
    key = "id, collection_timestamp" if partitioned else "id"
    tail = " PARTITION BY RANGE (collection_timestamp)" if partitioned else ""
    db.execute_sql(f"CREATE TABLE agent_metrics (LIKE {aside} INCLUDING DEFAULTS INCLUDING CONSTRAINTS,"
                   f" CONSTRAINT agent_metrics_pkey PRIMARY KEY ({key}),"
                   " CONSTRAINT agent_metrics_agent_id_fkey FOREIGN KEY (agent_id) REFERENCES agents (id)"
                   f" ON DELETE CASCADE){tail}")
    for name, spec in INDEXES:
        using = spec if spec.startswith("USING") else f"USING btree {spec}"
        db.execute_sql(f"CREATE INDEX {name} ON agent_metrics {using}")
    make_partitions(db)
    db.execute_sql(f"INSERT INTO agent_metrics SELECT * FROM {aside}")
    db.execute_sql(f"DROP TABLE {aside}")


def _day_partitions(db):
    """The default partition, and a day partition for yesterday to a week ahead and for each day within
    LOOK_BACK that holds rows."""
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


def up(migrator, db):
    if not is_sqlite(db):
        _rebuild(db, "agent_metrics_old", partitioned=True, make_partitions=_day_partitions)


def down(migrator, db):
    if not is_sqlite(db):
        _rebuild(db, "agent_metrics_parted", partitioned=False)
