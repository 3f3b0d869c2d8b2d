"""The ``optistate`` command: look at and change agents' stored state from a shell.

Every command works on ``--database URL`` (given before the command), else
``$OPTISTATE_DATABASE_URL``, else ``sqlite:///optistate.db`` in the working
directory, and applies pending migrations first (except ``migrate --status``
and ``migrate --down``). A reading command never creates a SQLite file: where
there is none it says so; the writing ones (demo, config set, import, ...)
create it. ``-v`` names the database on stderr. A failure prints one ``error: ...`` line on stderr
and exits 1; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import click

from . import __version__, demo, scaffold, schema, transfer
from .cli_coordination import history, locks, reap, watch
from .cli_metrics import Duration, retain
from .cli_secrets import secrets
from .cli_serve import serve
from .cli_settings import capabilities, config
from .cli_support import (
    RootGroup,
    Session,
    Timestamp,
    agent_type_option,
    capability_table,
    cell,
    config_json,
    config_table,
    echo_json,
    json_option,
    metric_table,
    overview_table,
    parse_where,
    pass_session,
    progress_bar,
    table,
)
from .database import DEFAULT_URL, ENV_VAR
from .metrics import AGGREGATES
from .models import AgentStatus
from .registry import Registry

__all__ = ["cli", "main"]


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database", "url", metavar="URL",
              help=f"sqlite:///file.db or postgresql://user:pass@host/db [default: ${ENV_VAR}, else {DEFAULT_URL}]")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", is_flag=True, help="Say on stderr which database the command opens.")
@click.version_option(__version__, "--version", prog_name="optistate", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str | None, debug: bool, verbose: bool) -> None:
    """Agents' registration, config, state, capabilities and metrics, in SQLite or PostgreSQL.

    \b
    optistate demo                      four agents at work, then an overview
    optistate agents --json
    optistate agent "Cost Optimizer"
    optistate config set "Cost Optimizer" cost_threshold_usd 2500
    optistate metrics "Cost Optimizer" --name average_savings_percent --agg avg
    optistate serve                     the dashboard on http://127.0.0.1:8765/ (pip install 'optistate[web]')
    """
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Session(ctx, url, verbose=verbose)


@cli.command("demo")
@click.option("--reset", is_flag=True, help="Delete every agent in the database first (their rows go too).")
@json_option
@pass_session
def demo_command(session: Session, reset: bool, as_json: bool) -> None:
    """Run four agents' simulated workflows; show an overview.

    Starts Cost Optimizer, Performance Tuner, Resource Allocator and
    Application Monitor, runs a short simulated workflow for each and records
    their metrics, all through the SDK. Safe to run again: defaults are
    stored once, states are set anew, and a new point of each metric is
    recorded. It creates the database if there is none.

    \b
    optistate demo
    optistate --database sqlite:///try.db demo --reset --json
    """
    store = session.store(create=True)
    agents = demo.run(store, reset=reset)
    ids = {str(a.id): a for a in agents}
    rows = [dict(row, latest_metrics=[transfer.to_json(m) for m in ids[row["id"]].latest_metrics()])
            for row in store.overview() if row["id"] in ids]
    if as_json:
        echo_json({"database": store.url, "agents": rows, "simulated": list(demo.SIMULATED)})
        return
    points = sum(len(demo.METRICS[a.type]) for a in agents)
    click.echo(f"optistate demo on {store.url}")
    click.echo(f"Started {len(agents)} agents, ran their workflows, recorded {points} metrics.\n")
    overview_table(rows, "no agents")
    click.echo("\nLatest metrics")
    table(["AGENT", "METRIC", "VALUE", "UNIT"],
          [[row["name"], m["metric_name"], m["metric_value"], m["metric_unit"]]
           for row in rows for m in row["latest_metrics"]], "no metrics")
    click.echo("\nSimulated as in the seed:")
    for line in demo.SIMULATED:
        click.echo(f"  {line}")
    click.echo("\nNext:")
    width = max(len(command) for command, _ in demo.NEXT)
    for command, what in demo.NEXT:
        click.echo(f"  {command:<{width}}  # {what}")


@cli.command()
@click.option("--status", "show_status", is_flag=True, help="List applied and pending migrations; apply nothing.")
@click.option("--down", metavar="TARGET", help="Revert back through TARGET (e.g. 0002_agent_state_tables).")
@json_option
@pass_session
def migrate(session: Session, show_status: bool, down: str | None, as_json: bool) -> None:
    """Apply migrations; --status lists them, --down reverts.

    Every other command applies pending migrations itself. --status never
    creates a database; applying creates it if there is none.

    \b
    optistate migrate --status
    optistate migrate --down 0002_agent_state_tables
    """
    if show_status and down:
        raise click.UsageError("--status and --down do not go together")
    database = session.store(migrate=False, create=not show_status).database
    if show_status:
        rows = schema.status(database)
        if as_json:
            echo_json([{"name": r.name, "applied": r.applied} for r in rows])
        else:
            cells = [[r.name, "applied" if r.applied else "pending"] for r in rows]
            table(["MIGRATION", "STATUS"], cells, "no migrations")
        return
    done = schema.rollback(database, down) if down else schema.migrate(database)
    verb = "reverted" if down else "applied"
    if as_json:
        echo_json({verb: done})
    else:
        click.echo(f"{verb} {', '.join(done)}" if done else "nothing to apply: the schema is up to date")


@cli.command()
@click.option("--type", "agent_type", help="Only agents of this type.")
@click.option("--status", type=click.Choice([s.value for s in AgentStatus]), help="Only agents in this run-time state.")
@json_option
@pass_session
def agents(session: Session, agent_type: str | None, status: str | None, as_json: bool) -> None:
    """List agents with their status and liveness.

    One row each: run-time status, liveness (alive, stale, offline),
    workflow, locks, errors, heartbeat age, configs and capabilities.

    \b
    optistate agents --status active
    optistate agents --type cost --json
    """
    rows = session.store().overview(agent_type, status)
    if as_json:
        echo_json(rows)
    else:
        overview_table(rows, "no agents (try `optistate demo`)")


@cli.command()
@click.argument("name")
@click.option("--type", "--agent-type", "agent_type", help="The agent's type, where several types use the name.")
@json_option
@pass_session
def agent(session: Session, name: str, agent_type: str | None, as_json: bool) -> None:
    """Show one agent: state, configs, capabilities, metrics.

    NAME is the agent's name or id. Sensitive config values show as ***.

    \b
    optistate agent "Cost Optimizer"
    optistate agent "Cost Optimizer" --json
    """
    handle = session.agent(name, agent_type)
    row, state = handle.registration(), handle.state()
    configs, capabilities, latest = handle.config.entries(), handle.capabilities(), handle.latest_metrics()
    if as_json:
        echo_json({"agent": transfer.to_json(row), "state": transfer.to_json(state),
                    "configs": [config_json(c, False) for c in configs],
                    "capabilities": [transfer.to_json(c) for c in capabilities],
                    "latest_metrics": [transfer.to_json(m) for m in latest]})
        return
    click.echo(f"{row.name} ({row.type} {row.version})  id {row.id}  registered {row.status}")
    lines = (("status", state.status), ("workflow", state.current_workflow), ("data", state.workflow_data),
             ("locks", state.resource_locks), ("errors", state.error_count), ("last error", state.last_error),
             ("heartbeat", state.last_heartbeat.isoformat(timespec="seconds")), ("endpoint", row.endpoint))
    for label, value in lines:
        click.echo(f"  {label:<11}{cell(value)}")
    click.echo("\nConfigs")
    config_table(configs, False)
    click.echo("\nCapabilities")
    capability_table(capabilities)
    click.echo("\nLatest metrics")
    metric_table(latest, metadata=False)


@cli.command()
@click.argument("agent_name", metavar="AGENT")
@click.option("--name", help="Only this metric.")
@click.option("--since", type=Timestamp(), help="From this time on (UTC unless an offset is given).")
@click.option("--until", type=Timestamp(), help="Up to this time.")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE", help="Metadata must contain this; repeatable.")
@click.option("--agg", type=click.Choice(list(AGGREGATES)), help="Print one aggregate of --name instead of points.")
@click.option("--every", type=Duration(), help="With --agg: one value per time bucket of this width (30s, 5m, 1h, 1d).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many points (oldest first).")
@agent_type_option
@json_option
@pass_session
def metrics(session: Session, agent_name: str, name: str | None, since: datetime | None, until: datetime | None,
            where: Sequence[str], agg: str | None, every: timedelta | None, limit: int | None,
            agent_type: str | None, as_json: bool) -> None:
    """List an agent's metric points, or aggregate one metric.

    Points are listed oldest first; --agg prints one number for --name.
    --where gpu=3 matches metadata holding the number 3 (values are read as
    JSON where they parse), --where region=us-west the string.

    \b
    optistate metrics "Cost Optimizer" --since 2025-01-01 --where region=us-west
    optistate metrics "Cost Optimizer" --name average_savings_percent --agg avg
    """
    if agg and not name:
        raise click.UsageError("--agg needs --name")
    if every and not agg:
        raise click.UsageError("--every needs --agg")
    handle = session.agent(agent_name, agent_type)
    conditions = parse_where(where)
    if agg and name and every:
        buckets = handle.aggregate(name, agg, since, until, conditions, every=every)
        if as_json:
            echo_json([{"bucket_start": start.isoformat(), "value": value} for start, value in buckets])
        else:
            table(["BUCKET_START", f"{agg.upper()}({name})"], [[s.isoformat(), v] for s, v in buckets], "no points")
        return
    if agg and name:
        value = handle.aggregate(name, agg, since, until, conditions)
        if as_json:
            echo_json({"name": name, "agg": agg, "value": value})
        else:
            click.echo(f"{agg}({name}) = {cell(value)}")
        return
    rows = handle.metrics(name, since, until, conditions, limit)
    if as_json:
        echo_json([transfer.to_json(row) for row in rows])
    else:
        metric_table(rows)


@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List installed plugins, their hooks, agent types and errors.

    \b
    optistate plugins --json
    """
    rows = Registry().describe()
    if as_json:
        echo_json(rows)
    else:
        table(["NAME", "DISTRIBUTION", "VERSION", "HOOKS", "AGENT TYPES", "ERROR"],
              [[r["name"], r["distribution"], r["version"], r["hooks"], r["agent_types"], r["error"]] for r in rows],
              "no plugins")


@cli.group()
def plugin() -> None:
    """Start a plugin of your own: plugin new NAME.

    \b
    optistate plugin new crawler --dir src
    """


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "directory", metavar="DIR", default=".", show_default=True,
              help="Write the distribution into DIR/NAME (DIR is created if missing).")
def plugin_new(name: str, directory: str) -> None:
    """Write an installable plugin distribution for the agent type NAME.

    DIR/NAME gets pyproject.toml, setup.cfg (entry point NAME in the optistate
    group), the module optistate_NAME.py with the type's defaults and a
    check, and tests/ using optistate's pytest fixtures. Nothing is written
    if NAME is malformed or taken, or DIR/NAME is not empty.

    \b
    optistate plugin new crawler && pip install './crawler[test]' && pytest crawler
    """
    files = scaffold.new_plugin(name, directory)
    folder = Path(directory, name)
    shown = str(folder) if folder.is_absolute() else f"./{folder}"  # pip reads a bare `crawler` as a project name
    click.echo(f"wrote optistate-{name} in {shown}:")
    for path in files:
        click.echo(f"  {path.relative_to(folder)}")
    click.echo(f"Next: pip install '{shown}[test]' && pytest {shown}")


@cli.command("export")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--decrypt", is_flag=True, help="Write encrypted sensitive values in plain text (needs their keys).")
@pass_session
def export_command(session: Session, path: str, decrypt: bool) -> None:
    """Write every table to FILE as JSON Lines, owner-only.

    Sensitive values go as stored: encrypted ones as ciphertext unless
    --decrypt, the others in clear, so FILE is created with mode 0600.
    `optistate import` reads it on either backend and keeps what it reads.

    \b
    optistate export backup.jsonl
    """
    store = session.store()
    with progress_bar(lambda: transfer.row_count(store), "exporting") as progress:
        counts = transfer.export_file(store, path, progress=progress, decrypt=decrypt)
    click.echo(f"exported {sum(counts.values())} rows to {path}: " + ", ".join(f"{n} {t}" for t, n in counts.items()))


@cli.command("import")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Delete every agent (and so every row) first, in the same transaction.")
@pass_session
def import_command(session: Session, path: str, replace: bool) -> None:
    """Load FILE from `optistate export`, all or nothing.

    One transaction: the database must hold no agents, unless --replace
    deletes them first. Every value is validated as the SDK would; a bad line
    imports nothing, and the error names it. It creates the database if there is none.

    \b
    optistate --database postgresql://app@db/optistate import backup.jsonl
    """
    store = session.store(create=True)
    with progress_bar(lambda: transfer.count_lines(path), "importing") as progress:
        counts = transfer.import_file(store, path, replace=replace, progress=progress)
    click.echo(f"imported {sum(counts.values())} rows from {path}: " + ", ".join(f"{n} {t}" for t, n in counts.items()))


cli.add_command(config)
cli.add_command(reap)
cli.add_command(locks)
cli.add_command(history)
cli.add_command(watch)
cli.add_command(capabilities)
cli.add_command(secrets)
cli.add_command(retain)
cli.add_command(serve)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="optistate", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0
