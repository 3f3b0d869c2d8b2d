"""Leases: locks on named resources that exclude, expire and fence.

A lease is a row of ``agent_leases`` (migration 0004), one per resource ever
locked: its holder, its fencing token and its expiry. Every expiry is
computed and compared in SQL with the database's clock (``clock_timestamp()``
on PostgreSQL; on SQLite the one machine's clock, read by SQLite), never with
a client's, so agents whose clocks differ agree on who holds what.

Acquiring is one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` the current
lease is free or expired: the database's row lock decides between
concurrent acquirers, and the token is the previous one plus one, so tokens
strictly increase per resource over every acquisition ever made. A lease
that is released or expires keeps its row (holder NULL), and with it the
last token.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

import peewee

from .actor import acting, acting_as
from .database import is_sqlite, write_transaction
from .errors import LockHeld, LockLost, NotFoundError, ValidationError
from .fields import TimestampField, check_list, check_text

__all__ = ["DEFAULT_TTL", "MAX_TTL", "Clock", "Holder", "Lease", "LeaseInfo", "check_ttl", "clock", "db_now", "locks"]

DEFAULT_TTL = 30.0
MAX_TTL = 86_400.0
POLL_SECONDS = 0.05
"""How often a waiting ``lock(wait=…)`` tries again (with jitter)."""

_stamp = TimestampField().python_value
_SQLITE_FORMAT = "'%Y-%m-%d %H:%M:%f000+00:00'"  # TimestampField's stored text, from SQLite's millisecond clock


class Clock(NamedTuple):
    """The database's clock as SQL text, and the driver's parameter marker."""

    now: str
    mark: str
    sqlite: bool

    def after(self, seconds: str) -> str:
        """SQL for the database's now plus ``seconds`` (an SQL expression of seconds, may be fractional)."""
        if self.sqlite:
            return f"strftime({_SQLITE_FORMAT}, 'now', printf('%+.6f seconds', {seconds}))"
        return f"(clock_timestamp() + ({seconds}) * interval '1 second')"

    def least(self, a: str, b: str) -> str:
        return f"{'min' if self.sqlite else 'least'}({a}, {b})"


def clock(database: peewee.Database) -> Clock:
    """``database``'s clock (see :class:`Clock`)."""
    if is_sqlite(database):
        return Clock(f"strftime({_SQLITE_FORMAT}, 'now')", "?", True)
    return Clock("clock_timestamp()", "%s", False)


def db_now(database: peewee.Database) -> datetime:
    """The database's current time, as an aware UTC datetime."""
    value = _stamp(database.execute_sql(f"SELECT {clock(database).now}").fetchone()[0])
    assert value is not None
    return value


def check_ttl(field: str, value: Any) -> float:
    """``value`` as seconds: a finite number above 0 and at most :data:`MAX_TTL` (a day)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(field, value, "must be a number of seconds")
    if not 0 < value <= MAX_TTL:
        raise ValidationError(field, value, f"must be above 0 and at most {MAX_TTL:g} seconds")
    return float(value)


class LeaseInfo(NamedTuple):
    """A held lease as :func:`locks` lists it; times are the database's."""

    resource: str
    holder: str
    holder_id: uuid.UUID
    token: int
    acquired_at: datetime
    expires_at: datetime


def locks(database: peewee.Database) -> list[LeaseInfo]:
    """Every lease held now (not released, not expired by the database's clock), by resource."""
    c = clock(database)
    cursor = database.execute_sql(
        "SELECT l.resource, a.name, a.id, l.token, l.acquired_at, l.expires_at FROM agent_leases l "
        f"JOIN agents a ON a.id = l.holder_id WHERE l.expires_at > {c.now} ORDER BY l.resource"
    )
    return [
        LeaseInfo(resource, name, uuid.UUID(str(ident)), int(token), _stamp(got), _stamp(ends))  # type: ignore[arg-type]
        for resource, name, ident, token, got, ends in cursor.fetchall()
    ]


class Holder:
    """An agent as a lease holder: its id as stored, its name, the actor its changes are recorded as,
    and the leases this process took for it.

    Made by :class:`~optistate.agent.AgentHandle`; ``agent.lock()`` calls :meth:`acquire`.
    """

    def __init__(self, database: peewee.Database, ident: Any, name: str, actor: str = ""):
        self.database, self.ident, self.name, self.actor = database, ident, name, actor
        self.held: dict[str, Lease] = {}

    @acting
    def acquire(self, resource: str, ttl: float = DEFAULT_TTL, wait: float = 0.0) -> Lease:
        """A lease on ``resource`` for ``ttl`` seconds, trying again until ``wait`` seconds have passed.

        :raises LockHeld: another holder (this agent included: leases are not re-entrant) keeps it.
        :raises NotFoundError: this agent's row is gone.
        """
        check_text("resource", resource, 255)
        ttl = check_ttl("ttl", ttl)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_TTL:
            raise ValidationError("wait", wait, f"must be 0 to {MAX_TTL:g} seconds")
        c, deadline = clock(self.database), time.monotonic() + wait
        sql = (
            "INSERT INTO agent_leases (resource, holder_id, token, ttl_seconds, acquired_at, expires_at) "
            f"VALUES ({c.mark}, {c.mark}, 1, {c.mark}, {c.now}, {c.after(c.mark)}) "
            f"ON CONFLICT (resource) DO UPDATE SET holder_id = excluded.holder_id, token = agent_leases.token + 1, "
            f"ttl_seconds = excluded.ttl_seconds, acquired_at = {c.now}, "
            f"expires_at = {c.after('excluded.ttl_seconds')} "
            f"WHERE agent_leases.holder_id IS NULL OR agent_leases.expires_at <= {c.now} "
            "RETURNING token, acquired_at, expires_at"
        )  # the SET and WHERE times are read after the row lock is granted, so a hold starts after the last ended
        while True:
            try:
                row = self.database.execute_sql(sql, (resource, self.ident, ttl, ttl)).fetchone()
            except peewee.IntegrityError:
                raise NotFoundError.deleted_agent(self.name) from None
            if row is not None:
                lease = self.held[resource] = Lease(self, resource, int(row[0]), ttl, _stamp(row[1]), _stamp(row[2]))
                return lease
            holder, until = self._holder_of(resource)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockHeld(resource, holder, until)
            if holder is not None:
                time.sleep(min(left, POLL_SECONDS * random.uniform(0.5, 1.5)))

    def acquire_all(self, resources: Iterable[str], ttl: float, wait: float = 0.0) -> list[Lease]:
        """Leases on every one of ``resources`` or none, taken in sorted order (so two callers cannot deadlock).

        :raises LockHeld: for the first resource held elsewhere; those already taken are released.
        """
        names = check_list("locks", resources, str)
        taken: list[Lease] = []
        try:
            for resource in sorted(set(names)):
                taken.append(self.acquire(resource, ttl, wait))
        except BaseException:
            for lease in reversed(taken):
                lease.release()
            raise
        return taken

    def _holder_of(self, resource: str) -> tuple[str | None, datetime | None]:
        c = clock(self.database)
        row = self.database.execute_sql(
            "SELECT a.name, l.expires_at FROM agent_leases l JOIN agents a ON a.id = l.holder_id "
            f"WHERE l.resource = {c.mark} AND l.expires_at > {c.now}",
            (resource,),
        ).fetchone()
        return (row[0], _stamp(row[1])) if row else (None, None)

    def renew_held(self) -> list[Lease]:
        """Renew every lease this process holds for the agent; return those found lost (and forgotten)."""
        lost = []
        for lease in list(self.held.values()):
            try:
                lease.renew()
            except LockLost:
                lost.append(lease)
        return lost

    def shortest_ttl(self) -> float | None:
        return min((lease.ttl for lease in self.held.values()), default=None)

    @acting
    def release_all(self) -> None:
        """Release every lease the agent holds, in the database (any process's), and forget this process's."""
        c = clock(self.database)
        self.database.execute_sql(
            f"UPDATE agent_leases SET holder_id = NULL, expires_at = {c.least('expires_at', c.now)} "
            f"WHERE holder_id = {c.mark}",
            (self.ident,),
        )
        for lease in list(self.held.values()):
            lease.released = True
        self.held.clear()


class Lease:
    """A held lock on ``resource``; ``token`` is its fencing token.

    ``acquired_at`` and ``expires_at`` are the database's times; ``expires_at``
    moves with each :meth:`renew`. As a context manager it releases on exit.
    """

    def __init__(self, holder: Holder, resource: str, token: int, ttl: float, acquired_at: Any, expires_at: Any):
        self.holder, self.resource, self.token, self.ttl = holder, resource, token, ttl
        self.acquired_at: datetime = acquired_at
        self.expires_at: datetime = expires_at
        self.released = False

    def __repr__(self) -> str:
        return f"<Lease {self.resource!r} token {self.token} of {self.holder.name}>"

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _where(self) -> tuple[str, tuple[Any, ...]]:
        mark = clock(self.holder.database).mark
        return f"resource = {mark} AND holder_id = {mark} AND token = {mark}", (
            self.resource, self.holder.ident, self.token,
        )  # fmt: skip

    def _forget(self) -> None:
        self.released = True
        if self.holder.held.get(self.resource) is self:
            del self.holder.held[self.resource]

    def renew(self) -> datetime:
        """Extend the lease by its TTL from the database's now; return the new expiry.

        :raises LockLost: it expired, was released or taken; a lost lease is never revived.
        """
        c, (where, params) = clock(self.holder.database), self._where()
        row = self.holder.database.execute_sql(
            f"UPDATE agent_leases SET expires_at = {c.after('ttl_seconds')} "
            f"WHERE {where} AND expires_at > {c.now} RETURNING expires_at",
            params,
        ).fetchone()
        if row is None:
            self._forget()
            raise LockLost(self.resource, self.token)
        self.expires_at = _stamp(row[0])  # type: ignore[assignment]
        return self.expires_at

    def release(self) -> datetime | None:
        """Free the lease; return when the hold ended (the database's time), or None if it was already lost."""
        c, (where, params) = clock(self.holder.database), self._where()
        with acting_as(self.holder.actor):
            row = self.holder.database.execute_sql(
                f"UPDATE agent_leases SET holder_id = NULL, expires_at = {c.least('expires_at', c.now)} "
                f"WHERE {where} RETURNING expires_at",
                params,
            ).fetchone()
        self._forget()
        return _stamp(row[0]) if row else None

    @contextlib.contextmanager
    def fenced(self) -> Iterator[None]:
        """A write transaction that commits only while this lease holds.

        The lease row is checked (token, holder, expiry by the database's
        clock) and locked at the start: ``SELECT … FOR UPDATE`` on PostgreSQL,
        the database write lock (``BEGIN IMMEDIATE``) on SQLite, so no other
        holder can take it until this transaction ends. It is checked again
        before the commit; if it expired meanwhile, the block's writes are
        rolled back.

        :raises LockLost: at the start or at the end; nothing the block wrote is committed.
        """
        c, (where, params) = clock(self.holder.database), self._where()
        check = f"SELECT 1 FROM agent_leases WHERE {where} AND expires_at > {c.now}"
        database = self.holder.database
        with write_transaction(database):
            if database.execute_sql(check + ("" if c.sqlite else " FOR UPDATE"), params).fetchone() is None:
                raise LockLost(self.resource, self.token)
            yield
            if database.execute_sql(check, params).fetchone() is None:
                raise LockLost(self.resource, self.token, "expired before the block's writes could commit")
