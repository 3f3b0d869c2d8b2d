"""The plugin author's way: docs/plugins.md and ``optistate plugin new`` to an installed, tested agent type.

The slow tests build what the docs show, and what the scaffold writes, into
a new venv holding only this checkout (built, not editable) and its
``[test]`` extra, then run the plugin's own tests there with pytest.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

import optistate.plugins.cost
from optistate.cli import cli
from optistate.errors import PluginError, ValidationError
from optistate.scaffold import new_plugin, plugin_files

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "plugins.md"
DOCS_FILES = {"optistate_crawler.py", "pyproject.toml", "setup.cfg", "tests/test_crawler.py"}
MAX_TEST_LINES = 15


def docs_files() -> dict[str, str]:
    """Each fenced block of docs/plugins.md introduced by a line `` `path`: ``, by that path."""
    found = re.finditer(r"^`(?P<path>[\w./-]+)`:\n\n```\w*\n(?P<body>.*?)^```$", DOCS.read_text(), re.M | re.S)
    return {m["path"]: m["body"] for m in found}


def load(path: Path, name: str) -> ModuleType:
    """Import the module at ``path`` under ``name``, as an uninstalled plugin."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lines(text: str) -> int:
    return len(text.rstrip("\n").splitlines())


# -- what the docs show ------------------------------------------------------------------


def test_the_docs_show_every_file_of_the_distribution_and_a_short_test_file():
    files = docs_files()
    assert set(files) == DOCS_FILES
    assert lines(files["tests/test_crawler.py"]) <= MAX_TEST_LINES
    assert "[build-system]" in files["pyproject.toml"]
    assert "crawler = optistate_crawler" in files["setup.cfg"]
    assert "py_modules = optistate_crawler" in files["setup.cfg"]


def test_the_scaffold_writes_the_packaging_the_docs_show():
    docs, written = docs_files(), plugin_files("crawler")
    assert written["pyproject.toml"] == docs["pyproject.toml"]
    assert written["setup.cfg"] == docs["setup.cfg"]


def test_an_agent_asking_for_a_capability_gets_enabled_versions(store, tmp_path):
    """docs/plugins.md, "What an agent of the type sees", on the docs' own module."""
    (tmp_path / "optistate_crawler.py").write_text(docs_files()["optistate_crawler.py"])
    store.plugins.register(load(tmp_path / "optistate_crawler.py", "optistate_crawler"), "crawler")
    agent = store.start_agent("crawler")

    row = store.models.Agent.get_by_id(agent.id)
    assert (row.type, row.name, row.version) == ("crawler", "crawler", "0.1.0")
    assert agent.config["max_pages"] == 100
    assert agent.capability("crawl").capability_version == "1.0.0"
    assert agent.capability("crawl", ">1.0") is None
    assert agent.capability("crawl", ">1.0", enabled_only=False).capability_version == "2.0.0-beta.1"
    assert agent.state().status == "idle"
    assert [(c.capability_name, c.capability_version, c.is_enabled) for c in agent.capabilities()] == [
        ("crawl", "1.0.0", True),
        ("crawl", "2.0.0-beta.1", False),
    ]


# -- the scaffold, in this process ----------------------------------------------------------


def test_new_plugin_writes_a_distribution_whose_type_works(store, tmp_path):
    files = new_plugin("web-crawler", tmp_path / "src")

    folder = tmp_path / "src" / "web-crawler"
    assert files == [folder / name for name in
                     ("pyproject.toml", "setup.cfg", "optistate_web_crawler.py", "tests/test_web_crawler.py")]
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["web-crawler"]  # no staging folder left
    assert "web-crawler = optistate_web_crawler" in (folder / "setup.cfg").read_text()
    assert lines((folder / "tests" / "test_web_crawler.py").read_text()) <= MAX_TEST_LINES

    store.plugins.register(load(folder / "optistate_web_crawler.py", "optistate_web_crawler"), "web-crawler")
    agent = store.start_agent("web-crawler")
    assert agent.config["batch_size"] == 100 and agent.capability("run").capability_version == "1.0.0"
    assert agent.config.entry("api_token").is_sensitive
    with pytest.raises(ValidationError, match=r"batch_size=0: must be from 1 to 10000"):
        agent.config.set("batch_size", 0)


def test_an_empty_target_directory_is_filled(tmp_path):
    (tmp_path / "crawler").mkdir()
    new_plugin("crawler", tmp_path)
    assert (tmp_path / "crawler" / "optistate_crawler.py").is_file()


@pytest.mark.parametrize(
    "name",
    ["", "Crawler", "1crawler", "web crawler", "web--crawler", "crawler-", "_crawler", "crawler.io", "a" * 65, "../x"],
)
def test_a_malformed_name_is_refused_and_nothing_written(tmp_path, name):
    with pytest.raises(ValidationError, match=rf"^name={re.escape(repr(name))}: must be lowercase letters"):
        new_plugin(name, tmp_path / "src")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["cost", "application"])
def test_a_name_an_installed_plugin_uses_is_refused(tmp_path, name):
    taken = rf"^name='{name}': is taken by the installed plugin '{name}' \(optistate "
    with pytest.raises(ValidationError, match=taken):
        new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_target_is_refused_and_left_alone(tmp_path):
    (tmp_path / "crawler").mkdir()
    (tmp_path / "crawler" / "notes.txt").write_text("mine")

    with pytest.raises(ValidationError, match=rf"^target={re.escape(repr(str(tmp_path / 'crawler')))}: exists and is"):
        new_plugin("crawler", tmp_path)

    assert [p.name for p in tmp_path.rglob("*")] == ["crawler", "notes.txt"]
    assert (tmp_path / "crawler" / "notes.txt").read_text() == "mine"


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "crawler").write_text("a file")
    with pytest.raises(ValidationError, match=r"^target='.*crawler': exists and is not empty"):
        new_plugin("crawler", tmp_path)
    with pytest.raises(ValidationError, match=r"^dir='.*crawler': is not a directory"):
        new_plugin("other", tmp_path / "crawler")
    assert [p.name for p in tmp_path.iterdir()] == ["crawler"]


def test_the_command_lists_the_files_and_what_to_run_next(tmp_path):
    result = CliRunner().invoke(cli, ["plugin", "new", "crawler", "--dir", str(tmp_path)])

    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "crawler"
    assert result.stdout.splitlines() == [
        f"wrote optistate-crawler in {folder}:",
        "  pyproject.toml",
        "  setup.cfg",
        "  optistate_crawler.py",
        "  tests/test_crawler.py",
        f"Next: pip install '{folder}[test]' && pytest {folder}",
    ]


def test_the_command_is_listed_with_its_summary():
    result = CliRunner().invoke(cli, ["--help"])
    assert "  plugin " in result.stdout and "Start a plugin of your own: plugin new NAME." in result.stdout


def test_the_command_refuses_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["plugin", "new", "Web Crawler", "--dir", str(tmp_path / "src")])

    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: name='Web Crawler': must be lowercase") and result.stderr.count("\n") == 1
    assert not (tmp_path / "src").exists()


# -- registering an installed plugin again ---------------------------------------------------


def test_registering_an_installed_module_again_names_the_name_it_has(optistate_store, optistate_plugin):
    with pytest.raises(PluginError) as raised:
        optistate_plugin(optistate.plugins.cost, name="cost-copy")

    assert str(raised.value) == "plugin 'cost': already registered under this name; not registered again as 'cost-copy'"
    assert not optistate_store.plugins.pm.has_plugin("cost-copy")
    assert optistate_store.plugins.pm.get_plugin("cost") is optistate.plugins.cost


def test_a_taken_name_still_names_that_name(optistate_plugin):
    with pytest.raises(PluginError, match=r"^plugin 'cost': Plugin name already registered"):
        optistate_plugin(ModuleType("another"), name="cost")


# -- for real: a new venv, pip install, the plugin's own pytest ----------------------------------


def clean_env() -> dict[str, str]:
    """This environment without optistate's settings or a PYTHONPATH that could reach the checkout."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OPTISTATE_") and k != "PYTHONPATH"}


def run(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=600)


def pip_install(bin_dir: Path, *requirements: object) -> None:
    result = run(sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--quiet", *requirements,
                 cwd=REPO)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """The bin directory of a new venv with this checkout installed (a built wheel) and pytest."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv"], check=True)
    bin_dir = tmp_path / "venv" / "bin"
    pip_install(bin_dir, f"{REPO}[test]")
    return bin_dir


def listed(bin_dir: Path, name: str, cwd: Path) -> dict[str, object]:
    result = run(bin_dir / "optistate", "plugins", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return next(row for row in json.loads(result.stdout) if row["name"] == name)


def passes(bin_dir: Path, folder: str, cwd: Path, count: int) -> None:
    """``pytest FOLDER`` in the venv, from ``cwd``: every test passes."""
    result = run(bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", folder, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{count} passed" in result.stdout, result.stdout


@pytest.mark.slow
def test_the_docs_distribution_installs_and_its_tests_pass(venv, tmp_path):
    work = tmp_path / "work"
    for path, text in docs_files().items():
        (work / "crawler" / path).parent.mkdir(parents=True, exist_ok=True)
        (work / "crawler" / path).write_text(text)

    pip_install(venv, work / "crawler")  # as written: pyproject.toml's build system, setup.cfg's requirements

    passes(venv, "crawler", work, 2)
    row = listed(venv, "crawler", work)
    assert (row["distribution"], row["version"], row["agent_types"], row["error"]) == (
        "optistate-crawler", "0.1.0", ["crawler"], None)
    assert row["hooks"] == ["register_agent_types", "validate_config"]


@pytest.mark.slow
def test_a_new_plugin_installs_and_its_tests_pass(venv, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    made = run(venv / "optistate", "plugin", "new", "web-crawler", cwd=work)
    assert made.returncode == 0, made.stderr
    assert made.stdout.endswith("Next: pip install './web-crawler[test]' && pytest ./web-crawler\n")

    pip_install(venv, work / "web-crawler")

    passes(venv, "web-crawler", work, 2)
    row = listed(venv, "web-crawler", work)
    assert (row["distribution"], row["version"], row["agent_types"], row["error"]) == (
        "optistate-web-crawler", "0.1.0", ["web-crawler"], None)
    assert row["hooks"] == ["register_agent_types", "validate_config"]
    assert {r["name"] for r in json.loads(run(venv / "optistate", "plugins", "--json", cwd=work).stdout)} == {
        "application", "cost", "performance", "resource", "web-crawler"}  # a new venv: nothing else
