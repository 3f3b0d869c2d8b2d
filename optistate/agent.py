"""The running agent: what ``store.start_agent`` returns and an agent process keeps.

Every write is shaped as one statement where it can be: a heartbeat is one
round trip on PostgreSQL, a config change one upsert, a workflow step one
UPDATE. Reads of config are served from memory after the first; call
``agent.config.refresh()`` to see a value that another process changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .config import ConfigView
from .database import is_sqlite, write_transaction
from .errors import NotFoundError, ValidationError
from .fields import utcnow
from .metrics import MetricBuffer, MetricReader
from .models import AgentStatus
from .versions import highest

if TYPE_CHECKING:
    from .models import Agent, AgentCapability, AgentMetric, AgentState
    from .store import Store

__all__ = ["AgentHandle", "Workflow"]

class Workflow:
    """The workflow an agent is running; :meth:`update` merges into ``workflow_data``."""

    def __init__(self, agent: AgentHandle, name: str, data: dict[str, Any]):
        self.agent, self.name, self.data = agent, name, data

    def update(self, **changes: Any) -> None:
        """Merge ``changes`` into ``workflow_data`` (one UPDATE)."""
        merged = {**self.data, **changes}
        self.agent._update_state(workflow_data=merged)
        self.data = merged

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} of {self.agent.name}>"


class AgentHandle:
    """One registered agent, as seen by the process that runs or inspects it."""

    buffer_size = 5000

    def __init__(self, store: Store, row: Agent):
        self.store, self.id, self.type, self.name = store, row.id, row.type, row.name
        self.config = ConfigView(self)
        self._metrics = MetricBuffer(store.database, store.models.AgentMetric, row.id, self.buffer_size)
        self.metric_reader = MetricReader(store.models.AgentMetric, row.id)
        self._heartbeat_sql = self._heartbeat_statements()
        self._ident = store.models.Agent.id.db_value(row.id)
        self._stamp = store.models.Agent.last_heartbeat.db_value

    def __repr__(self) -> str:
        return f"<AgentHandle {self.type}/{self.name} {self.id}>"

    # -- registration and state ---------------------------------------------------

    @property
    def row(self) -> Agent:
        """The ``agents`` row, read now."""
        return self.store.models.Agent.get_by_id(self.id)

    def state(self) -> AgentState:
        """The ``agent_states`` row, read now."""
        model = self.store.models.AgentState
        return model.get(model.agent == self.id)

    def _heartbeat_statements(self) -> list[str]:
        if is_sqlite(self.store.database):
            return [
                "UPDATE agent_states SET last_heartbeat = ? WHERE agent_id = ?",
                "UPDATE agents SET last_heartbeat = ? WHERE id = ?",
            ]
        return [
            "WITH s AS (UPDATE agent_states SET last_heartbeat = %s WHERE agent_id = %s) "
            "UPDATE agents SET last_heartbeat = %s WHERE id = %s"
        ]

    def heartbeat(self) -> None:
        """Stamp ``last_heartbeat`` on the agent and its state: one statement on PostgreSQL."""
        now, ident, database = self._stamp(utcnow()), self._ident, self.store.database
        if len(self._heartbeat_sql) == 1:
            database.execute_sql(self._heartbeat_sql[0], (now, ident, now, ident))
            return
        with write_transaction(database):
            for sql in self._heartbeat_sql:
                database.execute_sql(sql, (now, ident))

    def _update_state(self, **values: Any) -> None:
        model = self.store.models.AgentState
        model.update(**values).where(model.agent == self.id).execute()

    def set_status(self, status: str | AgentStatus) -> None:
        """Set the run-time status (``agent_states.status``); the field refuses an unknown one."""
        self._update_state(status=status)

    def set_resource_usage(self, usage: Mapping[str, Any]) -> None:
        """Replace ``agent_states.resource_usage``, e.g. ``{"cpu_percent": 41.5}``."""
        self._update_state(resource_usage=dict(usage))

    # -- workflows ----------------------------------------------------------------

    def begin_workflow(self, name: str, data: Mapping[str, Any] | None = None, locks: Sequence[str] = ()) -> Workflow:
        """Mark ``name`` as running: status active, with its data and the locks it holds."""
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ValidationError("current_workflow", name, "must be a non-empty string of at most 255 characters")
        payload = dict(data or {})
        self._update_state(
            status=AgentStatus.ACTIVE.value, current_workflow=name, workflow_data=payload, resource_locks=list(locks)
        )
        return Workflow(self, name, payload)

    def finish_workflow(self) -> None:
        """Back to idle: no workflow, no data, no locks."""
        self._update_state(status=AgentStatus.IDLE.value, current_workflow=None, workflow_data={}, resource_locks=[])

    def fail_workflow(self, error: BaseException) -> None:
        """Record ``error``: status error, ``error_count`` + 1, ``last_error`` {timestamp, error, message}.

        The workflow, its data and its locks stay as they were, showing what
        was running when it failed.
        """
        model = self.store.models.AgentState
        last_error = {"timestamp": utcnow().isoformat(), "error": type(error).__name__, "message": str(error)}
        (
            model.update(status=AgentStatus.ERROR.value, error_count=model.error_count + 1, last_error=last_error)
            .where(model.agent == self.id)
            .execute()
        )

    @contextlib.contextmanager
    def workflow(
        self, name: str, data: Mapping[str, Any] | None = None, locks: Sequence[str] = ()
    ) -> Iterator[Workflow]:
        """Run a workflow: idle again on a normal exit; on an exception, record it and re-raise."""
        flow = self.begin_workflow(name, data, locks)
        try:
            yield flow
        except BaseException as exc:
            self.fail_workflow(exc)
            raise
        self.finish_workflow()

    # -- capabilities -------------------------------------------------------------

    def capabilities(self, enabled: bool | None = None) -> list[AgentCapability]:
        """Every capability version (or only the enabled/disabled ones), by name then version."""
        model = self.store.models.AgentCapability
        query = model.select().where(model.agent == self.id)
        if enabled is not None:
            query = query.where(model.is_enabled == enabled)
        return list(query.order_by(model.capability_name, model.capability_version))

    def capability(self, name: str, spec: str | None = None, *, enabled_only: bool = False) -> AgentCapability | None:
        """The highest version of ``name`` within ``spec`` (e.g. ``">=2.0"``), or None."""
        rows = [c for c in self.capabilities(True if enabled_only else None) if c.capability_name == name]
        best = highest((c.capability_version for c in rows), spec)
        return next((c for c in rows if c.capability_version == best), None)

    def _set_enabled(self, name: str, version: str | None, enabled: bool) -> int:
        model = self.store.models.AgentCapability
        query = model.update(is_enabled=enabled).where((model.agent == self.id) & (model.capability_name == name))
        if version is not None:
            query = query.where(model.capability_version == version)
        changed = query.execute()
        if not changed:
            raise NotFoundError(
                "capability", f"{name} {version}" if version else name, f"agent {self.name!r} has no such capability"
            )
        return int(changed)

    def enable_capability(self, name: str, version: str | None = None) -> int:
        """Enable one version of ``name``, or every version; return how many rows changed."""
        return self._set_enabled(name, version, True)

    def disable_capability(self, name: str, version: str | None = None) -> int:
        """Disable one version of ``name``, or every version; return how many rows changed."""
        return self._set_enabled(name, version, False)

    # -- metrics ------------------------------------------------------------------

    def record_metric(
        self,
        name: str,
        value: float,
        unit: str | None = None,
        metric_type: str = "gauge",
        metadata: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Validate a point now and buffer it; it is written by :meth:`flush`, :meth:`stop` or at exit."""
        self._metrics.add(name, value, unit, metric_type, metadata, timestamp)

    def record_metrics(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Buffer many points, each a mapping of :meth:`record_metric`'s parameters; all or none."""
        self._metrics.extend(points)

    def flush(self) -> int:
        """Write the buffered points; return how many."""
        return self._metrics.flush()

    def metrics(
        self,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        where: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[AgentMetric]:
        """Stored points, oldest first, filtered by name, time range and metadata containment."""
        return self.metric_reader.points(name, since, until, where, limit)

    def aggregate(
        self,
        name: str,
        func: str,
        since: datetime | None = None,
        until: datetime | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> float | int | None:
        """``avg``, ``min``, ``max``, ``sum`` or ``count`` of a metric's values; None when no point matches."""
        return self.metric_reader.aggregate(name, func, since, until, where)

    def latest_metrics(self) -> list[AgentMetric]:
        """The newest point of each metric name, by name."""
        return self.metric_reader.latest()

    # -- lifecycle ----------------------------------------------------------------

    def stop(self) -> None:
        """Flush buffered metrics, mark the agent and its state offline, and tell the plugins."""
        self.flush()
        now = utcnow()
        with write_transaction(self.store.database):
            agent = self.store.models.Agent
            agent.update(status=AgentStatus.OFFLINE.value, last_heartbeat=now).where(agent.id == self.id).execute()
            self._update_state(status=AgentStatus.OFFLINE.value, last_heartbeat=now)
        self.store._forget(self)
        self.store.plugins.notify("agent_stopped", agent=self)  # a failing plugin is logged there, by name
