"""The machinery behind the ``optistate`` command: one-line errors, the session, tables, JSON, option types.

The commands themselves are in :mod:`optistate.cli`.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import click
import peewee
import psycopg2

from .actor import describe
from .agent import AgentHandle
from .database import ENV_VAR, redact, resolve_url
from .errors import MASK, NotFoundError, OptistateError, ValidationError, one_line
from .fields import check_chars, check_timestamp, loads
from .models import AgentConfig
from .store import Store, connect

__all__ = [
    "RootGroup",
    "DefaultListGroup",
    "Session",
    "STORE_HELP",
    "pass_session",
    "sqlite_file",
    "json_option",
    "agent_type_option",
    "echo_json",
    "cell",
    "table",
    "age",
    "shown",
    "at_rest",
    "config_json",
    "config_table",
    "capability_table",
    "metric_table",
    "overview_table",
    "progress_bar",
    "Timestamp",
    "parse_where",
]

MANY_ROWS = 5000  # a progress bar only for transfers at least this large
DB_ERRORS = (peewee.PeeweeException, psycopg2.Error, sqlite3.Error)


def error_message(exc: BaseException) -> str:
    """One line for ``exc``, with any password in a URL replaced by ``***``."""
    if isinstance(exc, OSError):
        text = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    elif isinstance(exc, OptistateError):
        text = one_line(exc)
    else:
        text = f"database error: {one_line(exc)}"
    return redact(text)


class RootGroup(click.Group):
    """The root group: turns optistate, database and file errors into one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as other CLIs do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except (OptistateError, OSError, *DB_ERRORS) as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {error_message(exc)}", err=True)
            ctx.exit(1)


class DefaultListGroup(click.Group):
    """A group whose bare form, ``capabilities AGENT ...``, means ``capabilities list AGENT ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["list", *args]
        return super().parse_args(ctx, args)


def sqlite_file(url: str) -> str | None:
    """The file a ``sqlite:///`` URL names, or None for another scheme or ``:memory:``."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").partition("?")[0]
    return None if path in ("", ":memory:") else path


class Session:
    """The command line's database URL, and the store, opened on first use and closed at exit.

    A reading command's store is opened with ``create=False``: a SQLite file
    that is not there is an error, not a new empty database.
    """

    def __init__(self, ctx: click.Context, url: str | None, *, verbose: bool = False):
        self.ctx, self.url, self.verbose = ctx, url, verbose
        self._store: Store | None = None

    def store(self, *, migrate: bool = True, create: bool = False) -> Store:
        """The store ``--database`` names; a SQLite file is made only if ``create``.

        :raises NotFoundError: no SQLite file at the URL's path and not ``create``.
        """
        if self._store is None:
            url = resolve_url(self.url)
            path = sqlite_file(url)
            if self.verbose:
                where = f" (file {os.path.abspath(path)})" if path else ""
                click.echo(f"database: {redact(url)}{where}", err=True)
            if path and not create and not os.path.exists(path):
                source = "--database" if self.url else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default"
                raise NotFoundError("database", os.path.abspath(path), (
                    f"{redact(url)} ({source}) names no file; make one with `optistate demo`,"
                    f" or name another with --database URL or ${ENV_VAR}"))
            # the CLI's writes are its user's; it reads config anew each run, so it needs no config watch
            self._store = connect(self.url, migrate=migrate, watch=False, actor=describe(via="optistate CLI"))
            self.ctx.call_on_close(self._store.close)
        return self._store

    def agent(self, name: str, agent_type: str | None = None, *, create: bool = False) -> AgentHandle:
        return self.store(create=create).agent(name, agent_type)


STORE_HELP = "Works on the store --database names (see optistate --help); -v prints which."
_pass_session = click.make_pass_decorator(Session)


def pass_session(f: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the :class:`Session` first; the command's help (``f``'s docstring) ends with :data:`STORE_HELP`."""
    command = _pass_session(f)
    command.__doc__ = f"{inspect.cleandoc(f.__doc__ or '')}\n\n{STORE_HELP}"
    return command


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
agent_type_option = click.option("--agent-type", help="The agent's type, where several types use the name.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def cell(value: Any) -> str:
    """``value`` as a table shows it: ``-`` for nothing, whole floats without ``.0``, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")) if value else "-"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [list(headers), *([cell(v) for v in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    for line in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(int(seconds), 0)}s ago"


def shown(row: AgentConfig, reveal: bool) -> str:
    """The plain text of a config value (decrypted if need be), or ``***`` for a sensitive one unless revealed."""
    return MASK if row.is_sensitive and not reveal else row.text


def at_rest(row: AgentConfig) -> str:
    """How a sensitive value is stored: ``key <id>`` when encrypted, ``no`` in plain text; ``-`` if not sensitive."""
    return "-" if not row.is_sensitive else f"key {row.key_id}" if row.key_id else "no"


def config_json(row: AgentConfig, reveal: bool) -> dict[str, Any]:
    value = MASK if row.is_sensitive and not reveal else row.value
    return {"key": row.config_key, "type": row.config_type, "value": value, "sensitive": row.is_sensitive,
            "encrypted": row.is_encrypted, "key_id": row.key_id, "description": row.description,
            "updated_at": row.updated_at.isoformat(timespec="microseconds")}


def config_table(rows: Sequence[AgentConfig], reveal: bool) -> None:
    table(["KEY", "TYPE", "VALUE", "SENSITIVE", "ENCRYPTED", "DESCRIPTION"],
          [[r.config_key, r.config_type, shown(r, reveal), r.is_sensitive, at_rest(r), r.description] for r in rows],
          "no configs")


def capability_table(rows: Sequence[Any]) -> None:
    table(["NAME", "VERSION", "ENABLED", "DESCRIPTION"],
          [[c.capability_name, c.capability_version, c.is_enabled, c.description] for c in rows], "no capabilities")


def metric_table(rows: Sequence[Any], *, metadata: bool = True) -> None:
    headers = ["COLLECTED", "NAME", "VALUE", "UNIT", "TYPE"] + (["METADATA"] if metadata else [])
    cells = [[m.collection_timestamp.isoformat(timespec="seconds"), m.metric_name, m.metric_value, m.metric_unit,
              m.metric_type] + ([m.metadata] if metadata else []) for m in rows]
    table(headers, cells, "no metrics")


def overview_table(rows: Sequence[dict[str, Any]], empty: str) -> None:
    table(["TYPE", "NAME", "STATUS", "LIVENESS", "WORKFLOW", "LOCKS", "ERRORS", "HEARTBEAT", "CONFIGS",
           "CAPABILITIES"],
          [[r["type"], r["name"], r["status"], r["liveness"], r["workflow"], r["locks"], r["error_count"],
            age(r["heartbeat_age_seconds"]), r["configs"], f"{r['capabilities_enabled']}/{r['capabilities']} enabled"]
           for r in rows], empty)


@contextlib.contextmanager
def progress_bar(total: Callable[[], int], label: str) -> Iterator[Callable[[int], None]]:
    """A progress callback: a bar on a terminal for a large transfer, else one that does nothing."""
    size = total() if sys.stderr.isatty() else 0
    if size < MANY_ROWS:
        yield lambda done: None
        return
    with click.progressbar(length=size, label=label, file=sys.stderr) as bar:
        yield bar.update


class Timestamp(click.ParamType):
    name = "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 time such as 2025-01-31T12:00:00+00:00", param, ctx)
        try:
            return check_timestamp("time", moment)  # a time without an offset is UTC
        except ValidationError as exc:
            self.fail(f"{value!r} {exc.reason}", param, ctx)


def parse_where(pairs: Sequence[str]) -> dict[str, Any]:
    """``--where`` pairs as a metadata mapping: values read as JSON where they parse (NaN does not), else as text.

    :raises click.BadParameter: a pair that is not key=value, or a value stored metadata could not hold.
    """
    where: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--where")
        try:  # gpu=3 matches the number 3, ok=true the boolean, region=us-west the string
            where[check_chars("key", key)] = loads(key, text, otherwise=text)
        except ValidationError as exc:
            raise click.BadParameter(str(exc), param_hint="--where") from None
    return where
