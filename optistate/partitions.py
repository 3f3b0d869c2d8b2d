"""``agent_metrics`` on PostgreSQL: range partitions of a stored period, made ahead of need, and retention.

Layout (migrations 0005 and 0007): ``agent_metrics`` is partitioned by range
of ``collection_timestamp``. Each partition spans the period stored in
``optistate_partitioning`` (one day unless :func:`set_period` changed it), and
starts at a whole number of periods from the Unix epoch, as
``aggregate(every=)``'s buckets do: day partitions start at UTC midnight. The
period is read from the database whenever a partition is made, so every
process sharing it cuts the same bounds. A partition is named after its
start: ``agent_metrics_p20261122`` at midnight, ``agent_metrics_p20261122_06``
otherwise. Bounds never overlap: a new partition is clipped to its
neighbours, so after a change of period the first partition of the new
period may be shorter. ``agent_metrics_default`` holds whatever no partition
covers.

Partitions are made for the times from ``PREPARED_BEFORE`` before to
``PREPARED_AHEAD`` after now: by the migration, at connect, and at each flush
for the times its points fall in. A point outside that range (a backfill
from last year, a skewed clock) goes to the default partition rather than
getting a partition of its own, so stray times never multiply tables, and no
flush ever fails for a missing partition. Each process remembers which
partitions exist for :data:`RECHECK` seconds, then reads the catalog again,
so a partition another process dropped is made anew within that time; until
then its points go to the default partition, and move out when it is made.

SQLite keeps one table: :func:`retain` deletes there in batches.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import peewee

from .database import is_sqlite, write_transaction
from .errors import ConfigurationError, ValidationError
from .fields import utcnow

__all__ = [
    "DEFAULT_PARTITION",
    "DEFAULT_PERIOD",
    "MAX_PERIOD",
    "PREPARED_AHEAD",
    "PREPARED_BEFORE",
    "RECHECK",
    "Retained",
    "ensure_partitions",
    "partition_name",
    "period",
    "retain",
    "set_period",
]

TABLE = "agent_metrics"
DEFAULT_PARTITION = "agent_metrics_default"
SETTINGS = "optistate_partitioning"
DEFAULT_PERIOD = timedelta(days=1)
"""The period of a database whose ``optistate_partitioning`` row is missing; migration 0007 stores it too."""
MAX_PERIOD = timedelta(days=366)
PREPARED_BEFORE = timedelta(days=7)
PREPARED_AHEAD = timedelta(days=7)
RECHECK = 60.0
"""Seconds a process trusts its list of partitions before reading the catalog again."""
SQLITE_BATCH = 10_000
"""Rows one SQLite retention transaction deletes, so writers wait for one batch at most."""
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LOCK_KEY = 7_151_747_132  # serializes partition DDL among optistate processes
_BOUNDS = (
    "SELECT c.relname, (regexp_match(b, 'FROM \\(''([^'']*)''\\)'))[1]::timestamptz,"
    " (regexp_match(b, 'TO \\(''([^'']*)''\\)'))[1]::timestamptz"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid, pg_get_expr(c.relpartbound, c.oid) AS b"
    " WHERE i.inhparent = %s::regclass AND b <> 'DEFAULT' ORDER BY 2"
)
log = logging.getLogger("optistate")


class Retained(NamedTuple):
    """What :func:`retain` did: the cutoff, the partitions dropped, and the rows deleted one by one."""

    cutoff: datetime
    dropped_partitions: list[str]
    deleted_rows: int


class _Known(NamedTuple):
    bounds: list[tuple[datetime, datetime]]
    read_at: float


_known: weakref.WeakKeyDictionary[peewee.Database, _Known] = weakref.WeakKeyDictionary()


def partition_name(start: datetime) -> str:
    """``agent_metrics_p20261122`` for a partition starting at that UTC midnight, ``…_p20261122_06`` at 06:00."""
    start = start.astimezone(timezone.utc)
    return f"{TABLE}_p{start:%Y%m%d}" + (f"_{start:%H}" if start.hour else "")


def _check_period(value: Any) -> timedelta:
    if not isinstance(value, timedelta) or value < timedelta(hours=1) or value > MAX_PERIOD:
        raise ValidationError("partition_period", value, f"must be a timedelta from 1 hour to {MAX_PERIOD.days} days")
    if value % timedelta(hours=1):
        raise ValidationError("partition_period", value, "must be a whole number of hours")
    return value


def period(database: peewee.Database) -> timedelta:
    """The span of each new ``agent_metrics`` partition, as stored in the database.

    :data:`DEFAULT_PERIOD` where nothing is stored: a database migrated through 0005 but not 0007.

    :raises ConfigurationError: on SQLite, which keeps one table.
    """
    if is_sqlite(database):
        raise ConfigurationError("partition_period", None, "SQLite keeps agent_metrics in one table, unpartitioned")
    if database.execute_sql("SELECT to_regclass(%s)", (SETTINGS,)).fetchone()[0] is None:
        return DEFAULT_PERIOD
    row = database.execute_sql(f"SELECT period FROM {SETTINGS} WHERE table_name = %s", (TABLE,)).fetchone()
    return row[0] if row else DEFAULT_PERIOD


def set_period(database: peewee.Database, value: timedelta) -> list[str]:
    """Store ``value`` as the span of each new partition, for every process; return the partitions remade.

    Partitions that start after now and hold no row are dropped and made anew
    with the new period, in one transaction that holds an ACCESS EXCLUSIVE
    lock on ``agent_metrics`` (writers wait for it, briefly). The partition
    holding now, and any holding rows, keep their bounds; the new period
    starts where the last of them ends.

    :raises ValidationError: ``value`` is not a whole number of hours from 1 hour to :data:`MAX_PERIOD`.
    :raises ConfigurationError: on SQLite, which keeps one table.
    """
    value = _check_period(value)
    if is_sqlite(database):
        raise ConfigurationError("partition_period", value, "SQLite keeps agent_metrics in one table, unpartitioned")
    with write_transaction(database):
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        database.execute_sql(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        database.execute_sql(
            f"INSERT INTO {SETTINGS} VALUES (%s, %s) ON CONFLICT (table_name) DO UPDATE SET period = excluded.period",
            (TABLE, value),
        )
        now = database.execute_sql("SELECT now()").fetchone()[0]
        for name, low, _ in database.execute_sql(_BOUNDS, (TABLE,)).fetchall():
            if low > now and database.execute_sql(f"SELECT 1 FROM {name} LIMIT 1").fetchone() is None:
                database.execute_sql(f"DROP TABLE {name}")
        _known.pop(database, None)
    return ensure_partitions(database, utcnow(), utcnow() + PREPARED_AHEAD)


def _gaps(
    bounds: list[tuple[datetime, datetime]], first: datetime, last: datetime, span: timedelta
) -> Iterator[tuple[datetime, datetime]]:
    """The partitions missing for ``[first, last]``: epoch-aligned spans clipped to their neighbours."""
    moment = first
    while moment <= last:
        holding = next((high for low, high in bounds if low <= moment < high), None)
        if holding is not None:
            moment = holding
            continue
        low = EPOCH + (moment - EPOCH) // span * span
        high = low + span
        low = max([low, *(h for _, h in bounds if h <= moment)])
        high = min([high, *(lo for lo, _ in bounds if lo > moment)])
        yield low, high
        moment = high


def _covered(bounds: list[tuple[datetime, datetime]], first: datetime, last: datetime) -> bool:
    """Whether partitions cover ``[first, last]`` whole (the span given to :func:`_gaps` does not matter here)."""
    return next(_gaps(bounds, first, last, DEFAULT_PERIOD), None) is None


def _bounds(database: peewee.Database) -> list[tuple[datetime, datetime]]:
    return [(low, high) for _, low, high in database.execute_sql(_BOUNDS, (TABLE,)).fetchall()]


def ensure_partitions(database: peewee.Database, start: datetime, end: datetime) -> list[str]:
    """Make the missing partitions for ``[start, end]`` clipped to the prepared range; return those made.

    Reads the catalog only when this process's list is older than
    :data:`RECHECK` or lacks a time asked for. Race-safe: partitions are made
    in one transaction under a transaction-scoped advisory lock, after reading
    the catalog and the period again. Rows the default partition holds for a
    new partition's span move into it. A database error is logged, not
    raised: the default partition takes the rows. A lost connection raises
    :class:`~optistate.errors.ConnectionError`, as the flush that follows would.
    """
    if is_sqlite(database):
        return []
    now = utcnow()
    first, last = max(start, now - PREPARED_BEFORE), min(end, now + PREPARED_AHEAD)
    known = _known.get(database)
    if first > last or (known and time.monotonic() - known.read_at < RECHECK and _covered(known.bounds, first, last)):
        return []
    made: list[str] = []
    try:
        with write_transaction(database):
            bounds = _bounds(database)
            if not _covered(bounds, first, last):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                bounds, span = _bounds(database), period(database)
                for low, high in list(_gaps(bounds, first, last, span)):
                    _create(database, low, high)
                    made.append(partition_name(low))
                    bounds.append((low, high))
    except peewee.DatabaseError as exc:
        log.warning("could not make metrics partitions %s, their rows go to the default: %s", made, exc)
        return []
    _known[database] = _Known(bounds, time.monotonic())
    return made


def _create(database: peewee.Database, low: datetime, high: datetime) -> None:
    name = partition_name(low)
    bounds = f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
    stray = database.execute_sql(
        f"SELECT 1 FROM {DEFAULT_PARTITION} WHERE collection_timestamp >= %s AND collection_timestamp < %s LIMIT 1",
        (low, high),
    ).fetchone()
    if stray is None:
        database.execute_sql(f"CREATE TABLE {name} PARTITION OF {TABLE} {bounds}")
        return
    # the default partition holds rows of this span: move them into the new table, then attach it
    database.execute_sql(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    database.execute_sql(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE collection_timestamp >= %s"
        f" AND collection_timestamp < %s RETURNING *) INSERT INTO {name} SELECT * FROM moved",
        (low, high),
    )
    database.execute_sql(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} {bounds}")


def retain(database: peewee.Database, metrics: Any) -> Retained:
    """Delete the metric points older than ``metrics`` (a positive timedelta) before now.

    The cutoff is now minus ``metrics`` (the server's ``now()`` on
    PostgreSQL). No point at or after the cutoff is ever deleted. PostgreSQL
    drops each partition that ends at or before the cutoff, one short
    transaction each, and deletes the default partition's rows before the
    cutoff; the partition holding the cutoff stays whole, so points at most
    its span (one period) older than the cutoff may remain. SQLite deletes
    every point before the cutoff, ``SQLITE_BATCH`` rows per transaction.
    """
    if not isinstance(metrics, timedelta) or metrics <= timedelta(0):
        raise ValidationError("metrics", metrics, "must be a positive timedelta, such as timedelta(days=30)")
    if is_sqlite(database):
        return _retain_sqlite(database, utcnow() - metrics)
    cutoff = database.execute_sql("SELECT now() - %s", (metrics,)).fetchone()[0]
    dropped = []
    for name, _, high in database.execute_sql(_BOUNDS, (TABLE,)).fetchall():
        if high <= cutoff:
            with write_transaction(database):
                database.execute_sql(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    if dropped:
        _known.pop(database, None)
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
