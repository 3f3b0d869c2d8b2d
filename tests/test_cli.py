"""The ``optistate`` command on both backends: output, exit codes, one-line errors, secrets kept masked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

import optistate
from optistate import demo
from optistate.cli import cli, main
from optistate.database import ENV_VAR
from optistate.errors import NotFoundError

SECRET = "hunter2-Ω"
UNREACHABLE = "postgresql://u:secret@127.0.0.1:1/x"


def run(url, *args):
    return CliRunner().invoke(cli, ["--database", url, *args])


def ok(url, *args):
    result = run(url, *args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def refused(url, *args, code=1):
    """stderr of a failing command: exactly one ``error:`` line, no traceback."""
    result = run(url, *args)
    assert result.exit_code == code, result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    return result.stderr


@pytest.fixture
def seeded(db_url):
    """The demo's agents, with a sensitive key on the cost agent and a few tagged metric points."""
    with optistate.connect(db_url) as store:
        demo.run(store)
        cost = store.agent("Cost Optimizer")
        cost.config.set("api_key", SECRET, config_type="string", is_sensitive=True, description="billing API key")
        base = datetime(2025, 1, 1, tzinfo=timezone.utc)
        for hour, gpu in enumerate([3, "3", 4, 3]):
            cost.record_metric("gpu_hours", 10.0 * (hour + 1), "hours", metadata={"gpu": gpu, "region": "us-west"},
                               timestamp=base + timedelta(hours=hour))
        cost.flush()
    return db_url


def configs(url, name="Cost Optimizer"):
    with optistate.connect(url) as store:
        return {row.config_key: (row.config_value, row.is_sensitive, row.updated_at)
                for row in store.agent(name).config.entries()}


# -- the command itself ---------------------------------------------------------------


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"optistate {optistate.__version__}\n"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "migrate", "agents", "agent", "config", "capabilities", "metrics", "plugins", "export",
                    "import"):
        assert f"  {command} " in out
    assert "--database URL" in out and ENV_VAR in out


def test_main_returns_the_exit_code_and_prints_one_line(capsys, sqlite_url):
    assert main(["--database", sqlite_url, "migrate"]) == 0 and capsys.readouterr().err == ""
    assert main(["--database", sqlite_url, "agent", "ghost"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: agent 'ghost' not found; see `optistate agents`\n" and captured.out == ""
    assert main(["--database", sqlite_url, "no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_default_database_is_the_environment_then_a_file_in_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 0 and "applied 0001_agents" in result.stdout
    assert (tmp_path / "optistate.db").exists()
    assert "no agents" in CliRunner().invoke(cli, ["agents"]).stdout
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv(ENV_VAR, f"sqlite:///{elsewhere}")
    assert CliRunner().invoke(cli, ["demo", "--json"]).exit_code == 0
    assert elsewhere.exists()
    with optistate.connect(f"sqlite:///{tmp_path / 'optistate.db'}") as store:
        assert store.agents() == []


def test_installed_script_runs_as_a_subprocess(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "optistate")
    url = f"sqlite:///{tmp_path / 'sub.db'}"
    done = subprocess.run([script, "--database", url, "demo", "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert {a["name"] for a in json.loads(done.stdout)["agents"]} == set(n for _, n in demo.AGENTS)
    failed = subprocess.run([script, "--database", UNREACHABLE, "agents"], capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("error: cannot connect to postgresql://u:***@127.0.0.1:1/x")
    assert failed.stderr.count("\n") == 1 and "secret" not in failed.stderr and "Traceback" not in failed.stderr
    debug = subprocess.run([script, "--database", UNREACHABLE, "--debug", "agents"], capture_output=True, text=True,
                           check=False)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConnectionError" in debug.stderr
    assert "secret" not in debug.stderr


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    (UNREACHABLE, "error: cannot connect to postgresql://u:***@127.0.0.1:1/x: connection to server"),
    ("mysql://u:secret@db/x", "error: database='mysql://u:***@db/x': scheme must be one of"),
    ("postgresql://u:secret@127.0.0.1", "error: database='postgresql://u:***@127.0.0.1': "),
    ("postgresql://u@127.0.0.1:1/x?password=secret", "error: cannot connect to postgresql://u@127.0.0.1:1/x?password=***"),
    ("postgresql://u:sec@ret@127.0.0.1:1/x", "error: cannot connect to postgresql://u:***@127.0.0.1:1/x"),
])
def test_a_bad_or_unreachable_database_is_one_line_without_the_password(url, expected):
    for args in (["agents"], ["demo"], ["migrate", "--status"], ["config", "get", "a", "k"]):
        err = refused(url, *args)
        assert err.startswith(expected) and "secret" not in err


def test_debug_shows_the_traceback(sqlite_url):
    assert run(sqlite_url, "migrate").exit_code == 0
    result = CliRunner().invoke(cli, ["--database", sqlite_url, "--debug", "agent", "ghost"])
    assert result.exit_code == 1 and isinstance(result.exception, NotFoundError)


def test_unknown_agent_key_capability(seeded):
    assert refused(seeded, "agent", "ghost") == "error: agent 'ghost' not found; see `optistate agents`\n"
    assert refused(seeded, "config", "list", "ghost").startswith("error: agent 'ghost' not found")
    assert refused(seeded, "metrics", "ghost").startswith("error: agent 'ghost' not found")
    err = refused(seeded, "config", "get", "Cost Optimizer", "nope")
    assert err.startswith("error: config key 'nope' not found; agent 'Cost Optimizer' has api_key, check_interval")
    assert refused(seeded, "capabilities", "enable", "Cost Optimizer", "teleport") == (
        "error: capability 'teleport' not found; agent 'Cost Optimizer' has gpu_cost_analysis 1.2.0,"
        " spot_instance_recommendation 0.9.0, storage_optimization 1.0.0\n")
    assert "'gpu_cost_analysis 9.9.9'" in refused(
        seeded, "capabilities", "disable", "Cost Optimizer", "gpu_cost_analysis", "--version", "9.9.9")


def test_an_ambiguous_name_needs_the_type(seeded):
    with optistate.connect(seeded) as store:
        store.start_agent("performance", "Cost Optimizer")
    assert "used by several types (cost, performance); give the type too" in refused(seeded, "agent", "Cost Optimizer")
    assert "(performance 0.1.0)" in ok(seeded, "agent", "Cost Optimizer", "--type", "performance")
    assert "api_key" in ok(seeded, "config", "list", "Cost Optimizer", "--agent-type", "cost")


# -- agents and agent -----------------------------------------------------------------


def test_agents_lists_run_time_state(seeded):
    out = ok(seeded, "agents")
    header, *lines = out.splitlines()
    assert header.split() == ["TYPE", "NAME", "STATUS", "LIVENESS", "WORKFLOW", "LOCKS", "ERRORS", "HEARTBEAT",
                              "CONFIGS", "CAPABILITIES"]
    assert [line.split()[0] for line in lines] == ["application", "cost", "performance", "resource"]
    cost = next(line for line in lines if line.startswith("cost"))
    assert cost.split()[2:7] == ["Optimizer", "active", "alive", "cost_analysis", "gpu_cluster_1,"]
    assert cost.split()[-4:] == ["ago", "4", "2/3", "enabled"]
    assert ok(seeded, "agents", "--status", "error").count("\n") == 2
    rows = json.loads(ok(seeded, "agents", "--type", "resource", "--json"))
    assert [(r["name"], r["status"], r["locks"], r["capabilities"]) for r in rows] == [
        ("Resource Allocator", "active", ["k8s_cluster", "gpu_pool"], 2)]
    assert json.loads(ok(seeded, "agents", "--type", "nobody", "--json")) == []
    assert "no agents" in ok(seeded, "agents", "--type", "nobody")
    assert "'sleepy' is not one of" in run(seeded, "agents", "--status", "sleepy").stderr


def test_agent_shows_state_configs_capabilities_metrics_with_secrets_masked(seeded):
    out = ok(seeded, "agent", "Cost Optimizer")
    assert out.startswith("Cost Optimizer (cost 1.0.0)  id ")
    assert "workflow   cost_analysis" in out and "locks      gpu_cluster_1, billing_data" in out
    assert "api_key" in out and "***" in out and SECRET not in out
    assert "spot_instance_recommendation  0.9.0    no" in out
    assert "gpu_hours" in out and "total_savings_identified_usd" in out
    data = json.loads(ok(seeded, "agent", "Cost Optimizer", "--json"))
    assert data["state"]["current_workflow"] == "cost_analysis" and data["agent"]["type"] == "cost"
    assert {c["key"]: c["value"] for c in data["configs"]}["api_key"] == "***"
    assert SECRET not in json.dumps(data)
    assert len(data["capabilities"]) == 3 and len(data["latest_metrics"]) == 4
    by_id = json.loads(ok(seeded, "agent", data["agent"]["id"], "--json"))
    assert by_id["agent"] == data["agent"]


# -- config -----------------------------------------------------------------------------


def test_config_masks_secrets_unless_revealed(seeded):
    out = ok(seeded, "config", "list", "Cost Optimizer")
    assert "api_key                    string  ***    yes        no         billing API key" in out
    assert SECRET not in out
    assert "cost_threshold_usd         number  1000   no         -" in out
    assert ok(seeded, "config", "get", "Cost Optimizer", "api_key") == "***\n"
    assert ok(seeded, "config", "get", "Cost Optimizer", "api_key", "--reveal") == f"{SECRET}\n"
    assert SECRET in ok(seeded, "config", "list", "Cost Optimizer", "--reveal")
    listed = json.loads(ok(seeded, "config", "list", "Cost Optimizer", "--json"))
    assert {c["key"]: c["value"] for c in listed} == {
        "api_key": "***", "check_interval_minutes": 60, "cost_threshold_usd": 1000, "savings_threshold_percent": 15}
    revealed = json.loads(ok(seeded, "config", "list", "Cost Optimizer", "--json", "--reveal"))
    assert {c["key"]: c["value"] for c in revealed}["api_key"] == SECRET
    assert ok(seeded, "config", "get", "Application Monitor", "quality_score_threshold") == "0.85\n"


def test_config_set_parses_the_value_as_the_keys_type(seeded):
    assert ok(seeded, "config", "set", "Cost Optimizer", "cost_threshold_usd", "2500") == (
        "Cost Optimizer: cost_threshold_usd = 2500 (number)\n")
    with optistate.connect(seeded) as store:
        assert store.agent("Cost Optimizer").config["cost_threshold_usd"] == 2500
    assert ok(seeded, "config", "set", "Cost Optimizer", "api_key", "new-secret") == (
        "Cost Optimizer: api_key = *** (string)\n")
    out = ok(seeded, "config", "set", "Cost Optimizer", "regions", '["us-west", "eu"]', "--type", "json",
             "--description", "where to look")
    assert out == 'Cost Optimizer: regions = ["us-west", "eu"] (json)\n'
    ok(seeded, "config", "set", "Cost Optimizer", "token", "t0k3n", "--type", "string", "--sensitive")
    assert ok(seeded, "config", "get", "Cost Optimizer", "token") == "***\n"
    with optistate.connect(seeded) as store:
        view = store.agent("Cost Optimizer").config
        assert view["regions"] == ["us-west", "eu"] and view["token"] == "t0k3n" and view["api_key"] == "new-secret"


@pytest.mark.parametrize(("args", "message"), [
    (["cost_threshold_usd", "lots"], "error: cost_threshold_usd='lots': does not parse as number\n"),
    (["savings_threshold_percent", "150"], "error: savings_threshold_percent=150: must be a percentage from 0 to 100"),
    (["check_interval_minutes", "-5"], "error: check_interval_minutes=-5: must be greater than 0\n"),
    (["api_key", "x", "--type", "integer"], "is stored as string; an existing key keeps its type"),
    (["pin", "12ab", "--type", "integer", "--sensitive"], "error: pin=***: does not parse as integer\n"),
])
def test_config_set_refusals_store_nothing(seeded, args, message):
    before = configs(seeded)
    err = refused(seeded, "config", "set", "Cost Optimizer", *args)
    assert message in err and SECRET not in err
    assert configs(seeded) == before


# -- capabilities ---------------------------------------------------------------------------


def test_capabilities_bare_and_list_forms(seeded):
    bare = ok(seeded, "capabilities", "Cost Optimizer")
    assert bare == ok(seeded, "capabilities", "list", "Cost Optimizer")
    assert bare.splitlines()[0].split() == ["NAME", "VERSION", "ENABLED", "DESCRIPTION"]
    assert "spot_instance_recommendation  0.9.0    no" in bare
    enabled = ok(seeded, "capabilities", "Cost Optimizer", "--enabled")
    assert "spot_instance_recommendation" not in enabled and "gpu_cost_analysis" in enabled
    rows = json.loads(ok(seeded, "capabilities", "--json", "Performance Tuner"))
    assert [(r["capability_name"], r["capability_version"], r["is_enabled"]) for r in rows] == [
        ("batch_optimization", "1.5.0", True),
        ("kv_cache_tuning", "2.1.0", True),
        ("quantization_testing", "1.0.0", True),
    ]
    assert rows[0]["parameters"]["max_batch_size"] == 128
    help_text = ok(seeded, "capabilities", "--help")
    assert "optistate capabilities AGENT [--enabled] [--json]" in help_text
    assert "optistate capabilities enable AGENT NAME [--version V]" in help_text


def test_capabilities_enable_and_disable(seeded):
    assert ok(seeded, "capabilities", "enable", "Cost Optimizer", "spot_instance_recommendation") == (
        "Cost Optimizer: enabled 1 version(s) of spot_instance_recommendation\n")
    assert ok(seeded, "capabilities", "disable", "Cost Optimizer", "gpu_cost_analysis", "--version", "1.2.0") == (
        "Cost Optimizer: disabled 1 version(s) of gpu_cost_analysis\n")
    with optistate.connect(seeded) as store:
        states = {c.capability_name: c.is_enabled for c in store.agent("Cost Optimizer").capabilities()}
    assert states == {"gpu_cost_analysis": False, "spot_instance_recommendation": True, "storage_optimization": True}


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_listing_and_filters(seeded):
    out = ok(seeded, "metrics", "Cost Optimizer", "--name", "gpu_hours")
    lines = out.splitlines()
    assert lines[0].split() == ["COLLECTED", "NAME", "VALUE", "UNIT", "TYPE", "METADATA"]
    assert lines[1].startswith("2025-01-01T00:00:00+00:00  gpu_hours  10 ")
    assert lines[1].endswith('{"gpu":3,"region":"us-west"}')
    assert len(lines) == 5

    def values(*args):
        rows = json.loads(ok(seeded, "metrics", "Cost Optimizer", "--name", "gpu_hours", "--json", *args))
        return [r["metric_value"] for r in rows]

    assert values() == [10.0, 20.0, 30.0, 40.0]
    assert values("--where", "gpu=3") == [10.0, 40.0]  # the number 3, not the string "3"
    assert values("--where", 'gpu="3"') == [20.0]
    assert values("--where", "gpu=3", "--where", "region=us-west") == [10.0, 40.0]
    assert values("--where", "region=eu") == []
    assert values("--since", "2025-01-01T01:00:00", "--until", "2025-01-01T02:00:00+00:00") == [20.0, 30.0]
    assert values("--since", "2025-01-01T03:00:00+02:00") == [20.0, 30.0, 40.0]  # from 01:00 UTC
    assert values("--limit", "2") == [10.0, 20.0]
    everything = json.loads(ok(seeded, "metrics", "Cost Optimizer", "--json"))
    assert len(everything) == 7 and everything[0]["metadata"] == {"gpu": 3, "region": "us-west"}
    assert "no metrics" in ok(seeded, "metrics", "Cost Optimizer", "--name", "nothing")


def test_metrics_aggregates(seeded):
    assert ok(seeded, "metrics", "Cost Optimizer", "--name", "gpu_hours", "--agg", "avg") == "avg(gpu_hours) = 25\n"
    assert ok(seeded, "metrics", "Cost Optimizer", "--name", "gpu_hours", "--agg", "max", "--where", "gpu=3") == (
        "max(gpu_hours) = 40\n")
    assert json.loads(ok(seeded, "metrics", "Cost Optimizer", "--name", "gpu_hours", "--agg", "count", "--json")) == {
        "name": "gpu_hours", "agg": "count", "value": 4}
    assert ok(seeded, "metrics", "Cost Optimizer", "--name", "nothing", "--agg", "sum") == "sum(nothing) = -\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--agg", "avg"], "--agg needs --name"),
    (["--since", "last tuesday"], "'last tuesday' is not an ISO-8601 time"),
    (["--where", "gpu"], "'gpu' is not key=value"),
    (["--name", "x", "--agg", "median"], "'median' is not one of"),
])
def test_metrics_usage_errors(seeded, args, message):
    result = run(seeded, "metrics", "Cost Optimizer", *args)
    assert result.exit_code == 2 and message in result.stderr


# -- plugins and migrate ----------------------------------------------------------------------


def test_plugins_lists_the_first_party_plugins():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    for kind in ("cost", "performance", "resource", "application"):
        assert plugins[kind]["distribution"] == "optistate" and plugins[kind]["version"] == optistate.__version__
        assert plugins[kind]["agent_types"] == [kind] and plugins[kind]["error"] is None
        assert plugins[kind]["hooks"] == ["register_agent_types", "validate_config"]
    text = CliRunner().invoke(cli, ["plugins"]).stdout
    assert text.splitlines()[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "HOOKS", "AGENT", "TYPES", "ERROR"]
    assert "register_agent_types, validate_config" in text


def test_plugins_reports_a_blocked_plugin_absent(monkeypatch):
    monkeypatch.setenv("OPTISTATE_BLOCK_PLUGINS", "cost")
    names = {p["name"] for p in json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).stdout)}
    assert "cost" not in names and "performance" in names


MIGRATIONS = ["0001_agents", "0002_agent_state_tables", "0003_database_defaults", "0004_liveness_and_leases",
              "0005_partitioned_metrics", "0006_change_log", "0007_partition_period"]


def test_migrate_status_apply_and_down(db_url):
    if db_url.startswith("sqlite:///"):  # --status reads: it needs the file, and an empty one is an empty database
        open(db_url.removeprefix("sqlite:///"), "w").close()
    status = json.loads(ok(db_url, "migrate", "--status", "--json"))
    assert status == [{"name": name, "applied": False} for name in MIGRATIONS]
    assert "0001_agents               pending" in ok(db_url, "migrate", "--status")  # --status applied nothing
    assert ok(db_url, "migrate") == f"applied {', '.join(MIGRATIONS)}\n"
    assert ok(db_url, "migrate") == "nothing to apply: the schema is up to date\n"
    assert "0002_agent_state_tables   applied" in ok(db_url, "migrate", "--status")
    assert json.loads(ok(db_url, "migrate", "--down", "0002_agent_state_tables", "--json")) == {
        "reverted": ["0007_partition_period", "0006_change_log", "0005_partitioned_metrics",
                     "0004_liveness_and_leases", "0003_database_defaults",
                     "0002_agent_state_tables"]}
    assert json.loads(ok(db_url, "migrate", "--status", "--json"))[1]["applied"] is False
    assert "is not an applied migration" in refused(db_url, "migrate", "--down", "0002_agent_state_tables")
    assert run(db_url, "migrate", "--status", "--down", "0001_agents").exit_code == 2
    assert "no agents" in ok(db_url, "agents")  # other commands migrate first
    assert all(m["applied"] for m in json.loads(ok(db_url, "migrate", "--status", "--json")))


def test_config_set_reads_a_secret_from_stdin_or_a_hidden_prompt(seeded):
    for args, typed in ((["-"], "sk-from-stdin\n"), ([], "sk-from-prompt\n")):
        result = CliRunner().invoke(cli, ["--database", seeded, "config", "set", "Cost Optimizer", "api_key", *args],
                                    input=typed)
        assert result.exit_code == 0, result.output
        assert "sk-from" not in result.output and "api_key = ***" in result.stdout
        with optistate.connect(seeded) as store:
            assert store.agent("Cost Optimizer").config["api_key"] == typed.strip()


def test_config_set_without_a_value_needs_a_sensitive_key(seeded):
    result = run(seeded, "config", "set", "Cost Optimizer", "cost_threshold_usd")
    assert result.exit_code == 2 and "VALUE is required for a key that is not sensitive" in result.stderr
