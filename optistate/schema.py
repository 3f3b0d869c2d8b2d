"""Apply, revert and list the schema migrations, safely from many processes at once.

The scripts are ``migrations/NNNN_*.py`` (installed as ``optistate.migrations``)
and run through peewee's :class:`playhouse.migrations.Runner`, which records
them in the ``optistate_migrations`` table.

peewee's runner, like its peers, lets two processes that migrate one empty
database at the same moment both try to create the same tables. Here every
run holds a lock for its whole plan: ``pg_advisory_xact_lock`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite. The second process waits, then finds the
migrations applied and has nothing to do.
"""

from __future__ import annotations

import importlib
import os
from typing import NamedTuple

import peewee
from playhouse.migrations import MigrationError as RunnerError
from playhouse.migrations import Runner

from .actor import acting_as
from .database import is_sqlite, write_transaction
from .errors import MigrationError

__all__ = ["HISTORY_TABLE", "MigrationStatus", "migrate", "rollback", "status"]

HISTORY_TABLE = "optistate_migrations"
_LOCK_KEY = 7_151_747_131  # any fixed bigint; every optistate process takes the same one


class MigrationStatus(NamedTuple):
    name: str
    applied: bool


def directory() -> str:
    """Where the migration scripts are installed (``migrations/`` of the distribution)."""
    try:
        scripts = importlib.import_module("optistate.migrations")
    except ModuleNotFoundError:
        raise MigrationError(
            "optistate.migrations is missing: this optistate is a source checkout that is not installed "
            "(pip install -e .), or python runs in the checkout's root, which hides the installed copy"
        ) from None
    return os.path.dirname(os.path.abspath(scripts.__file__ or ""))


def _runner(database: peewee.Database) -> Runner:
    return Runner(database, directory(), table_name=HISTORY_TABLE)


def _locked(database: peewee.Database, action: str, target: str | None) -> list[str]:
    runner = _runner(database)
    try:
        with acting_as(""), write_transaction(database):  # the schema's own writes are no one's changes
            if not is_sqlite(database):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            return list(getattr(runner, action)(target))
    except RunnerError as exc:
        raise MigrationError(str(exc)) from None
    except peewee.DatabaseError as exc:
        raise MigrationError(f"{action} failed, nothing was changed: {exc}") from exc


def migrate(database: peewee.Database, target: str | None = None) -> list[str]:
    """Apply the pending migrations (up to and including ``target``); return their names."""
    return _locked(database, "up", target)


def rollback(database: peewee.Database, target: str | None = None) -> list[str]:
    """Revert the latest migration, or every one back through ``target``; return their names."""
    return _locked(database, "down", target)


def status(database: peewee.Database) -> list[MigrationStatus]:
    """Every migration file, in order, and whether it is applied."""
    return [MigrationStatus(m.name, bool(m.applied)) for m in _runner(database).status() if m.path]
