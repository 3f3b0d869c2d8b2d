"""What ``optistate serve`` shows, as JSON-ready data: the API's answers, which the pages use too.

Every function here only reads. Sensitive config values are masked (``***``)
before anything leaves this module, and a query parameter that does not parse
raises :class:`~optistate.errors.ValidationError` naming it and its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .charts import WINDOWS, svg_chart
from .cli_support import config_json
from .errors import ValidationError
from .fields import check_timestamp
from .leases import db_now
from .liveness import liveness
from .metrics import AGGREGATES
from .models import AgentStatus
from .overview import overview_json
from .timeseries import parse_duration
from .transfer import to_json

if TYPE_CHECKING:
    from .agent import AgentHandle
    from .events import Event
    from .store import Store

__all__ = [
    "HISTORY", "LIVENESS", "MAX_POINTS", "agent_detail", "agents", "charts", "event_json", "filters", "metric_series",
    "window",
]

LIVENESS = ("alive", "stale", "offline")
HISTORY = 50
"""The agent's latest events that ``/api/agents/{name}`` carries (its page's recent history)."""
MAX_POINTS = 10_000
"""The most points ``/api/agents/{name}/metrics`` returns at once (``limit``, default 1,000)."""


def _choice(field: str, value: str | None, choices: Any) -> str | None:
    if value is not None and value not in choices:
        raise ValidationError(field, value, f"must be one of {', '.join(choices)}")
    return value


def filters(params: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """The overview's ``type``, ``status`` and ``liveness`` filters (None: any), checked."""
    status = _choice("status", params.get("status") or None, [s.value for s in AgentStatus])
    return params.get("type") or None, status, _choice("liveness", params.get("liveness") or None, LIVENESS)


def agents(store: Store, params: Mapping[str, str]) -> str:
    """The overview as JSON text (one query, never decoded here), filtered as :func:`filters` reads them."""
    return overview_json(store.database, *filters(params))


def agent_detail(store: Store, handle: AgentHandle) -> dict[str, Any]:
    """One agent: registration, liveness, state, configs (masked), capabilities, leases, newest metrics, and its
    latest :data:`HISTORY` events from the change log, oldest first."""
    row, state = handle.registration(), handle.state()
    now = db_now(store.database)
    handle.config.refresh()  # another process may have changed a value since this handle read them
    return {
        "agent": to_json(row),
        "liveness": liveness(row.status, row.last_heartbeat, row.ttl_seconds, now),
        "heartbeat_age_seconds": round((now - state.last_heartbeat).total_seconds(), 3),
        "state": to_json(state),
        "configs": [config_json(entry, False) for entry in handle.config.entries()],
        "capabilities": [to_json(capability) for capability in handle.capabilities()],
        "leases": [
            {"resource": lease.resource, "token": lease.token, "acquired_at": lease.acquired_at.isoformat(),
             "expires_at": lease.expires_at.isoformat()}
            for lease in store.locks()
            if lease.holder_id == handle.id
        ],
        "latest_metrics": [to_json(point) for point in handle.latest_metrics()],
        "history": [  # by name, then by id: names repeat across types
            event_json(event) for event in store.history(handle.name, limit=HISTORY) if event.agent_id == handle.id
        ],
    }


def event_json(event: Event) -> dict[str, Any]:
    """An event as the API sends it: :meth:`Event.as_dict` and ``changes``, ``{column: [old, new]}`` of what moved."""
    return {**event.as_dict(), "changes": {column: list(pair) for column, pair in event.changes.items()}}


def _time(field: str, text: str | None) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(field, text, "must be an ISO-8601 time such as 2025-01-31T12:00:00+00:00") from None
    return check_timestamp(field, moment)  # a time without an offset is UTC


def _limit(text: str | None) -> int:
    if text is None:
        return 1000
    if not text.isdigit() or not 1 <= int(text) <= MAX_POINTS:
        raise ValidationError("limit", text, f"must be a whole number from 1 to {MAX_POINTS}")
    return int(text)


def metric_series(handle: AgentHandle, params: Mapping[str, str]) -> Any:
    """``/api/agents/{name}/metrics``: points, one aggregate, or buckets, as the parameters ask.

    ``agg`` (with ``name``) gives one value; ``agg`` and ``every`` give
    ``[{"bucket_start", "value"}, ...]``; neither gives the points, oldest first, at most ``limit``.
    """
    name, agg, every = params.get("name") or None, params.get("agg") or None, params.get("every") or None
    since, until = _time("since", params.get("since")), _time("until", params.get("until"))
    _choice("agg", agg, list(AGGREGATES))
    if every is not None and agg is None:
        raise ValidationError("every", every, "needs agg, such as agg=avg")
    if agg is None:
        return [to_json(point) for point in handle.metrics(name, since, until, None, _limit(params.get("limit")))]
    if name is None:
        raise ValidationError("name", None, f"needed with agg={agg}")
    if every is None:
        return {"name": name, "agg": agg, "value": handle.aggregate(name, agg, since, until)}
    buckets = handle.aggregate(name, agg, since, until, every=parse_duration("every", every))
    return [{"bucket_start": start.isoformat(), "value": value} for start, value in buckets]


def window(text: str | None) -> str:
    """The chart window named by ``?window=`` (``1h`` by default)."""
    return _choice("window", text, list(WINDOWS)) or "1h"


def charts(store: Store, handle: AgentHandle, key: str) -> list[dict[str, Any]]:
    """One chart per metric the agent recorded: its newest point and the window's bucket averages as SVG."""
    span, every = WINDOWS[key]
    until = db_now(store.database)
    since = until - span
    drawn = []
    for point in handle.latest_metrics():
        buckets = handle.aggregate(point.metric_name, "avg", since, until, every=every)
        drawn.append({
            "name": point.metric_name, "unit": point.metric_unit, "latest": point.metric_value,
            "at": point.collection_timestamp.isoformat(timespec="seconds"),
            "svg": svg_chart(point.metric_name, buckets, since, until, point.metric_unit),
        })  # fmt: skip
    return drawn
