"""pytest fixtures for testing optistate plugins, installed with optistate (``pytest11``).

::

    def test_my_agent_type(optistate_store, optistate_plugin):
        optistate_plugin(my_plugin)                 # registered for this test only
        agent = optistate_store.start_agent("my_type")
        assert agent.config["my_key"] == 1

Installed plugins (the ``optistate`` entry points) are loaded as usual, so an
installed plugin is registered already, under its entry-point name. pytest
itself is not a dependency of optistate: ``pip install 'optistate[test]'``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from optistate import Store

__all__ = ["optistate_plugin", "optistate_store"]


@pytest.fixture
def optistate_store(tmp_path: Path) -> Iterator[Store]:
    """A store on a new, migrated SQLite file, closed after the test."""
    import optistate  # here, not at import: every pytest run in the environment imports this module

    with optistate.connect(f"sqlite:///{tmp_path / 'optistate.db'}") as store:
        yield store


@pytest.fixture
def optistate_plugin(optistate_store: Store) -> Iterator[Callable[..., str]]:
    """``register(plugin, name=None) -> name``: add a plugin to ``optistate_store`` for this test."""
    names: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        names.append(optistate_store.plugins.register(plugin, name))
        return names[-1]

    try:
        yield register
    finally:
        for name in reversed(names):
            if optistate_store.plugins.pm.has_plugin(name):
                optistate_store.plugins.unregister(name)
