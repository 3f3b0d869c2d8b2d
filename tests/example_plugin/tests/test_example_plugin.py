"""The example plugin's own tests: only the fixtures optistate installs for pytest."""
import pytest

from optistate import hookimpl
from optistate.errors import ValidationError


def test_defaults_are_stored(optistate_store):
    agent = optistate_store.start_agent("example")
    assert agent.config["max_pages"] == 100
    assert [(c.capability_version, c.is_enabled) for c in agent.capabilities()] == [
        ("1.0.0", True),
        ("2.0.0-beta.1", False),
    ]


def test_max_pages_is_checked(optistate_store):
    agent = optistate_store.start_agent("example")
    with pytest.raises(ValidationError, match="must be from 1 to 10000"):
        agent.config.set("max_pages", 0)
    assert agent.config["max_pages"] == 100


class Strict:
    @staticmethod
    @hookimpl
    def validate_config(agent_type, key, value):
        return "read-only in this test" if key == "max_pages" else None


def test_a_plugin_registered_for_one_test(optistate_store, optistate_plugin):
    optistate_plugin(Strict)
    agent = optistate_store.start_agent("example")
    with pytest.raises(ValidationError, match="read-only in this test"):
        agent.config.set("max_pages", 50)
