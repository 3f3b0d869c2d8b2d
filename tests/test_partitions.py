"""agent_metrics partitioned by day on PostgreSQL; retention on both backends."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import peewee
import pytest
from click.testing import CliRunner

import optistate
from optistate import schema
from optistate.cli import cli
from optistate.database import open_database
from optistate.errors import ConfigurationError, ValidationError
from optistate.fields import utcnow
from optistate.partitions import (
    DEFAULT_PARTITION,
    DEFAULT_PERIOD,
    PREPARED_AHEAD,
    ensure_partitions,
    partition_name,
    period,
)

UTC = timezone.utc


def partitions(db: peewee.Database) -> dict[str, str]:
    rows = db.execute_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'agent_metrics'::regclass"
    ).fetchall()
    return dict(rows)


def day_of(moment: datetime) -> datetime:
    """The UTC midnight starting ``moment``'s day: where its day partition starts."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def midnight(days: int = 0) -> datetime:
    return day_of(utcnow()) + timedelta(days=days)


@pytest.fixture
def pg(pg_url: str) -> Iterator[optistate.Store]:
    with optistate.connect(pg_url) as store:
        yield store


def test_the_layout_day_partitions_a_default_and_every_index_and_key_on_each(pg):
    db = pg.database
    found = partitions(db)
    assert found[DEFAULT_PARTITION] == "DEFAULT"
    for day in range(-1, PREPARED_AHEAD.days + 1):  # made ahead of need: yesterday to a week ahead
        assert partition_name(midnight(day)) in found
    key = db.execute_sql(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'agent_metrics'::regclass"
        " AND contype IN ('p', 'f') ORDER BY contype"
    ).fetchall()
    assert key == [("FOREIGN KEY (agent_id) REFERENCES agents(id) ON DELETE CASCADE",),
                   ("PRIMARY KEY (id, collection_timestamp)",)]
    for name in found:
        defs = [row[0] for row in db.execute_sql("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (name,))]
        assert any("USING gin (metadata jsonb_path_ops)" in d for d in defs), (name, defs)
        assert any("btree (agent_id, metric_name, collection_timestamp)" in d for d in defs), (name, defs)
        assert any("UNIQUE" in d and "(id, collection_timestamp)" in d for d in defs), (name, defs)


def test_points_land_in_their_day_far_ones_in_the_default_and_deleting_the_agent_cascades(pg):
    agent = pg.start_agent("cost", name="Parts")
    far = datetime(2001, 1, 1, tzinfo=UTC)
    soon = midnight(3) + timedelta(hours=5)
    agent.record_metric("m", 1.0, timestamp=far)
    agent.record_metric("m", 2.0, timestamp=soon)
    assert agent.flush() == 2
    where = dict(pg.database.execute_sql("SELECT metric_value, tableoid::regclass::text FROM agent_metrics"))
    assert where == {1.0: DEFAULT_PARTITION, 2.0: partition_name(midnight(3))}
    assert partition_name(far) not in partitions(pg.database)  # a stray time gets no partition of its own
    pg.database.execute_sql("DELETE FROM agents")
    assert pg.database.execute_sql("SELECT count(*) FROM agent_metrics").fetchone()[0] == 0


def test_a_flush_makes_the_partition_of_a_day_in_the_prepared_range(pg):
    day = midnight(-5)
    name = partition_name(day)
    assert name not in partitions(pg.database)  # connect made yesterday to a week ahead
    agent = pg.start_agent("cost", name="Parts")
    agent.record_metric("m", 1.0, timestamp=day + timedelta(hours=1))
    assert agent.flush() == 1
    assert pg.database.execute_sql("SELECT tableoid::regclass::text FROM agent_metrics").fetchone()[0] == name


def test_a_new_partition_takes_its_days_rows_out_of_the_default(pg_url):
    db = open_database(pg_url)
    schema.migrate(db)
    day = midnight(-6)
    name = partition_name(day)
    assert name not in partitions(db)
    with optistate.connect(pg_url) as store:
        agent = store.start_agent("cost", name="Parts")
        db.execute_sql("INSERT INTO agent_metrics (agent_id, metric_name, metric_value, collection_timestamp)"
                       " VALUES (%s, 'm', 1.0, %s)", (str(agent.id), day + timedelta(hours=2)))
        assert db.execute_sql("SELECT tableoid::regclass::text FROM agent_metrics").fetchone()[0] == DEFAULT_PARTITION
        assert ensure_partitions(db, day, day) == [name]
        assert db.execute_sql("SELECT tableoid::regclass::text FROM agent_metrics").fetchone()[0] == name
        assert ensure_partitions(db, day, day) == []
    db.close()


def test_a_time_range_query_prunes_partitions(pg):
    agent = pg.start_agent("cost", name="Parts")
    since = midnight(1) + timedelta(hours=1)
    query = agent.metric_reader.select("m", since, since + timedelta(hours=2), None)
    sql, params = query.sql()
    plan = "\n".join(row[0] for row in pg.database.execute_sql("EXPLAIN " + sql, params))
    scanned = {name for name in partitions(pg.database) if f" {name} " in plan}
    assert scanned == {partition_name(midnight(1))}, plan  # not the other days, not even the default


@pytest.mark.parametrize("rows", [10_000, pytest.param(1_000_000, marks=pytest.mark.slow)])  # a million: ~75 s
def test_the_migration_keeps_every_row_of_a_populated_table_and_its_downgrade_too(pg_url, rows):
    db = open_database(pg_url)
    schema.migrate(db, "0004_liveness_and_leases")
    agent_id = db.execute_sql("INSERT INTO agents (type, name, version, status, last_heartbeat, created_at,"
                              " updated_at) VALUES ('t', 'n', '1', 'active', now(), now(), now()) RETURNING id"
                              ).fetchone()[0]
    # points over the last 40 days and the next 2, one in a thousand far outside the prepared range
    db.execute_sql(
        "INSERT INTO agent_metrics (agent_id, metric_name, metric_value, metadata, collection_timestamp)"
        " SELECT %s, 'm' || (i %% 7), i, jsonb_build_object('i', i %% 100),"
        " CASE WHEN i %% 1000 = 0 THEN timestamptz '2001-01-01' + i * interval '1 second'"
        " ELSE now() - interval '40 days' + i * (interval '42 days' / %s) END"
        " FROM generate_series(1, %s) AS i", (agent_id, rows, rows))
    checksum = "SELECT count(*), sum(metric_value), count(DISTINCT id), sum(extract(epoch FROM collection_timestamp))" \
               " FROM agent_metrics"
    before = db.execute_sql(checksum).fetchone()
    assert before[0] == rows
    assert schema.migrate(db, "0005_partitioned_metrics") == ["0005_partitioned_metrics"]
    assert period(db) == DEFAULT_PERIOD  # nothing stored before 0007: the period 0005 cut
    assert db.execute_sql(checksum).fetchone() == before
    assert db.execute_sql(f"SELECT count(*) FROM {DEFAULT_PARTITION}").fetchone()[0] >= rows // 1000
    assert len(partitions(db)) > 40
    assert schema.rollback(db) == ["0005_partitioned_metrics"]
    assert db.execute_sql(checksum).fetchone() == before
    assert db.execute_sql("SELECT relkind FROM pg_class WHERE relname = 'agent_metrics'").fetchone()[0] == "r"
    db.close()


# --- retention, both backends ----------------------------------------------------------------------------------


def stored(store) -> list[float]:
    return sorted(m.metric_value for m in store.models.AgentMetric.select())


def test_retain_never_deletes_inside_the_window_and_leaves_nothing_older_than_window_plus_a_day(store, backend):
    agent = store.start_agent("cost", name="Old")
    now = utcnow()
    ages = {1.0: timedelta(days=400), 2.0: timedelta(days=4, hours=12), 3.0: timedelta(days=3, minutes=5),
            4.0: timedelta(days=2, hours=23, minutes=59), 5.0: timedelta(days=1), 6.0: timedelta(0)}
    agent.record_metrics({"name": "m", "value": v, "timestamp": now - age} for v, age in ages.items())
    agent.flush()
    result = store.retain(metrics=timedelta(days=3))
    left = stored(store)
    assert {4.0, 5.0, 6.0} <= set(left)  # inside the window: always kept
    assert 1.0 not in left and 2.0 not in left  # older than window + one day: always gone
    assert now - timedelta(days=3, seconds=5) < result.cutoff <= utcnow() - timedelta(days=3)
    if backend == "sqlite":
        assert left == [4.0, 5.0, 6.0] and result.deleted_rows == 3  # exact: everything before the cutoff
        return
    assert result.deleted_rows == 1  # the 400-day-old point sat in the default partition
    assert partition_name(day_of(now - ages[2.0])) in result.dropped_partitions  # its whole day was before the cutoff
    assert all(partition_name(day_of(result.cutoff)) <= name for name in partitions(store.database)
               if name != DEFAULT_PARTITION)  # the day holding the cutoff and later ones stay
    assert store.retain(metrics=timedelta(days=3)).dropped_partitions == []


def test_retain_refuses_a_bad_window_naming_it(store):
    with pytest.raises(ValidationError, match="metrics=") as caught:
        store.retain(metrics=0)
    assert caught.value.field == "metrics"


def test_retain_on_sqlite_deletes_in_batches(sqlite_url, monkeypatch):
    monkeypatch.setattr("optistate.partitions.SQLITE_BATCH", 7)
    with optistate.connect(sqlite_url) as store:
        agent = store.start_agent("cost", name="Old")
        agent.record_metrics({"name": "m", "value": float(i), "timestamp": utcnow() - timedelta(days=40)}
                             for i in range(30))
        agent.record_metric("m", 99.0)
        agent.flush()
        assert store.retain(metrics=timedelta(days=30)).deleted_rows == 30
        assert stored(store) == [99.0]


def test_the_cli_runs_retain(store, db_url):
    agent = store.start_agent("cost", name="Old")
    agent.record_metric("m", 1.0, timestamp=utcnow() - timedelta(days=400))
    agent.record_metric("m", 2.0)
    agent.flush()
    result = CliRunner().invoke(cli, ["--database", db_url, "retain", "--metrics", "30d"])
    assert result.exit_code == 0, result.output
    assert "cutoff" in result.stdout
    assert stored(store) == [2.0]
    bad = CliRunner().invoke(cli, ["--database", db_url, "retain", "--metrics", "thirty days"])
    assert bad.exit_code == 2 and "'thirty days' must be a positive" in bad.stderr


def test_retain_runs_while_agents_ingest(pg):
    agents = [pg.start_agent("cost", name=f"Busy {i}") for i in range(3)]
    old = pg.start_agent("cost", name="Old")
    errors: list[BaseException] = []
    stop = threading.Event()
    flushed: list[int] = []

    def ingest(agent) -> None:
        try:
            while not stop.is_set():
                agent.record_metrics({"name": "m", "value": 1.0} for _ in range(50))
                flushed.append(agent.flush())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            pg.database.close()

    threads = [threading.Thread(target=ingest, args=(a,)) for a in agents]
    for thread in threads:
        thread.start()
    dropped = []
    for days in (6, 5, 4):  # each round: a whole day to drop, made by a flush, then retained while the others write
        old.record_metric("m", 2.0, timestamp=midnight(-days) + timedelta(hours=1))
        old.flush()
        dropped += pg.retain(metrics=timedelta(days=days - 1)).dropped_partitions
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {partition_name(midnight(-d)) for d in (6, 5, 4)} <= set(dropped)
    counts = pg.database.execute_sql("SELECT metric_value, count(*) FROM agent_metrics GROUP BY 1").fetchall()
    assert dict(counts).get(2.0) is None and dict(counts)[1.0] == sum(flushed) >= 150  # every ingested point kept


# --- the partition period, stored in the database -------------------------------------------------------------


def spans(db: peewee.Database) -> dict[str, tuple[datetime, datetime]]:
    """Each partition's bounds but the default's, read back from the catalog."""
    found = {}
    for name, bound in partitions(db).items():
        if bound != "DEFAULT":
            low, high = re.findall(r"'([^']*)'", bound)
            found[name] = db.execute_sql("SELECT %s::timestamptz, %s::timestamptz", (low, high)).fetchone()
    return found


def test_a_changed_period_is_stored_for_every_process_and_remakes_the_empty_future(pg, pg_url):
    assert period(pg.database) == DEFAULT_PERIOD
    today, asked = midnight(), utcnow() + PREPARED_AHEAD
    remade = pg.set_partition_period(timedelta(hours=6))
    with optistate.connect(pg_url) as other:  # another process sharing the database reads the same period
        assert period(other.database) == timedelta(hours=6)
        agent = other.start_agent("cost", name="Parts")
        soon = today + timedelta(days=2, hours=7, minutes=30)
        agent.record_metric("m", 1.0, timestamp=soon)
        assert agent.flush() == 1
        assert other.database.execute_sql("SELECT tableoid::regclass::text FROM agent_metrics").fetchone()[0] == (
            partition_name(today + timedelta(days=2, hours=6)))
    found = spans(pg.database)
    assert found[partition_name(today)] == (today, today + timedelta(days=1))  # holds now: its bounds stay
    after = sorted(bounds for bounds in found.values() if bounds[0] > today)
    assert after[0][0] == today + timedelta(days=1)  # the new period starts where the kept partitions end
    assert all(high - low == timedelta(hours=6) and low.hour % 6 == 0 for low, high in after)
    assert after[-1][1] > asked
    assert {partition_name(low) for low, _ in after} == set(remade)
    assert all(high == low2 for (_, high), (low2, _) in itertools.pairwise(after))  # no gap, no overlap


def test_retain_leaves_nothing_older_than_the_cutoff_plus_one_period(pg):
    pg.set_partition_period(timedelta(hours=4))
    agent = pg.start_agent("cost", name="Old")
    now = utcnow()
    ages = {1.0: timedelta(hours=80), 2.0: timedelta(hours=74, minutes=1), 3.0: timedelta(hours=70, seconds=-1),
            4.0: timedelta(hours=69)}
    agent.record_metrics({"name": "m", "value": v, "timestamp": now - age} for v, age in ages.items())
    agent.flush()
    result = pg.retain(metrics=timedelta(hours=70))
    assert stored(pg) == [3.0, 4.0]  # inside the window: kept; older than the cutoff plus 4 hours: gone
    assert result.dropped_partitions and result.deleted_rows == 0
    found = spans(pg.database)
    assert not set(result.dropped_partitions) & set(found)
    holding = [bounds for bounds in found.values() if bounds[0] <= result.cutoff < bounds[1]]
    assert len(holding) == 1 and holding[0][1] - holding[0][0] == timedelta(hours=4)  # kept whole
    assert all(high > result.cutoff for _, high in found.values())  # every partition ending by the cutoff went


def test_the_period_refuses_what_is_not_whole_hours_and_sqlite_has_none(pg, sqlite_url):
    for bad in (timedelta(minutes=90), timedelta(minutes=30), timedelta(days=400), 6):
        with pytest.raises(ValidationError, match="partition_period=") as caught:
            pg.set_partition_period(bad)  # type: ignore[arg-type]
        assert caught.value.field == "partition_period"
    assert period(pg.database) == DEFAULT_PERIOD
    with optistate.connect(sqlite_url) as lite:
        with pytest.raises(ConfigurationError, match="one table"):
            lite.set_partition_period(timedelta(hours=6))
        with pytest.raises(ConfigurationError, match="one table"):
            period(lite.database)
