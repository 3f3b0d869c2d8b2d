"""The ``optistate secrets`` group: sensitive config values at rest (see :mod:`optistate.encryption`).

The keys come from ``$OPTISTATE_SECRET_KEY`` (comma-separated, newest first),
never from the command line. The root command, which adds this group, is in
:mod:`optistate.cli`.
"""
from __future__ import annotations

import click

from . import encryption
from .cli_support import Session, echo_json, json_option, pass_session, table

__all__ = ["secrets"]


@click.group()
def secrets() -> None:
    """Sensitive values at rest: status, encrypt, rotate, new-key.

    \b
    export OPTISTATE_SECRET_KEY="$(optistate secrets new-key)"
    optistate secrets encrypt       # the values stored in plain text so far
    OPTISTATE_SECRET_KEY="$NEW,$OLD" optistate secrets rotate
    """


@secrets.command("status")
@json_option
@pass_session
def secrets_status(session: Session, as_json: bool) -> None:
    """Count the sensitive values under each key id, and those in plain text.

    \b
    optistate secrets status --json
    """
    store = session.store()
    counts, configured = encryption.status(store.models.AgentConfig), store.keyring.ids
    rows = [{"key_id": ident, "values": n, "configured": ident in configured, "newest": ident == store.keyring.newest}
            for ident, n in sorted(counts.items(), key=lambda item: item[0] or "") if ident is not None]
    rows += [{"key_id": ident, "values": 0, "configured": True, "newest": ident == store.keyring.newest}
             for ident in configured if ident not in counts]
    plain = counts.get(None, 0)
    if as_json:
        echo_json({"keys": rows, "plain_text": plain})
        return
    cells = [[r["key_id"], r["values"], "newest" if r["newest"] else "yes" if r["configured"] else "NO"] for r in rows]
    table(["KEY ID", "VALUES", "CONFIGURED"], [*cells, ["plain text", plain, "-"]], "")
    if plain:
        click.echo(f"{plain} sensitive value(s) in plain text: optistate secrets encrypt")


@secrets.command("encrypt")
@pass_session
def secrets_encrypt(session: Session) -> None:
    """Encrypt the sensitive values stored in plain text with the newest key.

    One transaction. It creates the database if there is none.

    \b
    OPTISTATE_SECRET_KEY="$KEY" optistate secrets encrypt
    """
    store = session.store(create=True)
    done = encryption.encrypt(store.models.AgentConfig, store.keyring)
    click.echo(f"encrypted {done} sensitive value(s) with key {store.keyring.newest}")


@secrets.command("rotate")
@pass_session
def secrets_rotate(session: Session) -> None:
    """Re-encrypt every encrypted sensitive value with the newest key.

    One transaction. Configure the new key first and the old ones after it:
    OPTISTATE_SECRET_KEY="$NEW,$OLD". When it is done, the old keys may go.

    \b
    OPTISTATE_SECRET_KEY="$NEW,$OLD" optistate secrets rotate
    """
    store = session.store(create=True)
    done = encryption.rotate(store.models.AgentConfig, store.keyring)
    click.echo(f"re-encrypted {done} sensitive value(s) with key {store.keyring.newest}")
    plain = encryption.status(store.models.AgentConfig).get(None, 0)
    if plain:
        click.echo(f"{plain} sensitive value(s) still in plain text: optistate secrets encrypt")


@secrets.command("new-key")
def secrets_new_key() -> None:
    """Print a new random key (for OPTISTATE_SECRET_KEY) and nothing else.

    \b
    export OPTISTATE_SECRET_KEY="$(optistate secrets new-key)"
    """
    click.echo(encryption.new_key())
