"""Field types that behave the same on SQLite and PostgreSQL and refuse bad values.

A refused value raises :class:`optistate.errors.ValidationError` while the
query is being built, before any SQL reaches the database, so nothing is stored.
The ``check_*`` functions are the one home of each rule (length, JSON,
semver, choice); the fields and every other module call them.

The JSON choice: every JSON column is peewee 4's core :class:`peewee.JSONField`
(JSONB on PostgreSQL, JSON text on SQLite), not playhouse's ``BinaryJSONField``,
which is PostgreSQL-only. One model definition then serves both backends, and
``AgentMetric.metadata['region'] == 'us-west'`` or ``.contains({...})`` compile
to each backend's own operators. The GIN indexes that serve those queries are
created by the migrations, on PostgreSQL only.
"""

from __future__ import annotations

import enum
import json
import math
import re
from datetime import datetime, timezone
from typing import Any

import peewee

from .database import is_sqlite
from .errors import ValidationError

__all__ = [
    "check_choice",
    "check_json",
    "check_semver",
    "check_text",
    "finite_float",
    "dumps",
    "StringField",
    "ChoiceField",
    "FiniteFloatField",
    "JSONField",
    "SemverField",
    "TimestampField",
    "utcnow",
    "as_utc",
]

UTC = timezone.utc


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Make ``value`` aware UTC. A naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _on_sqlite(field: peewee.Field) -> bool:
    return is_sqlite(field.model._meta.database)


def check_text(field: str, value: Any, max_length: int, *, required: bool = True) -> Any:
    """``value`` if it is a string of at most ``max_length`` characters (non-empty when ``required``)."""
    if not isinstance(value, str) or (required and not value):
        what = "a non-empty string" if required else "a string"
        raise ValidationError(field, value, f"must be {what} of at most {max_length} characters")
    if len(value) > max_length:
        raise ValidationError(field, value, f"is longer than {max_length} characters")
    return value


def check_choice(field: str, value: Any, choices: type[enum.Enum]) -> str:
    """The string value of ``value`` if it is one of ``choices`` (a ``str`` Enum or one of its values)."""
    if isinstance(value, choices):
        return str(value.value)
    allowed = [m.value for m in choices]  # type: ignore[var-annotated]
    if value not in allowed:
        raise ValidationError(field, value, f"must be one of {', '.join(allowed)}")
    return str(value)


def check_json(field: str, value: Any, *, sensitive: bool = False) -> str:
    """``value`` as strict JSON text (:func:`dumps`), or :class:`ValidationError` naming ``field``."""
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        reason = "is not JSON-serialisable" + ("" if sensitive else f" ({exc})")
        raise ValidationError(field, value, reason, sensitive=sensitive) from None


class TimestampField(peewee.Field):
    """An aware UTC datetime: TIMESTAMPTZ on PostgreSQL, ISO-8601 text on SQLite.

    Naive datetimes passed in are taken to be UTC. On SQLite the stored text
    has a fixed width and offset, so text order is time order and range
    queries work. Values always read back as aware UTC datetimes.
    """

    field_type = "TIMESTAMPTZ"

    def ddl_datatype(self, ctx: Any) -> peewee.SQL:
        return peewee.SQL("TEXT" if _on_sqlite(self) else "TIMESTAMPTZ")

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, peewee.Node):
            return value
        if not isinstance(value, datetime):
            raise ValidationError(self.name, value, "expected a datetime")
        value = as_utc(value)
        if _on_sqlite(self):
            return value.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
        return value

    def python_value(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return as_utc(value)


class StringField(peewee.CharField):
    """A VARCHAR whose length is checked before the query runs, on SQLite too."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, str):
            check_text(self.name, value, self.max_length, required=False)
        return super().db_value(value)


class ChoiceField(peewee.CharField):
    """A string restricted to the values of a ``str`` Enum; reads back as ``str``."""

    def __init__(self, choices: type[enum.Enum], **kwargs: Any):
        self.enum = choices
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, peewee.Node):
            return value
        return check_choice(self.name, value, self.enum)


class FiniteFloatField(peewee.FloatField):
    """A float that refuses NaN, infinities, booleans and non-numbers."""

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, peewee.Node):
            return value
        return finite_float(self.name, value)


def finite_float(field: str, value: Any) -> float:
    """``value`` as a finite float, or :class:`ValidationError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, value, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError(field, value, "must be finite (not NaN or infinity)")
    return number


SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def check_semver(field: str, value: Any) -> str:
    """``value`` if it is a semantic version string of at most 64 characters."""
    if not isinstance(value, str) or len(value) > 64 or not SEMVER.match(value):
        raise ValidationError(field, value, "must be a semantic version such as 1.2.0")
    return value


class SemverField(peewee.CharField):
    """A semantic version string (semver.org 2.0.0), e.g. ``1.2.0`` or ``2.0.0-rc.1``."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, peewee.Node):
            return value
        return check_semver(self.name, value)


def dumps(value: Any) -> str:
    """Strict JSON text: NaN and infinities are refused, as JSON has none."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


class JSONField(peewee.JSONField):
    """Core JSONField that checks a value serialises before the query runs.

    peewee serialises JSONB lazily on PostgreSQL, inside the driver, where a
    failure would surface mid-statement; this field serialises once, eagerly,
    and hands the driver the finished text.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(dumps=dumps, **kwargs)

    _driver_types: tuple[type, ...] = ()

    def _db_hook(self, database: Any) -> None:
        super()._db_hook(database)  # type: ignore[misc]
        adapter = getattr(database, "_adapter", None)
        self._driver_types = (adapter.json_type, adapter.jsonb_type) if adapter is not None else ()
        helper = self._helper  # type: ignore[attr-defined]
        if helper is not None:
            self._wrap = helper.make_value_wrapper(_identity)

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, (peewee.Node, *self._driver_types)):
            return value
        text = check_json(self.name, value)
        return self._wrap(text) if self._wrap is not None else text


def _identity(text: str) -> str:
    return text
