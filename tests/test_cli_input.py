"""The command's bad input ends in one message and an exit code, never a traceback (issue 8, item 8).

Import and export cases are in test_transfer.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

import optistate
from optistate.cli import cli


def run(url, *args):
    return CliRunner().invoke(cli, ["--database", url, *args])


@pytest.fixture
def tagged(db_url):
    """An agent whose points carry the strings 'NaN' and 'Infinity' and the number 1 as metadata."""
    with optistate.connect(db_url) as store:
        agent = store.start_agent("cost", "Tagged")
        at = datetime(2025, 1, 1, tzinfo=timezone.utc)
        for value, tag in enumerate(["NaN", "Infinity", "-Infinity", 1]):
            agent.record_metric("m", value, metadata={"x": tag}, timestamp=at)
        agent.flush()
    return db_url


@pytest.mark.parametrize(("given", "value"), [("NaN", 0), ("Infinity", 1), ("-Infinity", 2), ("1", 3)])
def test_where_reads_nan_and_infinity_as_text(tagged, given, value):
    """JSON has no NaN: --where x=NaN matches the string, as --where region=us-west does."""
    result = run(tagged, "metrics", "Tagged", "--where", f"x={given}", "--json")
    assert result.exit_code == 0, result.output
    assert [row["metric_value"] for row in json.loads(result.stdout)] == [value]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "0001-01-01T00:00:00+14:00"], "'0001-01-01T00:00:00+14:00' is outside 0001-01-02 to 9999-12-30"),
        (["--until", "9999-12-31T23:00:00-14:00"], "'9999-12-31T23:00:00-14:00' is outside 0001-01-02 to 9999-12-30"),
        (["--where", "x=" + "[" * 3000 + "]" * 3000], "is nested deeper than 32 levels"),
        (["--where", "x=" + "[" * 33 + "]" * 33], "is nested deeper than 32 levels"),
        (["--where", 'x="\\u0000"'], "x='\\x00': holds a NUL character"),
        (["--where", "x\udc80=1"], "key='x\\udc80': holds a lone surrogate"),
    ],
    ids=["since", "until", "where_deep", "where_33", "where_nul", "where_surrogate_key"],
)
def test_bad_options_are_usage_errors(tagged, args, message):
    result = run(tagged, "metrics", "Tagged", *args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # click's own exit, not an exception escaping
    assert message in result.stderr and "Traceback" not in result.stderr
