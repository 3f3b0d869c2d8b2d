"""What a plugin declares for an agent type, and core's validation of it.

Plugin authors construct :class:`Config` and :class:`Capability` and pass
them to the ``register`` callback of ``register_agent_types``; core checks and
normalises them into an :class:`AgentType` (:func:`agent_type`) there and then.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PluginError, ValidationError
from .fields import SEMVER, dumps
from .models import ConfigType, format_config_value, parse_config_value

__all__ = ["AgentType", "Capability", "Config", "agent_type"]


@dataclass(frozen=True)
class Config:
    """A default config entry, as a plugin declares it.

    :param value: a Python value or its string form (``1000`` or ``"1000"`` for a number).
    :param type: a :class:`~optistate.models.ConfigType` value, e.g. ``"number"``.
    """

    key: str
    value: Any = field(hash=False)
    type: str
    description: str | None = None
    sensitive: bool = False

    @property
    def config_value(self) -> str:
        """The canonical string stored in ``agent_configs.config_value``."""
        return format_config_value(self.type, self.value, key=self.key, sensitive=self.sensitive)

    def __repr__(self) -> str:
        shown = "'***', sensitive=True" if self.sensitive else repr(self.value)
        return f"Config(key={self.key!r}, type={self.type!r}, value={shown})"


@dataclass(frozen=True)
class Capability:
    """A default capability version, as a plugin declares it. ``parameters`` must be JSON-serialisable."""

    name: str
    version: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    enabled: bool = True


@dataclass(frozen=True)
class AgentType:
    """An agent type with its validated defaults, and the plugin that registered it."""

    name: str
    configs: tuple[Config, ...]
    capabilities: tuple[Capability, ...]
    plugin: str = field(compare=False)

    def same_defaults(self, other: AgentType) -> bool:
        """Whether ``other`` declares the same defaults, in any order."""
        return _defaults(self) == _defaults(other)


def _capability_key(capability: Capability) -> tuple[str, str]:
    return capability.name, capability.version


def _defaults(kind: AgentType) -> tuple[list[Config], list[Capability]]:
    return sorted(kind.configs, key=lambda c: c.key), sorted(kind.capabilities, key=_capability_key)


def _text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _config(item: Any) -> Config:
    if not isinstance(item, Config):
        raise ValidationError("configs", item, "must hold optistate.Config items")
    if not _text(item.key, 255):
        raise ValidationError("config key", item.key, "must be a non-empty string of at most 255 characters")
    if item.description is not None and not isinstance(item.description, str):
        raise ValidationError(f"{item.key}.description", item.description, "must be a string or None")
    if not isinstance(item.sensitive, bool):
        raise ValidationError(f"{item.key}.sensitive", item.sensitive, "must be True or False")
    try:
        kind = ConfigType(item.type).value
    except ValueError:
        allowed = ", ".join(t.value for t in ConfigType)
        raise ValidationError(f"{item.key}.type", item.type, f"must be one of {allowed}") from None
    text = format_config_value(kind, item.value, key=item.key, sensitive=item.sensitive)
    value = parse_config_value(kind, text, key=item.key, sensitive=item.sensitive)
    return Config(item.key, value, kind, item.description, item.sensitive)


def _capability(item: Any) -> Capability:
    if not isinstance(item, Capability):
        raise ValidationError("capabilities", item, "must hold optistate.Capability items")
    if not _text(item.name, 255):
        raise ValidationError("capability name", item.name, "must be a non-empty string of at most 255 characters")
    if not isinstance(item.version, str) or not SEMVER.match(item.version) or len(item.version) > 64:
        raise ValidationError(f"{item.name}.version", item.version, "must be a semantic version such as 1.2.0")
    if item.description is not None and not isinstance(item.description, str):
        raise ValidationError(f"{item.name}.description", item.description, "must be a string or None")
    if not isinstance(item.enabled, bool):
        raise ValidationError(f"{item.name}.enabled", item.enabled, "must be True or False")
    if not isinstance(item.parameters, Mapping):
        raise ValidationError(f"{item.name}.parameters", item.parameters, "must be a mapping")
    try:
        parameters = json.loads(dumps(dict(item.parameters)))  # a private, JSON-shaped copy
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{item.name}.parameters", item.parameters, f"is not JSON-serialisable ({exc})") from None
    return Capability(item.name, item.version, item.description, parameters, item.enabled)


def _unique(kind: str, keys: Iterable[Any]) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise ValidationError(kind, key, "is declared twice")
        seen.add(key)


def agent_type(plugin: str, name: Any, configs: Iterable[Any] = (), capabilities: Iterable[Any] = ()) -> AgentType:
    """Validate one registration; :class:`PluginError` naming ``plugin`` if core refuses any of it."""
    try:
        if not _text(name, 64):
            raise ValidationError("agent type", name, "must be a non-empty string of at most 64 characters")
        made = AgentType(name, tuple(map(_config, configs)), tuple(map(_capability, capabilities)), plugin)
        _unique("config key", (c.key for c in made.configs))
        _unique("capability", (_capability_key(c) for c in made.capabilities))
    except (ValidationError, TypeError) as exc:
        raise PluginError(plugin, f"agent type {name!r}: {exc}") from None
    return made
