"""``start_agent``'s writes: the agent upsert, its type's missing defaults and its state row.

On SQLite these are four statements in one write transaction. On PostgreSQL
they are one statement of data-modifying CTEs, which peewee builds once per
agent type; later starts reuse its SQL with their own values in the slots.
With a secret key, a sensitive default is encrypted anew at each start (a
Fernet token holds a random IV and the time), so it is a slot too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import peewee

from .database import is_sqlite, write_transaction
from .defaults import AgentType, Config
from .fields import utcnow
from .models import Agent, AgentStatus

__all__ = ["Registrar"]



class _Slot(str):
    """A stand-in parameter of the cached statement, told apart by its type, never by its value.

    peewee's string and UUID fields hand a ``str`` subclass through unchanged, so
    each slot is found again among the built statement's parameters, and a
    plugin default that happens to equal a stand-in's text stays a constant.
    """


# The values that change from one start_agent to the next (see _statement_template). Every
# timestamp of the statement is "now", so its datetime parameters are slots too.
_NAME, _VERSION, _ENDPOINT, _ID, _TTL = _Slot("name"), _Slot("version"), _Slot("endpoint"), _Slot("id"), _Slot("ttl")
_NOW = datetime(2000, 1, 1, tzinfo=timezone.utc)


class Registrar:
    """Writes agent registrations to one database, reusing one statement per agent type on PostgreSQL."""

    def __init__(self, database: peewee.Database, models: SimpleNamespace):
        self.database, self.models = database, models
        self.keyring = models.AgentConfig.keyring
        self._statements: dict[int, tuple[AgentType, str, list[Any], dict[_Slot, Config]]] = {}

    def register(self, agent_type: AgentType, name: str, version: str, endpoint: str | None, ttl: float) -> Agent:
        """Upsert the agent (with its liveness ``ttl``), insert its type's missing defaults and its state row;
        return the agent's row."""
        now = utcnow()
        if is_sqlite(self.database):
            with write_transaction(self.database):
                upsert = self._upsert(agent_type, uuid.uuid4(), name, version, endpoint, now, ttl)
                agent_id = next(iter(upsert.execute())).id
                for query in self._defaults(agent_type, agent_id, now):
                    query.execute()
        else:
            agent_id = self._register_in_one_statement(agent_type, name, version, endpoint, now, ttl)
        status = AgentStatus.ACTIVE.value
        return self.models.Agent(
            id=agent_id, type=agent_type.name, name=name, version=version, status=status, endpoint=endpoint,
            last_heartbeat=now, ttl_seconds=ttl, __no_default__=1,
        )  # fmt: skip

    def _upsert(
        self, agent_type: AgentType, ident: Any, name: str, version: str, endpoint: str | None, now: datetime,
        ttl: Any,
    ) -> Any:
        agent = self.models.Agent
        row = {"id": ident, "type": agent_type.name, "name": name, "version": version, "endpoint": endpoint,
               "ttl_seconds": peewee.Value(ttl, converter=False)}  # a float, or the _TTL slot, as it is
        kept = [agent.version, agent.endpoint, agent.status, agent.last_heartbeat, agent.updated_at, agent.ttl_seconds]
        return (
            agent.insert(row, status=AgentStatus.ACTIVE.value, last_heartbeat=self._beat(now), created_at=now,
                         updated_at=now)
            .on_conflict(conflict_target=[agent.type, agent.name], preserve=kept)
            .returning(agent.id)
        )

    def _beat(self, now: datetime) -> Any:
        """The heartbeat's stamp: the database's clock (``now()``) on PostgreSQL, as liveness is judged by it;
        on SQLite this machine's, which is the database's."""
        return now if is_sqlite(self.database) else peewee.SQL("now()")

    def _register_in_one_statement(
        self, agent_type: AgentType, name: str, version: str, endpoint: str | None, now: datetime, ttl: float
    ) -> uuid.UUID:
        """PostgreSQL: the upsert and the default inserts as data-modifying CTEs, one round trip.

        peewee builds the statement once per agent type, from stand-in values;
        later starts reuse its SQL with their own values where the stand-ins
        were, and new row ids. Building the SQL costs more than the round trip.
        """
        cached = self._statements.get(id(agent_type))
        if cached is None or cached[0] is not agent_type:
            cached = self._statements[id(agent_type)] = (agent_type, *self._statement_template(agent_type))
        _, sql, slots, secrets = cached
        stamp = self.models.Agent.last_heartbeat.db_value(now)
        given = {_NAME: name, _VERSION: version, _ENDPOINT: endpoint, _TTL: ttl}
        given.update((slot, self.keyring.seal(config.config_value)) for slot, config in secrets.items())
        params = [_fill(p, given, stamp) for p in slots]
        return uuid.UUID(str(self.database.execute_sql(sql, params).fetchone()[0]))

    def _statement_template(self, agent_type: AgentType) -> tuple[str, list[Any], dict[_Slot, Config]]:
        """``agent_type``'s registration SQL, its parameters with the slots in place, and its secrets' slots."""
        secrets: dict[_Slot, Config] = {}

        def stored(config: Config) -> Any:
            if not (config.sensitive and self.keyring):
                return self._stored(config)
            slot = _Slot(f"secret:{config.key}")
            secrets[slot] = config
            return slot

        registered = self._upsert(agent_type, _ID, _NAME, _VERSION, _ENDPOINT, _NOW, _TTL).cte("registered")
        ref = peewee.Select([registered], [registered.c.id])
        inserts = self._defaults(agent_type, ref, _NOW, new_id=lambda: _ID, stored=stored)
        writes = [query.cte(f"defaults_{i}") for i, query in enumerate(inserts)]
        sql, params = registered.select_from(registered.c.id).with_cte(registered, *writes).sql()
        assert len(secrets) == sum(type(p) is _Slot and p in secrets for p in params), "a secret slot went missing"
        return sql, params, secrets

    def _stored(self, config: Config) -> str:
        """A default's stored text: encrypted now if it is sensitive and a key is set."""
        return self.keyring.stored_form(config.config_value, key=config.key, sensitive=config.sensitive)

    def _defaults(
        self,
        agent_type: AgentType,
        agent: Any,
        now: datetime,
        new_id: Callable[[], Any] = uuid.uuid4,
        stored: Callable[[Config], Any] | None = None,
    ) -> list[Any]:
        """The inserts of the type's missing defaults and of the state row, for ``agent`` (an id or a subquery).

        :param stored: a default's ``config_value`` parameter (by default its stored text, encrypted if due).
        """
        m, stored = self.models, stored or self._stored
        stamps = {"agent": agent, "created_at": now, "updated_at": now}
        queries = []
        if agent_type.configs:
            rows = [
                dict(
                    stamps,
                    id=new_id(),
                    config_key=c.key,
                    config_value=stored(c),
                    config_type=c.type,
                    description=c.description,
                    is_sensitive=c.sensitive,
                )
                for c in agent_type.configs
            ]
            config = m.AgentConfig
            # A stored value stays; only a plugin's newer sensitive=True reaches it (it never lowers).
            raise_sensitivity = config.insert_many(rows).on_conflict(
                conflict_target=[config.agent, config.config_key],
                update={config.is_sensitive: True},
                where=(peewee.EXCLUDED.is_sensitive == True) & (config.is_sensitive == False),  # noqa: E712 - SQL
            )
            queries.append(raise_sensitivity)
        if agent_type.capabilities:
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
                for c in agent_type.capabilities
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
            last_heartbeat=self._beat(now),
            resource_usage={},
            metadata={},
        )
        queries.append(state.on_conflict(conflict_target=[m.AgentState.agent], preserve=[m.AgentState.last_heartbeat]))
        return queries


def _fill(param: Any, given: dict[_Slot, Any], stamp: Any) -> Any:
    """A cached statement's parameter for this start: a new id, a given value, the time, or the constant."""
    if type(param) is _Slot:
        return uuid.uuid4().hex if param is _ID else given[param]
    return stamp if isinstance(param, datetime) else param
