"""The command as a newcomer meets it (issue 14, items 7-11): reading creates nothing, the demo says what it
simulated, the CLI's own names in errors, ``python -m optistate`` from the checkout, help with examples."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from optistate import demo
from optistate.cli import cli
from optistate.cli_support import STORE_HELP
from optistate.database import ENV_VAR

ROOT = Path(__file__).parent.parent
READING = [
    ["agents"], ["agent", "Cost Optimizer"], ["config", "list", "Cost Optimizer"],
    ["config", "get", "Cost Optimizer", "cost_threshold_usd"], ["capabilities", "Cost Optimizer"],
    ["capabilities", "list", "Cost Optimizer"], ["metrics", "Cost Optimizer"],
    ["metrics", "Cost Optimizer", "--name", "x", "--agg", "avg"], ["locks"], ["export", "out.jsonl"],
    ["secrets", "status"], ["migrate", "--status"],
]
WRITING = [
    ["demo"], ["migrate"], ["reap"], ["config", "set", "Cost Optimizer", "k", "1", "--type", "integer"],
    ["capabilities", "enable", "Cost Optimizer", "x"],
]
STORELESS = {("plugins",), ("plugin",), ("plugin", "new"), ("secrets",), ("secrets", "new-key"), ("config",),
             ("capabilities",)}


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, list(args), **kwargs)


# -- item 7: a reading command creates no database ------------------------------------------


@pytest.mark.parametrize("args", READING, ids=" ".join)
def test_a_reading_command_in_an_empty_directory_creates_nothing(empty_dir, args):
    result = invoke(*args)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: database '{empty_dir / 'optistate.db'}' not found; sqlite:///optistate.db (the default) names no"
        f" file; make one with `optistate demo`, or name another with --database URL or ${ENV_VAR}\n")
    assert list(empty_dir.iterdir()) == []


def test_the_error_names_where_the_url_came_from(empty_dir, monkeypatch):
    err = invoke("--database", "sqlite:///sub/x.db", "agents").stderr
    assert "database '" + str(empty_dir / "sub" / "x.db") + "' not found; sqlite:///sub/x.db (--database)" in err
    monkeypatch.setenv(ENV_VAR, "sqlite:///y.db")
    assert f"sqlite:///y.db (${ENV_VAR}) names no file" in invoke("locks").stderr
    assert list(empty_dir.iterdir()) == []


@pytest.mark.parametrize("args", WRITING, ids=" ".join)
def test_a_writing_command_creates_the_database(empty_dir, args):
    invoke(*args)
    assert (empty_dir / "optistate.db").exists()
    assert invoke("agents").exit_code == 0  # now there is one to read


def test_verbose_names_the_database_on_stderr(empty_dir):
    result = invoke("-v", "--database", "sqlite:///x.db", "demo", "--json")
    assert result.exit_code == 0
    assert result.stderr == f"database: sqlite:///x.db (file {empty_dir / 'x.db'})\n"
    assert invoke("--verbose", "--database", "sqlite:///x.db", "agents").stderr.startswith("database: sqlite:///x.db")
    assert invoke("--database", "sqlite:///x.db", "agents").stderr == ""
    failed = invoke("-v", "--database", "postgresql://u:secret@127.0.0.1:1/x", "agents")
    lines = failed.stderr.splitlines()
    assert lines[0] == "database: postgresql://u:***@127.0.0.1:1/x" and lines[1].startswith("error: cannot connect")
    assert len(lines) == 2 and "secret" not in failed.stderr


def commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    """(path, command) for every command and group under ``group``, the root first."""
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


PATHS = [path for path, _ in commands()]


@pytest.mark.parametrize("path", PATHS[1:], ids=" ".join)
def test_every_command_that_opens_a_store_says_so_in_its_help(path):
    text = invoke(*path, "--help").stdout
    assert (STORE_HELP.split(";")[0] in " ".join(text.split())) == (path not in STORELESS)


# -- item 8: the demo says what it simulated ------------------------------------------------------


def test_the_demo_says_what_it_simulated_and_what_to_run_next(sqlite_url):
    out = invoke("--database", sqlite_url, "demo").stdout
    story = out.split("Simulated as in the seed:\n", 1)[1]
    assert story.startswith("".join(f"  {line}\n" for line in demo.SIMULATED))
    assert "Application Monitor is in error: its quality check scored 0.82" in story
    assert "Cost Optimizer and Resource Allocator are active: their workflows are left running" in story
    nxt = story.split("\nNext:\n", 1)[1].splitlines()
    assert [line.split("  #")[0].strip() for line in nxt] == [command for command, _ in demo.NEXT]
    assert json.loads(invoke("--database", sqlite_url, "demo", "--json").stdout)["simulated"] == list(demo.SIMULATED)
    agents = json.loads(invoke("--database", sqlite_url, "agents", "--json").stdout)  # as the story says
    assert {a["name"]: a["locks"] for a in agents if a["locks"]} == {
        "Cost Optimizer": ["gpu_cluster_1", "billing_data"], "Resource Allocator": ["k8s_cluster", "gpu_pool"]}
    assert {a["name"] for a in agents if a["status"] == "error"} == {"Application Monitor"}
    assert invoke("--database", sqlite_url, "locks").stdout == "no locks held\n"


# -- item 9: the CLI's own names ------------------------------------------------------------------


def test_a_new_key_without_a_type_names_the_option(sqlite_url):
    assert invoke("--database", sqlite_url, "demo").exit_code == 0
    result = invoke("--database", sqlite_url, "config", "set", "Cost Optimizer", "brand_new", "1")
    assert result.exit_code == 2 and "config_type" not in result.stderr
    assert "--type is required for the new key 'brand_new' (one of string, integer" in result.stderr
    assert "brand_new" not in invoke("--database", sqlite_url, "config", "list", "Cost Optimizer").stdout
    done = invoke("--database", sqlite_url, "config", "set", "Cost Optimizer", "brand_new", "1", "--type", "integer")
    assert done.stdout == "Cost Optimizer: brand_new = 1 (integer)\n"


def test_agg_needs_name_and_the_readme_shows_it(sqlite_url):
    assert invoke("--database", sqlite_url, "demo").exit_code == 0
    result = invoke("--database", sqlite_url, "metrics", "Cost Optimizer", "--agg", "avg")
    assert result.exit_code == 2 and "--agg needs --name" in result.stderr
    synopsis = next(line for line in (ROOT / "README.md").read_text().splitlines()
                    if line.startswith("optistate metrics AGENT"))
    assert re.search(r"\[--name N \[--agg ", synopsis), synopsis


# -- item 10: python -m optistate from the checkout's root -----------------------------------------


@pytest.mark.parametrize("isolated", [False, True], ids=["as-installed", "shadowed"])
def test_python_m_optistate_runs_from_the_checkouts_root(tmp_path, isolated):
    """``shadowed``: no site hooks (an editable install's finder), so the source tree hides the installed copy."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    flags = ["-S"] if isolated else []
    if isolated:
        env["PYTHONPATH"] = os.pathsep.join([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    done = subprocess.run([sys.executable, *flags, "-m", "optistate", "--database", url, "demo", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert {a["name"] for a in json.loads(done.stdout)["agents"]} == {n for _, n in demo.AGENTS}
    status = subprocess.run([sys.executable, *flags, "-m", "optistate", "--database", url, "migrate", "--status"],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert status.returncode == 0 and "pending" not in status.stdout and "applied" in status.stdout


# -- item 11: summaries and examples ----------------------------------------------------------------


def test_root_help_lists_every_command_with_a_whole_one_line_summary():
    out = invoke("--help").stdout
    listed = dict(re.findall(r"^  (\S+)\s+(.*)$", out.split("Commands:\n", 1)[1], re.MULTILINE))
    assert set(listed) == set(cli.commands)
    for name, summary in listed.items():
        assert summary and not summary.endswith("..."), name


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "optistate")
def test_every_command_has_an_example(path):
    text = invoke(*path, "--help").stdout
    assert any(re.search(rf"optistate (\S+ )*?{re.escape(' '.join(path))}", line) for line in text.splitlines()[1:]
               if line.startswith("  ") and "--database names" not in line), text
