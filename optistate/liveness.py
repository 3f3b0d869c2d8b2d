"""Liveness: an agent is alive while its last heartbeat is within its TTL, by the database's clock.

``agents.ttl_seconds`` (migration 0004, set by ``start_agent(ttl=…)``) is
compared in SQL with the database's now, never a client's. :class:`KeepAlive`
is the daemon thread behind ``agent.keep_alive()``; :func:`reap` marks the
agents past their TTL offline and frees their leases, and is safe to run
from any number of processes at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import peewee

from .database import write_transaction
from .errors import NotFoundError, one_line
from .fields import TimestampField
from .leases import clock
from .models import AgentStatus

__all__ = ["KeepAlive", "alive_condition", "liveness", "now_column", "parse_stamp", "reap", "stale_condition"]

log = logging.getLogger("optistate")

_OFFLINE = AgentStatus.OFFLINE.value

parse_stamp = TimestampField().python_value
"""A timestamp as the driver returns it (text on SQLite) as an aware UTC datetime."""


def now_column(database: peewee.Database) -> peewee.Node:
    """The database's now as a selected column ``db_now`` (read it with :func:`parse_stamp`)."""
    return peewee.SQL(clock(database).now).alias("db_now")


def liveness(status: str, heartbeat: datetime, ttl: float, now: datetime) -> str:
    """``offline`` (stopped or reaped), ``alive`` (heartbeat within ``ttl`` of the database's ``now``) or ``stale``."""
    if status == _OFFLINE:
        return "offline"
    return "alive" if (now - heartbeat).total_seconds() < ttl else "stale"


def _threshold(database: peewee.Database, ttl: Any) -> peewee.Node:
    """The database's now minus ``ttl`` (a column), as a peewee node."""
    prefix, suffix = clock(database).after("-(@@)").split("@@")
    return peewee.NodeList((peewee.SQL(prefix), ttl, peewee.SQL(suffix)), glue="")


def alive_condition(database: peewee.Database, agent: Any) -> Any:
    """For a query on the ``agents`` model ``agent``: not stopped, and its heartbeat within its TTL."""
    return (agent.status != _OFFLINE) & (agent.last_heartbeat > _threshold(database, agent.ttl_seconds))


def stale_condition(database: peewee.Database, agent: Any) -> Any:
    """Not stopped, and its last heartbeat older than its TTL: what :func:`reap` takes."""
    return (agent.status != _OFFLINE) & (agent.last_heartbeat <= _threshold(database, agent.ttl_seconds))


_REAP_POSTGRES = f"""
WITH stale AS (
    SELECT id FROM agents
    WHERE status <> '{_OFFLINE}' AND last_heartbeat <= clock_timestamp() - ttl_seconds * interval '1 second'
    ORDER BY id FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE agents a SET status = '{_OFFLINE}' FROM stale WHERE a.id = stale.id RETURNING a.id
), freed AS (
    UPDATE agent_leases l SET holder_id = NULL, expires_at = least(l.expires_at, clock_timestamp())
    FROM (SELECT resource FROM agent_leases WHERE holder_id IN (SELECT id FROM reaped) FOR UPDATE SKIP LOCKED) f
    WHERE l.resource = f.resource
), idled AS (
    UPDATE agent_states s SET status = 'idle', current_workflow = NULL, workflow_data = '{{}}'::jsonb,
        resource_locks = '[]'::jsonb
    FROM reaped WHERE s.agent_id = reaped.id
)
SELECT id FROM reaped
"""


def reap(database: peewee.Database, models: Any) -> list[Any]:
    """Mark every agent whose heartbeat is older than its TTL offline and free its leases; return those agents.

    Their state rows go back to idle with no workflow or locks, as after
    ``stop()``. On PostgreSQL this is one statement that skips agents another
    reaper (or the agent itself) has locked, so concurrent reapers neither
    wait on nor reap the same agent twice; on SQLite it is one write
    transaction. An agent reaped while still running stays offline: its
    heartbeats do not bring it back, and its leases are gone, except one
    inside a running ``fenced()`` block, which is skipped and left to expire.

    On PostgreSQL the statement runs after taking the change log's revision
    lock (see :mod:`optistate.events`), so it never holds an agent's row while
    waiting for that lock, which a transaction changing the same agent may hold.
    """
    agent = models.Agent
    if clock(database).sqlite:
        with write_transaction(database):
            ids = [row.id for row in agent.select(agent.id).where(stale_condition(database, agent))]
            if ids:
                agent.update(status=_OFFLINE).where(agent.id.in_(ids)).execute()
                c = clock(database)
                marks = ", ".join("?" for _ in ids)
                database.execute_sql(
                    f"UPDATE agent_leases SET holder_id = NULL, expires_at = {c.least('expires_at', c.now)} "
                    f"WHERE holder_id IN ({marks})",
                    [agent.id.db_value(i) for i in ids],
                )
                state = models.AgentState
                state.update(
                    status=AgentStatus.IDLE.value, current_workflow=None, workflow_data={}, resource_locks=[]
                ).where(state.agent.in_(ids)).execute()
    else:
        with database.atomic():
            database.execute_sql("SELECT revision FROM optistate_revision FOR UPDATE")
            ids = [row[0] for row in database.execute_sql(_REAP_POSTGRES).fetchall()]
    return list(agent.select().where(agent.id.in_(ids)).order_by(agent.type, agent.name)) if ids else []


class KeepAlive:
    """A daemon thread that calls ``beat`` at once and then every ``interval()`` seconds until :meth:`stop`.

    A failing beat (the database is unreachable) is logged and tried again
    at the next interval; a deleted agent (:class:`NotFoundError`) ends the
    thread. The thread uses its own connection and closes it when it ends.
    """

    def __init__(self, beat: Callable[[], None], interval: Callable[[], float], database: peewee.Database, name: str):
        self.beat, self.interval, self.database, self.name = beat, interval, database, name
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"optistate keep_alive {name}", daemon=True)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self.stopped.is_set()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to end and wait for it (unless called from the thread itself)."""
        self.stopped.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                try:
                    self.beat()
                except NotFoundError as exc:
                    log.error("keep_alive %s: %s; stopping", self.name, exc)
                    return
                except Exception as exc:  # the database may be back at the next beat
                    log.warning("keep_alive %s: heartbeat failed: %s", self.name, one_line(exc))
                if self.stopped.wait(self.interval()):
                    return
        finally:
            self.database.close()
