"""A plugin shipped as its own distribution (tests/example_plugin) works end to end.

It must be installed first: ``pip install ./tests/example_plugin``. Its own
tests run in a separate pytest process, with only the fixtures that
optistate installs through the ``pytest11`` entry point.
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from optistate import Registry

EXAMPLE = Path(__file__).parent / "example_plugin"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    try:
        metadata.distribution("optistate-example")
    except metadata.PackageNotFoundError:
        pytest.fail(f"the example plugin is not installed; run: {sys.executable} -m pip install {EXAMPLE}")


def test_a_fresh_registry_discovers_it():
    registry = Registry()
    kind = registry.agent_type("example")
    assert kind.plugin == "example"
    assert [(c.key, c.config_value, c.sensitive) for c in kind.configs] == [
        ("max_pages", "100", False),
        ("api_token", "change-me", True),
    ]
    row = next(row for row in registry.describe() if row["name"] == "example")
    assert (row["distribution"], row["version"], row["error"]) == ("optistate-example", "0.1.0", None)
    assert row["hooks"] == ["register_agent_types", "validate_config"]


def test_its_own_tests_pass_with_the_pytest_fixtures():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        cwd=EXAMPLE,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
