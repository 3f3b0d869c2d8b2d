"""The ``example`` agent type: a web crawler with a page budget."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optistate import Capability, Config, hookimpl


@hookimpl
def register_agent_types(register: Callable[..., None]) -> None:
    register(
        "example",
        configs=[
            Config("max_pages", 100, "integer", "Pages to crawl per run"),
            Config("api_token", "change-me", "string", "Token for the crawl API", sensitive=True),
        ],
        capabilities=[
            Capability("crawl", "1.0.0", "Fetch pages", {"user_agent": "optistate-example"}),
            Capability("crawl", "2.0.0-beta.1", "Fetch pages concurrently", {"concurrency": 8}, enabled=False),
        ],
    )


@hookimpl
def validate_config(agent_type: str, key: str, value: Any) -> str | None:
    if agent_type == "example" and key == "max_pages" and not 1 <= value <= 10_000:
        return "must be from 1 to 10000"
    return None
