"""Fixtures shared by the whole suite: every model and SDK test runs on both backends.

``backend`` is parametrised over SQLite (a real file in ``tmp_path``) and
PostgreSQL (a fresh database on a real server per test). The server is
``$TEST_PG_DSN`` if set, else a throwaway one started for the session from the
machine's binaries (:mod:`optistate.testing`). Without one, the PostgreSQL
tests skip with the reason, unless ``OPTISTATE_REQUIRE_POSTGRES=1`` (CI sets
it), which turns that skip into a failure.

``OPTISTATE_TEST_BACKENDS=sqlite`` or ``=postgres`` limits the run to one
backend, as tox's ``-sqlite`` and ``-postgres`` factors do. A third backend,
``pgbouncer``, is PostgreSQL reached through a real PgBouncer in transaction
mode (tox's ``-pgbouncer`` factor); with it and without ``postgres``, the
PostgreSQL-only tests (``pg_url``) go through the pooler too, and
``$OPTISTATE_LISTEN_URL`` names the same database directly, for what needs a
session of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import peewee
import psycopg2
import pytest

import optistate
from optistate import schema
from optistate.database import open_database
from optistate.models import MODELS
from optistate.testing import PostgresServer, PostgresUnavailable, pgbouncer, postgres_dsn, postgres_server

BACKENDS = [b for b in os.environ.get("OPTISTATE_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
POOLED = "pgbouncer" in BACKENDS and "postgres" not in BACKENDS
"""Whether the PostgreSQL-only tests reach their database through PgBouncer."""
LISTEN_ENV = "OPTISTATE_LISTEN_URL"


def without_postgres(exc: PostgresUnavailable) -> NoReturn:
    """Skip with the reason, or fail when ``OPTISTATE_REQUIRE_POSTGRES=1`` (CI sets it)."""
    if os.environ.get("OPTISTATE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (OPTISTATE_REQUIRE_POSTGRES=1) but unavailable: {exc}")
    pytest.skip(f"no PostgreSQL: {exc}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of the session's PostgreSQL server (its ``postgres`` database)."""
    try:
        with postgres_dsn() as dsn:
            yield dsn
    except PostgresUnavailable as exc:
        without_postgres(exc)


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A throwaway server of the module's own, which its tests stop and restart."""
    try:
        with postgres_server() as server:
            yield server
    except PostgresUnavailable as exc:
        without_postgres(exc)


def _admin(dsn: str, sql: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def pooler(pg_server: str) -> Iterator[str]:
    """The URL of a PgBouncer in transaction mode in front of the session's server (its ``postgres`` database)."""
    try:
        with pgbouncer(pg_server) as url:
            yield url
    except PostgresUnavailable as exc:
        without_postgres(exc)


@pytest.fixture
def direct_pg_url(pg_server: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database on the server itself, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(pg_server, f"CREATE DATABASE {name}")
    base = pg_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    _admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # ends the pooler's sessions too


@pytest.fixture
def pgbouncer_url(direct_pg_url: str, pooler: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a new, empty PostgreSQL database through the pooler; ``$OPTISTATE_LISTEN_URL`` names it directly."""
    monkeypatch.setenv(LISTEN_ENV, direct_pg_url)
    return f"{pooler.rsplit('/', 1)[0]}/{direct_pg_url.rsplit('/', 1)[1]}"


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty PostgreSQL database: through the pooler when the run is :data:`POOLED`."""
    return str(request.getfixturevalue("pgbouncer_url" if POOLED else "direct_pg_url"))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """The URL of a new SQLite file."""
    return f"sqlite:///{tmp_path / 'optistate.db'}"


URL_FIXTURES = {"sqlite": "sqlite_url", "postgres": "direct_pg_url", "pgbouncer": "pgbouncer_url"}


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, request) -> str:
    """The URL of an empty database on the test's backend."""
    return str(request.getfixturevalue(URL_FIXTURES[backend]))


@pytest.fixture
def database(db_url: str) -> Iterator[peewee.Database]:
    """A migrated database with the models in :mod:`optistate.models` bound to it for the test."""
    db = open_database(db_url)
    schema.migrate(db)
    with db.bind_ctx(MODELS):
        yield db
    db.close()


@pytest.fixture
def store(db_url: str) -> Iterator[optistate.Store]:
    """A store on the test's fresh database, with the installed plugins."""
    with optistate.connect(db_url) as opened:
        yield opened


@pytest.fixture
def served(db_url: str) -> Iterator[optistate.Store]:
    """A second store on the test's database, opened as ``optistate serve`` opens it: without a config watch."""
    with optistate.connect(db_url, watch=False) as opened:
        yield opened


# --- Appended for the model, rule, database and migration tests ---------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds and installs the project; seconds, not milliseconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect ``@pytest.mark.postgres`` tests when ``OPTISTATE_TEST_BACKENDS`` leaves PostgreSQL out."""
    if "postgres" in BACKENDS or "pgbouncer" in BACKENDS:
        return
    deselected = [item for item in items if item.get_closest_marker("postgres")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("postgres")]


@pytest.fixture
def sample_cost_agent(database: peewee.Database):
    """The seed's cost agent, stored through the models bound by ``database``."""
    from optistate.models import Agent

    return Agent.create(type="cost", name="Cost Optimizer", version="1.0.0", endpoint="http://cost:8000")
