"""The coordination commands: ``optistate reap`` and ``optistate locks`` (``agents`` shows liveness)."""
from __future__ import annotations

import click

from .cli_support import Session, echo_json, json_option, pass_session, table

__all__ = ["locks", "reap"]


@click.command()
@json_option
@pass_session
def reap(session: Session, as_json: bool) -> None:
    """Mark agents past their TTL offline; free their leases.

    Once, not in a loop. An agent is past its TTL when its last heartbeat is
    older than its ttl_seconds by the database's clock. Safe to run from many
    places at once: each agent is reaped by one of them. It creates the database if there is none.

    \b
    optistate reap --json
    """
    reaped = session.store(create=True).reap()
    if as_json:
        echo_json([{"id": str(a.id), "type": a.type, "name": a.name} for a in reaped])
    else:
        click.echo(f"reaped {len(reaped)}: " + ", ".join(a.name for a in reaped) if reaped else "no stale agents")


@click.command()
@json_option
@pass_session
def locks(session: Session, as_json: bool) -> None:
    """List the leases held now, with their holders.

    One row each: resource, holder, fencing token, acquired and expiry
    times (the database's clock).

    \b
    optistate locks --json
    """
    rows = session.store().locks()
    if as_json:
        echo_json([{"resource": r.resource, "holder": r.holder, "holder_id": str(r.holder_id), "token": r.token,
                    "acquired_at": r.acquired_at.isoformat(), "expires_at": r.expires_at.isoformat()} for r in rows])
    else:
        table(["RESOURCE", "HOLDER", "TOKEN", "ACQUIRED", "EXPIRES"],
              [[r.resource, r.holder, r.token, r.acquired_at.isoformat(timespec="milliseconds"),
                r.expires_at.isoformat(timespec="milliseconds")] for r in rows], "no locks held")
