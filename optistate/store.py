"""The store: one database, its plugins, and the agents started on it.

``optistate.connect()`` opens the database, applies pending migrations
(race-safely, see :mod:`optistate.schema`) and binds the classes in
:mod:`optistate.models` to it (with two stores, see :mod:`optistate.models`).
The store keeps a weak reference to each agent handle it made: the same
handle comes back from :meth:`Store.agent`, and :meth:`Store.close` flushes them.
:meth:`Store.handle_signals` makes SIGTERM and SIGINT stop the agents it started.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any

import peewee

from .actor import acting_as, describe
from .agent import AgentHandle
from .database import open_database, redact, resolve_url
from .encryption import Keyring
from .errors import ConfigurationError, IntegrityError, NotFoundError, OptistateError
from .events import Event, compact, history
from .events import revision as newest_revision
from .fields import check_text, utcnow
from .leases import DEFAULT_TTL, LeaseInfo, check_ttl
from .leases import locks as held_leases
from .liveness import alive_condition, stale_condition
from .liveness import reap as reap_stale
from .metrics import MAX_BUFFER, flush_all
from .models import MODELS, Agent, AgentStatus, bound_models
from .overview import overview as agents_overview
from .overview import reported_status
from .partitions import DEFAULT_PERIOD, PREPARED_AHEAD, Retained, ensure_partitions, set_period
from .partitions import retain as retain_metrics
from .registration import Registrar
from .registry import Registry
from .schema import migrate as apply_migrations
from .watch import ConfigFreshener, watch

__all__ = ["Store", "connect"]

log = logging.getLogger("optistate")


def connect(
    url: str | None = None,
    *,
    migrate: bool = True,
    plugins: Registry | None = None,
    max_buffer: int = MAX_BUFFER,
    secret_key: str | Sequence[str] | None = None,
    watch: bool = True,
    listen_url: str | None = None,
    actor: str | None = None,
) -> Store:
    """Open a store on ``url``, ``$OPTISTATE_DATABASE_URL``, or ``sqlite:///optistate.db``.

    :param migrate: apply pending migrations first (safe when many processes start at once).
    :param plugins: the plugin registry to use; by default a new one that loads
        the ``optistate`` entry points when first needed.
    :param max_buffer: metric points each agent keeps at most while flushes fail;
        past it the oldest are dropped and counted in ``agent.dropped_metrics``.
    :param secret_key: the Fernet key, or keys newest first, that sensitive config values are
        encrypted with (see :mod:`optistate.encryption`); by default ``$OPTISTATE_SECRET_KEY``
        (comma-separated), and without either, values are stored in plain text.
    :param watch: keep the config caches of this store's agent handles current from the change log,
        from a daemon thread (see :mod:`optistate.watch`); False: only ``refresh()`` reads anew.
    :param listen_url: the direct PostgreSQL URL that watches ``LISTEN`` on, when ``url`` goes through a
        transaction-mode pooler; by default ``$OPTISTATE_LISTEN_URL``, else ``url``.
    :param actor: who the change log records for this store's own writes; by default this process's
        user, host and pid. An agent that ``start_agent`` returns writes as itself.
    :raises ConfigurationError: a key that is not a Fernet key, or a key without the ``secrets`` extra.
    """
    keyring = Keyring.from_setting(secret_key)
    url = resolve_url(url)
    database = open_database(url)
    if migrate:
        apply_migrations(database)
        ensure_partitions(database, utcnow() - DEFAULT_PERIOD, utcnow() + PREPARED_AHEAD)  # a day back to a week on
    database.bind(MODELS)
    return Store(
        database, plugins or Registry(), url=redact(url), max_buffer=max_buffer, keyring=keyring, watch=watch,
        listen_url=listen_url, actor=actor,
    )  # fmt: skip


class Store:
    """Agents' state in one database. Make one with :func:`connect`."""

    def __init__(
        self,
        database: peewee.Database,
        plugins: Registry,
        *,
        url: str = "",
        max_buffer: int = MAX_BUFFER,
        keyring: Keyring | None = None,
        watch: bool = True,
        listen_url: str | None = None,
        actor: str | None = None,
    ):
        self.database, self.plugins, self.url, self.max_buffer = database, plugins, url, max_buffer
        self.actor = database.actor = actor or describe()  # type: ignore[attr-defined]
        self.watching, self.listen_url = watch, listen_url
        self._freshener: ConfigFreshener | None = None
        self.keyring = keyring if keyring is not None else Keyring()
        self.models = bound_models(database, self.keyring)
        self._agents: weakref.WeakValueDictionary[uuid.UUID, AgentHandle] = weakref.WeakValueDictionary()
        self._started: weakref.WeakValueDictionary[uuid.UUID, AgentHandle] = weakref.WeakValueDictionary()
        self._registrar = Registrar(database, self.models)

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush the metrics of every agent handle this store made, stop its config watch, close the connection."""
        if self._freshener is not None:
            self._freshener.stop()
            self._freshener = None
        for agent in list(self._agents.values()):
            agent.flush()
        self.database.close()

    def start_agent(
        self,
        type: str,
        name: str | None = None,
        version: str = "0.1.0",
        endpoint: str | None = None,
        *,
        ttl: float = DEFAULT_TTL,
    ) -> AgentHandle:
        """Register (or update) the agent ``(type, name)`` and store its type's missing defaults.

        Whatever the number of defaults, this is one statement on PostgreSQL
        (data-modifying CTEs) and four in one transaction on SQLite: upsert
        the agent; insert the missing configs; insert the missing capability
        versions; create the state row (idle) or stamp its heartbeat.
        Defaults never overwrite a stored value, so a value someone changed
        stays, and a default a newer plugin adds appears. A key the plugin now
        declares sensitive becomes sensitive; sensitivity is never lowered.

        :param ttl: seconds the agent counts as alive after each heartbeat (stored in ``agents.ttl_seconds``);
            ``agent.keep_alive()`` heartbeats every third of it.
        :raises UnknownAgentType: no loaded plugin registers ``type``.
        """
        agent_type = self.plugins.agent_type(type)
        name = type if name is None else name
        fields = self.models.Agent._meta.fields
        check_text("name", name, fields["name"].max_length)
        check_text("version", version, fields["version"].max_length)
        if endpoint is not None:
            check_text("endpoint", endpoint, fields["endpoint"].max_length, required=False)
        ttl = check_ttl("ttl", ttl)
        actor = describe(name)
        try:
            with acting_as(actor):
                row = self._registrar.register(agent_type, name, version, endpoint, ttl)
        except peewee.IntegrityError as exc:
            raise IntegrityError.from_driver(exc) from None
        agent = self._started[row.id] = self._handle(row, actor)
        self.plugins.notify("agent_started", agent=agent)  # a failing plugin is logged there, by name
        return agent

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
        return running if running is not None else self._handle(rows[0], self.actor)

    def _handle(self, row: Agent, actor: str) -> AgentHandle:
        agent = AgentHandle(self.database, self.models, self.plugins, row, actor=actor, max_buffer=self.max_buffer)
        self._agents[row.id] = agent
        if self.watching and (self._freshener is None or not self._freshener.running):  # before any cache loads
            self._freshener = ConfigFreshener(self.database, self._agents, self.listen_url)
        return agent

    def handle_signals(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """On SIGTERM or SIGINT, stop the running agents, then end the process as the signal would have.

        Opt-in, as it replaces the handlers that were there; call it from the
        main thread. On the signal, every agent this store started and that is
        not offline is stopped (:meth:`AgentHandle.stop` flushes its metrics
        first), then every other buffered point is flushed; failures are
        logged. Then the previous handler is put back and the signal sent
        again: by default the process ends killed by that signal, and SIGINT
        raises ``KeyboardInterrupt`` as before. A signal that was ignored stays
        ignored. A signal arriving inside a transaction is handled when it commits.

        :raises ConfigurationError: called from another thread than the main one.
        """
        if threading.current_thread() is not threading.main_thread():
            raise ConfigurationError("handle_signals", threading.current_thread().name, "call it from the main thread")
        for signum in signals:
            previous = signal.getsignal(signum)
            if previous != signal.SIG_IGN:
                signal.signal(signum, functools.partial(self._on_signal, previous=previous))

    def _on_signal(self, signum: int, frame: FrameType | None, *, previous: Any) -> None:
        shut_down = functools.partial(self._shut_down, signum, previous)
        if self.database.in_transaction():  # the interrupted code is mid-transaction on this connection
            self.database.after_commit(shut_down)
        else:
            shut_down()

    def _shut_down(self, signum: int, previous: Any) -> None:
        running = list(self._started.values())
        model, offline = self.models.Agent, set()
        try:
            if running:
                stopped = model.select(model.id).where(model.id.in_([a.id for a in running]))
                offline = {row.id for row in stopped.where(model.status == AgentStatus.OFFLINE.value)}
        except (OptistateError, peewee.DatabaseError) as exc:
            log.error("on signal %d: could not read which agents are stopped: %s", signum, exc)
        for agent in running:
            if agent.id not in offline:
                try:
                    agent.stop()
                except Exception as exc:
                    log.error("on signal %d: could not stop agent %s: %s", signum, agent.name, exc)
        flush_all()
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def agents(self, type: str | None = None, status: str | None = None, alive: bool | None = None) -> list[Agent]:
        """Registered agents, by type then name.

        :param type: only agents of this type.
        :param status: only agents reporting this status, as :meth:`overview` and
            ``optistate agents --status`` show it: the run-time status (``agent_states.status``)
            of a running agent, ``offline`` for a stopped one.
        :param alive: True: only agents not stopped whose heartbeat is within their TTL by
            the database's clock; False: only stale ones (not stopped, heartbeat older), which
            :meth:`reap` would take.
        """
        m = self.models
        query = m.Agent.select().order_by(m.Agent.type, m.Agent.name)
        if type is not None:
            query = query.where(m.Agent.type == type)
        if alive is not None:
            query = query.where((alive_condition if alive else stale_condition)(self.database, m.Agent))
        if status is not None:
            query = query.join(m.AgentState, peewee.JOIN.LEFT_OUTER, on=(m.AgentState.agent == m.Agent.id))
            query = query.where(reported_status(m, status))
        return list(query)

    def reap(self) -> list[Agent]:
        """Mark agents whose heartbeat is older than their TTL offline, release their leases; return them.

        Any process may call it, at any time, alongside others: see :func:`optistate.liveness.reap`.
        """
        return reap_stale(self.database, self.models)

    def retain(self, metrics: timedelta) -> Retained:
        """Delete the metric points older than ``metrics`` before now; see :func:`optistate.partitions.retain`.

        PostgreSQL drops whole partitions that end at or before the cutoff and deletes the default
        partition's older rows; SQLite deletes in batches. Nothing at or after the cutoff is deleted.
        """
        return retain_metrics(self.database, metrics)

    # -- the change log (see optistate.events and optistate.watch) ---------------------

    def revision(self) -> int:
        """The newest revision of the change log (0 before any change)."""
        return newest_revision(self.database)

    def history(
        self,
        agent: str | None = None,
        key: str | None = None,
        *,
        kinds: Iterable[str] | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """The kept events, oldest first; see :func:`optistate.events.history`."""
        return history(self.database, agent, key, kinds=kinds, since=since, limit=limit)

    def watch(
        self,
        since: int | None = None,
        agent: str | None = None,
        kinds: Iterable[str] | None = None,
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """Every event after ``since`` (default: from now), in revision order, as they commit; blocks.

        See :func:`optistate.watch.watch`: it never skips or repeats one, across lost
        connections and server restarts. ``timeout``: end after that many quiet seconds.

        :raises Compacted: events after ``since`` were compacted away.
        """
        return watch(self.database, since, agent, kinds, key=key, timeout=timeout, listen_url=self.listen_url)

    def compact(self, keep: timedelta) -> int:
        """Forget events older than ``keep``; return how many; see :func:`optistate.events.compact`."""
        return compact(self.database, keep)

    def set_partition_period(self, period: timedelta) -> list[str]:
        """Store the span of new metric partitions, for every process; see :func:`.partitions.set_period`."""
        return set_period(self.database, period)

    def locks(self) -> list[LeaseInfo]:
        """Every lease held now: resource, holder agent's name and id, token, acquired_at, expires_at."""
        return held_leases(self.database)

    def overview(
        self, type: str | None = None, status: str | None = None, liveness: str | None = None
    ) -> list[dict[str, Any]]:
        """One summary per agent, by type then name, in one query whatever the number of agents.

        ``status`` is the run-time status (``agent_states.status``), except that a
        stopped agent reports ``offline``; ``registered_status`` is ``agents.status``.
        ``liveness`` is ``alive``, ``stale`` or ``offline`` and ``heartbeat_age_seconds``
        the age, both by the database's clock. ``locks`` are the names the state row
        gives; ``leases`` the leases the agent holds now (resource, token, acquired_at,
        expires_at). The parameters filter on type, reported status and liveness.
        See :mod:`optistate.overview`.
        """
        return agents_overview(self.database, type, status, liveness)
