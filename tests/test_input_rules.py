"""One set of input rules on both backends (issue 8, items 1, 6, 7 and 11).

Every SDK input path refuses, with a ValidationError naming the field, what
PostgreSQL cannot hold: NUL and lone surrogates in any string, JSON nested
deeper than MAX_JSON_DEPTH or shaped wrongly for its column, numbers beyond a
double, times outside EARLIEST..LATEST. SQLite refuses the same, so its files
always move to PostgreSQL. Nothing refused is stored or buffered.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

import optistate
from optistate.errors import ValidationError
from optistate.fields import EARLIEST, FLOAT_MAX, LATEST, MAX_JSON_DEPTH

UTC = timezone.utc
WEST, EAST = timezone(timedelta(hours=-14)), timezone(timedelta(hours=14))
SECRET = "hunter2"


def nested(depth: int, leaf=1):
    """A JSON value ``depth`` levels deep: lists in a dict."""
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return {"d": value}


DEEP = nested(3000)

# case: (what to call on a started agent, the start of the message it must raise)
BAD = {
    # item 1: record_metric checks what the database would refuse at flush
    "metric_unit_long": (lambda a, s: a.record_metric("m", 1.0, unit="u" * 65), "metric_unit='uuu"),
    "metric_unit_nul": (lambda a, s: a.record_metric("m", 1.0, unit="s\x00"), r"metric_unit='s\x00': holds a NUL"),
    "metric_name_nul": (lambda a, s: a.record_metric("m\x00", 1.0), r"metric_name='m\x00': holds a NUL"),
    "metric_name_surrogate": (lambda a, s: a.record_metric("m\ud800", 1.0), "metric_name='m\\ud800': holds a lone"),
    "metric_meta_nul": (lambda a, s: a.record_metric("m", 1, metadata={"k": "v\x00"}), "metadata['k']='v\\x00'"),
    "metric_meta_key_nul": (lambda a, s: a.record_metric("m", 1, metadata={"k\x00": 1}), "metadata key='k\\x00'"),
    "metric_meta_surrogate": (lambda a, s: a.record_metric("m", 1, metadata={"k": ["\udc80"]}), "metadata['k'][0]="),
    "metric_meta_list": (lambda a, s: a.record_metric("m", 1, metadata=[1, 2]), "metadata=[1, 2]: must be a JSON"),
    "metric_meta_deep": (lambda a, s: a.record_metric("m", 1, metadata=DEEP), "metadata=<dict nested too deep"),
    "metric_meta_33": (lambda a, s: a.record_metric("m", 1, metadata=nested(MAX_JSON_DEPTH + 1)), "metadata=<dict"),
    "metric_meta_huge_int": (lambda a, s: a.record_metric("m", 1, metadata={"n": 10**400}), "metadata['n']=<an int"),
    "metric_value_huge": (lambda a, s: a.record_metric("m", 10**400), "metric_value=<an integer of about 401 digits>"),
    "metric_value_5000": (lambda a, s: a.record_metric("m", 10**5000), "metric_value=<an integer of about 5001"),
    "metric_late": (lambda a, s: a.record_metric("m", 1, timestamp=datetime(9999, 12, 31, 23, tzinfo=WEST)),
                    "collection_timestamp=datetime.datetime(9999, 12, 31, 23, 0, "),
    "metric_early": (lambda a, s: a.record_metric("m", 1, timestamp=datetime(1, 1, 1, tzinfo=EAST)),
                     "collection_timestamp=datetime.datetime(1, 1, 1, 0, 0, "),
    "metric_bogus_key": (lambda a, s: a.record_metrics([{"bogus": 1}]), "point={'bogus': 1}: has unknown keys (bogus)"),
    # item 7: every name, key, value, description and JSON value
    "config_key_nul": (lambda a, s: a.config.set("k\x00", 1, config_type="integer"), "config_key='k\\x00'"),
    "config_value_nul": (lambda a, s: a.config.set("k", "v\x00", config_type="string"), "k='v\\x00': holds a NUL"),
    "config_secret_nul": (lambda a, s: a.config.set("k", SECRET + "\x00", config_type="string", is_sensitive=True),
                          "k=***: holds a NUL"),
    "config_description_nul": (lambda a, s: a.config.set("k", "v", config_type="string", description="d\x00"),
                               "description='d\\x00'"),
    "config_json_nul": (lambda a, s: a.config.set("k", {"a": "\x00"}, config_type="json"), "k['a']='\\x00'"),
    "config_json_text_nul": (lambda a, s: a.config.set("k", '{"a": "\\u0000"}', config_type="json"), "k['a']="),
    "config_json_deep": (lambda a, s: a.config.set("k", DEEP, config_type="json"), "k=<dict nested too deep"),
    "config_json_text_deep": (lambda a, s: a.config.set("k", "[" * 100_000 + "]" * 100_000, config_type="json"),
                              "k='[[[["),
    "config_number_huge": (lambda a, s: a.config.set("k", 10**400, config_type="number"), "k=<an integer of about 401"),
    "config_integer_5000": (lambda a, s: a.config.set("k", 10**5000, config_type="integer"), "k=<an integer of about"),
    "config_integer_5000_text": (lambda a, s: a.config.set("k", "5" * 5000, config_type="integer"), "k='5555"),
    "config_float_huge": (lambda a, s: a.config.set("k", 10**400, config_type="float"), "k=<an integer of about 401"),
    "workflow_name_nul": (lambda a, s: a.begin_workflow("w\x00"), "current_workflow='w\\x00'"),
    "workflow_name_surrogate": (lambda a, s: a.begin_workflow("w\udfff"), "current_workflow='w\\udfff'"),
    "workflow_data_nul": (lambda a, s: a.begin_workflow("w", data={"a": "\x00"}), "workflow_data['a']="),
    "workflow_data_deep": (lambda a, s: a.begin_workflow("w", data=DEEP), "workflow_data=<dict nested too deep"),
    "workflow_data_list": (lambda a, s: a.begin_workflow("w", data=[1]), "workflow_data=[1]: must be a JSON object"),
    # item 11: a string is one lock, not a list of one-character locks
    "workflow_locks_string": (lambda a, s: a.begin_workflow("w", locks="billing_data"), "resource_locks='billing_"),
    "workflow_locks_numbers": (lambda a, s: a.begin_workflow("w", locks=[1]), "resource_locks=[1]: must be"),
    "resource_usage_nul": (lambda a, s: a.set_resource_usage({"cpu\x00": 1}), "resource_usage key='cpu\\x00'"),
    "start_name_nul": (lambda a, s: s.start_agent("cost", "x\x00"), "name='x\\x00'"),
    "start_endpoint_surrogate": (lambda a, s: s.start_agent("cost", "x", endpoint="http://\ud800"), "endpoint="),
    "lookup_name_nul": (lambda a, s: s.agent("x\x00"), "name='x\\x00'"),
    "capability_nul": (lambda a, s: a.enable_capability("c\x00"), "capability_name='c\\x00'"),
    "metrics_where_nan": (lambda a, s: a.metrics(where={"x": math.nan}), "metadata={'x': nan}: is not JSON"),
    "metrics_where_nul": (lambda a, s: a.metrics(where={"x": "\x00"}), "metadata['x']='\\x00'"),
    "metrics_since_early": (lambda a, s: a.metrics(since=datetime(1, 1, 1, tzinfo=UTC)), "collection_timestamp="),
}


@pytest.fixture
def agent(store):
    return store.start_agent("cost", "Rules")


def snapshot(store):
    """Every agent's stored rows, to show a refusal changed nothing."""
    return {m._meta.table_name: sorted(map(str, m.select().dicts())) for m in store.models.MODELS}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_a_validation_error_and_changes_nothing(store, agent, case):
    call, message = BAD[case]
    before = snapshot(store)

    with pytest.raises(ValidationError) as caught:
        call(agent, store)

    assert str(caught.value).startswith(message), str(caught.value)[:200]
    assert SECRET not in str(caught.value)
    assert agent.flush() == 0  # nothing was buffered
    assert snapshot(store) == before


def test_a_refused_point_leaves_the_good_ones_to_flush(agent):
    for i in range(3):
        agent.record_metric("good", i)
    for bad in ({"unit": "u" * 65}, {"metadata": {"k": "\x00"}}, {"name": "\ud800"}, {"value": 10**400}):
        with pytest.raises(ValidationError):
            agent.record_metric(**{"name": "bad", "value": 1.0, **bad})

    assert agent.flush() == 3
    assert [m.metric_value for m in agent.metrics("good")] == [0, 1, 2]
    agent.stop()


def test_nesting_up_to_the_limit_is_stored_and_read_back(agent):
    deepest = nested(MAX_JSON_DEPTH, "leaf")
    agent.record_metric("deep", 1.0, metadata=deepest)
    agent.flush()
    agent.begin_workflow("deep", data=deepest)
    agent.config.set("deep", deepest, config_type="json")
    agent.config.refresh()

    assert agent.metrics("deep")[0].metadata == deepest
    assert agent.state().workflow_data == deepest
    assert agent.config["deep"] == deepest


def test_whole_numbers_stay_exact(store, agent):
    """A number config of 12345678901234567890 read back as 12345678901234567168 (item 11)."""
    agent.config.set("big", 12345678901234567890, config_type="number")
    agent.config.set("big_text", "-98765432109876543210", config_type="number")
    agent.config.set("largest", int(FLOAT_MAX), config_type="integer")
    agent.config.set("ratio", 0.85, config_type="number")

    fresh = store.agent("Rules").config
    assert fresh["big"] == 12345678901234567890 and type(fresh["big"]) is int
    assert fresh["big_text"] == -98765432109876543210
    assert fresh["largest"] == int(FLOAT_MAX)
    assert fresh["ratio"] == 0.85 and type(fresh["ratio"]) is float
    assert fresh.entry("big").config_value == "12345678901234567890"


def test_a_users_exception_is_reraised_and_stored_sanitised(agent):
    """The user's own exception, not an encoding or database error, leaves the with block (item 7)."""
    error = RuntimeError("bad \x00 byte and \ud800 half")

    with pytest.raises(RuntimeError) as caught:
        with agent.workflow("w", data={"step": 1}):
            raise error

    assert caught.value is error
    state = agent.state()
    assert state.status == "error" and state.error_count == 1
    assert state.last_error["error"] == "RuntimeError"
    assert state.last_error["message"] == "bad \ufffd byte and \ufffd half"


def test_an_exception_whose_str_fails_is_still_recorded(agent):
    class Opaque(Exception):
        def __str__(self):
            raise TypeError("no text")

    with pytest.raises(Opaque):
        with agent.workflow("w"):
            raise Opaque()
    assert agent.state().last_error["message"] == "<unprintable Opaque>"


class TestTimes:
    """Item 6: every time from EARLIEST to LATEST is stored in an order-keeping form and reads back."""

    TIMES = (datetime(1, 1, 2, tzinfo=UTC), datetime(999, 12, 31, 23, 59, tzinfo=UTC),
             datetime(2000, 1, 1, tzinfo=UTC), datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC))

    def test_range_ends(self):
        assert (EARLIEST, LATEST) == (self.TIMES[0], self.TIMES[-1])

    def test_early_and_late_times_keep_their_order(self, agent):
        for value, moment in enumerate(reversed(self.TIMES)):
            agent.record_metric("t", value, timestamp=moment)
        agent.flush()

        assert tuple(m.collection_timestamp for m in agent.metrics("t")) == self.TIMES
        assert tuple(m.collection_timestamp for m in agent.metrics("t", since=self.TIMES[2])) == self.TIMES[2:]
        assert tuple(m.collection_timestamp for m in agent.metrics("t", until=self.TIMES[1])) == self.TIMES[:2]
        assert agent.aggregate("t", "count", since=datetime(2000, 1, 1, tzinfo=UTC)) == 2

    def test_stored_form_sorts_as_text_on_sqlite(self, agent, backend):
        agent.record_metric("t", 1, timestamp=datetime(999, 1, 1, tzinfo=UTC))
        agent.flush()
        raw = agent.database.execute_sql("SELECT collection_timestamp FROM agent_metrics").fetchone()[0]
        if backend == "sqlite":
            assert raw == "0999-01-01 00:00:00.000000+00:00"
        else:
            assert raw == datetime(999, 1, 1, tzinfo=UTC)

    @pytest.mark.parametrize("zone", ["Etc/GMT-14", "Etc/GMT+12"])
    def test_the_range_ends_read_back_in_any_session_time_zone(self, agent, backend, zone):
        """The day of margin: PostgreSQL converts to the session's zone before Python sees the time."""
        for moment in (EARLIEST, LATEST):
            agent.record_metric("edge", 1, timestamp=moment)
        agent.flush()
        if backend != "sqlite":
            agent.database.execute_sql(f"SET TIME ZONE '{zone}'")
        assert [m.collection_timestamp for m in agent.metrics("edge")] == [EARLIEST, LATEST]

    @pytest.fixture
    def sqlite_agent(self, sqlite_url):
        """SQLite only: its times are text, which earlier versions or other writers may have left odd."""
        with optistate.connect(sqlite_url) as store:
            yield store.start_agent("cost", "Rules")

    def test_unpadded_years_stored_by_earlier_versions_read_back(self, sqlite_agent):
        agent = sqlite_agent
        agent.record_metric("old", 1)
        agent.flush()
        agent.database.execute_sql("UPDATE agent_metrics SET collection_timestamp = '999-01-01 00:00:00.000000+00:00'")
        assert [m.collection_timestamp for m in agent.metrics("old")] == [datetime(999, 1, 1, tzinfo=UTC)]

    def test_a_time_no_version_stores_is_a_validation_error_on_read(self, sqlite_agent):
        agent = sqlite_agent
        agent.record_metric("odd", 1)
        agent.flush()
        agent.database.execute_sql("UPDATE agent_metrics SET collection_timestamp = 'yesterday'")
        with pytest.raises(ValidationError, match="collection_timestamp='yesterday': is not a time"):
            agent.metrics("odd")


@pytest.mark.parametrize(
    ("write", "field"),
    [
        (lambda a: a.set_resource_usage([1]), "resource_usage"),
        (lambda a: a.record_metrics([5]), "point"),
        (lambda a: a.workflow("w", locks="gpu").__enter__(), "locks"),
    ],
)
def test_wrong_shapes_are_validation_errors(store, write, field):
    agent = store.start_agent("cost")
    with pytest.raises(ValidationError, match=f"^{field}="):
        write(agent)
