"""The hooks an optistate plugin can implement, and the markers for them.

A plugin is a module or object whose functions carry ``@optistate.hookimpl``
and are named after a spec below. It is found through the ``optistate``
entry-point group, or registered in code with ``store.plugins.register(obj)``.
pluggy calls implementations last-registered first; no hook here depends on
that order except where a spec says so.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

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
    example by ``store.start_agent``), never at import time.

    :param register: call ``register(type_name, configs=[...], capabilities=[...])``
        once per agent type, with :class:`optistate.Config` and
        :class:`optistate.Capability` items. Core validates every default
        there and then; a bad one raises :class:`optistate.errors.PluginError`
        naming the plugin. Two plugins that register one type with
        different defaults is also a ``PluginError``; identical ones are harmless.
    :return: nothing; every implementation is called.
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
    :return: a reason to refuse, e.g. ``"must be 0 to 100"``, or None to accept.
        Every implementation is called; the first refusal (the last-registered
        plugin's) becomes an :class:`optistate.errors.ValidationError`.
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
    :return: nothing.
    """
