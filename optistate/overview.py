"""The overview of agents: one summary each, built as JSON by the database in one query.

``store.overview()``, ``optistate agents`` and the dashboard (``optistate serve``)
show it. One statement joins each agent to its state row, to its config and
capability counts (grouped subqueries) and to the leases it holds now, and
makes each agent's summary a JSON object, liveness and heartbeat age included,
by the database's clock: ``json_build_object`` on PostgreSQL, ``json_object``
on SQLite. Python joins the objects into an array; :func:`overview_json`'s
text goes to an HTTP client as it is, without being decoded and encoded again,
which is what keeps ``/api/agents`` of 10,000 agents fast (``bench/dashboard.py``).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import peewee

from .database import is_sqlite
from .leases import clock
from .models import AgentStatus

__all__ = ["overview", "overview_json", "reported_status"]

_OFFLINE = AgentStatus.OFFLINE.value
# a.* is the agent, s.* its state row (NULL before it has one), c.n, p.n and p.on_ its counts, h.held its leases.
_REPORTED = f"CASE WHEN s.id IS NULL OR a.status = '{_OFFLINE}' THEN a.status ELSE s.status END"
_HEARTBEAT = "COALESCE(s.last_heartbeat, a.last_heartbeat)"


class _Dialect(NamedTuple):
    """How each backend writes what the statement needs."""

    obj: str  # the function making a JSON object of key, value, ...
    text: str  # an object as the text a client reads: {obj} is replaced
    stamp: str  # a stored timestamp as ISO-8601 text, like datetime.isoformat(timespec="microseconds")
    age: str  # seconds from a stored timestamp to the database's now, to the millisecond
    json: str  # a JSON column's value as JSON inside an object
    uuid: str  # an id as the dashed text of str(uuid.UUID)
    leases: str  # the leases held now: (holder_id, held), held a JSON array ordered by resource


_POSTGRES = _Dialect(
    obj="json_build_object",
    text="{obj}::text",
    stamp="to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
    age="round(extract(epoch FROM clock_timestamp() - {})::numeric, 3)",
    json="{}",
    uuid="{}",
    leases="SELECT l.holder_id, json_agg(json_build_object('resource', l.resource, 'token', l.token, "
    "'acquired_at', {acquired}, 'expires_at', {expires}) ORDER BY l.resource) AS held FROM agent_leases l "
    "WHERE {held} GROUP BY l.holder_id",
)
_SQLITE = _Dialect(
    obj="json_object",
    text="{obj}",
    stamp="replace({}, ' ', 'T')",  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff+00:00'
    age="round((julianday('now') - julianday(substr({}, 1, 26))) * 86400.0, 3)",
    json="json({})",
    uuid="lower(substr({0}, 1, 8) || '-' || substr({0}, 9, 4) || '-' || substr({0}, 13, 4) || '-' || "
    "substr({0}, 17, 4) || '-' || substr({0}, 21, 12))",  # stored as 32 hex digits
    leases="SELECT holder_id, json_group_array(json_object('resource', resource, 'token', token, "
    "'acquired_at', acquired, 'expires_at', expires)) AS held FROM (SELECT l.holder_id, l.resource, l.token, "
    "{acquired} AS acquired, {expires} AS expires FROM agent_leases l WHERE {held} "
    "ORDER BY l.holder_id, l.resource) GROUP BY holder_id",  # SQLite aggregates in the order of the rows given
)


def reported_status(models: Any, status: str) -> Any:
    """The condition "reports ``status``" for a peewee query on ``models.Agent`` joined to ``models.AgentState``.

    ``offline`` is the registration's, the others the state row's (the statement below says it in SQL).
    """
    if status == AgentStatus.OFFLINE:
        return models.Agent.status == status
    return (models.AgentState.status == status) & (models.Agent.status != _OFFLINE)


def _statement(database: peewee.Database, filters: list[str]) -> str:
    d, c = (_SQLITE if is_sqlite(database) else _POSTGRES), clock(database)
    alive = f"a.last_heartbeat > {c.after('-a.ttl_seconds')}"
    liveness = f"CASE WHEN a.status = '{_OFFLINE}' THEN '{_OFFLINE}' WHEN {alive} THEN 'alive' ELSE 'stale' END"
    leases = d.leases.format(
        acquired=d.stamp.format("l.acquired_at"), expires=d.stamp.format("l.expires_at"), held=f"l.expires_at > {c.now}"
    )
    fields = {
        "id": d.uuid.format("a.id"), "type": "a.type", "name": "a.name", "version": "a.version",
        "endpoint": "a.endpoint", "registered_status": "a.status", "status": _REPORTED, "liveness": liveness,
        "ttl_seconds": "a.ttl_seconds", "workflow": "s.current_workflow",
        "workflow_data": d.json.format("COALESCE(s.workflow_data, '{}')"),
        "locks": d.json.format("COALESCE(s.resource_locks, '[]')"),
        "leases": d.json.format("COALESCE(h.held, '[]')"),
        "error_count": "COALESCE(s.error_count, 0)", "last_error": d.json.format("s.last_error"),
        "last_heartbeat": d.stamp.format(_HEARTBEAT), "heartbeat_age_seconds": d.age.format(_HEARTBEAT),
        "configs": "COALESCE(c.n, 0)", "capabilities": "COALESCE(p.n, 0)", "capabilities_enabled": "COALESCE(p.on_, 0)",
    }  # fmt: skip
    members = ", ".join(f"'{key}', {value}" for key, value in fields.items())
    where = {"type": "a.type", "status": _REPORTED, "liveness": liveness}
    conditions = " AND ".join(f"{where[name]} = {c.mark}" for name in filters) or "1 = 1"
    return (
        f"SELECT {d.text.format(obj=f'{d.obj}({members})')} FROM agents a "
        "LEFT JOIN agent_states s ON s.agent_id = a.id "
        "LEFT JOIN (SELECT agent_id, COUNT(*) AS n FROM agent_configs GROUP BY agent_id) c ON c.agent_id = a.id "
        "LEFT JOIN (SELECT agent_id, COUNT(*) AS n, SUM(CASE WHEN is_enabled THEN 1 ELSE 0 END) AS on_ "
        "FROM agent_capabilities GROUP BY agent_id) p ON p.agent_id = a.id "
        f"LEFT JOIN ({leases}) h ON h.holder_id = a.id "
        f"WHERE {conditions} ORDER BY a.type, a.name"
    )


def overview_json(
    database: peewee.Database, type: str | None = None, status: str | None = None, liveness: str | None = None
) -> str:
    """The overview as the text of a JSON array, one object per agent, by type then name: one query."""
    given = {"type": type, "status": status, "liveness": liveness}
    filters = [name for name, value in given.items() if value is not None]
    cursor = database.execute_sql(_statement(database, filters), [given[name] for name in filters])
    return f"[{','.join(row[0] for row in cursor.fetchall())}]"


def overview(
    database: peewee.Database, type: str | None = None, status: str | None = None, liveness: str | None = None
) -> list[dict[str, Any]]:
    """:func:`overview_json`, decoded: see :meth:`optistate.Store.overview`."""
    return list(json.loads(overview_json(database, type, status, liveness)))
