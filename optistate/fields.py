"""Field types that behave the same on SQLite and PostgreSQL and refuse bad values.

A refused value raises :class:`optistate.errors.ValidationError` while the
query is being built, before any SQL reaches the database, so nothing is stored.
The ``check_*`` functions are the one home of each rule (length, characters,
numbers, times, JSON, semver, choice); the fields and every other module call them.

The rules are the narrower backend's, so what one backend cannot hold neither
accepts: no NUL or lone surrogate in any string (:func:`check_chars`); finite
numbers within a double's range, whole ones kept exact (:func:`check_number`);
times from :data:`EARLIEST` to :data:`LATEST`; JSON at most :data:`MAX_JSON_DEPTH`
deep, an object or an array as its column says (:func:`check_json`).

Every JSON column is peewee 4's core :class:`peewee.JSONField` (JSONB on PostgreSQL,
JSON text on SQLite; not playhouse's PostgreSQL-only ``BinaryJSONField``), so one
model serves both and ``metadata['region'] == 'us-west'`` or ``.contains({...})``
compile to each backend's operators; the migrations add GIN indexes on PostgreSQL.
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import peewee

from .database import is_sqlite
from .errors import ValidationError

__all__ = [
    "EARLIEST", "INT32", "LATEST", "MAX_JSON_DEPTH", "FLOAT_MAX",
    "check_chars", "check_choice", "check_int", "check_json", "check_list", "check_number", "check_semver",
    "check_text", "check_timestamp", "finite_float", "dumps", "loads", "storable", "utcnow", "as_utc",
    "StringField", "TextField", "IntegerField", "ChoiceField", "FiniteFloatField", "JSONField", "SemverField",
    "TimestampField",
]  # fmt: skip

UTC = timezone.utc
MAX_JSON_DEPTH = 32
"""The deepest a JSON value may nest (``{"a": [1]}`` is 2 levels); deeper is refused."""
FLOAT_MAX = sys.float_info.max
"""The largest magnitude of a number (a double's); whole numbers within it keep every digit."""
INT32 = (-(2**31), 2**31 - 1)
"""The range of an INTEGER column (PostgreSQL's ``integer``)."""
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
"""The times both backends hold, and Python reads in any time zone: a day inside ``datetime``'s range."""
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL stores neither NUL nor a lone surrogate


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


class _Abridged(str):
    """Shown for a value too large or too deep to show (its repr would fail, or fill a screen)."""

    def __repr__(self) -> str:
        return str(self)


def _shown(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return _Abridged(f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>")
    return value


def check_chars(field: str, value: str, *, sensitive: bool = False) -> str:
    """``value`` if it holds no NUL character and no lone surrogate, which PostgreSQL cannot store."""
    found = _UNSTORABLE.search(value)
    if found is not None:
        char = found.group()
        what = "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
        raise ValidationError(field, value, f"holds {what} at index {found.start()}", sensitive=sensitive)
    return value


def storable(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD, for text kept whatever it holds."""
    return _UNSTORABLE.sub("\ufffd", text)


def check_text(field: str, value: Any, max_length: int, *, required: bool = True, sensitive: bool = False) -> Any:
    """``value`` if it is a storable string of at most ``max_length`` characters (non-empty when ``required``)."""
    if not isinstance(value, str) or (required and not value):
        what = "a non-empty string" if required else "a string"
        raise ValidationError(field, value, f"must be {what} of at most {max_length} characters", sensitive=sensitive)
    if len(value) > max_length:
        raise ValidationError(field, value, f"is longer than {max_length} characters", sensitive=sensitive)
    return check_chars(field, value, sensitive=sensitive)


def check_number(field: str, value: Any, *, sensitive: bool = False) -> int | float:
    """``value`` if it is a finite int or float within a double's range; an int keeps its exact value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, value, "must be a number", sensitive=sensitive)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(field, value, "must be finite (not NaN or infinity)", sensitive=sensitive)
    if isinstance(value, int) and not -FLOAT_MAX <= value <= FLOAT_MAX:
        reason = "is out of range: numbers must lie within a double's ±1.8e308"
        raise ValidationError(field, _shown(value), reason, sensitive=sensitive)
    return value


def finite_float(field: str, value: Any, *, sensitive: bool = False) -> float:
    """``value`` as a finite float, or :class:`ValidationError` naming ``field``."""
    return float(check_number(field, value, sensitive=sensitive))


def check_int(field: str, value: Any, bounds: tuple[int, int] = INT32, *, sensitive: bool = False) -> int:
    """``value`` if it is an int (not a bool) from ``bounds[0]`` to ``bounds[1]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, value, "must be an integer", sensitive=sensitive)
    low, high = bounds
    if not low <= value <= high:
        raise ValidationError(field, _shown(value), f"is out of range ({low} to {high})", sensitive=sensitive)
    return value


def check_timestamp(field: str, value: Any) -> datetime:
    """``value`` as an aware UTC datetime (naive is taken as UTC) if it lies from :data:`EARLIEST` to :data:`LATEST`."""
    if not isinstance(value, datetime):
        raise ValidationError(field, value, "must be a datetime")
    try:
        moment = as_utc(value)
    except OverflowError:  # e.g. year 9999 at -14:00 is year 10000 in UTC
        moment = None
    if moment is None or not EARLIEST <= moment <= LATEST:
        raise ValidationError(field, value, f"is outside {EARLIEST.date()} to {LATEST.date()} UTC")
    return moment


def check_choice(field: str, value: Any, choices: type[enum.Enum]) -> str:
    """The string value of ``value`` if it is one of ``choices`` (a ``str`` Enum or one of its values)."""
    if isinstance(value, choices):
        return str(value.value)
    allowed = [m.value for m in choices]  # type: ignore[var-annotated]
    if value not in allowed:
        raise ValidationError(field, value, f"must be one of {', '.join(allowed)}")
    return str(value)


def check_list(field: str, value: Any, item: type | None = None, *, sensitive: bool = False) -> list[Any]:
    """``value`` (a list, tuple or other iterable, never one string or a mapping) as a list of ``item``."""
    kind = f"a list of {item.__name__} values" if item else "a list"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValidationError(field, value, f"must be {kind}", sensitive=sensitive)
    items = list(value)
    odd = [v for v in items if item is not None and not isinstance(v, item)]
    if odd:
        raise ValidationError(field, value, f"must be {kind}; {odd[0]!r} is not", sensitive=sensitive)
    return items


def _too_deep(field: str, what: str, sensitive: bool) -> ValidationError:
    shown = _Abridged(f"<{what} nested too deep to show>")
    return ValidationError(field, shown, f"is nested deeper than {MAX_JSON_DEPTH} levels", sensitive=sensitive)


_SHAPES: dict[type, tuple[Any, str]] = {dict: (dict, "a JSON object"), list: ((list, tuple), "a JSON array")}


def _check_tree(field: str, value: Any, sensitive: bool) -> None:
    """Refuse what no JSON column holds on both backends: deep nesting, unstorable strings, huge numbers."""

    def walk(node: Any, path: str, depth: int) -> None:
        if isinstance(node, str):
            check_chars(field if sensitive else f"{field}{path}", node, sensitive=sensitive)
        elif isinstance(node, int) and not isinstance(node, bool):  # NaN and infinities: dumps() refuses them
            check_number(field if sensitive else f"{field}{path}", node, sensitive=sensitive)
        elif isinstance(node, (dict, list, tuple)):
            if depth == MAX_JSON_DEPTH:
                raise _too_deep(field, type(value).__name__, sensitive)
            pairs = node.items() if isinstance(node, dict) else enumerate(node)
            for key, item in pairs:
                if isinstance(key, str) and isinstance(node, dict):
                    check_chars(f"{field}{path} key" if not sensitive else field, key, sensitive=sensitive)
                walk(item, f"{path}[{key!r}]", depth + 1)

    walk(value, "", 0)


def check_json(
    field: str, value: Any, *, sensitive: bool = False, shape: type | None = None, item: type | None = None
) -> str:
    """``value`` as strict JSON text (:func:`dumps`); ``shape`` ``dict`` or ``list`` (of ``item``) for its kind."""
    if shape is not None:
        kinds, name = _SHAPES[shape]
        if not isinstance(value, kinds):
            raise ValidationError(field, value, f"must be {name} ({shape.__name__})", sensitive=sensitive)
        if item is not None:
            check_list(field, value, item, sensitive=sensitive)
    _check_tree(field, value, sensitive)
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        reason = "is not JSON-serialisable" + ("" if sensitive else f" ({exc})")
        raise ValidationError(field, value, reason, sensitive=sensitive) from None


_REFUSE: Any = object()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(field: str, text: str, *, sensitive: bool = False, otherwise: Any = _REFUSE) -> Any:
    """The value of strict JSON ``text`` (no NaN or Infinity), checked as :func:`check_json` checks one.

    :param otherwise: returned (and checked) when ``text`` is not JSON at all; by default that is refused too.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep(field, "JSON text", sensitive) from None
    except ValueError as exc:
        if otherwise is _REFUSE:
            raise ValidationError(field, text, f"is not JSON ({exc})", sensitive=sensitive) from None
        value = otherwise
    _check_tree(field, value, sensitive)
    return value


class TimestampField(peewee.Field):
    """An aware UTC datetime: TIMESTAMPTZ on PostgreSQL, ISO-8601 text on SQLite.

    Naive datetimes are taken to be UTC; :func:`check_timestamp` sets the range.
    On SQLite the text has a fixed width and offset, so text order is time order.
    Values read back as aware UTC datetimes, also years before 1000 stored unpadded earlier.
    """

    field_type = "TIMESTAMPTZ"

    def ddl_datatype(self, ctx: Any) -> peewee.SQL:
        return peewee.SQL("TEXT" if _on_sqlite(self) else "TIMESTAMPTZ")

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, peewee.Node):
            return value
        value = check_timestamp(self.name, value)
        if _on_sqlite(self):
            return value.isoformat(" ", "microseconds")  # 0999-01-01 00:00:00.000000+00:00
        return value

    def python_value(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:  # '999-01-01 …': earlier versions stored years before 1000 unpadded
                value = datetime.fromisoformat(value.zfill(len(value) + 4 - value.index("-")))
            except ValueError:
                raise ValidationError(self.name, value, "is not a time as optistate stores one") from None
        return as_utc(value)


class StringField(peewee.CharField):
    """A VARCHAR whose length and characters are checked before the query runs, on SQLite too."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, str):
            check_text(self.name, value, self.max_length, required=False)
        return super().db_value(value)


class TextField(peewee.TextField):
    """A TEXT whose characters are checked; ``masked=True`` keeps a refused value out of the message."""

    def __init__(self, masked: bool = False, **kwargs: Any):
        self.masked = masked
        super().__init__(**kwargs)

    def db_value(self, value: Any) -> Any:
        if isinstance(value, str):
            check_chars(self.name, value, sensitive=self.masked)
        return super().db_value(value)


class IntegerField(peewee.IntegerField):
    """An INTEGER that refuses booleans and values outside :data:`INT32`, which PostgreSQL's column holds."""

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, peewee.Node):
            return value
        return check_int(self.name, value)


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
    """Core JSONField that checks a value (:func:`check_json`) before the query runs.

    peewee serialises JSONB lazily on PostgreSQL, inside the driver, where a
    failure would surface mid-statement; this field serialises once, eagerly,
    and hands the driver the finished text; values in queries (``.contains()``)
    too. ``shape`` (``dict`` or ``list`` of ``item``) is what the column holds.
    """

    def __init__(self, shape: type | None = None, item: type | None = None, **kwargs: Any):
        self.shape, self.item = shape, item
        super().__init__(dumps=dumps, **kwargs)
        self._dumps = self.checked_dumps  # what peewee serialises in queries (``.contains()``) is checked too

    def checked_dumps(self, value: Any) -> str:
        return check_json(self.name, value)

    _driver_types: tuple[type, ...] = ()

    def _db_hook(self, database: Any) -> None:
        super()._db_hook(database)  # type: ignore[misc]
        adapter = getattr(database, "_adapter", None)
        self._driver_types = (adapter.json_type, adapter.jsonb_type) if adapter is not None else ()
        helper = self._helper  # type: ignore[attr-defined]
        if helper is not None:
            self._wrap = helper.make_value_wrapper(_identity)
            helper.compare_value = self.compared  # a value at a path in the document: any JSON, not the column's shape

    def compared(self, field: peewee.Field, value: Any) -> Any:
        return value if value is None or isinstance(value, peewee.Node) else self._wrap(self.checked_dumps(value))

    def db_value(self, value: Any) -> Any:
        if value is None or isinstance(value, (peewee.Node, *self._driver_types)):
            return value
        text = check_json(self.name, value, shape=self.shape, item=self.item)
        return self._wrap(text) if self._wrap is not None else text


def _identity(text: str) -> str:
    return text
