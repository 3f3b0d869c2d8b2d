"""The overview of agents: one row each, read in one query whatever their number.

``store.overview()``, ``optistate agents`` and the dashboard (``optistate serve``)
show it. The query joins each agent to its state row, to its config and
capability counts (grouped subqueries) and to the leases it holds now (by
the database's clock), one result row per lease, folded back into one summary
per agent here.
"""

from __future__ import annotations

from typing import Any

import peewee

from .fields import utcnow
from .leases import clock
from .liveness import liveness, now_column, parse_stamp
from .models import AgentStatus

__all__ = ["overview", "reported_status"]

_LEASES = peewee.Table("agent_leases")


def reported_status(models: Any, status: str) -> Any:
    """The condition "reports ``status``": ``offline`` is the registration's, the others the state row's.

    For a query on ``models.Agent`` joined to ``models.AgentState``.
    """
    if status == AgentStatus.OFFLINE:
        return models.Agent.status == status
    return (models.AgentState.status == status) & (models.Agent.status != AgentStatus.OFFLINE.value)


def overview(database: peewee.Database, models: Any, type: str | None, status: str | None) -> list[dict[str, Any]]:
    """One summary per agent, by type then name, in one query: see :meth:`optistate.Store.overview`."""
    m = models
    cfg, cap = m.AgentConfig, m.AgentCapability
    enabled = peewee.Case(None, [(cap.is_enabled == True, 1)], 0)  # noqa: E712 - SQL, not Python
    configs = cfg.select(cfg.agent.alias("agent_id"), peewee.fn.COUNT(cfg.id).alias("n")).group_by(cfg.agent)
    configs = configs.alias("config_counts")
    capabilities = cap.select(
        cap.agent.alias("agent_id"), peewee.fn.COUNT(cap.id).alias("n"), peewee.fn.SUM(enabled).alias("on_")
    ).group_by(cap.agent).alias("capability_counts")
    held = (_LEASES.c.holder_id == m.Agent.id) & (_LEASES.c.expires_at > peewee.SQL(clock(database).now))
    columns = (
        m.Agent, m.AgentState, now_column(database),
        configs.c.n.alias("config_count"), capabilities.c.n.alias("capability_count"),
        capabilities.c.on_.alias("capability_on"), _LEASES.c.resource.alias("lease_resource"),
        _LEASES.c.token.alias("lease_token"), _LEASES.c.acquired_at.alias("lease_acquired_at"),
        _LEASES.c.expires_at.alias("lease_expires_at"),
    )  # fmt: skip
    query = (
        m.Agent.select(*columns)
        .join_from(m.Agent, m.AgentState, peewee.JOIN.LEFT_OUTER, on=(m.AgentState.agent == m.Agent.id),
                   attr="run_state")
        .join_from(m.Agent, configs, peewee.JOIN.LEFT_OUTER, on=(configs.c.agent_id == m.Agent.id),
                   attr="config_counts")
        .join_from(m.Agent, capabilities, peewee.JOIN.LEFT_OUTER, on=(capabilities.c.agent_id == m.Agent.id),
                   attr="capability_counts")
        .join_from(m.Agent, _LEASES, peewee.JOIN.LEFT_OUTER, on=held, attr="lease")
        .order_by(m.Agent.type, m.Agent.name, _LEASES.c.resource)
    )
    if type is not None:
        query = query.where(m.Agent.type == type)
    if status is not None:
        query = query.where(reported_status(m, status))
    rows: list[dict[str, Any]] = []
    for agent in query:
        if not rows or rows[-1]["id"] != str(agent.id):
            rows.append(_summary(agent))
        lease = agent.lease  # a dict of the lease_ columns, or None where the agent holds none
        if lease is not None:
            rows[-1]["leases"].append({
                "resource": lease["lease_resource"], "token": int(lease["lease_token"]),
                "acquired_at": _iso(lease["lease_acquired_at"]), "expires_at": _iso(lease["lease_expires_at"]),
            })  # fmt: skip
    return rows


def _iso(stamp: Any) -> str:
    value = parse_stamp(stamp)
    assert value is not None
    return value.isoformat(timespec="microseconds")


def _summary(agent: Any) -> dict[str, Any]:
    """The overview row of one result row's agent and state, without its leases yet."""
    state = getattr(agent, "run_state", None)
    state = state if state is not None and state.id is not None else None
    heartbeat = state.last_heartbeat if state is not None else agent.last_heartbeat
    now = parse_stamp(agent.db_now) or utcnow()
    stopped = agent.status == AgentStatus.OFFLINE
    capabilities = agent.capability_counts  # the grouped subquery's columns, on a row of its model
    return {
        "id": str(agent.id), "type": agent.type, "name": agent.name, "version": agent.version,
        "endpoint": agent.endpoint, "registered_status": agent.status,
        "status": agent.status if state is None or stopped else state.status,
        "liveness": liveness(agent.status, agent.last_heartbeat, agent.ttl_seconds, now),
        "ttl_seconds": agent.ttl_seconds,
        "workflow": state.current_workflow if state is not None else None,
        "workflow_data": state.workflow_data if state is not None else {},
        "locks": state.resource_locks if state is not None else [],
        "leases": [],
        "error_count": state.error_count if state is not None else 0,
        "last_error": state.last_error if state is not None else None,
        "last_heartbeat": heartbeat.isoformat(timespec="microseconds"),
        "heartbeat_age_seconds": round((now - heartbeat).total_seconds(), 3),
        "configs": int(agent.config_counts.config_count or 0),
        "capabilities": int(capabilities.capability_count or 0),
        "capabilities_enabled": int(capabilities.capability_on or 0),
    }  # fmt: skip
