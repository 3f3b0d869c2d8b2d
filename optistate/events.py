"""The change log: ``agent_events``, its reads and its compaction.

Database triggers (migration 0006) add one event for every change to an
agent, a config, a state, a capability or a lease, whoever writes it, with a
store-wide revision that strictly increases in commit order: a reader that
sees revision r has seen every lower revision that will ever exist. Revisions
may have gaps (a rolled-back change, or an upsert that changed nothing),
which never fill. Each row of the four agent tables carries the revision of
its last change in ``revision``.

An event's ``old`` and ``new`` are the row's tracked columns before and after
(None before an insert and after a delete); a sensitive config value is
:data:`~optistate.errors.MASK`. Heartbeats, lease renewals and metrics are not
events. :func:`compact` forgets old events; reading from before the
compacted point raises :class:`~optistate.errors.Compacted`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee

from .database import is_sqlite, write_transaction
from .errors import Compacted, ValidationError
from .fields import TimestampField

__all__ = ["KINDS", "Event", "compact", "history", "read_after", "revision"]

KINDS = ("agent", "config", "state", "capability", "lease")
_stamp = TimestampField().python_value
_COLUMNS = (
    "e.revision, e.at, e.agent_id, a.name, a.type, e.kind, e.key, e.old_value, e.new_value, e.actor"
)


@dataclass(frozen=True)
class Event:
    """One change: ``kind`` of row, its ``key`` (config key, capability or resource name; None for an agent
    or state), the tracked columns ``old`` and ``new``, and who made it (``actor``).

    ``agent`` and ``agent_type`` are the agent's as it is now (for a deleted
    agent, what its own last kept event recorded, else None).
    """

    revision: int
    at: datetime
    agent_id: uuid.UUID | None
    agent: str | None
    agent_type: str | None
    kind: str
    key: str | None
    old: Any
    new: Any
    actor: str

    @property
    def changes(self) -> dict[str, tuple[Any, Any]]:
        """``{column: (old, new)}`` for each tracked column the change set or moved."""
        old, new = self.old or {}, self.new or {}
        return {c: (old.get(c), new.get(c)) for c in {**old, **new} if c not in old or c not in new or old[c] != new[c]}

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values (the time in ISO 8601, the id as text)."""
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["agent_id"] = str(self.agent_id) if self.agent_id else None
        return data


def _events(database: peewee.Database, rows: list[tuple[Any, ...]]) -> list[Event]:
    """Events from rows of :data:`_COLUMNS`; those of a deleted agent are named by its own last agent event."""
    decoded = [
        (*row[:7], *(json.loads(v) if isinstance(v, str) else v for v in row[7:9]), row[9]) for row in rows
    ]
    gone = {row[2] for row in decoded if row[3] is None and row[2] is not None}
    names: dict[Any, tuple[str, str]] = {}
    if gone:
        marks = ", ".join([database.param] * len(gone))
        found = database.execute_sql(
            f"SELECT agent_id, old_value, new_value FROM agent_events WHERE kind = 'agent' AND agent_id IN ({marks})"
            " ORDER BY revision",
            list(gone),
        )
        for agent_id, old, new in found.fetchall():
            record = json.loads(new or old) if isinstance(new or old, str) else (new or old)
            names[agent_id] = (record["name"], record["type"])
    events = []
    for revision, at, agent_id, name, agent_type, kind, key, old, new, actor in decoded:
        if name is None:
            name, agent_type = names.get(agent_id, (None, None))
        ident = uuid.UUID(str(agent_id)) if agent_id is not None else None
        events.append(Event(int(revision), _stamp(at), ident, name, agent_type, kind, key, old, new, actor))  # type: ignore[arg-type]
    return events


def _filters(
    database: peewee.Database, agent: str | None, key: str | None, kinds: Iterable[str] | None
) -> tuple[str, list[Any]]:
    """The WHERE conditions (each starting with AND) and their parameters."""
    mark, sql, params = database.param, "", []
    if agent is not None:
        sql += f" AND e.agent_id IN (SELECT id FROM agents WHERE name = {mark})"
        params.append(agent)
    if key is not None:
        sql += f" AND e.key = {mark}"
        params.append(key)
    if kinds is not None:
        wanted = sorted(set([kinds] if isinstance(kinds, str) else kinds))
        unknown = [k for k in wanted if k not in KINDS]
        if unknown or not wanted:
            raise ValidationError("kinds", unknown or wanted, f"must be some of {', '.join(KINDS)}")
        sql += f" AND e.kind IN ({', '.join([mark] * len(wanted))})"
        params.extend(wanted)
    return sql, params


def _check_revision(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, value, "must be a revision: an int of 0 or more")
    return value


def revision(database: peewee.Database) -> int:
    """The newest committed revision (0 before any change): watching from it misses nothing later."""
    sql = "SELECT coalesce((SELECT max(revision) FROM agent_events), compacted) FROM optistate_revision"
    return int(database.execute_sql(sql).fetchone()[0])


def history(
    database: peewee.Database,
    agent: str | None = None,
    key: str | None = None,
    *,
    kinds: Iterable[str] | None = None,
    since: int | None = None,
    limit: int | None = None,
) -> list[Event]:
    """The kept events, oldest first: those after ``since``, of the agent named ``agent``, with ``key``,
    of ``kinds``; with ``limit``, the newest ``limit`` of them."""
    where, params = _filters(database, agent, key, kinds)
    mark = database.param
    if since is not None:
        where += f" AND e.revision > {mark}"
        params.append(_check_revision("since", since))
    sql = f"SELECT {_COLUMNS} FROM agent_events e LEFT JOIN agents a ON a.id = e.agent_id WHERE 1 = 1{where}"
    if limit is None:
        return _events(database, database.execute_sql(sql + " ORDER BY e.revision", params).fetchall())
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("limit", limit, "must be an int of 1 or more")
    rows = database.execute_sql(sql + f" ORDER BY e.revision DESC LIMIT {mark}", [*params, limit]).fetchall()
    return _events(database, rows[::-1])


def read_after(
    database: peewee.Database,
    since: int,
    limit: int,
    agent: str | None = None,
    key: str | None = None,
    kinds: Iterable[str] | None = None,
) -> list[Event]:
    """Up to ``limit`` events after revision ``since``, oldest first, for a watch.

    The compaction point is read by the same statement, so in the same
    snapshot: no event can be compacted between the check and the read.

    :raises Compacted: events after ``since`` may have been compacted away.
    """
    where, params = _filters(database, agent, key, kinds)
    mark = database.param
    nulls = ", ".join(["NULL"] * 9)  # the columns after revision
    sql = (
        f"SELECT 1 AS part, {_COLUMNS} FROM agent_events e LEFT JOIN agents a ON a.id = e.agent_id "
        f"WHERE e.revision > {mark}{where} "
        f"UNION ALL SELECT 0, compacted, {nulls} FROM optistate_revision ORDER BY 1, 2 LIMIT {mark}"
    )
    rows = database.execute_sql(sql, [since, *params, limit + 1]).fetchall()
    compacted = int(rows[0][1])
    if since < compacted:
        raise Compacted(since, compacted + 1)
    return _events(database, [row[1:] for row in rows[1:]])


def compact(database: peewee.Database, keep: timedelta) -> int:
    """Forget the events older than ``keep`` (by the database's clock), and any with a lower revision;
    return how many were removed. A later read from before them raises :class:`Compacted`."""
    if not isinstance(keep, timedelta) or keep < timedelta(0):
        raise ValidationError("keep", keep, "must be a timedelta of 0 or more")
    seconds = keep.total_seconds()
    if is_sqlite(database):
        cutoff = f"strftime('%Y-%m-%d %H:%M:%f000+00:00', 'now', '-{seconds:.6f} seconds')"
    else:
        cutoff = f"now() - {seconds:.6f} * interval '1 second'"
    with write_transaction(database):
        newest = database.execute_sql(f"SELECT max(revision) FROM agent_events WHERE at < {cutoff}").fetchone()[0]
        if newest is None:
            return 0
        mark = database.param
        removed = database.execute_sql(f"DELETE FROM agent_events WHERE revision <= {mark}", (newest,)).rowcount
        database.execute_sql(
            f"UPDATE optistate_revision SET compacted = {mark} WHERE compacted < {mark}", (newest, newest)
        )
    return int(removed)
