"""aggregate(..., every=): buckets computed by the database, the same on both backends; the CLI's --every."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from optistate.cli import cli
from optistate.errors import ValidationError
from optistate.timeseries import ORIGIN, parse_duration

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a multiple of 5 minutes after the epoch
POINTS = [  # (offset from T0, value)
    (timedelta(0), 1.0),  # the first instant of bucket 12:00
    (timedelta(minutes=4, seconds=59, microseconds=999_999), 3.0),  # its last microsecond
    (timedelta(minutes=5), 10.0),  # the first of bucket 12:05
    (timedelta(minutes=17), 7.0),  # bucket 12:15; 12:10 holds nothing
    (-timedelta(microseconds=1), 100.0),  # the last microsecond of bucket 11:55
]


@pytest.fixture
def agent(store):
    handle = store.start_agent("cost", name="Buckets")
    handle.record_metrics({"name": "gpu", "value": v, "timestamp": T0 + d} for d, v in POINTS)
    handle.record_metric("other", 1000.0, timestamp=T0)
    handle.flush()
    return handle


def at(hour, minute):
    return datetime(2026, 3, 1, hour, minute, tzinfo=UTC)


def test_buckets_start_a_whole_number_of_widths_after_the_epoch_and_split_at_their_boundaries(agent):
    assert agent.aggregate("gpu", "avg", every=timedelta(minutes=5)) == [
        (at(11, 55), 100.0), (at(12, 0), 2.0), (at(12, 5), 10.0), (at(12, 15), 7.0),
    ]
    assert agent.aggregate("gpu", "count", every=timedelta(minutes=5)) == [
        (at(11, 55), 1), (at(12, 0), 2), (at(12, 5), 1), (at(12, 15), 1),
    ]
    assert agent.aggregate("gpu", "max", every=timedelta(hours=1)) == [(at(11, 0), 100.0), (at(12, 0), 10.0)]
    for start, _ in agent.aggregate("gpu", "sum", every=timedelta(seconds=7)):
        assert (start - ORIGIN) % timedelta(seconds=7) == timedelta(0) and start.tzinfo is not None


def test_buckets_follow_since_until_and_where_and_leave_empty_buckets_out(agent):
    got = agent.aggregate("gpu", "sum", since=T0, until=T0 + timedelta(minutes=5), every=timedelta(minutes=5))
    assert got == [(at(12, 0), 4.0), (at(12, 5), 10.0)]
    assert agent.aggregate("gpu", "avg", where={"region": "nowhere"}, every=timedelta(minutes=5)) == []
    assert agent.aggregate("gpu", "avg") == pytest.approx(121.0 / 5)  # without every: one value, as before


def test_a_day_bucket_starts_at_midnight_utc_and_sub_second_widths_work(agent):
    assert agent.aggregate("gpu", "count", every=timedelta(days=1)) == [(datetime(2026, 3, 1, tzinfo=UTC), 5)]
    micro = agent.aggregate("gpu", "count", every=timedelta(microseconds=2), since=T0 - timedelta(microseconds=1),
                            until=T0)
    assert micro == [(T0 - timedelta(microseconds=2), 1), (T0, 1)]


@pytest.mark.parametrize("every", [timedelta(0), -timedelta(minutes=1), 300, "5m"])
def test_a_bad_width_is_refused_naming_it(agent, every):
    with pytest.raises(ValidationError, match="every=") as caught:
        agent.aggregate("gpu", "avg", every=every)
    assert caught.value.field == "every"


@pytest.mark.parametrize(("text", "expected"), [("30s", timedelta(seconds=30)), ("5m", timedelta(minutes=5)),
                                                ("1h", timedelta(hours=1)), ("1d", timedelta(days=1))])
def test_durations_parse(text, expected):
    assert parse_duration("every", text) == expected


@pytest.mark.parametrize("text", ["", "5", "0m", "-5m", "5 minutes", "1.5h", "5M", "1w"])
def test_bad_durations_are_refused_naming_them(text):
    with pytest.raises(ValidationError, match="must be a positive whole number"):
        parse_duration("every", text)


def test_the_cli_prints_the_buckets(agent, db_url):
    result = CliRunner().invoke(cli, ["--database", db_url, "metrics", "Buckets", "--name", "gpu", "--agg", "avg",
                                      "--every", "5m"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["BUCKET_START", "AVG(gpu)"]
    assert [line.split() for line in lines[1:]] == [
        ["2026-03-01T11:55:00+00:00", "100"], ["2026-03-01T12:00:00+00:00", "2"],
        ["2026-03-01T12:05:00+00:00", "10"], ["2026-03-01T12:15:00+00:00", "7"],
    ]
    result = CliRunner().invoke(cli, ["--database", db_url, "metrics", "Buckets", "--name", "gpu", "--agg", "count",
                                      "--every", "1h", "--json"])
    assert json.loads(result.stdout) == [{"bucket_start": "2026-03-01T11:00:00+00:00", "value": 1},
                                         {"bucket_start": "2026-03-01T12:00:00+00:00", "value": 4}]


@pytest.mark.parametrize(("args", "message"), [(["--agg", "avg", "--every", "5 min"], "'5 min' must be a positive"),
                                               (["--every", "5m"], "--every needs --agg")])
def test_the_cli_refuses_a_bad_every_as_a_usage_error(agent, db_url, args, message):
    result = CliRunner().invoke(cli, ["--database", db_url, "metrics", "Buckets", "--name", "gpu", *args])
    assert result.exit_code == 2 and message in result.stderr
