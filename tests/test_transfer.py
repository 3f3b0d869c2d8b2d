"""``optistate export`` / ``optistate import``: lossless across backends, owner-only files, all or nothing."""
from __future__ import annotations

import json
import os
import pty
import stat
import sys
import threading
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

import optistate
from optistate import cli_support, demo, transfer
from optistate.cli import cli, main
from optistate.fields import MAX_JSON_DEPTH


def run(url, *args):
    return CliRunner().invoke(cli, ["--database", url, *args])


def rows(url):
    """Every row of every table, as the models read them, by table then id; ``revision`` is each store's own."""
    with optistate.connect(url) as store:
        return {
            m._meta.table_name: [
                {k: v for k, v in row.items() if k != "revision"} for row in m.select().order_by(m.id).dicts()
            ]
            for m in store.models.MODELS
        }


def counts(url):
    return {table: len(found) for table, found in rows(url).items()}


def lines(path):
    with open(path, encoding="utf-8") as data:
        return [json.loads(line) for line in data]


def fill(url):
    """The demo, plus rows that test the edges: secrets, JSON, exact floats, microseconds, nulls, 1200 points."""
    with optistate.connect(url) as store:
        demo.run(store)
        edge = store.start_agent("cost", "Edge Ünïcode", version="2.0.0-rc.1", endpoint="http://edge:8000")
        edge.config.set("api_key", "s3cr3t-Ω", config_type="string", is_sensitive=True, description="provider key")
        edge.config.set("limits", {"gpus": [1, 2.5, None], "ß": True}, config_type="json")
        edge.config.set("cost_threshold_usd", 2000)
        edge.disable_capability("gpu_cost_analysis")
        at = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)
        metadata = {"nested": {"a": [1, "x", None]}, "ok": False}
        edge.record_metric("exact", 0.1 + 0.2, "ratio", metadata=metadata, timestamp=at)
        edge.record_metric("huge", 1.7976931348623157e308, None, "counter", {"emoji": "🚀"})
        edge.record_metrics({"name": "load", "value": i / 7, "metadata": {"i": i}} for i in range(1200))
        edge.flush()


def test_round_trip_sqlite_postgres_sqlite_keeps_every_row(sqlite_url, pg_url, tmp_path):
    fill(sqlite_url)
    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    first, second, third = (str(tmp_path / name) for name in ("1.jsonl", "2.jsonl", "3.jsonl"))

    assert run(sqlite_url, "export", first).exit_code == 0
    imported = run(pg_url, "import", first)
    assert imported.exit_code == 0, imported.stderr
    assert imported.stdout.startswith("imported 1255 rows")
    assert run(pg_url, "export", second).exit_code == 0
    assert run(back_url, "import", second).exit_code == 0
    assert run(back_url, "export", third).exit_code == 0

    original = rows(sqlite_url)
    assert original["agent_metrics"] and original["agent_states"]
    assert rows(pg_url) == original
    assert rows(back_url) == original
    # The files agree line for line, past the header's export time.
    assert lines(first)[1:] == lines(second)[1:] == lines(third)[1:]
    exact = next(r for r in original["agent_metrics"] if r["metric_name"] == "exact")
    assert exact["metric_value"] == 0.1 + 0.2
    assert exact["collection_timestamp"] == datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)


def test_export_file_format(sqlite_url, tmp_path):
    fill(sqlite_url)
    path = str(tmp_path / "out.jsonl")
    result = run(sqlite_url, "export", path)
    assert result.exit_code == 0 and result.stderr == ""
    header, *body = lines(path)
    assert header["format"] == "optistate" and header["version"] == 1
    assert header["tables"] == ["agents", "agent_configs", "agent_states", "agent_capabilities", "agent_metrics"]
    tables = [item["table"] for item in body]
    assert tables == sorted(tables, key=header["tables"].index)  # agents first, then each table in turn
    secret = next(i["row"] for i in body if i["table"] == "agent_configs" and i["row"]["config_key"] == "api_key")
    assert secret["config_value"] == "s3cr3t-Ω"  # secrets travel: hence the file's mode
    assert secret["created_at"].endswith("+00:00") and len(secret["created_at"]) == 32  # microseconds, UTC


def test_export_file_is_owner_only_also_when_overwriting(sqlite_url, tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old")
    path.chmod(0o644)
    assert run(sqlite_url, "migrate").exit_code == 0  # export reads: it needs a database
    assert run(sqlite_url, "export", str(path)).exit_code == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert lines(path)[0]["format"] == "optistate"
    fresh = tmp_path / "fresh.jsonl"
    assert run(sqlite_url, "export", str(fresh)).exit_code == 0
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


@pytest.fixture
def exported(tmp_path):
    """A file exported from the filled SQLite database, as a list of lines."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url)
    path = tmp_path / "good.jsonl"
    assert run(url, "export", str(path)).exit_code == 0
    return path.read_text(encoding="utf-8").splitlines()


def _break(found, table, key, value, where=None):
    """The file with the first row of ``table`` (that matches ``where``) given ``key=value``, and its line number."""
    index = next(
        i for i, line in enumerate(found)
        if i and json.loads(line)["table"] == table and (where or {}).items() <= json.loads(line)["row"].items()
    )
    item = json.loads(found[index])
    item["row"][key] = value
    return [*found[:index], json.dumps(item), *found[index + 1:]], index + 1


def _nested(depth):
    """A JSON object ``depth`` levels deep."""
    value = 1
    for _ in range(depth - 1):
        value = [value]
    return {"d": value}


# Rows follow in id order, which is random: each case names a row that every match of ``where`` refuses alike.
BAD_ROWS = [
    ("agents", "status", "asleep", None, "status='asleep': must be one of"),
    ("agents", "id", "not-a-uuid", None, "must be a UUID string"),
    ("agent_configs", "config_value", "lots", {"config_type": "number"}, "does not parse as number"),
    ("agent_states", "last_heartbeat", "yesterday", None, "must be an ISO-8601 timestamp"),
    ("agent_capabilities", "capability_version", "two", None, "must be a semantic version"),
    ("agent_metrics", "metric_value", "NaN", None, "must be a number"),
    ("agent_metrics", "agent_id", "00000000-0000-4000-8000-000000000000", None, "names no agent earlier in the file"),
    # Issue 8, items 7 to 9: the SDK's rules, on both backends.
    ("agent_metrics", "metadata", [1, 2], None, "metadata=[1, 2]: must be a JSON object"),
    ("agent_metrics", "metadata", _nested(MAX_JSON_DEPTH + 1), None, "metadata=<dict nested too deep to show>"),
    ("agent_metrics", "collection_timestamp", "0001-01-01T00:00:00+14:00", None, "is outside 0001-01-02 to 9999-12-30"),
    ("agent_states", "workflow_data", [1], None, "workflow_data=[1]: must be a JSON object"),
    ("agent_states", "resource_locks", {"billing": 1}, None, "resource_locks={'billing': 1}: must be a JSON array"),
    ("agent_states", "resource_locks", [1], None, "resource_locks=[1]: must be a list of str"),
    ("agent_states", "error_count", 2**40, None, "error_count=1099511627776: is out of range"),
    ("agent_states", "last_error", "boom", None, "last_error='boom': must be a JSON object"),
    ("agent_states", "last_heartbeat", "9999-12-31T23:00:00-14:00", None, "is outside 0001-01-02 to 9999-12-30"),
    ("agents", "name", "Cost\x00", None, "name='Cost\\x00': holds a NUL character"),
    ("agent_configs", "config_key", "key\ud800", None, "config_key='key\\ud800': holds a lone surrogate"),
    ("agent_configs", "description", "d\x00", None, "description='d\\x00': holds a NUL"),
    ("agent_configs", "config_value", "1" + "0" * 400, {"config_type": "number"}, "is out of range"),
]


@pytest.mark.parametrize(("table", "key", "value", "where", "reason"), BAD_ROWS)
def test_a_bad_row_imports_nothing_and_names_its_line(db_url, exported, tmp_path, table, key, value, where, reason):
    found, number = _break(exported, table, key, value, where)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(found) + "\n", encoding="utf-8")
    result = run(db_url, "import", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path}, line {number}: ") and reason in result.stderr
    assert result.stderr.count("\n") == 1 and "nothing was imported" in result.stderr
    assert set(counts(db_url).values()) == {0}


def test_a_row_before_its_agent_is_refused(db_url, exported, tmp_path):
    """Agents come first, so every config is checked by its agent type's plugins."""
    index = next(i for i, line in enumerate(exported) if i and json.loads(line)["table"] == "agent_configs")
    found = [exported[0], exported[index], *exported[1:index], *exported[index + 1:]]
    path = tmp_path / "early.jsonl"
    path.write_text("\n".join(found), encoding="utf-8")
    result = run(db_url, "import", str(path))
    assert result.exit_code == 1 and "line 2: agent_configs: agent_id=" in result.stderr
    assert "names no agent earlier in the file" in result.stderr
    assert set(counts(db_url).values()) == {0}


def test_a_duplicate_late_in_a_large_batch_is_found_by_line(db_url, exported, tmp_path):
    duplicate = exported[-3]  # a metric in the third batch of the 1200 points
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join([*exported, duplicate]) + "\n", encoding="utf-8")
    result = run(db_url, "import", str(path))
    assert result.exit_code == 1
    assert f"line {len(exported) + 1}: agent_metrics: the database refused the row" in result.stderr
    assert set(counts(db_url).values()) == {0}


@pytest.mark.parametrize(
    ("content", "number", "reason"),
    [
        ("", 1, "the file is empty"),
        ('{"format": "other"}\n', 1, "not an optistate export"),
        ('{"format": "optistate", "version": 9}\n', 1, "version 9 is not supported"),
        ("HEADER\n{not json}\n", 2, "not valid JSON"),
        ('HEADER\n{"table": "agents"}\n', 2, '"table": ..., "row"'),
        ('HEADER\n{"table": "users", "row": {}}\n', 2, "unknown table 'users'"),
        ('HEADER\n{"table": "agents", "row": {"id": "x"}}\n', 2, "missing columns"),
    ],
)
def test_a_bad_file_is_refused_by_line(db_url, tmp_path, content, number, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(content.replace("HEADER", '{"format": "optistate", "version": 1}'), encoding="utf-8")
    result = run(db_url, "import", str(path))
    assert result.exit_code == 1 and f"line {number}: " in result.stderr and reason in result.stderr


def test_import_refuses_a_value_the_plugin_refuses(db_url, exported, tmp_path):
    where = {"config_key": "savings_threshold_percent"}
    found, number = _break(exported, "agent_configs", "config_value", "150", where)
    path = tmp_path / "refused.jsonl"
    path.write_text("\n".join(found), encoding="utf-8")
    result = run(db_url, "import", str(path))
    assert result.exit_code == 1 and f"line {number}: agent_configs: " in result.stderr
    assert "savings_threshold_percent=150: must be a percentage from 0 to 100" in result.stderr
    assert set(counts(db_url).values()) == {0}


def test_import_into_a_database_with_agents_needs_replace(db_url, exported, tmp_path):
    path = tmp_path / "good.jsonl"
    path.write_text("\n".join(exported) + "\n", encoding="utf-8")
    with optistate.connect(db_url) as store:
        store.start_agent("performance", "Already Here")
    refused = run(db_url, "import", str(path))
    assert refused.exit_code == 1 and "already holds 1 agent(s)" in refused.stderr and "--replace" in refused.stderr
    assert counts(db_url)["agents"] == 1

    broken, _ = _break(exported, "agent_metrics", "metric_type", "gauge-ish")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(broken), encoding="utf-8")
    assert run(db_url, "import", "--replace", str(bad)).exit_code == 1
    assert [a["name"] for a in rows(db_url)["agents"]] == ["Already Here"]  # the delete was rolled back too

    replaced = run(db_url, "import", "--replace", str(path))
    assert replaced.exit_code == 0, replaced.stderr
    assert "Already Here" not in {a["name"] for a in rows(db_url)["agents"]}
    assert counts(db_url) == {"agents": 5, "agent_configs": 17, "agent_states": 5, "agent_capabilities": 14,
                              "agent_metrics": 1214}


def test_import_of_a_missing_file_is_a_usage_error(sqlite_url, tmp_path):
    result = run(sqlite_url, "import", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_export_to_a_missing_directory_is_one_line(sqlite_url, tmp_path):
    assert run(sqlite_url, "migrate").exit_code == 0
    result = run(sqlite_url, "export", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: No such file or directory: ") and result.stderr.count("\n") == 1


def test_to_json_is_the_export_row_form(store):
    agent = store.start_agent("cost", "Json Form")
    row = transfer.to_json(agent.registration())
    assert row["id"] == str(agent.id) and row["type"] == "cost" and row["endpoint"] is None
    assert datetime.fromisoformat(row["last_heartbeat"]) == agent.registration().last_heartbeat


def _drain(fd, chunks):
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            return
        if not data:
            return
        chunks.append(data)


def test_a_large_transfer_shows_a_progress_bar_on_a_terminal_only(sqlite_url, tmp_path, monkeypatch, capsys):
    fill(sqlite_url)
    monkeypatch.setattr(cli_support, "MANY_ROWS", 1000)  # "large" is 5000 rows; the file has 1255
    path = str(tmp_path / "big.jsonl")
    master, replica = pty.openpty()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(master, chunks))
    reader.start()
    terminal = os.fdopen(replica, "w")
    try:
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main(["--database", sqlite_url, "export", path]) == 0
        assert main(["--database", f"sqlite:///{tmp_path / 'copy.db'}", "import", path]) == 0
    finally:
        monkeypatch.undo()
        terminal.close()
        reader.join(timeout=10)
        os.close(master)
    shown = b"".join(chunks).decode()
    assert "exporting" in shown and "importing" in shown and "100%" in shown
    assert capsys.readouterr().out.count("\n") == 2  # the two summary lines; no bar on stdout


def test_json_nested_past_any_column_names_its_line(db_url, exported, tmp_path):
    found, number = _break(exported, "agent_metrics", "metadata", "DEEP")
    found[number - 1] = found[number - 1].replace('"DEEP"', "[" * 100_000 + "]" * 100_000)
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(found), encoding="utf-8")
    result = run(db_url, "import", str(path))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"line {number}: JSON nested far deeper than a column may be" in result.stderr
    assert set(counts(db_url).values()) == {0}


def test_a_lone_surrogate_an_older_sqlite_holds_is_exported_and_refused_on_import(db_url, tmp_path):
    """Export writes what is stored (the JSON escape), the import names the line, and nothing crashes."""
    source = f"sqlite:///{tmp_path / 'old.db'}"
    with optistate.connect(source) as store:
        store.start_agent("cost", "Old").begin_workflow("w", data={"note": "ok"})
        store.database.execute_sql("""UPDATE agent_states SET workflow_data = '{"note":"\\ud800"}'""")
    path = tmp_path / "old.jsonl"

    result = run(source, "export", str(path))
    assert result.exit_code == 0, result.output
    assert '"workflow_data": {"note": "\\ud800"}' in path.read_text(encoding="utf-8")

    result = run(db_url, "import", str(path))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "agent_states: workflow_data['note']='\\ud800': holds a lone surrogate (U+D800)" in result.stderr
    assert set(counts(db_url).values()) == {0}


def test_a_failed_export_leaves_the_target_as_it_was(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    fill(source)
    with optistate.connect(source) as store:
        store.database.execute_sql(
            "UPDATE agent_metrics SET collection_timestamp = 'yesterday' WHERE id = (SELECT MAX(id) FROM agent_metrics)"
        )
    target = tmp_path / "agents.jsonl"
    target.write_text("the previous export\n")
    before = sorted(p.name for p in tmp_path.iterdir())

    result = run(source, "export", str(target))

    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "collection_timestamp='yesterday': is not a time as optistate stores one" in result.stderr
    assert target.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial file left beside it
