"""The change log over HTTP: ``/api/events`` (a page of it) and ``/api/events/stream`` (Server-Sent Events).

The stream polls ``store.history(since=revision)`` every :data:`POLL_SECONDS`
in Starlette's thread pool, each poll with a connection of its own that is
closed before the poll returns, so a stream holds no connection while it
waits and a client that goes away leaves nothing behind. Each event goes out
as ``id: <revision>``, ``event: change`` and ``data: <the event as JSON>`` (as
:func:`~optistate.web_data.event_json` makes it);
a browser that reconnects sends the last id back (``Last-Event-ID``) and misses
nothing. A comment line every :data:`KEEPALIVE_SECONDS` of quiet keeps proxies
from closing the stream. Sensitive config values arrive masked from the
database (``***``); nothing here unmasks them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import peewee
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .database import redact
from .errors import OptistateError, ValidationError, one_line
from .web_data import event_json

if TYPE_CHECKING:
    from .store import Store

__all__ = ["KEEPALIVE_SECONDS", "MAX_EVENTS", "POLL_SECONDS", "events_page", "events_stream"]

log = logging.getLogger("optistate")
POLL_SECONDS = 0.4
KEEPALIVE_SECONDS = 15.0
MAX_EVENTS = 1000
"""The most events one answer of ``/api/events`` carries (``limit``, default 100)."""


def _whole(field: str, text: str | None, low: int, high: int | None = None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValidationError(field, text, f"must be a whole number {bound}")
    return int(text)


def _read(store: Store, agent: str | None, since: int | None, limit: int | None) -> list[dict[str, Any]]:
    with store.database.connection_context():
        return [event_json(event) for event in store.history(agent, since=since, limit=limit)]


def events_page(store: Store, params: Mapping[str, str]) -> Response:
    """``/api/events?since=&agent=&limit=``: the latest ``limit`` events after revision ``since``, oldest first."""
    since = _whole("since", params.get("since"), 0)
    limit = _whole("limit", params.get("limit"), 1, MAX_EVENTS) or 100
    return JSONResponse(_read(store, params.get("agent") or None, since, limit))


def _revision(store: Store) -> int:
    with store.database.connection_context():
        return store.revision()


async def events_stream(store: Store, request: Request) -> Response:
    """``/api/events/stream?since=&agent=``: every event after ``since`` (default: the newest now), as it comes."""
    agent = request.query_params.get("agent") or None
    since = _whole("since", request.headers.get("last-event-id") or request.query_params.get("since"), 0)
    if since is None:
        since = await run_in_threadpool(_revision, store)

    async def stream(revision: int) -> AsyncIterator[str]:
        yield f"retry: 1000\n: from revision {revision}\n\n"
        quiet_since = time.monotonic()
        while True:
            try:
                events = await run_in_threadpool(_read, store, agent, revision, None)  # all, oldest first
            except (OptistateError, peewee.DatabaseError) as exc:  # the browser reconnects after `retry`
                log.warning("events stream: %s", redact(one_line(exc)))
                yield f"event: failed\ndata: {json.dumps({'error': redact(one_line(exc))})}\n\n"
                return
            for event in events:
                revision = max(revision, int(event["revision"]))
                yield f"id: {event['revision']}\nevent: change\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
            if events:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keepalive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    headers = {"x-accel-buffering": "no"}  # a proxy must pass each event on at once
    return StreamingResponse(stream(since), media_type="text/event-stream", headers=headers)
