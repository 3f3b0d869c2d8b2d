"""The store: one database, its plugins, and the agents started on it.

``optistate.connect()`` opens the database, applies pending migrations
(race-safely, see :mod:`optistate.schema`) and binds the classes in
:mod:`optistate.models` to it, so ``AgentConfig.select()`` queries this store.
With two stores in one process those classes follow the one connected last;
each store's own methods, and ``store.models``, always use that store's
database.
"""

from __future__ import annotations

import atexit
import logging
import uuid
import weakref
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import peewee

from .agent import AgentHandle
from .database import is_sqlite, open_database, redact, resolve_url, write_transaction
from .errors import IntegrityError, NotFoundError, ValidationError
from .fields import utcnow
from .models import MODELS, Agent, AgentStatus, bound_models
from .registry import AgentType, Registry
from .schema import migrate as apply_migrations

__all__ = ["Store", "connect"]

# Stand-ins for the values that change from one start_agent to the next (see _statement_template).
_NAME, _VERSION, _ENDPOINT = "\x00name", "\x00version", "\x00endpoint"
_NOW = datetime(2000, 1, 1, 0, 0, 0, 424242, tzinfo=timezone.utc)
_STAND_INS = (_NAME, _VERSION, _ENDPOINT, _NOW)
_NEW_ID = object()

log = logging.getLogger("optistate")
_running: weakref.WeakSet[AgentHandle] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for agent in list(_running):
        try:
            agent.flush()
        except Exception as exc:  # the interpreter is going away: report, do not raise
            log.error("could not flush metrics of %s at exit: %s", agent, exc)


def connect(url: str | None = None, *, migrate: bool = True, plugins: Registry | None = None) -> Store:
    """Open a store on ``url``, ``$OPTISTATE_DATABASE_URL``, or ``sqlite:///optistate.db``.

    :param migrate: apply pending migrations first (safe when many processes start at once).
    :param plugins: the plugin registry to use; by default a new one that loads
        the ``optistate`` entry points when first needed.
    """
    url = resolve_url(url)
    database = open_database(url)
    if migrate:
        apply_migrations(database)
    database.bind(MODELS)
    return Store(database, plugins or Registry(), url=redact(url))


class Store:
    """Agents' state in one database. Make one with :func:`connect`."""

    def __init__(self, database: peewee.Database, plugins: Registry, *, url: str = ""):
        self.database, self.plugins, self.url = database, plugins, url
        self.models = bound_models(database)
        self._agents: dict[Any, AgentHandle] = {}
        self._statements: dict[int, tuple[AgentType, str, list[Any]]] = {}

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush every running agent's metrics and close the connection."""
        for agent in list(self._agents.values()):
            agent.flush()
        self.database.close()

    def _forget(self, agent: AgentHandle) -> None:
        self._agents.pop(agent.id, None)
        _running.discard(agent)

    def start_agent(
        self, type: str, name: str | None = None, version: str = "0.1.0", endpoint: str | None = None
    ) -> AgentHandle:
        """Register (or update) the agent ``(type, name)`` and store its type's missing defaults.

        Whatever the number of defaults, this is one statement on PostgreSQL
        (data-modifying CTEs) and four in one transaction on SQLite: upsert
        the agent; insert the missing configs; insert the missing capability
        versions; create the state row (idle) or stamp its heartbeat.
        Defaults never overwrite a stored value, so a value someone changed
        stays, and a default a newer plugin adds appears.

        :raises UnknownAgentType: no loaded plugin registers ``type``.
        """
        kind = self.plugins.agent_type(type)
        name = type if name is None else name
        for field, value in (("name", name), ("version", version)):
            if not isinstance(value, str) or not value:
                raise ValidationError(field, value, "must be a non-empty string")
        if endpoint is not None and not isinstance(endpoint, str):
            raise ValidationError("endpoint", endpoint, "must be a string or None")
        fields = self.models.Agent._meta.fields
        for field, text in (("name", name), ("version", version), ("endpoint", endpoint)):
            fields[field].db_value(text)  # the lengths; the reused PostgreSQL statement skips the fields
        try:
            row = self._register(kind, name, version, endpoint)
        except peewee.IntegrityError as exc:
            raise IntegrityError.from_driver(exc) from None
        agent = AgentHandle(self, row)
        self._agents[agent.id] = agent
        _running.add(agent)
        self.plugins.notify("agent_started", agent=agent)  # a failing plugin is logged there, by name
        return agent

    def _register(self, kind: AgentType, name: str, version: str, endpoint: str | None) -> Agent:
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

    def agent(self, name: str, type: str | None = None) -> AgentHandle:
        """An existing agent, by name (and type, where names repeat across types) or by id.

        :raises NotFoundError: no such agent, or the name is ambiguous without ``type``.
        """
        model = self.models.Agent
        query = model.select().where(model.name == name)
        if type is not None:
            query = query.where(model.type == type)
        rows = list(query)
        if not rows:
            try:
                rows = list(model.select().where(model.id == uuid.UUID(name)))
            except (ValueError, TypeError, AttributeError):
                rows = []
        if not rows:
            raise NotFoundError("agent", name, "see `optistate agents`")
        if len(rows) > 1:
            types = ", ".join(sorted(r.type for r in rows))
            raise NotFoundError("agent", name, f"the name is used by several types ({types}); give the type too")
        running = self._agents.get(rows[0].id)
        return running if running is not None else AgentHandle(self, rows[0])

    def agents(self, type: str | None = None, status: str | None = None) -> list[Agent]:
        """Registered agents, by type then name, optionally filtered by type and registration status."""
        model = self.models.Agent
        query = model.select().order_by(model.type, model.name)
        if type is not None:
            query = query.where(model.type == type)
        if status is not None:
            query = query.where(model.status == status)
        return list(query)
