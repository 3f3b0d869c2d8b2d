"""The running agent: what ``store.start_agent`` returns and an agent process keeps.

Every write is shaped as one statement where it can be: a heartbeat is one
round trip on PostgreSQL, a config change one upsert, a workflow step one
UPDATE. Reads of config are served from memory after the first, and the
store keeps them current from the change log (:mod:`optistate.watch`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .actor import acting, acting_as
from .config import ConfigView
from .database import is_sqlite, write_transaction
from .errors import NotFoundError
from .fields import check_list, check_text, storable, utcnow
from .leases import DEFAULT_TTL, Holder, Lease
from .liveness import KeepAlive
from .metrics import MAX_BUFFER, MetricBuffer, MetricReader
from .models import AgentStatus, agent_exists
from .versions import highest

if TYPE_CHECKING:
    from types import SimpleNamespace

    import peewee

    from .models import Agent, AgentCapability, AgentMetric, AgentState
    from .registry import Registry

__all__ = ["AgentHandle", "Workflow"]

log = logging.getLogger("optistate")

_HEARTBEAT_STATE_SQLITE = "UPDATE agent_states SET last_heartbeat = ? WHERE agent_id = ?"
_HEARTBEAT_AGENT_SQLITE = "UPDATE agents SET last_heartbeat = ? WHERE id = ?"
_HEARTBEAT_POSTGRES = (  # the database's clock: liveness is judged by it
    "WITH s AS (UPDATE agent_states SET last_heartbeat = now() WHERE agent_id = %s) "
    "UPDATE agents SET last_heartbeat = now() WHERE id = %s"
)


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
    """One registered agent, as seen by the process that runs or inspects it.

    Made by ``store.start_agent`` or ``store.agent``, with what it needs from
    the store: its database, the models bound to it, its plugins, and the
    ``actor`` the change log records for its writes (the agent itself, or the
    store's user). The metric reads are :class:`~optistate.metrics.MetricReader`'s,
    for this agent.
    """

    metrics: Callable[..., list[AgentMetric]]
    """``metrics(name=None, since=None, until=None, where=None, limit=None)``: :meth:`MetricReader.points`."""
    aggregate: Callable[..., Any]
    """``aggregate(name, func, since=None, until=None, where=None, every=None)``: :meth:`MetricReader.aggregate`."""
    latest_metrics: Callable[[], list[AgentMetric]]
    """The newest point of each metric name: :meth:`MetricReader.latest`."""

    def __init__(
        self,
        database: peewee.Database,
        models: SimpleNamespace,
        plugins: Registry,
        row: Agent,
        *,
        actor: str = "",
        max_buffer: int = MAX_BUFFER,
    ):
        self.database, self.models, self.plugins, self.actor = database, models, plugins, actor
        self.id, self.type, self.name = row.id, row.type, row.name
        self.config = ConfigView(models.AgentConfig, row, plugins, actor)
        self.buffer = MetricBuffer(database, models.AgentMetric, row.id, max_buffer=max_buffer)
        self.metric_reader = reader = MetricReader(models.AgentMetric, row.id)
        self.metrics, self.aggregate, self.latest_metrics = reader.points, reader.aggregate, reader.latest
        self._on_sqlite = is_sqlite(database)
        self._ident = models.Agent.id.db_value(row.id)
        self._stamp = models.Agent.last_heartbeat.db_value
        self.ttl: float = row.ttl_seconds or DEFAULT_TTL
        self.holder = Holder(database, self._ident, row.name, actor)
        self._keeper: KeepAlive | None = None

    def __repr__(self) -> str:
        return f"<AgentHandle {self.type}/{self.name} {self.id}>"

    # -- registration and state ---------------------------------------------------

    def registration(self) -> Agent:
        """The ``agents`` row, read now."""
        return self.models.Agent.get_by_id(self.id)

    def state(self) -> AgentState:
        """The ``agent_states`` row, read now."""
        model = self.models.AgentState
        return model.get(model.agent == self.id)

    def heartbeat(self) -> None:
        """Stamp ``last_heartbeat`` on the agent and its state with the database's clock: one statement on PostgreSQL.

        On SQLite (one machine) the stamp is this process's clock, which is the database's.
        """
        ident = self._ident
        if self._on_sqlite:
            now = self._stamp(utcnow())
            with acting_as(""), write_transaction(self.database):  # not an event: no actor to record
                self.database.execute_sql(_HEARTBEAT_STATE_SQLITE, (now, ident))
                stamped = self.database.execute_sql(_HEARTBEAT_AGENT_SQLITE, (now, ident)).rowcount
        else:
            with acting_as(""):
                stamped = self.database.execute_sql(_HEARTBEAT_POSTGRES, (ident, ident)).rowcount
        if not stamped:
            raise NotFoundError.deleted_agent(self.name)

    @acting
    def _update_state(self, **values: Any) -> None:
        """One UPDATE of the agent's state row; :class:`NotFoundError` if the agent is gone."""
        model = self.models.AgentState
        if not model.update(**values).where(model.agent == self.id).execute():
            raise NotFoundError.deleted_agent(self.name)

    def set_status(self, status: str | AgentStatus) -> None:
        """Set the run-time status (``agent_states.status``); the field refuses an unknown one."""
        self._update_state(status=status)

    def set_resource_usage(self, usage: Mapping[str, Any]) -> None:
        """Replace ``agent_states.resource_usage``, e.g. ``{"cpu_percent": 41.5}``."""
        self._update_state(resource_usage=usage)  # the field refuses what is not a JSON object

    # -- workflows ----------------------------------------------------------------

    def begin_workflow(self, name: str, data: Mapping[str, Any] | None = None, locks: Sequence[str] = ()) -> Workflow:
        """Mark ``name`` as running: status active, with its data (a mapping) and the locks it holds (names).

        :raises ValidationError: a bad name, data that is not a mapping, or ``locks`` that is one string.
        """
        check_text("current_workflow", name, self.models.AgentState.current_workflow.max_length)
        held = check_list("resource_locks", locks, str)  # "billing_data" is one lock, not 12
        payload: Any = {} if data is None else dict(data) if isinstance(data, Mapping) else data  # else the field says
        self._update_state(
            status=AgentStatus.ACTIVE.value, current_workflow=name, workflow_data=payload, resource_locks=held
        )
        return Workflow(self, name, payload)

    def finish_workflow(self) -> None:
        """Back to idle: no workflow, no data, no locks."""
        self._update_state(status=AgentStatus.IDLE.value, current_workflow=None, workflow_data={}, resource_locks=[])

    @acting
    def fail_workflow(self, error: BaseException) -> None:
        """Record ``error``: status error, ``error_count`` + 1, ``last_error`` {timestamp, error, message}.

        The workflow, its data and its locks stay as they were, showing what
        was running when it failed. The message is stored with any NUL or lone
        surrogate replaced (U+FFFD), so any exception can be recorded.
        """
        model = self.models.AgentState
        try:
            message = str(error)
        except Exception:  # an exception whose __str__ fails is still recorded
            message = f"<unprintable {type(error).__name__}>"
        last_error = {
            "timestamp": utcnow().isoformat(),
            "error": storable(type(error).__name__),
            "message": storable(message),
        }
        (
            model.update(status=AgentStatus.ERROR.value, error_count=model.error_count + 1, last_error=last_error)
            .where(model.agent == self.id)
            .execute()
        )

    @contextlib.contextmanager
    def workflow(
        self, name: str, data: Mapping[str, Any] | None = None, locks: Sequence[str] = (), *, wait: float = 0.0
    ) -> Iterator[Workflow]:
        """Run a workflow holding a lease on each of ``locks``: idle again on a normal exit; on an exception,
        record it and re-raise.

        The leases (TTL: the agent's; :meth:`keep_alive` renews them) are taken
        all or none, in sorted order, so two workflows cannot deadlock, and
        released when the workflow ends; ``resource_locks`` names them meanwhile.

        :raises LockHeld: one of ``locks`` is held elsewhere past ``wait`` seconds; nothing was started.
        """
        leases = self.holder.acquire_all(locks, self.ttl, wait)
        failed = False
        try:
            flow = self.begin_workflow(name, data, locks)
            try:
                yield flow
            except BaseException as exc:
                failed = True
                self.fail_workflow(exc)
                raise
            self.finish_workflow()
        finally:
            for lease in leases:
                lease.release()
            if failed and leases:
                self._update_state(resource_locks=[])  # the failure is recorded; the leases are gone

    def lock(self, resource: str, ttl: float = DEFAULT_TTL, wait: float = 0.0) -> Lease:
        """A lease on ``resource`` for ``ttl`` seconds (see :mod:`optistate.leases`); a context manager too.

        :param wait: seconds to keep trying while another holder has it.
        :raises LockHeld: held elsewhere (or by this agent already: leases are not re-entrant) past ``wait``.
        """
        return self.holder.acquire(resource, ttl, wait)

    # -- capabilities -------------------------------------------------------------

    def capabilities(self, enabled: bool | None = None) -> list[AgentCapability]:
        """Every capability version (or only the enabled/disabled ones), by name then version."""
        model = self.models.AgentCapability
        query = model.select().where(model.agent == self.id)
        if enabled is not None:
            query = query.where(model.is_enabled == enabled)
        return list(query.order_by(model.capability_name, model.capability_version))

    def capability(self, name: str, spec: str | None = None, *, enabled_only: bool = True) -> AgentCapability | None:
        """The highest enabled version of ``name`` within ``spec`` (e.g. ``">=2.0"``), or None.

        :param enabled_only: False to consider disabled versions too.
        """
        rows = [c for c in self.capabilities(True if enabled_only else None) if c.capability_name == name]
        best = highest((c.capability_version for c in rows), spec)
        return next((c for c in rows if c.capability_version == best), None)

    @acting
    def _set_enabled(self, name: str, version: str | None, enabled: bool) -> int:
        model = self.models.AgentCapability
        query = model.update(is_enabled=enabled).where((model.agent == self.id) & (model.capability_name == name))
        if version is not None:
            query = query.where(model.capability_version == version)
        changed = query.execute()
        if not changed and not agent_exists(model, self.id):
            raise NotFoundError.deleted_agent(self.name)
        if not changed:
            held = ", ".join(f"{c.capability_name} {c.capability_version}" for c in self.capabilities()) or "none"
            key = f"{name} {version}" if version else name
            raise NotFoundError("capability", key, f"agent {self.name!r} has {held}")
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
        """Validate a point now and buffer it; it is written by :meth:`flush`, :meth:`stop` or at exit.

        Raises only for the point itself (``ValidationError``, nothing
        buffered). When the buffer is full this flushes it, and a flush that
        fails (the database is unreachable) is logged, not raised: the point
        and the others stay buffered for the next flush, so calling again
        would record the point twice. See :class:`~optistate.metrics.MetricBuffer`.
        """
        self.buffer.add(name, value, unit, metric_type, metadata, timestamp)

    def record_metrics(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Buffer many points, each a mapping of :meth:`record_metric`'s parameters; one bad point buffers none."""
        self.buffer.extend(points)

    def flush(self) -> int:
        """Store the buffered points; return how many were newly stored.

        :raises ConnectionError: the database cannot be reached; every point stays buffered,
            and a later flush stores each exactly once, even if this one's commit went through.
        """
        return self.buffer.flush()

    @property
    def dropped_metrics(self) -> int:
        """Points dropped, oldest first, because ``max_buffer`` were buffered while flushes failed."""
        return self.buffer.dropped

    # -- lifecycle ----------------------------------------------------------------

    def keep_alive(self) -> None:
        """Heartbeat and renew this process's leases from a daemon thread, every third of the TTL.

        The period is a third of the agent's TTL, or of the shortest lease TTL
        if shorter. :meth:`stop` ends the thread; calling this again while it
        runs does nothing. A lease found lost is logged and forgotten.
        """
        if self._keeper is None or not self._keeper.running:
            self._keeper = KeepAlive(self._beat, self._beat_interval, self.database, self.name)
            self._keeper.start()

    def _beat(self) -> None:
        self.heartbeat()
        for lease in self.holder.renew_held():
            log.warning("agent %s lost its lease on %r (token %d)", self.name, lease.resource, lease.token)

    def _beat_interval(self) -> float:
        return min(self.ttl, self.holder.shortest_ttl() or self.ttl) / 3

    @acting
    def stop(self) -> None:
        """End :meth:`keep_alive`, flush metrics, release the agent's leases, mark it offline, tell the plugins.

        ``agents.status`` becomes ``offline``; the state row goes back to
        ``idle`` with no workflow, data or locks (``offline`` is a registration
        status, not a run-time one, as in the seed's schema).
        """
        if self._keeper is not None:
            self._keeper.stop()
        self.flush()
        now = utcnow()
        with write_transaction(self.database):
            self.holder.release_all()
            agent = self.models.Agent
            agent.update(status=AgentStatus.OFFLINE.value, last_heartbeat=now).where(agent.id == self.id).execute()
            self._update_state(
                status=AgentStatus.IDLE.value, current_workflow=None, workflow_data={}, resource_locks=[],
                last_heartbeat=now,
            )  # fmt: skip
        self.plugins.notify("agent_stopped", agent=self)  # a failing plugin is logged there, by name
