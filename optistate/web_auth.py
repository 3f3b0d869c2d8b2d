"""``optistate serve``'s gate: the token every request needs, the login form, and headers on every response.

With a token, a request passes with ``Authorization: Bearer <token>`` (what
Prometheus scrapers send) or with the session cookie the login form sets;
anything else gets 401: the login form for a browser asking for HTML, a
one-line JSON error otherwise. The cookie holds an HMAC of the token, never
the token, so no response ever carries it. Without a token (the server then
listens on a loopback address only), a request passes only when its ``Host``
is a loopback name, so a web page on another site cannot read the dashboard
through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import hmac
from html import escape
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "LOOPBACK_HOSTS", "Guard", "login_routes"]

COOKIE = "optistate_session"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
OPEN_PATHS = ("/login",)
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
]
LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>optistate: sign in</title></head>
<body><h1>optistate</h1><p>{message}</p>
<form method="post" action="/login"><input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autofocus required></label>
<button type="submit">Sign in</button></form></body></html>
"""


def _session(token: str) -> str:
    """The cookie value for ``token``: an HMAC of it, which does not reveal it."""
    return hmac.new(token.encode(), b"optistate serve session", hashlib.sha256).hexdigest()


def _local(path: str) -> str:
    """``path`` if it is a path on this server, else ``/``: the login form redirects nowhere else."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _hostname(host: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8765`` -> ``[::1]``."""
    return host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]


def _login_page(message: str, next_path: str, status: int) -> HTMLResponse:
    return HTMLResponse(LOGIN_PAGE.format(message=escape(message), next=escape(_local(next_path))), status)


class Guard:
    """ASGI middleware: the token check (or, without a token, the loopback ``Host`` check) and the headers."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token
        self.session = _session(token) if token else None

    def allowed(self, headers: Headers, cookies: dict[str, str]) -> bool:
        """Whether a request with these headers passes."""
        if self.token is None:
            return _hostname(headers.get("host", "")) in LOOPBACK_HOSTS
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return True
        assert self.session is not None
        return hmac.compare_digest(cookies.get(COOKIE, "").encode(), self.session.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        request = Request(scope)
        passes = self.token is not None and scope["path"] in OPEN_PATHS
        if passes or self.allowed(request.headers, request.cookies):
            await self.app(scope, receive, with_headers)
            return
        await self.refusal(request)(scope, receive, with_headers)

    def refusal(self, request: Request) -> Response:
        """401 with the login form for a browser, a JSON error for anything else; 400 for a foreign ``Host``."""
        if self.token is None:
            return JSONResponse({"error": "host: not a loopback name; this server answers 127.0.0.1 only"}, 400)
        challenge = {"www-authenticate": 'Bearer realm="optistate"'}
        if "text/html" in request.headers.get("accept", ""):
            response: Response = _login_page("Sign in with the server's token.", request.url.path, 401)
            response.headers.update(challenge)
            return response
        return JSONResponse({"error": "unauthorized: send Authorization: Bearer <token>"}, 401, headers=challenge)


def login_routes(token: str | None) -> list[Route]:
    """``GET /login`` (the form) and ``POST /login`` (sets the session cookie); none without a token."""
    if token is None:
        return []
    session = _session(token)

    async def form(request: Request) -> Response:
        return _login_page("Sign in with the server's token.", request.query_params.get("next", "/"), 200)

    async def submit(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return JSONResponse({"error": f"form: larger than {MAX_FORM_BYTES} bytes"}, 413)
        fields: dict[str, Any] = parse_qs(body.decode("utf-8", "replace"))
        given, next_path = fields.get("token", [""])[0], fields.get("next", ["/"])[0]
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _login_page("Wrong token.", next_path, 401)
        response = RedirectResponse(_local(next_path), 303)
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    return [Route("/login", form, methods=["GET"]), Route("/login", submit, methods=["POST"])]
