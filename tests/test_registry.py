"""The plugin registry on its own: validation, isolation of failing plugins, loading, blocking.

Plugins here are plain objects registered in code; entry-point behaviour uses
real distributions written onto ``sys.path`` (a ``.dist-info`` folder and a module).
"""
from __future__ import annotations

import inspect
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import optistate
from optistate import Capability, Config, Registry, hookimpl, hookspecs
from optistate.cli import cli
from optistate.errors import (
    NotFoundError,
    PluginError,
    UnknownAgentType,
    ValidationError,
)
from optistate.registry import BLOCK_ENV_VAR, HOOKS

CONFIGS = [Config("limit", "1000", "number", "A limit"), Config("token", "s3cret", "string", sensitive=True)]
CAPABILITIES = [Capability("scan", "1.0.0", "Scan", {"depth": 2}), Capability("scan", "2.0.0-rc.1", enabled=False)]


def plugin(**hooks: Callable[..., Any]) -> SimpleNamespace:
    """A plugin object whose hook implementations are the given functions."""
    return SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


def types_plugin(name: str = "probe", configs: Any = CONFIGS, capabilities: Any = CAPABILITIES) -> SimpleNamespace:
    """A plugin registering one agent type."""
    return plugin(register_agent_types=lambda register: register(name, configs=configs, capabilities=capabilities))


@pytest.fixture
def registry() -> Registry:
    return Registry(entry_points=False)


@pytest.fixture
def install(tmp_path, monkeypatch) -> Any:
    """``install(dist, {entry_point: module_source})``: a real distribution with ``optistate`` entry points."""
    modules: list[str] = []

    def install(dist: str, plugins: dict[str, str]) -> None:
        info = tmp_path / f"{dist}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        lines = [f"{name} = {dist}_{name}\n" for name in plugins]
        (info / "entry_points.txt").write_text("[optistate]\n" + "".join(lines))
        for name, source in plugins.items():
            (tmp_path / f"{dist}_{name}.py").write_text(source)
            modules.append(f"{dist}_{name}")

    monkeypatch.syspath_prepend(tmp_path)
    yield install
    for module in modules:
        sys.modules.pop(module, None)


GOOD_MODULE = """
from optistate import Config, hookimpl

@hookimpl
def register_agent_types(register):
    register("crawler", configs=[Config("pages", 10, "integer")])
"""


class TestRegistration:
    def test_defaults_are_validated_and_normalised(self, registry):
        name = registry.register(types_plugin(), name="probe-plugin")
        kind = registry.agent_type("probe")
        assert (name, kind.name, kind.plugin) == ("probe-plugin", "probe", "probe-plugin")
        limit, token = kind.configs
        assert (limit.value, limit.config_value, limit.type, limit.description) == (1000, "1000", "number", "A limit")
        assert token.sensitive and "s3cret" not in repr(token)
        assert [(c.name, c.version, c.parameters, c.enabled) for c in kind.capabilities] == [
            ("scan", "1.0.0", {"depth": 2}, True),
            ("scan", "2.0.0-rc.1", {}, False),
        ]

    def test_parameters_are_copied_as_json(self, registry):
        parameters = {"regions": ("us", "eu")}
        registry.register(types_plugin(capabilities=[Capability("scan", "1.0.0", parameters=parameters)]), "p")
        assert registry.agent_type("probe").capabilities[0].parameters == {"regions": ["us", "eu"]}
        parameters["regions"] = ()
        assert registry.agent_type("probe").capabilities[0].parameters == {"regions": ["us", "eu"]}

    @pytest.mark.parametrize(
        "configs, capabilities, reason",
        [
            ([Config("k", 1, "decimal")], [], r"k\.type='decimal': must be one of string, integer"),
            ([Config("k", "many", "integer")], [], "k='many': does not parse as integer"),
            ([Config("k", True, "number")], [], "k=True: must be number"),
            ([Config("k" * 256, 1, "integer")], [], "is longer than 255 characters"),
            ([Config("k", 1, "integer"), Config("k", 2, "integer")], [], "config key='k': is declared twice"),
            ([{"key": "k"}], [], "must hold optistate.Config items"),
            ([], [Capability("scan", "1.0")], r"scan\.version='1\.0': must be a semantic version"),
            ([], [Capability("scan", "1.0.0", parameters={"at": object()})], "is not JSON-serialisable"),
            ([], [Capability("scan", "1.0.0", parameters=["a"])], "must be a mapping"),
            ([], [Capability("scan", "1.0.0")] * 2, r"\('scan', '1\.0\.0'\): is declared twice"),
            (None, [], "not iterable"),
        ],
    )
    def test_a_bad_default_is_a_plugin_error_naming_the_plugin(self, registry, configs, capabilities, reason):
        registry.register(types_plugin(configs=configs, capabilities=capabilities), name="sloppy")
        registry.register(types_plugin("other"), name="fine")
        with pytest.raises(UnknownAgentType, match="registered types: other"):
            registry.agent_type("probe")
        assert list(registry.errors) == ["sloppy"]
        with pytest.raises(PluginError, match=f"plugin 'sloppy': agent type 'probe': .*{reason}"):
            raise registry.errors["sloppy"]

    def test_a_bad_type_name_is_refused(self, registry):
        registry.register(types_plugin("x" * 65), name="long")
        assert "is longer than 64 characters" in str(registry.errors["long"])

    def test_a_bad_sensitive_default_is_not_shown(self, registry):
        registry.register(types_plugin(configs=[Config("pin", "hunter2", "integer", sensitive=True)]), name="p")
        message = str(registry.errors["p"])
        assert "pin=***: does not parse as integer" in message and "hunter2" not in message

    def test_identical_duplicates_are_harmless(self, registry):
        registry.register(types_plugin(), name="one")
        registry.register(types_plugin(configs=CONFIGS[::-1], capabilities=CAPABILITIES[::-1]), name="two")
        assert registry.errors == {}
        assert registry.agent_type("probe").configs[0].key in ("limit", "token")
        assert {row["name"]: row["agent_types"] for row in registry.describe()} == {"one": ["probe"], "two": ["probe"]}

    def test_conflicting_duplicates_make_the_type_unusable(self, registry):
        registry.register(types_plugin(), name="one")
        registry.register(types_plugin(configs=[Config("limit", 5, "number")]), name="two")
        registry.register(types_plugin("other"), name="three")
        # pluggy's order, last registered first: "two" claims the type, then "one" conflicts.
        message = "plugin 'one': agent type 'probe' is also registered by plugin 'two' with different defaults"
        with pytest.raises(PluginError, match=message):
            registry.agent_type("probe")
        assert list(registry.errors) == ["one"]
        assert registry.agent_type("other").plugin == "three"
        registry.unregister("two")
        assert registry.agent_type("probe").plugin == "one" and registry.errors == {}

    def test_unknown_hook_names_are_refused_and_nothing_is_registered(self, registry):
        typo = plugin(register_agent_type=lambda register: None)
        message = r"plugin 'typo': unknown hook 'register_agent_type'.*hooks are register_agent_types"
        with pytest.raises(PluginError, match=message):
            registry.register(typo, name="typo")
        assert not registry.pm.has_plugin("typo") and registry.describe() == []
        assert registry.register(types_plugin(), name="typo") == "typo"

    def test_hook_arguments_must_match_the_spec(self, registry):
        wrong = plugin(validate_config=lambda agent_type, key, value, extra: None)
        with pytest.raises(PluginError, match=r"plugin 'wrong': .*\{'extra'\} are declared in the hookimpl"):
            registry.register(wrong, name="wrong")
        assert not registry.pm.has_plugin("wrong")

    def test_hook_wrappers_are_refused(self, registry):
        def validate_config(agent_type, key, value):
            yield

        wrapper = SimpleNamespace(validate_config=hookimpl(wrapper=True)(validate_config))
        with pytest.raises(PluginError, match="validate_config: hook wrappers are not supported"):
            registry.register(wrapper, name="wrapper")
        assert not registry.pm.has_plugin("wrapper")

    def test_a_name_is_registered_once(self, registry):
        registry.register(types_plugin(), name="probe")
        with pytest.raises(PluginError, match="plugin 'probe': Plugin name already registered"):
            registry.register(types_plugin(), name="probe")

    def test_default_name_and_unregister(self, registry):
        class Audit:
            pass

        assert registry.register(Audit) == "Audit"
        with pytest.raises(PluginError, match="plugin 'Audit': Plugin name already registered"):
            registry.register(Audit())  # an instance defaults to its class name
        assert registry.register(Audit(), name="audit-2") == "audit-2"
        with pytest.raises(NotFoundError, match="plugin 'nope' not found; registered plugins: Audit, audit-2"):
            registry.unregister("nope")
        registry.unregister(Audit)
        registry.unregister("audit-2")
        assert registry.pm.get_plugins() == set()

    def test_a_raising_hook_is_reported_with_its_name_and_others_still_work(self, registry, caplog):
        def broken(register):
            register("half", configs=[Config("n", 1, "integer")])
            raise RuntimeError("boom")

        registry.register(plugin(register_agent_types=broken), name="broken")
        registry.register(types_plugin(), name="fine")
        with caplog.at_level(logging.WARNING, logger="optistate"):
            assert list(registry.agent_types()) == ["probe"]
        with pytest.raises(PluginError, match="plugin 'broken': register_agent_types raised RuntimeError: boom"):
            raise registry.errors["broken"]
        assert "plugin 'broken'" in caplog.text
        with pytest.raises(UnknownAgentType):  # nothing of a failing plugin is kept
            registry.agent_type("half")

    def test_registries_are_independent(self, registry):
        registry.register(types_plugin(), name="probe")
        other = Registry(entry_points=False)
        assert other.agent_types() == {} and list(registry.agent_types()) == ["probe"]


class TestLoading:
    def test_entry_points_load_lazily_and_once(self, monkeypatch):
        registry = Registry()
        assert registry.pm.get_plugins() == set()  # nothing happens until first use
        calls = []
        registry.register(plugin(register_agent_types=lambda register: calls.append(1)), name="counter")
        assert registry.pm.has_plugin("cost")  # register() loads first, so names clash now, not later
        registry.agent_types(), registry.agent_types(), registry.agent_type("cost")
        assert calls == [1]
        monkeypatch.setenv(BLOCK_ENV_VAR, "cost")
        registry.load()
        assert registry.pm.has_plugin("cost")

    def test_in_code_registration_collects_again(self, registry):
        registry.agent_types()
        registry.register(types_plugin(), name="late")
        assert list(registry.agent_types()) == ["probe"]

    def test_hook_property_loads(self):
        registry = Registry()
        assert registry.hook.register_agent_types.get_hookimpls()
        assert registry.pm.has_plugin("resource")

    def test_a_plugin_that_fails_to_import_is_reported_and_others_load(self, install, caplog):
        install("acme", {"broken": "import no_such_module_anywhere\n", "crawler": GOOD_MODULE})
        registry = Registry()
        with caplog.at_level(logging.WARNING, logger="optistate"):
            registry.load()
        assert "plugin 'broken': failed to load: ModuleNotFoundError" in caplog.text
        assert registry.agent_type("crawler").plugin == "crawler" and registry.agent_type("cost")
        message = "plugin 'broken': failed to load: ModuleNotFoundError: No module named 'no_such"
        with pytest.raises(PluginError, match=message):
            raise registry.errors["broken"]
        rows = {row["name"]: row for row in registry.describe()}
        assert rows["broken"] == {
            "name": "broken",
            "distribution": None,
            "version": None,
            "hooks": [],
            "agent_types": [],
            "error": str(registry.errors["broken"]),
        }
        assert rows["crawler"] == {
            "name": "crawler",
            "distribution": "acme",
            "version": "1.2.3",
            "hooks": ["register_agent_types"],
            "agent_types": ["crawler"],
            "error": None,
        }

    def test_an_entry_point_with_an_unknown_hook_is_reported(self, install):
        install("acme", {"typo": "from optistate import hookimpl\n\n@hookimpl\ndef agent_start(agent):\n    pass\n"})
        registry = Registry()
        assert "unknown hook 'agent_start'" in str(registry.errors["typo"])
        assert not registry.pm.has_plugin("typo")

    def test_sys_exit_in_a_plugin_never_ends_the_host(self, install, sqlite_url):
        exits = {
            "at_import": "import sys\nsys.exit(3)\n",
            "in_register": "import sys\nfrom optistate import hookimpl\n\n"
                           "@hookimpl\ndef register_agent_types(register):\n    sys.exit(4)\n",
            "in_hooks": "import sys\nfrom optistate import hookimpl, Config\n\n"
                        "@hookimpl\ndef register_agent_types(register):\n"
                        "    register('exiter', configs=[Config('k', 1, 'integer')])\n\n"
                        "@hookimpl\ndef validate_config(agent_type, key, value):\n    sys.exit(5)\n\n"
                        "@hookimpl\ndef agent_started(agent):\n    sys.exit(6)\n",
        }
        install("quitters", exits)
        registry = Registry()
        assert "failed to load: SystemExit: 3" in str(registry.errors["at_import"])
        assert "register_agent_types raised SystemExit: 4" in str(registry.errors["in_register"])
        assert {"cost", "exiter"} <= set(registry.agent_types())
        with optistate.connect(sqlite_url, plugins=registry) as store:
            agent = store.start_agent("exiter")  # agent_started's exit is logged, the start stands
            with pytest.raises(PluginError, match="plugin 'in_hooks': validate_config raised SystemExit"):
                agent.config.set("k", 2)
            assert agent.config["k"] == 1
        result = CliRunner().invoke(cli, ["--database", sqlite_url, "plugins", "--json"])
        assert result.exit_code == 0, result.output
        errors = {row["name"]: row["error"] for row in json.loads(result.output)}
        assert "SystemExit: 3" in errors["at_import"] and errors["cost"] is None

    def test_plugins_can_be_blocked_by_environment_variable(self, install, monkeypatch):
        install("acme", {"crawler": GOOD_MODULE})
        monkeypatch.setenv(BLOCK_ENV_VAR, " cost,crawler ,")
        registry = Registry()
        assert {"application", "performance", "resource"} <= set(registry.agent_types())
        assert {"cost", "crawler"}.isdisjoint(registry.agent_types())
        assert registry.pm.is_blocked("cost") and registry.errors == {}
        with pytest.raises(PluginError, match=f"plugin 'crawler': is blocked by \\${BLOCK_ENV_VAR}"):
            registry.register(types_plugin(), name="crawler")

    def test_blocking_applies_without_entry_points(self, monkeypatch):
        monkeypatch.setenv(BLOCK_ENV_VAR, "probe")
        with pytest.raises(PluginError, match="is blocked"):
            Registry(entry_points=False).register(types_plugin(), name="probe")


def refuse(reason: str | None) -> SimpleNamespace:
    return plugin(validate_config=lambda agent_type, key, value: reason if key == "limit" else None)


class TestCheckConfig:
    def test_accepts_when_no_plugin_refuses(self, registry):
        registry.register(refuse(None), name="lenient")
        assert registry.check_config("probe", "limit", 5) is None

    def test_the_last_registered_refusal_wins(self, registry):
        registry.register(refuse("first says no"), name="first")
        registry.register(refuse("second says no"), name="second")
        with pytest.raises(ValidationError, match="limit=5: second says no"):
            registry.check_config("probe", "limit", 5)

    def test_plugins_see_only_the_arguments_they_ask_for(self, registry):
        registry.register(plugin(validate_config=lambda value: "odd" if value % 2 else None), name="even")
        with pytest.raises(ValidationError, match="n=3: odd"):
            registry.check_config("probe", "n", 3)

    def test_sensitive_values_are_masked(self, registry):
        registry.register(refuse("too short"), name="strict")
        with pytest.raises(ValidationError, match=r"limit=\*\*\*: too short") as raised:
            registry.check_config("probe", "limit", "hunter2", sensitive=True)
        assert "hunter2" not in str(raised.value) + repr(raised.value)

    def test_a_raising_plugin_is_a_plugin_error_naming_it(self, registry):
        def validate_config(key, value):
            raise TypeError(f"cannot compare {value}")

        registry.register(plugin(validate_config=validate_config), name="clumsy")
        with pytest.raises(PluginError, match="plugin 'clumsy': validate_config raised TypeError: cannot compare 7"):
            registry.check_config("probe", "limit", 7)
        with pytest.raises(PluginError, match=r"validate_config raised TypeError$") as raised:
            registry.check_config("probe", "limit", "hunter2", sensitive=True)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__

    def test_a_reason_must_be_a_string(self, registry):
        registry.register(plugin(validate_config=lambda value: value > 0), name="boolean")
        with pytest.raises(PluginError, match="plugin 'boolean': validate_config returned bool; expected a reason"):
            registry.check_config("probe", "limit", 5)


class TestNotify:
    def test_a_failing_plugin_is_returned_logged_and_others_still_run(self, registry, caplog):
        seen = []
        registry.register(plugin(agent_started=lambda agent: seen.append(agent)), name="listener")
        registry.register(plugin(agent_started=lambda agent: 1 / 0), name="faulty")
        with caplog.at_level(logging.WARNING, logger="optistate"):
            (error,) = registry.notify("agent_started", agent="a1")
        assert seen == ["a1"]
        assert str(error) == "plugin 'faulty': agent_started raised ZeroDivisionError: division by zero"
        assert isinstance(error.__cause__, ZeroDivisionError) and str(error) in caplog.text
        assert registry.notify("agent_stopped", agent="a1") == []

    def test_only_notification_hooks(self, registry):
        message = "hook_name='validate_config': must be one of agent_started, agent_stopped"
        with pytest.raises(ValidationError, match=message):
            registry.notify("validate_config", agent_type="t", key="k", value=1)


def test_describe_lists_in_code_plugins(registry):
    mine = plugin(agent_stopped=lambda agent: None, register_agent_types=lambda register: register("x"))
    registry.register(mine, "mine")
    assert registry.describe() == [
        {
            "name": "mine",
            "distribution": None,
            "version": None,
            "hooks": ["agent_stopped", "register_agent_types"],
            "agent_types": ["x"],
            "error": None,
        }
    ]


def test_plugin_authors_import_from_optistate():
    assert {"hookimpl", "Config", "Capability"} <= set(optistate.__all__)


class Lifecycle:
    """A plugin registered in code: one agent type, and it records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    @hookimpl
    def register_agent_types(self, register):
        register("probe", configs=CONFIGS, capabilities=CAPABILITIES)

    @hookimpl
    def validate_config(self, agent_type, key, value):
        return "must be at most 5000" if agent_type == "probe" and key == "limit" and value > 5000 else None

    @hookimpl
    def agent_started(self, agent):
        self.events.append(("started", agent.name))

    @hookimpl
    def agent_stopped(self, agent):
        self.events.append(("stopped", agent.name))


def test_a_plugin_registered_in_code_is_used_by_the_store(db_url, caplog):
    lifecycle = Lifecycle()
    with optistate.connect(db_url) as store:
        store.plugins.register(lifecycle, name="lifecycle")
        store.plugins.register(plugin(agent_started=lambda agent: 1 / 0), name="faulty")
        with caplog.at_level(logging.WARNING, logger="optistate"):
            agent = store.start_agent("probe", name="p1")
        assert "plugin 'faulty': agent_started raised ZeroDivisionError" in caplog.text
        assert (agent.config["limit"], len(agent.capabilities())) == (1000, 2)
        with pytest.raises(ValidationError, match="limit=6000: must be at most 5000"):
            agent.config.set("limit", 6000)
        agent.config.refresh()
        assert agent.config["limit"] == 1000
        agent.stop()
    assert lifecycle.events == [("started", "p1"), ("stopped", "p1")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_signature_is_documented(hook):
    docs = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    arguments = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"### {hook}({arguments})" in docs
