"""A throwaway PostgreSQL server for tests and benchmarks, from the binaries on the machine.

:func:`postgres_dsn` yields ``$TEST_PG_DSN`` when it is set; otherwise it
runs ``initdb`` and ``pg_ctl`` in a temporary directory on a free loopback
port and stops the server afterwards. :func:`postgres_server` always starts
one of its own, as a :class:`PostgresServer` that a fault test can stop,
start and restart. :func:`pgbouncer` puts a real PgBouncer in transaction
mode in front of a server. PostgreSQL refuses to run as root, and PgBouncer
too, so as root both run as the ``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "PostgresServer",
    "StatementCounter",
    "count_statements",
    "PostgresUnavailable",
    "find_pg_bin",
    "pgbouncer",
    "postgres_dsn",
    "postgres_server",
    "run_together",
]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be had; the message says why."""


def find_pg_bin() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A throwaway server of one's own, in a temporary directory, that a test may stop and start.

    :attr:`url` names its ``postgres`` database and stays the same across restarts (same port);
    :attr:`running` says whether it is up.
    """

    def __init__(self, bindir: str, workdir: str, prefix: list[str], max_connections: int = 200):
        self.bindir, self.workdir, self.prefix, self.max_connections = bindir, workdir, prefix, max_connections
        self.datadir, self.port = os.path.join(workdir, "data"), _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.prefix, f"{self.bindir}/{args[0]}", *args[1:]], capture_output=True, text=True)
        if done.returncode:
            raise PostgresUnavailable(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def init(self) -> None:
        """Create the cluster (trust authentication, no fsync: for tests only)."""
        self._run("initdb", "-D", self.datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += f" -c max_connections={self.max_connections}"
        self._run("pg_ctl", "-D", self.datadir, "-o", options, "-l", os.path.join(self.workdir, "log"), "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session, ``immediate`` is a crash (recovery at the next start)."""
        self._run("pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        """:meth:`stop` then :meth:`start`: every existing connection is gone."""
        self.stop(mode)
        self.start()


def _as_postgres(workdir: str) -> list[str]:
    """The command prefix that runs a server binary: ``runuser -u postgres --`` as root (owning ``workdir``)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and 'runuser' is missing")
    shutil.chown(workdir, "postgres")
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres_server(max_connections: int = 200) -> Iterator[PostgresServer]:
    """Yield a started server of one's own from the machine's binaries, removed after the block.

    Unlike :func:`postgres_dsn` it never uses ``$TEST_PG_DSN``: a test may stop this one.
    """
    bindir = find_pg_bin()
    if bindir is None:
        raise PostgresUnavailable("no PostgreSQL binaries (initdb, pg_ctl) found; install Debian's 'postgresql'")
    workdir = tempfile.mkdtemp(prefix="optistate-pg-")
    try:
        server = PostgresServer(bindir, workdir, _as_postgres(workdir), max_connections)
        server.init()
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop("immediate")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres_dsn() -> Iterator[str]:
    """Yield a ``postgresql://`` URL of a server that lives for the ``with`` block (``$TEST_PG_DSN`` if set)."""
    if os.environ.get("TEST_PG_DSN"):
        yield os.environ["TEST_PG_DSN"]
        return
    with postgres_server() as server:
        yield server.url


PGBOUNCER_INI = """\
[databases]
* = host={host} port={port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 2000
server_idle_timeout = 10
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""


@contextlib.contextmanager
def pgbouncer(server_url: str, pool_size: int = 20) -> Iterator[str]:
    """Yield the ``postgresql://`` URL of a PgBouncer in transaction mode in front of ``server_url``'s server.

    The URL names the same database as ``server_url``; every database of that
    server is reachable through the pooler under its own name (a wildcard
    entry), as the same user. Clients authenticate by trust on the loopback
    port (for tests only); PgBouncer logs in to the server with the user and
    password of ``server_url``. Each database gets at most ``pool_size`` server
    connections. PgBouncer is stopped by its pid after the block.

    :raises PostgresUnavailable: no ``pgbouncer`` binary (Debian's ``pgbouncer``), or it did not start.
    """
    binary = shutil.which("pgbouncer") or next(iter(glob.glob("/usr/sbin/pgbouncer")), None)
    if binary is None:
        raise PostgresUnavailable("no pgbouncer binary found; install Debian's 'pgbouncer'")
    parts = urlsplit(server_url)
    user, password = unquote(parts.username or "postgres"), unquote(parts.password or "")
    workdir = tempfile.mkdtemp(prefix="optistate-pgbouncer-")
    try:
        listen = _free_port()
        with open(os.path.join(workdir, "userlist.txt"), "w") as userlist:
            userlist.write(f'"{user}" "{password}"\n')  # the password logs in to the server; clients use trust
        ini = os.path.join(workdir, "pgbouncer.ini")
        with open(ini, "w") as out:
            out.write(PGBOUNCER_INI.format(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                                           listen=listen, workdir=workdir, pool_size=pool_size))
        prefix = _as_postgres(workdir)
        for name in ("userlist.txt", "pgbouncer.ini"):
            os.chmod(os.path.join(workdir, name), 0o600)
            if prefix:
                shutil.chown(os.path.join(workdir, name), "postgres")
        done = subprocess.run([*prefix, binary, "-d", ini], capture_output=True, text=True)
        if done.returncode:
            raise PostgresUnavailable(f"pgbouncer failed: {done.stderr.strip() or done.stdout.strip()}")
        pid = _started_pid(os.path.join(workdir, "pgbouncer.pid"), listen)
        try:
            yield parts._replace(netloc=f"{parts.netloc.rpartition('@')[0] or user}@127.0.0.1:{listen}").geturl()
        finally:
            _stop(pid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _started_pid(pidfile: str, port: int, seconds: float = 10.0) -> int:
    """The pid of the daemon that wrote ``pidfile``, once it accepts connections on ``port``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with open(pidfile) as text:
                pid = int(text.read().strip())
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return pid
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise PostgresUnavailable(f"pgbouncer did not start listening on port {port}") from None
            time.sleep(0.05)


def _stop(pid: int) -> None:
    """SIGTERM (immediate shutdown) to ``pid``, then wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)


def _together(target: Callable[..., Any], args: tuple[Any, ...], barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=120)
        results.put(("ok", target(*args)))
    except BaseException as exc:  # reported to the parent
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def run_together(target: Callable[..., Any], args: tuple[Any, ...], processes: int) -> list[tuple[str, Any]]:
    """Run ``target(*args)`` in ``processes`` spawned processes released at one moment.

    :param target: a module-level function (spawn pickles it by name); its result must pickle.
    :return: one ``("ok", result)`` or ``("error", "Type: message")`` per process, in finishing order.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    started = [ctx.Process(target=_together, args=(target, args, barrier, results)) for _ in range(processes)]
    for process in started:
        process.start()
    outcomes = [results.get(timeout=300) for _ in started]
    for process in started:
        process.join(timeout=60)
    return outcomes


class StatementCounter(logging.Handler):
    """Counts the statements peewee logs from the thread that made it: a store's config watch queries from its own."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread, self.count = threading.get_ident(), 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.thread == self.thread


@contextlib.contextmanager
def count_statements() -> Iterator[StatementCounter]:
    """Within the block, count this thread's statements (``counter.count``), as playhouse's ``count_queries``
    does for every thread."""
    logger = logging.getLogger("peewee")
    counter, level = StatementCounter(), logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
