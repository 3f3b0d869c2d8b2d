"""The embedding API on both backends: start, config, state, workflows, capabilities, metrics."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

import optistate
from optistate import Capability, Config, hookimpl
from optistate.errors import NotFoundError, OptistateError, UnknownAgentType, ValidationError
from optistate.models import AgentConfig, AgentMetric
from optistate.testing import count_statements as count_queries


class ProbePlugin:
    """An agent type registered in code, with a sensitive key and a validator."""

    def __init__(self, configs=None, capabilities=None, type_name="probe"):
        self.type_name = type_name
        self.configs = configs or [
            Config("batch_size", 32, "integer", "Points per batch"),
            Config("target_percent", 75, "number", "Target utilisation"),
            Config("api_key", "s3cr3t-default", "string", "Provider key", sensitive=True),
        ]
        self.capabilities = capabilities or [
            Capability("kv_cache_tuning", "1.0.0", "old", {"engines": ["vllm"]}, enabled=False),
            Capability("kv_cache_tuning", "2.1.0", "new", {"engines": ["vllm", "tgi"]}),
            Capability("kv_cache_tuning", "2.0.0", "mid", {}),
        ]

    @hookimpl
    def register_agent_types(self, register):
        register(self.type_name, configs=self.configs, capabilities=self.capabilities)

    @hookimpl
    def validate_config(self, agent_type, key, value):
        if agent_type == "probe" and key == "target_percent" and not 0 <= value <= 100:
            return "must be 0 to 100"
        return None


@pytest.fixture
def probe(store):
    store.plugins.register(ProbePlugin(), name="probe")
    return store.start_agent("probe", name="Probe 1", version="1.0.0", endpoint="http://probe:8000")


def counts(store):
    m = store.models
    return {model.__name__: model.select().count() for model in m.MODELS}


class TestStart:
    def test_a_newer_plugin_raises_a_keys_sensitivity_and_never_lowers_it(self, store):
        store.plugins.register(ProbePlugin(configs=[Config("token", "t-1", "string")], type_name="p"), name="v1")
        agent = store.start_agent("p")
        agent.config.set("token", "t-changed")
        store.plugins.unregister("v1")
        store.plugins.register(ProbePlugin(configs=[Config("token", "t-1", "string", sensitive=True)], type_name="p"),
                               name="v2")
        for _ in range(2):  # the second start reuses the cached statement on PostgreSQL
            agent = store.start_agent("p")
            agent.config.refresh()
            entry = agent.config.entry("token")
            assert (entry.is_sensitive, entry.config_value) == (True, "t-changed")
            assert "t-changed" not in repr(agent.config)
        store.plugins.unregister("v2")
        store.plugins.register(ProbePlugin(configs=[Config("token", "t-1", "string")], type_name="p"), name="v3")
        agent = store.start_agent("p")
        agent.config.refresh()
        assert agent.config.entry("token").is_sensitive is True

    def test_defaults_that_look_like_stand_ins_are_stored_as_declared(self, store):
        lookalikes = ["00000000000000000000000000000002", "name", "version", "endpoint", "id"]
        configs = [Config(f"k{i}", text, "string") for i, text in enumerate(lookalikes)]
        store.plugins.register(ProbePlugin(configs=configs, type_name="lookalike"), name="lookalike")
        for run in range(2):  # the second start reuses the cached statement on PostgreSQL
            agent = store.start_agent("lookalike", name=f"L{run}", version="2.0.0", endpoint="http://e")
            assert [agent.config[f"k{i}"] for i in range(len(lookalikes))] == lookalikes
            row = agent.registration()
            assert (row.name, row.version, row.endpoint) == (f"L{run}", "2.0.0", "http://e")

    def test_start_registers_agent_defaults_and_idle_state(self, store, probe):
        row = probe.registration()
        assert (row.type, row.name, row.version, row.endpoint, row.status) == (
            "probe",
            "Probe 1",
            "1.0.0",
            "http://probe:8000",
            "active",
        )
        assert probe.config["batch_size"] == 32
        assert probe.config["target_percent"] == 75
        state = probe.state()
        assert state.status == "idle" and state.error_count == 0 and state.resource_locks == []
        assert row.last_heartbeat.tzinfo is not None
        assert counts(store) == {"Agent": 1, "AgentConfig": 3, "AgentState": 1, "AgentCapability": 3, "AgentMetric": 0}

    def test_statements_are_constant_whatever_the_number_of_defaults(self, db_url, backend):
        store = optistate.connect(db_url, watch=False)  # the config watch's first read is not start's
        few = ProbePlugin([Config("a", 1, "integer")], [Capability("c", "1.0.0")], type_name="few")
        many = ProbePlugin(
            [Config(f"k{i}", i, "integer") for i in range(40)],
            [Capability("c", f"1.{i}.0") for i in range(40)],
            type_name="many",
        )

        def statements(plugin):
            store.plugins.register(plugin, name=plugin.type_name)
            store.plugins.agent_type(plugin.type_name)  # plugins are loaded before counting
            with count_queries() as counter:
                store.start_agent(plugin.type_name)
            return counter.count

        # SQLite: the four writes, with the change log's actor set before them and cleared before COMMIT
        assert statements(few) == statements(many) == (6 if backend == "sqlite" else 1)
        assert store.models.AgentConfig.select().count() == 41
        store.close()

    def test_restart_updates_registration_and_keeps_changed_values(self, store, probe):
        probe.config.set("batch_size", 64)
        again = store.start_agent("probe", name="Probe 1", version="1.1.0", endpoint=None)
        assert again.id == probe.id
        row = again.registration()
        assert (row.version, row.endpoint) == ("1.1.0", None)
        assert again.config["batch_size"] == 64
        assert counts(store)["AgentConfig"] == 3 and counts(store)["AgentState"] == 1

    def test_a_newer_plugin_adds_defaults_on_next_start(self, store, probe):
        store.plugins.unregister("probe")
        newer = ProbePlugin()
        newer.configs = [*newer.configs, Config("window_seconds", 30, "integer")]
        newer.capabilities = [*newer.capabilities, Capability("kv_cache_tuning", "3.0.0")]
        store.plugins.register(newer, name="probe-newer")
        again = store.start_agent("probe", name="Probe 1")
        assert again.config["window_seconds"] == 30
        assert [c.capability_version for c in again.capabilities()] == ["1.0.0", "2.0.0", "2.1.0", "3.0.0"]

    def test_agents_of_one_type_get_their_own_rows(self, store, probe):
        second = store.start_agent("probe", name="Probe 2", version="2.0.0", endpoint="http://two")
        assert second.id != probe.id
        row = second.registration()
        assert (row.name, row.version, row.endpoint) == ("Probe 2", "2.0.0", "http://two")
        assert second.config["batch_size"] == 32 and len(second.capabilities()) == 3
        assert counts(store)["AgentConfig"] == 6 and counts(store)["AgentState"] == 2

    def test_unknown_type_lists_registered_types(self, store):
        store.plugins.register(ProbePlugin(), name="probe")
        with pytest.raises(UnknownAgentType, match=r"'nope'.*registered types: .*probe"):
            store.start_agent("nope")
        assert counts(store)["Agent"] == 0

    def test_bad_registration_values_store_nothing(self, store):
        store.plugins.register(ProbePlugin(), name="probe")
        with pytest.raises(ValidationError, match="name"):
            store.start_agent("probe", name="")
        with pytest.raises(ValidationError, match="endpoint"):
            store.start_agent("probe", name="x", endpoint=42)
        with pytest.raises(ValidationError, match=r"endpoint=.*longer than 1024"):
            store.start_agent("probe", name="x", endpoint="h" * 1025)
        with pytest.raises(ValidationError, match=r"name=.*longer than 255"):
            store.start_agent("probe", name="n" * 256)
        assert counts(store)["Agent"] == 0

    def test_attach_by_name_and_list(self, store, probe):
        assert store.agent("Probe 1").id == probe.id
        assert store.agent(str(probe.id)).id == probe.id
        assert [a.name for a in store.agents(type="probe")] == ["Probe 1"]
        with pytest.raises(NotFoundError, match="'ghost'"):
            store.agent("ghost")

    def test_connect_binds_the_module_models(self, store, probe):
        assert AgentConfig.select().where(AgentConfig.agent == probe.id).count() == 3


class LeakyValidator:
    """A plugin whose check raises with the value in its message."""

    @hookimpl
    def validate_config(self, agent_type, key, value):
        if key == "api_key" and value.startswith("sk-leak"):
            raise RuntimeError(f"refusing {value}")


def _chain(exc):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


class TestSecretsOnExceptions:
    @pytest.mark.parametrize(
        ("write", "error"),
        [
            (lambda a: a.config.set("pin", "sk-leak-1", config_type="integer", is_sensitive=True), ValidationError),
            (lambda a: a.config.set("blob", "{sk-leak-1", config_type="json", is_sensitive=True), ValidationError),
            (lambda a: a.config.set("api_key", "sk-leak-1"), optistate.errors.PluginError),
        ],
    )
    def test_an_error_about_a_sensitive_value_carries_no_copy_of_it(self, probe, store, write, error):
        store.plugins.register(LeakyValidator(), name="leaky")
        with pytest.raises(error) as caught:
            write(probe)
        chained = list(_chain(caught.value))
        assert chained == [caught.value], chained
        shown = [str(caught.value), repr(caught.value), repr(vars(caught.value)), repr(caught.value.args)]
        assert not [text for text in shown if "sk-leak" in text], shown

    def test_an_error_about_a_plain_value_keeps_its_cause(self, probe):
        with pytest.raises(ValidationError) as caught:
            probe.config.set("batch_size", "many")
        assert caught.value.value == "many"


class TestConfig:
    def test_typed_reads_and_canonical_string(self, probe, store):
        probe.config.set("max_cost", "5000", config_type="integer", description="Maximum cost")
        assert probe.config["max_cost"] == 5000
        row = store.models.AgentConfig.get(store.models.AgentConfig.config_key == "max_cost")
        assert row.config_value == "5000" and row.description == "Maximum cost"

    @pytest.mark.parametrize(
        "kind,value,expected",
        [
            ("string", "x", "x"),
            ("integer", 7, 7),
            ("float", 0.5, 0.5),
            ("number", 2.5, 2.5),
            ("number", 3, 3),
            ("boolean", True, True),
            ("boolean", "false", False),
            ("json", {"a": [1]}, {"a": [1]}),
        ],
    )
    def test_every_type_round_trips(self, probe, kind, value, expected):
        probe.config.set(f"k_{kind}", value, config_type=kind)
        probe.config.refresh()
        assert probe.config[f"k_{kind}"] == expected

    def test_existing_key_keeps_its_type(self, probe):
        with pytest.raises(ValidationError, match=r"batch_size.*integer"):
            probe.config.set("batch_size", "x", config_type="string")
        with pytest.raises(ValidationError, match=r"batch_size='abc': does not parse as integer"):
            probe.config.set("batch_size", "abc")
        probe.config.refresh()
        assert probe.config["batch_size"] == 32

    def test_new_key_needs_a_type_and_a_known_one(self, probe):
        with pytest.raises(ValidationError, match=r"config_type.*required"):
            probe.config.set("fresh", 1)
        with pytest.raises(ValidationError, match="config_type='decimal'"):
            probe.config.set("fresh", 1, config_type="decimal")
        probe.config.refresh()
        assert "fresh" not in probe.config

    def test_plugin_validator_refuses(self, probe):
        with pytest.raises(ValidationError, match=r"target_percent=150: must be 0 to 100"):
            probe.config.set("target_percent", 150)
        probe.config.refresh()
        assert probe.config["target_percent"] == 75

    def test_reads_are_cached_until_refresh(self, probe, store, db_url):
        probe = optistate.connect(db_url, plugins=store.plugins, watch=False).agent("Probe 1")  # no config watch
        assert probe.config["batch_size"] == 32
        other = optistate.Store(store.database, store.plugins).agent("Probe 1")
        other.config.set("batch_size", 99)
        with count_queries() as counter:
            assert probe.config["batch_size"] == 32
        assert counter.count == 0
        probe.config.refresh()
        assert probe.config["batch_size"] == 99

    def test_unknown_key(self, probe):
        with pytest.raises(NotFoundError, match="'missing'"):
            probe.config["missing"]
        assert probe.config.get("missing", 5) == 5

    def test_sensitive_values_never_shown(self, probe):
        probe.config.set("api_key", "sk-live-123", is_sensitive=True)
        assert probe.config["api_key"] == "sk-live-123"
        for text in (repr(probe.config), str(probe.config), repr(probe.config.entries())):
            assert "sk-live-123" not in text and "s3cr3t" not in text
        with pytest.raises(ValidationError) as raised:
            probe.config.set("secret_n", "not-a-number", config_type="integer", is_sensitive=True)
        assert "not-a-number" not in str(raised.value) and "***" in str(raised.value)


class TestState:
    def test_heartbeat_moves_both_stamps(self, probe):
        before, state_before = probe.registration().last_heartbeat, probe.state().last_heartbeat
        probe.heartbeat()
        assert probe.registration().last_heartbeat > before
        assert probe.state().last_heartbeat > state_before

    def test_set_status(self, probe):
        probe.set_status("busy")
        assert probe.state().status == "busy"
        with pytest.raises(ValidationError, match="status='sleeping'"):
            probe.set_status("sleeping")
        assert probe.state().status == "busy"

    def test_workflow_normal_exit_returns_to_idle(self, probe):
        with probe.workflow("cost_analysis", data={"customer_id": "c1"}, locks=["gpu_cluster_1"]) as wf:
            state = probe.state()
            assert (state.status, state.current_workflow, state.workflow_data, state.resource_locks) == (
                "active",
                "cost_analysis",
                {"customer_id": "c1"},
                ["gpu_cluster_1"],
            )
            wf.update(progress=50)
            assert probe.state().workflow_data == {"customer_id": "c1", "progress": 50}
        state = probe.state()
        assert (state.status, state.current_workflow, state.resource_locks) == ("idle", None, [])

    def test_workflow_exception_is_recorded_and_reraised(self, probe):
        with pytest.raises(RuntimeError, match="threshold breach"):
            with probe.workflow("quality_check"):
                raise RuntimeError("threshold breach")
        state = probe.state()
        assert state.status == "error" and state.error_count == 1
        assert state.last_error["error"] == "RuntimeError"
        assert state.last_error["message"] == "threshold breach"
        assert datetime.fromisoformat(state.last_error["timestamp"]).tzinfo is not None
        with pytest.raises(ValueError):
            with probe.workflow("again"):
                raise ValueError("second")
        assert probe.state().error_count == 2

    def test_workflow_data_must_be_json(self, probe):
        with pytest.raises(ValidationError, match="workflow_data"):
            probe.begin_workflow("w", data={"x": object()})
        assert probe.state().current_workflow is None

    def test_stop_flushes_goes_offline_and_leaves_the_state_idle(self, probe, store):
        probe.begin_workflow("w", {"x": 1}, locks=["db"])
        probe.record_metric("m", 1.0)
        probe.stop()
        state = probe.state()
        assert probe.registration().status == "offline"
        assert (state.status, state.current_workflow, state.workflow_data) == ("idle", None, {})
        assert state.resource_locks == []
        assert len(probe.metrics("m")) == 1
        assert [row["status"] for row in store.overview()] == ["offline"]
        assert [a.name for a in store.agents(status="offline")] == [r["name"] for r in store.overview(status="offline")]
        assert store.agents(status="idle") == [] and store.overview(status="idle") == []


class TestDeletedAgent:
    """Another process deleted the agent (``import --replace``, ``demo --reset``): writes say so."""

    @pytest.fixture
    def gone(self, probe, store):
        store.models.Agent.delete().where(store.models.Agent.id == probe.id).execute()
        return probe

    @pytest.mark.parametrize(
        "write",
        [
            lambda a: a.heartbeat(),
            lambda a: a.set_status("busy"),
            lambda a: a.set_resource_usage({"cpu": 1}),
            lambda a: a.begin_workflow("w"),
            lambda a: a.finish_workflow(),
            lambda a: a.config.set("batch_size", 64),
            lambda a: a.config.set("new_key", 1),
            lambda a: a.config.set("new_key", 1, config_type="integer"),
            lambda a: a.enable_capability("kv_cache_tuning"),
            lambda a: a.disable_capability("kv_cache_tuning", "2.0.0"),
        ],
    )
    def test_a_write_raises_not_found_naming_the_agent(self, gone, write):
        with pytest.raises(NotFoundError, match="agent 'Probe 1' not found; it was deleted"):
            write(gone)

    def test_a_workflow_block_raises_not_found(self, gone):
        with pytest.raises(NotFoundError, match="agent 'Probe 1'"):
            with gone.workflow("w"):
                pass  # pragma: no cover - begin_workflow raises first


class TestCapabilities:
    def test_list_enabled_and_ranges(self, probe):
        assert len(probe.capabilities()) == 3
        assert [c.capability_version for c in probe.capabilities(enabled=True)] == ["2.0.0", "2.1.0"]
        assert probe.capability("kv_cache_tuning", ">=2.0").capability_version == "2.1.0"
        assert probe.capability("kv_cache_tuning", ">=2.0,<2.1").capability_version == "2.0.0"
        assert probe.capability("kv_cache_tuning", "^1.0") is None  # 1.0.0 is disabled
        assert probe.capability("kv_cache_tuning", "^1.0", enabled_only=False).capability_version == "1.0.0"
        assert probe.capability("kv_cache_tuning", ">=4") is None
        assert probe.capability("nothing") is None
        with pytest.raises(ValidationError, match="version range"):
            probe.capability("kv_cache_tuning", ">=two")

    def test_enable_disable(self, probe):
        assert probe.enable_capability("kv_cache_tuning", "1.0.0") == 1
        assert len(probe.capabilities(enabled=True)) == 3
        assert probe.disable_capability("kv_cache_tuning") == 3
        assert probe.capabilities(enabled=True) == []
        with pytest.raises(NotFoundError, match="nope"):
            probe.enable_capability("nope")


class TestMetrics:
    def test_record_validates_at_call_time(self, probe):
        for bad, field in (
            (math.nan, "metric_value"),
            (math.inf, "metric_value"),
            ("abc", "metric_value"),
            (True, "metric_value"),
        ):
            with pytest.raises(ValidationError, match=field):
                probe.record_metric("m", bad)
        with pytest.raises(ValidationError, match="metric_type='rate'"):
            probe.record_metric("m", 1.0, metric_type="rate")
        with pytest.raises(ValidationError, match="metadata"):
            probe.record_metric("m", 1.0, metadata={"x": {1, 2}})
        assert probe.flush() == 0 and probe.metrics() == []

    def test_bulk_is_all_or_nothing(self, probe):
        with pytest.raises(ValidationError, match="metric_value"):
            probe.record_metrics([{"name": "m", "value": 1.0}, {"name": "m", "value": math.nan}])
        assert probe.flush() == 0
        probe.record_metrics({"name": "m", "value": float(i)} for i in range(10))
        assert probe.flush() == 10

    def test_time_series_query_and_aggregates(self, probe):
        base = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
        for hour, value in enumerate([100.0, 200.0, 150.0, 175.0, 225.0]):
            probe.record_metric(
                "request_count", value, unit="count", timestamp=base + timedelta(hours=hour), metadata={"hour": hour}
            )
        probe.record_metric("other", 1.0, timestamp=base)
        assert probe.flush() == 6
        rows = probe.metrics("request_count", since=base + timedelta(hours=1), until=base + timedelta(hours=3))
        assert [r.metric_value for r in rows] == [200.0, 150.0, 175.0]
        assert all(r.collection_timestamp.tzinfo is not None for r in rows)
        assert probe.aggregate("request_count", "avg") == 170.0
        assert probe.aggregate("request_count", "min") == 100.0
        assert probe.aggregate("request_count", "max") == 225.0
        assert probe.aggregate("request_count", "sum") == 850.0
        assert probe.aggregate("request_count", "count") == 5
        assert probe.aggregate("missing", "avg") is None
        with pytest.raises(ValidationError, match="aggregate='median'"):
            probe.aggregate("request_count", "median")
        assert [(m.metric_name, m.metric_value) for m in probe.latest_metrics()] == [
            ("other", 1.0),
            ("request_count", 225.0),
        ]

    def test_metadata_containment_search(self, probe, store):
        probe.record_metric("latency", 100.0, "ms", metadata={"region": "us-west", "env": "prod"})
        probe.record_metric("latency", 150.0, "ms", metadata={"region": "us-east", "env": "prod"})
        probe.flush()
        assert [m.metric_value for m in probe.metrics(where={"region": "us-west"})] == [100.0]
        assert len(probe.metrics(where={"env": "prod"})) == 2
        assert probe.aggregate("latency", "sum", where={"region": "us-east"}) == 150.0
        query = AgentMetric.select().where(AgentMetric.metadata["region"] == "us-west")
        assert [m.metric_value for m in query] == [100.0]

    def test_text_with_copy_special_characters(self, probe):
        probe.record_metric("tab\tname", 1.0, unit="back\\slash", metadata={"note": "line\nbreak\t\\"})
        probe.flush()
        row = probe.metrics()[0]
        assert (row.metric_name, row.metric_unit, row.metadata) == (
            "tab\tname",
            "back\\slash",
            {"note": "line\nbreak\t\\"},
        )

    def test_buffer_flushes_when_full(self, probe):
        probe.buffer.size = 3
        for i in range(7):
            probe.record_metric("m", float(i))
        assert len(probe.metrics("m")) == 6
        assert probe.flush() == 1


def test_two_stores_in_one_process_do_not_step_on_each_other(sqlite_url, pg_url):
    plugin = ProbePlugin()
    with optistate.connect(sqlite_url) as lite, optistate.connect(pg_url) as pg:
        for store in (lite, pg):
            store.plugins.register(plugin, name="probe")
        a = lite.start_agent("probe", name="lite")
        b = pg.start_agent("probe", name="pg")
        a.record_metric("m", 1.0, metadata={"where": "lite"})
        b.record_metric("m", 2.0, metadata={"where": "pg"})
        a.flush(), b.flush()
        assert [x.name for x in lite.agents()] == ["lite"] and [x.name for x in pg.agents()] == ["pg"]
        assert [m.metadata for m in a.metrics()] == [{"where": "lite"}]
        assert [m.metadata for m in b.metrics()] == [{"where": "pg"}]


def test_every_error_is_an_optistate_error():
    classes = [getattr(optistate.errors, n) for n in optistate.errors.__all__ if n[0].isupper() and n != "MASK"]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, OptistateError)


def test_metadata_search_uses_the_gin_index_on_postgresql(pg_url):
    with optistate.connect(pg_url) as store:
        store.plugins.register(ProbePlugin(), name="probe")
        agent = store.start_agent("probe")
        points = ({"name": "m", "value": float(i), "metadata": {"region": f"r{i % 50}"}} for i in range(2000))
        agent.record_metrics(points)
        agent.flush()
        store.database.execute_sql("ANALYZE agent_metrics")
        query = agent.metric_reader.select(None, None, None, {"region": "r7"})
        sql, params = query.sql()
        with store.database.atomic():  # one transaction: through a pooler the next one may be another session
            store.database.execute_sql("SET LOCAL enable_seqscan = off")  # a table this small would be scanned
            plan = "\n".join(row[0] for row in store.database.execute_sql("EXPLAIN " + sql, params))
        # agent_metrics is partitioned: each partition has its own copy of the parent's GIN index
        copies = store.database.execute_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'agent_metrics_metadata_gin'::regclass"
        ).fetchall()
        assert any(f"Bitmap Index Scan on {name}" in plan for (name,) in copies), plan
        assert len(agent.metrics(where={"region": "r7"})) == 40


def test_sensitive_values_stay_out_of_the_query_log(store, caplog):
    store.plugins.register(ProbePlugin(), name="probe")
    agent = store.start_agent("probe")
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        agent.config.set("api_key", "sk-live-logged", is_sensitive=True)
        agent.config.refresh()
    assert caplog.records, "peewee logged no queries: the check would prove nothing"
    assert "sk-live-logged" not in caplog.text
    assert agent.config["api_key"] == "sk-live-logged"


def test_interpreter_exit_flushes_buffered_metrics(db_url, tmp_path):
    script = (
        "import optistate\n"
        f"agent = optistate.connect({db_url!r}).start_agent('cost', name='exiting')\n"
        "agent.record_metric('left_in_buffer', 42.0)\n"
    )
    # cwd: ``-c`` puts it on sys.path, and the checkout's root would hide the installed package
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, cwd=tmp_path)
    with optistate.connect(db_url) as store:
        assert [m.metric_value for m in store.agent("exiting").metrics("left_in_buffer")] == [42.0]


def test_points_of_an_agent_deleted_before_the_flush_are_dropped_and_never_block(store):
    keep, gone = store.start_agent("cost", "Keep"), store.start_agent("cost", "Gone")
    keep.record_metric("m", 1.0)
    gone.record_metrics({"name": "m", "value": float(i)} for i in range(100))
    store.models.Agent.delete().where(store.models.Agent.id == gone.id).execute()
    with pytest.raises(NotFoundError, match="deleted, perhaps by another process; its 100 buffered metric points"):
        gone.flush()
    assert gone.flush() == 0 and gone.dropped_metrics == 100
    assert keep.flush() == 1
    gone.record_metric("m", 2.0)
    with pytest.raises(NotFoundError, match="its 1 buffered metric points were dropped"):
        gone.flush()
