"""An agent's typed configuration, read through a per-agent cache.

Reads are served from memory after the first; ``refresh()`` re-reads what
other processes changed. A write is one upsert in a write transaction, after
the value parses as its type and passes every plugin's ``validate_config``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .database import write_transaction
from .errors import NotFoundError, ValidationError
from .fields import utcnow
from .models import ConfigType, format_config_value, parse_config_value

if TYPE_CHECKING:
    from .agent import AgentHandle
    from .models import AgentConfig

__all__ = ["ConfigView"]


class ConfigView:
    """An agent's typed configuration, read through a per-agent cache.

    ``view[key]`` is the parsed value; ``view.entries()`` the rows. Sensitive
    values never show in ``repr``; read them with ``view[key]``.
    """

    def __init__(self, agent: AgentHandle):
        self._agent = agent
        self._rows: dict[str, AgentConfig] | None = None

    def _cache(self) -> dict[str, AgentConfig]:
        if self._rows is None:
            self.refresh()
        assert self._rows is not None
        return self._rows

    def refresh(self) -> None:
        """Re-read every config of the agent from the database (one SELECT)."""
        model = self._agent.store.models.AgentConfig
        rows = model.select().where(model.agent == self._agent.id).order_by(model.config_key)
        self._rows = {row.config_key: row for row in rows}

    def entries(self) -> list[AgentConfig]:
        """The config rows, ordered by key."""
        return list(self._cache().values())

    def __getitem__(self, key: str) -> Any:
        try:
            return self._cache()[key].value
        except KeyError:
            raise NotFoundError(
                "config key", key, f"agent {self._agent.name!r} has {', '.join(self) or 'none'}"
            ) from None

    def entry(self, key: str) -> AgentConfig:
        """The stored row of ``key``: canonical text, type, sensitivity, description.

        :raises NotFoundError: the agent has no such key.
        """
        self[key]  # NotFoundError listing the agent's keys
        return self._cache()[key]

    def get(self, key: str, default: Any = None) -> Any:
        row = self._cache().get(key)
        return default if row is None else row.value

    def __contains__(self, key: object) -> bool:
        return key in self._cache()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._cache()))

    def __len__(self) -> int:
        return len(self._cache())

    def set(
        self,
        key: str,
        value: Any,
        *,
        config_type: str | ConfigType | None = None,
        is_sensitive: bool | None = None,
        description: str | None = None,
    ) -> None:
        """Validate and store ``value`` under ``key``.

        An existing key keeps its type; a new key needs ``config_type``. The
        value must parse as the type and pass every plugin's
        ``validate_config``; otherwise :class:`ValidationError`, and nothing is stored.
        """
        agent, model = self._agent, self._agent.store.models.AgentConfig
        if not isinstance(key, str) or not key or len(key) > 255:
            raise ValidationError("config_key", key, "must be a non-empty string of at most 255 characters")
        kind = config_type.value if isinstance(config_type, ConfigType) else config_type
        with write_transaction(agent.store.database):
            current = model.get_or_none((model.agent == agent.id) & (model.config_key == key))
            if current is not None:
                if kind is not None and kind != current.config_type:
                    raise ValidationError(
                        "config_type",
                        kind,
                        f"{key!r} is stored as {current.config_type}; an existing key keeps its type",
                    )
                kind = current.config_type
                sensitive = current.is_sensitive if is_sensitive is None else bool(is_sensitive)
            elif kind is None:
                raise ValidationError("config_type", None, f"required for the new key {key!r}")
            else:
                sensitive = bool(is_sensitive)
            text = format_config_value(kind, value, key=key, sensitive=sensitive)
            agent.store.plugins.check_config(
                agent.type, key, parse_config_value(kind, text, key=key, sensitive=sensitive), sensitive=sensitive
            )
            now = utcnow()
            update = {model.config_value: text, model.is_sensitive: sensitive, model.updated_at: now}
            if description is not None:
                update[model.description] = description
            (
                model.insert(
                    agent=agent.id,
                    config_key=key,
                    config_value=text,
                    config_type=kind,
                    description=description,
                    is_sensitive=sensitive,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict(conflict_target=[model.agent, model.config_key], update=update)
                .execute()
            )
        self._rows = None

    def __repr__(self) -> str:
        shown = ", ".join(repr(row) for row in self._cache().values())
        return f"<ConfigView {self._agent.name}: [{shown}]>"
