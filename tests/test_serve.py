"""``optistate serve`` as a command: what it refuses, and a real uvicorn server that it starts and SIGTERM stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

import optistate
from optistate import demo, schema
from optistate.cli import cli

TOKEN = "s3rve-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(url: str, *args: str, env: dict[str, str] | None = None, log=None) -> Iterator[str]:
    """``optistate --database url serve --port P *args`` in a process of its own; yield its base URL; SIGTERM it."""
    port = free_port()
    command = [sys.executable, "-m", "optistate", "--database", url, "serve", "--port", str(port), *args]
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log or subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"optistate serve ended with {process.returncode}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, "optistate serve did not listen within 60 s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # uvicorn shuts down (closing connections, ending streams), then ends as the signal would have
    assert process.returncode in (0, -signal.SIGTERM), f"optistate serve ended with {process.returncode} on SIGTERM"


def get(url: str, **headers: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def demo_db(sqlite_url):
    with optistate.connect(sqlite_url) as store:
        demo.run(store)
    return sqlite_url


def run(url, *args, env=None):
    return CliRunner().invoke(cli, ["--database", url, "serve", *args], env=env)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "dashboard.example"])
def test_it_refuses_to_listen_beyond_loopback_without_a_token(demo_db, host):
    result = run(demo_db, "--host", host)
    assert result.exit_code == 1
    assert result.stderr == (f"error: host={host!r}: listening beyond this machine needs a token: --token or"
                             " $OPTISTATE_SERVE_TOKEN\n")


def test_a_short_token_is_refused_without_being_shown(demo_db):
    given = run(demo_db, "--token", "short-secret"), run(demo_db, env={"OPTISTATE_SERVE_TOKEN": "short-secret"})
    for result in given:
        assert result.exit_code == 1 and "short-secret" not in result.output
        assert result.stderr == "error: token='***': must be at least 16 characters, without spaces around\n"


def test_it_creates_no_database_and_applies_no_migration(sqlite_url, tmp_path):
    missing = tmp_path / "none.db"
    result = run(f"sqlite:///{missing}")
    assert result.exit_code == 1 and "names no file" in result.stderr and not missing.exists()
    with optistate.connect(sqlite_url) as store:
        schema.rollback(store.database, schema.status(store.database)[-1].name)
        before = schema.status(store.database)
    result = run(sqlite_url)
    assert result.exit_code == 1
    assert result.stderr == (f"error: the database lacks migrations {before[-1].name}; run `optistate migrate`"
                             " first\n")
    with optistate.connect(sqlite_url, migrate=False) as store:
        assert schema.status(store.database) == before


def test_a_real_server_on_every_interface_needs_the_token_and_stops_on_sigterm(demo_db, tmp_path):
    with open(tmp_path / "serve.log", "w") as log, serving(demo_db, "--host", "0.0.0.0", log=log,
                                                          env={"OPTISTATE_SERVE_TOKEN": TOKEN}) as base:
        assert get(f"{base}/metrics") == (401, '{"error":"unauthorized: send Authorization: Bearer <token>"}')
        assert get(f"{base}/metrics", Authorization="Bearer wrong-token-0123456789")[0] == 401
        status, text = get(f"{base}/metrics", Authorization=f"Bearer {TOKEN}")
        assert status == 200
        up = next(f for f in text_string_to_metric_families(text) if f.name == "optistate_agent_up")
        assert len(up.samples) == 4
        status, text = get(f"{base}/api/agents/Cost%20Optimizer", Authorization=f"Bearer {TOKEN}")
        assert status == 200 and '"name":"Cost Optimizer"' in text
    written = (tmp_path / "serve.log").read_text()
    assert "optistate serve on sqlite:///" in written and "(token required)" in written
    assert "GET /metrics HTTP/1.1\" 401" in written and TOKEN not in written
