"""The four first-party agent types carry the seed's exact defaults, found through entry points."""
from __future__ import annotations

import pytest

import optistate
from optistate import Registry
from optistate.errors import ValidationError

# (key, config_value, description); every seed config is a non-sensitive "number".
SEED_CONFIGS = {
    "cost": [
        ("cost_threshold_usd", "1000", "Minimum monthly cost to trigger optimization"),
        ("savings_threshold_percent", "15", "Minimum savings percentage to recommend"),
        ("check_interval_minutes", "60", "How often to check for cost anomalies"),
    ],
    "performance": [
        ("latency_p95_threshold_ms", "500", "P95 latency threshold for alerts"),
        ("throughput_threshold_rps", "100", "Minimum throughput (requests/sec)"),
        ("kv_cache_size_gb", "32", "KV cache size in GB"),
    ],
    "resource": [
        ("gpu_utilization_target", "75", "Target GPU utilization percentage"),
        ("scale_up_threshold", "85", "GPU utilization % to trigger scale-up"),
        ("scale_down_threshold", "40", "GPU utilization % to trigger scale-down"),
    ],
    "application": [
        ("quality_score_threshold", "0.85", "Minimum quality score (0-1)"),
        ("hallucination_threshold", "0.05", "Maximum hallucination rate"),
        ("regression_check_interval", "15", "Minutes between regression checks"),
    ],
}

# (name, version, description, parameters, enabled)
SEED_CAPABILITIES = {
    "cost": [
        (
            "gpu_cost_analysis",
            "1.2.0",
            "Analyze GPU cluster costs and identify savings",
            {
                "supported_providers": ["aws", "gcp", "azure"],
                "gpu_types": ["H100", "A100", "V100"],
                "analysis_depth": "detailed",
            },
            True,
        ),
        (
            "storage_optimization",
            "1.0.0",
            "Optimize storage tiering and costs",
            {"storage_types": ["s3", "ebs", "gcs"], "tiering_policies": ["hot", "warm", "cold"]},
            True,
        ),
        (
            "spot_instance_recommendation",
            "0.9.0",
            "Recommend spot instance usage (beta)",
            {"max_spot_percentage": 70, "fallback_strategy": "on_demand"},
            False,
        ),
    ],
    "performance": [
        (
            "kv_cache_tuning",
            "2.1.0",
            "Optimize KV cache settings for vLLM/TGI",
            {"supported_engines": ["vllm", "tgi", "sglang"], "cache_strategies": ["static", "dynamic", "adaptive"]},
            True,
        ),
        (
            "batch_optimization",
            "1.5.0",
            "Optimize batch sizes and continuous batching",
            {"min_batch_size": 4, "max_batch_size": 128, "dynamic_batching": True},
            True,
        ),
        (
            "quantization_testing",
            "1.0.0",
            "Test FP8/INT8 quantization strategies",
            {"quantization_formats": ["fp8", "int8", "int4"], "quality_validation": True},
            True,
        ),
    ],
    "resource": [
        (
            "auto_scaling",
            "2.0.0",
            "Auto-scale GPU clusters based on demand",
            {
                "scaling_triggers": ["utilization", "queue_depth", "latency"],
                "cooldown_minutes": 10,
                "max_scale_factor": 3,
            },
            True,
        ),
        (
            "load_balancing",
            "1.3.0",
            "Balance workloads across GPU clusters",
            {"strategy": "least_loaded", "affinity_rules": True},
            True,
        ),
    ],
    "application": [
        (
            "quality_monitoring",
            "1.4.0",
            "Monitor LLM output quality in real-time",
            {"metrics": ["coherence", "relevance", "factuality"], "sampling_rate": 0.1, "alert_threshold": 0.85},
            True,
        ),
        (
            "regression_detection",
            "1.1.0",
            "Detect quality regressions after changes",
            {"baseline_samples": 100, "comparison_samples": 100, "significance_level": 0.05},
            True,
        ),
        (
            "hallucination_detection",
            "0.8.0",
            "Detect hallucinations in LLM outputs (experimental)",
            {"detection_methods": ["fact_checking", "consistency"], "confidence_threshold": 0.7},
            False,
        ),
    ],
}
TYPES = list(SEED_CONFIGS)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def test_the_seed_counts():
    assert sum(map(len, SEED_CONFIGS.values())) == 12
    assert sum(map(len, SEED_CAPABILITIES.values())) == 11


@pytest.mark.parametrize("name", TYPES)
def test_discovered_through_entry_points(registry, name):
    row = next(row for row in registry.describe() if row["name"] == name)
    assert row == {
        "name": name,
        "distribution": "optistate",
        "version": optistate.__version__,
        "hooks": ["register_agent_types", "validate_config"],
        "agent_types": [name],
        "error": None,
    }
    assert registry.agent_type(name).plugin == name


@pytest.mark.parametrize("name", TYPES)
def test_configs_are_the_seeds(registry, name):
    configs = registry.agent_type(name).configs
    assert [(c.key, c.config_value, c.description) for c in configs] == SEED_CONFIGS[name]
    assert {(c.type, c.sensitive) for c in configs} == {("number", False)}


@pytest.mark.parametrize("name", TYPES)
def test_capabilities_are_the_seeds(registry, name):
    declared = registry.agent_type(name).capabilities
    assert [(c.name, c.version, c.description, c.parameters, c.enabled) for c in declared] == SEED_CAPABILITIES[name]


@pytest.mark.parametrize("name", TYPES)
def test_every_default_passes_the_plugins_own_checks(registry, name):
    for config in registry.agent_type(name).configs:
        registry.check_config(name, config.key, config.value)


@pytest.mark.parametrize(
    "agent_type, key, value, reason",
    [
        ("cost", "savings_threshold_percent", 101, "must be a percentage from 0 to 100"),
        ("cost", "check_interval_minutes", 0, "must be greater than 0"),
        ("performance", "kv_cache_size_gb", -1, "must be greater than 0"),
        ("resource", "scale_up_threshold", 120.5, "must be a percentage from 0 to 100"),
        ("application", "hallucination_threshold", 1.5, "must be from 0 to 1"),
        ("application", "regression_check_interval", -15, "must be greater than 0"),
    ],
)
def test_validate_config_refuses_nonsense(registry, agent_type, key, value, reason):
    with pytest.raises(ValidationError, match=f"{key}={value!r}: {reason}"):
        registry.check_config(agent_type, key, value)
    registry.check_config("example-of-another-type", key, value)  # each plugin checks its own type only


def test_starting_the_four_agents_stores_the_seed(db_url):
    with optistate.connect(db_url) as store:
        agents = {name: store.start_agent(name) for name in TYPES}
        m = store.models
        assert m.AgentConfig.select().count() == 12
        assert m.AgentCapability.select().count() == 11
        for name, agent in agents.items():
            configs = sorted((c.config_key, c.config_value, c.description) for c in agent.config.entries())
            assert configs == sorted(SEED_CONFIGS[name])
            assert {(c.config_type, c.is_sensitive) for c in agent.config.entries()} == {("number", False)}
            capabilities = [
                (c.capability_name, c.capability_version, c.description, c.parameters, c.is_enabled)
                for c in agent.capabilities()
            ]
            assert sorted(capabilities) == sorted(SEED_CAPABILITIES[name])
        assert agents["application"].config["quality_score_threshold"] == 0.85
        assert agents["cost"].config["cost_threshold_usd"] == 1000
        with pytest.raises(ValidationError, match="scale_down_threshold=-5: must be a percentage"):
            agents["resource"].config.set("scale_down_threshold", -5)
        agents["resource"].config.refresh()
        assert agents["resource"].config["scale_down_threshold"] == 40
