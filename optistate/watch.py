"""Watching the change log: every event after a revision, in order, as it commits.

The events are always read from ``agent_events`` by revision, so a watch
neither skips nor repeats one, whatever happens to the connection in
between; waking up is only a matter of speed:

- PostgreSQL: the triggers ``NOTIFY optistate_events``; the watch ``LISTEN``s on
  a session of its own, made from the direct URL (``listen_url``, else
  ``$OPTISTATE_LISTEN_URL``, else the store's URL), since a transaction-mode
  pooler cannot hold a ``LISTEN``. It also reads every :data:`POLL_SECONDS`,
  so a lost notification, or none at all through a pooler, delays an event
  by at most that.
- SQLite: ``PRAGMA data_version``, which moves when another connection
  commits, is checked every :data:`SQLITE_CHECK_SECONDS`, and the log read
  every :data:`POLL_SECONDS` for this connection's own writes.

A lost connection or a restarted server is waited out, retrying every
:data:`POLL_SECONDS`; the watch resumes from the last revision it yielded.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import peewee
import psycopg2
from playhouse import db_url

from .database import is_sqlite, redact
from .errors import Compacted, ConnectionError
from .events import Event, read_after
from .events import revision as newest_revision

__all__ = ["ENV_VAR", "POLL_SECONDS", "ConfigFreshener", "watch"]

log = logging.getLogger("optistate")

ENV_VAR = "OPTISTATE_LISTEN_URL"
POLL_SECONDS = 0.5
"""The longest a watch waits before reading the log again, notification or not."""
SQLITE_CHECK_SECONDS = 0.02
BATCH = 500
_SLICE = 0.1  # how often a wait checks its stop flag


class _Listener:
    """PostgreSQL: a ``LISTEN optistate_events`` session, made again after it is lost."""

    def __init__(self, database: peewee.Database, listen_url: str | None):
        url = listen_url or os.environ.get(ENV_VAR)
        params = db_url.parse(url, unquote_password=True, unquote_user=True) if url else None
        if params is None:
            params = {"database": database.database, **database.connect_params}
        self.params, self.conn = params, None

    def _connect(self) -> Any:
        if self.conn is None:
            params = dict(self.params)
            conn = psycopg2.connect(dbname=params.pop("database"), **params)
            conn.autocommit = True
            conn.cursor().execute("LISTEN optistate_events")
            self.conn = conn
        return self.conn

    def wait(self, seconds: float) -> bool:
        """Whether a notification came within ``seconds`` (on a lost session: the time passes, then reconnect)."""
        try:
            conn = self._connect()
            if not select.select([conn], [], [], seconds)[0]:
                return False
            conn.poll()
            conn.notifies.clear()
            return True
        except (psycopg2.Error, OSError) as exc:
            log.warning("optistate watch: LISTEN session lost (%s); reading by polling", redact(str(exc)))
            self.close()
            time.sleep(seconds)
            return False

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
            self.conn = None


class _DataVersion:
    """SQLite: ``PRAGMA data_version`` on this thread's connection, checked often and cheaply."""

    def __init__(self, database: peewee.Database):
        self.database, self.seen = database, None

    def wait(self, seconds: float) -> bool:
        """Whether another connection committed within ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            version = self.database.execute_sql("PRAGMA data_version").fetchone()[0]
            moved, self.seen = self.seen is not None and version != self.seen, version
            if moved:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(SQLITE_CHECK_SECONDS, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Nothing of its own: the store's connection stays."""


def watch(
    database: peewee.Database,
    since: int | None = None,
    agent: str | None = None,
    kinds: Iterable[str] | None = None,
    *,
    key: str | None = None,
    timeout: float | None = None,
    listen_url: str | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> Iterator[Event]:
    """Yield every event after revision ``since`` (by default the newest now), in revision order, forever.

    :param timeout: end after this many seconds without an event.
    :param stopped: checked between waits; the watch ends once it returns true.
    :raises Compacted: events after ``since`` were compacted away (at the start, or while it fell behind).
    """
    position = newest_revision(database) if since is None else since
    waker = _DataVersion(database) if is_sqlite(database) else _Listener(database, listen_url)
    quiet_until = None if timeout is None else time.monotonic() + timeout
    try:
        while not stopped():
            try:
                events = read_after(database, position, BATCH, agent, key, kinds)
            except ConnectionError as exc:  # PostgreSQL went away: wait it out, resume where it was
                log.warning("optistate watch: cannot read the change log (%s); retrying", redact(str(exc)))
                events = []
            for event in events:
                position = event.revision
                yield event
            if events:
                quiet_until = None if timeout is None else time.monotonic() + timeout
                if len(events) == BATCH:
                    continue
            left = POLL_SECONDS if quiet_until is None else min(POLL_SECONDS, quiet_until - time.monotonic())
            if left <= 0:
                return
            deadline = time.monotonic() + left
            while not stopped() and time.monotonic() < deadline:
                if waker.wait(min(_SLICE, deadline - time.monotonic())):
                    break
    finally:
        waker.close()


class ConfigFreshener:
    """A daemon thread that keeps the config caches of a store's agent handles current from the log.

    On each config event of an agent it has a handle for, that handle's
    :class:`~optistate.config.ConfigView` drops its cache, so the next read
    loads the rows again. It ends when no handle is left (or on :meth:`stop`);
    the store starts another with its next handle.
    """

    def __init__(
        self,
        database: peewee.Database,
        handles: weakref.WeakValueDictionary[uuid.UUID, Any],
        listen_url: str | None,
    ):
        """Start watching from the newest revision: call it before any of the caches it guards is loaded."""
        self.database, self.handles, self.listen_url = database, handles, listen_url
        self._stop = threading.Event()
        self._since = newest_revision(database)
        self._thread = threading.Thread(target=self._run, name="optistate-config-watch", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped()

    def _stopped(self) -> bool:
        return self._stop.is_set() or not self.handles

    def _run(self) -> None:
        since: int | None = self._since
        try:
            while not self._stopped():
                try:
                    for event in watch(
                        self.database, since, kinds=("config",), listen_url=self.listen_url, stopped=self._stopped
                    ):
                        since = event.revision
                        handle = self.handles.get(event.agent_id) if event.agent_id else None
                        if handle is not None:
                            handle.config.invalidate(event.key, event.revision)
                except Compacted:  # fell behind a compaction: every cache may be stale
                    since = None
                    for handle in list(self.handles.values()):
                        handle.config.invalidate()
        except Exception:  # a dead freshener must say so, not vanish
            log.exception("optistate: the config watch stopped; agent.config.refresh() reads current values")
        finally:
            if not self.database.is_closed():
                self.database.close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
