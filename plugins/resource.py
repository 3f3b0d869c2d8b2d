"""The ``resource`` agent type: scales and balances GPU clusters."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optistate import Capability, Config, hookimpl

PERCENTAGES = ("gpu_utilization_target", "scale_up_threshold", "scale_down_threshold")


@hookimpl
def register_agent_types(register: Callable[..., None]) -> None:
    register(
        "resource",
        configs=[
            Config("gpu_utilization_target", 75, "number", "Target GPU utilization percentage"),
            Config("scale_up_threshold", 85, "number", "GPU utilization % to trigger scale-up"),
            Config("scale_down_threshold", 40, "number", "GPU utilization % to trigger scale-down"),
        ],
        capabilities=[
            Capability(
                "auto_scaling",
                "2.0.0",
                "Auto-scale GPU clusters based on demand",
                {
                    "scaling_triggers": ["utilization", "queue_depth", "latency"],
                    "cooldown_minutes": 10,
                    "max_scale_factor": 3,
                },
            ),
            Capability(
                "load_balancing",
                "1.3.0",
                "Balance workloads across GPU clusters",
                {"strategy": "least_loaded", "affinity_rules": True},
            ),
        ],
    )


@hookimpl
def validate_config(agent_type: str, key: str, value: Any) -> str | None:
    if agent_type == "resource" and key in PERCENTAGES and not 0 <= value <= 100:
        return "must be a percentage from 0 to 100"
    return None
