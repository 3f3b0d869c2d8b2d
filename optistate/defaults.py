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

from .errors import MASK, PluginError, ValidationError
from .fields import check_choice, check_json, check_semver, check_text
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
        shown = f"{MASK!r}, sensitive=True" if self.sensitive else repr(self.value)
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


def _defaults(agent_type: AgentType) -> tuple[list[Config], list[Capability]]:
    return sorted(agent_type.configs, key=lambda c: c.key), sorted(agent_type.capabilities, key=_capability_key)


def _common(owner: str, description: Any, flag: str, value: Any) -> None:
    """The checks Config and Capability share: an optional description and a bool flag."""
    if description is not None and not isinstance(description, str):
        raise ValidationError(f"{owner}.description", description, "must be a string or None")
    if not isinstance(value, bool):
        raise ValidationError(f"{owner}.{flag}", value, "must be True or False")


def _config(item: Any) -> Config:
    if not isinstance(item, Config):
        raise ValidationError("configs", item, "must hold optistate.Config items")
    check_text("config key", item.key, 255)
    _common(item.key, item.description, "sensitive", item.sensitive)
    config_type = check_choice(f"{item.key}.type", item.type, ConfigType)
    text = format_config_value(config_type, item.value, key=item.key, sensitive=item.sensitive)
    value = parse_config_value(config_type, text, key=item.key, sensitive=item.sensitive)
    return Config(item.key, value, config_type, item.description, item.sensitive)


def _capability(item: Any) -> Capability:
    if not isinstance(item, Capability):
        raise ValidationError("capabilities", item, "must hold optistate.Capability items")
    check_text("capability name", item.name, 255)
    check_semver(f"{item.name}.version", item.version)
    _common(item.name, item.description, "enabled", item.enabled)
    if not isinstance(item.parameters, Mapping):
        raise ValidationError(f"{item.name}.parameters", item.parameters, "must be a mapping")
    parameters = json.loads(check_json(f"{item.name}.parameters", dict(item.parameters)))  # a private copy
    return Capability(item.name, item.version, item.description, parameters, item.enabled)


def _unique(field: str, keys: Iterable[Any]) -> None:
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            raise ValidationError(field, key, "is declared twice")
        seen.add(key)


def agent_type(plugin: str, name: Any, configs: Iterable[Any] = (), capabilities: Iterable[Any] = ()) -> AgentType:
    """Validate one registration; :class:`PluginError` naming ``plugin`` if core refuses any of it."""
    try:
        check_text("agent type", name, 64)
        made = AgentType(name, tuple(map(_config, configs)), tuple(map(_capability, capabilities)), plugin)
        _unique("config key", (c.key for c in made.configs))
        _unique("capability", (_capability_key(c) for c in made.capabilities))
    except (ValidationError, TypeError) as exc:
        raise PluginError(plugin, f"agent type {name!r}: {exc}") from None
    return made
