"""Who is writing: the actor the change log records with each change.

The change log's triggers (migration 0006) read the actor from a setting
that lives for one transaction, so it also holds through a transaction-mode
pooler. optistate's database classes fill it in with every write statement:

- PostgreSQL: ``SELECT set_config('optistate.actor', %s, true);`` is sent in
  the same query string as the statement, which PostgreSQL runs as one
  transaction: no extra round trip.
- SQLite: the one row of ``optistate_actor`` is written before a transaction's
  first write and deleted just before it commits, so no other writer ever
  sees it. A write outside a transaction gets one, and its cursor comes back
  already fetched.

The actor is the innermost :func:`acting_as` (an agent handle acts as its
agent), else the database's ``actor`` (the store's: its user, host and pid,
or the CLI's user). An empty actor sends nothing; heartbeats use it, as they
are never events.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import socket
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = ["ActorOnPostgres", "ActorOnSqlite", "acting", "acting_as", "describe", "is_write"]

_ACTOR: ContextVar[str | None] = ContextVar("optistate_actor", default=None)
_WRITES = ("INSERT", "UPDATE", "DELETE", "WITH", "REPLACE")
F = TypeVar("F", bound=Callable[..., Any])


def describe(name: str | None = None, via: str = "") -> str:
    """An actor's text: ``name`` (an agent's), else this process's user, then ``(host pid N)`` or ``via``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = f"uid {os.getuid()}"
    where = f"{via} on {socket.gethostname()}" if via else f"{socket.gethostname()} pid {os.getpid()}"
    return f"{name or user} ({where})"


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Within the block, this thread's writes are recorded as ``actor``'s ("" records none)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def acting(method: F) -> F:
    """Run ``method`` as ``self.actor``."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with acting_as(self.actor):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def is_write(sql: str) -> bool:
    """Whether ``sql`` may change rows (a read-only ``WITH`` counts too: it costs nothing)."""
    return sql.lstrip()[:7].upper().startswith(_WRITES)


class _Actor:
    actor = ""
    """The actor of writes made outside :func:`acting_as`; the store sets it."""

    def _current_actor(self, sql: str) -> str:
        actor = _ACTOR.get()
        actor = self.actor if actor is None else actor
        return actor if actor and is_write(sql) else ""


class ActorOnPostgres(_Actor):
    """Mixed into a peewee PostgreSQL database: each write statement sets ``optistate.actor`` first."""

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        actor = self._current_actor(sql)
        if actor:
            sql = "SELECT set_config('optistate.actor', %s, true); " + (sql if params else sql.replace("%", "%%"))
            params = (actor, *(params or ()))
        return super().execute_sql(sql, params)  # type: ignore[misc]


class ActorOnSqlite(_Actor):
    """Mixed into a peewee SQLite database: a transaction's writes run with the ``optistate_actor`` row set.

    The row is written before the transaction's first write (again if the actor
    changes, or a savepoint rolled it back) and deleted just before COMMIT. A
    write outside a transaction gets one of its own.
    """

    _state: Any

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        actor = self._current_actor(sql)
        if not actor:
            if sql.startswith("ROLLBACK TO SAVEPOINT"):
                self._state.actor = None  # the row may be gone with the savepoint
            return super().execute_sql(sql, params)  # type: ignore[misc]
        if not self.in_transaction():  # type: ignore[attr-defined]
            with self.atomic("IMMEDIATE"):  # type: ignore[attr-defined]
                return _Fetched(self.execute_sql(sql, params))  # read before the COMMIT
        state = self._state
        if getattr(state, "actor", None) != actor:
            super().execute_sql("INSERT OR REPLACE INTO optistate_actor (id, actor) VALUES (1, ?)", (actor,))  # type: ignore[misc]
            state.actor, state.actor_written = actor, True
        return super().execute_sql(sql, params)  # type: ignore[misc]

    def commit(self) -> None:
        state = self._state
        if getattr(state, "actor_written", False):
            super().execute_sql("DELETE FROM optistate_actor")  # type: ignore[misc]
        state.actor, state.actor_written = None, False
        super().commit()  # type: ignore[misc]

    def rollback(self) -> None:
        self._state.actor, self._state.actor_written = None, False
        super().rollback()  # type: ignore[misc]


class _Fetched:
    """A cursor whose statement has finished: its rows read, its counts kept."""

    def __init__(self, cursor: Any):
        rows = cursor.fetchall()
        self.description, self.rowcount, self.lastrowid = cursor.description, cursor.rowcount, cursor.lastrowid
        self._rows = iter(rows)

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def fetchmany(self, size: int = 1) -> list[Any]:
        return [row for _, row in zip(range(size), self._rows, strict=False)]

    def __iter__(self) -> Iterator[Any]:
        return self._rows

    def close(self) -> None:
        """Nothing to release: the rows are in memory."""
