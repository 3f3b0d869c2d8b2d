"""Faults, for real: a PostgreSQL server stopped and restarted under a running agent, a
connection cut after the server committed, a flush refused by a lock, a process sent SIGTERM.

Marked ``fault`` (``pytest -m fault`` selects them); they run in the normal run too.
The README's "Guarantees" section states what these tests hold it to.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator

import peewee
import psycopg2
import pytest

import optistate
from optistate.errors import ConnectionError, OptistateError
from optistate.testing import PostgresServer

pytestmark = pytest.mark.fault

SCHEMES = ["postgresql", "postgresql+pool"]


# --- a server of our own (conftest's own_server), that the tests stop and start ---


@pytest.fixture
def server(own_server: PostgresServer) -> Iterator[PostgresServer]:
    """The module's server, running, with a fresh database at ``server.test_url``."""
    if not own_server.running:  # a failed test may have left it stopped
        own_server.start()
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(own_server.url, f"CREATE DATABASE {name}")
    own_server.test_url = f"{own_server.url.rsplit('/', 1)[0]}/{name}"  # type: ignore[attr-defined]
    yield own_server
    if not own_server.running:
        own_server.start()
    _admin(own_server.url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _admin(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


def _url(server: PostgresServer, scheme: str) -> str:
    return scheme + server.test_url[len("postgresql") :]  # type: ignore[attr-defined]


def _stored(url: str, agent_id: uuid.UUID) -> list[float]:
    """The agent's stored metric values, read on a connection of the test's own."""
    rows = _admin(url, f"SELECT metric_value FROM agent_metrics WHERE agent_id = '{agent_id}' ORDER BY metric_value")
    return [value for (value,) in rows]


# --- reconnect ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", SCHEMES)
def test_during_an_outage_every_call_raises_connection_error_and_the_first_call_after_succeeds(server, scheme):
    store = optistate.connect(_url(server, scheme))
    agent = store.start_agent("cost", name="outage")
    for i in range(100):
        agent.record_metric("m", float(i))
    assert agent.flush() == 100
    for i in range(100, 150):
        agent.record_metric("m", float(i))  # buffered across the outage

    server.stop()
    calls = {
        "heartbeat": agent.heartbeat,
        "set_status": lambda: agent.set_status("busy"),
        "config.refresh": agent.config.refresh,
        "flush": agent.flush,
        "metrics": lambda: agent.metrics("m"),
        "agents": store.agents,
    }
    for name, call in calls.items():
        with pytest.raises(ConnectionError) as caught:
            call()
        assert isinstance(caught.value, OptistateError) and not isinstance(caught.value, peewee.DatabaseError), name
        assert "127.0.0.1" in str(caught.value), name
    agent.record_metric("m", 150.0)  # recording does not need the server

    server.start()
    before = agent.state().last_heartbeat
    agent.heartbeat()  # the first call after the restart, no action taken
    assert agent.state().last_heartbeat > before
    assert agent.flush() == 51
    assert _stored(server.test_url, agent.id) == [float(i) for i in range(151)]
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_first_call_after_a_restart_between_calls_succeeds(server, scheme, mode):
    store = optistate.connect(_url(server, scheme))
    agent = store.start_agent("cost", name="between")
    agent.heartbeat()
    for call in (agent.heartbeat, agent.config.refresh, lambda: agent.set_status("busy"), agent.flush):
        server.restart(mode)  # every connection the process had is gone
        call()
    agent.record_metric("m", 1.0)
    server.restart(mode)
    assert agent.flush() == 1
    assert agent.state().status == "busy"
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_restart_in_the_middle_of_a_run_loses_and_duplicates_no_point(server, scheme, mode):
    """Heartbeats, metric writes and flushes in a loop while another thread restarts the server."""
    store = optistate.connect(_url(server, scheme))
    agent = store.start_agent("cost", name="restart")
    agent.buffer.size = 25  # auto-flushes in the run, some during the outage
    restarted = threading.Event()

    def restart() -> None:
        time.sleep(0.3)
        server.restart(mode)
        restarted.set()

    thread = threading.Thread(target=restart)
    thread.start()
    count, deadline = 0, time.monotonic() + 60
    try:
        while (not restarted.is_set() or count < 600) and time.monotonic() < deadline:
            with contextlib.suppress(ConnectionError):  # while the server is down
                agent.heartbeat()
            agent.record_metric("m", float(count))  # never raises for the database
            count += 1
            if count % 40 == 0:
                with contextlib.suppress(ConnectionError):
                    agent.flush()
    finally:
        thread.join()
    assert restarted.is_set()
    agent.heartbeat()
    agent.flush()
    assert _stored(server.test_url, agent.id) == [float(i) for i in range(count)]  # each once, none lost
    assert agent.dropped_metrics == 0
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_call_whose_connection_is_lost_inside_a_transaction_is_not_retried(server, scheme):
    store = optistate.connect(_url(server, scheme))
    agent = store.start_agent("cost", name="transaction")
    agent.set_resource_usage({"cpu_percent": 1})
    with pytest.raises(ConnectionError):
        with store.database.atomic():
            agent.set_resource_usage({"cpu_percent": 2})
            server.restart()
            agent.set_resource_usage({"cpu_percent": 3})  # retried alone on a new connection, it would stick
    assert agent.state().resource_usage == {"cpu_percent": 1}  # the next call reconnects; nothing half-done
    agent.set_resource_usage({"cpu_percent": 4})
    assert agent.state().resource_usage == {"cpu_percent": 4}
    store.close()


# --- exactly once ---------------------------------------------------------------------


class CommitCutter:
    """A TCP proxy to a PostgreSQL server that, once armed, drops the client's connection at
    the server's acknowledgement of a COMMIT: the server has committed, the client never hears it."""

    def __init__(self, upstream_port: int):
        self.upstream_port, self.armed, self.cuts = upstream_port, threading.Event(), 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answer, args=(upstream, client), daemon=True).start()

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                upstream.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)
        upstream.close()

    def _answer(self, upstream: socket.socket, client: socket.socket) -> None:
        """Pass the server's messages (type byte, 4-byte length) on, one whole message at a time."""
        pending = b""
        try:
            while data := upstream.recv(65536):
                pending += data
                while len(pending) >= 5 and len(pending) >= 1 + int.from_bytes(pending[1:5], "big"):
                    end = 1 + int.from_bytes(pending[1:5], "big")
                    message, pending = pending[:end], pending[end:]
                    if self.armed.is_set() and message[:1] == b"C" and message[5:] == b"COMMIT\0":
                        self.armed.clear()
                        self.cuts += 1
                        raise OSError("cut")
                    client.sendall(message)
        except OSError:
            pass
        for end in (client, upstream):  # shutdown, not only close: it wakes the other thread's recv and sends FIN
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_flush_whose_commit_acknowledgement_was_lost_stores_nothing_twice(server, scheme):
    direct = server.test_url  # type: ignore[attr-defined]
    cutter = CommitCutter(int(direct.rsplit(":", 1)[1].split("/")[0]))
    database = direct.rsplit("/", 1)[1]
    url = f"{scheme}://postgres@127.0.0.1:{cutter.port}/{database}?sslmode=disable&gssencmode=disable"
    store = optistate.connect(url)
    agent = store.start_agent("cost", name="lost-ack")
    for i in range(500):
        agent.record_metric("m", float(i))

    cutter.armed.set()
    with pytest.raises(ConnectionError):
        agent.flush()  # committed by the server, but the client cannot know
    assert cutter.cuts == 1
    assert _stored(direct, agent.id) == [float(i) for i in range(500)]
    assert len(agent.buffer.pending) == 500  # kept: the client cannot tell that they were stored

    agent.record_metric("m", 500.0)
    assert agent.flush() == 1  # the retry stores only what is not stored yet
    assert _stored(direct, agent.id) == [float(i) for i in range(501)]
    store.close()
    cutter.close()


# --- the bound --------------------------------------------------------------------


@pytest.mark.postgres
def test_the_buffer_is_bounded_during_an_outage_dropping_the_oldest_and_logging_once_per_outage(server, caplog):
    store = optistate.connect(server.test_url, max_buffer=20)  # type: ignore[attr-defined]
    agent = store.start_agent("cost", name="bound")
    server.stop()
    with caplog.at_level(logging.WARNING, logger="optistate"):
        for i in range(50):
            agent.record_metric("m", float(i))
        with pytest.raises(ConnectionError):
            agent.flush()
        agent.record_metric("m", 50.0)
    assert agent.dropped_metrics == 31
    assert len(agent.buffer.pending) == 20
    assert sum("dropping the oldest" in r.getMessage() for r in caplog.records) == 1

    server.start()
    assert agent.flush() == 20
    assert _stored(server.test_url, agent.id) == [float(i) for i in range(31, 51)]  # type: ignore[attr-defined]

    caplog.clear()
    server.stop()  # a second outage is logged again
    with caplog.at_level(logging.WARNING, logger="optistate"):
        for i in range(21):
            agent.record_metric("m", float(100 + i))
    assert agent.dropped_metrics == 32
    assert sum("dropping the oldest" in r.getMessage() for r in caplog.records) == 1
    server.start()
    store.close()


# --- item 4: a failed auto-flush, on both backends ---------------------------------------


def _hold_metrics_lock(url: str) -> tuple[object, object]:
    """Another connection holding a lock that makes a flush of ``url`` wait; and how to release it."""
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
    else:
        conn = psycopg2.connect(url)
        conn.cursor().execute("LOCK TABLE agent_metrics IN ACCESS EXCLUSIVE MODE")
    return conn, conn.rollback


def test_a_record_metric_whose_auto_flush_fails_buffers_the_point_and_does_not_raise(db_url, caplog):
    store = optistate.connect(db_url)
    agent = store.start_agent("cost", name="auto-flush")
    on_sqlite = db_url.startswith("sqlite")
    store.database.execute_sql("PRAGMA busy_timeout = 100" if on_sqlite else "SET lock_timeout = '100ms'")
    agent.buffer.size = 3
    holder, release = _hold_metrics_lock(db_url)
    with caplog.at_level(logging.WARNING, logger="optistate"):
        agent.record_metric("m", 0.0)
        agent.record_metric("m", 1.0)
        agent.record_metric("m", 2.0)  # fills the buffer: the flush fails, the call does not raise
        agent.record_metrics([{"name": "m", "value": 3.0}])
    assert len(agent.buffer.pending) == 4
    assert sum("could not flush" in r.getMessage() for r in caplog.records) == 1
    release()
    assert agent.flush() == 4
    agent.record_metric("m", 4.0)
    agent.flush()
    values = sorted(p.metric_value for p in agent.metrics("m"))
    assert values == [0.0, 1.0, 2.0, 3.0, 4.0]  # each once: no caller had a reason to record again
    holder.close()  # type: ignore[attr-defined]
    store.close()


# --- item 5: SIGTERM and SIGINT, on both backends ----------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    import optistate

    store = optistate.connect(sys.argv[1])
    agent = store.start_agent("cost", name="signalled")
    for i in range(250):
        agent.record_metric("m", float(i))
    store.handle_signals()
    if sys.argv[2] == "in-transaction":
        with store.database.atomic():
            agent.set_resource_usage({"cpu_percent": 7})
            os.kill(os.getpid(), signal.SIGTERM)  # handled when this transaction commits
            agent.record_metric("m", 250.0)
        print("survived", flush=True)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def _child(db_url: str, how: str) -> subprocess.Popen:
    # cwd: ``-c`` puts it on sys.path, and the checkout's root would hide the installed package
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, db_url, how],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
    )  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_flushes_and_stops_the_agents_then_ends_the_process_as_the_signal_would(db_url, signum):
    child = _child(db_url, "wait")
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n", child.stderr.read() if child.stderr else ""
    child.send_signal(signum)
    child.wait(timeout=60)
    assert child.returncode == -signum, child.stderr.read() if child.stderr else ""
    with optistate.connect(db_url) as store:
        agent = store.agent("signalled")
        assert sorted(p.metric_value for p in agent.metrics("m")) == [float(i) for i in range(250)]
        assert agent.registration().status == "offline"


def test_a_signal_inside_a_transaction_is_handled_when_it_commits(db_url):
    child = _child(db_url, "in-transaction")
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGTERM, err
    assert "survived" not in out
    with optistate.connect(db_url) as store:
        agent = store.agent("signalled")
        assert agent.state().resource_usage == {"cpu_percent": 7}  # the interrupted transaction committed
        assert sorted(p.metric_value for p in agent.metrics("m")) == [float(i) for i in range(251)]
        assert agent.registration().status == "offline"


# --- the change log's watch -----------------------------------------------------------


def _write_thresholds(url: str, values: list[int]) -> None:
    """Set each value in turn from another process, retrying through the server's restart.

    A retried write whose first attempt did commit sets the same value again,
    which changes nothing tracked: still one event per value.
    """
    store = optistate.connect(url, watch=False)
    agent = store.agent("watched")
    for value in values:
        while True:
            try:
                agent.config.set("cost_threshold_usd", value)
                break
            except ConnectionError:
                time.sleep(0.05)
        time.sleep(0.01)
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_watch_across_a_restart_skips_and_repeats_nothing_and_a_resumed_one_gets_exactly_the_rest(server, mode):
    store = optistate.connect(server.test_url)
    store.start_agent("cost", name="watched")
    start = store.revision()
    values = list(range(1, 61))
    seen: list = []

    def follow() -> None:  # one watch, from start to the last value
        for event in store.watch(since=start, key="cost_threshold_usd", timeout=30):
            seen.append(event)
            if event.new["config_value"] == str(values[-1]):
                return

    watcher = threading.Thread(target=follow)
    watcher.start()
    writer = multiprocessing.get_context("spawn").Process(target=_write_thresholds, args=(server.test_url, values))
    writer.start()
    time.sleep(0.4)
    server.restart(mode)  # mid-stream: the watcher's reads and LISTEN session and the writer's connection all go
    writer.join(60)
    watcher.join(60)
    assert writer.exitcode == 0
    assert [int(e.new["config_value"]) for e in seen] == values  # none skipped, none repeated, in order
    stopped_at = seen[len(seen) // 2].revision
    resumed = list(store.watch(since=stopped_at, key="cost_threshold_usd", timeout=0.5))
    assert resumed == [e for e in seen if e.revision > stopped_at]
    assert resumed == store.history(key="cost_threshold_usd", since=stopped_at)
    store.close()
