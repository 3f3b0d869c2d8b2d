"""The ``application`` agent type: watches LLM output quality and regressions."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optistate import Capability, Config, hookimpl

RATES = ("quality_score_threshold", "hallucination_threshold")


@hookimpl
def register_agent_types(register: Callable[..., None]) -> None:
    register(
        "application",
        configs=[
            Config("quality_score_threshold", 0.85, "number", "Minimum quality score (0-1)"),
            Config("hallucination_threshold", 0.05, "number", "Maximum hallucination rate"),
            Config("regression_check_interval", 15, "number", "Minutes between regression checks"),
        ],
        capabilities=[
            Capability(
                "quality_monitoring",
                "1.4.0",
                "Monitor LLM output quality in real-time",
                {"metrics": ["coherence", "relevance", "factuality"], "sampling_rate": 0.1, "alert_threshold": 0.85},
            ),
            Capability(
                "regression_detection",
                "1.1.0",
                "Detect quality regressions after changes",
                {"baseline_samples": 100, "comparison_samples": 100, "significance_level": 0.05},
            ),
            Capability(
                "hallucination_detection",
                "0.8.0",
                "Detect hallucinations in LLM outputs (experimental)",
                {"detection_methods": ["fact_checking", "consistency"], "confidence_threshold": 0.7},
                enabled=False,  # experimental
            ),
        ],
    )


@hookimpl
def validate_config(agent_type: str, key: str, value: Any) -> str | None:
    if agent_type != "application":
        return None
    if key in RATES and not 0 <= value <= 1:
        return "must be from 0 to 1"
    if key == "regression_check_interval" and value <= 0:
        return "must be greater than 0"
    return None
