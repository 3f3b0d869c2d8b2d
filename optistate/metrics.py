"""Time-series points: validated when recorded, buffered, and written in bulk.

A point is checked the moment it is recorded (a NaN, a non-number or an
unknown metric type raises there, not at flush) and kept as a ready row with
its id. :meth:`MetricBuffer.flush` writes the rows in one transaction: on
PostgreSQL one ``COPY`` into a temporary table and one INSERT of the ids not
stored yet, on SQLite multi-row INSERTs that skip stored ids. A buffer
holding points is kept alive until they are written, and flushed at
interpreter exit (:func:`flush_all`). :class:`MetricReader` reads one agent's stored points.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import peewee

from .database import is_sqlite, write_transaction
from .errors import IntegrityError, NotFoundError, ValidationError
from .fields import check_json, check_text, check_timestamp, finite_float, utcnow
from .models import AgentMetric, agent_exists
from .partitions import ensure_partitions
from .reconnect import guarded
from .timeseries import bucketed, check_every

__all__ = [
    "AGGREGATES",
    "COLUMNS",
    "COPY_ESCAPES",
    "MAX_BUFFER",
    "MetricBuffer",
    "MetricReader",
    "Row",
    "flush_all",
    "new_id",
    "newest_points",
]

AGGREGATES = {
    "avg": peewee.fn.AVG,
    "min": peewee.fn.MIN,
    "max": peewee.fn.MAX,
    "sum": peewee.fn.SUM,
    "count": peewee.fn.COUNT,
}
COLUMNS = (
    "id",
    "agent_id",
    "metric_name",
    "metric_value",
    "metric_unit",
    "metric_type",
    "metadata",
    "collection_timestamp",
)
# What COPY's text format needs escaped in a column value.
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
POINT_KEYS = ("name", "value", "unit", "metric_type", "metadata", "timestamp")
_SQLITE_BATCH = 32_000 // len(COLUMNS)  # stay under SQLite's bound-variable limit
MAX_BUFFER = 100_000
"""Points an agent buffers at most while flushes fail; past it the oldest are dropped."""
Row = tuple[str, str, float, str | None, str, str, datetime]
"""A buffered point: (id, name, value, unit, type, metadata JSON text, UTC time)."""

log = logging.getLogger("optistate")
_DRIVER_ERRORS_AS_PEEWEE = peewee.__exception_wrapper__  # type: ignore[attr-defined]
_unwritten: set[MetricBuffer] = set()  # buffers holding points, kept alive until written


@atexit.register
def flush_all() -> None:
    """Flush every buffer that holds points, logging failures: at interpreter exit, and on a handled signal."""
    for buffer in list(_unwritten):
        try:
            buffer.flush()
        except Exception as exc:  # the process is going away: report, do not raise
            log.error("could not flush %d metric points of agent %s: %s", len(buffer.pending), buffer.agent_id, exc)


def new_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as both backends store it; a third of ``uuid4().hex``'s cost."""
    h = os.urandom(16).hex()
    return f"{h[:12]}4{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:]}"


def _mapping(point: Any) -> Mapping[str, Any]:
    if not isinstance(point, Mapping):
        raise ValidationError("point", point, "must be a mapping of record_metric's parameters")
    return point


def _point(
    name: Any = None,
    value: Any = None,
    unit: Any = None,
    metric_type: Any = "gauge",
    metadata: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
    **unknown: Any,
) -> tuple[str, float, str | None, str, str, datetime]:
    """One point checked by every rule the database would apply, as (name, value, unit, type, metadata JSON, UTC time).

    What passes here is stored by any flush on either backend, unless the agent is deleted meanwhile.
    """
    if unknown:
        keys = ", ".join(sorted(map(str, unknown)))
        raise ValidationError("point", dict(unknown), f"has unknown keys ({keys}); a point has {', '.join(POINT_KEYS)}")
    fields = AgentMetric._meta.fields
    check_text("metric_name", name, fields["metric_name"].max_length)
    number = finite_float("metric_value", value)
    if unit is not None:
        check_text("metric_unit", unit, fields["metric_unit"].max_length, required=False)
    mtype = AgentMetric.metric_type.db_value(metric_type)  # refuses an unknown type, naming it
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata", metadata, "must be a JSON object (a mapping)")
    text = check_json("metadata", dict(metadata))
    when = utcnow() if timestamp is None else check_timestamp("collection_timestamp", timestamp)
    return name, number, unit, mtype, text, when


class MetricBuffer:
    """Points recorded by one agent and not yet stored, each with the id it will be stored under.

    - **Exactly once:** a point's id is drawn when it is recorded, and a flush
      stores only the ids not stored yet (``ON CONFLICT (id) DO NOTHING``; on
      PostgreSQL's partitioned table ``(id, collection_timestamp)``, its key,
      as unique as the id since both are fixed at recording), so a flush
      repeated after a lost acknowledgement stores nothing twice.
    - **Nothing lost on failure:** a flush that fails keeps every point for the next one.
    - **Bounded:** past ``max_buffer`` points the oldest are dropped, counted in
      :attr:`dropped`, and logged once until a flush succeeds again.
    - **Recording never raises for the database:** a full buffer (``size``
      points) is flushed by :meth:`add`/:meth:`extend`; if that fails, the
      failure is logged (once until a flush succeeds), the points stay
      buffered, and the next try waits for ``size`` more points.
    """

    def __init__(
        self, database: peewee.Database, model: Any, agent_id: uuid.UUID, size: int = 5000, max_buffer: int = MAX_BUFFER
    ):
        self.database, self.model, self.agent_id, self.size = database, model, agent_id, size
        self.max_buffer = max_buffer
        self.pending: deque[Row] = deque()
        self.dropped = 0
        """Points dropped, oldest first, because the buffer held ``max_buffer`` while flushes failed."""
        self._retry_at: int | None = None  # after a failed flush, the buffer length to try again at
        self._failing = False  # a flush failed since the last one that succeeded (one log line per outage)
        self._dropping = False

    def add(self, *args: Any, **kwargs: Any) -> None:
        """Validate one point and buffer it; a full buffer is flushed, and a failure to flush is logged, not raised."""
        self._buffer((new_id(), *_point(*args, **kwargs)))

    def extend(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Validate every point first, then buffer them all; one bad point buffers none. Flushes as :meth:`add`."""
        self._buffer(*[(new_id(), *_point(**_mapping(point))) for point in points])

    def _buffer(self, *rows: Row) -> None:
        self.pending.extend(rows)
        _unwritten.add(self)
        self._bound()
        if len(self.pending) >= (self._retry_at or self.size):
            try:
                self.flush()
            except Exception as exc:  # kept for the next flush; the caller's point is buffered, so no raise
                self._retry_at = len(self.pending) + self.size
                if not self._failing:
                    log.warning(
                        "agent %s: could not flush %d metric points, keeping them for the next flush: %s",
                        self.agent_id,
                        len(self.pending),
                        exc,
                    )
                self._failing = True

    def _bound(self) -> None:
        excess = len(self.pending) - self.max_buffer
        if excess <= 0:
            return
        for _ in range(excess):
            self.pending.popleft()
        self.dropped += excess
        if not self._dropping:
            log.warning(
                "agent %s: the metric buffer holds max_buffer=%d points and cannot be flushed; "
                "dropping the oldest (counted in dropped_metrics)",
                self.agent_id,
                self.max_buffer,
            )
        self._dropping = True

    def flush(self) -> int:
        """Store the buffered points in one transaction; return how many were newly stored.

        A point that is stored already (this is a retry after a lost
        acknowledgement) is skipped, not stored twice. On failure every point
        stays buffered and the error is raised: ConnectionError when the
        database cannot be reached, and then the points may or may not have
        been stored; the next flush settles it either way.
        """
        rows, self.pending = self.pending, deque()
        if not rows:
            _unwritten.discard(self)
            return 0
        try:
            stored = self._insert(rows) if is_sqlite(self.database) else self._copy(rows)
        except peewee.IntegrityError as exc:
            if agent_exists(self.model, self.agent_id):  # another constraint: keep the points, as for any failure
                self._keep(rows)
                raise IntegrityError.from_driver(exc) from None
            self.dropped += len(rows)  # no flush can ever store them: they must not block the buffer
            if not self.pending:
                _unwritten.discard(self)
            consequence = f"its {len(rows)} buffered metric points were dropped"
            raise NotFoundError.deleted_agent(str(self.agent_id), consequence) from None
        except BaseException:
            self._keep(rows)
            raise
        if self._failing or self._dropping:
            log.info("agent %s: metrics flushed again (%d dropped so far)", self.agent_id, self.dropped)
        self._failing = self._dropping = False
        self._retry_at = None
        if not self.pending:
            _unwritten.discard(self)
        return stored

    def _keep(self, rows: deque[Row]) -> None:
        rows.extend(self.pending)  # points recorded meanwhile (another thread) stay after these
        self.pending = rows
        self._bound()

    def _copy(self, rows: deque[Row]) -> int:
        """COPY into a temporary table, then insert the ids not stored yet: COPY's speed, exactly once."""
        agent = str(self.agent_id)
        out = io.StringIO()
        write = out.write
        for ident, name, value, unit, mtype, meta, when in rows:
            unit_text = "\\N" if unit is None else unit.translate(COPY_ESCAPES)
            write(
                f"{ident}\t{agent}\t{name.translate(COPY_ESCAPES)}\t{value!r}\t{unit_text}\t{mtype}\t"
                f"{meta.translate(COPY_ESCAPES)}\t{when.isoformat()}\n"
            )
        out.seek(0)
        ensure_partitions(self.database, min(row[6] for row in rows), max(row[6] for row in rows))
        table, columns = self.model._meta.table_name, ", ".join(COLUMNS)
        # peewee's wrapper makes the driver's errors peewee's, as its own execute_sql does
        with write_transaction(self.database), guarded(self.database), _DRIVER_ERRORS_AS_PEEWEE:
            cursor = self.database.cursor()
            cursor.execute(f"CREATE TEMPORARY TABLE optistate_metrics_in (LIKE {table}) ON COMMIT DROP")
            cursor.copy_expert(f"COPY optistate_metrics_in ({columns}) FROM STDIN", out)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM optistate_metrics_in"
                " ON CONFLICT (id, collection_timestamp) DO NOTHING"  # the partitioned table's key
            )
            return int(cursor.rowcount)

    def _insert(self, rows: Iterable[Row]) -> int:
        model = self.model
        values = [  # metadata is JSON text already: fn.json() stores it without a second dumps()
            (ident, self.agent_id, name, value, unit, mtype, peewee.fn.json(meta), when)
            for ident, name, value, unit, mtype, meta, when in rows
        ]
        fields = [model._meta.columns[c] for c in COLUMNS]
        stored = 0
        with write_transaction(self.database):
            for start in range(0, len(values), _SQLITE_BATCH):
                query = model.insert_many(values[start : start + _SQLITE_BATCH], fields=fields)
                query = query.on_conflict(conflict_target=[model.id], action="NOTHING")
                stored += self.database.execute(query).rowcount
        return stored


class MetricReader:
    """The stored points of one agent."""

    def __init__(self, model: Any, agent_id: uuid.UUID):
        self.model, self.agent_id = model, agent_id

    def select(
        self, name: str | None, since: datetime | None, until: datetime | None, where: Mapping[str, Any] | None
    ) -> Any:
        """The points' query: by name, time range and metadata containment."""
        model = self.model
        query = model.select().where(model.agent == self.agent_id)
        if name is not None:
            query = query.where(model.metric_name == name)
        if since is not None:
            query = query.where(model.collection_timestamp >= since)
        if until is not None:
            query = query.where(model.collection_timestamp <= until)
        if where:
            # JSON containment: @> on PostgreSQL (served by the GIN index), the same rows on SQLite.
            query = query.where(model.metadata.contains(dict(where)))
        return query

    def points(
        self,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        where: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[AgentMetric]:
        """Stored points, oldest first, filtered by name, time range and metadata containment."""
        model = self.model
        query = self.select(name, since, until, where).order_by(model.collection_timestamp, model.metric_name)
        return list(query.limit(limit) if limit is not None else query)

    def aggregate(
        self,
        name: str,
        func: str,
        since: datetime | None = None,
        until: datetime | None = None,
        where: Mapping[str, Any] | None = None,
        every: timedelta | None = None,
    ) -> float | int | list[tuple[datetime, float | int]] | None:
        """``avg``, ``min``, ``max``, ``sum`` or ``count`` of a metric's values; None when no point matches.

        With ``every``, ``[(bucket_start, value), ...]`` per time bucket of that width, oldest first, computed
        by the database (:mod:`optistate.timeseries`: buckets counted from the Unix epoch; empty ones left out).
        """
        model = self.model
        if func not in AGGREGATES:
            raise ValidationError("aggregate", func, f"must be one of {', '.join(AGGREGATES)}")
        query = self.select(name, since, until, where)
        if every is not None:
            width, sqlite = check_every(every), is_sqlite(model._meta.database)
            stamp, value = model.collection_timestamp, model.metric_value
            return bucketed(query, stamp, value, AGGREGATES[func], width, sqlite, func == "count")
        result = query.select(AGGREGATES[func](model.metric_value)).scalar()
        if func == "count":
            return int(result or 0)
        return None if result is None else float(result)

    def latest(self) -> list[AgentMetric]:
        """The newest point of each metric name, by name."""
        return newest_points(self.model, self.agent_id)


def newest_points(model: Any, agent_id: uuid.UUID | None = None) -> list[AgentMetric]:
    """The newest point of each metric of one agent (or of every agent), by agent then name, in one query."""
    key = [model.agent, model.metric_name]
    newest = model.select(*key, peewee.fn.MAX(model.collection_timestamp).alias("at")).group_by(*key)
    if agent_id is not None:
        newest = newest.where(model.agent == agent_id)
    matches = (model.agent == newest.c.agent_id) & (model.metric_name == newest.c.metric_name)
    rows = model.select().join(newest, on=matches & (model.collection_timestamp == newest.c.at))
    latest: dict[tuple[Any, str], AgentMetric] = {}
    for row in rows.order_by(model.agent, model.metric_name):
        latest.setdefault((row.agent_id, row.metric_name), row)  # two points at the same newest time: one
    return list(latest.values())
