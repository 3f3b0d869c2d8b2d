"""From a URL (or none) to a connected database: schemes, defaults, SQLite settings and errors."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from playhouse.pool import PooledPostgresqlDatabase

from optistate.database import ENV_VAR, open_database, redact, write_transaction
from optistate.errors import ConfigurationError, ConnectionError, OptistateError
from optistate.reconnect import PooledPostgresDatabase, PostgresDatabase


def pragma(db: peewee.Database, name: str) -> object:
    return db.execute_sql(f"PRAGMA {name}").fetchone()[0]


@pytest.fixture
def no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class TestSqlite:
    def test_sqlite_url(self, sqlite_url, tmp_path):
        db = open_database(sqlite_url)

        assert isinstance(db, peewee.SqliteDatabase)
        assert Path(db.database) == tmp_path / "optistate.db"
        assert (tmp_path / "optistate.db").exists()

    def test_every_connection_has_wal_busy_timeout_and_foreign_keys(self, sqlite_url):
        db = open_database(sqlite_url)
        db.close()
        db.connect()

        assert pragma(db, "journal_mode") == "wal"
        assert pragma(db, "foreign_keys") == 1
        assert pragma(db, "busy_timeout") >= 10_000  # agent processes wait for each other, well past sqlite3's 5 s

    def test_write_transaction_takes_the_write_lock_up_front(self, sqlite_url):
        db, other = open_database(sqlite_url), open_database(sqlite_url)
        other.execute_sql("PRAGMA busy_timeout = 0")

        with db.atomic():  # a deferred transaction holds no lock until it writes
            other.execute_sql("BEGIN IMMEDIATE")
            other.execute_sql("ROLLBACK")
        with write_transaction(db), pytest.raises(peewee.OperationalError, match="locked"):
            other.execute_sql("BEGIN IMMEDIATE")

    def test_relative_path_is_relative_to_cwd(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)

        open_database("sqlite:///relative.db")

        assert (tmp_path / "relative.db").exists()

    def test_env_var_is_used_without_url(self, sqlite_url, tmp_path, monkeypatch):
        monkeypatch.setenv(ENV_VAR, sqlite_url)

        assert Path(open_database().database) == tmp_path / "optistate.db"

    def test_url_given_beats_env_var(self, tmp_path, monkeypatch):
        monkeypatch.setenv(ENV_VAR, f"sqlite:///{tmp_path / 'from_env.db'}")

        assert Path(open_database(f"sqlite:///{tmp_path / 'given.db'}").database) == tmp_path / "given.db"

    def test_default_is_a_file_in_cwd(self, tmp_path, monkeypatch, no_env_url):
        monkeypatch.chdir(tmp_path)

        db = open_database()

        assert isinstance(db, peewee.SqliteDatabase)
        assert Path(os.path.abspath(db.database)) == tmp_path / "optistate.db"
        assert (tmp_path / "optistate.db").exists()
        assert pragma(db, "journal_mode") == "wal"

    def test_unopenable_file_is_a_connection_error(self, tmp_path):
        with pytest.raises(ConnectionError, match="unable to open"):
            open_database(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")


@pytest.mark.postgres
class TestPostgres:
    @pytest.mark.parametrize(
        ("scheme", "expected"),
        [
            ("postgresql", PostgresDatabase),
            ("postgres", PostgresDatabase),
            ("postgresql+pool", PooledPostgresDatabase),
            ("postgres+pool", PooledPostgresDatabase),
        ],
    )
    def test_postgres_urls(self, pg_url, scheme, expected):
        db = open_database(scheme + pg_url[len("postgresql") :])
        try:  # peewee's classes, reconnecting after a server restart (optistate.reconnect)
            assert type(db) is expected
            assert isinstance(db, PooledPostgresqlDatabase if "pool" in scheme else peewee.PostgresqlDatabase)
            assert db.execute_sql("SELECT current_database()").fetchone()[0] == pg_url.rsplit("/", 1)[1]
        finally:
            db.close()

    def test_pool_hands_back_the_same_connection(self, pg_url):
        db = open_database(pg_url.replace("postgresql://", "postgresql+pool://", 1))
        first = db.connection()
        db.close()
        db.connect()

        assert db.connection() is first
        db.close_all()

    def test_env_var_may_name_postgres(self, pg_url, monkeypatch):
        monkeypatch.setenv(ENV_VAR, pg_url)

        db = open_database()

        assert isinstance(db, peewee.PostgresqlDatabase)
        db.close()


class TestErrors:
    @pytest.mark.parametrize(
        "url", ["mysql://u:s3cr3t@db.example/agents", "sqlite+pool:///agents.db", "agents.db", "postgresql:/x"]
    )
    def test_unknown_scheme(self, url):
        with pytest.raises(ConfigurationError, match="scheme must be one of") as caught:
            open_database(url)
        assert "s3cr3t" not in str(caught.value)

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("postgresql://u:s3cr3t@127.0.0.1", "no database name"),
            ("postgresql://u:s3cr3t@127.0.0.1:notaport/db", "notaport"),
        ],
    )
    def test_malformed_url_is_a_configuration_error_without_password(self, url, reason):
        with pytest.raises(ConfigurationError, match=reason) as caught:
            open_database(url)
        assert "s3cr3t" not in str(caught.value)
        assert "u:***@127.0.0.1" in str(caught.value)

    @pytest.mark.parametrize("scheme", ["postgresql", "postgresql+pool"])
    @pytest.mark.parametrize("password", ["s3cr3t", "s3cr%40t"])
    def test_unreachable_server_is_a_connection_error_without_password(self, refusing_port, scheme, password):
        url = f"{scheme}://agent:{password}@127.0.0.1:{refusing_port}/agents"

        with pytest.raises(ConnectionError, match=rf"agent:\*\*\*@127\.0\.0\.1:{refusing_port}/agents") as caught:
            open_database(url)

        assert isinstance(caught.value, OptistateError)
        for shown in (str(caught.value), repr(caught.value), caught.value.url):
            assert "s3cr" not in shown

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
            ("postgresql+pool://u:p%40ss%2Fw@h:5432/db", "postgresql+pool://u:***@h:5432/db"),
            ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
            ("postgresql://h:5432/db", "postgresql://h:5432/db"),
            ("sqlite:////var/lib/agents.db", "sqlite:////var/lib/agents.db"),
            ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
            ("postgresql://u@h/db?password=secret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
            ("postgresql://h/db?sslmode=require&PASSWORD=secret", "postgresql://h/db?sslmode=require&PASSWORD=***"),
            ("no postgresql://u:p@ss@h/db: refused", "no postgresql://u:***@h/db: refused"),
            ("invalid dsn: host=h password=secret user=u", "invalid dsn: host=h password=*** user=u"),
        ],
    )
    def test_redact(self, url, shown):
        assert redact(url) == shown


def test_a_new_sqlite_file_is_private_to_its_owner(tmp_path):
    path = tmp_path / "private.db"
    open_database(f"sqlite:///{path}").close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
