"""PostgreSQL databases that outlive a server restart.

peewee keeps a connection the server has closed, so after a restart every
call fails for good. :class:`PostgresDatabase` and :class:`PooledPostgresDatabase`
(``postgresql://`` and ``postgresql+pool://``) instead:

- before sending a statement or a ``BEGIN`` outside a transaction, check
  without a round trip whether the server has closed the connection (an idle
  connection has nothing to read unless the server sent a termination notice
  or end-of-file), and if so open a new one;
- retry opening a connection a bounded number of times (:data:`RETRY_DELAYS`);
- never resend a statement: one that fails after it was sent may or may not
  have taken effect, so it raises, as does any failure inside a transaction;
- raise :class:`~optistate.errors.ConnectionError`, never a driver class, when
  the server cannot be reached or the connection is lost, and forget the lost
  connection so the next call starts afresh.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import peewee
import psycopg2
from playhouse.pool import PooledPostgresqlDatabase

from .actor import ActorOnPostgres
from .errors import ConnectionError

__all__ = ["RETRY_DELAYS", "PooledPostgresDatabase", "PostgresDatabase", "closed_by_server", "guarded"]

RETRY_DELAYS = (0.1, 0.4)
"""Seconds to wait before the second and third attempt to connect; then ConnectionError."""
_LOST = (peewee.OperationalError, peewee.InterfaceError, psycopg2.OperationalError, psycopg2.InterfaceError)


def closed_by_server(conn: Any) -> bool:
    """Whether the server has closed this idle psycopg2 connection, found without a round trip.

    An idle connection has nothing to read unless the server sent something.
    A notification (``A``) or a changed setting (``S``) is left to the driver;
    end-of-file, or anything else (the ``FATAL`` of a shutdown, the warning
    before a crash-stop), means the session is over.
    """
    if conn.closed:
        return True
    try:
        fd = conn.fileno()
        if hasattr(select, "poll"):  # no FD_SETSIZE limit, unlike select()
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            readable = bool(poller.poll(0))
        else:
            readable = bool(select.select([fd], [], [], 0)[0])
        if not readable:
            return False
        with socket.socket(fileno=os.dup(fd)) as sock:
            first = sock.recv(1, socket.MSG_PEEK)
    except (OSError, ValueError, psycopg2.Error):
        return True
    return first not in (b"A", b"S")


class _Reconnecting:
    """Mixed into a peewee PostgreSQL database; see the module docstring."""

    url_shown = ""
    """The URL as messages show it (no password); set by :func:`~optistate.database.open_database`."""
    _state: Any

    def connect(self, reuse_if_open: bool = False) -> bool:
        for delay in RETRY_DELAYS:
            try:
                return bool(super().connect(reuse_if_open))  # type: ignore[misc]
            except peewee.OperationalError:  # refused, unreachable, starting up or shutting down
                time.sleep(delay)
        try:
            return bool(super().connect(reuse_if_open))  # type: ignore[misc]
        except peewee.OperationalError as exc:
            raise ConnectionError(self.url_shown, exc) from None

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        self._replace_if_closed()
        with self.guarded():
            return super().execute_sql(sql, params)  # type: ignore[misc]

    def begin(self, *args: Any, **kwargs: Any) -> None:
        self._replace_if_closed()
        with self.guarded():
            super().begin(*args, **kwargs)  # type: ignore[misc]

    def commit(self) -> None:
        with self.guarded():  # a lost COMMIT may or may not have committed: raised, never resent
            super().commit()  # type: ignore[misc]

    def rollback(self) -> None:
        conn = self._state.conn
        if conn is None or conn.closed:  # lost (and maybe forgotten): the server rolled back when it went
            if conn is not None and not self.in_transaction():  # type: ignore[attr-defined]
                self._forget()
            return
        with self.guarded():
            super().rollback()  # type: ignore[misc]

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """Within the block, a lost connection raises ConnectionError and is forgotten.

        Forgotten at once outside a transaction, or by the rollback that ends it.
        """
        try:
            yield
        except _LOST as exc:
            conn = self._state.conn
            if conn is None or not conn.closed:
                raise  # the server answered: not a lost connection
            if not self.in_transaction():  # type: ignore[attr-defined]
                self._forget()
            raise ConnectionError(self.url_shown, exc) from None

    def _replace_if_closed(self) -> None:
        """Outside a transaction nothing is lost by replacing a connection the server has closed."""
        conn = self._state.conn
        if conn is not None and not self.in_transaction() and closed_by_server(conn):  # type: ignore[attr-defined]
            self._forget()

    def _forget(self) -> None:
        """Drop the lost connection; open ``connection_context()`` blocks stay open, and their exits close.

        Through a transaction-mode pooler a dropped database shows as a connection lost mid-statement,
        inside such a block: emptying its stack as well would make the block's exit fail.
        """
        conn, blocks = self._state.conn, self._state.ctx
        self._state.reset()
        self._state.ctx = blocks
        if conn is not None:
            with contextlib.suppress(Exception):
                self._release(conn)

    def _release(self, conn: Any) -> None:
        conn.close()


class PostgresDatabase(ActorOnPostgres, _Reconnecting, peewee.PostgresqlDatabase):
    """``postgresql://``: one connection per thread, replaced when the server closed it; writes carry the actor."""


class PooledPostgresDatabase(ActorOnPostgres, _Reconnecting, PooledPostgresqlDatabase):
    """``postgresql+pool://``: a pooled connection closed by the server is dropped, not reused; writes carry
    the actor."""

    def _is_closed(self, conn: Any) -> bool:
        return closed_by_server(conn) or bool(super()._is_closed(conn))

    def _release(self, conn: Any) -> None:
        self._close(conn, close_conn=True)  # out of the pool's in-use count, and closed


def guarded(database: peewee.Database) -> Any:
    """:meth:`_Reconnecting.guarded` of ``database``, or a no-op for a database without it (SQLite)."""
    guard = getattr(database, "guarded", None)
    return guard() if guard is not None else contextlib.nullcontext()
