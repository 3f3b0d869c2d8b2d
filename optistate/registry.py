"""The plugin registry: which plugins are loaded, and the agent types they register.

Each :class:`~optistate.Store` owns one :class:`Registry`; there is no global
one. A registry loads the ``optistate`` entry points the first time it is
used, once, and collects agent types the first time they are asked for.
A plugin that fails (to import, in a hook, or with a default core refuses) is
recorded in :attr:`Registry.errors` under its name and does not stop the others.

What a plugin declares, and its validation, is in :mod:`optistate.defaults`.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import pluggy

from . import defaults, hookspecs
from .defaults import AgentType, Capability, Config
from .errors import NotFoundError, PluginError, UnknownAgentType, ValidationError, keeps_secrets

__all__ = ["BLOCK_ENV_VAR", "ENTRY_POINT_GROUP", "Registry"]

ENTRY_POINT_GROUP = "optistate"
BLOCK_ENV_VAR = "OPTISTATE_BLOCK_PLUGINS"
HOOKS = tuple(name for name, spec in vars(hookspecs).items() if hasattr(spec, f"{ENTRY_POINT_GROUP}_spec"))
NOTIFICATIONS = ("agent_started", "agent_stopped")
# What a plugin may raise and be reported for: anything but KeyboardInterrupt, so that
# sys.exit() in a plugin's import or hook cannot end the host.
PLUGIN_FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit, GeneratorExit)

log = logging.getLogger("optistate")


def _failure(plugin: str, doing: str, exc: BaseException, *, sensitive: bool = False) -> PluginError:
    """A PluginError for ``exc``, e.g. ``"validate_config raised ValueError: ..."``.

    With ``sensitive``, the exception's message (which may hold the value) is left out.
    """
    if isinstance(exc, PluginError) and exc.plugin == plugin:
        return exc
    detail = "" if sensitive else f": {exc}"
    error = PluginError(plugin, f"{doing} {type(exc).__name__}{detail}")
    error.sensitive = sensitive
    if not sensitive:
        error.__cause__ = exc
    return error


def _args(impl: pluggy.HookImpl, **kwargs: Any) -> list[Any]:
    """The arguments ``impl`` asks for, in its order, as pluggy passes them."""
    return [kwargs[name] for name in impl.argnames]


class Registry:
    """The plugins of one store, and the agent types they register.

    :param entry_points: load the ``optistate`` entry points on first use. With
        False, only plugins passed to :meth:`register` are used.
    """

    def __init__(self, *, entry_points: bool = True):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._entry_points = entry_points
        self._loaded = False
        self._lock = threading.RLock()
        self._load_errors: dict[str, PluginError] = {}
        self._collected: _Collected | None = None

    def __repr__(self) -> str:
        return f"<Registry plugins={sorted(self._names())}>"

    @property
    def hook(self) -> pluggy.HookRelay:
        """``pm.hook``, after loading the entry points."""
        self.load()
        return self.pm.hook

    @property
    def errors(self) -> dict[str, PluginError]:
        """Each failed plugin's error, by plugin name: failed to import, raised in
        ``register_agent_types``, registered a bad default, or claimed a type
        another plugin registers differently. Reading it loads and collects."""
        collected = self._collect()  # loads first
        return {**self._load_errors, **collected.errors}

    def load(self) -> None:
        """Block the plugins named in ``$OPTISTATE_BLOCK_PLUGINS`` and load the entry points, once."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for name in os.environ.get(BLOCK_ENV_VAR, "").split(","):
                if name.strip():
                    self.pm.set_blocked(name.strip())
            if not self._entry_points:
                return
            for name in dict.fromkeys(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)):
                try:
                    if self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name):
                        self._verify(name, self.pm.get_plugin(name))
                except PLUGIN_FAILURES as exc:  # a plugin's import can fail any way; record it, load the others
                    error = _failure(name, "failed to load:", exc)
                    self._load_errors[name] = error
                    log.warning("%s", error)

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register ``plugin`` (a module, class or object with ``@hookimpl`` functions) and return its name.

        :param name: defaults to the plugin's ``__name__``, else its class name.
        :raises PluginError: the name is taken or blocked, or a hook is unknown
            or does not match its spec; nothing is then registered.
        """
        self.load()
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        with self._lock:
            try:
                registered = self.pm.register(plugin, name)
            except ValueError:  # pluggy's messages show the new object under the new name, as if registered
                taken = self.pm.get_plugin(name)
                if taken is not None:
                    raise PluginError(name, f"Plugin name already registered, to {taken!r}") from None
                again = f"already registered under this name; not registered again as {name!r}"
                raise PluginError(self.pm.get_name(plugin) or name, again) from None
            except pluggy.PluginValidationError as exc:  # a hook's arguments do not match its spec
                raise PluginError(name, "; ".join(str(exc).splitlines())) from None
            if registered is None:
                raise PluginError(name, f"is blocked by ${BLOCK_ENV_VAR}")
            self._verify(name, plugin)
            self._collected = None
        return name

    def _verify(self, name: str, plugin: object) -> None:
        """Refuse unknown hook names and hook wrappers, unregistering ``plugin``."""
        try:
            self.pm.check_pending()
            for caller in self.pm.get_hookcallers(plugin) or ():
                if any(i.plugin is plugin and (i.wrapper or i.hookwrapper) for i in caller.get_hookimpls()):
                    raise pluggy.PluginValidationError(plugin, f"{caller.name}: hook wrappers are not supported")
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            raise PluginError(name, f"{exc}; optistate's hooks are {', '.join(HOOKS)}") from None

    def unregister(self, plugin_or_name: object) -> None:
        """Remove a plugin, by object or by name; agent types are collected again when next needed.

        :raises NotFoundError: no such plugin is registered.
        """
        self.load()
        with self._lock:
            if isinstance(plugin_or_name, str):
                removed = self.pm.unregister(name=plugin_or_name)
            else:
                removed = self.pm.unregister(plugin_or_name) if self.pm.is_registered(plugin_or_name) else None
            if removed is None:
                raise NotFoundError("plugin", plugin_or_name, f"registered plugins: {', '.join(sorted(self._names()))}")
            self._collected = None

    def _names(self) -> list[str]:
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is not None]

    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        """``hook``'s implementations in pluggy's call order: last registered first."""
        return list(reversed(getattr(self.hook, hook).get_hookimpls()))

    def _collect(self) -> _Collected:
        with self._lock:
            if self._collected is None:
                self._collected = _Collected(self._impls("register_agent_types"))
            return self._collected

    def agent_types(self) -> dict[str, AgentType]:
        """Every usable agent type by name, collected from the plugins once and cached."""
        return dict(sorted(self._collect().types.items()))

    def agent_type(self, name: str) -> AgentType:
        """The agent type ``name``.

        :raises UnknownAgentType: no loaded plugin registers it.
        :raises PluginError: plugins register it with conflicting defaults.
        """
        collected = self._collect()
        if name in collected.unusable:
            raise collected.unusable[name].with_traceback(None)
        if name not in collected.types:
            raise UnknownAgentType(name, collected.types)
        return collected.types[name]

    @keeps_secrets
    def check_config(self, agent_type: str, key: str, value: Any, *, sensitive: bool = False) -> None:
        """Ask every ``validate_config`` implementation about ``value``, last registered first.

        :raises ValidationError: the first refusal, with its reason.
        :raises PluginError: an implementation raised or returned something other than a str or None.
        """
        for impl in self._impls("validate_config"):
            args = _args(impl, agent_type=agent_type, key=key, value=value)
            try:
                reason = impl.function(*args)
            except PLUGIN_FAILURES as exc:  # any failure in a plugin's check is reported as that plugin's
                raise _failure(impl.plugin_name, "validate_config raised", exc, sensitive=sensitive) from None
            if reason is None:
                continue
            if not isinstance(reason, str):
                message = f"validate_config returned {type(reason).__name__}; expected a reason string or None"
                raise PluginError(impl.plugin_name, message)
            raise ValidationError(key, value, reason, sensitive=sensitive)

    def notify(self, hook_name: str, **kwargs: Any) -> list[PluginError]:
        """Call ``agent_started`` or ``agent_stopped`` on every plugin; return and log the failures."""
        if hook_name not in NOTIFICATIONS:
            raise ValidationError("hook_name", hook_name, f"must be one of {', '.join(NOTIFICATIONS)}")
        failures = []
        for impl in self._impls(hook_name):
            args = _args(impl, **kwargs)
            try:
                impl.function(*args)
            except PLUGIN_FAILURES as exc:  # one plugin's failure must not stop the others or the caller
                failures.append(_failure(impl.plugin_name, f"{hook_name} raised", exc))
                log.warning("%s", failures[-1])
        return failures

    def describe(self) -> list[dict[str, Any]]:
        """One dict per plugin, by name, for ``optistate plugins``: ``name``, ``distribution``,
        ``version``, ``hooks``, ``agent_types`` and ``error`` (a string, or None)."""
        errors, collected = self.errors, self._collect()
        dists = {self.pm.get_name(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        rows = []
        for name in sorted({*self._names(), *errors}):
            plugin, dist = self.pm.get_plugin(name), dists.get(name)
            hooks = self.pm.get_hookcallers(plugin) if plugin is not None else None
            rows.append(
                {
                    "name": name,
                    "distribution": dist.project_name if dist else None,
                    "version": dist.version if dist else None,
                    "hooks": sorted(c.name for c in hooks or ()),
                    "agent_types": sorted(collected.by_plugin.get(name, ())),
                    "error": str(errors[name]) if name in errors else None,
                }
            )
        return rows


class _Collected:
    """The result of calling every ``register_agent_types`` implementation once."""

    def __init__(self, impls: Iterable[pluggy.HookImpl]):
        self.types: dict[str, AgentType] = {}
        self.unusable: dict[str, PluginError] = {}
        self.errors: dict[str, PluginError] = {}
        self.by_plugin: dict[str, list[str]] = {}
        for impl in impls:
            found: list[AgentType] = []
            args = _args(impl, register=_register_callback(impl.plugin_name, found))
            try:
                impl.function(*args)
            except PLUGIN_FAILURES as exc:  # a plugin's bug or a refused default: record it, keep the others
                self.errors[impl.plugin_name] = _failure(impl.plugin_name, "register_agent_types raised", exc)
                log.warning("%s", self.errors[impl.plugin_name])
                continue
            for declared in found:
                self._add(declared)

    def _add(self, agent_type: AgentType) -> None:
        self.by_plugin.setdefault(agent_type.plugin, []).append(agent_type.name)
        first = self.types.get(agent_type.name)
        if agent_type.name in self.unusable or (first is not None and first.same_defaults(agent_type)):
            return
        if first is None:
            self.types[agent_type.name] = agent_type
            return
        error = PluginError(
            agent_type.plugin,
            f"agent type {agent_type.name!r} is also registered by plugin {first.plugin!r} with different defaults;"
            f" neither is used until one is removed or blocked (${BLOCK_ENV_VAR})",
        )
        del self.types[agent_type.name]
        self.unusable[agent_type.name] = error
        self.errors.setdefault(agent_type.plugin, error)
        log.warning("%s", error)


def _register_callback(plugin: str, found: list[AgentType]) -> Callable[..., None]:
    def register(name: str, configs: Iterable[Config] = (), capabilities: Iterable[Capability] = ()) -> None:
        """Register the agent type ``name`` with its default configs and capabilities."""
        found.append(defaults.agent_type(plugin, name, configs, capabilities))

    return register
