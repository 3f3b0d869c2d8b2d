"""The hooks an optistate plugin can implement, and the markers for them.

A plugin is a module or object whose functions carry ``@optistate.hookimpl``
and are named after a spec below. It is found through the ``optistate``
entry-point group, or registered in code with ``store.plugins.register(obj)``.
optistate calls each implementation on its own, last-registered first (pluggy's
order), so one failing plugin is reported by name without stopping the others;
hook wrappers are therefore refused. Only ``validate_config`` depends on the order.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .agent import AgentHandle

__all__ = ["hookimpl", "hookspec", "register_agent_types", "validate_config", "agent_started", "agent_stopped"]

hookspec = pluggy.HookspecMarker("optistate")
hookimpl = pluggy.HookimplMarker("optistate")


@hookspec
def register_agent_types(register: Callable[..., None]) -> None:
    """Register the agent types this plugin provides, with their defaults.

    Called once per registry, the first time agent types are needed (for
    example by ``store.start_agent``), and again after a plugin is registered
    or unregistered in code; never at import time.

    :param register: call ``register(type_name, configs=[...], capabilities=[...])``
        once per agent type, with :class:`optistate.Config` and
        :class:`optistate.Capability` items. Core validates every default
        there and then; a bad one raises :class:`optistate.errors.PluginError`
        naming the plugin. Two plugins that register one type with
        different defaults is also a ``PluginError``, and the type is unusable
        until one is removed; identical ones are harmless.
    :return: nothing; every implementation is called. One that raises is
        recorded in ``Registry.errors`` under its name, and none of its types is used.
    """


@hookspec
def validate_config(agent_type: str, key: str, value: Any) -> str | None:
    """Check a config value before it is stored, for keys the plugin knows.

    Called by ``agent.config.set`` and ``optistate config set`` after the
    value has been parsed as its ``config_type``, and before anything is
    written. Plugins see every type's keys, so check ``agent_type`` first.

    :param agent_type: the agent's type name, e.g. ``"cost"``.
    :param key: the config key being set.
    :param value: the parsed Python value (an ``int`` for an integer config).
    :return: a reason to refuse (a ``str``), e.g. ``"must be 0 to 100"``, or None
        to accept. Implementations are called until the first refusal (the
        last-registered plugin's), which becomes an
        :class:`optistate.errors.ValidationError`. Raising, or returning
        anything else, is a :class:`optistate.errors.PluginError` naming the plugin.
    """


@hookspec
def agent_started(agent: AgentHandle) -> None:
    """Called after ``store.start_agent`` has registered the agent and stored its defaults.

    :param agent: the running agent; its config, state and capabilities are readable.
    :return: nothing. An exception here is reported as a ``PluginError`` naming
        the plugin, after the agent has started.
    """


@hookspec
def agent_stopped(agent: AgentHandle) -> None:
    """Called by ``agent.stop()`` after buffered metrics are flushed and the agent is offline.

    :param agent: the stopped agent.
    :return: nothing. An exception here is reported as a ``PluginError`` naming
        the plugin; the agent is stopped regardless.
    """
