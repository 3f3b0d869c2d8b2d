"""The coordination commands: ``reap``, ``locks``, and the change log's ``history`` and ``watch``.

``optistate agents`` shows liveness.
"""
from __future__ import annotations

import json
from typing import Any

import click

from .cli_support import Session, echo_json, json_option, pass_session, table
from .events import Event

__all__ = ["history", "locks", "reap", "watch"]


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


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _line(event: Event) -> str:
    """One event for people: revision, time, agent, kind and key, what moved, and who moved it."""
    subject = f"{event.kind} {event.key}" if event.key else event.kind
    if event.old is None or event.new is None:
        moved = "created" if event.old is None else "deleted"
    else:
        moved = "; ".join(f"{c}: {_shown(old)} → {_shown(new)}" for c, (old, new) in event.changes.items())
    when = event.at.isoformat(timespec="milliseconds")
    return f"{event.revision:>8}  {when}  {event.agent or '-'}  {subject}  {moved}  by {event.actor}"


@click.command()
@click.argument("agent")
@click.option("--key", help="Only changes of this config key, capability or lease resource.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N changes.")
@json_option
@pass_session
def history(session: Session, agent: str, key: str | None, limit: int | None, as_json: bool) -> None:
    """Show an agent's changes from the change log, oldest first.

    Every change to the agent, its configs, state, capabilities and leases,
    by anyone (optistate, SQL clients), with who made it. Sensitive values
    show as ***. --json prints one JSON object per line.

    \b
    optistate history "Cost Optimizer" --key cost_threshold_usd
    """
    store = session.store()
    store.agent(agent)  # an unknown name is a NotFoundError, one line
    events = store.history(agent, key, limit=limit)
    if as_json:
        for event in events:
            click.echo(json.dumps(event.as_dict(), ensure_ascii=False))
    elif events:
        for event in events:
            click.echo(_line(event))
    else:
        click.echo(f"no changes of {agent!r}" + (f" with key {key!r}" if key else "") + " are kept")


@click.command()
@click.option("--agent", help="Only this agent's changes.")
@click.option("--since", type=click.IntRange(min=0), help="Start after this revision (default: from now).")
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop after this many seconds without a change.")
@json_option
@pass_session
def watch(session: Session, agent: str | None, since: int | None, timeout: float | None, as_json: bool) -> None:
    """Stream changes as they commit, until interrupted.

    In revision order, none skipped or repeated, across lost connections.
    With --since, it starts after that revision; a revision already
    compacted away is an error. --json prints one JSON object per line.

    \b
    optistate watch --agent "Cost Optimizer" --since 120 --json
    """
    store = session.store()
    try:
        for event in store.watch(since=since, agent=agent, timeout=timeout):
            click.echo(json.dumps(event.as_dict(), ensure_ascii=False) if as_json else _line(event))
    except KeyboardInterrupt:
        pass
