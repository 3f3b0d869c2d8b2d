"""The ``cost`` agent type: finds GPU, storage and spot-instance savings."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optistate import Capability, Config, hookimpl


@hookimpl
def register_agent_types(register: Callable[..., None]) -> None:
    register(
        "cost",
        configs=[
            Config("cost_threshold_usd", 1000, "number", "Minimum monthly cost to trigger optimization"),
            Config("savings_threshold_percent", 15, "number", "Minimum savings percentage to recommend"),
            Config("check_interval_minutes", 60, "number", "How often to check for cost anomalies"),
        ],
        capabilities=[
            Capability(
                "gpu_cost_analysis",
                "1.2.0",
                "Analyze GPU cluster costs and identify savings",
                {
                    "supported_providers": ["aws", "gcp", "azure"],
                    "gpu_types": ["H100", "A100", "V100"],
                    "analysis_depth": "detailed",
                },
            ),
            Capability(
                "storage_optimization",
                "1.0.0",
                "Optimize storage tiering and costs",
                {"storage_types": ["s3", "ebs", "gcs"], "tiering_policies": ["hot", "warm", "cold"]},
            ),
            Capability(
                "spot_instance_recommendation",
                "0.9.0",
                "Recommend spot instance usage (beta)",
                {"max_spot_percentage": 70, "fallback_strategy": "on_demand"},
                enabled=False,  # beta
            ),
        ],
    )


@hookimpl
def validate_config(agent_type: str, key: str, value: Any) -> str | None:
    if agent_type != "cost":
        return None
    if key == "savings_threshold_percent" and not 0 <= value <= 100:
        return "must be a percentage from 0 to 100"
    if key in ("cost_threshold_usd", "check_interval_minutes") and value <= 0:
        return "must be greater than 0"
    return None
