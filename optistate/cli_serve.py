"""``optistate serve``: the dashboard, the JSON API and Prometheus' ``/metrics`` over HTTP (the ``web`` extra)."""

from __future__ import annotations

import ipaddress

import click

from . import schema
from .cli_support import Session, pass_session
from .errors import MASK, ConfigurationError, MigrationError

__all__ = ["MIN_TOKEN", "SHUTDOWN_SECONDS", "TOKEN_VAR", "is_loopback", "serve"]

TOKEN_VAR = "OPTISTATE_SERVE_TOKEN"
MIN_TOKEN = 16
SHUTDOWN_SECONDS = 3


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; anything but a loopback address needs --token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", envvar=TOKEN_VAR, metavar="TOKEN",
              help=f"Require this token on every request (at least {MIN_TOKEN} characters) [default: ${TOKEN_VAR}].")
@pass_session
def serve(session: Session, host: str, port: int, token: str | None) -> None:
    """Serve the dashboard, JSON API and /metrics (read-only).

    Pages: / (every agent, live) and /agents/NAME; JSON under /api/;
    Prometheus text at /metrics. With a token, a request needs the header
    "Authorization: Bearer TOKEN" or the cookie of the /login form. It never
    writes to the database, so it applies no migration: run `optistate migrate` first.

    \b
    pip install 'optistate[web]'
    optistate serve
    OPTISTATE_SERVE_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe())')" \\
        optistate serve --host 0.0.0.0
    """
    if token is not None and (len(token) < MIN_TOKEN or token != token.strip()):
        raise ConfigurationError("token", MASK, f"must be at least {MIN_TOKEN} characters, without spaces around")
    if token is None and not is_loopback(host):
        raise ConfigurationError("host", host, f"listening beyond this machine needs a token: --token or ${TOKEN_VAR}")
    try:
        import uvicorn

        from .web import create_app
    except ImportError as exc:
        raise ConfigurationError("serve", exc.name, "needs the web extra: pip install 'optistate[web]'") from None
    store = session.store(migrate=False)
    pending = [m.name for m in schema.status(store.database) if not m.applied]
    if pending:
        raise MigrationError(f"the database lacks migrations {', '.join(pending)}; run `optistate migrate` first")
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"optistate serve on {store.url}: http://{shown}:{port}/" + (" (token required)" if token else ""))
    # On SIGTERM or Ctrl-C, open requests get SHUTDOWN_SECONDS to finish; a live stream never does, so it is ended.
    uvicorn.run(create_app(store, token), host=host, port=port, log_level="info", server_header=False,
                timeout_graceful_shutdown=SHUTDOWN_SECONDS)
