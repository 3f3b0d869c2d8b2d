"""A throwaway PostgreSQL server for tests and benchmarks, from the binaries on the machine.

:func:`postgres_dsn` yields ``$TEST_PG_DSN`` when it is set; otherwise it
runs ``initdb`` and ``pg_ctl`` in a temporary directory on a free loopback
port and stops the server afterwards. :func:`postgres_server` always starts
one of its own, as a :class:`PostgresServer` that a fault test can stop,
start and restart. PostgreSQL refuses to run as root, so
as root the binaries run as the ``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["PostgresServer", "PostgresUnavailable", "find_pg_bin", "postgres_dsn", "postgres_server", "run_together"]


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

    def __init__(self, bindir: str, workdir: str, prefix: list[str]):
        self.bindir, self.workdir, self.prefix = bindir, workdir, prefix
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
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
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


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Yield a started server of one's own from the machine's binaries, removed after the block.

    Unlike :func:`postgres_dsn` it never uses ``$TEST_PG_DSN``: a test may stop this one.
    """
    bindir = find_pg_bin()
    if bindir is None:
        raise PostgresUnavailable("no PostgreSQL binaries (initdb, pg_ctl) found; install Debian's 'postgresql'")
    prefix: list[str] = []
    workdir = tempfile.mkdtemp(prefix="optistate-pg-")
    try:
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root and 'runuser' is missing")
            prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(workdir, "postgres")
        server = PostgresServer(bindir, workdir, prefix)
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
