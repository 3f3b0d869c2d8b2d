"""The ``optistate config`` and ``optistate capabilities`` groups: read and change one agent's settings.

The root command, which adds these groups, is in :mod:`optistate.cli`.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import click

from . import transfer
from .agent import AgentHandle
from .cli_support import (
    DefaultListGroup,
    Session,
    agent_type_option,
    capability_table,
    config_json,
    config_table,
    echo_json,
    json_option,
    pass_session,
    shown,
)
from .models import ConfigType

__all__ = ["capabilities", "config"]


@click.group()
def config() -> None:
    """Read and change an agent's typed config: get, set, list.

    \b
    optistate config list "Cost Optimizer"
    optistate config set "Cost Optimizer" cost_threshold_usd 2500
    """


@config.command("get")
@click.argument("agent_name", metavar="AGENT")
@click.argument("key")
@click.option("--reveal", is_flag=True, help="Show a sensitive value instead of ***.")
@agent_type_option
@pass_session
def config_get(session: Session, agent_name: str, key: str, reveal: bool, agent_type: str | None) -> None:
    """Print the value of KEY (its canonical text).

    \b
    optistate config get "Cost Optimizer" cost_threshold_usd
    optistate config get "Cost Optimizer" api_key --reveal
    """
    click.echo(shown(session.agent(agent_name, agent_type).config.entry(key), reveal))


@config.command("set", context_settings={"ignore_unknown_options": True})  # VALUE may be -5
@click.argument("agent_name", metavar="AGENT")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--type", "config_type", type=click.Choice([t.value for t in ConfigType]),
              help="The type of a new key (an existing key keeps its type).")
@click.option("--sensitive/--not-sensitive", default=None, help="Mask the value in output [default: as stored].")
@click.option("--description", help="What the key is for.")
@agent_type_option
@pass_session
def config_set(session: Session, agent_name: str, key: str, value: str | None, config_type: str | None,
               sensitive: bool | None, description: str | None, agent_type: str | None) -> None:
    """Set KEY to VALUE, parsed as the key's type and checked by the agent's plugins.

    A VALUE of - reads the value from stdin (one trailing newline dropped). With
    no VALUE, a sensitive key's value is asked for at a hidden prompt, so that a
    secret stays out of the shell's history and ps. A new key needs --type.
    It creates the database if there is none.

    \b
    optistate config set "Cost Optimizer" cost_threshold_usd 2500
    optistate config set "Cost Optimizer" region us-west --type string
    printf %s "$KEY" | optistate config set "Cost Optimizer" api_key -
    """
    handle = session.agent(agent_name, agent_type, create=True)
    if config_type is None and key not in handle.config:
        types = ", ".join(t.value for t in ConfigType)
        raise click.UsageError(f"--type is required for the new key {key!r} (one of {types})")
    if value == "-":
        value = sys.stdin.read().removesuffix("\n")
    elif value is None:
        stored_sensitive = key in handle.config and handle.config.entry(key).is_sensitive
        if not (sensitive or (sensitive is None and stored_sensitive)):
            raise click.UsageError("VALUE is required for a key that is not sensitive (- reads it from stdin)")
        value = click.prompt(f"{key} (hidden)", hide_input=True, err=True)
    handle.config.set(key, value, config_type=config_type, is_sensitive=sensitive, description=description)
    row = handle.config.entry(key)
    click.echo(f"{handle.name}: {key} = {shown(row, False)} ({row.config_type})")


@config.command("list")
@click.argument("agent_name", metavar="AGENT")
@click.option("--reveal", is_flag=True, help="Show sensitive values instead of ***.")
@agent_type_option
@json_option
@pass_session
def config_list(session: Session, agent_name: str, reveal: bool, agent_type: str | None, as_json: bool) -> None:
    """List the agent's configs, sensitive values masked unless --reveal.

    \b
    optistate config list "Cost Optimizer" --json
    """
    rows = session.agent(agent_name, agent_type).config.entries()
    if as_json:
        echo_json([config_json(row, reveal) for row in rows])
    else:
        config_table(rows, reveal)


@click.group(cls=DefaultListGroup)
def capabilities() -> None:
    """List, enable and disable an agent's capabilities.

    \b
    optistate capabilities AGENT [--enabled] [--json]     (same as: capabilities list AGENT)
    optistate capabilities enable AGENT NAME [--version V]
    optistate capabilities disable AGENT NAME [--version V]
    """


@capabilities.command("list")
@click.argument("agent_name", metavar="AGENT")
@click.option("--enabled", is_flag=True, help="Only enabled capabilities.")
@agent_type_option
@json_option
@pass_session
def capabilities_list(session: Session, agent_name: str, enabled: bool, agent_type: str | None, as_json: bool) -> None:
    """List every capability version of AGENT, by name then version.

    \b
    optistate capabilities list "Cost Optimizer" --enabled
    """
    rows = session.agent(agent_name, agent_type).capabilities(True if enabled else None)
    if as_json:
        echo_json([transfer.to_json(row) for row in rows])
    else:
        capability_table(rows)


def _switch(enable: bool) -> Callable[..., None]:
    verb = "enable" if enable else "disable"
    method = AgentHandle.enable_capability if enable else AgentHandle.disable_capability

    def command(session: Session, agent_name: str, name: str, version: str | None, agent_type: str | None) -> None:
        handle = session.agent(agent_name, agent_type, create=True)
        changed = method(handle, name, version)
        click.echo(f"{handle.name}: {verb}d {changed} version(s) of {name}")

    command.__doc__ = f"""{verb.capitalize()} capability NAME of AGENT (every version, or --version V).

    An unknown NAME is an error that lists the agent's capabilities.

    \b
    optistate capabilities {verb} "Cost Optimizer" gpu_cost_analysis --version 1.0.0
    """
    decorators = (click.argument("agent_name", metavar="AGENT"), click.argument("name"),
                  click.option("--version", help="Only this version (default: every version of NAME)."),
                  agent_type_option, pass_session)
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


capabilities.command("enable")(_switch(True))
capabilities.command("disable")(_switch(False))
