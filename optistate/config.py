"""An agent's typed configuration, read through a per-agent cache.

Reads are served from memory after the first. The store keeps the cache
current from the change log (:class:`~optistate.watch.ConfigFreshener`, unless
``connect(watch=False)``), and ``refresh()`` re-reads at once. A write is one
upsert in a write transaction, after the value parses as its type and passes
every plugin's ``validate_config``; with ``expect_revision`` it is a
compare-and-set on the row's revision.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import peewee

from .actor import acting
from .database import is_sqlite, write_transaction
from .errors import Conflict, IntegrityError, NotFoundError, ValidationError, keeps_secrets
from .fields import check_text, utcnow
from .models import ConfigType, agent_exists, format_config_value, parse_config_value

if TYPE_CHECKING:
    from .models import Agent, AgentConfig
    from .registry import Registry

__all__ = ["ConfigView"]


class ConfigView:
    """An agent's typed configuration, read through a per-agent cache.

    ``view[key]`` is the parsed value; ``view.entries()`` the rows. Sensitive
    values never show in ``repr``; read them with ``view[key]``. With a secret
    key, sensitive values are written encrypted; reads decrypt them (a row's
    ``config_value`` is what is stored, its ``text`` the plain string).

    :param model: the ``AgentConfig`` model bound to the agent's database.
    :param agent: the agent's registration row (its id, type and name are used).
    :param plugins: the registry whose ``validate_config`` hooks check writes.
    :param actor: who the change log records for writes made through this view.
    """

    def __init__(self, model: type[AgentConfig], agent: Agent, plugins: Registry, actor: str = ""):
        self._model, self._plugins, self.actor = model, plugins, actor
        self._agent_id, self._agent_type, self._agent_name = agent.id, agent.type, agent.name
        self._rows: dict[str, AgentConfig] | None = None

    def _cache(self) -> dict[str, AgentConfig]:
        rows = self._rows  # read once: another thread may invalidate it meanwhile
        return self._load() if rows is None else rows

    def _load(self) -> dict[str, AgentConfig]:
        model = self._model
        query = model.select().where(model.agent == self._agent_id).order_by(model.config_key)
        rows = self._rows = {row.config_key: row for row in query}
        return rows

    def refresh(self) -> None:
        """Re-read every config of the agent from the database (one SELECT)."""
        self._load()

    def invalidate(self, key: str | None = None, revision: int | None = None) -> None:
        """Drop the cache; the next read loads it again.

        With ``key`` and ``revision`` (a change the log shows), only if the cache
        does not hold that change yet: a write of this view, read back since, is
        not read again.
        """
        rows = self._rows
        cached = rows.get(key) if rows is not None and key is not None else None
        if cached is None or revision is None or cached.revision < revision:
            self._rows = None

    def entries(self) -> list[AgentConfig]:
        """The config rows, ordered by key."""
        return list(self._cache().values())

    def entry(self, key: str) -> AgentConfig:
        """The stored row of ``key``: canonical text, type, sensitivity, description.

        :raises NotFoundError: the agent has no such key; the message lists the keys it has.
        """
        rows = self._cache()
        if key not in rows:
            raise NotFoundError("config key", key, f"agent {self._agent_name!r} has {', '.join(rows) or 'none'}")
        return rows[key]

    def __getitem__(self, key: str) -> Any:
        return self.entry(key).value

    def get(self, key: str, default: Any = None) -> Any:
        row = self._cache().get(key)
        return default if row is None else row.value

    def __contains__(self, key: object) -> bool:
        return key in self._cache()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._cache()))

    def __len__(self) -> int:
        return len(self._cache())

    @keeps_secrets
    @acting
    def set(
        self,
        key: str,
        value: Any,
        *,
        config_type: str | ConfigType | None = None,
        is_sensitive: bool | None = None,
        description: str | None = None,
        expect_revision: int | None = None,
    ) -> int:
        """Validate and store ``value`` under ``key``; return the row's new revision.

        An existing key keeps its type; a new key needs ``config_type``. The
        value must parse as the type and pass every plugin's
        ``validate_config``; otherwise :class:`ValidationError`, and nothing is stored.

        :param expect_revision: store only if the row's revision (``entry(key).revision``)
            is this, or, with 0, only if the key does not exist yet; otherwise
            :class:`~optistate.errors.Conflict`, and nothing is stored.
        """
        check_text("config_key", key, 255)
        if expect_revision is not None and (
            isinstance(expect_revision, bool) or not isinstance(expect_revision, int) or expect_revision < 0
        ):
            raise ValidationError("expect_revision", expect_revision, "must be a revision: an int of 0 or more")
        wanted = config_type.value if isinstance(config_type, ConfigType) else config_type
        try:
            return self._write(key, value, wanted, is_sensitive, description, expect_revision)
        except peewee.IntegrityError as exc:  # the foreign key refused: is the agent's row gone?
            self._check_agent_exists()  # after the rollback, which PostgreSQL needs before the next query
            raise IntegrityError.from_driver(exc) from None
        finally:
            self._rows = None

    def _write(
        self,
        key: str,
        value: Any,
        wanted: str | None,
        is_sensitive: bool | None,
        description: str | None,
        expect_revision: int | None,
    ) -> int:
        model = self._model
        with write_transaction(model._meta.database):
            current = model.get_or_none((model.agent == self._agent_id) & (model.config_key == key))
            if expect_revision is not None and expect_revision != (current.revision if current else 0):
                raise Conflict(f"config {key!r}", expect_revision, current.revision if current else 0)
            if current is not None:
                if wanted is not None and wanted != current.config_type:
                    raise _keeps_type(key, wanted, current.config_type)
                wanted = current.config_type
                sensitive = current.is_sensitive if is_sensitive is None else bool(is_sensitive)
            elif wanted is None:
                self._check_agent_exists()
                raise ValidationError("config_type", None, f"required for the new key {key!r}")
            else:
                sensitive = bool(is_sensitive)
            text = format_config_value(wanted, value, key=key, sensitive=sensitive)
            parsed = parse_config_value(wanted, text, key=key, sensitive=sensitive)
            self._plugins.check_config(self._agent_type, key, parsed, sensitive=sensitive)
            text = model.keyring.stored_form(text, key=key, sensitive=sensitive)  # encrypted when a key is set
            now = utcnow()
            update = {model.config_value: text, model.is_sensitive: sensitive, model.updated_at: now}
            if description is not None:
                update[model.description] = description
            row = {
                "agent": self._agent_id, "config_key": key, "config_value": text, "config_type": wanted,
                "description": description, "is_sensitive": sensitive, "created_at": now, "updated_at": now,
            }  # fmt: skip
            # The conditions are checked by the write itself: a key another process has just
            # created with another type, or changed past the expected revision, is left alone,
            # and no row comes back.
            condition = model.config_type == peewee.EXCLUDED.config_type
            if expect_revision is not None:
                condition &= model.revision == expect_revision
            upsert = model.insert(row).on_conflict(
                conflict_target=[model.agent, model.config_key], update=update, where=condition
            )
            written = list(upsert.returning(model.revision).tuples().execute())
            this = (model.agent == self._agent_id) & (model.config_key == key)
            if written and is_sqlite(model._meta.database):  # RETURNING shows the row before SQLite's AFTER triggers
                return int(model.select(model.revision).where(this).scalar())
            if written:
                return int(written[0][0])
            stored = model.get(this)
            if expect_revision is not None and stored.revision != expect_revision:
                raise Conflict(f"config {key!r}", expect_revision, stored.revision)
            raise _keeps_type(key, wanted, stored.config_type)

    def _check_agent_exists(self) -> None:
        if not agent_exists(self._model, self._agent_id):
            raise NotFoundError.deleted_agent(self._agent_name)

    def __repr__(self) -> str:
        shown = ", ".join(repr(row) for row in self._cache().values())
        return f"<ConfigView {self._agent_name}: [{shown}]>"


def _keeps_type(key: str, wanted: str, stored: str) -> ValidationError:
    return ValidationError("config_type", wanted, f"{key!r} is stored as {stored}; an existing key keeps its type")
