"""``optistate serve``: the dashboard's Starlette app, read-only, on one store.

Routes: the overview ``/``, the agent page ``/agents/{name}``, the JSON API
under ``/api/`` (:mod:`optistate.web_data` builds its answers; the change log,
paged and streamed, is :mod:`optistate.web_events`), Prometheus' ``/metrics``
(:mod:`optistate.prometheus`), and, with a token, ``/login``
(:mod:`optistate.web_auth`). The pages are HTML shells whose script
(``static/dashboard.js``) renders them from the same API and redraws them on
each event of the stream.

Each endpoint that reads runs in Starlette's thread pool inside
``database.connection_context()``: peewee's connections are per thread, and
each request opens its own and closes it (or returns it to the pool, with
``postgresql+pool://``) before it ends, so no thread keeps one. Any error
answers one line of JSON, ``{"error": "..."}``, never a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import peewee
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from . import web_data
from .charts import WINDOWS
from .database import redact
from .errors import NotFoundError, OptistateError, ValidationError, one_line
from .prometheus import exposition
from .web_auth import Guard, login_routes
from .web_events import events_page, events_stream

if TYPE_CHECKING:
    from .store import Store

__all__ = ["create_app"]

log = logging.getLogger("optistate")
HERE = Path(__file__).parent
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, f"{exc.detail}: {request.url.path}" if exc.status_code == 404 else exc.detail)


async def _optistate_error(request: Request, exc: Exception) -> Response:
    status = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, ValidationError) else 503
    return _error(status, redact(one_line(exc)))


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s: database error: %s", request.method, request.url.path, redact(one_line(exc)))
    return _error(503, f"database error: {redact(one_line(exc))}")


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _error(500, f"internal error ({type(exc).__name__}); see the server's log")


def create_app(store: Store, token: str | None = None) -> Starlette:
    """The dashboard on ``store``; with ``token``, every request but ``/login`` needs it (see :mod:`web_auth`).

    Open ``store`` with ``connect(..., watch=False)``, as ``optistate serve`` does: every request reads what it
    shows anew, so a config watch would only hold connections and a thread.
    """
    templates = Jinja2Templates(directory=HERE / "templates")

    def reading(endpoint: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """Run ``endpoint`` (in the thread pool) with a connection of its own, closed when it returns."""

        @functools.wraps(endpoint)
        def run(request: Request) -> Response:
            with store.database.connection_context():
                return endpoint(request)

        return run

    def handle(request: Request) -> Any:
        return store.agent(request.path_params["name"], request.query_params.get("type") or None)

    @reading
    def overview_page(request: Request) -> Response:
        model = store.models.Agent
        types = [row.type for row in model.select(model.type).distinct().order_by(model.type)]
        web_data.filters(request.query_params)  # a bad filter is refused here, not in the page's script
        return templates.TemplateResponse(request, "overview.html", {
            "types": types, "liveness": web_data.LIVENESS, "chosen": request.query_params,
        })  # fmt: skip

    @reading
    def agent_page(request: Request) -> Response:
        agent = handle(request)
        key = web_data.window(request.query_params.get("window"))
        return templates.TemplateResponse(request, "agent.html", {
            "agent": agent, "windows": list(WINDOWS), "window": key,
            "charts": web_data.charts(store, agent, key), "type": request.query_params.get("type", ""),
        })  # fmt: skip

    @reading
    def api_agents(request: Request) -> Response:
        return Response(web_data.agents(store, request.query_params), media_type="application/json")

    @reading
    def api_agent(request: Request) -> Response:
        return JSONResponse(web_data.agent_detail(store, handle(request)))

    @reading
    def api_metrics(request: Request) -> Response:
        return JSONResponse(web_data.metric_series(handle(request), request.query_params))

    @reading
    def prometheus(request: Request) -> Response:
        return Response(exposition(store), media_type=PROMETHEUS_TEXT)

    def api_events(request: Request) -> Response:
        return events_page(store, request.query_params)

    async def api_events_stream(request: Request) -> Response:
        return await events_stream(store, request)

    routes = [
        Route("/", overview_page),
        Route("/agents/{name:path}", agent_page),
        Route("/api/agents", api_agents),
        Route("/api/agents/{name:path}/metrics", api_metrics),
        Route("/api/agents/{name:path}", api_agent),
        Route("/api/events", api_events),
        Route("/api/events/stream", api_events_stream),
        Route("/metrics", prometheus),
        *login_routes(token),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers = {
        HTTPException: _http_error, OptistateError: _optistate_error,
        peewee.DatabaseError: _database_error, Exception: _unexpected,
    }  # fmt: skip
    return Starlette(routes=routes, middleware=[Middleware(Guard, token=token)], exception_handlers=handlers)
