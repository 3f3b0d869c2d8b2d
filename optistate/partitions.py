"""``agent_metrics`` on PostgreSQL: one range partition per day, made ahead of need, and retention.

Layout (migration 0005): ``agent_metrics`` is partitioned by range of
``collection_timestamp``; partition ``agent_metrics_pYYYYMMDD`` holds the UTC
day ``[YYYY-MM-DD 00:00, next day 00:00)``; ``agent_metrics_default`` holds
whatever no day partition covers. Partitions are made for the days from
``PREPARED_BEFORE`` before to ``PREPARED_AHEAD`` after now: by the migration,
at connect, and at each flush for the days its points fall on. A point
outside that range (a backfill from last year, a skewed clock) goes to the
default partition rather than getting a partition of its own, so stray times
never multiply tables, and no flush ever fails for a missing partition.

SQLite keeps one table; :func:`retain` deletes there in batches.
"""

from __future__ import annotations

import logging
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import peewee

from .database import is_sqlite, write_transaction
from .errors import ValidationError
from .fields import utcnow

__all__ = [
    "DEFAULT_PARTITION",
    "PERIOD",
    "PREPARED_AHEAD",
    "PREPARED_BEFORE",
    "Retained",
    "ensure_partitions",
    "partition_name",
    "retain",
]

TABLE = "agent_metrics"
DEFAULT_PARTITION = "agent_metrics_default"
PERIOD = timedelta(days=1)
PREPARED_BEFORE = timedelta(days=7)
PREPARED_AHEAD = timedelta(days=7)
SQLITE_BATCH = 10_000
"""Rows one SQLite retention transaction deletes, so writers wait for one batch at most."""
_LOCK_KEY = 7_151_747_132  # serializes partition DDL among optistate processes
_known: weakref.WeakKeyDictionary[peewee.Database, set[datetime]] = weakref.WeakKeyDictionary()
log = logging.getLogger("optistate")


class Retained(NamedTuple):
    """What :func:`retain` did: the cutoff, the partitions dropped, and the rows deleted one by one."""

    cutoff: datetime
    dropped_partitions: list[str]
    deleted_rows: int


def _day(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def partition_name(day: datetime) -> str:
    """``agent_metrics_p20261122`` for the partition of that UTC day."""
    return f"{TABLE}_p{_day(day):%Y%m%d}"


def ensure_partitions(database: peewee.Database, start: datetime, end: datetime) -> list[str]:
    """Make the missing day partitions for ``[start, end]`` clipped to the prepared range; return those made.

    Race-safe: each is made under a transaction-scoped advisory lock with ``IF
    NOT EXISTS``. Rows the default partition holds for a new day move into
    it. A failure is logged, not raised: the default partition takes the rows.
    """
    if is_sqlite(database):
        return []
    now = utcnow()
    first, last = _day(max(start, now - PREPARED_BEFORE)), _day(min(end, now + PREPARED_AHEAD))
    known = _known.setdefault(database, set())
    days = []
    day = first
    while day <= last:
        if day not in known:
            days.append(day)
        day += PERIOD
    made: list[str] = []
    for day in days:
        try:
            with write_transaction(database):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                if _create(database, day):
                    made.append(partition_name(day))
        except peewee.DatabaseError as exc:
            log.warning("could not make metrics partition %s, its rows go to the default: %s", partition_name(day), exc)
            continue
        known.add(day)
    return made


def _create(database: peewee.Database, day: datetime) -> bool:
    name = partition_name(day)
    if database.execute_sql("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
        return False
    low, high = day.isoformat(), (day + PERIOD).isoformat()
    bounds = f"FOR VALUES FROM ('{low}') TO ('{high}')"
    stray = database.execute_sql(
        f"SELECT 1 FROM {DEFAULT_PARTITION} WHERE collection_timestamp >= %s AND collection_timestamp < %s LIMIT 1",
        (low, high),
    ).fetchone()
    if stray is None:
        database.execute_sql(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {TABLE} {bounds}")
        return True
    # the default partition holds rows of this day: move them into the new table, then attach it
    database.execute_sql(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    database.execute_sql(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE collection_timestamp >= %s"
        f" AND collection_timestamp < %s RETURNING *) INSERT INTO {name} SELECT * FROM moved",
        (low, high),
    )
    database.execute_sql(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} {bounds}")
    return True


def retain(database: peewee.Database, metrics: Any) -> Retained:
    """Delete the metric points older than ``metrics`` (a positive timedelta) before now.

    The cutoff is now minus ``metrics`` (the server's ``now()`` on
    PostgreSQL). No point at or after the cutoff is ever deleted. PostgreSQL
    drops each day partition that ends at or before the cutoff, one short
    transaction each, and deletes the default partition's rows before the
    cutoff; the partition holding the cutoff stays whole, so points at most
    one period older than the cutoff may remain. SQLite deletes every point
    before the cutoff, ``SQLITE_BATCH`` rows per transaction.
    """
    if not isinstance(metrics, timedelta) or metrics <= timedelta(0):
        raise ValidationError("metrics", metrics, "must be a positive timedelta, such as timedelta(days=30)")
    if is_sqlite(database):
        return _retain_sqlite(database, utcnow() - metrics)
    cutoff = database.execute_sql("SELECT now() - %s", (metrics,)).fetchone()[0]
    expired = database.execute_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass AND c.relname <> %s"
        " AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1]::timestamptz <= %s"
        " ORDER BY c.relname",
        (TABLE, DEFAULT_PARTITION, cutoff),
    ).fetchall()
    dropped = []
    for (name,) in expired:
        with write_transaction(database):
            database.execute_sql(f"DROP TABLE IF EXISTS {name}")
        dropped.append(name)
        _known.get(database, set()).discard(datetime.strptime(name[-8:], "%Y%m%d").replace(tzinfo=timezone.utc))
    deleted = 0
    if database.execute_sql("SELECT to_regclass(%s)", (DEFAULT_PARTITION,)).fetchone()[0] is not None:
        with write_transaction(database):
            cursor = database.execute_sql(
                f"DELETE FROM {DEFAULT_PARTITION} WHERE collection_timestamp < %s", (cutoff,)
            )
            deleted = cursor.rowcount
    return Retained(cutoff, dropped, deleted)


def _retain_sqlite(database: peewee.Database, cutoff: datetime) -> Retained:
    stamp = cutoff.isoformat(" ", "microseconds")  # the stored text form: text order is time order
    deleted = 0
    while True:
        with write_transaction(database):
            cursor = database.execute_sql(
                f"DELETE FROM {TABLE} WHERE rowid IN"
                f" (SELECT rowid FROM {TABLE} WHERE collection_timestamp < ? LIMIT {SQLITE_BATCH})",
                (stamp,),
            )
        deleted += cursor.rowcount
        if cursor.rowcount < SQLITE_BATCH:
            return Retained(cutoff, [], deleted)
