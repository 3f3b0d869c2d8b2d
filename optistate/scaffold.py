"""``optistate plugin new NAME``: write a complete, installable plugin distribution.

``new_plugin("crawler", "src")`` writes ``src/crawler/`` holding the
distribution ``optistate-crawler``: ``pyproject.toml``, ``setup.cfg`` (the
``optistate`` entry point ``crawler = optistate_crawler``), the module
``optistate_crawler.py`` registering the agent type ``crawler``, and
``tests/test_crawler.py`` using the fixtures optistate installs for pytest.
Its tests pass right after ``pip install ./crawler`` and ``pytest crawler``.

``pyproject.toml`` and ``setup.cfg`` are, for ``crawler``, the ones in
``docs/plugins.md`` (a test holds them equal).
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from string import Template

from .errors import ValidationError
from .registry import Registry

__all__ = ["NAME_PATTERN", "new_plugin", "plugin_files"]

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
MAX_NAME = 64  # agents.type holds at most 64 characters

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"
"""

SETUP_CFG = """\
[metadata]
name = optistate-$name
version = 0.1.0
description = The $name agent type for optistate.

[options]
py_modules = $module
# Resolves only where optistate is installed already: install it first.
install_requires =
    optistate

[options.extras_require]
test =
    optistate[test]

[options.entry_points]
optistate =
    $name = $module

# Keeps pytest's rootdir here, whatever directory pytest starts from.
[tool:pytest]
testpaths = tests
"""

MODULE = '''\
"""The ``$name`` agent type: an optistate plugin, found through the ``optistate`` entry point in setup.cfg."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optistate import Capability, Config, hookimpl


@hookimpl
def register_agent_types(register: Callable[..., None]) -> None:
    register(
        "$name",
        configs=[
            Config("batch_size", 100, "integer", "Items per run"),
            Config("api_token", "change-me", "string", "Token for the service the agent calls", sensitive=True),
        ],
        capabilities=[Capability("run", "1.0.0", "What a $name agent does", {"retries": 3})],
    )


@hookimpl
def validate_config(agent_type: str, key: str, value: Any) -> str | None:
    """A reason string refuses the value; None accepts it. Every type's keys come here."""
    if agent_type == "$name" and key == "batch_size" and not 1 <= value <= 10_000:
        return "must be from 1 to 10000"
    return None
'''

TEST = '''\
"""The $name agent type, with optistate's pytest fixtures (pip install 'optistate[test]')."""
import pytest
from optistate.errors import ValidationError


def test_defaults(optistate_store):
    agent = optistate_store.start_agent("$name")
    assert (agent.config["batch_size"], agent.capability("run").capability_version) == (100, "1.0.0")


def test_batch_size_is_checked(optistate_store):
    agent = optistate_store.start_agent("$name")
    with pytest.raises(ValidationError, match="batch_size=0: must be from 1 to 10000"):
        agent.config.set("batch_size", 0)
'''


def plugin_files(name: str) -> dict[str, str]:
    """The text of each file of the distribution for ``name``, by path relative to its folder."""
    module = "optistate_" + name.replace("-", "_")
    fill = {"name": name, "module": module}
    return {
        "pyproject.toml": PYPROJECT,
        "setup.cfg": Template(SETUP_CFG).substitute(fill),
        f"{module}.py": Template(MODULE).substitute(fill),
        f"tests/test_{name.replace('-', '_')}.py": Template(TEST).substitute(fill),
    }


def _check(name: str, parent: Path) -> Path:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or len(name) > MAX_NAME:
        raise ValidationError(
            "name", name, f"must be lowercase letters and digits, joined by single '-' or '_', starting with a letter,"
            f" at most {MAX_NAME} characters (e.g. crawler, web-crawler)"
        )
    for row in Registry().describe():  # a name taken here would make the new type unusable, and its tests fail
        if name == row["name"] or name in row["agent_types"]:
            owner = f"{row['distribution']} {row['version']}" if row["distribution"] else "registered in code"
            raise ValidationError("name", name, f"is taken by the installed plugin {row['name']!r} ({owner})")
    if parent.exists() and not parent.is_dir():
        raise ValidationError("dir", str(parent), "is not a directory")
    target = parent / name
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise ValidationError("target", str(target), "exists and is not empty; choose another NAME or --dir")
    return target


def new_plugin(name: str, directory: str | os.PathLike[str] = ".") -> list[Path]:
    """Write the distribution ``optistate-NAME`` into ``directory/NAME``; return the files written.

    The files are written into a temporary folder beside the target and
    renamed into place, so a failure leaves nothing behind. ``directory`` is
    created if missing.

    :raises ValidationError: ``name`` is malformed or taken by an installed
        plugin or agent type, ``directory`` is a file, or ``directory/NAME``
        exists and is not an empty directory. Nothing is written.
    """
    parent = Path(directory)
    target = _check(name, parent)
    files = plugin_files(name)
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{name}-{uuid.uuid4().hex[:12]}"
    try:
        for relative, text in files.items():
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_text(text, encoding="utf-8")
        os.replace(staging, target)  # an empty target directory is replaced
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [target / relative for relative in files]
