"""Time buckets computed by the database: ``aggregate(..., every=)`` and durations such as ``5m``.

A bucket of width ``every`` starts at ``ORIGIN + k * every`` for a whole
``k`` (the Unix epoch, 1970-01-01 00:00:00 UTC) and holds the points with
``start <= collection_timestamp < start + every``. PostgreSQL computes it with
``date_bin``; SQLite with integer microseconds since the epoch taken from its
fixed-width text timestamps, so both give the same buckets to the microsecond.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import peewee

from .errors import ValidationError

__all__ = ["ORIGIN", "bucket_start", "bucketed", "check_every", "parse_duration"]

ORIGIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""Where buckets are counted from: every bucket starts a whole number of widths after it."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")


def parse_duration(field: str, text: str) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1d`` as a timedelta.

    :raises ValidationError: naming ``field`` and ``text`` when it is not a positive whole number and a unit.
    """
    found = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if found is None:
        raise ValidationError(field, text, "must be a positive whole number and a unit s, m, h or d, such as 5m")
    return timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])


def check_every(every: Any) -> int:
    """A bucket width as whole microseconds; it must be a positive timedelta."""
    if not isinstance(every, timedelta) or every <= timedelta(0):
        raise ValidationError("every", every, "must be a positive timedelta, such as timedelta(minutes=5)")
    return every // timedelta(microseconds=1)


def _sqlite_micros(column: Any) -> Any:
    """Microseconds since the epoch of SQLite's ``YYYY-MM-DD HH:MM:SS.ffffff+00:00`` text."""
    seconds = peewee.fn.unixepoch(peewee.fn.substr(column, 1, 19))
    fraction = peewee.fn.substr(column, 21, 6).cast("INTEGER")
    return seconds * 1_000_000 + fraction


def bucket_start(column: Any, width: int, sqlite: bool) -> Any:
    """The SQL expression of a point's bucket: a TIMESTAMPTZ on PostgreSQL, epoch microseconds on SQLite."""
    if sqlite:
        micros = _sqlite_micros(column)
        # SQLite's % keeps the sign of the dividend: ((x % w) + w) % w floors times before the origin too
        # (peewee's own % operator means LIKE, hence the explicit Expression)
        offset = peewee.Expression(peewee.Expression(micros, "%", width) + width, "%", width)
        return micros - offset
    interval = peewee.SQL(f"interval '{width} microseconds'")
    return peewee.fn.date_bin(interval, column, peewee.SQL("timestamptz '1970-01-01 00:00:00+00'"))


def bucketed(
    query: Any, column: Any, value: Any, aggregate: Callable[[Any], Any], width: int, sqlite: bool, count: bool
) -> list[tuple[datetime, float | int]]:
    """``[(bucket_start, aggregate(value)), ...]`` of ``query``'s rows, oldest bucket first; empty buckets left out."""
    start = bucket_start(column, width, sqlite).alias("bucket")
    rows = query.select(start, aggregate(value).alias("value")).group_by(peewee.SQL("1")).order_by(peewee.SQL("1"))
    out: list[tuple[datetime, float | int]] = []
    for bucket, result in rows.tuples():
        when = ORIGIN + timedelta(microseconds=bucket) if sqlite else bucket.astimezone(timezone.utc)
        out.append((when, int(result) if count else float(result)))
    return out
