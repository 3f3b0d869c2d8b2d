"""``start_agent``'s writes: the agent upsert, its type's missing defaults and its state row.

On SQLite these are four statements in one write transaction. On PostgreSQL
they are one statement of data-modifying CTEs, which peewee builds once per
agent type; later starts reuse its SQL with their own values in the slots.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import peewee

from .database import is_sqlite, write_transaction
from .defaults import AgentType
from .fields import utcnow
from .models import Agent, AgentStatus

__all__ = ["Registrar"]

# Stand-ins for the values that change from one start_agent to the next (see _statement_template).
_NAME, _VERSION, _ENDPOINT = "\x00name", "\x00version", "\x00endpoint"
_NOW = datetime(2000, 1, 1, 0, 0, 0, 424242, tzinfo=timezone.utc)
_STAND_INS = (_NAME, _VERSION, _ENDPOINT, _NOW)
_NEW_ID = object()


class Registrar:
    """Writes agent registrations to one database, reusing one statement per agent type on PostgreSQL."""

    def __init__(self, database: peewee.Database, models: SimpleNamespace):
        self.database, self.models = database, models
        self._statements: dict[int, tuple[AgentType, str, list[Any]]] = {}

    def register(self, kind: AgentType, name: str, version: str, endpoint: str | None) -> Agent:
        now = utcnow()
        if is_sqlite(self.database):
            with write_transaction(self.database):
                upsert = self._upsert(kind, uuid.uuid4(), name, version, endpoint, now)
                agent_id = next(iter(upsert.execute())).id
                for query in self._defaults(kind, agent_id, now):
                    query.execute()
        else:
            agent_id = self._register_in_one_statement(kind, name, version, endpoint, now)
        status = AgentStatus.ACTIVE.value
        return self.models.Agent(
            id=agent_id, type=kind.name, name=name, version=version, status=status, endpoint=endpoint,
            last_heartbeat=now, __no_default__=1,
        )  # fmt: skip

    def _upsert(
        self, kind: AgentType, ident: uuid.UUID, name: str, version: str, endpoint: str | None, now: datetime
    ) -> Any:
        agent = self.models.Agent
        row = {"id": ident, "type": kind.name, "name": name, "version": version, "endpoint": endpoint}
        kept = [agent.version, agent.endpoint, agent.status, agent.last_heartbeat, agent.updated_at]
        return (
            agent.insert(row, status=AgentStatus.ACTIVE.value, last_heartbeat=now, created_at=now, updated_at=now)
            .on_conflict(conflict_target=[agent.type, agent.name], preserve=kept)
            .returning(agent.id)
        )

    def _register_in_one_statement(
        self, kind: AgentType, name: str, version: str, endpoint: str | None, now: datetime
    ) -> uuid.UUID:
        """PostgreSQL: the upsert and the default inserts as data-modifying CTEs, one round trip.

        peewee builds the statement once per agent type, from stand-in values;
        later starts reuse its SQL with their own values where the stand-ins
        were, and new row ids. Building the SQL costs more than the round trip.
        """
        cached = self._statements.get(id(kind))
        if cached is None or cached[0] is not kind:
            cached = self._statements[id(kind)] = (kind, *self._statement_template(kind))
        _, sql, slots = cached
        given = {_NAME: name, _VERSION: version, _ENDPOINT: endpoint, _NOW: now}
        params = [uuid.uuid4().hex if p is _NEW_ID else given[p] if p in _STAND_INS else p for p in slots]
        return uuid.UUID(str(self.database.execute_sql(sql, params).fetchone()[0]))

    def _statement_template(self, kind: AgentType) -> tuple[str, list[Any]]:
        """``kind``'s registration SQL, and its parameters with :data:`_NEW_ID` where a row id goes."""
        made = [uuid.UUID(int=i) for i in range(1, 2 + len(kind.configs) + len(kind.capabilities) + 1)]
        ids = iter(made)
        registered = self._upsert(kind, next(ids), _NAME, _VERSION, _ENDPOINT, _NOW).cte("registered")
        ref = peewee.Select([registered], [registered.c.id])
        writes = [query.cte(f"defaults_{i}") for i, query in enumerate(self._defaults(kind, ref, _NOW, ids))]
        sql, params = registered.select_from(registered.c.id).with_cte(registered, *writes).sql()
        hexes = {ident.hex for ident in made}
        return sql, [_NEW_ID if isinstance(p, str) and p in hexes else p for p in params]

    def _defaults(
        self, kind: AgentType, agent: Any, now: datetime, ids: Iterator[uuid.UUID] | None = None
    ) -> list[Any]:
        """The inserts of ``kind``'s missing defaults and of the state row, for ``agent`` (an id or a subquery)."""
        m = self.models
        stamps = {"agent": agent, "created_at": now, "updated_at": now}
        new_id = (lambda: next(ids)) if ids is not None else uuid.uuid4
        queries = []
        if kind.configs:
            rows = [
                dict(
                    stamps,
                    id=new_id(),
                    config_key=c.key,
                    config_value=c.config_value,
                    config_type=c.type,
                    description=c.description,
                    is_sensitive=c.sensitive,
                )
                for c in kind.configs
            ]
            target = [m.AgentConfig.agent, m.AgentConfig.config_key]
            queries.append(m.AgentConfig.insert_many(rows).on_conflict(action="nothing", conflict_target=target))
        if kind.capabilities:
            rows = [
                dict(
                    stamps,
                    id=new_id(),
                    capability_name=c.name,
                    capability_version=c.version,
                    description=c.description,
                    parameters=dict(c.parameters),
                    is_enabled=c.enabled,
                )
                for c in kind.capabilities
            ]
            target = [m.AgentCapability.agent, m.AgentCapability.capability_name, m.AgentCapability.capability_version]
            queries.append(m.AgentCapability.insert_many(rows).on_conflict(action="nothing", conflict_target=target))
        state = m.AgentState.insert(
            stamps,
            id=new_id(),
            status=AgentStatus.IDLE.value,
            workflow_data={},
            resource_locks=[],
            error_count=0,
            last_heartbeat=now,
            resource_usage={},
            metadata={},
        )
        queries.append(state.on_conflict(conflict_target=[m.AgentState.agent], preserve=[m.AgentState.last_heartbeat]))
        return queries
