"""Export every agent table to a JSON Lines file, and import one back, losslessly.

The file is one header line, then one line per row, agents first::

    {"format": "optistate", "version": 1, "tables": ["agents", ...], "exported_at": "..."}
    {"table": "agents", "row": {"id": "...", "created_at": "2025-01-01T12:00:00.123456+00:00", ...}}

Rows are keyed by column name. Ids are UUID strings, timestamps ISO-8601 UTC
with microseconds, JSON columns plain JSON values, so a file written from
SQLite imports into PostgreSQL (and back) with every row equal.

Config values travel as stored: in clear, except sensitive values encrypted at
rest, which stay ciphertext unless ``decrypt`` (an import keeps what it reads).
The file is created
owner-only (0o600), beside its target, which it replaces only when complete.
An import is one transaction and validates every value as the SDK does (the
fields' checks, config types and ranges, plugins' ``validate_config``); any
bad line rolls the whole import back and the error names that line.
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

import peewee

from . import __version__
from .database import is_sqlite, write_transaction
from .encryption import sealed_key_id
from .errors import OptistateError, TransferError, ValidationError, one_line
from .fields import MAX_JSON_DEPTH, TimestampField, dumps, utcnow
from .models import format_config_value, parse_config_value
from .store import Store

__all__ = [
    "FORMAT",
    "VERSION",
    "export_file",
    "import_file",
    "columns",
    "to_json",
    "row_count",
    "count_lines",
]

FORMAT, VERSION = "optistate", 1
BATCH = 500  # rows per INSERT; 12 columns at most, well under SQLite's bound-variable limit

Progress = Callable[[int], None]


def _nothing(done: int) -> None:
    return None


def _tables(store: Store) -> dict[str, Any]:
    """The store's models by table name, agents first."""
    return {model._meta.table_name: model for model in store.models.MODELS}


def _encode(field: peewee.Field, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(field, TimestampField):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def columns(model: type[peewee.Model]) -> list[peewee.Field]:
    """The fields a file carries: all but ``revision``, which is the store's own (an import gets new ones)."""
    return [f for f in model._meta.sorted_fields if f.name != "revision"]


def to_json(row: peewee.Model) -> dict[str, Any]:
    """A row as a JSON-ready dict keyed by column name (the export's row form)."""
    return {f.column_name: _encode(f, row.__data__.get(f.name)) for f in columns(type(row))}


def row_count(store: Store) -> int:
    """Rows in all five tables, e.g. to size a progress bar."""
    return sum(model.select().count() for model in store.models.MODELS)


def export_file(
    store: Store, path: str, *, progress: Progress = _nothing, decrypt: bool = False
) -> dict[str, int]:
    """Write every row to ``path`` (mode 0o600); return the rows per table.

    A sensitive value stored encrypted is written as stored, ciphertext,
    unless ``decrypt`` (which raises :class:`SecretKeyError` for a value no
    key of the store opens; nothing is written then).

    The rows are read in one transaction, so the file is one consistent
    snapshot. They are written to a new file beside ``path`` that replaces it
    only when complete: a failed export leaves ``path`` as it was. (A FIFO or
    device, such as ``/dev/stdout``, is written in place.)
    """
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "wb") as out:
            return _export(store, out, progress, decrypt)
    folder, name = os.path.split(os.path.abspath(path))
    try:
        fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)  # created 0o600
    except FileNotFoundError as exc:
        raise FileNotFoundError(exc.errno, exc.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as out:
            counts = _export(store, out, progress, decrypt)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
    return counts


def _export(store: Store, out: IO[bytes], progress: Progress, decrypt: bool) -> dict[str, int]:
    tables = _tables(store)
    counts = dict.fromkeys(tables, 0)
    with store.database.atomic():
        if not is_sqlite(store.database):
            store.database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        header = {"format": FORMAT, "version": VERSION, "tables": list(tables),
                  "exported_at": utcnow().isoformat(timespec="microseconds"), "optistate": __version__}
        out.write(dumps(header).encode() + b"\n")
        for table, model in tables.items():
            fields = columns(model)
            for values in model.select(*fields).order_by(model.id).tuples().iterator():
                row = {f.column_name: _encode(f, v) for f, v in zip(fields, values, strict=True)}
                if decrypt and table == "agent_configs" and row["is_sensitive"]:
                    row["config_value"] = store.keyring.open(row["config_value"], key=row["config_key"])
                item = {"table": table, "row": row}
                try:
                    line = json.dumps(item, ensure_ascii=False, allow_nan=False).encode()
                except UnicodeEncodeError:  # a lone surrogate an older optistate stored: kept, as a JSON escape
                    line = json.dumps(item, allow_nan=False).encode()
                out.write(line + b"\n")
                counts[table] += 1
                progress(1)
    return counts


def import_file(store: Store, path: str, *, replace: bool = False, progress: Progress = _nothing) -> dict[str, int]:
    """Insert every row of the file at ``path`` in one transaction; return the rows per table.

    :param replace: delete every agent (and so every row) first, in the same
        transaction. Without it, a database that holds any agent is refused.
    :raises TransferError: a line that is not valid, or a row the database refuses; nothing is imported.
    """
    with open(path, "rb") as lines, write_transaction(store.database):
        agents = store.models.Agent
        if replace:
            agents.delete().execute()  # every other row cascades
        else:
            held = agents.select().count()
            if held:
                raise TransferError(path, f"the database already holds {held} agent(s); import into an empty "
                                          "database, or pass --replace to delete them first")
        return _Importer(store, path).run(lines, progress)


class _Importer:
    """Reads the lines, checks each row, and inserts them in batches (agents' batches before others)."""

    def __init__(self, store: Store, path: str):
        self.store, self.path, self.tables = store, path, _tables(store)
        self.pending: dict[str, list[tuple[int, dict[peewee.Field, Any]]]] = {t: [] for t in self.tables}
        self.counts = dict.fromkeys(self.tables, 0)
        self.agent_types: dict[uuid.UUID, str] = {}
        self.header_seen = False

    def fail(self, line: int, reason: str) -> TransferError:
        return TransferError(self.path, reason, line)

    def run(self, lines: IO[bytes], progress: Progress) -> dict[str, int]:
        for number, raw in enumerate(lines, start=1):
            progress(1)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self.fail(number, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            if number == 1:
                self.header(text)
                continue
            if not text.strip():
                continue
            table, row = self.parse(number, text)
            self.pending[table].append((number, row))
            if len(self.pending[table]) >= BATCH:
                self.flush(table)
        if not self.header_seen:
            raise self.fail(1, "the file is empty")
        for table in self.tables:
            self.flush(table)
        return self.counts

    def header(self, text: str) -> None:
        try:
            header = json.loads(text)
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise self.fail(1, f'not an optistate export: the first line must be {{"format": "{FORMAT}", ...}}')
        if header.get("version") != VERSION:
            found = header.get("version")
            raise self.fail(1, f"export format version {found!r} is not supported (this optistate reads {VERSION})")
        self.header_seen = True

    def parse(self, number: int, text: str) -> tuple[str, dict[peewee.Field, Any]]:
        try:
            item = json.loads(text)
        except ValueError as exc:
            raise self.fail(number, f"not valid JSON ({exc})") from None
        except RecursionError:
            raise self.fail(number, f"JSON nested far deeper than a column may be ({MAX_JSON_DEPTH} levels)") from None
        if not isinstance(item, dict) or set(item) != {"table", "row"} or not isinstance(item["row"], dict):
            raise self.fail(number, 'expected {"table": ..., "row": {...}}')
        table, data = item["table"], item["row"]
        if table not in self.tables:
            raise self.fail(number, f"unknown table {table!r}; expected one of {', '.join(self.tables)}")
        model = self.tables[table]
        named = {f.column_name: f for f in columns(model)}
        if set(data) != set(named):
            missing, extra = sorted(set(named) - set(data)), sorted(set(data) - set(named))
            raise self.fail(number, f"{table} row: missing columns {missing or '-'}, unknown columns {extra or '-'}")
        try:
            row = {field: self.decode(field, data[column]) for column, field in named.items()}
            self.check(model, row)
        except OptistateError as exc:
            raise self.fail(number, f"{table}: {exc}") from None
        return table, row

    def decode(self, field: peewee.Field, value: Any) -> Any:
        """The Python value of one exported cell, checked by the field as an INSERT would."""

        def refuse(reason: str) -> ValidationError:
            return ValidationError(field.column_name, value, reason, sensitive=field.name == "config_value")

        if value is None:
            if not field.null:
                raise refuse("must not be null")
            return None
        if isinstance(field, (peewee.UUIDField, peewee.ForeignKeyField)):
            try:
                value = uuid.UUID(value)
            except (TypeError, ValueError, AttributeError):
                raise refuse("must be a UUID string") from None
        elif isinstance(field, TimestampField):
            try:
                value = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise refuse("must be an ISO-8601 timestamp") from None
        elif isinstance(field, peewee.BooleanField) and not isinstance(value, bool):
            raise refuse("must be true or false")
        elif isinstance(field, (peewee.CharField, peewee.TextField)) and not isinstance(value, str):
            raise refuse("must be a string")
        # The field's own checks, as for the SDK's writes: lengths, characters, choices, semver, number and
        # integer ranges, the time range, and JSON's shape, depth and contents.
        field.db_value(value)
        return value

    def check(self, model: Any, row: dict[peewee.Field, Any]) -> None:
        """Row-level rules: a row's agent comes earlier in the file, and a config value
        parses as its type and passes the plugins' ``validate_config``. An encrypted value
        is imported as it is: checked when the store has its key, unchecked otherwise."""
        meta = model._meta
        if meta.table_name == "agents":
            self.agent_types[row[meta.fields["id"]]] = row[meta.fields["type"]]
            return
        agent = row[meta.fields["agent"]]
        if agent not in self.agent_types:
            raise ValidationError("agent_id", str(agent), "names no agent earlier in the file (agents come first)")
        if meta.table_name == "agent_configs":
            key, config_type = row[meta.fields["config_key"]], row[meta.fields["config_type"]]
            sensitive, text = row[meta.fields["is_sensitive"]], row[meta.fields["config_value"]]
            if sensitive and sealed_key_id(text) is not None:
                if not self.store.keyring.can_open(text):
                    return  # encrypted with a key this store lacks: imported as it is, unchecked
                text = self.store.keyring.open(text, key=key)
            value = parse_config_value(config_type, text, key=key, sensitive=sensitive)
            format_config_value(config_type, value, key=key, sensitive=sensitive)  # config.set's rules for the value
            self.store.plugins.check_config(self.agent_types[agent], key, value, sensitive=sensitive)

    def flush(self, table: str) -> None:
        """Insert ``table``'s pending rows; on a refusal, find and name the line at fault."""
        batch, self.pending[table] = self.pending[table], []
        if not batch:
            return
        if table != "agents":
            self.flush("agents")  # the agents of these rows may still be pending
        model, database = self.tables[table], self.store.database
        try:
            with database.atomic():  # a savepoint: a refused batch leaves the transaction usable
                model.insert_many([row for _, row in batch]).as_rowcount().execute()
        except peewee.DatabaseError:
            for number, row in batch:  # again row by row, to name the line the database refuses
                try:
                    with database.atomic():
                        model.insert(row).as_rowcount().execute()
                except peewee.DatabaseError as exc:
                    raise self.fail(number, f"{table}: the database refused the row: {one_line(exc)}") from None
        self.counts[table] += len(batch)


def count_lines(path: str) -> int:
    """The number of lines in ``path``, to size an import's progress bar."""
    with open(path, "rb") as data:
        return sum(1 for _ in data)
