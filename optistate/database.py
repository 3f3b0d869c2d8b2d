"""From a database URL to a configured peewee Database.

``sqlite:///path.db`` (relative) or ``sqlite:////abs/path.db``,
``postgresql://user:pass@host/db`` and ``postgresql+pool://…`` (a pooled
connection) are read by :mod:`playhouse.db_url`; PostgreSQL gets the classes of
:mod:`optistate.reconnect`, which reconnect after a server restart. With no URL,
``OPTISTATE_DATABASE_URL`` is used, and without it :data:`DEFAULT_URL`, a
SQLite file in the working directory.

Every SQLite connection turns on foreign keys (the cascades live in the
database), WAL (readers do not block the writer) and a busy timeout, and
begins its transactions ``IMMEDIATE``, so several agent processes can share
one file without "database is locked" failures on lock upgrade.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import peewee
from playhouse import db_url

from .actor import ActorOnSqlite, is_write
from .errors import MASK, ConfigurationError, ConnectionError
from .reconnect import PooledPostgresDatabase, PostgresDatabase

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_URL",
    "ENV_VAR",
    "open_database",
    "redact",
    "resolve_url",
    "is_sqlite",
    "write_transaction",
    "query_log_parameters",
]

ENV_VAR = "OPTISTATE_DATABASE_URL"
DEFAULT_URL = "sqlite:///optistate.db"
SQLITE_PRAGMAS = (("busy_timeout", 30_000), ("foreign_keys", 1), ("synchronous", "normal"))
BUSY_SECONDS = 30
SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+pool", "postgres+pool")


class SqliteDatabase(ActorOnSqlite, peewee.SqliteDatabase):
    """``sqlite://``: peewee's, with the actor set for each write (see :mod:`optistate.actor`)."""


CLASSES: dict[str, type[peewee.Database]] = {
    "sqlite": SqliteDatabase,
    "postgresql": PostgresDatabase,
    "postgres": PostgresDatabase,
    "postgresql+pool": PooledPostgresDatabase,
    "postgres+pool": PooledPostgresDatabase,
}
CONNECT_TIMEOUT = 10
"""Seconds to wait for a PostgreSQL server to answer a new connection, unless the URL sets ``connect_timeout``."""


def resolve_url(url: str | None = None) -> str:
    """The URL given, else ``$OPTISTATE_DATABASE_URL``, else :data:`DEFAULT_URL`."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_SECRET_PARAMETER = re.compile(r"\b(password|passwd|sslpassword)=[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password masked: in each URL's user info, and in any ``password=`` parameter.

    The user info ends at the last ``@`` of the URL's authority, so a password
    holding a raw ``@``, ``/`` or ``?`` is masked whole.
    """
    return _SECRET_PARAMETER.sub(rf"\1={MASK}", _URL.sub(_redact_url, text))


def _redact_url(match: re.Match[str]) -> str:
    scheme, rest = match.group(0).split("://", 1)
    before_query = rest.partition("?")[0]
    authority = before_query if "@" in before_query else rest
    if "@" not in authority:
        return match.group(0)
    end = authority.rindex("@")
    userinfo, tail = rest[:end], rest[end:]
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{colon and ':' + MASK}{tail}"


class _RedactConfigWrites(logging.Filter):
    """Hide the parameters of writes to ``agent_configs`` in peewee's DEBUG query log.

    peewee logs every statement with its parameters; a config value may be
    a secret, so those parameters never reach a log handler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str):
            sql = message[0].lstrip().upper()
            if "AGENT_CONFIGS" in sql and is_write(sql.rsplit("TRUE); ", 1)[-1]):  # after the actor's set_config
                record.msg = (message[0], [MASK] * len(message[1] or ()))
        return True


_REDACT = _RedactConfigWrites()


@contextlib.contextmanager
def query_log_parameters() -> Iterator[None]:
    """Within the block, peewee's DEBUG log shows config writes' parameters unmasked.

    For replaying exact statements, as ``bench/bench.py`` does; secrets then reach the log.
    """
    logger = logging.getLogger("peewee")
    logger.removeFilter(_REDACT)
    try:
        yield
    finally:
        logger.addFilter(_REDACT)


def open_database(url: str | None = None) -> peewee.Database:
    """A connected Database for ``url`` (see the module docstring for defaults).

    :raises ConfigurationError: the URL's scheme or shape is not one optistate uses.
    :raises ConnectionError: the server or file cannot be reached.
    """
    url = resolve_url(url)
    logging.getLogger("peewee").addFilter(_REDACT)  # idempotent: a filter is added once
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigurationError("database", redact(url), f"scheme must be one of {', '.join(SCHEMES)}")
    options: dict[str, Any] = {}
    if scheme == "sqlite" and not url.startswith("sqlite:///"):
        raise ConfigurationError("database", redact(url), "use sqlite:///relative.db or sqlite:////absolute/path.db")
    if scheme == "sqlite":
        options = {"pragmas": SQLITE_PRAGMAS, "timeout": BUSY_SECONDS}
    try:
        options = {**db_url.parse(url, unquote_password=True, unquote_user=True), **options}
        if scheme != "sqlite":
            options.setdefault("connect_timeout", CONNECT_TIMEOUT)
        if not options["database"]:
            raise ValueError(f"no database name: use {scheme}://host/dbname")
        database = CLASSES[scheme](**options)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigurationError("database", redact(url), redact(str(exc))) from None
    if scheme != "sqlite":
        database.url_shown = redact(url)  # type: ignore[attr-defined]
    if scheme == "sqlite" and database.database != ":memory:" and not os.path.exists(database.database):
        _create_private(database.database)
    try:
        database.connect(reuse_if_open=True)
        if isinstance(database, peewee.SqliteDatabase):
            _use_wal(database)
    except peewee.DatabaseError as exc:
        raise ConnectionError(redact(url), exc) from None
    except TypeError as exc:  # an option in the URL's query string that the driver does not take
        raise ConfigurationError("database", redact(url), str(exc)) from None
    return database


def _create_private(path: str) -> None:
    """Create a new SQLite file readable by its owner only: sensitive config values live in it.

    SQLite gives the ``-wal`` and ``-shm`` files the same permissions.
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:  # another process created it first, or SQLite will say why it cannot open it
        pass


def _use_wal(database: peewee.SqliteDatabase) -> None:
    """Switch the file to WAL once; the mode is stored in the file.

    Changing the mode needs the file to itself and SQLite does not wait for
    that (the busy timeout does not apply), so processes that open a new
    file together retry here until one of them has switched it.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            database.pragma("journal_mode", "wal")
            return
        except peewee.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        if database.pragma("journal_mode") == "wal":
            return
        time.sleep(0.01)


def is_sqlite(database: peewee.Database | peewee.DatabaseProxy | None) -> bool:
    """Whether ``database`` (or the database a proxy stands for) is SQLite."""
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    return isinstance(database, peewee.SqliteDatabase)


def write_transaction(database: peewee.Database) -> Any:
    """A transaction that takes the write lock up front (``BEGIN IMMEDIATE`` on SQLite)."""
    if is_sqlite(database):
        return database.atomic("IMMEDIATE")
    return database.atomic()
