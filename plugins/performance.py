"""The ``performance`` agent type: tunes LLM serving latency and throughput."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optistate import Capability, Config, hookimpl

POSITIVE = ("latency_p95_threshold_ms", "throughput_threshold_rps", "kv_cache_size_gb")


@hookimpl
def register_agent_types(register: Callable[..., None]) -> None:
    register(
        "performance",
        configs=[
            Config("latency_p95_threshold_ms", 500, "number", "P95 latency threshold for alerts"),
            Config("throughput_threshold_rps", 100, "number", "Minimum throughput (requests/sec)"),
            Config("kv_cache_size_gb", 32, "number", "KV cache size in GB"),
        ],
        capabilities=[
            Capability(
                "kv_cache_tuning",
                "2.1.0",
                "Optimize KV cache settings for vLLM/TGI",
                {"supported_engines": ["vllm", "tgi", "sglang"], "cache_strategies": ["static", "dynamic", "adaptive"]},
            ),
            Capability(
                "batch_optimization",
                "1.5.0",
                "Optimize batch sizes and continuous batching",
                {"min_batch_size": 4, "max_batch_size": 128, "dynamic_batching": True},
            ),
            Capability(
                "quantization_testing",
                "1.0.0",
                "Test FP8/INT8 quantization strategies",
                {"quantization_formats": ["fp8", "int8", "int4"], "quality_validation": True},
            ),
        ],
    )


@hookimpl
def validate_config(agent_type: str, key: str, value: Any) -> str | None:
    if agent_type == "performance" and key in POSITIVE and value <= 0:
        return "must be greater than 0"
    return None
