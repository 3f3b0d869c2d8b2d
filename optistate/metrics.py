"""Time-series points: validated when recorded, buffered, and written in bulk.

A point is checked the moment it is recorded (a NaN, a non-number or an
unknown metric type raises there, not at flush) and kept as a ready row.
:meth:`MetricBuffer.flush` writes the rows with one ``COPY`` per flush on
PostgreSQL, and multi-row INSERTs in one transaction on SQLite. A buffer
holding points is kept alive until they are written, and flushed at
interpreter exit. :class:`MetricReader` reads one agent's stored points.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import peewee

from .database import is_sqlite, write_transaction
from .errors import ValidationError
from .fields import as_utc, check_json, check_text, finite_float, utcnow
from .models import AgentMetric

__all__ = ["AGGREGATES", "COLUMNS", "COPY_ESCAPES", "MetricBuffer", "MetricReader"]

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
_SQLITE_BATCH = 32_000 // len(COLUMNS)  # stay under SQLite's bound-variable limit

log = logging.getLogger("optistate")
_unwritten: set[MetricBuffer] = set()  # buffers holding points, kept alive until written


@atexit.register
def _flush_at_exit() -> None:
    for buffer in list(_unwritten):
        try:
            buffer.flush()
        except Exception as exc:  # the interpreter is going away: report, do not raise
            log.error("could not flush the metrics of agent %s at exit: %s", buffer.agent_id, exc)


def _point(
    name: Any,
    value: Any,
    unit: Any = None,
    metric_type: Any = "gauge",
    metadata: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> tuple[str, float, str | None, str, str, datetime]:
    """One validated point, as (name, value, unit, type, metadata JSON text, UTC time)."""
    check_text("metric_name", name, 255)
    number = finite_float("metric_value", value)
    if unit is not None and not isinstance(unit, str):
        raise ValidationError("metric_unit", unit, "must be a string or None")
    mtype = AgentMetric.metric_type.db_value(metric_type)  # refuses an unknown type, naming it
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata", metadata, "must be a JSON object (a mapping)")
    text = check_json("metadata", dict(metadata))
    if timestamp is None:
        when = utcnow()
    elif isinstance(timestamp, datetime):
        when = as_utc(timestamp)
    else:
        raise ValidationError("collection_timestamp", timestamp, "must be a datetime")
    return name, number, unit, mtype, text, when


class MetricBuffer:
    """Points recorded by one agent and not yet written."""

    def __init__(self, database: peewee.Database, model: Any, agent_id: uuid.UUID, size: int = 5000):
        self.database, self.model, self.agent_id, self.size = database, model, agent_id, size
        self.pending: list[tuple[str, float, str | None, str, str, datetime]] = []

    def add(self, *args: Any, **kwargs: Any) -> None:
        """Validate one point and buffer it; flush when the buffer is full."""
        self.pending.append(_point(*args, **kwargs))
        _unwritten.add(self)
        if len(self.pending) >= self.size:
            self.flush()

    def extend(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Validate every point first, then buffer them all; one bad point buffers none."""
        rows = [_point(**point) for point in points]
        self.pending.extend(rows)
        _unwritten.add(self)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> int:
        """Write the buffered points in one transaction; return how many were written."""
        rows, self.pending = self.pending, []
        if not rows:
            _unwritten.discard(self)
            return 0
        try:
            if is_sqlite(self.database):
                self._insert(rows)
            else:
                self._copy(rows)
        except BaseException:
            self.pending[:0] = rows  # nothing was written: keep them for the next flush
            raise
        if not self.pending:
            _unwritten.discard(self)
        return len(rows)

    def _ids(self, count: int) -> list[str]:
        raw = os.urandom(16 * count)
        return [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, 16 * count, 16)]

    def _copy(self, rows: list[tuple[str, float, str | None, str, str, datetime]]) -> None:
        agent = str(self.agent_id)
        out = io.StringIO()
        write = out.write
        for ident, (name, value, unit, mtype, meta, when) in zip(self._ids(len(rows)), rows, strict=True):
            unit_text = "\\N" if unit is None else unit.translate(COPY_ESCAPES)
            write(
                f"{ident}\t{agent}\t{name.translate(COPY_ESCAPES)}\t{value!r}\t{unit_text}\t{mtype}\t"
                f"{meta.translate(COPY_ESCAPES)}\t{when.isoformat()}\n"
            )
        out.seek(0)
        with write_transaction(self.database):
            cursor = self.database.cursor()
            cursor.copy_expert(f"COPY {self.model._meta.table_name} ({', '.join(COLUMNS)}) FROM STDIN", out)

    def _insert(self, rows: list[tuple[str, float, str | None, str, str, datetime]]) -> None:
        model = self.model
        values = [  # metadata is JSON text already: fn.json() stores it without a second dumps()
            (ident, self.agent_id, name, value, unit, mtype, peewee.fn.json(meta), when)
            for ident, (name, value, unit, mtype, meta, when) in zip(self._ids(len(rows)), rows, strict=True)
        ]
        fields = [model._meta.columns[c] for c in COLUMNS]
        with write_transaction(self.database):
            for start in range(0, len(values), _SQLITE_BATCH):
                query = model.insert_many(values[start : start + _SQLITE_BATCH], fields=fields)
                self.database.execute(query)


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
    ) -> float | int | None:
        """``avg``, ``min``, ``max``, ``sum`` or ``count`` of a metric's values; None when no point matches."""
        model = self.model
        try:
            expression = AGGREGATES[func](model.metric_value)
        except KeyError:
            raise ValidationError("aggregate", func, f"must be one of {', '.join(AGGREGATES)}") from None
        result = self.select(name, since, until, where).select(expression).scalar()
        if func == "count":
            return int(result or 0)
        return None if result is None else float(result)

    def latest(self) -> list[AgentMetric]:
        """The newest point of each metric name, by name."""
        model = self.model
        newest = (
            model.select(model.metric_name, peewee.fn.MAX(model.collection_timestamp).alias("at"))
            .where(model.agent == self.agent_id)
            .group_by(model.metric_name)
        )
        rows = (
            model.select()
            .join(newest, on=(model.metric_name == newest.c.metric_name) & (model.collection_timestamp == newest.c.at))
            .where(model.agent == self.agent_id)
            .order_by(model.metric_name)
        )
        latest: dict[str, AgentMetric] = {}
        for row in rows:
            latest.setdefault(row.metric_name, row)
        return list(latest.values())
